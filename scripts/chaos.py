"""The chaos harness (run by scripts/chaos.sh, which documents it): the user-activity
pipeline running continuously while a seeded scheduler breaks things, then drained and
checked from outside against the topic and against one clean run over the same input.

    python chaos.py --lakectl BIN --minutes M --seed S --report PATH

Services: a private Nisshi (killed and restarted), the stack's moto behind a proxy in this
process (cut off), the stack's PostgreSQL (restarted with pg_ctl -m immediate; a database of
our own), all named by the environment scripts/services.sh writes."""
import argparse
import json
import os
import random
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import confluent_kafka
import deltalake

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAULTS = ["kill", "broker", "broker_long", "s3", "postgres", "optimize", "hostile"]
# Jobs' producers give up on a message after this long (kafka.options of the jobs' pipeline
# files); the long broker outage lasts longer. The generator and the producer keep the
# default (a failed delivery there is the harness's loss, not a stage's).
MESSAGE_TIMEOUT_MS = 4000
# Tables `lakectl optimize` compacts at random moments, besides the writers' own compaction
# (LAKECTL_LAKE_COMPACT_EVERY below).
OPTIMIZED = ["bronze.user_activity", "silver.user_activity", "window.page_view_counts",
             "window.active_users", "window.user_sessions", "window.enriched_activity",
             "quarantine.user_activity"]
BOOKS_OPTIMIZED = ["bronze.books", "silver.books", "gold.sales_by_genre"]
WINDOWS = ["page_view_counts", "active_users", "user_sessions", "enriched_activity"]


# Every process the harness starts, so that a failure half way leaves none running.
SPAWNED = []


def spawn(*args, **kwargs):
    proc = subprocess.Popen(*args, **kwargs)
    SPAWNED.append(proc)
    return proc


