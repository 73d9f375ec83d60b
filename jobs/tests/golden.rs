//! Window semantics as files, like DataFusion's `.slt` tests: each folder of
//! `tests/window_cases/` is one case — `case.toml` (the window's settings, the silver
//! schema, the topic's partition count), `input.ndjson` (silver's rows in arrival order, each
//! with its `_commit`, `_partition` and `_offset`), `expected.csv` (the window table) and
//! `quarantine.csv` (position, rule, and a text the reason must hold: the window bounds) —
//! written by hand from the rule docs/window.md states, not from lakectl's output.
//!
//! Each case runs on a `memory://` lake, no service needed, three ways that must all give the
//! expected files: a unit per silver commit, every commit in one unit, and the partitions'
//! rows in another interleaving (each partition's in its order): what counts where depends on
//! each partition's rows alone.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use deltalake::protocol::SaveMode;
use lakehouse_core::schema::RecordParser;
use lakehouse_core::storage::{write_with_txns, Upkeep};
use lakehouse_core::{table_files, Lake, Layer, Mode, Pipeline, Runner};
use tokio_util::sync::CancellationToken;

use crate::util::*;

const NO_UPKEEP: Upkeep = Upkeep {
    checkpoint_interval: 100,
    compact_every: 0,
};

/// How a case's rows reach the window job.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// A unit per silver commit.
    UnitPerCommit,
    /// Every commit in one unit.
    OneUnit,
    /// A commit per partition, partition after partition: another interleaving.
    ByPartition,
}

struct Case {
    name: String,
    partitions: i64,
    schema: toml::Table,
    window: toml::Table,
    /// Input lines in arrival order.
    rows: Vec<Line>,
}

/// One line of `input.ndjson`: silver's commit, the row's position, the row as JSON.
struct Line {
    commit: i64,
    partition: i32,
    offset: i64,
    json: String,
}

fn read_case(dir: &Path) -> Case {
    let text = std::fs::read_to_string(dir.join("case.toml")).unwrap();
    let mut case: toml::Table = text.parse().unwrap();
    let table = |case: &mut toml::Table, key: &str| match case.remove(key) {
        Some(toml::Value::Table(t)) => t,
        other => panic!("{}: `{key}` must be a table, got {other:?}", dir.display()),
    };
    let schema = table(&mut case, "schema");
    let window = table(&mut case, "window");
    let partitions = case
        .get("partitions")
        .and_then(|p| p.as_integer())
        .unwrap_or(1);
    let rows = std::fs::read_to_string(dir.join("input.ndjson"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let n = |k: &str| v[k].as_i64().unwrap_or_else(|| panic!("{line}: no {k}"));
            Line {
                commit: n("_commit"),
                partition: n("_partition") as i32,
                offset: n("_offset"),
                json: line.to_string(),
            }
        })
        .collect();
    Case {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        partitions,
        schema,
        window,
        rows,
    }
}

/// The pipeline of `case` with tables named for `variant` (one `memory://` store serves every
/// case of the process).
fn pipeline(case: &Case, variant: &str) -> (Pipeline, String, String) {
    let source = format!("s_{}_{variant}", case.name);
    let window = format!("w_{}_{variant}", case.name);
    let key = case.schema.keys().next().expect("a schema field").clone();
    let mut silver = toml::Table::new();
    silver.insert("source".into(), source.clone().into());
    silver.insert("key".into(), toml::Value::Array(vec![key.into()]));
    silver.insert("on_existing_key".into(), "keep".into());
    silver.insert("schema".into(), case.schema.clone().into());
    let mut window_table = case.window.clone();
    window_table.insert("source".into(), source.clone().into());
    let mut root = toml::Table::new();
    root.insert("name".into(), "golden".into());
    root.insert(
        "lake".into(),
        toml::Value::Table(toml::Table::from_iter([(
            "uri".to_string(),
            "memory://".into(),
        )])),
    );
    let one = |name: &str, value: toml::Table| {
        toml::Value::Table(toml::Table::from_iter([(name.to_string(), value.into())]))
    };
    root.insert(
        "bronze".into(),
        one(
            &source,
            toml::Table::from_iter([("topic".to_string(), source.clone().into())]),
        ),
    );
    root.insert("silver".into(), one(&source, silver));
    root.insert("window".into(), one(&window, window_table));
    let text = toml::to_string(&root).unwrap();
    let pipeline = Pipeline::from_text(&text, Path::new("golden.toml"), &|_| None, &[])
        .unwrap_or_else(|e| panic!("{}: {e}\n{text}", case.name));
    (pipeline, source, window)
}

