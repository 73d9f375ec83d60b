//! `lakectl run bronze` against Nisshi and moto: exactly-once under kills, signals and rebalances.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use lakehouse_core::run_log::RunLog;
use lakehouse_core::Outcome;

use crate::util::*;

fn bronze_once(t: &TestPipeline) -> Run {
    run(t.lakectl().args(["run", "bronze", "--once"]))
}

/// A continuous bronze process; its stderr goes to a file (a pipe nobody reads would block it).
struct Bronze {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Bronze {
    // A failed test must not leave its bronze process running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `  12: tokio::runtime::…` or `             at ./src/x.rs:3:4`.
fn is_backtrace_line(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("at ")
        || t.split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

impl Bronze {
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        // Backtraces in error messages (RUST_BACKTRACE is on in tests) would crowd out the
        // messages themselves.
        let lines: Vec<&str> = log.lines().filter(|l| !is_backtrace_line(l)).collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

fn spawn_bronze(t: &TestPipeline) -> Bronze {
    let (log, file) = t.log_file("bronze");
    let child = t
        .lakectl()
        .args(["run", "bronze"])
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    Bronze { child, log }
}

fn signal(bronze: &Bronze, sig: i32) {
    assert_eq!(unsafe { libc::kill(bronze.child.id() as i32, sig) }, 0);
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    wait_for_logged(what, limit, &[], &mut done)
}

/// `wait_for`, printing the logs of the bronze processes on a timeout.
fn wait_for_logged(what: &str, limit: Duration, logs: &[&Bronze], done: &mut dyn FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            let tails: Vec<String> = logs.iter().map(|b| b.log_tail()).collect();
            panic!("timed out waiting for {what}:\n{}", tails.join("\n---\n"));
        }
        // Gently: moto serves one request at a time, and the job under test needs it too.
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Waits for the process to exit; returns its exit code and the tail of its log.
fn wait_exit(mut bronze: Bronze, limit: Duration) -> (i32, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = bronze.child.try_wait().unwrap() {
            return (status.code().unwrap_or(-1), bronze.log_tail());
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit in {limit:?}:\n{}",
            bronze.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The exact multiset check: every record of the topic once, nothing else.
fn assert_table_equals_topic(t: &TestPipeline) {
    let expected: Vec<(i32, i64, Option<Vec<u8>>)> = t
        .read_topic()
        .into_iter()
        .map(|r| (r.partition, r.offset, r.value))
        .collect();
    let got = bronze_rows(&t.lake(), &t.table);
    assert_eq!(got.len(), expected.len(), "row count: table vs topic");
    assert!(
        got == expected,
        "table rows differ from the topic's (partition, offset, value)"
    );
}

fn runs(t: &TestPipeline) -> Vec<lakehouse_core::RunRecord> {
    block_on(RunLog::new(t.lake()).read_all()).unwrap()
}

fn numbered(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(150)).into_bytes())
        .collect()
}

fn produce_values(t: &TestPipeline, values: &[Vec<u8>]) {
    let records: Vec<RawRecord<'_>> = values.iter().map(|v| (None, Some(&v[..]))).collect();
    t.produce_raw(&records);
}

#[test]
fn books_land_byte_for_byte_and_a_second_once_adds_nothing() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    let csv = repo_root().join("data/best-selling-books.csv");
    let out = run(t.lakectl().args([
        "produce",
        "--topic",
        &t.topic,
        "--file",
        csv.to_str().unwrap(),
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);

    let out = bronze_once(&t);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_table_equals_topic(&t);
    assert_eq!(bronze_rows(&t.lake(), &t.table).len(), 174);

    let out = bronze_once(&t);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("0 rows written"), "{}", out.stdout);
    assert_eq!(bronze_rows(&t.lake(), &t.table).len(), 174);

    let runs = runs(&t);
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.outcome == Outcome::Succeeded));
    assert_eq!((runs[0].rows_out, runs[1].rows_out), (174, 0));

    let status = run(t.lakectl().arg("status"));
    assert!(
        status.stdout.contains(&format!("bronze:{}", t.table))
            && status.stdout.contains("succeeded"),
        "{}",
        status.stdout
    );
}

#[test]
fn once_on_an_empty_topic_exits_zero_at_once() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    t.create_topic(3);
    let started = Instant::now();
    let out = bronze_once(&t);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(bronze_rows(&t.lake(), &t.table).is_empty());
}

#[test]
fn poisoned_records_land_as_they_are() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    let huge = vec![b'z'; 900_000];
    let records: Vec<RawRecord<'_>> = vec![
        (None, Some(b"")),
        (Some(b"k"), None),
        (None, Some(b"\xff\xfe\x00not utf-8")),
        (None, Some(b"{\"Book\": NaN}")),
        (Some(b"\x00"), Some(&huge)),
    ];
    t.produce_raw(&records);
    let out = bronze_once(&t);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_table_equals_topic(&t);
    let values: Vec<Option<Vec<u8>>> = bronze_rows(&t.lake(), &t.table)
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert!(
        values.contains(&None)
            && values.contains(&Some(Vec::new()))
            && values.contains(&Some(huge))
    );
}

