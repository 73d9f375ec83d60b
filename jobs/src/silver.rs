//! `lakectl run silver`: a bronze table → the typed, cleaned, deduplicated
//! `<lake>/silver/<table>`, incrementally, with expectations and a quarantine table.
//!
//! One unit of work takes the next bronze commits after the last one consumed (up to
//! `batch_rows` rows) and goes through these steps, each counted in the quality report:
//! 1. **parse**: each record's JSON `value` into the declared schema; a record that cannot be
//!    typed goes to quarantine with the parse error.
//! 2. **cleaning SQL** over the view `source` (DataFusion). It must keep one row per record;
//!    the lineage columns are appended to its SELECT. Rows its WHERE removes are counted.
//! 3. **key**: a row whose key is NULL cannot be merged: quarantine.
//! 4. **dedupe**: one row per key, the latest by Kafka timestamp, then partition and offset.
//! 5. **expectations**, each with its action (warn, drop, quarantine, fail). A `fail`
//!    stops the unit before anything is written.
//! 6. **commit**: quarantine rows first, then the MERGE into silver, then the quality rows.
//!
//! Exactly-once: the silver commit carries a `txn` action, app id `lakectl-silver-<table>`,
//! whose version is the last bronze version consumed; a unit starts after it, so a re-run is a
//! no-op and a crash re-does exactly the lost increment. The quarantine commit carries the
//! same app id, and a re-done increment skips rows from bronze versions the quarantine
//! already has. The MERGE only replaces a row with a record that is not older (by Kafka
//! timestamp), so re-applying an increment changes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray, UInt32Array,
};
use arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use arrow::row::{Row, RowConverter, SortField};
use async_trait::async_trait;
use chrono::Utc;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{col, lit, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use lakehouse_core::config::{OnExistingKey, SilverTable};
use lakehouse_core::quality::{
    evaluation_sql, pass_column, quote_ident, Action, QualityLog, QualityReport, QualityScope,
};
use lakehouse_core::schema::{ColumnType, RecordParser};
use lakehouse_core::storage::{txn_version, write_with_txns};
use lakehouse_core::table_files::{self, DataFile};
use lakehouse_core::{Error, Job, Lake, Layer, Mode, Pipeline, Result, UnitReport};
use tokio_util::sync::CancellationToken;

use crate::stage;
use tracing::{debug, info, warn};

/// Bronze columns silver reads.
const BRONZE_COLUMNS: [&str; 4] = ["value", "_partition", "_offset", "_kafka_ts"];
/// Lineage every cleaned row carries (`_silver_ts` is added at the end).
const RECORD_LINEAGE: [&str; 4] = ["_bronze_version", "_partition", "_offset", "_kafka_ts"];

/// The app id of the `txn` action in silver and quarantine commits.
pub fn txn_app_id(table: &str) -> String {
    format!("lakectl-silver-{table}")
}

pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The quarantine table: the raw record, where it came from, and why it is here.
pub fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("_bronze_version", DataType::Int64, false),
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new("_kafka_ts", timestamp_type(), true),
        // Lossy only for values that are not UTF-8; bronze keeps the exact bytes.
        Field::new("raw_value", DataType::Utf8, true),
        Field::new("rule", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("_quarantined_at", timestamp_type(), false),
    ]))
}

/// The bronze commits one unit consumes: versions `after + 1 ..= to`.
struct Increment {
    after: i64,
    to: i64,
    files: Vec<DataFile>,
}

/// The next bronze commits after `after`, up to `batch_rows` rows (at least one commit).
async fn plan_increment(
    bronze: &DeltaTable,
    source: &str,
    after: i64,
    latest: i64,
    batch_rows: usize,
) -> Result<Increment> {
    let name = format!("bronze.{source}");
    let (files, to) =
        table_files::added_since(bronze, &name, after, latest, batch_rows as u64).await?;
    Ok(Increment { after, to, files })
}

