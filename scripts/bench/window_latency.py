"""How soon final window rows reach Postgres in a continuous run (scripts/bench.sh,
section window_freshness). A 1-minute window ending at E is final once every Kafka partition
has shown an event at or after E + the watermark delay: that moment is the arrival (Kafka
timestamp) of the record that took the slowest partition there. Its row's `_loaded_at` (the
load transaction's start) minus that moment is the latency after the watermark passed; minus
each of its events' arrival, the latency from an event's arrival to its final row.

    python window_latency.py SILVER_TABLE_URI DATABASE_URL SCHEMA.TABLE WATERMARK_SECONDS

Where the time after the watermark goes: the record that passed it reached bronze, silver,
the window table (each at the modification time of the file its commit added) and Postgres;
the medians of the four hops are printed with the rest.

Prints a JSON line (windows measured and the p50/p95/p99 of both latencies, in seconds),
then the same as a sentence for the report."""
import json
import os
import sys
import urllib.parse

import numpy as np
import polars as pl
import psycopg2
import pyarrow.parquet as pq

uri, url, table, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
silver = (pl.read_delta(uri).select(["_partition", "_offset", "_kafka_ts", "event_time", "event_type"])
          .sort(["_partition", "_offset"]))
# Per partition, in arrival order: when it first showed an event time at or past a moment.
progress = {}
for (p,), rows in silver.group_by(["_partition"]):
    shown = rows["event_time"].dt.epoch("us").cum_max().to_numpy()
    progress[p] = (shown, rows["_kafka_ts"].dt.epoch("us").to_numpy(), rows["_offset"].to_numpy())


def watermark_passed(end_us):
    """When the watermark passed `end_us`, and the record (partition, offset) that took it."""
    moments = []
    for p, (shown, arrived, offsets) in progress.items():
        i = np.searchsorted(shown, end_us + delay * 1e6)
        if i == len(shown):
            return None  # not final in this run
        moments.append((arrived[i], (p, int(offsets[i]))))
    return max(moments)


def committed_at(table_uri, columns):
    """Each row's key (the `columns`) -> when the commit that added it was made (its file's
    modification time, microseconds), over the files the log's commits added with new rows
    (auto compaction's rewrites, `dataChange: false`, would date rows to the rewrite)."""
    log = os.path.join(table_uri, "_delta_log")
    adds = []
    for name in sorted(os.listdir(log)):
        if name.endswith(".json"):
            with open(os.path.join(log, name)) as f:
                actions = [json.loads(line) for line in f if line.strip()]
            adds += [a["add"] for a in actions if "add" in a and a["add"].get("dataChange", True)]
    at = {}
    for add in adds:
        mtime = add["modificationTime"] * 1000  # milliseconds
        path = os.path.join(table_uri, urllib.parse.unquote(add["path"]))
        keys = pq.read_table(path, columns=columns).to_pylist()
        for k in keys:
            key = tuple(k[c] for c in columns)
            at[key] = min(mtime, at.get(key, mtime))
    return at


lake = os.path.dirname(os.path.dirname(uri))
bronze_at = committed_at(os.path.join(lake, "bronze", os.path.basename(uri)), ["_partition", "_offset"])
silver_at = committed_at(uri, ["_partition", "_offset"])
window_uri = os.path.join(lake, "window", table.split(".")[-1])
window_at = {(int(s.timestamp() * 1e6), int(e.timestamp() * 1e6)): t
             for (s, e), t in committed_at(window_uri, ["window_start", "window_end"]).items()}


with psycopg2.connect(url) as conn, conn.cursor() as cur:
    micros = "(extract(epoch FROM {}) * 1e6)::bigint"
    cur.execute(f"SELECT {micros.format('window_start')}, {micros.format('window_end')}, "
                f"{micros.format('_loaded_at')} FROM {table}")
    loaded = {}
    for start, end, at in cur.fetchall():
        # One row per page: a window is final when its first row is.
        loaded[(int(start), int(end))] = min(at, loaded.get((int(start), int(end)), at))
# Windows that ended before the first record arrived (the one event that made the topic, with
# the generator's default start time) are not the stream's.
first_arrival = int(silver["_kafka_ts"].dt.epoch("us").min())
after_watermark = []
hops = {"kafka_to_bronze": [], "bronze_to_silver": [], "silver_to_window": [], "window_to_postgres": []}
for (start, end), at in loaded.items():
    passed = watermark_passed(end)
    if passed is None or end < first_arrival:
        continue
    moment, record = passed
    after_watermark.append((at - moment) / 1e6)
    times = [moment, bronze_at.get(record), silver_at.get(record), window_at.get((start, end)), at]
    if None not in times:
        spent = [(b - a) / 1e6 for a, b in zip(times, times[1:])]
        for hop, s in zip(hops, spent):
            hops[hop].append(s)
        # Which hop a slow window lost its time in (the bench's log).
        print(f"window ending {end // 1_000_000}: {(at - moment) / 1e6:.2f} s after the watermark; "
              + ", ".join(f"{h} {s:.2f}" for h, s in zip(hops, spent)), file=sys.stderr)
views = silver.filter(pl.col("event_type") == "page_view")
starts = (views["event_time"].dt.epoch("us").to_numpy() // 60_000_000) * 60_000_000
arrived = views["_kafka_ts"].dt.epoch("us").to_numpy()
from_arrival = [(loaded[(s, s + 60_000_000)] - a) / 1e6
                for s, a in zip(starts, arrived) if (s, s + 60_000_000) in loaded]


def pct(values, q):
    return round(float(np.percentile(values, q)), 2) if values else None


result = {
    "windows": len(after_watermark),
    "after_watermark": {f"p{q}": pct(after_watermark, q) for q in (50, 95, 99)},
    "events": len(from_arrival),
    "from_arrival": {f"p{q}": pct(from_arrival, q) for q in (50, 95, 99)},
    "hops_p50": {hop: pct(values, 50) for hop, values in hops.items()},
}
print(json.dumps(result))
a, e = result["after_watermark"], result["from_arrival"]
print(f"{result['windows']} final 1-minute windows reached Postgres p50 {a['p50']} s, "
      f"p95 {a['p95']} s, p99 {a['p99']} s after the watermark passed their end; from an "
      f"event's arrival to its window's final row p50 {e['p50']} s, p99 {e['p99']} s "
      f"({result['events']} page views); the record that passed the watermark took, at the "
      f"median, " + ", ".join(f"{v} s {k.replace('_', ' ')}" for k, v in result["hops_p50"].items()))
sys.stdout.flush()
os._exit(0)  # deltalake may abort interpreter teardown (known upstream bug)