/// The runner's cancellation, end to end: SIGTERM → the unit finishes, exit 0, run "cancelled".
#[test]
fn sigterm_stops_continuous_bronze_cleanly_and_records_a_cancelled_run() {
    let Some(t) = TestPipeline::new("flush_rows = 100\nflush_interval_ms = 300") else {
        return;
    };
    produce_values(&t, &numbered(1_000));
    let child = spawn_bronze(&t);
    wait_for("a first commit", Duration::from_secs(60), || {
        bronze_count(&t.lake(), &t.table) > 0
    });
    signal(&child, libc::SIGTERM);
    let (code, stderr) = wait_exit(child, Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    let runs = runs(&t);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].outcome, Outcome::Cancelled);
    // Whatever it committed is exact; a --once run then takes the rest.
    assert_eq!(bronze_once(&t).code, 0);
    assert_table_equals_topic(&t);
}

#[test]
fn kill_9_mid_stream_then_restart_loses_and_doubles_nothing() {
    let Some(t) = TestPipeline::new("flush_rows = 500\nflush_interval_ms = 200") else {
        return;
    };
    t.create_topic(3);
    produce_values(&t, &numbered(20_000));
    for round in 0..3 {
        let child = spawn_bronze(&t);
        let before = bronze_count(&t.lake(), &t.table);
        wait_for("progress", Duration::from_secs(60), || {
            bronze_count(&t.lake(), &t.table) > before
        });
        // Land the kill at a different point of the batch/commit cycle each round.
        std::thread::sleep(Duration::from_millis(37 * round));
        signal(&child, libc::SIGKILL);
        let _ = wait_exit(child, Duration::from_secs(10));
    }
    let out = bronze_once(&t);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_table_equals_topic(&t);
    assert_eq!(bronze_rows(&t.lake(), &t.table).len(), 20_000);
}

#[test]
fn two_processes_in_one_group_with_a_rebalance_write_each_record_once() {
    let Some(t) = TestPipeline::new("flush_rows = 1000\nflush_interval_ms = 200") else {
        return;
    };
    t.create_topic(3);
    produce_values(&t, &numbered(15_000));
    let first = spawn_bronze(&t);
    wait_for(
        "the first process to commit",
        Duration::from_secs(60),
        || bronze_count(&t.lake(), &t.table) > 0,
    );
    // A second member joins: the group rebalances while the first is mid-stream.
    let second = spawn_bronze(&t);
    produce_values(&t, &numbered(15_000));
    wait_for("all 30,000 rows", Duration::from_secs(120), || {
        bronze_count(&t.lake(), &t.table) >= 30_000
    });
    for child in [&first, &second] {
        signal(child, libc::SIGTERM);
    }
    for child in [first, second] {
        let (code, stderr) = wait_exit(child, Duration::from_secs(30));
        assert_eq!(code, 0, "{stderr}");
    }
    assert_table_equals_topic(&t);
    let jobs: Vec<Outcome> = runs(&t).iter().map(|r| r.outcome).collect();
    assert_eq!(jobs, vec![Outcome::Cancelled, Outcome::Cancelled]);
}

#[test]
fn the_table_reads_as_plain_delta_in_python() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    produce_values(&t, &numbered(50));
    assert_eq!(bronze_once(&t).code, 0);
    let script = r#"
t = deltalake.DeltaTable(sys.argv[1], storage_options=opts).to_pyarrow_table()
rows = sorted(zip(t["_partition"].to_pylist(), t["_offset"].to_pylist(), t["value"].to_pylist()))
for p, o, v in rows:
    print(p, o, v.hex())
"#;
    // scripts/test.sh exports a venv with the `deltalake` package (scripts/python-env.sh).
    let Some(stdout) = python_delta(script, &[&format!("{}bronze/{}", t.lake_uri, t.table)]) else {
        return;
    };
    let expected: String = bronze_rows(&t.lake(), &t.table)
        .iter()
        .map(|(p, o, v)| {
            format!(
                "{p} {o} {}\n",
                v.as_ref()
                    .unwrap()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        })
        .collect();
    assert_eq!(stdout, expected);
}

