//! Avro topics through the schema registry: records written by Confluent's Python
//! serializer decode in silver to the same values its deserializer reads, field for field;
//! a later writer version's new optional field becomes a column; records the table's schema
//! cannot read, records without the framing and records with an unknown schema id go to
//! quarantine with the reason; a registry that does not answer stops silver with exit 69.
//! And the stack's own registry, through Confluent's client, across a restart.

use std::process::Command;

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
    // Not framed, framed with a schema id nobody registered, and with one past the 31-bit
    // ids registries give (looked up, a registry that refused it failed the unit).
    let unknown_id = [0u8, 0x7f, 0xff, 0xff, 0xff, 0x02];
    let huge_id = [0u8, 0x80, 0, 0, 0x05, 0x02];
    t.produce_raw(&[
        (
            Some(b"x1".as_slice()),
            Some(b"{\"event_id\": \"json\"}".as_slice()),
        ),
        (Some(b"x2".as_slice()), Some(unknown_id.as_slice())),
        (Some(b"x3".as_slice()), Some(huge_id.as_slice())),
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
    assert_eq!(errors.len(), 8, "{errors:#?}\n{}", out.stdout);
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
    assert_eq!(
        count("schema id 2147483653 is past the 31-bit ids"),
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

/// The stack's registry (`scripts/schema_registry.py`) through Confluent's own client: it
/// serves a schema a Confluent registry wrote to its topic, registers a new one after it, and
/// after a restart (a new process reading the topic) serves both with the same ids; unknown
/// subjects and ids get Confluent's error codes.
#[test]
fn the_registry_keeps_schemas_in_its_topic_across_restarts() {
    if !services_up() {
        return;
    }
    let Some(python) = service_env("LAKECTL_REGISTRY_PYTHON") else {
        return;
    };
    let brokers = service_env("LAKECTL_KAFKA_BROKERS").unwrap();
    let topic = unique_name("schemas");
    create_topic(&brokers, &topic, 1);
    // A record in the layout Confluent Schema Registry and Karapace write.
    let key =
        br#"{"keytype":"SCHEMA","subject":"written-by-confluent-value","version":1,"magic":1}"#;
    let value = br#"{"subject":"written-by-confluent-value","version":1,"id":41,"schema":"\"string\"","deleted":false}"#;
    produce_raw(
        &brokers,
        &topic,
        &[(Some(key.as_slice()), Some(value.as_slice()))],
    );

    let client = |port: u16, body: &str| -> serde_json::Value {
        let script = format!(
            r#"
import json, sys
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
c = SchemaRegistryClient({{"url": "http://127.0.0.1:{port}"}})
def code(f):
    try:
        f()
    except SchemaRegistryError as e:
        return e.error_code
out = {{}}
{body}
print(json.dumps(out))
"#
        );
        serde_json::from_slice(&run_python_with(&python, &["-c".as_ref(), script.as_ref()]))
            .unwrap()
    };
    let record = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#;

    let first = Registry::start(&python, &brokers, &topic);
    let before = client(
        first.port,
        &format!(
            r#"out["confluent"] = c.get_schema(41).schema_str
out["registered"] = c.register_schema("mine-value", Schema('{record}', "AVRO"))
out["again"] = c.register_schema("mine-value", Schema('{record}', "AVRO"))
out["unknown_subject"] = code(lambda: c.get_latest_version("nobody-value"))
out["unknown_id"] = code(lambda: c.get_schema(999))"#
        ),
    );
    assert_eq!(before["confluent"], "\"string\"", "{before}");
    assert_eq!(
        before["registered"], 42,
        "ids continue after the topic's: {before}"
    );
    assert_eq!(
        before["again"], 42,
        "the same schema keeps its id: {before}"
    );
    assert_eq!(before["unknown_subject"], 40401, "{before}");
    assert_eq!(before["unknown_id"], 40403, "{before}");
    drop(first);

    let second = Registry::start(&python, &brokers, &topic);
    let after = client(
        second.port,
        r#"out["subjects"] = c.get_subjects()
out["mine"] = c.get_latest_version("mine-value").schema_id
out["schema"] = c.get_schema(42).schema_str
out["confluent"] = c.get_version("written-by-confluent-value", 1).schema_id"#,
    );
    assert_eq!(
        after["subjects"],
        serde_json::json!(["mine-value", "written-by-confluent-value"])
    );
    assert_eq!(after["mine"], 42, "{after}");
    assert_eq!(after["confluent"], 41, "{after}");
    let schema: serde_json::Value =
        serde_json::from_str(after["schema"].as_str().unwrap()).unwrap();
    assert_eq!(
        schema,
        serde_json::from_str::<serde_json::Value>(record).unwrap()
    );
}

/// A private `scripts/schema_registry.py` on its own topic, stopped when dropped.
struct Registry {
    child: std::process::Child,
    port: u16,
}

impl Registry {
    fn start(python: &str, brokers: &str, topic: &str) -> Registry {
        let port = free_port();
        let child = Command::new(python)
            .arg(repo_root().join("scripts/schema_registry.py"))
            .args(["--brokers", brokers, "--topic", topic, "--port"])
            .arg(port.to_string())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "registry did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Registry { child, port }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
