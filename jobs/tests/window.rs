//! `lakectl run window` on the shipped user-activity pipeline, checked against an oracle:
//! `tests/oracle/user_activity.py` computes the same windows, sessions and late records
//! from the generator's own output (its NDJSON file and truth file), without lakectl.

use std::path::PathBuf;

use serde_json::Value;

use crate::util::*;

const PARTITIONS: &str = "3";
/// Sessions' `max_duration` in the tests' pipeline (`TestPipeline::user_activity`).
const MAX_SESSION_MINUTES: &str = "60";

/// A generated stream, sent to the test's topic and written to a file, and what the oracle
/// makes of the file.
pub(crate) struct Stream {
    _dir: tempfile::TempDir,
    truth: PathBuf,
    oracle: Value,
}

/// One event a second: 20,000 events are 5½ hours of event time, long enough for busy users'
/// sessions to reach their 1-hour limit; late events 10 minutes behind, jitter well inside the
/// 2-minute watermark.
pub(crate) fn generate(t: &TestPipeline, count: u64, seed: u64) -> Option<Stream> {
    let dir = tempfile::tempdir().unwrap();
    let (events, truth) = (
        dir.path().join("events.ndjson"),
        dir.path().join("truth.ndjson"),
    );
    let args = [
        "user-activity",
        "--count",
        &count.to_string(),
        "--seed",
        &seed.to_string(),
        "--event-rate",
        "1",
        "--out-of-order",
        "10s",
        "--late-fraction",
        "0.02",
        "--late-by",
        "10m",
        "--duplicate-fraction",
        "0.01",
        "--corrupt-fraction",
        "0.01",
    ];
    ok(run(t
        .lakectl()
        .arg("generate")
        .args(args)
        .args(["--topic", &t.topic, "--partitions", PARTITIONS, "--truth"])
        .arg(&truth)));
    ok(run(lakectl()
        .arg("generate")
        .args(args)
        .arg("--out")
        .arg(&events)));
    let oracle = repo_root().join("jobs/tests/oracle/user_activity.py");
    let out = run_python(&[
        oracle.as_os_str(),
        events.as_os_str(),
        truth.as_os_str(),
        PARTITIONS.as_ref(),
        MAX_SESSION_MINUTES.as_ref(),
    ])?;
    Some(Stream {
        _dir: dir,
        truth,
        oracle: serde_json::from_slice(&out).unwrap(),
    })
}

/// Rows of `sql` over a window table as JSON values, to compare with the oracle's.
fn window_rows(t: &TestPipeline, layer: Layer, table: &str, sql: &str) -> Vec<Value> {
    table_rows(&t.lake(), layer, table, sql)
        .into_iter()
        .map(|row| {
            Value::Array(
                row.into_iter()
                    .map(|v| {
                        let v = v.expect("no NULLs in window rows");
                        v.parse::<i64>().map_or(Value::String(v), Value::from)
                    })
                    .collect(),
            )
        })
        .collect()
}

fn oracle_rows(stream: &Stream, table: &str) -> Vec<Value> {
    stream.oracle[table].as_array().unwrap().clone()
}

/// Every window table and quarantine equal the oracle's.
pub(crate) fn assert_windows_match_the_oracle(t: &TestPipeline, stream: &Stream) {
    let bounds = "CAST(window_start AS BIGINT), CAST(window_end AS BIGINT)";
    let tables = [
        (
            "page_view_counts",
            format!("SELECT {bounds}, page, page_views FROM t ORDER BY 1, 2, 3"),
        ),
        (
            "active_users",
            format!("SELECT {bounds}, active_users, events FROM t ORDER BY 1, 2"),
        ),
        (
            "user_sessions",
            format!(
                "SELECT user_id, {bounds}, events, pages, \
                 CAST(round(duration_seconds * 1000) AS BIGINT) * 1000 FROM t ORDER BY 1, 2"
            ),
        ),
    ];
    for (table, sql) in &tables {
        let got = window_rows(t, Layer::Window, table, sql);
        let want = oracle_rows(stream, table);
        assert!(
            want.len() > 50,
            "{table}: the oracle found {} rows",
            want.len()
        );
        assert_eq!(got.len(), want.len(), "{table}: rows");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{table}");
        }
    }
    // Each table's late records: late for every window of that table they belong to.
    for table in ["active_users", "user_sessions", "page_view_counts"] {
        let want = stream.oracle["late"][table].as_array().unwrap().clone();
        let got = window_rows(
            t,
            Layer::Quarantine,
            table,
            "SELECT _partition, _offset FROM t WHERE rule = 'late' ORDER BY 1, 2",
        );
        assert_eq!(got, want, "quarantine.{table}: the late records");
    }
}