/// The increment's bronze rows: [`BRONZE_COLUMNS`] plus `_bronze_version`, in commit order.
async fn read_increment(bronze: &DeltaTable, increment: &Increment) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    for (file, file_batches) in
        table_files::read(bronze, &increment.files, Some(&BRONZE_COLUMNS)).await?
    {
        for batch in file_batches {
            batches.push(with_version(batch, file.version)?);
        }
    }
    Ok(batches)
}

fn with_version(batch: RecordBatch, version: i64) -> Result<RecordBatch> {
    let versions = Arc::new(Int64Array::from(vec![version; batch.num_rows()]));
    with_column(
        &batch,
        Field::new("_bronze_version", DataType::Int64, false),
        versions,
    )
}

/// `batch` with one more column at the end.
pub(crate) fn with_column(
    batch: &RecordBatch,
    field: Field,
    column: ArrayRef,
) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns = batch.columns().to_vec();
    fields.push(field);
    columns.push(column);
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// One bronze record's lineage, the key to its raw value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Origin {
    partition: i32,
    offset: i64,
}

/// A record on its way to quarantine.
struct Quarantined {
    origin: Origin,
    rule: String,
    error: String,
}

/// The bronze rows of a unit.
struct BronzeRows {
    batches: Vec<RecordBatch>,
}

impl BronzeRows {
    /// Where each of `origins` is among the batches. Only units that quarantine something
    /// pay for this scan.
    fn locate(&self, origins: &[Origin]) -> HashMap<Origin, (usize, usize)> {
        let wanted: HashSet<Origin> = origins.iter().copied().collect();
        let mut found = HashMap::with_capacity(wanted.len());
        if wanted.is_empty() {
            return found;
        }
        for (b, batch) in self.batches.iter().enumerate() {
            let (partitions, offsets) = lineage_arrays(batch);
            for row in 0..batch.num_rows() {
                let origin = Origin {
                    partition: partitions.value(row),
                    offset: offsets.value(row),
                };
                if wanted.contains(&origin) {
                    found.insert(origin, (b, row));
                }
            }
        }
        found
    }

    fn rows(&self) -> u64 {
        self.batches.iter().map(|b| b.num_rows() as u64).sum()
    }

    /// Builds the quarantine batch for `records`, with their raw values and lineage.
    fn quarantine_batch(&self, records: &[Quarantined], run_id: &str) -> Result<RecordBatch> {
        let n = records.len();
        let origins: Vec<Origin> = records.iter().map(|q| q.origin).collect();
        let index = self.locate(&origins);
        let (mut versions, mut partitions, mut offsets, mut kafka_ts, mut raw) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for q in records {
            let (b, row) = index[&q.origin];
            let batch = &self.batches[b];
            let value = batch
                .column_by_name("value")
                .expect("bronze value")
                .as_binary::<i32>();
            let ts = batch
                .column_by_name("_kafka_ts")
                .expect("bronze _kafka_ts")
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            let version = batch
                .column_by_name("_bronze_version")
                .expect("added on read")
                .as_primitive::<Int64Type>();
            versions.push(version.value(row));
            partitions.push(q.origin.partition);
            offsets.push(q.origin.offset);
            kafka_ts.push(ts.is_valid(row).then(|| ts.value(row)));
            raw.push(
                value
                    .is_valid(row)
                    .then(|| String::from_utf8_lossy(value.value(row)).into_owned()),
            );
        }
        let now = Utc::now().timestamp_micros();
        Ok(RecordBatch::try_new(
            quarantine_schema(),
            vec![
                Arc::new(Int64Array::from(versions)),
                Arc::new(Int32Array::from(partitions)),
                Arc::new(Int64Array::from(offsets)),
                Arc::new(TimestampMicrosecondArray::from(kafka_ts).with_timezone("UTC")),
                Arc::new(StringArray::from(raw)),
                Arc::new(StringArray::from_iter_values(
                    records.iter().map(|q| &q.rule),
                )),
                Arc::new(StringArray::from_iter_values(
                    records.iter().map(|q| &q.error),
                )),
                Arc::new(StringArray::from(vec![run_id; n])),
                Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
            ],
        )?)
    }
}

