//! `lakectl run silver` on moto and Nisshi: the books acceptance figures, where each kind of
//! bad record ends up, `fail` expectations, full refresh, and kill -9 mid-run.

use std::process::Stdio;
use std::time::{Duration, Instant};

use lakehouse_core::run_log::RunLog;

use crate::util::*;

fn rows(t: &TestPipeline, layer: Layer, table: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    table_rows(&t.lake(), layer, table, sql)
}

/// The first cell of `sql` over `<layer>/<table>`.
fn scalar(t: &TestPipeline, layer: Layer, table: &str, sql: &str) -> String {
    rows(t, layer, table, sql)
        .first()
        .and_then(|r| r[0].clone())
        .unwrap_or_else(|| panic!("no value for {sql} on {table}"))
}

fn count(t: &TestPipeline, layer: Layer, table: &str) -> usize {
    rows(t, layer, table, "SELECT count(*) FROM t")
        .first()
        .map_or(0, |r| r[0].as_deref().unwrap().parse().unwrap())
}

fn silver(t: &TestPipeline, args: &[&str]) -> Run {
    run(t.lakectl().args(["run", "silver"]).args(args))
}

#[test]
fn books_land_typed_cleaned_and_once_per_title_even_when_replayed() {
    let Some(t) = TestPipeline::books() else {
        return;
    };
    t.create_topic(3);
    ok(run(t.lakectl().arg("produce")));
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    let out = ok(silver(&t, &[]));
    assert!(
        out.stdout.contains("174 bronze rows read, 174 rows merged"),
        "{}",
        out.stdout
    );
    for rule in [
        "parse",
        "cleaning_sql",
        "key_not_null",
        "dedupe_key",
        "not_null(authors)",
        "range(sales_millions)",
        "published_in_the_past",
        "regex(original_language)",
    ] {
        assert!(
            out.stdout.contains(rule),
            "report lacks {rule}:\n{}",
            out.stdout
        );
    }

    let q = |sql: &str| scalar(&t, Layer::Silver, "books", sql);
    assert_eq!(q("SELECT count(*) FROM t"), "174");
    assert_eq!(q("SELECT count(DISTINCT authors) FROM t"), "157");
    assert_eq!(q("SELECT sum(sales_millions) FROM t"), "5236.90");
    assert_eq!(
        q("SELECT count(*) FROM t WHERE book_title <> trim(book_title)"),
        "0"
    );
    assert_eq!(q("SELECT count(*) FROM t WHERE genre IS NULL"), "56");
    assert_eq!(
        q("SELECT count(DISTINCT genre) - count(DISTINCT lower(genre)) FROM t"),
        "0",
        "case variants of a genre are one genre"
    );
    assert_eq!(
        q("SELECT count(*) FROM t WHERE genre = 'Children''s literature'"),
        "6"
    );
    assert_eq!(
        rows(
            &t,
            Layer::Silver,
            "books",
            "SELECT authors, original_language, first_published_year, sales_millions, genre, \
             arrow_typeof(first_published_year), arrow_typeof(sales_millions) \
             FROM t WHERE book_title = 'Things Fall Apart'"
        ),
        vec![[
            "Chinua Achebe",
            "English",
            "1958",
            "20.00",
            "Novel",
            "Int64",
            "Decimal128(10, 2)"
        ]
        .map(|s| Some(s.to_string()))
        .to_vec()]
    );
    assert_eq!(
        q("SELECT count(DISTINCT (_partition, _offset)) FROM t \
           WHERE _bronze_version IS NOT NULL AND _kafka_ts IS NOT NULL AND _silver_ts IS NOT NULL"),
        "174",
        "every row traces back to its own bronze record"
    );
    assert_eq!(count(&t, Layer::Quarantine, "books"), 0);

    let again = ok(silver(&t, &[]));
    assert!(
        again.stdout.contains("0 bronze rows read"),
        "a re-run is a no-op:\n{}",
        again.stdout
    );
    let first_version = q("SELECT max(_bronze_version) FROM t");

    // Replay the CSV: the same 174 keys again, newer.
    ok(run(t.lakectl().arg("produce")));
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    assert_eq!(bronze_count(&t.lake(), "books"), 348);
    let replay = ok(silver(&t, &[]));
    assert!(
        replay.stdout.contains("174 bronze rows read"),
        "only the new increment is read:\n{}",
        replay.stdout
    );
    assert_eq!(q("SELECT count(*) FROM t"), "174");
    assert_eq!(
        q(&format!(
            "SELECT count(*) FROM t WHERE _bronze_version > {first_version}"
        )),
        "174",
        "every title now comes from the replay, the latest record"
    );
    assert_eq!(q("SELECT sum(sales_millions) FROM t"), "5236.90");
}

