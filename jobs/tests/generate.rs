//! `lakectl generate`: determinism, the documented shapes, keys and partitions on the real
//! broker, and the defects against the truth file — each checked from the records themselves
//! by code of its own here, not by asking the generator.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde_json::Value;

use crate::util::*;

const PROFILES: [&str; 4] = ["user-activity", "customer-events", "ecommerce", "orders"];

/// Runs `lakectl generate ARGS --out FILE` and returns the file's lines.
fn generate_file(dir: &Path, name: &str, args: &[&str]) -> Vec<String> {
    let path = dir.join(name);
    ok(run(lakectl()
        .arg("generate")
        .args(args)
        .arg("--out")
        .arg(&path)));
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn truth(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_others() {
    let dir = tempfile::tempdir().unwrap();
    for profile in PROFILES {
        let args = |seed: &'static str, count: &'static str| {
            [
                profile,
                "--count",
                count,
                "--seed",
                seed,
                "--out-of-order",
                "3s",
                "--late-fraction",
                "0.02",
                "--late-by",
                "5m",
                "--duplicate-fraction",
                "0.02",
                "--corrupt-fraction",
                "0.02",
            ]
        };
        let a = generate_file(dir.path(), "a", &args("11", "3000"));
        let b = generate_file(dir.path(), "b", &args("11", "3000"));
        let c = generate_file(dir.path(), "c", &args("12", "3000"));
        assert_eq!(a.len(), 3000, "{profile}");
        assert!(a == b, "{profile}: two runs with seed 11 differ");
        let same = a.iter().zip(&c).filter(|(x, y)| x == y).count();
        assert_eq!(same, 0, "{profile}: seeds 11 and 12 share {same} records");
        // Where a run stops does not change what comes before.
        let short = generate_file(dir.path(), "d", &args("11", "1000"));
        assert_eq!(
            short[..],
            a[..1000],
            "{profile}: --count changed the records"
        );
    }
}

/// The type a documented field has: what docs/produce-and-generate.md's sample record shows.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Str,
    Int,
    Num,
    Bool,
    Time,
    Obj,
    Arr,
}

fn has_shape(v: &Value, shape: Shape) -> bool {
    match shape {
        Shape::Str => v.is_string(),
        Shape::Int => v.is_i64(),
        Shape::Num => v.is_number(),
        Shape::Bool => v.is_boolean(),
        Shape::Time => v
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok() && s.ends_with('Z')),
        Shape::Obj => v.is_object(),
        Shape::Arr => v.is_array(),
    }
}

/// Checks `record` has exactly `fields`, in order, each of its shape or null where allowed.
fn check_fields(profile: &str, record: &Value, fields: &[(&str, Shape, bool)]) {
    let obj = record
        .as_object()
        .unwrap_or_else(|| panic!("{profile}: not an object: {record}"));
    let names: Vec<&str> = obj.keys().map(String::as_str).collect();
    let want: Vec<&str> = fields.iter().map(|f| f.0).collect();
    assert_eq!(names, want, "{profile}: fields of {record}");
    for (name, shape, nullable) in fields {
        let v = &obj[*name];
        assert!(
            has_shape(v, *shape) || (*nullable && v.is_null()),
            "{profile}: {name} is not {shape:?}: {record}"
        );
    }
}

use Shape::*;