/// The enriched topic holds each event of every final session once, with its session and
/// position as the oracle has them, on the partition of its key.
fn assert_enriched_topic_matches_the_oracle(t: &TestPipeline, stream: &Stream) {
    let records = read_topic(&t.brokers(), &format!("{}_enriched", t.topic));
    let mut got: Vec<Value> = Vec::new();
    for r in &records {
        let v: Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        let user = v["user_id"].as_str().unwrap();
        assert_eq!(r.key.as_deref(), Some(user.as_bytes()));
        assert_eq!(
            r.partition,
            lakehouse_core::kafka::key_partition(user.as_bytes(), 3),
            "{v}"
        );
        got.push(serde_json::json!([
            v["event_id"],
            user,
            v["activity_session"],
            v["session_position"],
            v["session_events"]
        ]));
    }
    got.sort_by_key(|v| v.to_string());
    let mut want: Vec<Value> = oracle_rows(stream, "enriched_activity")
        .into_iter()
        .map(|e| {
            let start = chrono::DateTime::from_timestamp_micros(e[2].as_i64().unwrap()).unwrap();
            let session = format!(
                "{}/{}",
                e[1].as_str().unwrap(),
                start.format("%Y-%m-%dT%H:%M:%S%.3fZ")
            );
            serde_json::json!([e[0], e[1], session, e[3], e[4]])
        })
        .collect();
    want.sort_by_key(|v| v.to_string());
    assert!(want.len() > 1000, "{}", want.len());
    assert_eq!(got.len(), want.len(), "enriched records");
    assert_eq!(got, want, "enriched records");
}