/// The lag column of `lakectl status`'s partition table.
fn lags(status: &str) -> Vec<i64> {
    status
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("partition"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect()
}

#[test]
fn checkpoints_optimize_and_vacuum_keep_the_rows_and_the_positions_and_status_shows_the_lag() {
    let Some(t) = TestPipeline::new("flush_rows = 100") else {
        return;
    };
    let t = t.with_env("LAKECTL_LAKE_CHECKPOINT_INTERVAL", "3");
    t.create_topic(2);
    produce_values(&t, &numbered(1_000));
    let status = run(t.lakectl().arg("status"));
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert_eq!(
        lags(&status.stdout).iter().sum::<i64>(),
        1_000,
        "nothing written yet:\n{}",
        status.stdout
    );

    assert_eq!(bronze_once(&t).code, 0);
    let status = run(t.lakectl().arg("status"));
    assert_eq!(lags(&status.stdout), vec![0, 0], "{}", status.stdout);

    // At least 10 commits with a checkpoint interval of 3: the log has checkpoints.
    let lake = t.lake();
    let log = lake.path(&format!("bronze/{}/_delta_log", t.table));
    let files: Vec<String> = block_on(async {
        use futures::TryStreamExt;
        lake.store()
            .list(Some(&log))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
    })
    .unwrap();
    assert!(
        files.iter().any(|f| f.ends_with(".checkpoint.parquet")),
        "{files:#?}"
    );

    let table = format!("bronze.{}", t.table);
    let out = run(t.lakectl().args(["optimize", &table]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("compacted into"), "{}", out.stdout);
    let out = run(t
        .lakectl()
        .args(["vacuum", &table, "--retention-hours", "0"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let deleted: usize = out
        .stdout
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(deleted >= 10, "the small files are gone: {}", out.stdout);
    assert_table_equals_topic(&t);

    // The positions live on in the log: nothing is read twice after the rewrite.
    produce_values(&t, &numbered(10));
    assert_eq!(bronze_once(&t).code, 0);
    assert_table_equals_topic(&t);
    assert_eq!(bronze_count(&t.lake(), &t.table), 1_010);

    let out = run(t.lakectl().args(["optimize", "platinum.x"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
}

/// Runs continuous bronze through `outage`, then checks every record landed exactly once.
fn survives(t: &TestPipeline, outage: impl FnOnce()) {
    t.create_topic(3);
    produce_values(t, &numbered(5_000));
    let child = spawn_bronze(t);
    wait_for_logged(
        "a first commit",
        Duration::from_secs(60),
        &[&child],
        &mut || bronze_count(&t.lake(), &t.table) > 0,
    );
    outage();
    produce_values(t, &numbered(5_000));
    wait_for_logged(
        "all 10,000 rows",
        Duration::from_secs(180),
        &[&child],
        &mut || bronze_count(&t.lake(), &t.table) >= 10_000,
    );
    signal(&child, libc::SIGTERM);
    let (code, stderr) = wait_exit(child, Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert_table_equals_topic(t);
}

#[test]
fn the_broker_restarted_while_bronze_runs() {
    let Some(mut broker) = PrivateBroker::start() else {
        return;
    };
    let Some(t) = TestPipeline::new("flush_rows = 500\nflush_interval_ms = 200") else {
        return;
    };
    let t = t.with_env("LAKECTL_KAFKA_BROKERS", broker.brokers());
    survives(&t, || {
        broker.kill();
        std::thread::sleep(Duration::from_secs(3));
        broker.restart();
    });
}

#[test]
fn the_object_store_unreachable_for_a_few_seconds() {
    let Some(s3) = PrivateS3::start() else {
        return;
    };
    let Some(t) = TestPipeline::new("flush_rows = 500\nflush_interval_ms = 200") else {
        return;
    };
    let proxy = FlakyProxy::start(s3.port);
    let t = t.with_env(
        "AWS_ENDPOINT_URL",
        format!("http://127.0.0.1:{}", proxy.port),
    );
    survives(&t, || {
        proxy.cut();
        std::thread::sleep(Duration::from_secs(4));
        proxy.restore();
    });
}

#[test]
fn json_logs_are_one_object_per_line() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    produce_values(&t, &numbered(5));
    let out = run(t
        .lakectl()
        .args(["--log-format", "json", "run", "bronze", "--once"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(events
        .iter()
        .all(|e| e["level"].is_string() && e["message"].is_string()));
    let ended = events
        .iter()
        .find(|e| e["message"] == "run ended")
        .expect("a run ended event");
    assert_eq!(ended["outcome"], "succeeded");
    assert_eq!(ended["rows_out"], 5);
}