fn check_shape(profile: &str, r: &Value) {
    match profile {
        "user-activity" => check_fields(
            profile,
            r,
            &[
                ("event_id", Str, false),
                ("user_id", Str, false),
                ("session_id", Str, false),
                ("event_type", Str, false),
                ("page", Str, false),
                ("referrer", Str, true),
                ("device", Str, false),
                ("event_time", Time, false),
            ],
        ),
        "ecommerce" => {
            check_fields(
                profile,
                r,
                &[
                    ("event_id", Str, false),
                    ("event_type", Str, false),
                    ("user_id", Str, false),
                    ("session_id", Str, false),
                    ("product_id", Str, false),
                    ("category", Str, false),
                    ("price", Num, false),
                    ("quantity", Int, false),
                    ("revenue", Num, true),
                    ("search_query", Str, true),
                    ("device", Str, false),
                    ("event_time", Time, false),
                ],
            );
            let cents = |v: &Value| (v.as_f64().unwrap() * 100.0).round() as i64;
            let purchase = r["event_type"] == "purchase";
            assert_eq!(r["revenue"].is_null(), !purchase, "{r}");
            if purchase {
                assert_eq!(
                    cents(&r["revenue"]),
                    cents(&r["price"]) * r["quantity"].as_i64().unwrap(),
                    "{r}"
                );
            }
            assert!(
                cents(&r["price"]) > 0 && (1..=5).contains(&r["quantity"].as_i64().unwrap()),
                "{r}"
            );
            assert_eq!(
                r["search_query"].is_null(),
                r["event_type"] != "search",
                "{r}"
            );
        }
        "orders" => {
            check_fields(
                profile,
                r,
                &[
                    ("event_id", Str, false),
                    ("event_type", Str, false),
                    ("schema_version", Str, false),
                    ("event_time", Time, false),
                    ("ingest_time", Time, false),
                    ("tenant_id", Str, false),
                    ("user_id", Str, false),
                    ("session_id", Str, false),
                    ("source_system", Str, false),
                    ("environment", Str, false),
                    ("record_source", Str, false),
                    ("payload", Str, false),
                    ("checksum", Str, false),
                ],
            );
            let payload: Value = serde_json::from_str(r["payload"].as_str().unwrap()).unwrap();
            for (name, shape) in [
                ("order_id", Str),
                ("status", Str),
                ("currency", Str),
                ("amount", Num),
                ("items", Arr),
            ] {
                assert!(
                    has_shape(&payload[name], shape),
                    "payload {name}: {payload}"
                );
            }
        }
        "customer-events" => {
            check_fields(
                profile,
                r,
                &[
                    ("event_id", Str, false),
                    ("user_id", Str, false),
                    ("event_type", Str, false),
                    ("timestamp", Time, false),
                    ("device", Obj, false),
                    ("location", Obj, false),
                    ("content", Obj, true),
                    ("user_subscription", Obj, false),
                    ("event_details", Obj, false),
                    ("user_action", Arr, false),
                    ("recommendations", Arr, false),
                    ("search_history", Arr, false),
                ],
            );
            check_fields(
                "device",
                &r["device"],
                &[
                    ("type", Str, false),
                    ("os", Str, false),
                    ("os_version", Str, false),
                    ("app_version", Str, false),
                    ("model", Str, false),
                ],
            );
            check_fields(
                "location",
                &r["location"],
                &[
                    ("country", Str, false),
                    ("city", Str, false),
                    ("region", Str, false),
                    ("timezone", Str, false),
                ],
            );
            if !r["content"].is_null() {
                check_fields(
                    "content",
                    &r["content"],
                    &[
                        ("media_id", Str, false),
                        ("title", Str, false),
                        ("type", Str, false),
                        ("episode", Int, true),
                        ("season", Int, true),
                        ("provider", Str, false),
                        ("genre", Str, false),
                    ],
                );
            }
            check_fields(
                "user_subscription",
                &r["user_subscription"],
                &[
                    ("plan", Str, false),
                    ("status", Str, false),
                    ("started_at", Str, false),
                    ("auto_renew", Bool, false),
                    ("monthly_price", Num, false),
                ],
            );
            check_fields(
                "event_details",
                &r["event_details"],
                &[
                    ("duration_seconds", Int, true),
                    ("position_seconds", Int, true),
                    ("quality", Str, true),
                    ("search_query", Str, true),
                    ("results_count", Int, true),
                ],
            );
            for rec in r["recommendations"].as_array().unwrap() {
                check_fields(
                    "recommendation",
                    rec,
                    &[
                        ("media_id", Str, false),
                        ("title", Str, false),
                        ("score", Num, false),
                    ],
                );
            }
            assert!(r["user_action"]
                .as_array()
                .unwrap()
                .iter()
                .all(Value::is_string));
        }
        other => panic!("no shape for {other}"),
    }
}

