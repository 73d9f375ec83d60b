//! `lakectl run window`: event-time windows and sessions over a silver table's new rows →
//! `<lake>/window/<table>`, exactly once, with late rows kept in `quarantine.<table>`.
//!
//! A unit takes the source commits after the last one folded in (up to `batch_rows` rows):
//! 1. **order**: the new rows in arrival order — source version, Kafka partition, offset
//!    (silver's lineage columns);
//! 2. **filter**: rows the `filter` predicate rejects take no part (they still move the
//!    watermark: it follows the stream, not one window's share of it);
//! 3. **watermark**: each Kafka partition's, `watermark` behind the largest event time the
//!    partition has shown. A row counts in each of its windows not final by its partition's
//!    watermark when it arrives (the rule of Flink, Spark and Arroyo, judged per partition);
//!    a session row first closes its key's sessions final by it, then counts unless the
//!    session it joins or starts is final. A row late for every window it belongs to, and a
//!    row without an event time, go to quarantine; a row late for some of its hopping
//!    windows counts in the others. Windows are emitted when the slowest partition's
//!    watermark passes them; sessions a row closed, at the end of its unit;
//! 4. **assign**: the open state's rows and the new rows into the windows they count in
//!    (`assign.rs`, `open.rs`): tumbling and hopping windows aligned to the epoch, sessions
//!    per key. The open rows stay in memory in chunks (`open.rs`): a unit copies only the
//!    rows it emits, not the rows it keeps;
//! 5. **aggregate**: the `aggregates` SQL over each window's rows, for the windows this unit
//!    emits: in `append` mode those the watermark passed in this unit (final), in `update`
//!    mode those that got new rows. The SQL runs over slices of whole windows (or sessions),
//!    each copied out in its turn with only the columns the SQL reads (bounded memory).
//!    `update` windows run in process keep running aggregates instead (`running.rs`): a
//!    unit feeds them its new rows and emits the groups they touched;
//! 6. **commit**: quarantine, then the output (append, or MERGE on the window bounds and
//!    group keys); the state without the final windows' rows stays in memory for the next
//!    unit, and goes to the lake when its copy is due and when the run ends (`state.rs`).
//!
//! With `[engine] url` naming a Ballista cluster, the SQL of steps 2 and 5 runs there (the
//! rows travel inside the plan); the rest, and the commits, stay in this process.
//!
//! Every commit carries the `txn` `lakectl-window-<table>` = the last source version of the
//! unit. A process that dies leaves the quarantine and the output ahead of the state's copy
//! (by the units since it, or by half a unit when it died between two commits). The next
//! run replays those units from the copy, which gives the same rows, windows and late rows
//! whatever the units' bounds (a row is judged by its partition's watermark, which does not
//! depend on them), and writes only what is missing: a replayed unit ends at the quarantine's
//! or the output's version when it reaches one, and each of them skips a range it has.

mod assign;
mod open;
mod running;
mod state;

use std::future::IntoFuture;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt32Array,
};
use arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::logical_expr::{binary_expr, col, Operator};
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use lakehouse_core::config::{WindowOutput, WindowTable, WINDOW_BOUNDS};
use lakehouse_core::quality::{quote_ident, QualityLog, QualityReport, QualityScope};
use lakehouse_core::runner::crash_point;
use lakehouse_core::storage::{write_with_txns, Upkeep};
use lakehouse_core::table_files::UnitLimit;
use lakehouse_core::{table_files, Error, Job, Lake, Layer, Mode, Pipeline, Result, UnitReport};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::catalog::Engine;
use crate::columns::{quarantine_schema, timestamp_type, with_column};
use crate::kind::JobKind;
use crate::stage;
use assign::{Fixed, SessionRule, Watermarks};
use open::{Arrived, FinalSession, OpenRows};
use running::Running;
use state::{txn_app_id, State};

/// Silver's lineage columns: the arrival order, and what a quarantine row points back to.
const ORDER: [&str; 3] = ["_bronze_version", "_partition", "_offset"];
/// Marks the rows a unit brought, for `update` mode; never in the state or the output.
const NEW: &str = "__new";
/// The name the aggregates' SQL reads the window rows under.
const ROWS: &str = "window_rows";
const LATE_RULE: &str = "late";
/// Rows late for some of their (hopping) windows and counted in the others.
const PARTLY_LATE_RULE: &str = "late_for_some_windows";
/// Step 5 runs its SQL over slices of whole windows, each copied out when its turn comes,
/// of about this many rows: a row is copied into each of its windows (five times for a
/// 5-minute window sliding by 1 minute), and copying all at once held ~100 MB a unit.
const ROWS_PER_SLICE: usize = 512 * 1024;
/// ... and at most this many windows or sessions: DataFusion keeps a `count(DISTINCT)` of
/// strings in a set of its own per group, ~12 KiB when empty, and 40,000 sessions final in
/// one unit held ~430 MB.
const WINDOWS_PER_SLICE: usize = 2048;

fn micros(span: lakehouse_core::config::Span) -> i64 {
    span.0.as_micros() as i64
}

fn time_text(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map_or_else(|| micros.to_string(), |t| t.to_rfc3339())
}

enum Windows {
    Fixed(Fixed),
    Sessions { rule: SessionRule, key: Vec<String> },
}

