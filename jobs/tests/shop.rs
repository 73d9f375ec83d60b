//! The shipped e-commerce and orders pipelines against the generator's ground truth: what
//! silver keeps and quarantines, the quality score, and gold against an independent
//! computation (`tests/oracle/shop.py` over the generated NDJSON).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::util::*;

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
    assert_ecommerce_matches_the_truth(&t);
    assert_every_table_reads_alike(&t);
}

/// The e-commerce pipeline `t` from generate to gold, checked as above (also run with its SQL
/// on a Ballista cluster).
pub(crate) fn assert_ecommerce_matches_the_truth(t: &TestPipeline) {
    let n = 10_000u64;
    let stream = generate_stream(t, n);
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
    let user_id = |e: &Value| e["user_id"].as_str().unwrap().to_string();
    stream.assert_quarantine_matches_truth(t, "ecommerce", rule_of, user_id);
    assert!(
        out.stdout
            .contains("quality score: 95.0 % of records passed every check"),
        "{}",
        out.stdout
    );

    ok(run(t.lakectl().args(["run", "gold"])));
    let Some(oracle) = stream.oracle("shop.py", &["ecommerce"], &[]) else {
        return;
    };
    assert_eq!(oracle["clean"], n - 500);
    let revenue = json_rows(
        t,
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
        t,
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
    let stream = generate_stream(&t, n);
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
    let quarantined: BTreeSet<u64> = quarantine_rules(&t, "orders")
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
    let Some(oracle) = stream.oracle("shop.py", &["orders"], &[]) else {
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
    // The table Polars refused (a `UInt64` from `json_length` in a `long` column) among them.
    assert_every_table_reads_alike(&t);
}