def log(message):
    print(f"[chaos] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


class Proxy(threading.Thread):
    """A TCP proxy to the S3 server that can be cut off: open connections are closed and new
    ones refused until it is restored."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.conns = []
        self.lock = threading.Lock()

    def run(self):
        while True:
            client, _ = self.listener.accept()
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            threading.Thread(target=self.pump, args=(client, upstream), daemon=True).start()

    def pump(self, a, b):
        try:
            while self.open.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    (b if s is a else a).sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def cut(self):
        self.open.clear()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns = []

    def restore(self):
        self.open.set()


class Broker:
    """A private Nisshi with its data on disk: killed with SIGKILL, restarted on the same port."""

    def __init__(self, work):
        self.dir = os.path.join(work, "broker")
        os.makedirs(self.dir)
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = spawn(
            [os.environ["LAKECTL_NISSHI_BIN"], "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "sqlite://nisshi.db",
             "--group-initial-rebalance-delay", "0s", "--silent"],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def kill(self):
        self.proc.kill()
        self.proc.wait()


class Job:
    """One continuous lakectl process with its metrics endpoint, restarted when it exits."""

    def __init__(self, name, argv, env, logs):
        self.name, self.argv, self.env, self.logs = name, argv, env, logs
        self.proc = None
        self.port = None
        self.exits = 0  # ends the harness did not cause
        self.start()

    def start(self):
        self.port = free_port()
        out = open(os.path.join(self.logs, f"{self.name}.log"), "a")
        self.proc = spawn(
            self.argv + ["--continuous", "--metrics-addr", f"127.0.0.1:{self.port}"],
            env=self.env, stdout=out, stderr=out)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def units(self):
        """Units finished by the running process, or None while it does not answer."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=1).read()
        except OSError:
            return None
        return sum(float(v) for v in re.findall(rb"^lakectl_units_total\{[^}]*\} (\S+)$", text, re.M))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def lakectl(args, env, check=True):
    out = subprocess.run(args, env=env, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(args[1:])}: exit {out.returncode}\n{out.stderr[-3000:]}")
    return out


def run_stages(command, env, stages):
    """Each stage once, in order, as a batch run (bronze with --once: it reads a topic)."""
    for stage in stages:
        lakectl(command + ["run", stage] + (["--once"] if stage == "bronze" else []), env)


def pipeline_copy(work, shipped, file, replacements, name=None):
    """pipelines/`shipped` as pipeline `name` (default `file`) in `work`/`file`.toml, with each
    (old, new) text replaced."""
    text = open(os.path.join(ROOT, "pipelines", shipped)).read()
    text = re.sub(r'^name = "[^"]*"', f'name = "{name or file}"', text, count=1, flags=re.M)
    for old, new in replacements:
        assert old in text, f"{shipped} has no {old!r}"
        text = text.replace(old, new)
    path = os.path.join(work, f"{file}.toml")
    open(path, "w").write(text)
    return path


# Short producer timeouts for the jobs (the sink's producer must not lose a row to them).
JOB_KAFKA = f'[kafka]\noptions = {{ "message.timeout.ms" = "{MESSAGE_TIMEOUT_MS}" }}\n'
# A cleaning SQL with a CAST that fails on a hostile page ("cast:abc"): CASE evaluates the CAST
# for those rows only.
CAST_SQL = ('on_existing_key = "keep"\n'
            'sql = "SELECT *, CASE WHEN page LIKE \'cast:%\' THEN CAST(substr(page, 6) AS INT) END '
            'AS cast_check FROM source"')


def pipeline_file(work, name, topic, sink_topic, jobs=True):
    return pipeline_copy(work, "user_activity.toml", name + ("" if jobs else "_gen"), [
        ('topic = "user_activity"', f'topic = "{topic}"'),
        ('topic = "enriched_activity"', f'topic = "{sink_topic}"'),
        ('target = "activity.', f'target = "{name}.'),
        ('on_existing_key = "keep"', CAST_SQL),
        ("[kafka]\n", JOB_KAFKA if jobs else "[kafka]\n")], name=name)


def books_file(work, name, topic, jobs=True):
    """The shipped books pipeline on `topic`, producing 2 records a second (174 in all)."""
    return pipeline_copy(work, "books.toml", name + ("" if jobs else "_produce"), [
        ('topic = "books"', f'topic = "{topic}"'),
        ('"../data/', f'"{ROOT}/data/'),
        ('sql_file = "books.silver.sql"', f'sql_file = "{ROOT}/pipelines/books.silver.sql"'),
        ('target = "silver.books"', f'target = "{name}.books"'),
        ("[kafka]\n", JOB_KAFKA if jobs else "[kafka]\n"),
        ("[producer]\n", "[producer]\nrate = 2\n")], name=name)


class Hostile:
    """Records that have stopped a table before, sent into the running pipelines' topics; each
    is remembered with where it landed and where it must end up."""

    def __init__(self, brokers):
        # Quiet: the broker is killed now and then, and librdkafka would log every reconnect.
        self.producer = confluent_kafka.Producer({"bootstrap.servers": brokers, "acks": "all",
                                                  "log_level": 0})
        self.sent = []  # {"topic", "kind", "want", "partition", "offset"}
        self.count = 0

    def _send(self, topic, kind, want, value, key=b"hostile"):
        entry = {"topic": topic, "kind": kind, "want": want}

        def delivered(err, msg):
            if err is None:
                entry.update(partition=msg.partition(), offset=msg.offset())
                self.sent.append(entry)
        self.producer.produce(topic, value=value, key=key, on_delivery=delivered)

    def inject(self, activity_topic, books_topic, brokers):
        """One record of each kind into each topic. Activity events are dated where the stream is
        (2 events a second of event time from its start), so the NUL page reaches a window."""
        n = self.count = self.count + 1
        consumer = confluent_kafka.Consumer({"bootstrap.servers": brokers, "group.id": f"chaos-hostile-{os.getpid()}"})
        parts = consumer.list_topics(activity_topic, timeout=10).topics[activity_topic].partitions
        total = sum(consumer.get_watermark_offsets(confluent_kafka.TopicPartition(activity_topic, p), timeout=10)[1]
                    for p in parts)
        consumer.close()
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1767225600 + total // 2))

        def event(kind, page, event_type="page_view"):
            return json.dumps({"event_id": f"hostile-{kind}-{n}", "user_id": f"hostile-{n}",
                               "session_id": "s", "event_type": event_type, "page": page,
                               "referrer": None, "device": "desktop", "event_time": at}).encode()
        deep = lambda field: (f'{{"{field}":' + "[" * 5000 + "]" * 5000 + "}").encode()
        avro = b"\x00\x7f\xff\xff\xfe\x02x"
        sends = [
            ("cast", "quarantine:cleaning_sql", event("cast", "cast:abc")),
            ("nul", "load:page_view_counts", event("nul", f"/nul\x00{n}")),
            ("types", "quarantine:parse", json.dumps({"event_id": n, "user_id": ["x"], "event_time": "yesterday"}).encode()),
            ("number", "quarantine:parse", (f'{{"event_id":"hostile-number-{n}","event_time":' + "9" * 5000 + "}").encode()),
            ("nested", "quarantine:parse", deep("event_id")),
            ("avro", "quarantine:parse", avro),
            ("huge", "silver", event("huge", "/" + "h" * 200_000)),
        ]
        for kind, want, value in sends:
            self._send(activity_topic, kind, want, value)
        book = {"Author(s)": "Hostile", "Original language": "English", "First published": 2000,
                "Approximate sales in millions": 1.5, "Genre": "Test"}
        for kind, want, value, key in [
            ("types", "quarantine:parse", json.dumps(dict(book, **{"Book": f"Hostile types {n}", "Approximate sales in millions": "abc"})).encode(), f"Hostile types {n}"),
            ("nul", "load:books", json.dumps(dict(book, Book=f"Hostile\x00{n}")).encode(), f"Hostile nul {n}"),
            ("nested", "quarantine:parse", deep("Book"), f"Hostile nested {n}"),
            ("avro", "quarantine:parse", avro, f"Hostile avro {n}"),
        ]:
            self._send(books_topic, kind, want, value, key.encode())
        if self.producer.flush(30) != 0:
            raise RuntimeError("hostile records were not delivered")


def topic_records(brokers, topic):
    """Every record of `topic`: (partition, offset, key, value)."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": brokers, "group.id": f"chaos-check-{os.getpid()}",
                                         "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    out = []
    for p in partitions:
        low, high = consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=10)
        if high <= low:
            continue
        consumer.assign([confluent_kafka.TopicPartition(topic, p, low)])
        while True:
            msg = consumer.poll(5)
            if msg is None:
                raise RuntimeError(f"{topic}/{p}: no record before offset {high}")
            if msg.error():
                continue
            out.append((p, msg.offset(), msg.key(), msg.value()))
            if msg.offset() >= high - 1:
                break
    consumer.close()
    return out


def delta(lake, layer, name):
    opts = {k.lower(): os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                               "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ALLOW_HTTP")}
    return deltalake.DeltaTable(f"{lake}{layer}/{name}", storage_options=opts)


def table(lake, layer, name, columns=None):
    return delta(lake, layer, name).to_pyarrow_table(columns=columns).to_pylist()


# Columns that say when or in which commit a row was written: two runs over the same input
# differ there and nowhere else.
VOLATILE = {"_silver_ts", "_bronze_version", "run_id", "_quarantined_at"}


def rows(records, drop=()):
    """Rows as sorted JSON lines without the volatile columns (and `drop`)."""
    return sorted(json.dumps({k: str(v) for k, v in r.items() if k not in VOLATILE | set(drop)},
                             sort_keys=True) for r in records)


def quarantined_or_not(lake, layer, name):
    """Whether the table exists (a quarantine table is made by its first quarantined row)."""
    try:
        delta(lake, layer, name)
        return True
    except deltalake.exceptions.TableNotFoundError:
        return False


def psql(url, sql):
    out = subprocess.run(["psql", url, "-Atc", sql], capture_output=True, text=True)
    if out.returncode != 0:
        if "does not exist" in out.stderr:  # load creates a table with its first rows
            return []
        raise RuntimeError(f"psql: {out.stderr}")
    return out.stdout.split("\n")[:-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lakectl", required=True)
    ap.add_argument("--minutes", type=float, default=3)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--rounds", type=int, default=5,
                    help="at least this many rounds; a round kills --kills-per-round jobs and "
                         "breaks the broker, S3 and Postgres once each, in a random order")
    ap.add_argument("--kills-per-round", type=int, default=99,
                    help="distinct jobs killed per round (default: every job)")
    ap.add_argument("--kill-groups", type=int, default=0,
                    help="kill a round's jobs in this many faults, each killing a random group "
                         "of them at once (default: one fault per job)")
    ap.add_argument("--rate", type=int, default=300, help="generated events per second")
    ap.add_argument("--report", required=True)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    log(f"seed {args.seed}: at least {args.minutes} minutes and {args.rounds} rounds of faults")
    work = tempfile.mkdtemp(prefix="lakectl-chaos-")
    logs = os.path.join(work, "logs")
    os.makedirs(logs)

    broker = Broker(work)
    s3_port = int(os.environ["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    proxy = Proxy(s3_port)
    proxy.start()
    admin = os.environ["DATABASE_URL"]
    database = f"chaos_{args.seed}_{os.getpid()}"
    psql(admin, f"CREATE DATABASE {database}")
    pg_url = admin.rsplit("/", 1)[0] + "/" + database
    pgdata = os.environ.get("LAKECTL_PGDATA", os.path.join(ROOT, ".lakectl/pg"))
    run_id = f"{args.seed}-{os.getpid()}"
    topic, sink_topic = f"chaos_{run_id}", f"chaos_{run_id}_enriched"
    env = dict(os.environ, LAKECTL_KAFKA_BROKERS=f"127.0.0.1:{broker.port}",
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}", DATABASE_URL=pg_url,
               LAKECTL_LAKE_URI=f"s3://lake/chaos-{run_id}/",
               # Outages here last seconds: retry from 200 ms up to 5 s apart, 12 times (about
               # a minute), then exit and be restarted; poll every 200 ms when idle.
               LAKECTL_RUNNER_MAX_RETRIES="12", LAKECTL_RUNNER_INITIAL_BACKOFF_MS="200",
               LAKECTL_RUNNER_MAX_BACKOFF_MS="5000", LAKECTL_RUNNER_IDLE_POLL_MS="200",
               # Writers compact their tables every few commits: several times a minute.
               LAKECTL_LAKE_COMPACT_EVERY="10")
    pipeline = pipeline_file(work, "chaos", topic, sink_topic)
    cmd = [args.lakectl, "-p", pipeline]
    generator = spawn(
        # Two events a second of event time: hours of it, so sessions end and windows close.
        # It runs until the faults are over, so that every fault meets a flowing stream.
        [args.lakectl, "-p", pipeline_file(work, "chaos", topic, sink_topic, jobs=False),
         "generate", "--topic", topic, "--forever", "--rate", str(args.rate),
         "--event-rate", "2", "--seed", str(args.seed)],
        env=env, stdout=open(os.path.join(logs, "generate.log"), "w"), stderr=subprocess.STDOUT)
    books_topic = f"chaos_{run_id}_books"
    books = [args.lakectl, "-p", books_file(work, "chaos_books", books_topic)]
    books_env = dict(env, LAKECTL_LAKE_URI=f"s3://lake/chaos-{run_id}-books/")
    producer = spawn([args.lakectl, "-p", books_file(work, "chaos_books", books_topic, jobs=False), "produce"],
                     env=books_env, stderr=subprocess.STDOUT,
                     stdout=open(os.path.join(logs, "produce.log"), "w"))
    hostile = Hostile(f"127.0.0.1:{broker.port}")
    jobs = {name: Job(name, command + ["run", stage], job_env, logs)
            for name, (command, job_env, stage) in {
                "bronze-1": (cmd, env, "bronze"), "bronze-2": (cmd, env, "bronze"),
                "silver": (cmd, env, "silver"), "window": (cmd, env, "window"),
                "load": (cmd, env, "load"), "sink": (cmd, env, "sink"),
                "books-bronze": (books, books_env, "bronze"), "books-silver": (books, books_env, "silver"),
                "books-gold": (books, books_env, "gold"), "books-load": (books, books_env, "load")}.items()}

    faults = {kind: [] for kind in FAULTS}  # recovery seconds per fault
    started = time.time()

    # Exit codes of the exits the harness did not cause: 69 (a service stayed away past the
    # retries) is expected; 2 or 70 would be a job stopped by what it read.
    exit_codes = {name: [] for name in jobs}

    def watch_exits():
        for job in jobs.values():
            if job.proc.poll() is not None:
                job.exits += 1
                exit_codes[job.name].append(job.proc.returncode)
                log(f"{job.name} exited ({job.proc.returncode}); restarting it")
                if job.proc.returncode in (2, 70):  # a failed check: say why where CI shows it
                    with open(os.path.join(job.logs, f"{job.name}.log"), errors="replace") as f:
                        errors = [line for line in f.readlines()[-200:] if "ERROR" in line]
                    for line in errors[-3:]:
                        log(f"  {job.name}: {line.strip()[:1000]}")
                job.start()

    def recovered_after(fault_end, baseline):
        """Seconds until every job finished a unit after the fault (None past 90 s)."""
        while time.time() - fault_end < 90:
            watch_exits()
            done = True
            for name, job in jobs.items():
                units = job.units()
                pid, units_before = baseline[name]
                # The same process: one more unit; a new one: its first.
                floor = units_before if pid == job.proc.pid and units_before is not None else 0
                if units is None or units <= floor:
                    done = False
            if done:
                return time.time() - fault_end
            time.sleep(0.2)
        return None

    order, rounds = [], 0
    kills = {name: 0 for name in jobs}
    while time.time() - started < args.minutes * 60 or rounds < args.rounds or order:
        if not order:
            victims = rng.sample(sorted(jobs), min(args.kills_per_round, len(jobs)))
            groups = min(args.kill_groups or len(victims), len(victims))
            order = [("kill", victims[g::groups]) for g in range(groups)] + \
                    [(kind, None) for kind in FAULTS[1:]]
            rng.shuffle(order)
            rounds += 1
        kind, names = order.pop()
        time.sleep(rng.uniform(0.3, 1.5))
        watch_exits()
        fault_start = time.time()
        if kind == "kill":
            for name in names:
                kills[name] += 1
                jobs[name].kill()
            # Each comes back after a pause of its own, as a supervisor would restart them.
            for delay, name in sorted((rng.uniform(0.2, 2), name) for name in names):
                time.sleep(max(0.0, delay - (time.time() - fault_start)))
                jobs[name].start()
            what = f"kill -9 {', '.join(names)}"
        elif kind in ("broker", "broker_long"):
            broker.kill()
            # The long one outlasts the jobs' message.timeout.ms.
            pause = rng.uniform(0.5, 3) if kind == "broker" else MESSAGE_TIMEOUT_MS / 1000 + rng.uniform(2, 5)
            time.sleep(pause)
            broker.start()
            what = f"broker killed and restarted after {pause:.1f} s"
        elif kind == "optimize":
            command, target_env, target = rng.choice(
                [(cmd, env, t) for t in OPTIMIZED] + [(books, books_env, t) for t in BOOKS_OPTIMIZED])
            out = lakectl(command + ["optimize", target], target_env, check=False)
            what = f"lakectl optimize {target} (exit {out.returncode})"
        elif kind == "hostile":
            hostile.inject(topic, books_topic, f"127.0.0.1:{broker.port}")
            what = "hostile records sent to both topics"
        elif kind == "s3":
            proxy.cut()
            pause = rng.uniform(1, 5)
            time.sleep(pause)
            proxy.restore()
            what = f"S3 cut off for {pause:.1f} s"
        else:
            as_postgres = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
            subprocess.run(as_postgres + ["/usr/lib/postgresql/15/bin/pg_ctl",
                            "-D", pgdata, "-l", os.path.join(pgdata, "log"), "-m", "immediate",
                            "-w", "restart"], check=True, stdout=subprocess.DEVNULL)
            what = "postgres restarted (immediate)"
        fault_end = time.time()
        baseline = {name: (job.proc.pid, job.units()) for name, job in jobs.items()}
        took = recovered_after(fault_end, baseline)
        faults[kind].append(took)
        log(f"{time.time() - started:6.1f} s  {what}: " + (f"recovered in {took:.1f} s" if took is not None else "NOT recovered in 90 s"))

    log("faults over; stopping the generator, waiting for the producer")
    generator.send_signal(signal.SIGTERM)
    generator.wait()
    producer.wait()
    for job in jobs.values():
        job.stop()
    # Drain every stage once, in order, with the stack whole again.
    run_stages(cmd, env, ["bronze", "silver", "window", "load", "sink"])
    run_stages(books, books_env, ["bronze", "silver", "gold", "load"])

    # A clean run over the same topic, into a lake and topic of its own.
    clean_env = dict(env, LAKECTL_LAKE_URI=f"s3://lake/chaos-{run_id}-clean/",
                     AWS_ENDPOINT_URL=os.environ["AWS_ENDPOINT_URL"])
    clean_pipeline = pipeline_file(work, "chaos_clean", topic, sink_topic + "_clean")
    run_stages([args.lakectl, "-p", clean_pipeline], clean_env, ["bronze", "silver", "window", "sink"])

    clean_books = [args.lakectl, "-p", books_file(work, "chaos_books_clean", books_topic)]
    clean_books_env = dict(clean_env, LAKECTL_LAKE_URI=f"s3://lake/chaos-{run_id}-books-clean/")
    run_stages(clean_books, clean_books_env, ["bronze", "silver", "gold"])

    checks = []

    def check(name, ok, detail):
        checks.append({"check": name, "ok": bool(ok), "detail": detail})
        log(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")

    brokers = f"127.0.0.1:{broker.port}"
    produced = topic_records(brokers, topic)
    lake, clean_lake = env["LAKECTL_LAKE_URI"], clean_env["LAKECTL_LAKE_URI"]
    bronze = table(lake, "bronze", "user_activity", ["_partition", "_offset"])
    positions = sorted((r["_partition"], r["_offset"]) for r in bronze)
    want = sorted((p, o) for p, o, _, _ in produced)
    check("bronze holds every record of the topic exactly once", positions == want,
          f"{len(produced)} records in the topic, {len(positions)} bronze rows, "
          f"{len(positions) - len(set(positions))} duplicated, {len(set(want) - set(positions))} missing")
    with open(os.path.join(logs, "generate.log")) as f:
        summary = re.search(r"sent (\d+), delivered (\d+), failed (\d+)", f.read())
    sent, delivered, failed = map(int, summary.groups()) if summary else (None, None, None)
    injected = sum(h["topic"] == topic for h in hostile.sent)
    check("the generator stopped cleanly and the topic holds what it delivered (and the hostile records)",
          generator.returncode == 0 and failed == 0 and delivered == sent and
          delivered + injected == len(produced),
          f"exit {generator.returncode}, sent {sent}, delivered {delivered}, failed {failed}, "
          f"{injected} hostile, {len(produced)} records in the topic (duplicates by design included)")

    counts = {"topic": len(produced), "bronze": len(bronze)}
    for layer, name in [("silver", "user_activity"), ("quarantine", "user_activity")] + \
            [(layer, w) for layer in ("window", "quarantine") for w in WINDOWS]:
        # A window's quarantine keeps the whole source row, silver's commit time included.
        drop = {"raw_value"} if layer == "quarantine" and name in WINDOWS else set()
        got, clean = (rows(table(lk, layer, name), drop) if quarantined_or_not(lk, layer, name) else []
                      for lk in (lake, clean_lake))
        counts[f"{layer}.{name}"] = len(got)
        check(f"{layer}.{name} equals the clean run's", got == clean,
              f"{len(got)} rows, clean run {len(clean)}, {len(set(got) ^ set(clean))} differ")

    for w, keys in [("page_view_counts", "window_start, window_end, page"),
                    ("active_users", "window_start, window_end"),
                    ("user_sessions", "user_id, window_start")]:
        cols = keys.split(", ")
        pg = sorted(psql(pg_url, f"SELECT {', '.join(f'(extract(epoch FROM {c}) * 1000000)::bigint' if c.startswith('window_') else c for c in cols)} FROM chaos.{w}"))
        lake_rows = table(lake, "window", w, cols)
        # A row Postgres cannot take (a NUL in text) is kept in quarantine.load_<w> instead.
        refused = [r for r in lake_rows if any("\x00" in str(r[c]) for c in cols)]
        mine = sorted("|".join(str(int(r[c].timestamp() * 1_000_000)) if c.startswith("window_") else str(r[c]) for c in cols)
                      for r in lake_rows if r not in refused)
        kept = (table(lake, "quarantine", f"load_{w}", ["row"])
                if quarantined_or_not(lake, "quarantine", f"load_{w}") else [])
        counts[f"postgres.chaos.{w}"] = len(pg)
        check(f"postgres chaos.{w} holds the lake's rows but those Postgres refuses, kept once each in quarantine.load_{w}",
              pg == mine and len(kept) == len(refused),
              f"{len(pg)} rows, lake {len(mine)} + {len(refused)} refused, {len(kept)} kept")

    enriched = topic_records(brokers, sink_topic)
    clean_enriched = topic_records(brokers, sink_topic + "_clean")
    ids = [json.loads(v)["event_id"] for _, _, _, v in enriched]
    clean_ids = sorted(json.loads(v)["event_id"] for _, _, _, v in clean_enriched)
    counts["enriched topic"] = len(ids)
    check("the enriched topic holds each row once", sorted(ids) == clean_ids and len(set(ids)) == len(ids),
          f"{len(ids)} records, {len(ids) - len(set(ids))} duplicated, clean run {len(clean_ids)}")

    books_produced = sorted((p, o) for p, o, _, _ in topic_records(brokers, books_topic))
    books_lake, clean_books_lake = books_env["LAKECTL_LAKE_URI"], clean_books_env["LAKECTL_LAKE_URI"]
    books_bronze = sorted((r["_partition"], r["_offset"]) for r in table(books_lake, "bronze", "books", ["_partition", "_offset"]))
    check("books: bronze holds every record of the topic exactly once",
          books_bronze == books_produced and producer.returncode == 0,
          f"producer exit {producer.returncode}, {len(books_produced)} records in the topic, {len(books_bronze)} bronze rows")
    counts["books topic"], counts["books bronze"] = len(books_produced), len(books_bronze)
    # Not gold.quality_by_rule: the quality log is committed apart from the data (every 5 s), so
    # a crash loses the counts not yet committed: it is not exactly once.
    for layer, name in [("silver", "books"), ("quarantine", "books"), ("gold", "sales_by_genre"),
                        ("gold", "sales_by_language"), ("gold", "sales_by_decade")]:
        got, clean = (rows(table(lk, layer, name)) if quarantined_or_not(lk, layer, name) else []
                      for lk in (books_lake, clean_books_lake))
        counts[f"books {layer}.{name}"] = len(got)
        check(f"books: {layer}.{name} equals the clean run's", got == clean,
              f"{len(got)} rows, clean run {len(clean)}, {len(set(got) ^ set(clean))} differ")
    pg_titles = sorted(psql(pg_url, "SELECT book_title FROM chaos_books.books"))
    all_titles = [r["book_title"] for r in table(books_lake, "silver", "books", ["book_title"])]
    lake_titles = sorted(t for t in all_titles if "\x00" not in t)
    refused_titles = len(all_titles) - len(lake_titles)
    kept = (table(books_lake, "quarantine", "load_books", ["row"])
            if quarantined_or_not(books_lake, "quarantine", "load_books") else [])
    check("books: postgres chaos_books.books holds silver's rows but those Postgres refuses, kept once each",
          pg_titles == lake_titles and len(kept) == refused_titles,
          f"{len(pg_titles)} rows, silver {len(lake_titles)} + {refused_titles} refused, {len(kept)} kept")

    # Every hostile record ended where the rules say, with its reason.
    lost = []
    quarantines = {
        topic: {(r["_partition"], r["_offset"]): r["rule"] for r in table(lake, "quarantine", "user_activity")},
        books_topic: {(r["_partition"], r["_offset"]): r["rule"] for r in table(books_lake, "quarantine", "books")},
    }
    silver_ids = {r["event_id"] for r in table(lake, "silver", "user_activity", ["event_id"])}
    late = {(r["_partition"], r["_offset"]) for r in table(lake, "quarantine", "page_view_counts")
            if r["rule"] == "late"} if quarantined_or_not(lake, "quarantine", "page_view_counts") else set()
    silver_positions = {(r["_partition"], r["_offset"]) for r in table(lake, "silver", "user_activity", ["_partition", "_offset"])}
    pv_refused = (table(lake, "quarantine", "load_page_view_counts", ["row"])
                  if quarantined_or_not(lake, "quarantine", "load_page_view_counts") else [])
    for h in hostile.sent:
        where, _, what = h["want"].partition(":")
        position = (h["partition"], h["offset"])
        if where == "quarantine":
            ok_ = quarantines[h["topic"]].get(position) == what
        elif where == "silver":
            ok_ = position in silver_positions
        elif what == "page_view_counts":
            # Counted in its window and kept from Postgres, or late for it (its window final).
            ok_ = position in silver_positions and (position in late or any(
                "\\u0000" in r["row"] for r in pv_refused))
        else:
            ok_ = any("\\u0000" in r["row"] for r in kept)
        if not ok_:
            lost.append(f"{h['topic']} {h['kind']} at {position} (want {h['want']})")
    check("every hostile record ended where the rules say (a quarantine with its reason)",
          hostile.sent and not lost, f"{len(hostile.sent)} sent; " + ("; ".join(lost[:5]) or "all found"))
    stopped = {name: [c for c in codes if c in (2, 70)] for name, codes in exit_codes.items()}
    check("no stage stopped on what it read (no exit 2 or 70)", not any(stopped.values()),
          ", ".join(f"{k}: {v}" for k, v in stopped.items() if v) or "none")

    recoveries = [t for v in faults.values() for t in v]
    slow = [t for t in recoveries if t is None or t >= 60]
    check("every recovery took under 60 s", not slow, f"{len(slow)} of {len(recoveries)} did not")
    verdict = all(c["ok"] for c in checks)
    report = {
        "seed": args.seed, "minutes": round((time.time() - started) / 60, 2), "rate": args.rate,
        "faults": {k: {"count": len(v), "recovery_p50_s": round(statistics.median([t for t in v if t is not None] or [0]), 2),
                       "recovery_max_s": max((round(t, 2) for t in v if t is not None), default=None),
                       "not_recovered": sum(t is None for t in v)} for k, v in faults.items()},
        "rounds": rounds, "kills": kills, "kill_groups": args.kill_groups or "one job per fault",
        "job_exits": {name: job.exits for name, job in jobs.items()},
        "job_exit_codes": exit_codes,
        "hostile_records": len(hostile.sent),
        "records": counts, "checks": checks, "verdict": "pass" if verdict else "fail",
    }
    with open(args.report, "w") as f:
        json.dump(report, f, indent=2)
    md = [f"# Chaos run, seed {args.seed}: {report['verdict'].upper()}", "",
          f"{report['minutes']} minutes, the user-activity pipeline (generate at {args.rate} events/s, two bronze "
          "processes in one group, silver, windows, load, sink) and the books pipeline (produce at 2 records/s, "
          "bronze, silver, gold, load); idle polls every 200 ms, retries back off "
          "from 200 ms to 5 s) under faults, then drained and checked. Recovery: from the end of a fault "
          "until every job finished a unit again.", "",
          "| fault | count | recovery p50 s | recovery max s | not recovered |", "|---|---:|---:|---:|---:|"]
    for k, v in report["faults"].items():
        md.append(f"| {k} | {v['count']} | {v['recovery_p50_s']} | {v['recovery_max_s']} | {v['not_recovered']} |")
    md += ["", f"{rounds} rounds ({'each job killed alone' if not args.kill_groups else f'each round kills its jobs in {args.kill_groups} faults, a group at once'}); kill -9 per job: " + ", ".join(f"{k} {v}" for k, v in kills.items()) + ".",
           "Exits the harness did not cause (restarted): " + ", ".join(f"{k} {v}" for k, v in report["job_exits"].items()) + ".", "",
           "| records | count |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in counts.items()]
    md += ["", "| check | result | detail |", "|---|---|---|"] + \
          [f"| {c['check']} | {'ok' if c['ok'] else 'FAIL'} | {c['detail']} |" for c in checks]
    with open(os.path.splitext(args.report)[0] + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    broker.kill()
    psql(admin, f"DROP DATABASE IF EXISTS {database}")
    sys.stdout.flush()
    os._exit(0 if verdict else 1)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        for proc in SPAWNED:
            proc.kill()
        raise
