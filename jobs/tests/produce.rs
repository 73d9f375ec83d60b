//! `lakectl produce` against the real broker: fidelity, bad rows, keys, failures.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use serde_json::Value;

use crate::util::*;

fn produce(t: &TestPipeline, args: &[&str]) -> Run {
    run(t
        .lakectl()
        .arg("produce")
        .arg("--topic")
        .arg(&t.topic)
        .args(args))
}

fn header<'a>(r: &'a Record, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
}

#[test]
fn books_csv_arrives_field_for_field() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    let csv_path = repo_root().join("data/best-selling-books.csv");
    let out = produce(&t, &["--file", csv_path.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("sent 174, delivered 174, failed 0"),
        "{}",
        out.stdout
    );

    // The expectation comes from an independent reading of the file with the csv crate.
    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    let headers: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    assert_eq!(
        headers[0], "Book",
        "the BOM is not part of the first header"
    );
    // This file has one record per line, so data row i is on line i + 2.
    let rows: Vec<(u64, csv::StringRecord)> = reader
        .records()
        .map(|r| r.unwrap())
        .enumerate()
        .map(|(i, r)| (i as u64 + 2, r))
        .collect();
    assert_eq!(rows.len(), 174);

    let records = t.read_topic();
    assert_eq!(records.len(), 174);
    let by_line: HashMap<u64, Value> = records
        .iter()
        .map(|r| {
            assert_eq!(header(r, "source_file"), Some("best-selling-books.csv"));
            let line = header(r, "source_line").unwrap().parse().unwrap();
            (
                line,
                serde_json::from_slice(r.value.as_ref().unwrap()).unwrap(),
            )
        })
        .collect();
    assert_eq!(by_line.len(), 174, "one record per line");

    for (line, row) in &rows {
        let json = by_line[line].as_object().unwrap();
        assert_eq!(
            json.keys().collect::<Vec<_>>(),
            headers.iter().collect::<Vec<_>>(),
            "header order, line {line}"
        );
        for (name, cell) in headers.iter().zip(row.iter()) {
            match &json[name] {
                Value::Null => assert_eq!(cell, "", "line {line} {name}"),
                Value::String(s) => assert_eq!(s, cell, "line {line} {name}"),
                Value::Number(n) => {
                    assert_eq!(n.as_f64(), cell.parse::<f64>().ok(), "line {line} {name}")
                }
                other => panic!("line {line} {name}: unexpected {other}"),
            }
        }
    }
    let values: Vec<&Value> = by_line.values().collect();
    let count = |f: &dyn Fn(&Value) -> bool| values.iter().filter(|v| f(v)).count();
    assert_eq!(
        count(&|v| v["Genre"].is_null()),
        56,
        "empty genres are null"
    );
    assert_eq!(
        count(&|v| v["Book"].as_str().is_some_and(|b| b.ends_with(' '))),
        3,
        "trailing spaces kept"
    );
    assert!(
        count(&|v| v["Book"].as_str().is_some_and(|b| b.contains(','))) > 0,
        "quoted commas kept"
    );
    assert!(
        count(&|v| v["Book"].as_str().is_some_and(|b| !b.is_ascii())) > 0,
        "non-ASCII titles kept"
    );
    assert!(values
        .iter()
        .any(|v| v["Author(s)"] == "Antoine de Saint-Exupéry"));
    assert!(
        count(&|v| v["First published"].is_number()) > 150,
        "years are numbers"
    );
}

fn write_csv(dir: &tempfile::TempDir, bytes: &[u8]) -> String {
    let path = dir.path().join("in.csv");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    path.to_str().unwrap().to_string()
}

/// Lines 2, 4 and 6 are good; line 3 has too many fields, line 5 is not UTF-8.
const BAD_CSV: &[u8] = b"id,name\r\n1,a\r\n2,b,extra\r\n3,c\r\n4,\xff\xfe\r\n5,e\r\n";

#[test]
fn a_bad_row_stops_the_run_by_default() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = produce(&t, &["--file", &write_csv(&dir, BAD_CSV)]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("line 3") && out.stderr.contains("expected 2 fields, found 3"),
        "{}",
        out.stderr
    );
    let ids: Vec<String> = t
        .read_topic()
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![r#"{"id":1,"name":"a"}"#],
        "nothing past the bad row is sent"
    );
}

#[test]
fn bad_rows_are_counted_and_reported_when_skipped() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = produce(
        &t,
        &["--file", &write_csv(&dir, BAD_CSV), "--on-bad-row", "skip"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("sent 3, delivered 3, failed 0, bad rows skipped 2"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("line 3: expected 2 fields, found 3"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("line 5: field 2 is not valid UTF-8"),
        "{}",
        out.stdout
    );
    let mut lines: Vec<&str> = Vec::new();
    let records = t.read_topic();
    for r in &records {
        lines.push(header(r, "source_line").unwrap());
    }
    lines.sort();
    assert_eq!(lines, vec!["2", "4", "6"]);
}

#[test]
fn same_key_same_partition_and_loops_keep_keys_unique() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    t.create_topic(4);
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("user,n\n");
    for i in 0..200 {
        csv.push_str(&format!("u{},{i}\n", i % 20));
    }
    let out = produce(
        &t,
        &[
            "--file",
            &write_csv(&dir, csv.as_bytes()),
            "--key",
            "user",
            "--loop",
            "2",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let records = t.read_topic();
    assert_eq!(records.len(), 400);
    let mut partition_of: HashMap<Vec<u8>, i32> = HashMap::new();
    for r in &records {
        let key = r.key.clone().unwrap();
        let p = *partition_of.entry(key.clone()).or_insert(r.partition);
        assert_eq!(
            p,
            r.partition,
            "key {:?} in two partitions",
            String::from_utf8_lossy(&key)
        );
        let value: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        assert_eq!(
            value["user"].as_str().unwrap().as_bytes(),
            &key[..],
            "the key column carries the key"
        );
        let pass = header(r, "loop").unwrap();
        assert_eq!(key.ends_with(b"#1"), pass == "1");
    }
    assert_eq!(
        partition_of.len(),
        40,
        "20 keys per pass, unique across passes"
    );
    let used: HashSet<i32> = partition_of.values().copied().collect();
    assert!(used.len() > 1, "keys spread over partitions");
}

#[test]
fn limit_stops_early_and_rate_paces() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    let csv_path = repo_root().join("data/best-selling-books.csv");
    let started = std::time::Instant::now();
    let out = produce(
        &t,
        &[
            "--file",
            csv_path.to_str().unwrap(),
            "--limit",
            "40",
            "--rate",
            "100/s",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(t.read_topic().len(), 40);
    // 40 records at 100/s cannot take less than 0.39 s: the pacing is real.
    assert!(started.elapsed() >= std::time::Duration::from_millis(390));
}

#[test]
fn missing_file_and_dead_broker_are_clear_errors() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    let out = produce(&t, &["--file", "/no/such/file.csv"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("/no/such/file.csv"), "{}", out.stderr);

    let csv_path = repo_root().join("data/best-selling-books.csv");
    let out = run(t
        .lakectl()
        .args([
            "produce",
            "--topic",
            "x",
            "--file",
            csv_path.to_str().unwrap(),
        ])
        .env(
            "LAKECTL_KAFKA_BROKERS",
            format!("127.0.0.1:{}", free_port()),
        ));
    assert_eq!(out.code, 69, "{}", out.stderr);
    assert!(out.stderr.contains("kafka broker"), "{}", out.stderr);
}
