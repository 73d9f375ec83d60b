//! `lakectl run load`: silver and gold Delta tables → PostgreSQL tables, exactly once.
//!
//! One unit loads everything the source has that the target has not, in one Postgres
//! transaction:
//! 1. lock the target (advisory lock), read the source version `lakectl.load_state` records;
//!    equal to the source's version → nothing to do;
//! 2. create the target from the Arrow schema, or add new nullable columns (any other drift is
//!    an error before anything changes);
//! 3. read the rows a reader at the recorded version has not seen — `replace` and a first
//!    load: every live file; `append`: the files of each commit since (each row once, from a
//!    table that only appends); `upsert`: the live files holding a row added or rewritten
//!    since, a compaction's included — and binary-COPY them, into the target directly when
//!    it is empty or the mode is `append`/`replace` (after a TRUNCATE), else into a temporary
//!    staging table followed by `INSERT … ON CONFLICT DO UPDATE` that skips unchanged rows;
//!    a row Postgres would refuse (a NUL in text, a NULL key, a date out of its range, …) is
//!    held back and kept in the lake table `quarantine.load_<name>` with its reason;
//! 4. record the source version in `lakectl.load_state`, and commit.
//!
//! A crash anywhere before the commit rolls everything back; after it, the next run finds the
//! version recorded. Rows rewritten upstream (a MERGE or a compaction rewrites whole files)
//! are sent again and the upsert leaves the unchanged ones as they were. The quarantine is
//! committed before Postgres: a re-done load skips the rows it already holds (by source file
//! and row).

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use chrono::Utc;
use lakehouse_core::config::{LoadMode, LoadTarget};
use lakehouse_core::quality::{Action, QualityLog, QualityReport, QualityScope};
use lakehouse_core::runner::crash_point;
use lakehouse_core::table_files::{self, DataFile, UnitLimit};
use lakehouse_core::{Error, Job, Lake, Layer, Mode, Pipeline, Result, UnitReport};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::columns::timestamp_type;
use crate::kind::JobKind;
use crate::stage;
use tracing::{info, warn};
use warehouse::{Copier, TableName};

/// Source files read and sent per round trip: bounds memory to a few files' rows.
const FILES_PER_CHUNK: usize = 4;
const STAGE: &str = "lakectl_stage";
/// The quality rule rows Postgres would refuse fail.
const REFUSED_RULE: &str = "postgres_accepts";

/// The lake table that keeps the rows load `name` could not write to Postgres.
pub fn quarantine_table(name: &str) -> String {
    format!("load_{name}")
}

fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("_source_file", DataType::Utf8, false),
        Field::new("_source_row", DataType::Int64, false),
        Field::new("_source_version", DataType::Int64, false),
        // The row as JSON (a NUL stays, escaped).
        Field::new("row", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("_quarantined_at", timestamp_type(), false),
    ]))
}

/// A source row Postgres would refuse: where it is, the row as JSON, why.
struct Held {
    file: String,
    row: i64,
    json: String,
    reason: String,
}

pub struct LoadJob {
    name: String,
    settings: LoadTarget,
    source_layer: Layer,
    source_table: String,
    target: TableName,
    lake: Lake,
    postgres_url: Option<String>,
    postgres_url_env: String,
    /// Connected on first use, inside a unit, so a Postgres that is down at start is retried
    /// like one that goes down mid-load.
    pool: Option<PgPool>,
    pipeline: String,
    run_id: String,
    quality: QualityLog,
    /// Counts of the whole run, printed at its end.
    pub report: QualityReport,
}

impl LoadJob {
    pub fn new(pipeline: &Pipeline, name: &str) -> Result<LoadJob> {
        let settings = crate::stage::settings(pipeline, "load", &pipeline.load, name).cloned()?;
        let (layer, table) = (settings.source.layer, settings.source.name.clone());
        let target_name = settings
            .target
            .clone()
            .unwrap_or_else(|| settings.source.to_string());
        let target = TableName::parse(&target_name, layer.folder());
        let lake = pipeline.lake.open()?;
        Ok(LoadJob {
            pipeline: pipeline.name.clone(),
            run_id: String::new(),
            quality: QualityLog::new(lake.clone()),
            report: QualityReport::default(),
            name: name.to_string(),
            settings,
            source_layer: layer,
            source_table: table,
            target,
            lake,
            postgres_url: pipeline.postgres_url.clone(),
            postgres_url_env: pipeline.postgres.url_env.clone(),
            pool: None,
        })
    }