pub struct WindowJob {
    table: String,
    settings: WindowTable,
    windows: Windows,
    /// Group keys: `group_by`, or a session's key.
    keys: Vec<String>,
    delay: i64,
    lake: Lake,
    /// Where steps 2 and 5 run: in process, or on the Ballista cluster `[engine] url` names.
    engine: Engine,
    /// Whether step 5 keeps running aggregates (`running.rs`): `update` windows in process,
    /// until their SQL turns out to be one the accumulators cannot follow.
    incremental: bool,
    kafka: lakehouse_core::config::KafkaConfig,
    /// The topic silver's rows came from (asked for its partition count only when silver
    /// did not record it), and the partition count once known.
    topic: Option<String>,
    partitions: Option<i32>,
    /// The state after the last unit (`state.rs`); `None` before the first, and after a
    /// unit that failed.
    state: Option<State>,
    /// The source version this process last caught up with: while the source stays there,
    /// a poll reads nothing else (this job is the only writer of its tables).
    caught_up_at: Option<i64>,
    pipeline: String,
    run_id: String,
    quality: QualityLog,
    upkeep: Upkeep,
    /// Counts of every unit of this run, for the summary.
    pub report: QualityReport,
}

/// One unit's source rows, split by step 3.
struct Arrivals {
    /// Rows the filter keeps.
    checked: u64,
    /// Those with an event time, in arrival order; each counts in its windows that were not
    /// final when it arrived.
    candidates: RecordBatch,
    /// Where each candidate is among `all`.
    candidate_rows: Vec<u32>,
    /// The watermark each candidate met when it arrived.
    arrived_at: Vec<Option<i64>>,
    /// Late rows and rows without an event time, with their rule and reason.
    quarantined: Vec<(u32, &'static str, String)>,
    /// All new rows, in arrival order (what quarantine rows index).
    all: RecordBatch,
}

impl WindowJob {
    pub fn new(pipeline: &Pipeline, table: &str) -> Result<WindowJob> {
        let settings =
            crate::stage::settings(pipeline, "window", &pipeline.window, table).cloned()?;
        let (windows, keys) = match (&settings.tumble, &settings.hop, &settings.session) {
            (Some(size), _, _) => (
                Windows::Fixed(Fixed {
                    size: micros(*size),
                    slide: micros(*size),
                }),
                settings.group_by.clone(),
            ),
            (_, Some(hop), _) => (
                Windows::Fixed(Fixed {
                    size: micros(hop.size),
                    slide: micros(hop.slide),
                }),
                settings.group_by.clone(),
            ),
            (_, _, Some(session)) => (
                Windows::Sessions {
                    rule: SessionRule {
                        gap: micros(session.gap),
                        max_duration: session.max_duration.map(micros),
                    },
                    key: session.key.clone(),
                },
                session.key.clone(),
            ),
            _ => {
                return Err(Error::Internal(
                    "window kinds are checked with the config".into(),
                ))
            }
        };
        let lake = pipeline.lake.open()?;
        let topic = (pipeline.silver.get(&settings.source))
            .and_then(|silver| pipeline.bronze.get(&silver.source))
            .map(|bronze| bronze.topic.clone());
        let engine = Engine::of(pipeline);
        let incremental = settings.output == WindowOutput::Update
            && matches!(windows, Windows::Fixed(_))
            && matches!(engine, Engine::InProcess);
        Ok(WindowJob {
            table: table.to_string(),
            delay: micros(settings.watermark),
            settings,
            windows,
            keys,
            quality: QualityLog::new(lake.clone()),
            lake,
            engine,
            incremental,
            kafka: pipeline.kafka.clone(),
            topic,
            partitions: None,
            state: None,
            caught_up_at: None,
            pipeline: pipeline.name.clone(),
            run_id: String::new(),
            upkeep: pipeline.lake.upkeep(),
            report: QualityReport::default(),
        })
    }

    /// The source columns a unit reads: all for `rows` output; else those the SQL and the
    /// settings name (a column whose name appears as a word in the SQL counts), and the
    /// lineage. Fewer columns are less memory, in the unit and in the state.
    fn used_columns(&self, schema: &Schema) -> Result<SchemaRef> {
        if self.settings.rows.is_some() {
            return Ok(Arc::new(schema.clone()));
        }
        let sql: Vec<String> = (self.settings.aggregates.values())
            .chain(&self.settings.filter)
            .map(|s| s.to_lowercase())
            .collect();
        let wanted: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| {
                let name = schema.field(i).name();
                ORDER.contains(&name.as_str())
                    || name == "_kafka_ts"
                    || *name == self.settings.time
                    || self.keys.contains(name)
                    || named_in(&sql, name)
            })
            .collect();
        Ok(Arc::new(schema.project(&wanted)?))
    }

