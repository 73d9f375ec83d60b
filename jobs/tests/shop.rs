//! The shipped e-commerce and orders pipelines against the generator's ground truth: what
//! silver keeps and quarantines, the quality score, and gold against an independent
//! computation (`tests/oracle/shop.py` over the generated NDJSON).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::util::*;

const PARTITIONS: i32 = 3;

/// A stream sent to the test's topic and written to a file, with its truth file.
struct Stream {
    dir: tempfile::TempDir,
    events: Vec<Value>,
    truth: Vec<Value>,
}

impl Stream {
    fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.path().join(file)
    }

    fn seqs(&self, defect: &str) -> BTreeSet<u64> {
        (self.truth.iter())
            .filter(|t| t["defect"] == defect)
            .map(|t| t["seq"].as_u64().unwrap())
            .collect()
    }

    /// Where each record landed: (partition, offset) → its seq, from the partition of its
    /// key (the truth's for defects, `key_of` the record's for the rest).
    fn by_position(&self, key_of: impl Fn(&Value) -> String) -> HashMap<(i32, i64), u64> {
        let keys: HashMap<u64, String> = (self.truth.iter())
            .map(|t| {
                (
                    t["seq"].as_u64().unwrap(),
                    t["key"].as_str().unwrap().into(),
                )
            })
            .collect();
        let mut next = [0i64; PARTITIONS as usize];
        let mut out = HashMap::new();
        for (seq, event) in self.events.iter().enumerate() {
            let key = keys
                .get(&(seq as u64))
                .cloned()
                .unwrap_or_else(|| key_of(event));
            let p = lakehouse_core::kafka::key_partition(key.as_bytes(), PARTITIONS);
            out.insert((p, next[p as usize]), seq as u64);
            next[p as usize] += 1;
        }
        out
    }

    /// What the oracle computes from the file and the truth.
    fn oracle(&self, kind: &str) -> Option<Value> {
        let script = repo_root().join("jobs/tests/oracle/shop.py");
        let (events, truth) = (self.path("events.ndjson"), self.path("truth.ndjson"));
        let out = run_python(&[
            script.as_os_str(),
            kind.as_ref(),
            events.as_os_str(),
            truth.as_os_str(),
        ])?;
        Some(serde_json::from_slice(&out).unwrap())
    }
}

/// The pipeline's `[generate]` stream, `count` records of it, to the topic and to a file.
fn generate(t: &TestPipeline, count: u64) -> Stream {
    let dir = tempfile::tempdir().unwrap();
    let (events, truth) = (
        dir.path().join("events.ndjson"),
        dir.path().join("truth.ndjson"),
    );
    let n = count.to_string();
    ok(run(t
        .lakectl()
        .args(["generate", "--count", &n, "--topic", &t.topic, "--truth"])
        .arg(&truth)));
    ok(run(t
        .lakectl()
        .args(["generate", "--count", &n, "--out"])
        .arg(&events)));
    let lines = |path: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    Stream {
        events: lines(&events),
        truth: lines(&truth),
        dir,
    }
}

fn quarantine(t: &TestPipeline, table: &str) -> Vec<((i32, i64), String)> {
    table_rows(
        &t.lake(),
        Layer::Quarantine,
        table,
        "SELECT _partition, _offset, rule FROM t ORDER BY 1, 2",
    )
    .into_iter()
    .map(|r| {
        let n = |i: usize| r[i].as_deref().unwrap().parse::<i64>().unwrap();
        ((n(0) as i32, n(1)), r[2].clone().unwrap())
    })
    .collect()
}

