//! The record of every run, kept in the lake as the Delta table `<lake>/_lakectl/runs` so any
//! engine (and `lakectl status`) can query it.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::storage::{Lake, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Cancelled,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Cancelled => "cancelled",
            Outcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        [Outcome::Succeeded, Outcome::Cancelled, Outcome::Failed]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One run of one job, as kept in `<lake>/_lakectl/runs`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    pub job: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub units: u64,
    pub rows_in: u64,
    pub rows_out: u64,
    /// First and last input versions read, and last output version written.
    pub first_version_read: Option<i64>,
    pub last_version_read: Option<i64>,
    pub last_version_written: Option<i64>,
    pub outcome: Outcome,
    pub error: Option<String>,
}

impl RunRecord {
    pub(crate) fn start(pipeline: &str, job: &str) -> RunRecord {
        let now = Utc::now();
        RunRecord {
            run_id: uuid::Uuid::new_v4().to_string(),
            pipeline: pipeline.to_string(),
            job: job.to_string(),
            started_at: now,
            ended_at: now,
            units: 0,
            rows_in: 0,
            rows_out: 0,
            first_version_read: None,
            last_version_read: None,
            last_version_written: None,
            outcome: Outcome::Failed,
            error: None,
        }
    }
}

pub const RUNS_TABLE: &str = "runs";

#[derive(Debug, Clone)]
pub struct RunLog {
    lake: Lake,
}

fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("job", DataType::Utf8, false),
        Field::new("started_at", ts.clone(), false),
        Field::new("ended_at", ts, false),
        Field::new("units", DataType::Int64, false),
        Field::new("rows_in", DataType::Int64, false),
        Field::new("rows_out", DataType::Int64, false),
        Field::new("first_version_read", DataType::Int64, true),
        Field::new("last_version_read", DataType::Int64, true),
        Field::new("last_version_written", DataType::Int64, true),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
    ]))
}

impl RunLog {
    pub fn new(lake: Lake) -> RunLog {
        RunLog { lake }
    }

    pub async fn append(&self, record: &RunRecord) -> Result<()> {
        let micros = |t: DateTime<Utc>| {
            Arc::new(
                TimestampMicrosecondArray::from(vec![t.timestamp_micros()]).with_timezone("UTC"),
            ) as ArrayRef
        };
        let text = |s: &str| Arc::new(StringArray::from(vec![s])) as ArrayRef;
        let int = |v: Option<i64>| Arc::new(Int64Array::from(vec![v])) as ArrayRef;
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                text(&record.run_id),
                text(&record.pipeline),
                text(&record.job),
                micros(record.started_at),
                micros(record.ended_at),
                int(Some(record.units as i64)),
                int(Some(record.rows_in as i64)),
                int(Some(record.rows_out as i64)),
                int(record.first_version_read),
                int(record.last_version_read),
                int(record.last_version_written),
                text(record.outcome.as_str()),
                Arc::new(StringArray::from(vec![record.error.as_deref()])),
            ],
        )?;
        self.lake.append(Layer::System, RUNS_TABLE, batch).await
    }

    /// Every run recorded, oldest first.
    pub async fn read_all(&self) -> Result<Vec<RunRecord>> {
        let Some(table) = self.lake.load_table(Layer::System, RUNS_TABLE).await? else {
            return Ok(Vec::new());
        };
        let ctx = SessionContext::new();
        ctx.register_table("runs", table.table_provider().await?)?;
        let batches = ctx
            .sql("SELECT * FROM runs ORDER BY started_at, ended_at")
            .await?
            .collect()
            .await?;
        let mut records = Vec::new();
        for batch in &batches {
            records.extend(records_from(batch)?);
        }
        Ok(records)
    }
}

fn records_from(batch: &RecordBatch) -> Result<Vec<RunRecord>> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| Error::Internal(format!("run log has no column {name}")))
    };
    // DataFusion may hand strings back as Utf8View; normalise to Utf8.
    let text = |name| -> Result<StringArray> {
        let utf8 = arrow::compute::cast(column(name)?, &DataType::Utf8)?;
        Ok(utf8.as_string::<i32>().clone())
    };
    let int = |name| column(name).map(|c| c.as_primitive::<arrow::datatypes::Int64Type>().clone());
    let time = |name| column(name).map(|c| c.as_primitive::<TimestampMicrosecondType>().clone());
    let (run_id, pipeline, job, outcome, error) = (
        text("run_id")?,
        text("pipeline")?,
        text("job")?,
        text("outcome")?,
        text("error")?,
    );
    let (units, rows_in, rows_out) = (int("units")?, int("rows_in")?, int("rows_out")?);
    let (first_read, last_read, written) = (
        int("first_version_read")?,
        int("last_version_read")?,
        int("last_version_written")?,
    );
    let (started, ended) = (time("started_at")?, time("ended_at")?);
    let opt = |a: &Int64Array, i: usize| (!a.is_null(i)).then(|| a.value(i));
    let at = |a: &TimestampMicrosecondArray, i: usize| {
        DateTime::from_timestamp_micros(a.value(i)).unwrap_or_default()
    };
    (0..batch.num_rows())
        .map(|i| {
            Ok(RunRecord {
                run_id: run_id.value(i).to_string(),
                pipeline: pipeline.value(i).to_string(),
                job: job.value(i).to_string(),
                started_at: at(&started, i),
                ended_at: at(&ended, i),
                units: units.value(i) as u64,
                rows_in: rows_in.value(i) as u64,
                rows_out: rows_out.value(i) as u64,
                first_version_read: opt(&first_read, i),
                last_version_read: opt(&last_read, i),
                last_version_written: opt(&written, i),
                outcome: Outcome::parse(outcome.value(i)).ok_or_else(|| {
                    Error::Internal(format!("unknown outcome {:?}", outcome.value(i)))
                })?,
                error: (!error.is_null(i)).then(|| error.value(i).to_string()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{Job, Mode, Runner, UnitReport};
    use async_trait::async_trait;
    use tokio_util::sync::CancellationToken;

    struct OneUnit;

    #[async_trait]
    impl Job for OneUnit {
        fn name(&self) -> String {
            "test:one".into()
        }
        async fn run_unit(&mut self, _: &CancellationToken) -> Result<UnitReport> {
            Ok(UnitReport {
                rows_in: 7,
                rows_out: 6,
                version_written: Some(4),
                caught_up: true,
                ..Default::default()
            })
        }
    }

    #[tokio::test]
    async fn runs_are_recorded_in_the_lake_and_read_back() {
        let lake = Lake::open("memory://", &Default::default()).unwrap();
        let log = RunLog::new(lake);
        let runner =
            Runner::new("books", Mode::Once, CancellationToken::new()).with_run_log(log.clone());
        let first = runner.run(&mut OneUnit).await.unwrap();
        runner.run(&mut OneUnit).await.unwrap();

        let runs = log.read_all().await.unwrap();
        assert_eq!(runs.len(), 2);
        let got = &runs[0];
        assert_eq!(got.run_id, first.run_id);
        assert_eq!((got.rows_in, got.rows_out), (7, 6));
        assert_eq!(got.last_version_written, Some(4));
        assert_eq!(got.first_version_read, None);
        assert_eq!(got.outcome, Outcome::Succeeded);
        assert_eq!(
            got.started_at.timestamp_micros(),
            first.started_at.timestamp_micros()
        );
    }
}
