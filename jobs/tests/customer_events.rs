//! The shipped customer-events pipeline, nested records end to end: in Avro through the
//! schema registry (as shipped) and in JSON typed by a declared schema of struct and list
//! columns; silver field for field, the gold tables over struct fields and unnested lists,
//! and the jsonb copy in Postgres, all against an independent reading of the generated
//! NDJSON (`tests/oracle/customer_events.py`).

use std::process::Command;

use crate::util::*;

/// The same events typed from JSON: the struct and list columns the Avro schema gives.
const JSON_SCHEMA: &str = include_str!("../../pipelines/customer_events.json-schema.toml");

#[test]
fn avro_customer_events_match_the_generated_events_end_to_end() {
    let Some(t) = TestPipeline::shipped("customer_events", "streaming", &[]) else {
        return;
    };
    check_pipeline(&t, true);
    marts_agree_on_postgres_and_duckdb(&t);
    assert_every_table_reads_alike(&t);
}

#[test]
fn json_customer_events_become_struct_and_list_columns_end_to_end() {
    let Some(t) = TestPipeline::shipped(
        "customer_events",
        "streaming",
        &[
            ("format = \"avro\"   #", "format = \"json\"   #".into()),
            (
                "format = \"avro\"            # columns from the registry: the subject's latest version\n",
                format!("\n{JSON_SCHEMA}\n"),
            ),
        ],
    ) else {
        return;
    };
    check_pipeline(&t, false);
    assert_every_table_reads_alike(&t);
}

/// 4,000 nested events with 1 % broken and 1 % re-sent: silver holds each clean event once,
/// every nested field equal to what the generator wrote; the broken ones are in quarantine
/// under the rule that caught them; the gold tables over
/// struct fields and unnested lists equal the oracle's; Postgres holds nested columns as jsonb.
fn check_pipeline(t: &TestPipeline, avro: bool) {
    let n = 4_000u64;
    let stream = generate_stream(t, n);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    // Bronze keeps the records as sent: Confluent-framed Avro (magic byte 0) or JSON objects,
    // but for the wrong-typed ones, which go as JSON either way.
    let framed = bronze_rows(&t.lake(), "customer_events")
        .iter()
        .filter(|(_, _, v)| v.as_deref().unwrap().starts_with(&[0]))
        .count();
    assert_eq!(framed > 3_900, avro, "{framed} of {n} records framed");
    ok(run(t.lakectl().args(["run", "silver"])));
    ok(run(t.lakectl().args(["run", "gold"])));

    let rule_of = |corruption: &str| match corruption {
        "missing_field" => "not_null(user_id)",
        // JSON: a number where a timestamp goes; Avro: sent as JSON, unframed.
        "wrong_type" => "parse",
        other => panic!("customer-events has no corruption {other}"),
    };
    let user_id = |e: &serde_json::Value| e["user_id"].as_str().unwrap().to_string();
    let broken = stream.assert_quarantine_matches_truth(t, "customer_events", rule_of, user_id);
    assert_eq!(broken, 40);

    let Some(oracle) = stream.oracle("customer_events.py", &[], &[&t.lake_uri]) else {
        return;
    };
    let silver = &oracle["silver"];
    assert_eq!(silver["expected_rows"], n - 80, "{oracle}");
    assert_eq!(silver["rows"], silver["expected_rows"], "{silver}");
    assert_eq!(silver["distinct_ids"], silver["rows"], "{silver}");
    assert_eq!(silver["mismatches"], serde_json::json!([]), "{silver}");
    for table in ["plays_hourly", "searches_by_country", "top_recommended"] {
        let check = &oracle[table];
        assert!(check["rows"].as_u64().unwrap() > 5, "{table}: {check}");
        assert_eq!(check["actual_rows"], check["rows"], "{table}: {check}");
        assert_eq!(
            check["mismatches"],
            serde_json::json!([]),
            "{table}: {check}"
        );
    }

    ok(run(t.lakectl().args(["run", "load"])));
    let schema = &t.pg_target;
    let pg = pg_rows(&format!(
        "SELECT count(*)::text, sum(jsonb_array_length(recommendations))::text,
                (count(*) FILTER (WHERE content->>'genre' = 'drama'))::text,
                min(pg_typeof(device)::text)
         FROM {schema}.customer_events"
    ));
    let totals = &oracle["totals"];
    let number = |v: &serde_json::Value| Some(v.as_u64().unwrap().to_string());
    assert_eq!(pg[0][0], number(&totals["clean"]));
    assert_eq!(pg[0][1], number(&totals["recommendations"]));
    assert_eq!(pg[0][2], number(&totals["drama"]));
    assert_eq!(pg[0][3].as_deref(), Some("jsonb"));
    // One event's nested objects, exactly as generated.
    let first = stream
        .events
        .iter()
        .find(|e| {
            e["user_id"].is_string()
                && e["timestamp"].is_string()
                && e["content"].is_object()
                && e["recommendations"].as_array().unwrap().len() > 1
        })
        .unwrap();
    let row = pg_rows(&format!(
        "SELECT device::text, content::text, recommendations::text FROM {schema}.customer_events
         WHERE event_id = '{}'",
        first["event_id"].as_str().unwrap()
    ));
    for (i, field) in ["device", "content", "recommendations"].iter().enumerate() {
        let loaded: serde_json::Value =
            serde_json::from_str(row[0][i].as_deref().unwrap()).unwrap();
        assert_eq!(loaded, without_nulls(&first[field]), "{field}");
    }
}

/// `value` without object members that are null: Arrow's JSON writer leaves them out.
fn without_nulls(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(o) => o
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), without_nulls(v)))
            .collect(),
        serde_json::Value::Array(a) => a.iter().map(without_nulls).collect(),
        other => other.clone(),
    }
}

/// streaming_analytics built by dbt on the loaded Postgres table and on the lake's Delta table
/// through DuckDB: every test passes on both, and every mart has the same rows and sums.
fn marts_agree_on_postgres_and_duckdb(t: &TestPipeline) {
    let dir = tempfile::tempdir().unwrap();
    let duckdb = dir.path().join("streaming.duckdb");
    let dbt_schema = format!("dbt_{}", t.topic);
    for target in ["postgres", "duckdb"] {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/dbt.sh"))
            .args(["build", "--target", target, "--vars"])
            .arg(format!("{{events_schema: {}}}", t.pg_target))
            .env("DBT_PROJECT", "streaming_analytics")
            .env("DBT_SCHEMA", &dbt_schema)
            .env("DUCKDB_PATH", &duckdb)
            .env("LAKECTL_LAKE_URI", &t.lake_uri)
            .env("DATABASE_URL", service_env("DATABASE_URL").unwrap())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("ERROR=0") && stdout.contains("WARN=0"),
            "dbt build --target {target}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let python = Command::new("bash")
        .arg(repo_root().join("scripts/python-env.sh"))
        .arg("dbt")
        .output()
        .unwrap();
    let python = String::from_utf8(python.stdout).unwrap();
    let script = repo_root().join("jobs/tests/oracle/marts_agree.py");
    let url = service_env("DATABASE_URL").unwrap();
    let schema = format!("{dbt_schema}_marts");
    let out = run_python_with(
        python.trim(),
        &[
            script.as_os_str(),
            url.as_ref(),
            duckdb.as_os_str(),
            schema.as_ref(),
        ],
    );
    let marts: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for (mart, both) in marts.as_object().unwrap() {
        assert!(
            both["postgres"]["rows"].as_u64().unwrap() > 0,
            "{mart}: {both}"
        );
        assert_eq!(both["postgres"], both["duckdb"], "{mart}");
    }
}
