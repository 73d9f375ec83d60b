//! `lakectl run silver`: a bronze table → the typed, cleaned, deduplicated
//! `<lake>/silver/<table>`, incrementally, with expectations and a quarantine table.
//!
//! One unit of work takes the next bronze commits after the last one consumed (up to
//! `batch_rows` rows) and goes through these steps, each counted in the quality report:
//! 1. **parse**: each record's JSON `value` into the declared schema; a record that cannot be
//!    typed goes to quarantine with the parse error.
//! 2. **cleaning SQL** over the view `source` (DataFusion). It must keep one row per record;
//!    the lineage columns are appended to its SELECT. Rows its WHERE removes are counted. A
//!    record the SQL cannot compute (a CAST that fails on its value) goes to quarantine with
//!    the error, rule `cleaning_sql`, and the unit's other rows go on (`failing.rs`).
//! 3. **key**: a row whose key is NULL cannot be merged: quarantine.
//! 4. **dedupe**: one row per key, the latest by Kafka timestamp, then partition and offset.
//! 5. **expectations**, each with its action (warn, drop, quarantine, fail). A `fail`
//!    stops the unit before anything is written. A record an expectation's SQL cannot be
//!    computed for goes to quarantine under that expectation's name, whatever its action.
//! 6. **commit**: quarantine rows first, then the MERGE into silver, then the quality rows.
//!
//! Exactly-once: the silver commit carries a `txn` action, app id `lakectl-silver-<table>`,
//! whose version is the last bronze version consumed; a unit starts after it, so a re-run is a
//! no-op and a crash re-does exactly the lost increment. The quarantine commit carries the
//! same app id, and a re-done increment skips rows from bronze versions the quarantine
//! already has. The MERGE only replaces a row with a record that is not older (by Kafka
//! timestamp), so re-applying an increment changes nothing.
//!
//! Where each part lives: [`increment`] (which bronze commits a unit reads, and the raw rows
//! quarantine keeps), [`parse`] (step 1), this module (steps 2–3 and the unit itself),
//! [`dedupe`] (step 4), [`expect`] (step 5), [`merge`] (step 6).
//!
//! Which keys silver already holds (step 4b, and the MERGE's choice between an append and a
//! MERGE) and which of its rows a `unique` expectation compares with are lookups
//! ([`lakehouse_core::lookup`]) that read only the files and row groups of silver that may hold
//! the unit's values, so a unit's cost does not grow with the table when keys arrive roughly in
//! order. Silver's files carry bloom filters on the key and `unique` columns for them.
//!
//! Where each part runs: with `[engine] url` naming a Ballista cluster, the SQL of steps 2 and
//! 5 runs there, the unit's rows (and the silver rows a `unique` expectation needs) travelling
//! inside the plan; parsing, the lookups, the per-key dedupe and the commits stay in this
//! process.

mod dedupe;
mod expect;
mod failing;
mod increment;
mod merge;
mod parse;

