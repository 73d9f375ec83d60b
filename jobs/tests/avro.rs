//! Avro topics through the schema registry: records written by Confluent's Python
//! serializer decode in silver to the same values its deserializer reads, field for field;
//! a later writer version's new optional field becomes a column; records the table's schema
//! cannot read, records without the framing and records with an unknown schema id go to
//! quarantine with the reason; a registry that does not answer stops silver with exit 69.

use crate::util::*;

fn avro_pipeline() -> Option<TestPipeline> {
    let t = TestPipeline::new("")?;
    t.append(&format!(
        "[silver.plays]\nsource = \"{}\"\nformat = \"avro\"\nkey = [\"event_id\"]\n\
         on_existing_key = \"keep\"\n",
        t.topic
    ));
    Some(t)
}

fn roundtrip(t: &TestPipeline, args: &[&str]) -> Option<serde_json::Value> {
    let script = repo_root().join("jobs/tests/oracle/avro_roundtrip.py");
    let registry = service_env("LAKECTL_SCHEMA_REGISTRY_URL").expect("the stack's registry");
    let brokers = t.brokers();
    let mut all: Vec<&std::ffi::OsStr> = vec![script.as_os_str(), args[0].as_ref()];
    all.extend([brokers.as_str(), registry.as_str(), t.topic.as_str()].map(std::ffi::OsStr::new));
    all.extend(args[1..].iter().map(std::ffi::OsStr::new));
    let out = run_python(&all)?;
    Some(if out.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&out).unwrap()
    })
}

#[test]
fn avro_records_decode_like_confluents_deserializer_and_bad_ones_are_quarantined() {
    let Some(t) = avro_pipeline() else {
        return;
    };
    t.create_topic(3);
    if roundtrip(&t, &["produce"]).is_none() {
        return;
    }
    // Not framed, and framed with a schema id nobody registered.
    let unknown_id = [0u8, 0x7f, 0xff, 0xff, 0xff, 0x02];
    t.produce_raw(&[
        (
            Some(b"x1".as_slice()),
            Some(b"{\"event_id\": \"json\"}".as_slice()),
        ),
        (Some(b"x2".as_slice()), Some(unknown_id.as_slice())),
    ]);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    let out = ok(run(t.lakectl().args(["run", "silver"])));

    let silver_uri = format!("{}silver/plays", t.lake_uri);
    let check = roundtrip(&t, &["check", &silver_uri]).unwrap();
    assert_eq!(check["read"]["v1"], 300, "{check}");
    assert_eq!(check["read"]["v2"], 200, "{check}");
    assert_eq!(check["read"]["other"], 5, "{check}");
    assert_eq!(check["expected_rows"], 500, "{check}");
    assert_eq!(check["mismatches"], serde_json::json!([]), "{check}");
    let columns = check["columns"].as_array().unwrap();
    assert!(
        columns.contains(&"coupon".into()),
        "v2's new field is a column: {check}"
    );

    let quarantined = table_rows(
        &t.lake(),
        Layer::Quarantine,
        "plays",
        "SELECT rule, error FROM t ORDER BY error",
    );
    let errors: Vec<&str> = quarantined
        .iter()
        .map(|r| r[1].as_deref().unwrap())
        .collect();
    assert!(quarantined.iter().all(|r| r[0].as_deref() == Some("parse")));
    assert_eq!(errors.len(), 7, "{errors:#?}\n{}", out.stdout);
    let count = |text: &str| errors.iter().filter(|e| e.contains(text)).count();
    assert_eq!(
        count("cannot be read as the table's schema"),
        5,
        "{errors:#?}"
    );
    assert_eq!(count("not Confluent-framed Avro"), 1, "{errors:#?}");
    assert_eq!(
        count("schema id 2147483647 is not in the schema registry"),
        1,
        "{errors:#?}"
    );
    assert_eq!(check["rows"], 500, "every readable record once: {check}");
}

#[test]
fn a_registry_that_does_not_answer_stops_silver_with_exit_69_naming_it() {
    let Some(t) = avro_pipeline() else {
        return;
    };
    t.create_topic(1);
    let framed = [0u8, 0, 0, 0, 1, 2];
    t.produce_raw(&[(Some(b"k".as_slice()), Some(framed.as_slice()))]);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = run(t
        .lakectl()
        .env("LAKECTL_SCHEMA_REGISTRY_URL", &closed)
        .env("LAKECTL_RUNNER_MAX_RETRIES", "1")
        .env("LAKECTL_RUNNER_INITIAL_BACKOFF_MS", "10")
        .args(["run", "silver"]));
    assert_eq!(out.code, 69, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("schema registry at {closed}")),
        "{}",
        out.stderr
    );
    assert!(
        table_rows(&t.lake(), Layer::Silver, "plays", "SELECT 1 FROM t").is_empty(),
        "nothing written"
    );
}