/// Silver's commits of the case, as `cut` makes them: each (commit, its lines).
fn commits(case: &Case, cut: Cut) -> Vec<(i64, Vec<&Line>)> {
    let mut out: Vec<(i64, Vec<_>)> = Vec::new();
    match cut {
        Cut::UnitPerCommit | Cut::OneUnit => {
            for row in &case.rows {
                match out.last_mut() {
                    Some((commit, rows)) if *commit == row.commit => rows.push(row),
                    _ => out.push((row.commit, vec![row])),
                }
            }
        }
        Cut::ByPartition => {
            for p in 0..case.partitions as i32 {
                let rows: Vec<_> = case.rows.iter().filter(|r| r.partition == p).collect();
                out.push((p as i64, rows));
            }
        }
    }
    out
}

/// Writes the rows of `lines` as one silver commit at bronze version `version`.
async fn write_silver(
    lake: &Lake,
    pipeline: &Pipeline,
    source: &str,
    version: i64,
    lines: &[&Line],
    partitions: i64,
) {
    let fields: Vec<(String, lakehouse_core::schema::ColumnType)> = pipeline.silver[source]
        .schema
        .iter()
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    let mut parser = RecordParser::new(&fields, lines.len());
    for line in lines {
        parser
            .push(line.json.as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}", line.json));
    }
    let mut schema_fields = RecordParser::arrow_fields(&fields);
    let mut columns = parser.finish();
    let n = lines.len();
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let lineage: [(&str, DataType, ArrayRef); 4] = [
        (
            "_bronze_version",
            DataType::Int64,
            Arc::new(Int64Array::from(vec![version; n])),
        ),
        (
            "_partition",
            DataType::Int32,
            Arc::new(Int32Array::from_iter_values(
                lines.iter().map(|l| l.partition),
            )),
        ),
        (
            "_offset",
            DataType::Int64,
            Arc::new(Int64Array::from_iter_values(lines.iter().map(|l| l.offset))),
        ),
        (
            "_kafka_ts",
            ts.clone(),
            Arc::new(TimestampMicrosecondArray::from(vec![None; n]).with_timezone("UTC")),
        ),
    ];
    for (name, data_type, column) in lineage {
        schema_fields.push(Field::new(name, data_type, true));
        columns.push(column);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), columns).unwrap();
    let table = lake.table_or_new(Layer::Silver, source).await.unwrap();
    let txns = vec![
        (jobs::silver::txn_app_id(source), version),
        (jobs::silver::partitions_app_id(source), partitions),
    ];
    write_with_txns(
        table,
        vec![batch],
        SaveMode::Append,
        txns,
        &[],
        NO_UPKEEP,
        None,
    )
    .await
    .unwrap();
}

/// A table's rows as CSV lines (NULL empty, times as RFC 3339 with `Z`), sorted; its header.
async fn csv_rows(
    lake: &Lake,
    layer: Layer,
    table: &str,
    columns: Option<&[&str]>,
) -> (String, Vec<String>) {
    let Some(delta) = lake.load_table(layer, table).await.unwrap() else {
        return (String::new(), Vec::new());
    };
    let schema = delta.snapshot().unwrap().snapshot().arrow_schema();
    let names: Vec<String> = match columns {
        Some(c) => c.iter().map(|s| s.to_string()).collect(),
        None => schema.fields().iter().map(|f| f.name().clone()).collect(),
    };
    let files = table_files::live_since(&delta, table, None).await.unwrap();
    let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut rows = Vec::new();
    for (_, batches) in table_files::read(&delta, &files, Some(&wanted))
        .await
        .unwrap()
    {
        for batch in batches {
            let options = FormatOptions::default();
            let formatters: Vec<ArrayFormatter> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                .collect();
            for row in 0..batch.num_rows() {
                let cells: Vec<String> = (formatters.iter().zip(batch.columns()))
                    .map(|(f, c)| {
                        if c.is_null(row) {
                            String::new()
                        } else {
                            f.value(row).to_string().replace("+00:00", "Z")
                        }
                    })
                    .collect();
                rows.push(cells.join(","));
            }
        }
    }
    rows.sort();
    (names.join(","), rows)
}