fn lineage_arrays(batch: &RecordBatch) -> (&arrow::array::PrimitiveArray<Int32Type>, &Int64Array) {
    (
        batch
            .column_by_name("_partition")
            .expect("lineage column _partition")
            .as_primitive::<Int32Type>(),
        batch
            .column_by_name("_offset")
            .expect("lineage column _offset")
            .as_primitive::<Int64Type>(),
    )
}

fn origin_at(batch: &RecordBatch, row: usize) -> Origin {
    let (partitions, offsets) = lineage_arrays(batch);
    Origin {
        partition: partitions.value(row),
        offset: offsets.value(row),
    }
}

/// Step 4: one row per key: the latest record (`replace`: the newest Kafka timestamp, a missing
/// one counting as oldest, then the highest partition and offset) or the first (`keep`: the
/// reverse order). Rows keep their order. A hash map over
/// the encoded keys: DataFusion's `row_number() OVER (PARTITION BY key)` took 40 % of a unit,
/// as it walks each one-row partition on its own.
fn one_per_key(batch: &RecordBatch, key: &[String], keep: OnExistingKey) -> Result<RecordBatch> {
    let key_columns: Vec<ArrayRef> = key
        .iter()
        .map(|k| {
            batch
                .column_by_name(k)
                .cloned()
                .expect("key columns are checked after cleaning")
        })
        .collect();
    let converter = RowConverter::new(
        key_columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let keys = converter.convert_columns(&key_columns)?;
    let (partitions, offsets) = lineage_arrays(batch);
    let kafka_ts = batch
        .column_by_name("_kafka_ts")
        .expect("lineage column _kafka_ts")
        .as_primitive::<TimestampMicrosecondType>();
    let recency = |row: usize| {
        (
            kafka_ts.is_valid(row).then(|| kafka_ts.value(row)),
            partitions.value(row),
            offsets.value(row),
        )
    };
    let wins = |row: usize, best: usize| match keep {
        OnExistingKey::Replace => recency(row) > recency(best),
        OnExistingKey::Keep => recency(row) < recency(best),
    };
    let mut chosen: HashMap<Row<'_>, usize> = HashMap::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        chosen
            .entry(keys.row(row))
            .and_modify(|best| {
                if wins(row, *best) {
                    *best = row;
                }
            })
            .or_insert(row);
    }
    if chosen.len() == batch.num_rows() {
        return Ok(batch.clone());
    }
    let mut rows: Vec<u32> = chosen.into_values().map(|row| row as u32).collect();
    rows.sort_unstable();
    Ok(take_record_batch(batch, &UInt32Array::from(rows))?)
}