/// The final window and session rows, and the late records, equal the oracle's; Postgres
/// holds the window tables as they are in the lake.
#[test]
fn windows_and_sessions_equal_an_independent_computation() {
    let Some(t) = TestPipeline::user_activity(2_000, 5_000, 3_000) else {
        return;
    };
    let Some(stream) = generate(&t, 20_000, 11) else {
        return;
    };
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    ok(run(t.lakectl().args(["run", "silver"])));
    ok(run(t.lakectl().args(["run", "window"])));
    let late_for = |table: &str| stream.oracle["late"][table].as_array().unwrap().len();
    let late = late_for("active_users");
    let capped = oracle_rows(&stream, "user_sessions")
        .iter()
        .filter(|s| s[2].as_i64().unwrap() - s[1].as_i64().unwrap() == 3_600_000_000)
        .count();
    assert!(capped > 0, "no session reached its maximum duration");
    assert_windows_match_the_oracle(&t, &stream);

    // The records 10 minutes late are late for every 5-minute window they fall in (each ended
    // before the watermark of their partition reached them): the oracle finds the generator's
    // late records, nearly all (one before its partition showed 10 minutes of events is on
    // time). Most still count in their users' sessions, open for 30 minutes after the last
    // event: only those whose session had closed are late there.
    assert!(
        late_for("user_sessions") * 4 < late,
        "{}",
        late_for("user_sessions")
    );
    let truth: Vec<Value> = std::fs::read_to_string(&stream.truth)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["defect"] == "late")
        .collect();
    assert!(
        late <= truth.len() && late * 100 >= truth.len() * 97,
        "{late} of {}",
        truth.len()
    );

    ok(run(t.lakectl().args(["run", "load"])));
    let schema = &t.pg_target;
    for (table, columns) in [
        (
            "page_view_counts",
            "window_start, window_end, page, page_views",
        ),
        (
            "active_users",
            "window_start, window_end, active_users, events",
        ),
        (
            "user_sessions",
            "user_id, window_start, window_end, events, pages",
        ),
    ] {
        // Times compare as microseconds since the epoch.
        let select = |time: &dyn Fn(&str) -> String| {
            columns
                .split(", ")
                .map(|c| {
                    if c.starts_with("window_") {
                        time(c)
                    } else {
                        format!("{c}::text")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let pg = pg_rows(&format!(
            "SELECT {} FROM {schema}.{table} ORDER BY 1, 2, 3",
            select(&|c| format!("(extract(epoch FROM {c}) * 1000000)::bigint::text"))
        ));
        let lake = table_rows(
            &t.lake(),
            Layer::Window,
            table,
            &format!(
                "SELECT {} FROM t ORDER BY 1, 2, 3",
                select(&|c| format!("CAST({c} AS BIGINT)")).replace("::text", "")
            ),
        );
        assert!(!lake.is_empty(), "{table}");
        assert_eq!(pg, lake, "{table}: Postgres holds the lake's rows");
    }
    assert_every_table_reads_alike(&t);
}

/// `kill -9` at the crash points between the quarantine, output and state commits, and at
/// random moments of continuous runs: the windows still equal the oracle's, no window is
/// written twice, and no late record is quarantined twice.
#[test]
fn windows_survive_kill_9_anywhere() {
    let Some(t) = TestPipeline::user_activity(1_000, 2_000, 1_000) else {
        return;
    };
    let Some(stream) = generate(&t, 15_000, 12) else {
        return;
    };
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    ok(run(t.lakectl().args(["run", "silver"])));

    // Each run dies at its crash point: after a unit's output commit, or when it writes the
    // state's copy; the next replays the units after the copy, then goes on.
    for (point, window) in [
        ("window:after_output", "page_view_counts"),
        ("window:after_state", "user_sessions"),
    ] {
        let mut crashes = 0;
        loop {
            let out = run(t
                .lakectl()
                .args(["run", "window", window])
                .env("LAKECTL_CRASH_AT", point));
            if out.code == 0 {
                break;
            }
            assert!(out.stderr.contains(point), "{}", out.stderr);
            crashes += 1;
            assert!(crashes < 20, "{window} never finished");
        }
        assert!(crashes >= 3, "{window}: {crashes} crashes");
    }

    // A unit dies after its quarantine commit; the next is planned with bigger units, yet must
    // re-do exactly the range the quarantine has, or its late records would land there twice
    // (the chaos harness found this with silver still committing).
    let out = run(t
        .lakectl()
        .args(["run", "window", "active_users"])
        .env("LAKECTL_CRASH_AT", "window:after_quarantine"));
    assert!(
        out.stderr.contains("window:after_quarantine"),
        "{}",
        out.stderr
    );
    let shipped = std::fs::read_to_string(&t.path).unwrap();
    // Units of one silver commit before, of five now.
    let bigger = shipped.replace("batch_rows = 1000", "batch_rows = 10000");
    std::fs::write(&t.path, bigger).unwrap();
    ok(run(t.lakectl().args(["run", "window", "active_users"])));
    std::fs::write(&t.path, shipped).unwrap();

    // Continuous runs killed at random moments, mid-unit or between commits.
    kill_at_random(
        &t,
        &[
            "run",
            "window",
            "active_users",
            "enriched_activity",
            "--continuous",
        ],
        6,
    );
    ok(run(t.lakectl().args(["run", "window"])));
    assert_windows_match_the_oracle(&t, &stream);

    // The sink: killed after sending a unit, before recording it as sent (three times), then
    // at random moments of continuous runs.
    for _ in 0..3 {
        let out = run(t
            .lakectl()
            .args(["run", "sink"])
            .env("LAKECTL_CRASH_AT", "sink:after_send"));
        assert!(out.stderr.contains("sink:after_send"), "{}", out.stderr);
    }
    kill_at_random(&t, &["run", "sink", "--continuous"], 4);
    ok(run(t.lakectl().args(["run", "sink"])));
    assert_enriched_topic_matches_the_oracle(&t, &stream);
}

/// Starts `args` and kills it with SIGKILL after 0.3 to 1.5 s, `times` times.
fn kill_at_random(t: &TestPipeline, args: &[&str], times: usize) {
    let mut pause = 5u64;
    for _ in 0..times {
        let (_, log) = t.log_file("killed");
        let mut child = t
            .lakectl()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        pause = pause * 7 % 13;
        std::thread::sleep(std::time::Duration::from_millis(300 + pause * 100));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