fn expected(dir: &Path, file: &str) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or_default().to_string();
    let mut rows: Vec<String> = lines.map(str::to_string).collect();
    rows.sort();
    (header, rows)
}

fn run_case(dir: &Path, cut: Cut) {
    let case = read_case(dir);
    let variant = format!("{cut:?}").to_lowercase();
    let (pipeline, source, window) = pipeline(&case, &variant);
    let lake = pipeline.lake.open().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(async {
        let commits = commits(&case, cut);
        for (version, lines) in &commits {
            write_silver(&lake, &pipeline, &source, *version, lines, case.partitions).await;
        }
        if commits.is_empty() {
            // An empty stream: silver exists, with no rows.
            write_silver(&lake, &pipeline, &source, 0, &[], case.partitions).await;
        }
        let mut pipeline = pipeline.clone();
        let settings = pipeline.window.get_mut(&window).unwrap();
        settings.batch_rows = match cut {
            Cut::UnitPerCommit => 1,
            Cut::OneUnit | Cut::ByPartition => 1_000_000,
        };
        let mut job = jobs::window::WindowJob::new(&pipeline, &window).unwrap();
        Runner::new("golden", Mode::Once, CancellationToken::new())
            .run(&mut job)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        job.report.clone()
    });
    let what = format!("{} ({cut:?})", case.name);
    let (want_header, want) = expected(dir, "expected.csv");
    let columns: Vec<&str> = want_header.split(',').collect();
    let (header, got) = runtime.block_on(csv_rows(&lake, Layer::Window, &window, Some(&columns)));
    if !want.is_empty() || !got.is_empty() {
        assert_eq!(header, want_header, "{what}: the window table's columns");
    }
    assert_eq!(got, want, "{what}: the window table");

    let (_, quarantined) = runtime.block_on(csv_rows(
        &lake,
        Layer::Quarantine,
        &window,
        Some(&["_partition", "_offset", "rule", "error"]),
    ));
    let (_, want_quarantine) = expected(dir, "quarantine.csv");
    assert_eq!(
        quarantined.len(),
        want_quarantine.len(),
        "{what}: quarantine {quarantined:#?}"
    );
    for (got, want) in quarantined.iter().zip(&want_quarantine) {
        let mut want = want.splitn(4, ',');
        let (p, o, rule, reason) = (want.next(), want.next(), want.next(), want.next());
        let prefix = format!("{},{},{},", p.unwrap(), o.unwrap(), rule.unwrap());
        assert!(
            got.starts_with(&prefix),
            "{what}: quarantine row {got} is not {prefix}…"
        );
        if let Some(reason) = reason.filter(|r| !r.is_empty()) {
            assert!(got.contains(reason), "{what}: {got} should say {reason}");
        }
    }
    if let Some(n) = case_expects(dir, "late_for_some_windows") {
        assert_eq!(
            report.failed("late_for_some_windows"),
            Some(n),
            "{what}: rows late for some of their windows only"
        );
    }
}

/// An integer `case.toml` states at its top level besides the settings, e.g. a count.
fn case_expects(dir: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("case.toml")).unwrap();
    let case: toml::Table = text.parse().unwrap();
    case.get(key).and_then(|v| v.as_integer()).map(|n| n as u64)
}

#[test]
fn window_cases_give_their_files_whatever_the_units_and_interleaving() {
    let root = repo_root().join("jobs/tests/window_cases");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 9,
        "{} cases in {}",
        dirs.len(),
        root.display()
    );
    for dir in &dirs {
        for cut in [Cut::UnitPerCommit, Cut::OneUnit, Cut::ByPartition] {
            run_case(dir, cut);
        }
    }
}