    /// The columns of `rows` that step 5 reads: all for `rows` output; else the group keys,
    /// the new-row flag and the columns the aggregates name. A row is copied into each of
    /// its windows (five times for a 5-minute window sliding by 1 minute): the lineage and
    /// the event time the SQL does not read would be copied too.
    fn aggregate_inputs(&self, rows: &RecordBatch) -> Result<RecordBatch> {
        if self.settings.rows.is_some() {
            return Ok(rows.clone());
        }
        let sql: Vec<String> = (self.settings.aggregates.values())
            .map(|s| s.to_lowercase())
            .collect();
        let schema = rows.schema();
        let wanted: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| {
                let name = schema.field(i).name();
                name == NEW || self.keys.contains(name) || named_in(&sql, name)
            })
            .collect();
        Ok(rows.project(&wanted)?)
    }

    /// The partition count of the topic behind the source, as silver recorded it with the
    /// rows it wrote (from bronze's commits): the watermark waits for each partition. Only a
    /// silver table written before silver recorded it asks the broker.
    async fn partitions(&mut self, source: &DeltaTable) -> Result<i32> {
        if let Some(n) = self.partitions {
            return Ok(n);
        }
        let app_id = crate::silver::partitions_app_id(&self.settings.source);
        let n = match self.lake.txn_version(source, &app_id).await? {
            Some(n) => n as i32,
            None => match &self.topic {
                Some(topic) => lakehouse_core::kafka::partition_count(&self.kafka, topic).await?,
                None => {
                    return Err(self.setting_error(
                        "source",
                        format!(
                            "silver.{} does not record its topic's partition count yet (run \
                             silver once more)",
                            self.settings.source
                        ),
                    ))
                }
            },
        };
        self.partitions = Some(n);
        Ok(n)
    }

    fn setting_error(&self, key: &str, message: impl std::fmt::Display) -> Error {
        Error::Input(format!("window.{}.{key}: {message}", self.table))
    }

    /// One unit on the state kept from the last, or on the lake's copy when there is none:
    /// a unit that fails may leave its state half-way, so the next starts from the copy.
    async fn process(&mut self) -> Result<UnitReport> {
        let mut state = match self.state.take() {
            Some(state) => state,
            None => State::load(&self.lake, &self.table, self.delay).await?,
        };
        let unit = self.unit(&mut state).await?;
        self.state = Some(state);
        Ok(unit)
    }

    async fn unit(&mut self, state: &mut State) -> Result<UnitReport> {
        let name = format!("silver.{}", self.settings.source);
        let Some(source) = self
            .lake
            .load_table(Layer::Silver, &self.settings.source)
            .await?
        else {
            info!(source = %name, "the source table does not exist yet: nothing to do");
            return Ok(UnitReport {
                caught_up: true,
                ..Default::default()
            });
        };
        let latest = source.version().expect("loaded tables have a version") as i64;
        if self.caught_up_at == Some(latest) {
            return Ok(UnitReport {
                version_read: Some(latest),
                caught_up: true,
                ..Default::default()
            });
        }
        let source_schema = self.used_columns(&source.snapshot()?.snapshot().arrow_schema())?;
        let columns: Vec<&str> = (source_schema.fields().iter())
            .map(|f| f.name().as_str())
            .collect();
        let output = self.lake.table_or_new(Layer::Window, &self.table).await?;
        let app_id = txn_app_id(&self.table);
        let output_at = self.lake.txn_version(&output, &app_id).await?.unwrap_or(-1);
        let quarantine_at = match self.lake.load_table(Layer::Quarantine, &self.table).await? {
            Some(quarantine) => self
                .lake
                .txn_version(&quarantine, &app_id)
                .await?
                .unwrap_or(-1),
            None => -1,
        };
        // Units the quarantine or the output hold and the state does not: the process
        // stopped before the state's copy was due, or between a unit's commits. They are
        // replayed from the state up to each of those versions in turn, so that a replayed
        // unit ends where one of the first run did: each commit skips whole units it holds.
        let replay_to = [quarantine_at, output_at]
            .into_iter()
            .filter(|&v| v > state.version)
            .min();
        if replay_to.is_none() && state.version >= latest {
            self.caught_up_at = Some(latest);
            return Ok(UnitReport {
                version_read: Some(state.version),
                caught_up: true,
                ..Default::default()
            });
        }
        if let Some(version) = replay_to {
            info!(window = %self.table, from = state.version, to = version, "replaying units the quarantine or output hold");
        }
        let limit = UnitLimit {
            rows: self.settings.batch_rows as u64,
            bytes: self.settings.batch_bytes,
        };
        let (files, to) = table_files::appended_since(
            &source,
            &name,
            state.version,
            replay_to.unwrap_or(latest),
            limit,
        )
        .await?;
        let mut batches = Vec::new();
        for (_, file_batches) in table_files::read(&source, &files, Some(&columns)).await? {
            batches.extend(file_batches);
        }
        let new_rows = in_arrival_order(concat_batches(&source_schema, &batches)?)?;
        let rows_in = new_rows.num_rows() as u64;

        let mut report = QualityReport::default();
        let mut watermarks = state.watermarks.clone();
        let watermark_before = watermarks.floor;
        let partitions = self.partitions(&source).await?;
        let mut arrivals = self.arrivals(new_rows, &mut watermarks, partitions).await?;
        let watermark = watermarks.floor;
        let open = self.open_rows(state, &source_schema)?;
        let new_times = self.times_of(&arrivals.candidates)?;
        let arrived = (open.arrive(
            arrivals.candidates.clone(),
            new_times.clone(),
            &arrivals.arrived_at,
        ))
        .map_err(|e| self.columns_changed(e))?;
        let new_from = arrived.first;
        let finals = self.judge(&mut arrivals, arrived, &new_times, &mut report);
        let out = match self
            .aggregate_running(
                state,
                new_from,
                &arrivals.arrived_at,
                watermark_before,
                watermark,
            )
            .await?
        {
            Some(out) => out,
            None => {
                let open = state.open.as_mut().expect("indexed above");
                let emitting = self.assign(
                    open,
                    new_from,
                    &arrivals.arrived_at,
                    finals,
                    watermark_before,
                    watermark,
                )?;
                self.aggregate(emitting).await?
            }
        };
        let open = state.open.as_mut().expect("indexed above");
        open.compact_if_due()?;
        let state_rows = open.live_len();
        let rows_out: u64 = out.iter().map(|b| b.num_rows() as u64).sum();

        self.write_quarantine(&arrivals, to).await?;
        let written = if output_at >= to || rows_out == 0 {
            None
        } else {
            let written = self.write_output(output, out, to).await?;
            crash_point("window:after_output");
            Some(written)
        };
        state.advance(to, watermarks, rows_in);
        if state.due(self.settings.batch_rows as u64) {
            state.save(self.upkeep).await?;
        }
        lakehouse_core::metrics::window_state(&self.name(), watermark, state_rows);
        debug!(window = %self.table, to, rows_in, rows_out, state_rows, watermark = ?watermark.map(time_text), "window unit");
        if replay_to.is_some() {
            // A replayed unit: its rows were counted when it first ran.
            return Ok(UnitReport {
                rows_in,
                version_read: Some(to),
                caught_up: to == latest,
                ..Default::default()
            });
        }
        self.report.absorb(&report);
        let scope = QualityScope {
            run_id: &self.run_id,
            pipeline: &self.pipeline,
            job: &self.name(),
            first_version: first_version(&files, to),
            last_version: to,
            at: Utc::now(),
        };
        self.quality.append(&scope, &report);
        Ok(UnitReport {
            rows_in,
            rows_out,
            version_read: Some(to),
            version_written: written.and_then(|t| t.version()).map(|v| v as i64),
            caught_up: to == latest,
            ..Default::default()
        })
    }

    /// The state's open rows, indexed when this process's first unit meets them.
    fn open_rows<'s>(&self, state: &'s mut State, schema: &SchemaRef) -> Result<&'s mut OpenRows> {
        if state.open.is_none() {
            let mut open = OpenRows::new(schema.clone(), &self.windows)?;
            for rows in std::mem::take(&mut state.loaded) {
                let times = self.times_of(&rows)?;
                open.push(rows, times)
                    .map_err(|e| self.columns_changed(e))?;
            }
            state.open = Some(open);
        }
        Ok(state.open.as_mut().expect("set above"))
    }

    fn columns_changed(&self, e: Error) -> Error {
        let source = &self.settings.source;
        self.setting_error(
            "source",
            format!("silver.{source} changed its columns under open windows: {e}"),
        )
    }

    /// The event times of rows that have one (on-time rows, open rows).
    fn times_of(&self, rows: &RecordBatch) -> Result<Vec<i64>> {
        Ok((self.event_times(rows)?.into_iter())
            .map(|t| t.expect("rows without an event time are quarantined"))
            .collect())
    }

    /// Steps 2 and 3: the filter, then the watermark each row met (the rows before it made
    /// it). Rows without an event time go to quarantine; the others are candidates.
    async fn arrivals(
        &self,
        rows: RecordBatch,
        watermarks: &mut Watermarks,
        partitions: i32,
    ) -> Result<Arrivals> {
        let counts = self.filter(&rows).await?;
        let times = self.event_times(&rows)?;
        let partition = self
            .column(&rows, "source", ORDER[1])?
            .as_primitive::<arrow::datatypes::Int32Type>()
            .values()
            .to_vec();
        let met = watermarks.arrive(&times, &partition, partitions);
        let (mut candidates, mut arrived_at, mut quarantined) =
            (Vec::new(), Vec::new(), Vec::new());
        let time = &self.settings.time;
        for (i, (t, met)) in times.iter().zip(met).enumerate() {
            match (counts[i], t) {
                (false, _) => {}
                (true, None) => quarantined.push((
                    i as u32,
                    "not_null",
                    format!("{time} is NULL: the row has no event time"),
                )),
                (true, Some(_)) => {
                    candidates.push(i as u32);
                    arrived_at.push(met);
                }
            }
        }
        Ok(Arrivals {
            checked: counts.iter().filter(|c| **c).count() as u64,
            candidates: take_record_batch(&rows, &UInt32Array::from(candidates.clone()))?,
            candidate_rows: candidates,
            arrived_at,
            quarantined,
            all: rows,
        })
    }

    /// Step 3, the rest: the candidates late for every window they belong to go to
    /// quarantine, with those windows and the watermark they were final by; both kinds of
    /// lateness are counted. Returns the sessions that rows' watermarks closed.
    fn judge(
        &self,
        arrivals: &mut Arrivals,
        arrived: Arrived,
        times: &[i64],
        report: &mut QualityReport,
    ) -> Vec<FinalSession> {
        let time = &self.settings.time;
        let nulls = arrivals.quarantined.len() as u64;
        for late in &arrived.late {
            let windows: Vec<String> = (late.windows.iter())
                .map(|&(start, end)| format!("[{}, {})", time_text(start), time_text(end)))
                .collect();
            let what = match (&self.windows, windows.len()) {
                (Windows::Sessions { .. }, _) => "the session it would join or start",
                (Windows::Fixed(_), 1) => "its window",
                (Windows::Fixed(_), _) => "every window it belongs to",
            };
            arrivals.quarantined.push((
                arrivals.candidate_rows[late.row],
                LATE_RULE,
                format!(
                    "{time} {} arrived after {what} was final: {} by the watermark {} of its \
                     Kafka partition ({} behind the largest event time the partition had shown)",
                    time_text(times[late.row]),
                    windows.join(", "),
                    time_text(late.watermark),
                    humantime_micros(self.delay)
                ),
            ));
        }
        if arrivals.checked > 0 {
            report.count(
                &format!("not_null({time})"),
                "quarantine",
                arrivals.checked,
                nulls,
            );
            let timed = arrivals.checked - nulls;
            report.count(LATE_RULE, "quarantine", timed, arrived.late.len() as u64);
            if matches!(&self.windows, Windows::Fixed(f) if f.slide != f.size) {
                report.count(PARTLY_LATE_RULE, "warn", timed, arrived.partly_late);
            }
        }
        arrived.finals
    }

    /// Which rows the `filter` keeps (all without one).
    async fn filter(&self, rows: &RecordBatch) -> Result<Vec<bool>> {
        let Some(predicate) = &self.settings.filter else {
            return Ok(vec![true; rows.num_rows()]);
        };
        let ctx = self.engine.context().await?;
        let numbered = with_column(
            rows,
            Field::new("__row", DataType::UInt32, false),
            Arc::new(UInt32Array::from_iter_values(0..rows.num_rows() as u32)),
        )?;
        ctx.register_batch(ROWS, numbered)?;
        let sql = format!("SELECT __row FROM {ROWS} WHERE {predicate}");
        let invalid = |e: &dyn std::fmt::Display| self.setting_error("filter", e);
        let df = lakehouse_core::sql::read_only(&ctx, &sql)
            .await
            .map_err(|e| invalid(&e))?;
        let kept = self.collect(df, invalid).await?;
        let mut keep = vec![false; rows.num_rows()];
        for batch in &kept {
            for row in batch
                .column(0)
                .as_primitive::<arrow::datatypes::UInt32Type>()
                .values()
            {
                keep[*row as usize] = true;
            }
        }
        Ok(keep)
    }

    /// The event-time column as microseconds since the epoch.
    fn event_times(&self, rows: &RecordBatch) -> Result<Vec<Option<i64>>> {
        let time = &self.settings.time;
        let column = rows.column_by_name(time).ok_or_else(|| {
            self.setting_error(
                "time",
                format!(
                    "{time:?} is not a column of silver.{}",
                    self.settings.source
                ),
            )
        })?;
        let micros =
            arrow::compute::cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None))
                .map_err(|e| {
                    self.setting_error(
                        "time",
                        format!("{time:?} is a {}, not a timestamp: {e}", column.data_type()),
                    )
                })?;
        Ok(micros
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect())
    }

    /// Step 4: the rows of the windows this unit emits, with their bounds and the new-row
    /// flag (rows from `new_from` on are the unit's, each counting only in its windows not
    /// final by the watermark it met, `arrived_at`); the rows of windows now final leave
    /// `rows`. Only the emitting rows are copied. `closed`: sessions rows' watermarks closed
    /// during the unit.
    fn assign(
        &self,
        rows: &mut OpenRows,
        new_from: usize,
        arrived_at: &[Option<i64>],
        closed: Vec<FinalSession>,
        watermark_before: Option<i64>,
        watermark: Option<i64>,
    ) -> Result<Emitting> {
        let final_by = |end: i64| watermark.is_some_and(|w| end <= w);
        let counts = &counts_in(new_from, arrived_at, watermark_before);
        match &self.windows {
            Windows::Fixed(windows) => {
                let append = self.settings.output == WindowOutput::Append;
                // `update`: a window without new rows keeps the row it was last written with,
                // so only the windows this unit's rows count in are aggregated again (those
                // waiting for the watermark hold the most rows and get none).
                let mut touched: Vec<i64> = Vec::new(); // ends; a few, searched per row
                if !append {
                    touched.extend(rows.live_from(new_from).flat_map(|i| {
                        (windows.starts(rows.time(i)))
                            .map(|start| start + windows.size)
                            .filter(move |&end| counts(i as u32, end))
                    }));
                    touched.sort_unstable();
                    touched.dedup();
                }
                // The rows of the windows emitted: those the watermark passed in this unit
                // (windows that ended by the last unit's were emitted final then), or those
                // the new rows count in.
                let times = if append {
                    watermark.and_then(|w| windows.times_ending_in(watermark_before, w))
                } else {
                    (touched.first().zip(touched.last()))
                        .map(|(first, last)| first - windows.size..*last)
                };
                let candidates = times.map_or_else(Vec::new, |times| rows.rows_in(times));
                let expanded = assign::expand(candidates, *windows, |row, end| {
                    counts(row, end)
                        && if append {
                            final_by(end)
                        } else {
                            touched.binary_search(&end).is_ok()
                        }
                });
                let emitting = self.emitting(rows, new_from, expanded)?;
                rows.remove_final_windows(watermark);
                Ok(emitting)
            }
            Windows::Sessions { .. } => {
                let mut sessions = closed;
                if let Some(w) = watermark {
                    sessions.extend(rows.take_final_sessions(w));
                }
                sessions.sort_by(|a, b| (&a.key, a.start).cmp(&(&b.key, b.start)));
                let mut grouped = assign::Grouped::default();
                for session in sessions {
                    grouped.push(session.rows, session.start, session.end);
                }
                self.emitting(rows, new_from, grouped)
            }
        }
    }

    /// The emitting rows of `grouped` (indices into `rows`): only the rows some window holds
    /// are copied out, with the new-row flag and the columns step 5 reads.
    fn emitting(
        &self,
        rows: &OpenRows,
        new_from: usize,
        mut grouped: assign::Grouped,
    ) -> Result<Emitting> {
        // The rows some window holds, in row order; each window's rows become their places
        // among them.
        let mut used = grouped.rows.clone();
        used.sort_unstable();
        used.dedup();
        for row in &mut grouped.rows {
            *row = used.binary_search(row).expect("a used row") as u32;
        }
        let new: BooleanArray = used.iter().map(|&i| Some(i as usize >= new_from)).collect();
        let picked = rows.take(used.iter().map(|&i| i as usize))?;
        Ok(Emitting {
            rows: self.aggregate_inputs(&with_flag(&picked, &new)?)?,
            grouped,
        })
    }

    fn column<'b>(&self, batch: &'b RecordBatch, key: &str, name: &str) -> Result<&'b ArrayRef> {
        batch.column_by_name(name).ok_or_else(|| {
            self.setting_error(
                key,
                format!(
                    "{name:?} is not a column of silver.{}",
                    self.settings.source
                ),
            )
        })
    }

    /// Step 5: one row per emitted window and group: bounds, keys, then the aggregates.
    async fn aggregate(&self, emitting: Emitting) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for windows in emitting.grouped.runs(ROWS_PER_SLICE, WINDOWS_PER_SLICE) {
            out.extend(self.aggregate_slice(emitting.slice(windows)?).await?);
        }
        Ok(out)
    }

    /// Step 5 over one slice of the emitting rows (whole windows or sessions).
    async fn aggregate_slice(&self, rows: RecordBatch) -> Result<Vec<RecordBatch>> {
        if rows.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let ctx = self.engine.context().await?;
        let (section, sql) = match &self.settings.rows {
            Some(extra) => {
                let flag = rows.schema().index_of(NEW)?;
                let without_flag: Vec<usize> =
                    (0..rows.num_columns()).filter(|&i| i != flag).collect();
                ctx.register_batch(ROWS, rows.project(&without_flag)?)?;
                let time = quote_ident(&self.settings.time);
                (
                    "rows",
                    format!(
                        "SELECT *, {} FROM {ROWS} ORDER BY {}, {time}",
                        select_list(extra),
                        self.group_columns()
                    ),
                )
            }
            None => {
                ctx.register_batch(ROWS, rows)?;
                let having = match self.settings.output {
                    WindowOutput::Append => String::new(),
                    WindowOutput::Update => format!(" HAVING bool_or({NEW})"),
                };
                ("aggregates", self.aggregates_sql(&having))
            }
        };
        let invalid = |e: &dyn std::fmt::Display| self.setting_error(section, e);
        let df = lakehouse_core::sql::read_only(&ctx, &sql)
            .await
            .map_err(|e| invalid(&e))?;
        if let Some(c) = (self.settings.partition_by.iter())
            .find(|c| df.schema().as_arrow().index_of(c).is_err())
        {
            return Err(
                self.setting_error("partition_by", format!("column {c:?} is not in the output"))
            );
        }
        self.collect(df, invalid).await
    }

    /// The `aggregates` SQL over the window rows: one row per window and group (`having`
    /// may narrow them), ordered by window and group.
    fn aggregates_sql(&self, having: &str) -> String {
        format!(
            "SELECT {group}, {} FROM {ROWS} GROUP BY {group}{having} ORDER BY {group}",
            select_list(&self.settings.aggregates),
            group = self.group_columns(),
        )
    }

    /// The window bounds and the group keys, quoted, comma-separated.
    fn group_columns(&self) -> String {
        (WINDOW_BOUNDS.iter().map(|c| c.to_string()))
            .chain(self.keys.iter().cloned())
            .map(|c| quote_ident(&c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Steps 4 and 5 of an `update` window with running aggregates (`running.rs`): the new
    /// rows go into their windows' accumulators, the groups they touched are emitted, and
    /// final windows leave the accumulators and the open rows. `None` for a window that
    /// aggregates with SQL (step 5).
    async fn aggregate_running(
        &mut self,
        state: &mut State,
        new_from: usize,
        arrived_at: &[Option<i64>],
        watermark_before: Option<i64>,
        watermark: Option<i64>,
    ) -> Result<Option<Vec<RecordBatch>>> {
        let (true, Windows::Fixed(windows)) = (self.incremental, &self.windows) else {
            return Ok(None);
        };
        let windows = *windows;
        let open = state.open.as_mut().expect("indexed by open_rows");
        if state.running.is_none() {
            let schema = self
                .emitting(open, new_from, assign::Grouped::default())?
                .slice(0..0)?
                .schema();
            let sql = self.aggregates_sql("");
            let planned = Running::plan(&sql, ROWS, schema, WINDOW_BOUNDS.len() + self.keys.len())
                .await
                .map_err(|e| match e {
                    Error::DataFusion(e) => self.setting_error("aggregates", e),
                    other => other,
                })?;
            let Some(mut running) = planned else {
                info!(window = %self.table, "the aggregates are not ones running accumulators follow: each unit aggregates its windows' rows with SQL");
                self.incremental = false;
                return Ok(None);
            };
            // The open rows of the last process (or none): counted, not emitted again.
            let old = open.live().filter(|&i| i < new_from).collect::<Vec<_>>();
            let counts = counts_in(new_from, &[], watermark_before);
            self.feed(&mut running, open, old, new_from, windows, counts, false)
                .await?;
            state.running = Some(running);
        }
        let running = state.running.as_mut().expect("made above");
        let new = open.live_from(new_from).collect::<Vec<_>>();
        let counts = counts_in(new_from, arrived_at, watermark_before);
        self.feed(running, open, new, new_from, windows, counts, true)
            .await?;
        let out = running.emit(watermark).await?;
        open.remove_final_windows(watermark);
        Ok(Some(out))
    }

    /// `rows` of `open` into the accumulators of the windows they `counts` in, a slice of
    /// whole windows at a time.
    #[allow(clippy::too_many_arguments)]
    async fn feed(
        &self,
        running: &mut Running,
        open: &OpenRows,
        rows: Vec<usize>,
        new_from: usize,
        windows: Fixed,
        counts: impl Fn(u32, i64) -> bool,
        touched: bool,
    ) -> Result<()> {
        let rows = rows.into_iter().map(|i| (i as u32, open.time(i)));
        let grouped = assign::expand(rows, windows, counts);
        let emitting = self.emitting(open, new_from, grouped)?;
        for windows in emitting.grouped.runs(ROWS_PER_SLICE, WINDOWS_PER_SLICE) {
            running.update(emitting.slice(windows)?, touched).await?;
        }
        Ok(())
    }

    /// Runs a step's SQL on the engine; an error of the SQL itself is the setting's.
    async fn collect(
        &self,
        df: datafusion::dataframe::DataFrame,
        invalid: impl Fn(&dyn std::fmt::Display) -> Error,
    ) -> Result<Vec<RecordBatch>> {
        self.engine.collect(df).await.map_err(|e| match e {
            Error::DataFusion(e) => invalid(&e),
            other => other,
        })
    }

    /// Step 6, first part: late and bad rows, once per source range.
    async fn write_quarantine(&self, arrivals: &Arrivals, to: i64) -> Result<()> {
        if arrivals.quarantined.is_empty() {
            return Ok(());
        }
        let table = self
            .lake
            .table_or_new(Layer::Quarantine, &self.table)
            .await?;
        let app_id = txn_app_id(&self.table);
        if self
            .lake
            .txn_version(&table, &app_id)
            .await?
            .is_some_and(|v| v >= to)
        {
            return Ok(());
        }
        let batch = quarantine_batch(&arrivals.all, &arrivals.quarantined, &self.run_id)?;
        write_with_txns(
            table,
            vec![batch],
            SaveMode::Append,
            vec![(app_id, to)],
            &[],
            self.upkeep,
            None,
        )
        .await?;
        crash_point("window:after_quarantine");
        Ok(())
    }

    /// Step 6, output: appended, or merged on the window bounds and group keys (`update`).
    async fn write_output(
        &self,
        output: DeltaTable,
        rows: Vec<RecordBatch>,
        to: i64,
    ) -> Result<DeltaTable> {
        let txn = vec![(txn_app_id(&self.table), to)];
        if self.settings.output == WindowOutput::Append || output.version().is_none() {
            return write_with_txns(
                output,
                rows,
                SaveMode::Append,
                txn,
                &self.settings.partition_by,
                self.upkeep,
                None,
            )
            .await;
        }
        let declared = output.snapshot()?.snapshot().arrow_schema();
        let rows = (rows.into_iter())
            .map(|b| lakehouse_core::delta_types::as_delta_types(b, Some(&declared)))
            .collect::<Result<Vec<_>>>()?;
        let ctx = lakehouse_core::sql::context();
        let schema = rows[0].schema();
        let source = ctx.read_batches(rows)?;
        let side = |alias: &str, c: &str| col(datafusion::common::Column::new(Some(alias), c));
        let same_window = WINDOW_BOUNDS
            .iter()
            .map(|c| c.to_string())
            .chain(self.keys.iter().cloned())
            .map(|k| {
                binary_expr(
                    side("target", &k),
                    Operator::IsNotDistinctFrom,
                    side("source", &k),
                )
            })
            .reduce(|a, b| a.and(b))
            .expect("windows have bounds");
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let unqualified = |c: &str| datafusion::common::Column::new_unqualified(c);
        let merge = output
            .merge(source, same_window)
            .with_source_alias("source")
            .with_target_alias("target")
            .with_commit_properties(
                deltalake::kernel::transaction::CommitProperties::default()
                    .with_application_transaction(deltalake::kernel::Transaction::new(
                        txn_app_id(&self.table),
                        to,
                    )),
            )
            .when_matched_update(|update| {
                columns
                    .iter()
                    .fold(update, |u, c| u.update(unqualified(c), side("source", c)))
            })?
            .when_not_matched_insert(|insert| {
                columns
                    .iter()
                    .fold(insert, |i, c| i.set(unqualified(c), side("source", c)))
            })?;
        let (table, _) = lakehouse_core::metrics::timed_commit(merge.into_future()).await?;
        Ok(table)
    }
}

/// `name = sql` settings as a SELECT list: `sql AS name, …`.
fn select_list(exprs: &indexmap::IndexMap<String, String>) -> String {
    (exprs.iter())
        .map(|(name, sql)| format!("{sql} AS {}", quote_ident(name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether row `row` of the open rows counts in the window ending at `end`: a window final
/// by the last unit's watermark is done, and a unit's row (from `new_from` on) counts only
/// in the windows not final by the watermark it met (`arrived_at`, by place among them).
fn counts_in(
    new_from: usize,
    arrived_at: &[Option<i64>],
    watermark_before: Option<i64>,
) -> impl Fn(u32, i64) -> bool + '_ {
    move |row, end| {
        let met = (row as usize)
            .checked_sub(new_from)
            .and_then(|k| arrived_at.get(k).copied().flatten());
        watermark_before.max(met).is_none_or(|w| end > w)
    }
}

/// The first source version a unit's files came from (its last when it had none).
fn first_version(files: &[table_files::DataFile], to: i64) -> i64 {
    files.iter().map(|f| f.version).min().unwrap_or(to)
}

/// `2m`, `90s`, `1.5s`: a watermark delay as the pipeline file would write it.
fn humantime_micros(micros: i64) -> String {
    match micros {
        m if m % 3_600_000_000 == 0 => format!("{}h", m / 3_600_000_000),
        m if m % 60_000_000 == 0 => format!("{}m", m / 60_000_000),
        m => format!("{}s", m as f64 / 1e6),
    }
}

/// Rows sorted by silver's lineage: the order they arrived in Kafka, per partition.
fn in_arrival_order(rows: RecordBatch) -> Result<RecordBatch> {
    if rows.num_rows() == 0 {
        return Ok(rows);
    }
    let columns = ORDER
        .iter()
        .map(|c| {
            Ok(SortColumn {
                values: rows
                    .column_by_name(c)
                    .ok_or_else(|| {
                        Error::Input(format!("the window source has no lineage column {c}"))
                    })?
                    .clone(),
                options: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(take_record_batch(
        &rows,
        &lexsort_to_indices(&columns, None)?,
    )?)
}

/// Whether `name` appears as a word in one of `sql` (lowercased), in any case.
fn named_in(sql: &[String], name: &str) -> bool {
    let name = name.to_lowercase();
    sql.iter().any(|s| {
        s.match_indices(&name).any(|(at, _)| {
            let word = |c: char| c.is_alphanumeric() || c == '_';
            !s[..at].ends_with(word) && !s[at + name.len()..].starts_with(word)
        })
    })
}

/// Step 4's answer: the rows of the windows step 5 aggregates, copied into their windows one
/// slice at a time.
struct Emitting {
    /// The buffer's rows with the new-row flag, reduced to the columns step 5 reads.
    rows: RecordBatch,
    grouped: assign::Grouped,
}

impl Emitting {
    /// The rows of `windows`, each with its window's bounds.
    fn slice(&self, windows: std::ops::Range<usize>) -> Result<RecordBatch> {
        let first_row = match windows.start {
            0 => 0,
            i => self.grouped.windows[i - 1].until,
        };
        let mut from = first_row;
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        for w in &self.grouped.windows[windows.clone()] {
            starts.extend(std::iter::repeat_n(w.start, w.until - from));
            ends.extend(std::iter::repeat_n(w.end, w.until - from));
            from = w.until;
        }
        let rows = UInt32Array::from(self.grouped.rows[first_row..from].to_vec());
        with_bounds(&take_record_batch(&self.rows, &rows)?, starts, ends)
    }
}

fn with_flag(batch: &RecordBatch, new: &BooleanArray) -> Result<RecordBatch> {
    with_column(
        batch,
        Field::new(NEW, DataType::Boolean, false),
        Arc::new(new.clone()),
    )
}

fn with_bounds(batch: &RecordBatch, starts: Vec<i64>, ends: Vec<i64>) -> Result<RecordBatch> {
    let stamps =
        |v: Vec<i64>| Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) as ArrayRef;
    let batch = with_column(
        batch,
        Field::new(WINDOW_BOUNDS[0], timestamp_type(), false),
        stamps(starts),
    )?;
    with_column(
        &batch,
        Field::new(WINDOW_BOUNDS[1], timestamp_type(), false),
        stamps(ends),
    )
}

/// Quarantine rows in silver's layout; `raw_value` is the row as JSON.
fn quarantine_batch(
    rows: &RecordBatch,
    quarantined: &[(u32, &'static str, String)],
    run_id: &str,
) -> Result<RecordBatch> {
    let picked = take_record_batch(
        rows,
        &UInt32Array::from_iter_values(quarantined.iter().map(|q| q.0)),
    )?;
    let mut json = arrow::json::LineDelimitedWriter::new(Vec::new());
    json.write(&picked)?;
    json.finish()?;
    let json = String::from_utf8(json.into_inner())
        .map_err(|e| Error::Internal(format!("row JSON: {e}")))?;
    let lineage = |c: &str| -> Result<ArrayRef> {
        picked
            .column_by_name(c)
            .cloned()
            .ok_or_else(|| Error::Input(format!("the window source has no lineage column {c}")))
    };
    let n = quarantined.len();
    let now = Utc::now().timestamp_micros();
    let kafka_ts = arrow::compute::cast(&lineage("_kafka_ts")?, &timestamp_type())?;
    Ok(RecordBatch::try_new(
        quarantine_schema(),
        vec![
            lineage(ORDER[0])?,
            lineage(ORDER[1])?,
            lineage(ORDER[2])?,
            kafka_ts,
            Arc::new(StringArray::from(json.lines().collect::<Vec<_>>())),
            Arc::new(StringArray::from_iter_values(
                quarantined.iter().map(|q| q.1),
            )),
            Arc::new(StringArray::from_iter_values(
                quarantined.iter().map(|q| q.2.as_str()),
            )),
            Arc::new(StringArray::from(vec![run_id; n])),
            Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        ],
    )?)
}

#[async_trait]
impl Job for WindowJob {
    fn name(&self) -> String {
        format!("window:{}", self.table)
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
        match &mut self.state {
            Some(state) => state.save(self.upkeep).await,
            None => Ok(()),
        }
    }
}

/// `lakectl run window`.
pub const KIND: JobKind = JobKind {
    name: "window",
    summary: "event-time windows and sessions over silver tables that append -> <lake>/window, final when the watermark passes; late rows to quarantine (docs/window.md)",
    default_mode: Mode::Once,
    full_refresh: false,
    declared: |pipeline| pipeline.window.keys().cloned().collect(),
    writes: |table| crate::kind::table_and_quarantine(Layer::Window, table),
    run: |pipeline, tables, options| Box::pin(run_tables(pipeline, tables, options.mode)),
};

/// `lakectl run window [TABLE…]`: each window table on the shared runner; prints what each
/// run emitted and its late-row counts.
pub async fn run_tables(pipeline: &Pipeline, tables: &[String], mode: Mode) -> Result<()> {
    let names = stage::table_names(pipeline, "window", pipeline.window.keys(), tables)?;
    let make = |name: &str| WindowJob::new(pipeline, name);
    stage::run_each(pipeline, &names, mode, make, |job, result| {
        stage::print_table_run(
            &job.name(),
            &job.report,
            result,
            "source rows",
            "window rows written",
            "source",
        )
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    /// Slices of whole windows, put together, are every row in every window once, with its
    /// window's bounds: running the SQL slice by slice sees what one run over all would.
    #[test]
    fn slices_together_are_each_row_in_each_of_its_windows() {
        const MIN: i64 = 60_000_000;
        let times: Vec<i64> = (0..50).map(|i| i * 17 * MIN / 10).collect();
        let rows = RecordBatch::try_from_iter([(
            "t",
            Arc::new(Int64Array::from(times.clone())) as ArrayRef,
        )])
        .unwrap();
        let five_by_one = Fixed {
            size: 5 * MIN,
            slide: MIN,
        };
        let grouped = assign::expand(assign::numbered(&times), five_by_one, |_, _| true);
        let emitting = Emitting { rows, grouped };
        let runs = emitting.grouped.runs(7, 3);
        assert!(runs.len() > 10, "the test wants many slices");
        let mut seen = Vec::new();
        for run in runs {
            let slice = emitting.slice(run).unwrap();
            let t = slice
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>();
            let start = slice.column(1).as_primitive::<TimestampMicrosecondType>();
            let end = slice.column(2).as_primitive::<TimestampMicrosecondType>();
            for i in 0..slice.num_rows() {
                seen.push((t.value(i), start.value(i), end.value(i)));
            }
        }
        let mut expected: Vec<(i64, i64, i64)> = times
            .iter()
            .flat_map(|&t| five_by_one.starts(t).map(move |s| (t, s, s + 5 * MIN)))
            .collect();
        expected.sort_by_key(|&(t, s, _)| (s, t));
        assert_eq!(seen, expected);
    }
}