    async fn pool(&mut self) -> Result<PgPool> {
        if let Some(pool) = &self.pool {
            return Ok(pool.clone());
        }
        let pool = warehouse::connect(self.postgres_url.as_deref(), &self.postgres_url_env).await?;
        let mut conn = pool.acquire().await.map_err(warehouse::Error::from)?;
        warehouse::ensure_load_state(&mut conn).await?;
        self.pool = Some(pool.clone());
        Ok(pool)
    }

    async fn load(&mut self) -> Result<UnitReport> {
        let Some(source) = self
            .lake
            .load_table(self.source_layer, &self.source_table)
            .await?
        else {
            info!(source = %self.settings.source, "source table does not exist yet: nothing to load");
            return Ok(UnitReport {
                caught_up: true,
                ..Default::default()
            });
        };
        let version = source.version().expect("loaded tables have a version") as i64;
        let pool = self.pool().await?;
        let target = &self.target;
        let mut tx = pool.begin().await.map_err(warehouse::Error::from)?;
        warehouse::lock_target(&mut tx, target).await?;
        let recorded = warehouse::recorded_version(&mut tx, target).await?;
        if recorded == Some(version) {
            return Ok(UnitReport {
                version_read: Some(version),
                caught_up: true,
                ..Default::default()
            });
        }
        let schema = source.snapshot()?.snapshot().arrow_schema();
        let wanted = warehouse::types::columns_for(&schema, target)?;
        let existing = warehouse::existing_columns(&mut tx, target).await?;
        let created = existing.is_none();
        let changes = warehouse::types::schema_changes(
            target,
            &wanted,
            existing.as_deref(),
            &self.settings.key,
        )?;
        warehouse::change_catalog(&mut tx, changes).await?;
        let mode = self.settings.mode;
        let files = self.unread_files(&source, version, recorded).await?;
        let columns: Vec<String> = wanted.iter().map(|c| c.name.clone()).collect();
        // The columns the target takes no NULL in: its key, and what it declares NOT NULL.
        let not_null: Vec<String> = match &existing {
            Some(existing) => (existing.iter())
                .filter(|c| !c.nullable)
                .map(|c| c.name.clone())
                .collect(),
            None => (wanted.iter())
                .filter(|c| !c.nullable)
                .map(|c| c.name.clone())
                .chain(self.settings.key.iter().cloned())
                .collect(),
        };

        let direct = match mode {
            LoadMode::Append => true,
            LoadMode::Replace => {
                warehouse::execute(&mut tx, &format!("TRUNCATE {target}")).await?;
                true
            }
            LoadMode::Upsert => created || warehouse::is_empty(&mut tx, target).await?,
        };
        let copy_into = if direct {
            target.to_string()
        } else {
            let stage = format!(
                "CREATE TEMPORARY TABLE {STAGE} (LIKE {target} INCLUDING DEFAULTS) ON COMMIT DROP"
            );
            warehouse::execute(&mut tx, &stage).await?;
            STAGE.to_string()
        };
        let (copied, held) = self
            .copy_files(&mut tx, &source, &files, &copy_into, &columns, &not_null)
            .await?;
        let written = if direct {
            copied
        } else {
            let sql = warehouse::upsert_sql(target, STAGE, &columns, &self.settings.key);
            warehouse::execute(&mut tx, &sql).await?
        };
        let read = copied + held.len() as u64;
        self.write_quarantine(&held, version).await?;
        crash_point("load:after_quarantine");
        warehouse::record_version(
            &mut tx,
            target,
            self.settings.source.as_str(),
            version,
            copied,
        )
        .await?;
        crash_point("load:before_commit");
        tx.commit().await.map_err(warehouse::Error::from)?;
        info!(
            target = %target.plain(),
            version,
            files = files.len(),
            rows_sent = copied,
            rows_written = written,
            rows_quarantined = held.len(),
            "load committed"
        );
        let mut report = QualityReport::default();
        report.count(
            REFUSED_RULE,
            Action::Quarantine.as_str(),
            read,
            held.len() as u64,
        );
        report.score(read, copied);
        self.report.absorb(&report);
        let scope = QualityScope {
            run_id: &self.run_id,
            pipeline: &self.pipeline,
            job: &self.name(),
            first_version: recorded.map_or(0, |r| r + 1),
            last_version: version,
            at: Utc::now(),
        };
        self.quality.append(&scope, &report);
        Ok(UnitReport {
            rows_in: read,
            rows_out: written,
            version_read: Some(version),
            version_written: None,
            caught_up: true,
            ..Default::default()
        })
    }

