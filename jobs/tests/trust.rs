//! Nothing lost, nothing stuck: a reader one compaction behind gets every row, and records
//! that one SQL step, Postgres or the gold writer cannot take do not stop their table.

use crate::util::*;

/// The user-activity stream of `seed`, `count` events from `start`, on time.
fn generate(t: &TestPipeline, count: u64, seed: u64, start: &str) {
    ok(run(t.lakectl().args([
        "generate",
        "--topic",
        &t.topic,
        "--count",
        &count.to_string(),
        "--seed",
        &seed.to_string(),
        "--start",
        start,
        "--late-fraction",
        "0",
    ])));
}

fn count_rows(t: &TestPipeline, layer: Layer, table: &str) -> usize {
    table_rows(&t.lake(), layer, table, "SELECT count(*) FROM t")[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

/// The issue's walk: load, more data, the window table compacted before the next load. The
/// loader took the files added since its version that were still live, skipping the
/// compaction's (`dataChange: false`): the rows of the compacted files never arrived, and
/// every later load found nothing to do.
#[test]
fn a_load_one_compaction_behind_gets_every_row() {
    let Some(t) = TestPipeline::shipped("user_activity", "activity", &[]) else {
        return;
    };
    let stage = |args: &[&str]| ok(run(t.lakectl().args(args)));
    let pg_count = || {
        pg_rows(&format!(
            "SELECT count(*)::text FROM \"{}\".page_view_counts",
            t.pg_target
        ))[0][0]
            .clone()
            .unwrap()
            .parse::<usize>()
            .unwrap()
    };
    generate(&t, 4000, 11, "2026-01-01T00:00:00Z");
    for args in [
        &["run", "bronze", "--once"][..],
        &["run", "silver"],
        &["run", "window", "--once", "page_view_counts"],
        &["run", "load", "page_view_counts"],
    ] {
        stage(args);
    }
    let first = pg_count();
    assert_eq!(first, count_rows(&t, Layer::Window, "page_view_counts"));
    generate(&t, 4000, 12, "2026-01-01T01:00:00Z");
    for args in [
        &["run", "bronze", "--once"][..],
        &["run", "silver"],
        &["run", "window", "--once", "page_view_counts"],
        &["optimize", "window.page_view_counts"],
        &["run", "load", "page_view_counts"],
    ] {
        stage(args);
    }
    let lake = count_rows(&t, Layer::Window, "page_view_counts");
    assert!(
        lake > first,
        "the second hour added windows: {lake} vs {first}"
    );
    assert_eq!(pg_count(), lake, "Postgres holds every window of the lake");
}

/// A silver table whose cleaning SQL CASTs a text field and whose expectation computes on one:
/// one record each that the SQL cannot compute (exit 70 on every run before: the unit failed
/// as a whole).
const UNCOMPUTABLE: &str = r#"
[silver.s]
source = "SOURCE"
key = ["id"]
sql = "SELECT id, CAST(amount AS DECIMAL(12, 2)) AS amount, note FROM source"

[silver.s.schema]
id = "int"
amount = "string"
note = "string"

[[silver.s.expect]]
name = "note_is_positive"
rule = "sql"
predicate = "note IS NULL OR CAST(note AS INT) > 0"
action = "warn"
"#;

#[test]
fn records_the_sql_cannot_compute_are_quarantined_and_the_rest_flow() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    t.append(&UNCOMPUTABLE.replace("SOURCE", &t.table));
    t.create_topic(1);
    let records: [&[u8]; 5] = [
        br#"{"id":1,"amount":"12.50"}"#,
        br#"{"id":2,"amount":"abc"}"#,
        br#"{"id":3,"amount":"7","note":"5"}"#,
        br#"{"id":4,"amount":"1","note":"x"}"#,
        br#"{"id":5,"amount":"2"}"#,
    ];
    let raw: Vec<RawRecord<'_>> = records.iter().map(|v| (None, Some(*v))).collect();
    t.produce_raw(&raw);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    let out = ok(run(t.lakectl().args(["run", "silver"])));
    assert!(
        out.stdout.contains("5 bronze rows read, 3 rows merged"),
        "{}",
        out.stdout
    );
    let silver = table_rows(
        &t.lake(),
        Layer::Silver,
        "s",
        "SELECT id, amount FROM t ORDER BY id",
    );
    let ids: Vec<&str> = silver.iter().map(|r| r[0].as_deref().unwrap()).collect();
    assert_eq!(ids, ["1", "3", "5"]);
    assert_eq!(silver[0][1].as_deref(), Some("12.50"));
    let quarantine = table_rows(
        &t.lake(),
        Layer::Quarantine,
        "s",
        "SELECT _offset, rule, error FROM t ORDER BY _offset",
    );
    assert_eq!(quarantine.len(), 2, "{quarantine:?}");
    assert_eq!(quarantine[0][0].as_deref(), Some("1"));
    assert_eq!(quarantine[0][1].as_deref(), Some("cleaning_sql"));
    let cast_error = quarantine[0][2].as_deref().unwrap();
    assert!(
        cast_error.contains("abc"),
        "the error names the value: {cast_error}"
    );
    assert_eq!(quarantine[1][0].as_deref(), Some("3"));
    assert_eq!(quarantine[1][1].as_deref(), Some("note_is_positive"));
    // Counted: the report and the quality table say so.
    assert!(out.stdout.contains("cleaning_sql"), "{}", out.stdout);
    // A re-run is a no-op: the bad records do not stop the table.
    let again = ok(run(t.lakectl().args(["run", "silver"])));
    assert!(
        again.stdout.contains("0 bronze rows read"),
        "{}",
        again.stdout
    );
}

/// A value Postgres refuses (a NUL in text) made every load of the table exit 2.
#[test]
fn a_row_postgres_cannot_take_is_kept_in_the_lake_and_the_rest_load() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    t.append(&format!(
        "[silver.s]\nsource = \"{}\"\nkey = [\"id\"]\n[silver.s.schema]\nid = \"int\"\npage = \"string\"\n\
         [load.s]\nsource = \"silver.s\"\ntarget = \"{}.pages\"\nkey = [\"id\"]\n",
        t.table, t.table
    ));
    t.create_topic(1);
    let records: [&[u8]; 3] = [
        br#"{"id":1,"page":"/a"}"#,
        br#"{"id":2,"page":"/a\u0000b"}"#,
        br#"{"id":3,"page":"/c"}"#,
    ];
    let raw: Vec<RawRecord<'_>> = records.iter().map(|v| (None, Some(*v))).collect();
    t.produce_raw(&raw);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    ok(run(t.lakectl().args(["run", "silver"])));
    let out = ok(run(t.lakectl().args(["run", "load"])));
    assert!(
        out.stdout.contains("1 kept in quarantine.load_s"),
        "{}",
        out.stdout
    );
    let ids = pg_rows(&format!(
        "SELECT id::text FROM \"{}\".pages ORDER BY id",
        t.table
    ));
    assert_eq!(ids, [[Some("1".to_string())], [Some("3".to_string())]]);
    let kept = table_rows(
        &t.lake(),
        Layer::Quarantine,
        "load_s",
        "SELECT row, rule, error FROM t",
    );
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        kept[0][0].as_deref().unwrap().contains(r#""id":2"#),
        "{kept:?}"
    );
    assert_eq!(kept[0][1].as_deref(), Some("postgres_accepts"));
    assert!(kept[0][2].as_deref().unwrap().contains("NUL"), "{kept:?}");
    // Nothing is stuck and nothing is kept twice.
    let again = ok(run(t.lakectl().args(["run", "load"])));
    assert!(again.stdout.contains("0 rows read"), "{}", again.stdout);
    t.produce_raw(&[(None, Some(br#"{"id":4,"page":"/d"}"#))]);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    ok(run(t.lakectl().args(["run", "silver"])));
    ok(run(t.lakectl().args(["run", "load"])));
    assert_eq!(
        pg_rows(&format!("SELECT count(*)::text FROM \"{}\".pages", t.table))[0][0].as_deref(),
        Some("3")
    );
    assert_eq!(count_rows(&t, Layer::Quarantine, "load_s"), 1);
}

/// A gold query with no rows (a count by quarantine rule before anything was quarantined)
/// retried five times and exited 69: "No data source supplied to write command".
#[test]
fn an_empty_gold_result_is_a_table_with_no_rows() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    t.append(&format!(
        "[silver.s]\nsource = \"{}\"\nkey = [\"id\"]\n[silver.s.schema]\nid = \"int\"\n\
         [gold.by_rule]\nsql = \"SELECT rule, count(*) AS records FROM quarantine.s GROUP BY rule\"\n\
         [load.by_rule]\nsource = \"gold.by_rule\"\ntarget = \"{}.by_rule\"\nmode = \"replace\"\n",
        t.table, t.table
    ));
    t.create_topic(1);
    t.produce_raw(&[(None, Some(br#"{"id":1}"#))]);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    ok(run(t.lakectl().args(["run", "silver"])));
    let out = ok(run(t.lakectl().args(["run", "gold"])));
    assert!(out.stdout.contains("0 rows written"), "{}", out.stdout);
    let columns = table_rows(
        &t.lake(),
        Layer::Gold,
        "by_rule",
        "SELECT count(*), count(rule), count(records) FROM t",
    );
    assert_eq!(columns[0], ["0", "0", "0"].map(|s| Some(s.to_string())));
    ok(run(t.lakectl().args(["run", "load"])));
    assert_eq!(
        pg_rows(&format!(
            "SELECT count(*)::text FROM \"{}\".by_rule",
            t.table
        ))[0][0]
            .as_deref(),
        Some("0")
    );
}

/// A continuous run over two tables, one of which stops on an error of its own: the process
/// logged it at info and went on for ever with the other, `/readyz` still 200.
#[test]
fn a_table_that_stops_stops_the_process_with_its_cause() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    t.append(&format!(
        "[silver.good]\nsource = \"{0}\"\nkey = [\"id\"]\n[silver.good.schema]\nid = \"int\"\n\
         [silver.bad]\nsource = \"{0}\"\nkey = [\"id\"]\nsql = \"SELECT id, missing FROM source\"\n\
         [silver.bad.schema]\nid = \"int\"\n",
        t.table
    ));
    t.create_topic(1);
    t.produce_raw(&[(None, Some(br#"{"id":1}"#))]);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    let port = free_port();
    let mut child = t
        .lakectl()
        .args(["run", "silver", "--continuous", "--metrics-addr"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the process went on after a table stopped");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(2), "a user error: {stderr}");
    assert!(
        stderr.contains("ERROR")
            && stderr.contains("the job stopped")
            && stderr.contains("missing"),
        "{stderr}"
    );
    assert!(stderr.contains("silver:bad"), "{stderr}");
    // The other table was stopped after its unit, not left running.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("silver:good: cancelled"), "{stdout}");
}

/// bronze → silver.s (each id once) → [sink.out] to `<topic>_out`, in units of `batch_rows`.
fn sink_pipeline(t: &TestPipeline, batch_rows: usize, kafka_options: &str) {
    t.append(&format!(
        "[silver.s]\nsource = \"{0}\"\nkey = [\"id\"]\non_existing_key = \"keep\"\n\
         [silver.s.schema]\nid = \"int\"\n\
         [sink.out]\nsource = \"silver.s\"\ntopic = \"{0}_out\"\nkey = \"id\"\ncolumns = [\"id\"]\n\
         batch_rows = {batch_rows}\n{kafka_options}",
        t.table
    ));
}

fn ids(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!(r#"{{"id":{i}}}"#).into_bytes())
        .collect()
}

/// Every id the sink's topic holds, sorted (duplicates kept).
fn sent_ids(t: &TestPipeline) -> Vec<i64> {
    let mut ids: Vec<i64> = read_topic(&t.brokers(), &format!("{}_out", t.topic))
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
            v["id"].as_i64().unwrap()
        })
        .collect();
    ids.sort();
    ids
}

/// Two sink processes for one sink each sent every row they found unsent: twice.
#[test]
fn a_second_sink_process_is_refused_and_one_after_a_kill_9_takes_over() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    sink_pipeline(&t, 10_000, "");
    t.create_topic(1);
    let values = ids(50);
    let raw: Vec<RawRecord<'_>> = values.iter().map(|v| (None, Some(v.as_slice()))).collect();
    t.produce_raw(&raw);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    ok(run(t.lakectl().args(["run", "silver"])));
    let (_, log) = t.log_file("sink-a");
    let port = free_port();
    let mut first = t
        .lakectl()
        .args(["run", "sink", "--continuous", "--metrics-addr"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Ready: its first unit, which sends every row, is done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while http_get(&format!("http://127.0.0.1:{port}/readyz"), None).0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first sink never got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(sent_ids(&t).len(), 50);
    let second = run(t.lakectl().args(["run", "sink"]));
    assert_eq!(second.code, 2, "{}", second.stderr);
    assert!(
        second.stderr.contains("already running")
            && second.stderr.contains(&first.id().to_string()),
        "{}",
        second.stderr
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let values = ids(60);
    let raw: Vec<RawRecord<'_>> = values[50..]
        .iter()
        .map(|v| (None, Some(v.as_slice())))
        .collect();
    t.produce_raw(&raw);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    ok(run(t.lakectl().args(["run", "silver"])));
    ok(run(t.lakectl().args(["run", "sink"])));
    assert_eq!(sent_ids(&t), (0..60).collect::<Vec<i64>>(), "each row once");
}

/// The producer's messages timed out during a broker outage longer than
/// `message.timeout.ms` while later ones landed: the retried unit skipped the lost ones, for
/// ever (it trusts each partition to hold a prefix of what it sent).
#[test]
fn a_broker_outage_longer_than_the_message_timeout_loses_no_row() {
    let Some(mut broker) = PrivateBroker::start() else {
        return;
    };
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    let t = t.with_env("LAKECTL_KAFKA_BROKERS", broker.brokers());
    // Few messages queued at once, so that sends go on through the outage.
    sink_pipeline(
        &t,
        400,
        "[kafka.options]\n\"message.timeout.ms\" = \"2000\"\n\"queue.buffering.max.messages\" = \"20\"\n",
    );
    t.create_topic(1);
    let values = ids(2000);
    let raw: Vec<RawRecord<'_>> = values.iter().map(|v| (None, Some(v.as_slice()))).collect();
    t.produce_raw(&raw);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    ok(run(t.lakectl().args(["run", "silver"])));
    let (log_path, log) = t.log_file("sink");
    let mut sink = t
        .lakectl()
        .args(["run", "sink", "--continuous"])
        .env("LAKECTL_RUNNER_INITIAL_BACKOFF_MS", "200")
        .env("LAKECTL_RUNNER_MAX_BACKOFF_MS", "1000")
        .env("LAKECTL_RUNNER_MAX_RETRIES", "100")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    broker.kill();
    std::thread::sleep(std::time::Duration::from_secs(6));
    broker.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let sent = sent_ids(&t);
        if sent.len() >= 2000 || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    sink.kill().unwrap();
    sink.wait().unwrap();
    ok(run(t.lakectl().args(["run", "sink"])));
    let sent = sent_ids(&t);
    let missing: Vec<i64> = (0..2000)
        .filter(|i| sent.binary_search(i).is_err())
        .collect();
    assert!(
        missing.is_empty() && sent.len() == 2000,
        "{} sent, {} missing (first {:?}); sink log {}",
        sent.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        log_path.display()
    );
}

/// `--full-refresh` replayed bronze's commits, whose files a compaction replaced and
/// `vacuum` then deleted: "data file … is gone".
#[test]
fn a_full_refresh_after_optimize_and_vacuum_rebuilds_every_row_once() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    t.append(&format!(
        "[silver.s]\nsource = \"{}\"\nkey = [\"id\"]\nbatch_rows = 2\n[silver.s.schema]\nid = \"int\"\n",
        t.table
    ));
    t.create_topic(1);
    for i in 0..3 {
        let a = format!(r#"{{"id":{}}}"#, 2 * i);
        let b = format!(r#"{{"id":{}}}"#, 2 * i + 1);
        t.produce_raw(&[(None, Some(a.as_bytes())), (None, Some(b.as_bytes()))]);
        ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    }
    ok(run(t.lakectl().args(["run", "silver"])));
    let bronze = format!("bronze.{}", t.table);
    ok(run(t.lakectl().args(["optimize", &bronze])));
    let vacuumed = ok(run(t.lakectl().args([
        "vacuum",
        &bronze,
        "--retention-hours",
        "0",
    ])));
    assert!(
        vacuumed.stdout.contains("deleted 3 "),
        "{}",
        vacuumed.stdout
    );
    let out = ok(run(t.lakectl().args(["run", "silver", "--full-refresh"])));
    assert!(
        out.stdout.contains("6 bronze rows read, 6 rows merged"),
        "{}",
        out.stdout
    );
    let ids = table_rows(
        &t.lake(),
        Layer::Silver,
        "s",
        "SELECT id FROM t ORDER BY id",
    );
    let ids: Vec<&str> = ids.iter().map(|r| r[0].as_deref().unwrap()).collect();
    assert_eq!(ids, ["0", "1", "2", "3", "4", "5"]);
    // And on from there: new records after the refresh arrive once.
    t.produce_raw(&[(None, Some(br#"{"id":6}"#))]);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    ok(run(t.lakectl().args(["run", "silver"])));
    assert_eq!(count_rows(&t, Layer::Silver, "s"), 7);
}