#[test]
fn every_profile_writes_its_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    for profile in PROFILES {
        let lines = generate_file(
            dir.path(),
            profile,
            &[profile, "--count", "5000", "--seed", "3"],
        );
        let mut event_ids = HashSet::new();
        let mut types = BTreeMap::new();
        for line in &lines {
            let record: Value = serde_json::from_str(line).unwrap();
            check_shape(profile, &record);
            assert!(event_ids.insert(record["event_id"].as_str().unwrap().to_string()));
            *types
                .entry(record["event_type"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        // Every kind of event shows up, none takes the whole stream.
        assert!(
            types.len() >= 3 && types.values().all(|&n| n < 4000),
            "{profile}: {types:?}"
        );
    }
}

#[test]
fn kafka_gets_the_file_s_records_on_the_partitions_of_their_keys() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (profile, key_of) in [
        (
            "user-activity",
            (|r: &Value| r["user_id"].as_str().unwrap().to_string()) as fn(&Value) -> String,
        ),
        ("orders", |r: &Value| {
            let payload: Value = serde_json::from_str(r["payload"].as_str().unwrap()).unwrap();
            payload["order_id"].as_str().unwrap().to_string()
        }),
    ] {
        let topic = unique_name("gen");
        let args = [
            profile,
            "--count",
            "4000",
            "--seed",
            "5",
            "--duplicate-fraction",
            "0.05",
        ];
        let out = ok(run(t.lakectl().arg("generate").args(args).args([
            "--topic",
            &topic,
            "--partitions",
            "3",
        ])));
        assert!(
            out.stdout.contains("sent 4000, delivered 4000, failed 0"),
            "{}",
            out.stdout
        );
        let expected = generate_file(dir.path(), profile, &args);
        let records = read_topic(&t.brokers(), &topic);
        assert_eq!(records.len(), 4000);
        let partitions: HashSet<i32> = records.iter().map(|r| r.partition).collect();
        assert_eq!(
            partitions.len(),
            3,
            "{profile}: the topic was made with 3 partitions"
        );
        let mut by_seq = vec![None; 4000];
        for r in &records {
            let seq: usize =
                String::from_utf8_lossy(&r.headers.iter().find(|(k, _)| k == "seq").unwrap().1)
                    .parse()
                    .unwrap();
            let value = String::from_utf8(r.value.clone().unwrap()).unwrap();
            let key = r.key.clone().unwrap();
            assert_eq!(
                value, expected[seq],
                "{profile}: record {seq} differs from the file's"
            );
            let json: Value = serde_json::from_str(&value).unwrap();
            assert_eq!(
                String::from_utf8(key.clone()).unwrap(),
                key_of(&json),
                "{profile}: key of {seq}"
            );
            assert_eq!(
                r.partition,
                lakehouse_core::kafka::key_partition(&key, 3),
                "{profile}: partition of key {:?}",
                String::from_utf8_lossy(&key)
            );
            assert!(
                by_seq[seq].replace(r.offset).is_none(),
                "{profile}: seq {seq} twice"
            );
        }
    }
}

/// A record's event time in ms (a number where the `wrong_type` corruption put one).
fn event_ms(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis(),
        other => panic!("no event time: {other}"),
    }
}

#[test]
fn defects_come_in_the_asked_shares_exactly_as_the_truth_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let truth_path = dir.path().join("truth.ndjson");
    let n = 100_000usize;
    let (late, dup, corrupt) = (0.05, 0.02, 0.03);
    let lines = generate_file(
        dir.path(),
        "events",
        &[
            "user-activity",
            "--count",
            &n.to_string(),
            "--seed",
            "42",
            "--out-of-order",
            "5s",
            "--late-fraction",
            &late.to_string(),
            "--late-by",
            "10m",
            "--duplicate-fraction",
            &dup.to_string(),
            "--corrupt-fraction",
            &corrupt.to_string(),
            "--truth",
            truth_path.to_str().unwrap(),
        ],
    );
    assert_eq!(lines.len(), n);
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    // What the records themselves show, found independently of the truth file:
    // a duplicate repeats an earlier record's event id; a corrupt record lacks user_id or
    // carries its time as a number; a late one is more than 60 s older than the newest
    // event before it (clean events are at most 5 s out of order, late ones 10 min).
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    let mut found: BTreeMap<usize, (&str, String)> = BTreeMap::new();
    let mut newest = i64::MIN;
    for (seq, r) in records.iter().enumerate() {
        let id = r["event_id"].as_str().unwrap();
        if let Some(&of) = first_seen.get(id) {
            assert_eq!(lines[seq], lines[of], "a duplicate is the same bytes");
            found.insert(seq, ("duplicate", of.to_string()));
            continue;
        }
        first_seen.insert(id, seq);
        let t = event_ms(&r["event_time"]);
        if r.get("user_id").is_none() {
            found.insert(seq, ("corrupt", "missing_field".into()));
        } else if r["event_time"].is_number() {
            found.insert(seq, ("corrupt", "wrong_type".into()));
        } else if newest != i64::MIN && t < newest - 60_000 {
            found.insert(seq, ("late", String::new()));
        } else {
            check_shape("user-activity", r);
        }
        newest = newest.max(t);
    }

    let truth = truth(&truth_path);
    let listed: BTreeMap<usize, (&str, String)> = truth
        .iter()
        .map(|t| {
            let seq = t["seq"].as_u64().unwrap() as usize;
            let defect = t["defect"].as_str().unwrap();
            assert_eq!(t["event_id"], records[seq]["event_id"], "truth line {t}");
            let detail = match defect {
                "duplicate" => t["of_seq"].to_string(),
                "corrupt" => t["corruption"].as_str().unwrap().to_string(),
                "late" => {
                    assert!(t["late_by_ms"].as_i64().unwrap() >= 600_000, "{t}");
                    String::new()
                }
                other => panic!("unknown defect {other}"),
            };
            (seq, (defect, detail))
        })
        .collect();
    // The late check cannot judge the first record (nothing came before it).
    let listed: BTreeMap<_, _> = listed
        .into_iter()
        .filter(|(seq, _)| *seq > 0 || found.contains_key(seq))
        .collect();
    assert_eq!(
        found, listed,
        "the truth file lists exactly the defects the records show"
    );

    for (defect, asked) in [("late", late), ("duplicate", dup), ("corrupt", corrupt)] {
        let share = found.values().filter(|(d, _)| *d == defect).count() as f64 / n as f64;
        assert!(
            (share - asked).abs() <= asked * 0.01,
            "{defect}: {share} of the records, asked {asked}"
        );
    }
}