    /// The source files holding the rows the target lacks, by mode (see step 3).
    async fn unread_files(
        &self,
        source: &deltalake::DeltaTable,
        version: i64,
        recorded: Option<i64>,
    ) -> Result<Vec<DataFile>> {
        let name = self.settings.source.as_str();
        match (self.settings.mode, recorded) {
            (LoadMode::Replace, _) | (_, None) => table_files::live_since(source, name, None).await,
            (LoadMode::Append, Some(seen)) => {
                let (files, _) =
                    table_files::appended_since(source, name, seen, version, UnitLimit::NONE)
                        .await?;
                Ok(files)
            }
            (LoadMode::Upsert, Some(seen)) => {
                table_files::live_since(source, name, Some(seen)).await
            }
        }
    }

    /// COPYs the rows of `files`; returns how many Postgres took and the rows it would have
    /// refused.
    async fn copy_files(
        &self,
        conn: &mut sqlx::PgConnection,
        source: &deltalake::DeltaTable,
        files: &[DataFile],
        into: &str,
        columns: &[String],
        not_null: &[String],
    ) -> Result<(u64, Vec<Held>)> {
        let mut copier = Copier::start(conn, into, columns, not_null).await?;
        let mut held = Vec::new();
        for chunk in files.chunks(FILES_PER_CHUNK) {
            for (file, batches) in table_files::read(source, chunk, None).await? {
                let mut first_row = 0;
                for batch in batches {
                    for refused in copier.send(&batch).await? {
                        held.push(Held {
                            file: file.path.to_string(),
                            row: first_row + refused.row as i64,
                            json: row_json(&batch, refused.row)?,
                            reason: refused.reason,
                        });
                    }
                    first_row += batch.num_rows() as i64;
                }
            }
        }
        Ok((copier.finish().await?, held))
    }