use dedupe::one_per_key;
use increment::{
    origin_at, plan_increment, read_increment, BronzeRows, Origin, Quarantined, Rebuild,
};

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::Field;
use async_trait::async_trait;
use chrono::Utc;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{col, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use lakehouse_core::config::{OnExistingKey, RecordFormat, SilverTable};
use lakehouse_core::lookup;
use lakehouse_core::quality::{Action, QualityLog, QualityReport, QualityScope};
use lakehouse_core::registry::SchemaRegistry;
use lakehouse_core::schema::ColumnType;
use lakehouse_core::storage::Upkeep;
use lakehouse_core::table_files::{self, UnitLimit};
use lakehouse_core::{Error, Job, Lake, Layer, Mode, Pipeline, Result, UnitReport};
use tokio_util::sync::CancellationToken;

use crate::catalog::Engine;
use crate::columns::{timestamp_type, with_column};
use crate::kind::JobKind;
use crate::stage;
use tracing::info;

/// The quality and quarantine rule of the cleaning SQL.
const CLEANING_RULE: &str = "cleaning_sql";

/// Lineage every cleaned row carries (`_silver_ts` is added at the end).
const RECORD_LINEAGE: [&str; 4] = ["_bronze_version", "_partition", "_offset", "_kafka_ts"];

/// The app id of the `txn` action in silver and quarantine commits.
pub fn txn_app_id(table: &str) -> String {
    format!("lakectl-silver-{table}")
}

/// The app id of the `txn` action in silver's commits whose version is the partition count of
/// the topic behind it, as bronze recorded it: a window over silver waits on every partition,
/// and learns how many there are here, not from the broker.
pub fn partitions_app_id(table: &str) -> String {
    format!("{}:partitions", txn_app_id(table))
}

/// Appends the lineage columns to the cleaning SQL's SELECT, so users write plain SQL and
/// every silver row still traces back to its bronze record.
fn with_lineage(plan: LogicalPlan, sql_origin: &str) -> Result<LogicalPlan> {
    let not_per_row = || {
        Error::Input(format!(
            "{sql_origin}: the cleaning SQL must be one SELECT … FROM source that keeps one row \
             per record (no GROUP BY, DISTINCT, JOIN or ORDER BY), so each row keeps its lineage"
        ))
    };
    let LogicalPlan::Projection(projection) = &plan else {
        return Err(not_per_row());
    };
    let mut exprs = projection.expr.clone();
    for name in RECORD_LINEAGE {
        if !projection.schema.has_column_with_unqualified_name(name) {
            exprs.push(col(name));
        }
    }
    LogicalPlanBuilder::from(projection.input.as_ref().clone())
        .project(exprs)
        .and_then(|b| b.build())
        .map_err(|_| not_per_row())
}

pub struct SilverJob {
    pipeline: String,
    table: String,
    settings: SilverTable,
    fields: Vec<(String, ColumnType)>,
    /// `format = "avro"`: where the records' schemas are.
    avro: Option<parse::AvroSource>,
    /// The cleaning SQL and where it came from (for error messages).
    sql: Option<(String, String)>,
    /// Where the SQL steps run: in process, or on the Ballista cluster `[engine] url` names.
    engine: Engine,
    lake: Lake,
    quality: QualityLog,
    upkeep: Upkeep,
    run_id: String,
    /// `--full-refresh`: the next unit starts from bronze version 0 and overwrites.
    refresh: bool,
    /// The refresh under way, until it reaches the bronze version it started at.
    rebuild: Option<Rebuild>,
    /// The bloom filters of silver's files that the key and `unique` lookups have read: each
    /// unit opens only the files a value passes.
    filters: Arc<lookup::FilterCache>,
    /// The topic behind bronze, and its partition count as bronze recorded it (with every
    /// commit, for the windows).
    topic: Option<String>,
    partitions: Option<i64>,
    /// Counts of the whole run, printed at its end.
    pub report: QualityReport,
}

impl SilverJob {
    pub fn new(pipeline: &Pipeline, table: &str, full_refresh: bool) -> Result<SilverJob> {
        let settings =
            crate::stage::settings(pipeline, "silver", &pipeline.silver, table).cloned()?;
        let sql = match (&settings.sql, &settings.sql_file) {
            (Some(sql), _) => Some((
                sql.clone(),
                format!("{} [silver.{table}] sql", pipeline.source_file.display()),
            )),
            (None, Some(file)) => {
                let path = pipeline.resolve_path(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    Error::io(format!("silver.{table}.sql_file {}", path.display()), e)
                })?;
                Some((text, path.display().to_string()))
            }
            (None, None) => None,
        };
        let lake = pipeline.lake.open()?;
        let topic = (pipeline.bronze.get(&settings.source)).map(|b| b.topic.clone());
        let avro = match settings.format {
            RecordFormat::Json => None,
            RecordFormat::Avro => {
                let url = pipeline.schema_registry.url.as_deref().ok_or_else(|| {
                    Error::Input(format!(
                        "silver.{table} reads Avro: set schema_registry.url"
                    ))
                })?;
                let topic = pipeline
                    .bronze
                    .get(&settings.source)
                    .map(|b| b.topic.as_str());
                Some(parse::AvroSource {
                    registry: SchemaRegistry::new(url)?,
                    subject: match (&settings.subject, topic) {
                        (Some(subject), _) => subject.clone(),
                        (None, Some(topic)) => format!("{topic}-value"),
                        (None, None) => settings.source.clone() + "-value",
                    },
                })
            }
        };
        Ok(SilverJob {
            avro,
            pipeline: pipeline.name.clone(),
            table: table.to_string(),
            fields: settings
                .schema
                .iter()
                .map(|(name, t)| (name.clone(), t.clone()))
                .collect(),
            settings,
            sql,
            engine: Engine::of(pipeline),
            quality: QualityLog::new(lake.clone()),
            lake,
            upkeep: pipeline.lake.upkeep(),
            run_id: String::new(),
            refresh: full_refresh,
            rebuild: None,
            topic,
            partitions: None,
            filters: Arc::default(),
            report: QualityReport::default(),
        })
    }

    /// Step 2: the cleaning SQL, with lineage kept; the records it cannot compute, by row.
    async fn clean(
        &self,
        ctx: &SessionContext,
        typed: RecordBatch,
    ) -> Result<(RecordBatch, Vec<failing::FailedRow>)> {
        let (batches, failed) =
            failing::without_failing_rows(&typed, |rows| self.run_cleaning(ctx, rows)).await?;
        let out_schema = match batches.first() {
            Some(b) => b.schema(),
            None => return Err(Error::Internal("DataFusion returned no batches".into())),
        };
        let missing = (self.settings.key.iter().map(|k| ("key", k)))
            .chain(
                self.settings
                    .partition_by
                    .iter()
                    .map(|c| ("partition_by", c)),
            )
            .find(|(_, c)| out_schema.index_of(c).is_err());
        if let Some((setting, k)) = missing {
            return Err(Error::Input(format!(
                "silver.{}.{setting}: column {k:?} is not in the cleaned rows (columns: {})",
                self.table,
                out_schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .filter(|n| !n.starts_with('_'))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok((concat_batches(&out_schema, &batches)?, failed))
    }

    /// The cleaning SQL over `typed` as the table `source`.
    async fn run_cleaning(
        &self,
        ctx: &SessionContext,
        typed: RecordBatch,
    ) -> Result<Vec<RecordBatch>> {
        let schema = typed.schema();
        ctx.deregister_table("source")?;
        ctx.register_table(
            "source",
            Arc::new(MemTable::try_new(schema.clone(), vec![vec![typed]])?),
        )?;
        let df = match &self.sql {
            Some((sql, origin)) => {
                let df = lakehouse_core::sql::read_only(ctx, sql)
                    .await
                    .map_err(|e| match e {
                        Error::DataFusion(e) => {
                            Error::Input(format!("{origin}: the cleaning SQL does not plan: {e}"))
                        }
                        refused => Error::Input(format!("{origin}: {refused}")),
                    })?;
                let plan = with_lineage(df.logical_plan().clone(), origin)?;
                DataFrame::new(ctx.state(), plan)
            }
            None => ctx.table("source").await?,
        };
        collect_or_empty(&self.engine, df).await
    }

    /// Steps 1–5 on one increment: the rows to merge, the records to quarantine and the counts.
    async fn transform(
        &self,
        bronze_rows: &BronzeRows,
        silver: &DeltaTable,
        report: &mut QualityReport,
    ) -> Result<(RecordBatch, Vec<Quarantined>)> {
        let ctx = self.engine.context().await?;
        let total = bronze_rows.rows();
        let (typed, mut quarantined) = match &self.avro {
            None => parse::records(bronze_rows, &self.fields)?,
            Some(avro) => parse::avro_records(bronze_rows, &avro.decoder(bronze_rows).await?)?,
        };
        report.count(
            "parse",
            Action::Quarantine.as_str(),
            total,
            quarantined.len() as u64,
        );

        let parsed = typed.num_rows() as u64;
        let (cleaned, uncomputable) = self.clean(&ctx, typed.clone()).await?;
        if self.sql.is_some() {
            let failed = uncomputable.len() as u64;
            report.count(CLEANING_RULE, Action::Quarantine.as_str(), parsed, failed);
            let removed = (parsed - failed).saturating_sub(cleaned.num_rows() as u64);
            report.count_step(
                CLEANING_RULE,
                Action::Drop.as_str(),
                parsed - failed,
                removed,
            );
        }
        quarantined.extend(uncomputable.into_iter().map(|(row, error)| Quarantined {
            origin: origin_at(&typed, row),
            rule: CLEANING_RULE.into(),
            error: format!("the cleaning SQL cannot be computed for this record: {error}"),
        }));

        let key_nulls = self.key_nulls(&cleaned)?;
        let null_keys: Vec<Origin> = (0..cleaned.num_rows())
            .filter(|&r| key_nulls.value(r))
            .map(|r| origin_at(&cleaned, r))
            .collect();
        report.count(
            "key_not_null",
            Action::Quarantine.as_str(),
            cleaned.num_rows() as u64,
            null_keys.len() as u64,
        );
        quarantined.extend(null_keys.into_iter().map(|origin| Quarantined {
            origin,
            rule: "key_not_null".into(),
            error: format!("key ({}) is NULL", self.settings.key.join(", ")),
        }));
        // Records that failed a check, for the quality score: the ones quarantined so far are
        // the parse failures and the NULL keys.
        let mut failed: HashSet<Origin> = quarantined.iter().map(|q| q.origin).collect();
        let keyed = filter_record_batch(&cleaned, &arrow::compute::not(&key_nulls)?)?;

        let keyed_rows = keyed.num_rows() as u64;
        let keep = self.settings.on_existing_key;
        let deduped = one_per_key(&keyed, &self.settings.key, keep)?;
        let dropped = keyed_rows - deduped.num_rows() as u64;
        let deduped = match keep {
            // An older version of a key is superseded, not bad.
            OnExistingKey::Replace => {
                report.count_step("dedupe_key", "keep latest", keyed_rows, dropped);
                deduped
            }
            // A second copy of an immutable event is a duplicate, and so is an event silver
            // already holds (step 4b): left out, counted, failing the score.
            OnExistingKey::Keep => {
                report.count("dedupe_key", "keep first", keyed_rows, dropped);
                if dropped > 0 {
                    let firsts: HashSet<Origin> = (0..deduped.num_rows())
                        .map(|r| origin_at(&deduped, r))
                        .collect();
                    failed.extend(
                        (0..keyed.num_rows())
                            .map(|r| origin_at(&keyed, r))
                            .filter(|o| !firsts.contains(o)),
                    );
                }
                let existing = self.existing_key_rows(silver, &deduped).await?;
                let mut new = vec![true; deduped.num_rows()];
                for &row in &existing {
                    new[row as usize] = false;
                    failed.insert(origin_at(&deduped, row as usize));
                }
                report.count(
                    "existing_key",
                    Action::Drop.as_str(),
                    deduped.num_rows() as u64,
                    existing.len() as u64,
                );
                filter_record_batch(&deduped, &BooleanArray::from(new))?
            }
        };

        let (rows, verdicts, uncomputable) = self.evaluate(&ctx, deduped.clone(), silver).await?;
        for (row, rule, error) in uncomputable {
            let origin = origin_at(&deduped, row);
            failed.insert(origin);
            report.count(&rule, Action::Quarantine.as_str(), 1, 1);
            quarantined.push(Quarantined {
                origin,
                rule,
                error: format!("the expectation's SQL cannot be computed for this record: {error}"),
            });
        }
        let n = rows.num_rows();
        let mut keep = vec![true; n];
        let mut first_quarantine: Vec<Option<usize>> = vec![None; n];
        let mut failed_rules: Vec<Vec<&str>> = vec![Vec::new(); n];
        let mut fail = None;
        for (i, (e, passed)) in self.settings.expect.iter().zip(&verdicts).enumerate() {
            report.count(
                &e.name,
                e.action.as_str(),
                n as u64,
                passed.false_count() as u64,
            );
            for row in (0..n).filter(|&r| !passed.value(r)) {
                failed_rules[row].push(&e.name);
                failed.insert(origin_at(&rows, row));
                match e.action {
                    Action::Warn => {}
                    Action::Drop => keep[row] = false,
                    Action::Quarantine => {
                        keep[row] = false;
                        first_quarantine[row].get_or_insert(i);
                    }
                    Action::Fail => {
                        fail.get_or_insert((i, row));
                    }
                }
            }
        }
        if let Some((i, row)) = fail {
            let e = &self.settings.expect[i];
            let origin = origin_at(&rows, row);
            return Err(Error::Input(format!(
                "silver.{}: expectation {:?} (action fail) failed for {} of {n} rows, the first \
                 from partition {} offset {}; nothing was committed",
                self.table,
                e.name,
                verdicts[i].false_count(),
                origin.partition,
                origin.offset
            )));
        }
        for (row, rule) in first_quarantine.iter().enumerate() {
            if let Some(i) = rule {
                quarantined.push(Quarantined {
                    origin: origin_at(&rows, row),
                    rule: self.settings.expect[*i].name.clone(),
                    error: format!("failed {}", failed_rules[row].join(", ")),
                });
            }
        }
        report.score(total, total - failed.len() as u64);
        let kept = filter_record_batch(&rows, &BooleanArray::from(keep))?;
        Ok((with_silver_ts(kept)?, quarantined))
    }

    fn key_nulls(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let mut mask = BooleanArray::from(vec![false; batch.num_rows()]);
        for k in &self.settings.key {
            let column = batch
                .column_by_name(k)
                .expect("key columns are checked after cleaning");
            mask = arrow::compute::or(&mask, &arrow::compute::is_null(column)?)?;
        }
        Ok(mask)
    }

    async fn process(&mut self) -> Result<UnitReport> {
        let Some(bronze) = self
            .lake
            .load_table(Layer::Bronze, &self.settings.source)
            .await?
        else {
            info!(source = %self.settings.source, "bronze table does not exist yet: nothing to do");
            return Ok(UnitReport {
                caught_up: true,
                ..Default::default()
            });
        };
        let latest = bronze.version().expect("loaded tables have a version") as i64;
        if let Some(topic) = &self.topic {
            let app_id = crate::bronze::partitions_app_id(topic);
            self.partitions = self.lake.txn_version(&bronze, &app_id).await?;
        }
        let silver = self.lake.table_or_new(Layer::Silver, &self.table).await?;
        let done = if self.refresh {
            -1
        } else {
            self.lake
                .txn_version(&silver, &txn_app_id(&self.table))
                .await?
                .unwrap_or(-1)
        };
        if done >= latest {
            return Ok(UnitReport {
                version_read: Some(done),
                caught_up: true,
                ..Default::default()
            });
        }
        if self.refresh {
            self.rebuild = Some(Rebuild {
                until: latest,
                files: table_files::live_paths(&bronze)?,
            });
        }
        let increment = plan_increment(
            &bronze,
            &self.settings.source,
            done,
            latest,
            UnitLimit {
                rows: self.settings.batch_rows as u64,
                bytes: self.settings.batch_bytes,
            },
            self.rebuild.as_ref(),
        )
        .await?;
        if self
            .rebuild
            .as_ref()
            .is_some_and(|r| increment.to >= r.until)
        {
            self.rebuild = None;
        }
        let bronze_rows = BronzeRows {
            batches: read_increment(&bronze, &increment).await?,
        };
        let rows_in = bronze_rows.rows();
        if rows_in == 0 {
            // Commits that added no rows (OPTIMIZE, empty writes): record progress alone; a
            // refresh empties the tables it rebuilds.
            let mode = if self.refresh {
                self.write_quarantine(&[], &bronze_rows, &increment, true)
                    .await?;
                SaveMode::Overwrite
            } else {
                SaveMode::Append
            };
            let silver = self.commit_no_rows(silver, increment.to, mode).await?;
            self.refresh = false;
            return Ok(UnitReport {
                version_read: Some(increment.to),
                version_written: silver.version().map(|v| v as i64),
                caught_up: increment.to == latest,
                ..Default::default()
            });
        }
        let mut report = QualityReport::default();
        let transformed = self.transform(&bronze_rows, &silver, &mut report).await;
        self.report.absorb(&report);
        let (rows, quarantined) = transformed?;
        let rows_out = rows.num_rows() as u64;
        let silver = if self.refresh {
            // Silver first: if the quarantine overwrite is then lost, the old quarantine rows
            // stay (nothing lost); the other order could lose them.
            let silver = self
                .commit(
                    silver,
                    rows,
                    increment.to,
                    SaveMode::Overwrite,
                    &self.settings.partition_by,
                )
                .await?;
            self.write_quarantine(&quarantined, &bronze_rows, &increment, true)
                .await?;
            self.refresh = false;
            silver
        } else {
            self.write_quarantine(&quarantined, &bronze_rows, &increment, false)
                .await?;
            lakehouse_core::runner::crash_point("silver:after_quarantine");
            self.merge(silver, rows, increment.to).await?
        };
        lakehouse_core::runner::crash_point("silver:after_merge");
        let scope = QualityScope {
            run_id: &self.run_id,
            pipeline: &self.pipeline,
            job: &self.name(),
            first_version: increment.after + 1,
            last_version: increment.to,
            at: Utc::now(),
        };
        self.quality.append(&scope, &report);
        Ok(UnitReport {
            rows_in,
            rows_out,
            version_read: Some(increment.to),
            version_written: silver.version().map(|v| v as i64),
            caught_up: increment.to == latest,
            ..Default::default()
        })
    }
}

/// `df`'s rows; an empty batch of its columns when there are none (DataFusion may return no
/// batch at all, and a step over rows that all left still has columns).
pub(super) async fn collect_or_empty(engine: &Engine, df: DataFrame) -> Result<Vec<RecordBatch>> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = engine.collect(df).await?;
    Ok(if batches.is_empty() {
        vec![RecordBatch::new_empty(schema)]
    } else {
        batches
    })
}

fn with_silver_ts(batch: RecordBatch) -> Result<RecordBatch> {
    let now = Utc::now().timestamp_micros();
    let stamps = TimestampMicrosecondArray::from(vec![now; batch.num_rows()]).with_timezone("UTC");
    with_column(
        &batch,
        Field::new("_silver_ts", timestamp_type(), false),
        Arc::new(stamps),
    )
}

#[async_trait]
impl Job for SilverJob {
    fn name(&self) -> String {
        format!("silver:{}", self.table)
    }

    fn begin(&mut self, run_id: &str) {
        self.run_id = run_id.to_string();
    }

    async fn run_unit(&mut self, _cancel: &CancellationToken) -> Result<UnitReport> {
        // A unit is bounded by batch_rows; cancellation is honoured between units.
        let unit = self.process().await?;
        self.quality.flush_if_due().await;
        Ok(unit)
    }

    async fn finish(&mut self) -> Result<()> {
        self.quality.flush().await;
        Ok(())
    }
}

/// `lakectl run silver`.
pub const KIND: JobKind = JobKind {
    name: "silver",
    summary: "bronze -> typed, cleaned, deduplicated Delta tables under <lake>/silver, with expectations, quarantine and a quality report",
    default_mode: Mode::Once,
    full_refresh: true,
    declared: |pipeline| pipeline.silver.keys().cloned().collect(),
    writes: |table| crate::kind::table_and_quarantine(Layer::Silver, table),
    run: |pipeline, tables, options| {
        Box::pin(run_tables(pipeline, tables, options.mode, options.full_refresh))
    },
};

/// `lakectl run silver [TABLE…]`: each table in turn on the shared runner; prints each run's
/// quality report, failed runs' too.
pub async fn run_tables(
    pipeline: &Pipeline,
    tables: &[String],
    mode: Mode,
    full_refresh: bool,
) -> Result<()> {
    let names = stage::table_names(pipeline, "silver", pipeline.silver.keys(), tables)?;
    let make = |name: &str| SilverJob::new(pipeline, name, full_refresh);
    stage::run_each(pipeline, &names, mode, make, |job, result| {
        stage::print_table_run(
            &job.name(),
            &job.report,
            result,
            "bronze rows",
            "rows merged",
            "bronze",
        )
    })
    .await
}