/// The lifecycles an order may follow, in the order its events are sent.
const LIFECYCLES: [&[&str]; 3] = [
    &["order_created", "payment_captured", "shipped", "delivered"],
    &["order_created", "cancelled"],
    &["order_created", "payment_captured", "cancelled"],
];

#[test]
fn orders_follow_their_lifecycle_and_checksums_verify_but_the_corrupted_ones() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let truth_path = dir.path().join("truth.ndjson");
    let lines = generate_file(
        dir.path(),
        "orders",
        &[
            "orders",
            "--count",
            "20000",
            "--seed",
            "9",
            "--corrupt-fraction",
            "0.05",
            "--duplicate-fraction",
            "0.02",
            "--truth",
            truth_path.to_str().unwrap(),
        ],
    );
    let corrupt: HashMap<usize, String> = truth(&truth_path)
        .iter()
        .filter(|t| t["defect"] == "corrupt")
        .map(|t| {
            (
                t["seq"].as_u64().unwrap() as usize,
                t["corruption"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(corrupt.values().any(|c| c == "bad_checksum"));
    let mut seen = HashSet::new();
    let mut steps: HashMap<String, Vec<String>> = HashMap::new();
    let mut bad_checksums = 0;
    for (seq, line) in lines.iter().enumerate() {
        let r: Value = serde_json::from_str(line).unwrap();
        if !seen.insert(r["event_id"].as_str().unwrap().to_string()) {
            continue; // a duplicate: the lifecycle counts each event once
        }
        let payload_text = match &r["payload"] {
            Value::String(s) => s.clone(),
            other => {
                assert_eq!(
                    corrupt.get(&seq).map(String::as_str),
                    Some("wrong_type"),
                    "{line}"
                );
                other.to_string()
            }
        };
        let digest: String = Sha256::digest(payload_text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let verifies = r["checksum"].as_str() == Some(digest.as_str());
        let is_bad = corrupt.get(&seq).map(String::as_str) == Some("bad_checksum");
        if is_bad {
            bad_checksums += 1;
        }
        // Only a wrong_type payload (an object, re-serialised here) may also fail to verify.
        assert!(
            verifies != is_bad || corrupt.get(&seq).map(String::as_str) == Some("wrong_type"),
            "seq {seq}: {line}"
        );
        if corrupt.get(&seq).map(String::as_str) == Some("missing_field") {
            assert!(r.get("event_time").is_none(), "{line}");
        }
        let payload: Value = serde_json::from_str(&payload_text).unwrap();
        let order_id = payload["order_id"].as_str().unwrap().to_string();
        steps
            .entry(order_id)
            .or_default()
            .push(r["event_type"].as_str().unwrap().to_string());
    }
    assert_eq!(
        bad_checksums,
        corrupt.values().filter(|c| *c == "bad_checksum").count()
    );
    let mut complete = [0; LIFECYCLES.len()];
    for (order, seen) in &steps {
        let seen: Vec<&str> = seen.iter().map(String::as_str).collect();
        assert!(
            LIFECYCLES.iter().any(|l| l.starts_with(&seen)),
            "order {order}: {seen:?} is no lifecycle"
        );
        if let Some(i) = LIFECYCLES.iter().position(|l| *l == seen.as_slice()) {
            complete[i] += 1;
        }
    }
    // Each path is walked to its end by some orders (most are still open when 20,000 events,
    // 200 s of event time, end: an order takes about 12 minutes).
    assert!(
        complete.iter().all(|&n| n > 0),
        "complete orders per lifecycle: {complete:?}"
    );
}

#[test]
fn generate_without_an_amount_or_with_a_bad_value_is_a_user_error() {
    let out = run(lakectl().args(["generate", "orders", "--out", "/dev/null"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--count"), "{}", out.stderr);
    let out = run(lakectl().args([
        "generate",
        "orders",
        "--count",
        "1",
        "--late-fraction",
        "2",
        "--out",
        "/dev/null",
    ]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--late-fraction"), "{}", out.stderr);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        "name = \"g\"\n[generate]\nprofile = \"clicks\"\ncount = 5\n",
    )
    .unwrap();
    let out = run(lakectl()
        .arg("-p")
        .arg(&file)
        .args(["generate", "--out", "/dev/null"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("generate.profile") && out.stderr.contains("p.toml"),
        "{}",
        out.stderr
    );
}