const BAD_RECORDS_TABLES: &str = r#"
[silver.s]
source = "SOURCE"
key = ["id"]
sql = "SELECT id, trim(name) AS name, score, year FROM source WHERE name IS DISTINCT FROM 'skip-me'"

[silver.s.schema]
id = "int"
name = "string"
score = "double"
year = "int"

[[silver.s.expect]]
rule = "not_null"
column = "name"
action = "quarantine"

[[silver.s.expect]]
rule = "range"
column = "score"
min = 0
max = 100
action = "drop"

[[silver.s.expect]]
rule = "accepted_values"
column = "year"
values = [2020, 2021]
action = "warn"
"#;

#[test]
fn each_bad_record_ends_up_where_the_rules_say() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    t.append(&BAD_RECORDS_TABLES.replace("SOURCE", &t.table));
    t.create_topic(1);
    let records: [Option<&[u8]>; 13] = [
        Some(br#"{"id":1,"name":"a","score":10,"year":2020}"#), // superseded by offset 9
        Some(b"not json"),                                      // parse
        Some(br#"{"id":2,"name":"b","score":NaN}"#),            // parse: NaN is not JSON
        Some(br#"{"id":3,"name":"c","score":"NaN"}"#),          // parse: not a finite number
        Some(br#"{"id":"four","name":"d"}"#),                   // parse: not an integer
        Some(br#"{"name":"e","score":1}"#),                     // key_not_null
        Some(br#"{"id":6,"name":" f ","score":1,"year":1999}"#), // silver, warned
        Some(br#"{"id":7,"score":5}"#),                         // quarantine: not_null(name)
        Some(br#"{"id":8,"name":"h","score":500}"#),            // dropped: range(score)
        Some(br#"{"id":1,"name":"a2","score":11,"year":2021}"#), // silver: latest id 1
        Some(br#"{"id":10,"name":"skip-me"}"#),                 // removed by the cleaning SQL
        Some(b"[1,2]"),                                         // parse: not an object
        None,                                                   // parse: a tombstone
    ];
    let raw: Vec<RawRecord<'_>> = records.iter().map(|v| (None, *v)).collect();
    t.produce_raw(&raw);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    let out = ok(silver(&t, &[]));
    assert!(
        out.stdout.contains("13 bronze rows read, 2 rows merged"),
        "{}",
        out.stdout
    );

    assert_eq!(
        rows(
            &t,
            Layer::Silver,
            "s",
            "SELECT id, name, score, year, _offset FROM t ORDER BY id"
        ),
        vec![
            ["1", "a2", "11.0", "2021", "9"]
                .map(|s| Some(s.to_string()))
                .to_vec(),
            vec![
                Some("6".into()),
                Some("f".into()),
                Some("1.0".into()),
                Some("1999".into()),
                Some("6".into())
            ],
        ]
    );

    let quarantine = rows(
        &t,
        Layer::Quarantine,
        "s",
        "SELECT _offset, rule, error, raw_value, run_id FROM t ORDER BY _offset",
    );
    let got: Vec<(String, String)> = quarantine
        .iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    let want: Vec<(String, String)> = [
        ("1", "parse"),
        ("2", "parse"),
        ("3", "parse"),
        ("4", "parse"),
        ("5", "key_not_null"),
        ("7", "not_null(name)"),
        ("11", "parse"),
        ("12", "parse"),
    ]
    .iter()
    .map(|(o, r)| (o.to_string(), r.to_string()))
    .collect();
    assert_eq!(got, want);
    let by_offset = |o: &str| {
        quarantine
            .iter()
            .find(|r| r[0].as_deref() == Some(o))
            .unwrap()
    };
    assert!(by_offset("1")[2]
        .as_deref()
        .unwrap()
        .starts_with("not JSON"));
    assert!(by_offset("3")[2]
        .as_deref()
        .unwrap()
        .contains("expected a finite number, got \"NaN\""));
    assert!(by_offset("4")[2]
        .as_deref()
        .unwrap()
        .contains(r#"field "id": expected an integer"#));
    assert!(by_offset("11")[2]
        .as_deref()
        .unwrap()
        .contains("not a JSON object"));
    assert!(by_offset("12")[2].as_deref().unwrap().contains("tombstone"));
    for (offset, value) in records.iter().enumerate() {
        if let Some(r) = quarantine.iter().find(|r| r[0] == Some(offset.to_string())) {
            assert_eq!(
                r[3].as_deref().map(str::as_bytes),
                *value,
                "raw value kept byte for byte"
            );
        }
    }
    let runs = block_on(RunLog::new(t.lake()).read_all()).unwrap();
    let run_id = &runs
        .iter()
        .rev()
        .find(|r| r.job == "silver:s")
        .unwrap()
        .run_id;
    assert!(quarantine.iter().all(|r| r[4].as_ref() == Some(run_id)));

    // The quality report, as printed and as kept in <lake>/_lakectl/quality.
    let quality = rows(
        &t,
        Layer::System,
        "quality",
        "SELECT rule, action, rows_checked, rows_passed, rows_failed FROM t \
         WHERE job = 'silver:s' ORDER BY rule",
    );
    let want: Vec<Vec<Option<String>>> = [
        ["accepted_values(year)", "warn", "4", "3", "1"],
        // 10 of the 13 records failed a check (the superseded and the filtered one did not).
        ["all_checks", "score", "13", "3", "10"],
        // The SQL computed for every record (none quarantined), and its WHERE removed one.
        ["cleaning_sql", "quarantine", "7", "7", "0"],
        ["cleaning_sql", "drop", "7", "6", "1"],
        ["dedupe_key", "keep latest", "5", "4", "1"],
        ["key_not_null", "quarantine", "6", "5", "1"],
        ["not_null(name)", "quarantine", "4", "3", "1"],
        ["parse", "quarantine", "13", "7", "6"],
        ["range(score)", "drop", "4", "3", "1"],
    ]
    .iter()
    .map(|r| r.map(|s| Some(s.to_string())).to_vec())
    .collect();
    assert_eq!(quality, want);
    let printed = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("parse "))
        .unwrap();
    assert_eq!(
        printed.split_whitespace().collect::<Vec<_>>(),
        ["parse", "quarantine", "13", "7", "6"]
    );
    assert!(
        out.stdout.contains(
            "quality score: 23.1 % of records passed every check (1 of 6 checks without a failure)"
        ),
        "{}",
        out.stdout
    );

    // A full refresh rebuilds the same tables instead of adding to them.
    let refresh = ok(silver(&t, &["--full-refresh"]));
    assert!(
        refresh
            .stdout
            .contains("13 bronze rows read, 2 rows merged"),
        "{}",
        refresh.stdout
    );
    assert_eq!(count(&t, Layer::Silver, "s"), 2);
    assert_eq!(count(&t, Layer::Quarantine, "s"), 8);
}

#[test]
fn a_fail_expectation_stops_before_anything_is_committed() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    t.append(&format!(
        "[silver.s]\nsource = \"{}\"\nkey = [\"id\"]\n[silver.s.schema]\nid = \"int\"\nscore = \"double\"\n\
         [[silver.s.expect]]\nname = \"score_at_most_100\"\nrule = \"range\"\ncolumn = \"score\"\nmax = 100\naction = \"fail\"\n",
        t.table
    ));
    t.create_topic(1);
    t.produce_raw(&[
        (None, Some(br#"{"id":1,"score":5}"#)),
        (None, Some(br#"{"id":2,"score":101}"#)),
        (None, Some(b"garbage")),
    ]);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    for _ in 0..2 {
        let out = silver(&t, &[]);
        assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr
                .contains("\"score_at_most_100\" (action fail) failed for 1 of 2 rows")
                && out.stderr.contains("partition 0 offset 1")
                && out.stderr.contains("nothing was committed"),
            "{}",
            out.stderr
        );
        assert!(
            out.stdout.contains("score_at_most_100"),
            "the report is printed:\n{}",
            out.stdout
        );
        assert_eq!(count(&t, Layer::Silver, "s"), 0);
        assert_eq!(
            count(&t, Layer::Quarantine, "s"),
            0,
            "not even the parse failure"
        );
    }
}

#[test]
fn bad_cleaning_sql_is_a_user_error_naming_the_table() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    t.append(&format!(
        "[silver.s]\nsource = \"{}\"\nkey = [\"id\"]\nsql = \"SELECT id, count(*) AS n FROM source GROUP BY id\"\n\
         [silver.s.schema]\nid = \"int\"\n",
        t.table
    ));
    t.create_topic(1);
    t.produce_raw(&[(None, Some(br#"{"id":1}"#))]);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    let out = silver(&t, &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("one row per record"), "{}", out.stderr);
    assert!(out.stderr.contains("[silver.s] sql"), "{}", out.stderr);
}

/// Many bronze commits, keys updated across them, some bad records: enough units for kills to
/// land inside a unit, between the quarantine and silver commits, and between units.
fn fault_fixture(t: &TestPipeline, records: usize) {
    let table = &t.table;
    t.append(&format!(
        "[silver.s]\nsource = \"{table}\"\nkey = [\"id\"]\nbatch_rows = 1500\n\
         [silver.s.schema]\nid = \"int\"\nv = \"int\"\n\
         [[silver.s.expect]]\nrule = \"range\"\ncolumn = \"v\"\nmin = 0\naction = \"quarantine\"\n\
         [silver.clean]\nsource = \"{table}\"\nkey = [\"id\"]\nbatch_rows = 1500\n\
         [silver.clean.schema]\nid = \"int\"\nv = \"int\"\n\
         [[silver.clean.expect]]\nrule = \"range\"\ncolumn = \"v\"\nmin = 0\naction = \"quarantine\"\n"
    ));
    t.create_topic(3);
    let values: Vec<Vec<u8>> = (0..records)
        .map(|i| match i % 97 {
            0 => b"{broken".to_vec(),
            1 => format!("{{\"id\":{},\"v\":-1}}", i % 2000).into_bytes(),
            _ => format!("{{\"id\":{},\"v\":{i}}}", i % 2000).into_bytes(),
        })
        .collect();
    let keys: Vec<Vec<u8>> = (0..records)
        .map(|i| (i % 2000).to_string().into_bytes())
        .collect();
    let raw: Vec<RawRecord<'_>> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| (Some(k.as_slice()), Some(v.as_slice())))
        .collect();
    t.produce_raw(&raw);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
}

const SILVER_COLUMNS: &str = "id, v, _bronze_version, _partition, _offset, _kafka_ts";
const QUARANTINE_COLUMNS: &str = "_bronze_version, _partition, _offset, raw_value, rule, error";

#[test]
fn kill_9_mid_run_then_rerun_equals_one_clean_run() {
    let Some(t) = TestPipeline::new("flush_rows = 1000") else {
        return;
    };
    fault_fixture(&t, 12_000);
    // Crash exactly between the quarantine and silver commits, then after the merge.
    for point in ["silver:after_quarantine", "silver:after_merge"] {
        let out = run(t
            .lakectl()
            .args(["run", "silver", "s"])
            .env("LAKECTL_CRASH_AT", point));
        assert!(
            out.code != 0 && out.stderr.contains(point),
            "{}",
            out.stderr
        );
    }
    assert!(count(&t, Layer::Quarantine, "s") > 0);

    // Kill after a growing delay until a run gets to finish on its own: the kills land at
    // different points of the unit (reading, quarantine commit, merge, between units).
    let mut kills = 0;
    let mut delay = Duration::from_millis(300);
    loop {
        let mut child = t
            .lakectl()
            .args(["run", "silver", "s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "silver failed on its own: {status}");
            break;
        }
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
        child.wait().unwrap();
        kills += 1;
        assert!(kills < 30, "silver never finished between kills");
        delay += Duration::from_millis(250);
    }
    assert!(kills >= 3, "only {kills} kills landed");
    ok(silver(&t, &["s"]));
    ok(silver(&t, &["clean"]));

    let silver_of = |table| {
        rows(
            &t,
            Layer::Silver,
            table,
            &format!("SELECT {SILVER_COLUMNS} FROM t ORDER BY id"),
        )
    };
    let killed = silver_of("s");
    assert_eq!(killed.len(), 2000);
    assert_same_rows(
        &killed,
        &silver_of("clean"),
        "silver after kills vs a clean run",
    );

    let quarantine_of = |table| {
        rows(
            &t,
            Layer::Quarantine,
            table,
            &format!("SELECT {QUARANTINE_COLUMNS} FROM t ORDER BY _partition, _offset"),
        )
    };
    let clean_quarantine = quarantine_of("clean");
    assert!(!clean_quarantine.is_empty());
    assert_same_rows(
        &quarantine_of("s"),
        &clean_quarantine,
        "quarantine after kills vs a clean run",
    );
}

/// Equal row lists, or a failure showing the counts and the first differences (not all rows).
fn assert_same_rows(got: &[Vec<Option<String>>], want: &[Vec<Option<String>>], what: &str) {
    if got == want {
        return;
    }
    let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(3).collect();
    let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(3).collect();
    panic!(
        "{what}: {} rows vs {}; missing e.g. {missing:?}; unexpected e.g. {extra:?} \
         (equal multisets with different counts mean duplicates)",
        got.len(),
        want.len()
    );
}

/// `on_existing_key = "keep"`: generated order events with 5 % re-sent, run in units of 700
/// bronze rows so a re-sent event often arrives in a later unit than its first copy. Silver
/// holds each event once, as first sent, only ever appending; the duplicates are counted.
/// The expectation comes from the generator's own file of the same seed.
#[test]
fn keep_lands_each_event_once_and_silver_only_appends() {
    // Bronze commits every 700 records: silver's units are whole bronze commits.
    let Some(t) = TestPipeline::new("flush_rows = 700") else {
        return;
    };
    t.append(&format!(
        "[silver.orders]\nsource = \"{}\"\nkey = [\"event_id\"]\non_existing_key = \"keep\"\n\
         batch_rows = 700\n[silver.orders.schema]\nevent_id = \"string\"\nevent_type = \"string\"\n\
         event_time = \"timestamp\"\npayload = \"string\"\nchecksum = \"string\"\n",
        t.table
    ));
    let args = [
        "orders",
        "--count",
        "6000",
        "--seed",
        "21",
        "--duplicate-fraction",
        "0.05",
    ];
    ok(run(t.lakectl().arg("generate").args(args).args([
        "--topic",
        &t.topic,
        "--partitions",
        "1",
    ])));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.ndjson");
    ok(run(lakectl()
        .arg("generate")
        .args(args)
        .arg("--out")
        .arg(&file)));
    let mut first: std::collections::BTreeMap<String, String> = Default::default();
    let mut resent = 0;
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["event_id"].as_str().unwrap().to_string();
        match first.entry(id) {
            std::collections::btree_map::Entry::Occupied(_) => resent += 1,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(v["checksum"].as_str().unwrap().to_string());
            }
        }
    }
    assert!(resent > 200, "{resent} re-sent events");

    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    let out = ok(silver(&t, &[]));
    let got: std::collections::BTreeMap<String, String> = rows(
        &t,
        Layer::Silver,
        "orders",
        "SELECT event_id, checksum FROM t",
    )
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
    .collect();
    assert_eq!(
        count(&t, Layer::Silver, "orders"),
        first.len(),
        "one row per event"
    );
    assert!(got == first, "silver holds each event as first sent");

    // Every re-sent copy was counted: within a unit by the dedupe, across units as existing.
    let dropped: Vec<u64> = rows(
        &t,
        Layer::System,
        "quality",
        "SELECT rule, sum(rows_failed) FROM t WHERE job = 'silver:orders' \
         AND rule IN ('dedupe_key', 'existing_key') GROUP BY rule ORDER BY rule",
    )
    .iter()
    .map(|r| r[1].as_deref().unwrap().parse::<u64>().unwrap())
    .collect();
    assert!(
        dropped.len() == 2 && dropped[1] > 0,
        "no copy arrived in a later unit: {dropped:?}"
    );
    let dropped: u64 = dropped.iter().sum();
    assert_eq!(dropped, resent as u64, "{}", out.stdout);
    // The score: every first copy passed, every re-sent one failed the duplicate checks.
    let score = rows(
        &t,
        Layer::System,
        "quality",
        "SELECT sum(rows_checked), sum(rows_passed) FROM t WHERE job = 'silver:orders' \
         AND rule = 'all_checks'",
    );
    assert_eq!(
        score[0],
        [Some("6000".to_string()), Some(first.len().to_string())],
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("existing_key"), "{}", out.stdout);
    let units = scalar(
        &t,
        Layer::System,
        "quality",
        "SELECT count(DISTINCT first_version) FROM t",
    );
    assert!(units.parse::<u32>().unwrap() > 3, "{units} units");

    // Append-only: no commit of silver removed a file.
    let silver_table = block_on(t.lake().load_table(Layer::Silver, "orders"))
        .unwrap()
        .unwrap();
    let history: Vec<_> = block_on(async {
        use futures::TryStreamExt;
        silver_table.history(None).try_collect::<Vec<_>>().await
    })
    .unwrap();
    for commit in &history {
        let op = commit.operation.as_deref().unwrap_or_default();
        assert!(
            op == "WRITE" || op == "CREATE TABLE",
            "silver commit {op}: {commit:?}"
        );
    }
}

/// `partition_by` on silver and gold: Delta partitions another engine (Python's `deltalake`)
/// sees and prunes on. Events over ~10 hours of event time; the rows of one hour come from
/// that hour's files alone and equal the generator's events of that hour.
#[test]
fn partition_by_writes_partitions_another_engine_prunes_on() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    t.append(&format!(
        "[silver.activity]\nsource = \"{}\"\nkey = [\"event_id\"]\non_existing_key = \"keep\"\n\
         sql = \"SELECT event_id, page, event_time, CAST(event_time AS DATE) AS event_date, \
         CAST(date_part('hour', event_time) AS INT) AS event_hour FROM source\"\n\
         partition_by = [\"event_date\", \"event_hour\"]\n\
         [silver.activity.schema]\nevent_id = \"string\"\npage = \"string\"\nevent_time = \"timestamp\"\n\
         [gold.views_per_hour]\nsql = \"SELECT event_date, event_hour, count(*) AS views \
         FROM silver.activity GROUP BY event_date, event_hour\"\npartition_by = [\"event_date\"]\n",
        t.table
    ));
    // Two slots of visits: 3,000 events take about 10 hours of event time.
    let args = [
        "user-activity",
        "--count",
        "3000",
        "--seed",
        "4",
        "--event-rate",
        "0.05",
    ];
    ok(run(t.lakectl().arg("generate").args(args).args([
        "--topic",
        &t.topic,
        "--partitions",
        "1",
    ])));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    ok(run(lakectl()
        .arg("generate")
        .args(args)
        .arg("--out")
        .arg(&file)));
    let hour_3 = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"event_time\":\"2026-01-01T03:"))
        .count();
    assert!(hour_3 > 0);
    for args in [
        &["run", "bronze", "--once"][..],
        &["run", "silver"],
        &["run", "gold"],
    ] {
        ok(run(t.lakectl().args(args)));
    }

    let script = r#"
silver = deltalake.DeltaTable(sys.argv[1] + "silver/activity", storage_options=opts)
hour = [("event_hour", "=", "3")]
gold = deltalake.DeltaTable(sys.argv[1] + "gold/views_per_hour", storage_options=opts)
print(json.dumps({
    "silver_partitions": silver.metadata().partition_columns,
    "files": len(silver.file_uris()),
    "hour_files": [u.split("/silver/activity/")[1] for u in silver.file_uris(partition_filters=hour)],
    "hour_rows": silver.to_pyarrow_table(partitions=hour).num_rows,
    "gold_partitions": gold.metadata().partition_columns,
    "gold_views": sum(gold.to_pyarrow_table()["views"].to_pylist()),
}))
"#;
    let Some(stdout) = python_delta(script, &[&t.lake_uri]) else {
        return;
    };
    let seen: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        seen["silver_partitions"],
        serde_json::json!(["event_date", "event_hour"])
    );
    assert_eq!(seen["gold_partitions"], serde_json::json!(["event_date"]));
    assert_pruned(&seen, "event_date=2026-01-01/event_hour=3/");
    assert_eq!(seen["hour_rows"], hour_3, "{seen}");
    assert_eq!(seen["gold_views"], 3000, "{seen}");
}

/// Orders: an event's `checksum` must be the SHA-256 of its `payload` (a `sql` expectation),
/// each event lands once (`keep` by event id). Quarantine holds exactly the corrupted records
/// the truth file lists, each under the rule that catches its corruption; silver holds
/// exactly the clean events; the quality score is their share.
#[test]
fn orders_with_bad_checksums_and_resent_events_end_up_as_the_truth_says() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    t.append(&format!(
        r#"[silver.orders]
source = "{}"
key = ["event_id"]
on_existing_key = "keep"
[silver.orders.schema]
event_id = "string"
event_type = "string"
event_time = "timestamp"
payload = "string"
checksum = "string"
[[silver.orders.expect]]
name = "checksum_matches"
rule = "sql"
predicate = "checksum = encode(sha256(payload), 'hex')"
action = "quarantine"
[[silver.orders.expect]]
rule = "not_null"
column = "event_time"
action = "quarantine"
"#,
        t.table
    ));
    let dir = tempfile::tempdir().unwrap();
    let truth_path = dir.path().join("truth.ndjson");
    let n = 5000;
    ok(run(t
        .lakectl()
        .args([
            "generate",
            "orders",
            "--count",
            &n.to_string(),
            "--seed",
            "8",
        ])
        .args(["--corrupt-fraction", "0.06", "--duplicate-fraction", "0.03"])
        .args(["--topic", &t.topic, "--partitions", "1", "--truth"])
        .arg(&truth_path)));
    let truth: Vec<serde_json::Value> = std::fs::read_to_string(&truth_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rule_of = |corruption: &str| match corruption {
        "bad_checksum" => "checksum_matches",
        "missing_field" => "not_null(event_time)",
        "wrong_type" => "parse",
        other => panic!("orders has no corruption {other}"),
    };
    // With one partition a record's offset is its position in the stream.
    let want: Vec<(String, String)> = truth
        .iter()
        .filter(|t| t["defect"] == "corrupt")
        .map(|t| {
            (
                t["seq"].to_string(),
                rule_of(t["corruption"].as_str().unwrap()).to_string(),
            )
        })
        .collect();
    let duplicates = truth.iter().filter(|t| t["defect"] == "duplicate").count();
    assert!(want.len() > 200 && duplicates > 100);

    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    let out = ok(silver(&t, &[]));
    let got: Vec<(String, String)> = rows(
        &t,
        Layer::Quarantine,
        "orders",
        "SELECT CAST(_offset AS VARCHAR) AS seq, rule FROM t ORDER BY _offset",
    )
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
    .collect();
    assert_eq!(got, want, "quarantine holds exactly the corrupted records");
    let clean = n - want.len() - duplicates;
    assert_eq!(count(&t, Layer::Silver, "orders"), clean, "{}", out.stdout);
    let bad_in_silver = scalar(
        &t,
        Layer::Silver,
        "orders",
        "SELECT count(*) FROM t WHERE checksum <> encode(sha256(payload), 'hex') OR event_time IS NULL",
    );
    assert_eq!(bad_in_silver, "0");
    let share = clean as f64 * 100.0 / n as f64;
    assert!(
        out.stdout.contains(&format!("quality score: {share:.1} %")),
        "{share:.1}: {}",
        out.stdout
    );
}

/// Silver learns which keys it holds and which values a `unique` expectation collides with by
/// reading only the files that may hold them (`lakehouse_core::lookup`): across several units'
/// files and the file OPTIMIZE wrote, every held key and value is still found.
#[test]
fn existing_keys_and_unique_values_are_found_in_every_file_even_after_optimize() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    t.append(&format!(
        r#"
[silver.u]
source = "{}"
key = ["id"]

[silver.u.schema]
id = "int"
email = "string"

[[silver.u.expect]]
rule = "unique"
column = "email"
action = "quarantine"
"#,
        t.table
    ));
    t.create_topic(1);
    let round = |records: &[(i64, String)]| {
        let values: Vec<String> = records
            .iter()
            .map(|(id, email)| format!(r#"{{"id":{id},"email":"{email}"}}"#))
            .collect();
        let raw: Vec<RawRecord<'_>> = values.iter().map(|v| (None, Some(v.as_bytes()))).collect();
        t.produce_raw(&raw);
        ok(run(t.lakectl().args(["run", "bronze", "--once"])));
        ok(silver(&t, &[]));
    };
    // Three units, one file each; the first two are then compacted into one.
    round(&(1..=300).map(|i| (i, format!("e{i}"))).collect::<Vec<_>>());
    round(
        &(301..=400)
            .map(|i| (i, format!("e{i}")))
            .collect::<Vec<_>>(),
    );
    ok(run(t.lakectl().args(["optimize", "silver.u"])));
    round(
        &(401..=500)
            .map(|i| (i, format!("e{i}")))
            .collect::<Vec<_>>(),
    );
    // The last unit: offsets 500.. in this order.
    let last: Vec<(i64, String)> = vec![
        (5, "e5".into()),       // its own key, same value: replaces it, passes
        (1000, "e150".into()),  // e150 is id 150's (compacted file): quarantined
        (1001, "e450".into()),  // e450 is id 450's (the newest file): quarantined
        (1002, "fresh".into()), // new key, new value
        (250, "x250".into()),   // a held key with a new value: replaces it
        (1003, "e250".into()),  // e250 leaves with id 250's new value: passes
    ];
    round(&last);

    // The truth, by the definitions: ids 1..=500 with e<id>, then the last unit applied.
    let mut want: Vec<(i64, String)> = (1..=500).map(|i| (i, format!("e{i}"))).collect();
    want[249].1 = "x250".into();
    want.extend([(1002, "fresh".to_string()), (1003, "e250".to_string())]);
    let got: Vec<(i64, String)> = rows(
        &t,
        Layer::Silver,
        "u",
        "SELECT id, email FROM t ORDER BY id",
    )
    .into_iter()
    .map(|r| {
        (
            r[0].as_deref().unwrap().parse().unwrap(),
            r[1].clone().unwrap(),
        )
    })
    .collect();
    assert_eq!(got, want);
    let quarantined = rows(
        &t,
        Layer::Quarantine,
        "u",
        "SELECT _offset, rule FROM t ORDER BY _offset",
    );
    let quarantined: Vec<(String, String)> = quarantined
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    assert_eq!(
        quarantined,
        vec![
            ("501".to_string(), "unique(email)".to_string()),
            ("502".to_string(), "unique(email)".to_string())
        ]
    );
}

#[test]
fn batch_bytes_bounds_a_unit_whatever_its_row_count() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    // One byte a unit: every unit takes just its first bronze commit.
    t.append(&format!(
        "[silver.w]\nsource = \"{}\"\nkey = [\"id\"]\nbatch_bytes = 1\n\n[silver.w.schema]\nid = \"int\"\n",
        t.table
    ));
    t.create_topic(1);
    for round in 0..3 {
        let values: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"id":{}}}"#, round * 100 + i))
            .collect();
        let raw: Vec<RawRecord<'_>> = values.iter().map(|v| (None, Some(v.as_bytes()))).collect();
        t.produce_raw(&raw);
        ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    }
    let out = ok(silver(&t, &[]));
    // Three bronze commits, three silver commits (versions 0, 1, 2), every row once.
    assert!(
        out.stdout.contains("300 bronze rows read, 300 rows merged")
            && out.stdout.contains("table version 2"),
        "{}",
        out.stdout
    );
    assert_eq!(count(&t, Layer::Silver, "w"), 300);
}
