//! `lakectl run sink`: the new rows of a table that only appends → a Kafka topic, each row
//! exactly once, without Kafka transactions (the brokers we test with have none).
//!
//! Every row has a position: the source version that added it and its place among that
//! version's rows (files in log order, rows in file order). Each record carries it in the
//! headers `lakectl-source-version` and `lakectl-source-row`, and goes to the partition the
//! Java client would pick for its key (murmur2), set explicitly. The idempotent producer keeps
//! each partition in send order, so what reached a partition is a prefix of what was sent to
//! it. A unit:
//! 1. reads the source rows after the version `_lakectl/state/sink/<name>` records as sent;
//! 2. reads the last record of every partition of the topic: the position it holds;
//! 3. sends each row whose position is after its partition's last one, waits for every
//!    delivery, then records the unit's last version as sent.
//!
//! A crash anywhere re-reads the unsent versions and skips what already landed, partition by
//! partition. The topic must be the sink's own: another writer's records break step 2, and so
//! would a second sink process: a sink holds a claim in the lake while it runs
//! ([`lakehouse_core::lease`]) and a second one is refused. What landed is a prefix only if
//! the producer never skips a record: its messages never time out (`message.timeout.ms` 0,
//! whatever `kafka.options` say; a broker away for minutes fails the unit, which is retried)
//! and `enable.gapless.guarantee` makes any other gap a fatal error of that producer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use deltalake::protocol::SaveMode;
use lakehouse_core::config::{KafkaConfig, SinkTopic};
use lakehouse_core::kafka::{client_config, key_partition};
use lakehouse_core::lease::Lease;
use lakehouse_core::storage::{write_with_txns, Upkeep};
use lakehouse_core::table_files::UnitLimit;
use lakehouse_core::{table_files, Error, Job, Lake, Layer, Mode, Pipeline, Result, UnitReport};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::kind::JobKind;
use crate::stage;
use crate::topic_producer::TopicProducer;

const VERSION_HEADER: &str = "lakectl-source-version";
const ROW_HEADER: &str = "lakectl-source-row";
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a row sits in the source: the version that added it, its place among its rows.
type Position = (i64, u64);

fn txn_app_id(sink: &str) -> String {
    format!("lakectl-sink-{sink}")
}

pub struct SinkJob {
    name: String,
    settings: SinkTopic,
    source_layer: Layer,
    source_table: String,
    lake: Lake,
    kafka: KafkaConfig,
    upkeep: Upkeep,
    /// This process's claim on the sink, taken by its first unit.
    lease: Option<Lease>,
}

impl SinkJob {
    pub fn new(pipeline: &Pipeline, name: &str) -> Result<SinkJob> {
        let settings = crate::stage::settings(pipeline, "sink", &pipeline.sink, name).cloned()?;
        let (source_layer, source_table) = (settings.source.layer, settings.source.name.clone());
        Ok(SinkJob {
            name: name.to_string(),
            settings,
            source_layer,
            source_table,
            lake: pipeline.lake.open()?,
            kafka: pipeline.kafka.clone(),
            upkeep: pipeline.lake.upkeep(),
            lease: None,
        })
    }