/// Step 1: types every record; the ones that cannot be typed are returned for quarantine.
fn parse(
    bronze: &BronzeRows,
    fields: &[(String, ColumnType)],
) -> Result<(RecordBatch, Vec<Quarantined>)> {
    if bronze.batches.is_empty() {
        return Err(Error::Internal("parse called without bronze rows".into()));
    }
    // JSON parsing is most of silver's CPU: one thread per core, each on a run of batches,
    // results joined in order.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = bronze.batches.len().div_ceil(threads);
    let parts: Vec<Result<(RecordBatch, Vec<Quarantined>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = bronze
            .batches
            .chunks(per_thread)
            .map(|batches| scope.spawn(move || parse_batches(batches, fields)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a parse thread panicked"))
            .collect()
    });
    let mut typed = Vec::with_capacity(parts.len());
    let mut bad = Vec::new();
    for part in parts {
        let (batch, part_bad) = part?;
        typed.push(batch);
        bad.extend(part_bad);
    }
    Ok((concat_batches(&typed[0].schema(), &typed)?, bad))
}

/// [`parse`] for a run of bronze batches: the typed rows with their lineage, and the records
/// that could not be typed.
fn parse_batches(
    batches: &[RecordBatch],
    fields: &[(String, ColumnType)],
) -> Result<(RecordBatch, Vec<Quarantined>)> {
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let mut parser = RecordParser::new(fields, rows);
    let mut kept: Vec<RecordBatch> = Vec::new();
    let mut bad = Vec::new();
    for batch in batches {
        let values: &BinaryArray = batch
            .column_by_name("value")
            .expect("bronze value")
            .as_binary();
        let mut ok = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let result = if values.is_null(row) {
                Err("the record has no value (a tombstone); deletes are not supported".to_string())
            } else {
                parser.push(values.value(row))
            };
            ok.push(result.is_ok());
            if let Err(error) = result {
                bad.push(Quarantined {
                    origin: origin_at(batch, row),
                    rule: "parse".into(),
                    error,
                });
            }
        }
        let indices = RECORD_LINEAGE
            .iter()
            .map(|c| batch.schema().index_of(c))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let lineage = batch.project(&indices)?;
        kept.push(filter_record_batch(&lineage, &BooleanArray::from(ok))?);
    }
    let lineage_schema = kept[0].schema();
    let lineage = concat_batches(&lineage_schema, &kept)?;
    let mut schema_fields = RecordParser::arrow_fields(fields);
    schema_fields.extend(lineage_schema.fields().iter().map(|f| f.as_ref().clone()));
    let mut columns = parser.finish();
    columns.extend(lineage.columns().iter().cloned());
    Ok((
        RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), columns)?,
        bad,
    ))
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
    /// The cleaning SQL and where it came from (for error messages).
    sql: Option<(String, String)>,
    lake: Lake,
    quality: QualityLog,
    checkpoint_interval: u64,
    run_id: String,
    /// `--full-refresh`: the next unit starts from bronze version 0 and overwrites.
    refresh: bool,
    /// Counts of the whole run, printed at its end.
    pub report: QualityReport,
}

impl SilverJob {
    pub fn new(pipeline: &Pipeline, table: &str, full_refresh: bool) -> Result<SilverJob> {
        let settings = pipeline.silver.get(table).cloned().ok_or_else(|| {
            Error::Input(format!(
                "no [silver.{table}] in {}",
                pipeline.source_file.display()
            ))
        })?;
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
        let lake = Lake::from_config(&pipeline.lake)?;
        Ok(SilverJob {
            pipeline: pipeline.name.clone(),
            table: table.to_string(),
            fields: settings
                .schema
                .iter()
                .map(|(name, t)| (name.clone(), *t))
                .collect(),
            settings,
            sql,
            quality: QualityLog::new(lake.clone()),
            lake,
            checkpoint_interval: pipeline.lake.checkpoint_interval,
            run_id: String::new(),
            refresh: full_refresh,
            report: QualityReport::default(),
        })
    }

    /// Step 2: the cleaning SQL, with lineage kept.
    async fn clean(&self, ctx: &SessionContext, typed: RecordBatch) -> Result<RecordBatch> {
        let schema = typed.schema();
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
        let batches = df.collect().await?;
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
        Ok(concat_batches(&out_schema, &batches)?)
    }

    /// Step 5: every expectation's pass flags, next to the rows they judge.
    async fn evaluate(
        &self,
        ctx: &SessionContext,
        rows: RecordBatch,
        silver: &DeltaTable,
    ) -> Result<(RecordBatch, Vec<BooleanArray>)> {
        let schema = rows.schema();
        let expectations = &self.settings.expect;
        if expectations.is_empty() {
            return Ok((rows, Vec::new()));
        }
        ctx.register_table(
            "rows",
            Arc::new(MemTable::try_new(schema.clone(), vec![vec![rows]])?),
        )?;
        let needs_target = expectations
            .iter()
            .any(|e| matches!(e.rule, lakehouse_core::quality::Rule::Unique { .. }));
        let target = if needs_target && silver.version().is_some() {
            ctx.register_table("target", silver.table_provider().await?)?;
            Some("target")
        } else {
            None
        };
        let sql = evaluation_sql(expectations, "rows", &self.settings.key, target);
        let batches = ctx
            .sql(&sql)
            .await
            .map_err(|e| self.expectation_error(e))?
            .collect()
            .await
            .map_err(|e| self.expectation_error(e))?;
        let all = match batches.first() {
            Some(b) => concat_batches(&b.schema(), &batches)?,
            None => return Err(Error::Internal("DataFusion returned no batches".into())),
        };
        let verdicts = (0..expectations.len())
            .map(|i| {
                all.column_by_name(&pass_column(i))
                    .expect("evaluation adds a pass column per expectation")
                    .as_boolean()
                    .clone()
            })
            .collect();
        let data: Vec<usize> = (0..schema.fields().len()).collect();
        Ok((all.project(&data)?, verdicts))
    }