fn json_rows(t: &TestPipeline, layer: Layer, table: &str, sql: &str) -> Vec<Value> {
    table_rows(&t.lake(), layer, table, sql)
        .into_iter()
        .map(|row| {
            Value::Array(
                row.into_iter()
                    .map(|v| match v {
                        None => Value::Null,
                        Some(v) => v.parse::<i64>().map_or(Value::String(v), Value::from),
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Seven checks over 10,000 events with 3 % corrupt and 2 % re-sent: silver holds exactly the
/// clean events once, quarantine exactly the corrupted ones under the rule that catches each,
/// the score is the clean share, and the hourly gold tables equal an independent computation
/// and are stored in year/month/day/hour folders another engine prunes on.
#[test]
fn ecommerce_checks_score_and_hourly_gold_match_the_truth() {
    let Some(t) = TestPipeline::shipped("ecommerce", "shop", &[]) else {
        return;
    };
    let n = 10_000u64;
    let stream = generate(&t, n);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    let out = ok(run(t.lakectl().args(["run", "silver"])));

    let (corrupt, duplicates) = (stream.seqs("corrupt"), stream.seqs("duplicate"));
    assert_eq!(corrupt.len(), 300);
    assert_eq!(duplicates.len(), 200);
    let clean: BTreeSet<String> = (0..n)
        .filter(|s| !corrupt.contains(s) && !duplicates.contains(s))
        .map(|s| {
            stream.events[s as usize]["event_id"]
                .as_str()
                .unwrap()
                .into()
        })
        .collect();
    let silver: BTreeSet<String> = table_rows(
        &t.lake(),
        Layer::Silver,
        "ecommerce",
        "SELECT event_id FROM t",
    )
    .into_iter()
    .map(|r| r[0].clone().unwrap())
    .collect();
    assert_eq!(silver.len() as u64, n - 500, "one row per clean event");
    assert_eq!(silver, clean);

    let rule_of = |corruption: &str| match corruption {
        "missing_field" => "not_null(product_id)",
        "wrong_type" => "parse",
        "negative_price" => "range(price)",
        "bad_quantity" => "range(quantity)",
        "bad_time" => "event_time_plausible",
        "unknown_event_type" => "accepted_values(event_type)",
        other => panic!("ecommerce has no corruption {other}"),
    };
    let want: BTreeMap<u64, String> = (stream.truth.iter())
        .filter(|t| t["defect"] == "corrupt")
        .map(|t| {
            let rule = rule_of(t["corruption"].as_str().unwrap());
            (t["seq"].as_u64().unwrap(), rule.to_string())
        })
        .collect();
    let at = stream.by_position(|e| e["user_id"].as_str().unwrap().into());
    let got: BTreeMap<u64, String> = quarantine(&t, "ecommerce")
        .into_iter()
        .map(|(position, rule)| (at[&position], rule))
        .collect();
    assert_eq!(
        got, want,
        "quarantine holds each corrupted record under its rule"
    );
    assert!(
        out.stdout
            .contains("quality score: 95.0 % of records passed every check"),
        "{}",
        out.stdout
    );

    ok(run(t.lakectl().args(["run", "gold"])));
    let Some(oracle) = stream.oracle("ecommerce") else {
        return;
    };
    assert_eq!(oracle["clean"], n - 500);
    let revenue = json_rows(
        &t,
        Layer::Gold,
        "revenue_hourly",
        "SELECT year, month, day, hour, product_id, CAST(revenue AS VARCHAR) FROM t ORDER BY 1, 2, 3, 4, 5",
    );
    assert_eq!(Value::Array(revenue), oracle["revenue_hourly"]);
    let total = table_rows(
        &t.lake(),
        Layer::Gold,
        "revenue_hourly",
        "SELECT CAST(sum(revenue) AS VARCHAR) FROM t",
    );
    assert_eq!(total[0][0].as_deref(), oracle["revenue_total"].as_str());
    let events = json_rows(
        &t,
        Layer::Gold,
        "events_hourly",
        "SELECT year, month, day, hour, event_type, device, events FROM t ORDER BY 1, 2, 3, 4, 5, 6",
    );
    assert_eq!(Value::Array(events), oracle["events_hourly"]);

    // Another engine reads one hour's folder alone.
    let script = r#"
gold = deltalake.DeltaTable(sys.argv[1] + "gold/revenue_hourly", storage_options=opts)
hour = [("year", "=", "2026"), ("month", "=", "1"), ("day", "=", "1"), ("hour", "=", "3")]
print(json.dumps({
    "partitions": gold.metadata().partition_columns,
    "files": len(gold.file_uris()),
    "hour_files": [u.split("/gold/revenue_hourly/")[1] for u in gold.file_uris(partition_filters=hour)],
    "hour_revenue": str(sum(gold.to_pyarrow_table(partitions=hour)["revenue"].to_pylist())),
}))
"#;
    let Some(seen) = python_delta(script, &[&t.lake_uri]) else {
        return;
    };
    let seen: Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(
        seen["partitions"],
        serde_json::json!(["year", "month", "day", "hour"])
    );
    assert_pruned(&seen, "year=2026/month=1/day=1/hour=3/");
}

/// Orders: every bad checksum is in quarantine and nowhere else; each event lands once even
/// after the whole stream is sent again; a `kill -9` in the middle of silver changes nothing;
/// `order_status` equals an independent computation; silver is stored by ingest date.
#[test]
fn orders_checksums_replays_crashes_and_status_match_the_truth() {
    let Some(t) = TestPipeline::shipped("orders", "orders", &[]) else {
        return;
    };
    let n = 6_000u64;
    let stream = generate(&t, n);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    let crashed = run(t
        .lakectl()
        .args(["run", "silver"])
        .env("LAKECTL_CRASH_AT", "silver:after_quarantine"));
    assert_ne!(crashed.code, 0, "{}", crashed.stderr);
    ok(run(t.lakectl().args(["run", "silver"])));
    // The whole stream again, as a producer replaying it would.
    ok(run(t.lakectl().args([
        "generate",
        "--count",
        &n.to_string(),
        "--topic",
        &t.topic,
    ])));
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    ok(run(t.lakectl().args(["run", "silver"])));

    let ids = table_rows(&t.lake(), Layer::Silver, "orders", "SELECT event_id FROM t");
    let distinct: BTreeSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), distinct.len(), "an event id twice in silver");
    let (corrupt, duplicates) = (stream.seqs("corrupt"), stream.seqs("duplicate"));
    assert_eq!(
        ids.len() as u64,
        n - corrupt.len() as u64 - duplicates.len() as u64
    );

    let order_of = |e: &Value| -> String {
        let payload: Value = serde_json::from_str(e["payload"].as_str().unwrap()).unwrap();
        payload["order_id"].as_str().unwrap().into()
    };
    let at = stream.by_position(order_of);
    let bad_checksums: BTreeSet<u64> = (stream.truth.iter())
        .filter(|t| t["corruption"] == "bad_checksum")
        .map(|t| t["seq"].as_u64().unwrap())
        .collect();
    // Only the first pass's offsets: the replay's records are duplicates of them.
    let quarantined: BTreeSet<u64> = quarantine(&t, "orders")
        .into_iter()
        .filter(|(_, rule)| rule == "checksum_matches")
        .filter_map(|(position, _)| at.get(&position).copied())
        .collect();
    assert!(bad_checksums.len() > 30);
    assert_eq!(
        quarantined, bad_checksums,
        "each bad checksum is quarantined"
    );
    let bad_in_silver = table_rows(
        &t.lake(),
        Layer::Silver,
        "orders",
        "SELECT count(*) FROM t WHERE checksum <> encode(sha256(payload), 'hex')",
    );
    assert_eq!(bad_in_silver[0][0].as_deref(), Some("0"));

    ok(run(t.lakectl().args(["run", "gold"])));
    let Some(oracle) = stream.oracle("orders") else {
        return;
    };
    let micros = |c: &str| format!("CAST({c} AS BIGINT)");
    let status = json_rows(
        &t,
        Layer::Gold,
        "order_status",
        &format!(
            "SELECT order_id, status, {}, {}, {}, {}, {}, CAST(amount AS VARCHAR), events FROM t ORDER BY order_id",
            micros("created_at"),
            micros("paid_at"),
            micros("shipped_at"),
            micros("delivered_at"),
            micros("cancelled_at")
        ),
    );
    assert!(status.len() > 500, "{}", status.len());
    assert_eq!(Value::Array(status), oracle["order_status"]);

    let script = r#"
silver = deltalake.DeltaTable(sys.argv[1] + "silver/orders", storage_options=opts)
print(json.dumps({"partitions": silver.metadata().partition_columns,
                  "files": [u.split("/silver/orders/")[1] for u in silver.file_uris()]}))
"#;
    let Some(seen) = python_delta(script, &[&t.lake_uri]) else {
        return;
    };
    let seen: Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(seen["partitions"], serde_json::json!(["ingest_date"]));
    for f in seen["files"].as_array().unwrap() {
        assert!(
            f.as_str().unwrap().starts_with("ingest_date=2026-01-0"),
            "{seen}"
        );
    }
}