    async fn process(&mut self) -> Result<UnitReport> {
        let lease = match self.lease.take() {
            Some(lease) => lease,
            None => self.lake.lease(&format!("sink-{}", self.name)).await?,
        };
        let lease = self.lease.insert(lease);
        lease.check().await?;
        let Some(source) = self
            .lake
            .load_table(self.source_layer, &self.source_table)
            .await?
        else {
            info!(source = %self.settings.source, "the source table does not exist yet: nothing to send");
            return Ok(UnitReport {
                caught_up: true,
                ..Default::default()
            });
        };
        let latest = source.version().expect("loaded tables have a version") as i64;
        let state = self
            .lake
            .table_or_new(Layer::System, &format!("state/sink/{}", self.name))
            .await?;
        let sent = self
            .lake
            .txn_version(&state, &txn_app_id(&self.name))
            .await?
            .unwrap_or(-1);
        if sent >= latest {
            return Ok(UnitReport {
                version_read: Some(sent),
                caught_up: true,
                ..Default::default()
            });
        }
        // 1. the rows after what was sent
        let (files, to) = table_files::appended_since(
            &source,
            self.settings.source.as_str(),
            sent,
            latest,
            UnitLimit {
                rows: self.settings.batch_rows as u64,
                bytes: self.settings.batch_bytes,
            },
        )
        .await?;
        let mut rows: Vec<(i64, RecordBatch)> = Vec::new();
        for (file, batches) in table_files::read(&source, &files, None).await? {
            rows.extend(batches.into_iter().map(|b| (file.version, b)));
        }
        let rows_in: u64 = rows.iter().map(|(_, b)| b.num_rows() as u64).sum();

        // 2. what already landed, per partition
        let partitions = lakehouse_core::kafka::ensure_topic(
            &self.kafka,
            &self.settings.topic,
            self.settings.partitions,
        )
        .await?;
        let landed = last_positions(&self.kafka, &self.settings.topic, partitions).await?;

        // 3. the rest, then the version as sent
        let records = self.records(&rows, partitions, &landed)?;
        let sent_now = records.len() as u64;
        let bytes_out: u64 = (records.iter())
            .map(|r| (r.key.as_ref().map_or(0, String::len) + r.value.len()) as u64)
            .sum();
        let kafka = self.kafka.clone();
        let topic = self.settings.topic.clone();
        if sent_now > 0 {
            if let Some(lease) = &self.lease {
                lease.check().await?;
            }
            tokio::task::spawn_blocking(move || send(&kafka, &topic, records))
                .await
                .map_err(|e| Error::Internal(format!("send task: {e}")))??;
            lakehouse_core::runner::crash_point("sink:after_send");
        }
        let marker = Arc::new(Schema::new(vec![Field::new(
            "sent_through",
            DataType::Int64,
            false,
        )]));
        write_with_txns(
            state,
            vec![RecordBatch::new_empty(marker)],
            SaveMode::Append,
            vec![(txn_app_id(&self.name), to)],
            &[],
            self.upkeep,
            None,
        )
        .await?;
        Ok(UnitReport {
            rows_in,
            rows_out: sent_now,
            bytes_out,
            version_read: Some(to),
            version_written: None,
            caught_up: to == latest,
            ..Default::default()
        })
    }

    /// The records of `rows` not yet in their partition: (partition, key, JSON value,
    /// position).
    fn records(
        &self,
        rows: &[(i64, RecordBatch)],
        partitions: i32,
        landed: &HashMap<i32, Position>,
    ) -> Result<Vec<Outgoing>> {
        let mut out = Vec::new();
        let mut place = (i64::MIN, 0u64);
        for (version, batch) in rows {
            if place.0 != *version {
                place = (*version, 0);
            }
            let key_column = batch.column_by_name(&self.settings.key).ok_or_else(|| {
                Error::Input(format!(
                    "sink.{}.key: {:?} is not a column of {}",
                    self.name, self.settings.key, self.settings.source
                ))
            })?;
            let keys = arrow::compute::cast(key_column, &DataType::Utf8)?;
            let keys = keys.as_string::<i32>();
            let values = self.values(batch)?;
            for (i, value) in values.into_iter().enumerate() {
                let position = (*version, place.1 + i as u64);
                let key = (!keys.is_null(i)).then(|| keys.value(i).to_string());
                // Rows without a key all go to partition 0.
                let partition = key
                    .as_deref()
                    .map_or(0, |k| key_partition(k.as_bytes(), partitions));
                if landed.get(&partition).is_some_and(|last| position <= *last) {
                    continue;
                }
                out.push(Outgoing {
                    partition,
                    key,
                    value,
                    position,
                });
            }
            place.1 += batch.num_rows() as u64;
        }
        Ok(out)
    }