    fn expectation_error(&self, e: datafusion::error::DataFusionError) -> Error {
        Error::Input(format!(
            "{}: [silver.{}] expectations do not evaluate on the cleaned rows: {e}",
            self.settings_origin(),
            self.table
        ))
    }

    fn settings_origin(&self) -> String {
        self.sql
            .as_ref()
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| "the pipeline file".into())
    }

    /// Steps 1–5 on one increment: the rows to merge, the records to quarantine and the counts.
    async fn transform(
        &self,
        bronze_rows: &BronzeRows,
        silver: &DeltaTable,
        report: &mut QualityReport,
    ) -> Result<(RecordBatch, Vec<Quarantined>)> {
        let ctx = lakehouse_core::sql::context();
        let total = bronze_rows.rows();
        let (typed, mut quarantined) = parse(bronze_rows, &self.fields)?;
        report.count(
            "parse",
            Action::Quarantine.as_str(),
            total,
            quarantined.len() as u64,
        );

        let parsed = typed.num_rows() as u64;
        let cleaned = self.clean(&ctx, typed).await?;
        if self.sql.is_some() {
            let removed = parsed.saturating_sub(cleaned.num_rows() as u64);
            report.count_step("cleaning_sql", Action::Drop.as_str(), parsed, removed);
        }

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
                let existing = self.existing_key_rows(silver, &deduped, None).await?;
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

        let (rows, verdicts) = self.evaluate(&ctx, deduped, silver).await?;
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

    /// Writes the quarantined records of this increment that a previous, interrupted attempt
    /// did not already write.
    async fn write_quarantine(
        &self,
        records: &[Quarantined],
        bronze_rows: &BronzeRows,
        increment: &Increment,
        overwrite: bool,
    ) -> Result<()> {
        let table = self
            .lake
            .table_or_new(Layer::Quarantine, &self.table)
            .await?;
        let already = if overwrite {
            None
        } else {
            txn_version(&table, &txn_app_id(&self.table)).await?
        };
        let batch = bronze_rows.quarantine_batch(records, &self.run_id)?;
        let batch = match already {
            Some(v) => {
                let versions = batch.column(0).as_primitive::<Int64Type>();
                let fresh = arrow::compute::kernels::cmp::gt(versions, &Int64Array::new_scalar(v))?;
                filter_record_batch(&batch, &fresh)?
            }
            None => batch,
        };
        // The first unit creates the table even when empty, so readers always find it.
        if batch.num_rows() == 0 && !overwrite && table.version().is_some() {
            return Ok(());
        }
        let mode = if overwrite {
            SaveMode::Overwrite
        } else {
            SaveMode::Append
        };
        self.commit(table, batch, increment.to, mode, &[]).await?;
        Ok(())
    }

    /// A write carrying this job's `txn` at `bronze_version`, creating the table if needed,
    /// partitioned by `partition_by` (silver's own setting; the quarantine is not partitioned).
    async fn commit(
        &self,
        table: DeltaTable,
        batch: RecordBatch,
        bronze_version: i64,
        mode: SaveMode,
        partition_by: &[String],
    ) -> Result<DeltaTable> {
        write_with_txns(
            table,
            vec![batch],
            mode,
            vec![(txn_app_id(&self.table), bronze_version)],
            partition_by,
            self.checkpoint_interval,
        )
        .await
    }

    fn commit_properties(&self, bronze_version: i64) -> CommitProperties {
        CommitProperties::default()
            .with_application_transaction(Transaction::new(txn_app_id(&self.table), bronze_version))
    }

    /// Step 6, silver part: MERGE by key; a row is replaced only by a record not older.
    async fn merge(
        &self,
        silver: DeltaTable,
        rows: RecordBatch,
        bronze_version: i64,
    ) -> Result<DeltaTable> {
        if silver.version().is_none()
            || rows.num_rows() == 0
            || self.settings.on_existing_key == OnExistingKey::Keep
            || self
                .existing_key_rows(&silver, &rows, Some(1))
                .await?
                .is_empty()
        {
            // Nothing to match (`keep` left out the keys silver holds): an append is the same
            // MERGE, without reading the table.
            return self
                .commit(
                    silver,
                    rows,
                    bronze_version,
                    SaveMode::Append,
                    &self.settings.partition_by,
                )
                .await;
        }
        let ctx = SessionContext::new();
        let columns: Vec<String> = rows
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let source = ctx.read_batch(rows)?;
        let side = |alias: &str, c: &str| col(datafusion::common::Column::new(Some(alias), c));
        let same_key = self
            .settings
            .key
            .iter()
            .map(|k| side("target", k).eq(side("source", k)))
            .reduce(|a, b| a.and(b))
            .expect("keys are checked to be non-empty");
        let not_older = datafusion::functions::expr_fn::coalesce(vec![
            side("source", "_kafka_ts").gt_eq(side("target", "_kafka_ts")),
            lit(true),
        ]);
        let (table, metrics) = silver
            .merge(source, same_key)
            .with_source_alias("source")
            .with_target_alias("target")
            .with_commit_properties(self.commit_properties(bronze_version))
            .when_matched_update(|update| {
                columns.iter().fold(update.predicate(not_older), |u, c| {
                    u.update(
                        datafusion::common::Column::new_unqualified(c),
                        side("source", c),
                    )
                })
            })?
            .when_not_matched_insert(|insert| {
                columns.iter().fold(insert, |i, c| {
                    i.set(
                        datafusion::common::Column::new_unqualified(c),
                        side("source", c),
                    )
                })
            })?
            .await?;
        debug!(
            inserted = metrics.num_target_rows_inserted,
            updated = metrics.num_target_rows_updated,
            "silver merge"
        );
        Ok(table)
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
        let silver = self.lake.table_or_new(Layer::Silver, &self.table).await?;
        let done = if self.refresh {
            -1
        } else {
            txn_version(&silver, &txn_app_id(&self.table))
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
        let increment = plan_increment(
            &bronze,
            &self.settings.source,
            done,
            latest,
            self.settings.batch_rows,
        )
        .await?;
        let bronze_rows = BronzeRows {
            batches: read_increment(&bronze, &increment).await?,
        };
        let rows_in = bronze_rows.rows();
        if rows_in == 0 {
            // Commits that added no rows (OPTIMIZE, empty writes): record progress alone.
            let silver = self.record_progress(silver, increment.to).await?;
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
        // The data is committed; a lost quality row is a warning, like a lost run record.
        if let Err(e) = self.quality.append(&scope, &report).await {
            warn!(error = %e, "could not append to the quality table");
        }
        Ok(UnitReport {
            rows_in,
            rows_out,
            version_read: Some(increment.to),
            version_written: silver.version().map(|v| v as i64),
            caught_up: increment.to == latest,
        })
    }

    /// The rows of `rows` whose key silver already holds (up to `limit` of them), by reading
    /// the table's key columns only.
    async fn existing_key_rows(
        &self,
        silver: &DeltaTable,
        rows: &RecordBatch,
        limit: Option<usize>,
    ) -> Result<Vec<u32>> {
        if silver.version().is_none() || rows.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let ctx = SessionContext::new();
        ctx.register_table("target", silver.table_provider().await?)?;
        let key_columns: Vec<usize> = self
            .settings
            .key
            .iter()
            .map(|k| rows.schema().index_of(k))
            .collect::<std::result::Result<_, _>>()?;
        let keys = with_column(
            &rows.project(&key_columns)?,
            Field::new("__row", DataType::UInt32, false),
            Arc::new(UInt32Array::from_iter_values(0..rows.num_rows() as u32)),
        )?;
        ctx.register_batch("incoming", keys)?;
        let on: Vec<String> = self
            .settings
            .key
            .iter()
            .map(|k| format!("t.{0} = i.{0}", quote_ident(k)))
            .collect();
        let sql = format!(
            // The small side first: the hash join builds its table from the left input.
            "SELECT DISTINCT i.__row FROM incoming i JOIN target t ON {}{}",
            on.join(" AND "),
            limit.map_or(String::new(), |n| format!(" LIMIT {n}"))
        );
        let found = ctx.sql(&sql).await?.collect().await?;
        Ok(found
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<arrow::datatypes::UInt32Type>()
                    .values()
                    .to_vec()
            })
            .collect())
    }

    /// Advances the `txn` version without data, for increments that added no rows.
    async fn record_progress(&self, silver: DeltaTable, bronze_version: i64) -> Result<DeltaTable> {
        if silver.version().is_none() {
            // No table and nothing to write: the next unit looks at these commits again.
            return Ok(silver);
        }
        let schema = silver.snapshot()?.snapshot().arrow_schema();
        self.commit(
            silver,
            RecordBatch::new_empty(schema),
            bronze_version,
            SaveMode::Append,
            &self.settings.partition_by,
        )
        .await
    }
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
        self.process().await
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A row: key, second key, partition, offset, Kafka timestamp.
    type TestRow<'a> = (&'a str, i64, i32, i64, Option<i64>);

    /// The rows as a batch of the lineage columns and keys; `v` numbers them.
    fn batch(rows: &[TestRow]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
            Field::new("_partition", DataType::Int32, false),
            Field::new("_offset", DataType::Int64, false),
            Field::new("_kafka_ts", timestamp_type(), true),
            Field::new("v", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter(rows.iter().map(|r| r.4))
                        .with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from_iter_values(0..rows.len() as i64)),
            ],
        )
        .unwrap()
    }

    fn kept(batch: &RecordBatch) -> Vec<i64> {
        let v = batch
            .column_by_name("v")
            .unwrap()
            .as_primitive::<Int64Type>();
        v.values().to_vec()
    }

    #[test]
    fn the_latest_record_of_each_key_wins() {
        let rows = batch(&[
            ("newer first", 0, 0, 9, Some(20)),
            ("newer first", 0, 0, 10, Some(10)),
            ("same time", 0, 1, 1, Some(5)),
            ("same time", 0, 0, 5, Some(5)),
            ("same partition", 0, 2, 3, Some(5)),
            ("same partition", 0, 2, 7, Some(5)),
            ("no timestamp", 0, 0, 50, None),
            ("no timestamp", 0, 0, 40, Some(1)),
            ("alone", 0, 0, 60, None),
        ]);
        let latest = one_per_key(&rows, &["k".into()], OnExistingKey::Replace).unwrap();
        assert_eq!(kept(&latest), vec![0, 2, 5, 7, 8]);
        // `keep`: the first record, by the same order read the other way.
        let first = one_per_key(&rows, &["k".into()], OnExistingKey::Keep).unwrap();
        assert_eq!(kept(&first), vec![1, 3, 4, 6, 8]);
    }

    #[test]
    fn every_key_column_counts() {
        let rows = batch(&[
            ("a", 1, 0, 1, Some(1)),
            ("a", 2, 0, 2, Some(1)),
            ("a", 1, 0, 3, Some(1)),
        ]);
        let by_both =
            one_per_key(&rows, &["k".into(), "n".into()], OnExistingKey::Replace).unwrap();
        assert_eq!(kept(&by_both), vec![1, 2]);
        let by_first = one_per_key(&rows, &["k".into()], OnExistingKey::Replace).unwrap();
        assert_eq!(kept(&by_first), vec![2]);
    }
}
