//! Apache Flink as a second oracle for the windows: the same stream, in the same arrival order
//! (one Kafka partition for lakectl, one file for Flink), with a watermark of one second under
//! rows up to 25 s out of order and 2 % forty minutes late (past the sessions' 30-minute gap)
//! — so most rows older than the watermark fall in windows still open. Every final window and session must equal Flink's,
//! and each window table's quarantine must hold exactly the rows Flink dropped from all of
//! their windows (`tests/oracle/flink_windows.py`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::util::*;

#[test]
fn windows_equal_flinks_and_the_quarantine_holds_what_flink_dropped() {
    let Some(flink) = service_env("LAKECTL_FLINK_PYTHON") else {
        return;
    };
    let Some(t) = TestPipeline::shipped(
        "user_activity",
        "activity",
        &[
            ("watermark = \"2m\"", "watermark = \"1s\"".into()),
            (", max_duration = \"4h\"", String::new()),
        ],
    ) else {
        return;
    };
    ok(run(t.lakectl().args([
        "generate",
        "user-activity",
        "--topic",
        &t.topic,
        "--partitions",
        "1",
        "--count",
        "10000",
        "--seed",
        "7",
        "--event-rate",
        "1",
        "--out-of-order",
        "25s",
        "--late-fraction",
        "0.02",
        "--late-by",
        "40m",
        "--duplicate-fraction",
        "0.01",
        "--corrupt-fraction",
        "0.01",
    ])));
    for args in [
        &["run", "bronze", "--once"][..],
        &["run", "silver"],
        &[
            "run",
            "window",
            "--once",
            "page_view_counts",
            "active_users",
            "user_sessions",
        ],
    ] {
        ok(run(t.lakectl().args(args)));
    }

    // Silver's rows in the order they arrived: what the windows read, Flink's input.
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let dump = r#"
silver = deltalake.DeltaTable(sys.argv[1] + "silver/user_activity", storage_options=opts)
rows = silver.to_pyarrow_table(columns=["_bronze_version", "_partition", "_offset", "event_id",
    "user_id", "event_type", "page", "event_time"]).to_pylist()
rows.sort(key=lambda r: (r["_bronze_version"], r["_partition"], r["_offset"]))
assert {r["_partition"] for r in rows} == {0}
with open(sys.argv[2], "w") as f:
    for r in rows:
        t = r["event_time"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        f.write(json.dumps({"_offset": r["_offset"], "event_id": r["event_id"], "user_id": r["user_id"],
                            "event_type": r["event_type"], "page": r["page"], "event_time": t}) + "\n")
print(json.dumps({"rows": len(rows),
                  "max": max(int(r["event_time"].timestamp() * 1e6) for r in rows)}))
"#;
    let Some(dumped) = python_delta(dump, &[&t.lake_uri, events.to_str().unwrap()]) else {
        return;
    };
    let dumped: Value = serde_json::from_str(&dumped).unwrap();
    // One partition: the watermark windows are final by is the largest event time less 1 s.
    let watermark = dumped["max"].as_i64().unwrap() - 1_000_000;
    let out = dir.path().join("flink.json");
    let script = repo_root().join("jobs/tests/oracle/flink_windows.py");
    run_python_with(
        &flink,
        &[
            script.as_os_str(),
            events.as_os_str(),
            "1".as_ref(),
            out.as_os_str(),
        ],
    );
    let flink: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let by_id: BTreeMap<String, Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["event_id"].as_str().unwrap().to_string(), v)
        })
        .collect();

    // The window quarantine keeps the columns a window reads: rows are named by offset.
    let id_at: BTreeMap<i64, String> = (by_id.iter())
        .map(|(id, v)| (v["_offset"].as_i64().unwrap(), id.clone()))
        .collect();

    let bounds = "CAST(window_start AS BIGINT), CAST(window_end AS BIGINT)";
    for (table, sql, flink_columns) in [
        (
            "page_view_counts",
            format!("SELECT {bounds}, page, page_views FROM t"),
            4,
        ),
        (
            "active_users",
            format!("SELECT {bounds}, active_users, events FROM t"),
            4,
        ),
        (
            "user_sessions",
            format!("SELECT user_id, {bounds}, events FROM t"),
            4,
        ),
    ] {
        let end_at = if table == "user_sessions" { 2 } else { 1 };
        let rows = flink[table].as_array().unwrap();
        // Flink fires every window at the end of its input: the final ones are compared.
        let theirs: BTreeSet<String> = rows
            .iter()
            .filter(|r| r[end_at].as_i64().unwrap() <= watermark)
            .map(|r| Value::Array(r.as_array().unwrap()[..flink_columns].to_vec()).to_string())
            .collect();
        let ours: BTreeSet<String> = table_rows(&t.lake(), Layer::Window, table, &sql)
            .into_iter()
            .map(|r| {
                let v: Vec<Value> = r
                    .into_iter()
                    .map(|c| {
                        let c = c.unwrap();
                        c.parse::<i64>().map_or(Value::String(c), Value::from)
                    })
                    .collect();
                v
            })
            .filter(|r| r[end_at].as_i64().unwrap() <= watermark)
            .map(|r| Value::Array(r).to_string())
            .collect();
        assert!(theirs.len() > 20, "{table}: {} final windows", theirs.len());
        let only_ours: Vec<_> = ours.difference(&theirs).take(3).collect();
        let only_theirs: Vec<_> = theirs.difference(&ours).take(3).collect();
        assert!(
            ours == theirs,
            "{table}: {} windows, Flink {}; only lakectl's {only_ours:?}, only Flink's {only_theirs:?}",
            ours.len(),
            theirs.len()
        );

        // Dropped by Flink from all their windows: the rows no window counted.
        let counted: BTreeSet<&str> = rows
            .iter()
            .flat_map(|r| {
                r[4].as_array()
                    .unwrap()
                    .iter()
                    .map(|id| id.as_str().unwrap())
            })
            .collect();
        let dropped: BTreeSet<&str> = by_id
            .iter()
            .filter(|(_, e)| table != "page_view_counts" || e["event_type"] == "page_view")
            .map(|(id, _)| id.as_str())
            .filter(|id| !counted.contains(id))
            .collect();
        let quarantined: BTreeSet<String> = table_rows(
            &t.lake(),
            Layer::Quarantine,
            table,
            "SELECT _offset FROM t WHERE rule = 'late'",
        )
        .into_iter()
        .map(|r| id_at[&r[0].as_deref().unwrap().parse::<i64>().unwrap()].clone())
        .collect();
        let quarantined: BTreeSet<&str> = quarantined.iter().map(String::as_str).collect();
        assert!(!dropped.is_empty(), "{table}: Flink dropped nothing");
        assert_eq!(
            quarantined, dropped,
            "{table}: lakectl's late rows are the rows Flink dropped from every window"
        );
    }
}