    /// Each row of `batch` as a JSON object of the chosen columns.
    fn values(&self, batch: &RecordBatch) -> Result<Vec<String>> {
        let batch = if self.settings.columns.is_empty() {
            batch.clone()
        } else {
            let indices = (self.settings.columns.iter())
                .map(|c| {
                    batch.schema().index_of(c).map_err(|_| {
                        Error::Input(format!(
                            "sink.{}.columns: {c:?} is not a column of {}",
                            self.name, self.settings.source
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            batch.project(&indices)?
        };
        let mut json = arrow::json::LineDelimitedWriter::new(Vec::new());
        json.write(&batch)?;
        json.finish()?;
        let text = String::from_utf8(json.into_inner())
            .map_err(|e| Error::Internal(format!("row JSON: {e}")))?;
        Ok(text.lines().map(str::to_string).collect())
    }
}

struct Outgoing {
    partition: i32,
    key: Option<String>,
    value: String,
    position: Position,
}

/// Sends `records` and waits until the broker confirmed every one.
fn send(kafka: &KafkaConfig, topic: &str, records: Vec<Outgoing>) -> Result<()> {
    let mut producer = TopicProducer::without_gaps(kafka, topic)?;
    let mut outcome = Ok(());
    for r in &records {
        let (version, row) = (r.position.0.to_string(), r.position.1.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: VERSION_HEADER,
                value: Some(version.as_bytes()),
            })
            .insert(Header {
                key: ROW_HEADER,
                value: Some(row.as_bytes()),
            });
        outcome = producer.send(
            r.value.as_bytes(),
            r.key.as_deref().map(str::as_bytes),
            headers,
            Some(r.partition),
        );
        if outcome.is_err() {
            break;
        }
    }
    producer.finish(outcome).map(|_| ())
}

/// The position of the last record of each partition of `topic` that has one.
async fn last_positions(
    kafka: &KafkaConfig,
    topic: &str,
    partitions: i32,
) -> Result<HashMap<i32, Position>> {
    let mut config = client_config(kafka);
    // librdkafka wants a group even for assigned partitions; nothing joins or commits it.
    config
        .set("group.id", format!("lakectl-sink-{topic}"))
        .set("enable.auto.commit", "false");
    let topic = topic.to_string();
    let brokers = kafka.brokers.clone();
    tokio::task::spawn_blocking(move || {
        let unavailable =
            |e: &dyn std::fmt::Display| Error::unavailable(format!("kafka broker {brokers}"), e);
        let consumer: BaseConsumer = config.create().map_err(Error::from)?;
        let mut wanted = TopicPartitionList::new();
        for p in 0..partitions {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p, KAFKA_TIMEOUT)
                .map_err(|e| unavailable(&e))?;
            if high > low {
                wanted
                    .add_partition_offset(&topic, p, Offset::Offset(high - 1))
                    .map_err(Error::from)?;
            }
        }
        let mut found = HashMap::new();
        let expected = wanted.count();
        consumer.assign(&wanted).map_err(Error::from)?;
        let deadline = Instant::now() + KAFKA_TIMEOUT;
        while found.len() < expected {
            if Instant::now() > deadline {
                return Err(unavailable(&format!(
                    "the last records of {topic} did not arrive within {KAFKA_TIMEOUT:?}"
                )));
            }
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message.map_err(|e| unavailable(&e))?;
            let header = |name: &str| -> Option<i64> {
                let headers = message.headers()?;
                let h = headers.iter().find(|h| h.key == name)?;
                std::str::from_utf8(h.value?).ok()?.parse().ok()
            };
            let (Some(version), Some(row)) = (header(VERSION_HEADER), header(ROW_HEADER)) else {
                return Err(Error::Input(format!(
                    "{topic} partition {} offset {} was not written by a lakectl sink (no \
                     {VERSION_HEADER} header): a sink needs a topic of its own",
                    message.partition(),
                    message.offset()
                )));
            };
            found.insert(message.partition(), (version, row as u64));
        }
        Ok(found)
    })
    .await
    .map_err(|e| Error::Internal(format!("tail task: {e}")))?
}

#[async_trait]
impl Job for SinkJob {
    fn name(&self) -> String {
        format!("sink:{}", self.name)
    }

    async fn run_unit(&mut self, _cancel: &CancellationToken) -> Result<UnitReport> {
        // A unit is bounded by batch_rows; cancellation is honoured between units.
        self.process().await
    }

    async fn finish(&mut self) -> Result<()> {
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
        Ok(())
    }
}

/// `lakectl run sink`.
pub const KIND: JobKind = JobKind {
    name: "sink",
    summary:
        "new rows of tables that only append -> Kafka topics as JSON, each row once across crashes",
    default_mode: Mode::Once,
    full_refresh: false,
    declared: |pipeline| pipeline.sink.keys().cloned().collect(),
    writes: |_| Vec::new(),
    run: |pipeline, tables, options| Box::pin(run_sinks(pipeline, tables, options.mode)),
};

/// `lakectl run sink [NAME…]`: each sink on the shared runner.
pub async fn run_sinks(pipeline: &Pipeline, names: &[String], mode: Mode) -> Result<()> {
    let names = stage::table_names(pipeline, "sink", pipeline.sink.keys(), names)?;
    let make = |name: &str| SinkJob::new(pipeline, name);
    stage::run_each(pipeline, &names, mode, make, |job, result| {
        if let Ok(record) = result {
            println!(
                "{}: {} — {} source rows read, {} records sent to {}, source version {}",
                record.job,
                record.outcome.as_str(),
                record.rows_in,
                record.rows_out,
                job.settings.topic,
                stage::version_or(record.last_version_read, "-"),
            );
        }
    })
    .await
}