    /// Keeps `held` in `quarantine.load_<name>`, but for the rows it holds already: a load
    /// re-done after a crash, an `upsert` or `replace` load reading the same rows again (from
    /// the same files, or from a compaction's) — by source file and row for `append`, where
    /// the same values may be two rows, by the row's values otherwise.
    async fn write_quarantine(&self, held: &[Held], version: i64) -> Result<()> {
        if held.is_empty() {
            return Ok(());
        }
        let table = quarantine_table(&self.name);
        let by_position = self.settings.mode == LoadMode::Append;
        let identity = |file: &str, row: i64, json: &str| {
            if by_position {
                format!("{file}#{row}")
            } else {
                json.to_string()
            }
        };
        let mut kept: HashSet<String> = HashSet::new();
        if let Some(quarantine) = self.lake.load_table(Layer::Quarantine, &table).await? {
            let files = table_files::live_since(&quarantine, &table, None).await?;
            let columns = ["_source_file", "_source_row", "row"];
            for (_, batches) in table_files::read(&quarantine, &files, Some(&columns)).await? {
                for b in batches {
                    let (paths, jsons) = (
                        b.column(0).as_string::<i32>(),
                        b.column(2).as_string::<i32>(),
                    );
                    let rows = b.column(1).as_primitive::<arrow::datatypes::Int64Type>();
                    kept.extend(
                        (0..b.num_rows())
                            .map(|i| identity(paths.value(i), rows.value(i), jsons.value(i))),
                    );
                }
            }
        }
        let mut new: Vec<&Held> = Vec::new();
        for h in held {
            if kept.insert(identity(&h.file, h.row, &h.json)) {
                new.push(h);
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        warn!(load = %self.name, rows = new.len(), table = %format!("quarantine.{table}"), "rows Postgres would refuse kept in quarantine");
        let n = new.len();
        let text = |f: &dyn Fn(&Held) -> &str| {
            Arc::new(StringArray::from_iter_values(new.iter().map(|h| f(h)))) as _
        };
        let batch = RecordBatch::try_new(
            quarantine_schema(),
            vec![
                text(&|h| &h.file),
                Arc::new(Int64Array::from_iter_values(new.iter().map(|h| h.row))),
                Arc::new(Int64Array::from(vec![version; n])),
                text(&|h| &h.json),
                Arc::new(StringArray::from(vec![REFUSED_RULE; n])),
                text(&|h| &h.reason),
                Arc::new(StringArray::from(vec![self.run_id.as_str(); n])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Utc::now().timestamp_micros(); n])
                        .with_timezone("UTC"),
                ),
            ],
        )?;
        self.lake.append(Layer::Quarantine, &table, batch).await
    }
}

/// Row `row` of `batch` as a JSON object.
fn row_json(batch: &RecordBatch, row: usize) -> Result<String> {
    let mut json = arrow::json::LineDelimitedWriter::new(Vec::new());
    json.write(&batch.slice(row, 1))?;
    json.finish()?;
    let text = String::from_utf8(json.into_inner())
        .map_err(|e| Error::Internal(format!("row JSON: {e}")))?;
    Ok(text.trim_end().to_string())
}

#[async_trait]
impl Job for LoadJob {
    fn name(&self) -> String {
        format!("load:{}", self.name)
    }

    fn begin(&mut self, run_id: &str) {
        self.run_id = run_id.to_string();
    }

    async fn run_unit(&mut self, _cancel: &CancellationToken) -> Result<UnitReport> {
        let unit = self.load().await?;
        self.quality.flush_if_due().await;
        Ok(unit)
    }

    async fn finish(&mut self) -> Result<()> {
        self.quality.flush().await;
        Ok(())
    }
}

/// `lakectl run load`.
pub const KIND: JobKind = JobKind {
    name: "load",
    summary: "silver, gold and window tables -> PostgreSQL, exactly once (binary COPY, upsert by key); rows Postgres refuses to quarantine",
    default_mode: Mode::Once,
    full_refresh: false,
    declared: |pipeline| pipeline.load.keys().cloned().collect(),
    writes: |name| vec![(Layer::Quarantine, quarantine_table(name))],
    run: |pipeline, tables, options| Box::pin(run_tables(pipeline, tables, options.mode)),
};

/// `lakectl run load [TABLE…]`: each load target in turn on the shared runner.
pub async fn run_tables(pipeline: &Pipeline, tables: &[String], mode: Mode) -> Result<()> {
    let names = stage::table_names(pipeline, "load", pipeline.load.keys(), tables)?;
    let make = |name: &str| LoadJob::new(pipeline, name);
    stage::run_each(pipeline, &names, mode, make, |job: &LoadJob, result| {
        if let Ok(record) = result {
            let held = job.report.failed(REFUSED_RULE).unwrap_or(0);
            let quarantined = if held > 0 {
                format!(
                    ", {held} kept in quarantine.{} (Postgres would refuse them)",
                    quarantine_table(&job.name)
                )
            } else {
                String::new()
            };
            println!(
                "{}: {} — {} rows read, {} rows written to {}{quarantined}, source version {}",
                record.job,
                record.outcome.as_str(),
                record.rows_in,
                record.rows_out,
                job.target.plain(),
                stage::version_or(record.last_version_read, "-"),
            );
        }
    })
    .await
}
