//! `lakectl run bronze`: Kafka topic → raw Delta table `<lake>/bronze/<table>`, exactly once.
//!
//! How exactly-once holds (the kafka-delta-ingest way):
//! - Every Delta commit carries one `txn` action per partition it wrote, app id
//!   `lakectl-bronze-<topic>-<partition>`, version = the last offset written.
//! - Where to read from comes only from those versions: on every partition assignment the
//!   rebalance callback reads them and assigns each partition at `version + 1` (or at its low
//!   watermark when the table has none). Kafka's committed offsets are written after each
//!   Delta commit for lag monitoring, never read.
//! - Before a commit the table is refreshed and each partition's version must still be the
//!   one we started from; delta-rs also rejects a commit whose `txn` app ids a concurrent
//!   winner updated. Either way the buffer is dropped and every partition is re-positioned
//!   from the table: the records are read again, never written twice.
//! - Any rebalance drops the buffer too: the new owner of a partition starts from the table.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BinaryBuilder, Date32Builder, Int32Builder, Int64Builder, ListBuilder, RecordBatch,
    StringBuilder, StructBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use lakehouse_core::config::BronzeTable;
use lakehouse_core::storage::{compact_if_due, table_properties, Upkeep};
use lakehouse_core::{Error, Job, Lake, Layer, Mode, Pipeline, Result, UnitReport};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::kind::JobKind;

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
/// How long client errors may go on before a unit gives up on the broker.
const KAFKA_OUTAGE_LIMIT: Duration = Duration::from_secs(60);
/// Errors this far apart belong to different outages.
const KAFKA_QUIET: Duration = Duration::from_secs(10);

/// The app id of a partition's `txn` action.
pub fn txn_app_id(topic: &str, partition: i32) -> String {
    format!("lakectl-bronze-{topic}-{partition}")
}

/// The app id of the `txn` action in bronze's commits whose version is the topic's partition
/// count: what silver records for the windows, whose watermark waits on every partition.
pub fn partitions_app_id(topic: &str) -> String {
    format!("lakectl-bronze-{topic}:partitions")
}

pub fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("headers", DataType::List(Arc::new(header_item())), true),
        Field::new("_topic", DataType::Utf8, false),
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new("_kafka_ts", ts.clone(), true),
        Field::new("_ingest_ts", ts, false),
        Field::new("_ingest_date", DataType::Date32, false),
    ]))
}

/// Headers are a list, not a map: Kafka allows repeated keys and their order is kept.
fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ])
}

fn header_item() -> Field {
    Field::new("item", DataType::Struct(header_fields()), true)
}

/// Where each assigned partition stands. Shared by the poll loop and the rebalance callback.
#[derive(Default)]
struct Positions {
    /// Partitions we own, with the offset of the next record we accept.
    next: BTreeMap<i32, i64>,
    /// The table's `txn` version per partition when we positioned it (or last committed).
    committed: HashMap<i32, Option<i64>>,
    /// High watermark when first assigned: `--once` reads up to it.
    end_at_start: HashMap<i32, i64>,
    /// Assigned but not positioned (the lake was unreachable): paused until positioned.
    unpositioned: BTreeSet<i32>,
    /// Bumped by every rebalance and re-positioning; a change means the buffer is stale.
    generation: u64,
}

/// Where a partition starts reading, and what the table said when we looked.
#[derive(Debug, Clone, Copy)]
struct Start {
    partition: i32,
    offset: i64,
    version: Option<i64>,
    high: i64,
}

/// `0@120 1@0 2@57`: partition@offset, for logs.
fn describe(starts: &[Start]) -> String {
    let parts: Vec<String> = starts
        .iter()
        .map(|s| format!("{}@{}", s.partition, s.offset))
        .collect();
    parts.join(" ")
}

impl Positions {
    /// Records that the consumer now reads `start.partition` from `start.offset`. Call it only
    /// once the consumer really is there (assigned or sought).
    fn start_at(&mut self, start: &Start) {
        self.next.insert(start.partition, start.offset);
        self.committed.insert(start.partition, start.version);
        self.end_at_start
            .entry(start.partition)
            .or_insert(start.high);
        self.unpositioned.remove(&start.partition);
    }
}

struct BronzeContext {
    lake: Lake,
    table: String,
    topic: String,
    runtime: Handle,
    positions: Mutex<Positions>,
}

impl ClientContext for BronzeContext {
    /// Consumer lag per owned partition: the broker's high watermark minus the offset committed
    /// after the last Delta commit (every record when none was committed yet).
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let job = format!("bronze:{}", self.table);
        for (&partition, p) in &topic.partitions {
            if partition < 0 || p.hi_offset < 0 {
                continue;
            }
            let lag = match (p.desired, p.consumer_lag) {
                (false, _) => None,
                (true, lag) if lag >= 0 => Some(lag),
                (true, _) => Some(p.hi_offset - p.lo_offset.max(0)),
            };
            lakehouse_core::metrics::consumer_lag(&job, &self.topic, partition, lag);
        }
    }
}

impl ConsumerContext for BronzeContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut positions = self.positions.lock().expect("positions lock");
        positions.generation += 1;
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                match self.starts(consumer, &partitions) {
                    Ok(starts) => {
                        for start in &starts {
                            let offset = Offset::Offset(start.offset);
                            let _ = tpl.set_partition_offset(&self.topic, start.partition, offset);
                        }
                        match consumer.assign(tpl) {
                            Ok(()) => {
                                starts.iter().for_each(|start| positions.start_at(start));
                                info!(topic = %self.topic, starts = %describe(&starts), "partitions assigned, positioned from the Delta table");
                            }
                            Err(e) => {
                                warn!(error = %e, "assign failed");
                                positions.unpositioned.extend(partitions);
                            }
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot read positions from the Delta table; partitions paused until it answers");
                        let _ = consumer.assign(tpl);
                        let _ = consumer.pause(tpl);
                        positions.unpositioned.extend(partitions);
                    }
                }
            }
            _ => {
                if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    warn!(?err, "rebalance error; dropping the assignment");
                }
                let _ = consumer.unassign();
                positions.next.clear();
                positions.committed.clear();
                positions.unpositioned.clear();
                info!(topic = %self.topic, "partitions revoked");
            }
        }
    }
}

impl BronzeContext {
    /// Marks every owned partition for re-positioning from the table before the next read.
    fn unposition_all(&self) {
        let mut positions = self.positions.lock().expect("positions lock");
        let owned: Vec<i32> = positions.next.keys().copied().collect();
        positions.unpositioned.extend(owned);
        positions.next.clear();
        positions.generation += 1;
    }

    /// Where each of `partitions` must start: after the table's `txn` version, or at the low
    /// watermark when the table has none. Records nothing: see [`Positions::start_at`].
    fn starts(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) -> Result<Vec<Start>> {
        let versions = self.runtime.block_on(self.txn_versions(partitions))?;
        partitions
            .iter()
            .map(|&partition| {
                let (low, high) = consumer
                    .fetch_watermarks(&self.topic, partition, KAFKA_TIMEOUT)
                    .map_err(|e| {
                        Error::unavailable(
                            "kafka broker",
                            format!("watermarks of {}/{partition}: {e}", self.topic),
                        )
                    })?;
                let version = versions.get(&partition).copied().flatten();
                let offset = version.map_or(low, |v| (v + 1).max(low));
                Ok(Start {
                    partition,
                    offset,
                    version,
                    high,
                })
            })
            .collect()
    }

    async fn txn_versions(&self, partitions: &[i32]) -> Result<HashMap<i32, Option<i64>>> {
        written_offsets(&self.lake, &self.table, &self.topic, partitions).await
    }
}

/// The last offset written per partition, from the table's `txn` actions (`None`: nothing yet).
pub async fn written_offsets(
    lake: &Lake,
    table: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, Option<i64>>> {
    let mut versions = HashMap::new();
    let table = lake.load_table(Layer::Bronze, table).await?;
    for &p in partitions {
        let version = match &table {
            Some(t) => lake.txn_version(t, &txn_app_id(topic, p)).await?,
            None => None,
        };
        versions.insert(p, version);
    }
    Ok(versions)
}

/// How far a bronze table is behind its topic, per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: i32,
    pub last_written: Option<i64>,
    pub high_watermark: i64,
    pub lag: i64,
}

pub async fn lag(pipeline: &Pipeline, table: &str) -> Result<Vec<PartitionLag>> {
    let topic = crate::stage::settings(pipeline, "bronze", &pipeline.bronze, table)?
        .topic
        .clone();
    let config = lakehouse_core::kafka::client_config(&pipeline.kafka);
    let topic_for_kafka = topic.clone();
    let watermarks: Vec<(i32, i64, i64)> =
        tokio::task::spawn_blocking(move || -> Result<Vec<(i32, i64, i64)>> {
            let consumer: BaseConsumer = config.create()?;
            let unavailable = |e: KafkaError| Error::unavailable("kafka broker", e);
            let metadata = consumer
                .fetch_metadata(Some(&topic_for_kafka), KAFKA_TIMEOUT)
                .map_err(unavailable)?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            partitions
                .into_iter()
                .map(|p| {
                    let (low, high) = consumer
                        .fetch_watermarks(&topic_for_kafka, p, KAFKA_TIMEOUT)
                        .map_err(unavailable)?;
                    Ok((p, low, high))
                })
                .collect()
        })
        .await
        .map_err(|e| Error::Internal(format!("watermark task: {e}")))??;
    let partitions: Vec<i32> = watermarks.iter().map(|w| w.0).collect();
    let lake = pipeline.lake.open()?;
    let written = written_offsets(&lake, table, &topic, &partitions).await?;
    Ok(watermarks
        .into_iter()
        .map(|(partition, low, high)| {
            let last_written = written.get(&partition).copied().flatten();
            let next = last_written.map_or(low, |w| (w + 1).max(low));
            PartitionLag {
                partition,
                last_written,
                high_watermark: high,
                lag: (high - next).max(0),
            }
        })
        .collect())
}

/// Records read since the last commit, already in Arrow builders.
struct Buffer {
    key: BinaryBuilder,
    value: BinaryBuilder,
    headers: ListBuilder<StructBuilder>,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    kafka_ts: TimestampMicrosecondBuilder,
    /// (first, last) offset per partition.
    ranges: BTreeMap<i32, (i64, i64)>,
    rows: usize,
    bytes: usize,
    generation: u64,
}

impl Buffer {
    fn new(generation: u64) -> Buffer {
        Buffer {
            key: BinaryBuilder::new(),
            value: BinaryBuilder::new(),
            headers: ListBuilder::new(StructBuilder::from_fields(header_fields(), 0))
                .with_field(header_item()),
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            kafka_ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            ranges: BTreeMap::new(),
            rows: 0,
            bytes: 0,
            generation,
        }
    }

    fn push(&mut self, msg: &BorrowedMessage<'_>) {
        self.key.append_option(msg.key());
        self.value.append_option(msg.payload());
        let mut bytes = msg.key().map_or(0, <[u8]>::len) + msg.payload().map_or(0, <[u8]>::len);
        match msg.headers() {
            Some(headers) => {
                let items = self.headers.values();
                for h in headers.iter() {
                    bytes += h.key.len() + h.value.map_or(0, <[u8]>::len);
                    items
                        .field_builder::<StringBuilder>(0)
                        .expect("key builder")
                        .append_value(h.key);
                    items
                        .field_builder::<BinaryBuilder>(1)
                        .expect("value builder")
                        .append_option(h.value);
                    items.append(true);
                }
                self.headers.append(true);
            }
            None => self.headers.append(false),
        }
        self.topic.append_value(msg.topic());
        self.partition.append_value(msg.partition());
        self.offset.append_value(msg.offset());
        self.kafka_ts
            .append_option(msg.timestamp().to_millis().and_then(kafka_micros));
        self.ranges
            .entry(msg.partition())
            .and_modify(|r| r.1 = msg.offset())
            .or_insert((msg.offset(), msg.offset()));
        self.rows += 1;
        self.bytes += bytes + 64;
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        let now = chrono::Utc::now();
        let n = self.rows;
        let mut ingest_ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut ingest_date = Date32Builder::with_capacity(n);
        let days = (now.date_naive() - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch"))
            .num_days() as i32;
        for _ in 0..n {
            ingest_ts.append_value(now.timestamp_micros());
            ingest_date.append_value(days);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.key.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.headers.finish()),
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.kafka_ts.finish()),
            Arc::new(ingest_ts.finish()),
            Arc::new(ingest_date.finish()),
        ];
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

pub struct BronzeJob {
    table: String,
    settings: BronzeTable,
    mode: Mode,
    lake: Lake,
    upkeep: Upkeep,
    consumer: Arc<BaseConsumer<BronzeContext>>,
    delta: Option<DeltaTable>,
    kafka: lakehouse_core::config::KafkaConfig,
    /// The topic's partition count, asked once by the first commit.
    partitions: Option<i32>,
}

impl BronzeJob {
    pub fn new(pipeline: &Pipeline, table: &str, mode: Mode) -> Result<BronzeJob> {
        let settings = crate::stage::settings(pipeline, "bronze", &pipeline.bronze, table)?.clone();
        let lake = pipeline.lake.open()?;
        let mut config = lakehouse_core::kafka::client_config(&pipeline.kafka);
        // What exactly-once rests on: offsets live in the table, never in the group.
        config
            .set("group.id", pipeline.group_id())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        // Tuning, which the pipeline's `kafka.options` may override.
        let queued_kbytes = (settings.flush_bytes / 4 / 1024)
            .clamp(1024, 16384)
            .to_string();
        let tuning = [
            // A topic that does not exist yet (or that a restarted broker does not know yet)
            // is looked up again after this, not after librdkafka's default 5 minutes.
            ("topic.metadata.refresh.interval.ms", "5000"),
            // A member killed with -9 holds its partitions until this expires.
            ("session.timeout.ms", "10000"),
            // Throughput: big fetches, no idle backoff between them.
            ("fetch.wait.max.ms", "100"),
            ("fetch.queue.backoff.ms", "10"),
            // Prefetch memory in step with the flush limit: a quarter of a batch's bytes
            // waiting keeps the fetches ahead of the builders (1–16 MiB).
            ("queued.max.messages.kbytes", queued_kbytes.as_str()),
        ];
        lakehouse_core::kafka::set_defaults(&mut config, &pipeline.kafka, tuning);
        if lakehouse_core::metrics::serving() {
            // Consumer lag for the metrics endpoint comes from librdkafka's statistics.
            config.set("statistics.interval.ms", "1000");
        }
        let context = BronzeContext {
            lake: lake.clone(),
            table: table.to_string(),
            topic: settings.topic.clone(),
            runtime: Handle::current(),
            positions: Mutex::new(Positions::default()),
        };
        let consumer: BaseConsumer<BronzeContext> = config.create_with_context(context)?;
        consumer.subscribe(&[&settings.topic])?;
        Ok(BronzeJob {
            table: table.to_string(),
            settings,
            mode,
            lake,
            upkeep: pipeline.lake.upkeep(),
            consumer: Arc::new(consumer),
            delta: None,
            kafka: pipeline.kafka.clone(),
            partitions: None,
        })
    }

    /// Commits the buffer with one `txn` per partition; `None` when another writer got there
    /// first (the buffer is then dropped and every partition re-positioned).
    async fn commit(
        &mut self,
        batch: RecordBatch,
        ranges: &BTreeMap<i32, (i64, i64)>,
    ) -> Result<Option<i64>> {
        let topic = self.settings.topic.clone();
        let table = match self.delta.take() {
            Some(mut t) => {
                self.lake
                    .refresh(Layer::Bronze, &self.table, &mut t)
                    .await?;
                t
            }
            None => self.lake.table_or_new(Layer::Bronze, &self.table).await?,
        };
        // Did anyone write these partitions since we positioned them?
        let expected: HashMap<i32, Option<i64>> = {
            let positions = self
                .consumer
                .context()
                .positions
                .lock()
                .expect("positions lock");
            ranges
                .keys()
                .map(|p| (*p, positions.committed.get(p).copied().flatten()))
                .collect()
        };
        if table.version().is_some() {
            for (p, want) in &expected {
                let have = self
                    .lake
                    .txn_version(&table, &txn_app_id(&topic, *p))
                    .await?;
                if have != *want {
                    warn!(
                        partition = p,
                        ?have,
                        ?want,
                        "another writer committed this partition; re-reading from the table"
                    );
                    self.delta = Some(table);
                    return Ok(None);
                }
            }
        }
        let creating = table.version().is_none();
        if self.partitions.is_none() {
            // Recorded when the broker answers; a commit without it is still a commit.
            self.partitions = lakehouse_core::kafka::partition_count(&self.kafka, &topic)
                .await
                .ok();
        }
        let txns: Vec<Transaction> = ranges
            .iter()
            .map(|(p, (_, last))| Transaction::new(txn_app_id(&topic, *p), *last))
            .chain((self.partitions).map(|n| Transaction::new(partitions_app_id(&topic), n as i64)))
            .collect();
        let mut write = table
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_partition_columns(["_ingest_date"])
            .with_commit_properties(
                CommitProperties::default().with_application_transactions(txns),
            );
        if creating {
            write = write.with_configuration(table_properties(self.upkeep.checkpoint_interval));
        }
        match lakehouse_core::metrics::timed_commit(write.into_future()).await {
            Ok(table) => {
                let version = table.version().map(|v| v as i64);
                self.delta = Some(compact_if_due(table, self.upkeep, None).await);
                let mut positions = self
                    .consumer
                    .context()
                    .positions
                    .lock()
                    .expect("positions lock");
                for (p, (_, last)) in ranges {
                    positions.committed.insert(*p, Some(*last));
                }
                Ok(version)
            }
            Err(deltalake::DeltaTableError::Transaction { source }) if is_conflict(&source) => {
                warn!(error = %source, "commit conflict with another writer; re-reading from the table");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Leaves the consumer group so the partitions move on at once; closing blocks, so it
    /// runs off the async threads.
    pub async fn close(self) {
        let consumer = self.consumer;
        let _ = tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
    }

    /// Commits Kafka offsets for monitoring (lag); failures only warn.
    fn commit_kafka_offsets(&self, ranges: &BTreeMap<i32, (i64, i64)>) {
        let mut tpl = TopicPartitionList::new();
        for (p, (_, last)) in ranges {
            let _ = tpl.add_partition_offset(&self.settings.topic, *p, Offset::Offset(last + 1));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            debug!(error = %e, "kafka offset commit (monitoring only) failed");
        }
    }
}

/// Whether `--once` read every partition in `next` (the offset after the last record read)
/// to where it ended when first assigned (`ends`), or — given the consumer's `position` —
/// past it: the offsets after the last record may hold no record at all (the commit marker of
/// a transaction), and only the position moves past them.
fn drained(
    next: &BTreeMap<i32, i64>,
    ends: &HashMap<i32, i64>,
    position: impl Fn(i32) -> Option<i64>,
) -> bool {
    next.iter().all(|(p, next)| {
        let at = position(*p).map_or(*next, |position| position.max(*next));
        ends.get(p).is_none_or(|end| at >= *end)
    })
}

/// A record's Kafka timestamp (milliseconds, set by its producer) in microseconds; none when
/// it is past what microseconds hold (the multiplication overflowed: a panic in a debug
/// build, a wrapped time in a release one).
fn kafka_micros(ms: i64) -> Option<i64> {
    ms.checked_mul(1000)
}

fn is_conflict(e: &deltalake::kernel::transaction::TransactionError) -> bool {
    use deltalake::kernel::transaction::TransactionError as T;
    matches!(
        e,
        T::CommitConflict(_) | T::VersionAlreadyExists(_) | T::MaxCommitAttempts(_)
    )
}

fn position_and_seek(
    consumer: &BaseConsumer<BronzeContext>,
    partitions: &[i32],
    positions: &mut Positions,
) -> Result<()> {
    if partitions.is_empty() {
        return Ok(());
    }
    let context = consumer.context();
    let starts = context.starts(consumer, partitions)?;
    let mut resumed = TopicPartitionList::new();
    for start in &starts {
        // librdkafka drops what it prefetched for the partition before the seek.
        consumer
            .seek(
                &context.topic,
                start.partition,
                Offset::Offset(start.offset),
                KAFKA_TIMEOUT,
            )
            .map_err(|e| {
                let what = format!("seek {}/{}: {e}", context.topic, start.partition);
                Error::unavailable("kafka broker", what)
            })?;
        positions.start_at(start);
        resumed.add_partition(&context.topic, start.partition);
    }
    consumer.resume(&resumed)?;
    // Anything polled before the seek belongs to the old position.
    positions.generation += 1;
    info!(topic = %context.topic, starts = %describe(&starts), "partitions re-positioned from the Delta table");
    Ok(())
}

/// What one poll loop gathered.
struct Polled {
    buffer: Buffer,
    rows_in: u64,
    caught_up: bool,
}

/// Polls until a flush limit, the end of the backlog (`--once`), or cancellation.
fn poll_batch(
    consumer: &BaseConsumer<BronzeContext>,
    settings: &BronzeTable,
    once: bool,
    cancel: &CancellationToken,
) -> Result<Polled> {
    let context = consumer.context();
    {
        let mut positions = context.positions.lock().expect("positions lock");
        let unpositioned: Vec<i32> = positions.unpositioned.iter().copied().collect();
        position_and_seek(consumer, &unpositioned, &mut positions)?;
    }
    let generation = context.positions.lock().expect("positions lock").generation;
    let mut polled = Polled {
        buffer: Buffer::new(generation),
        rows_in: 0,
        caught_up: false,
    };
    let started = Instant::now();
    let interval = Duration::from_millis(settings.flush_interval_ms);
    let assignment_deadline = started + Duration::from_secs(60);
    // When client errors began without a record or a quiet spell since.
    let mut outage_since: Option<Instant> = None;
    let mut last_error = started;
    loop {
        if cancel.is_cancelled()
            || polled.buffer.rows >= settings.flush_rows
            || polled.buffer.bytes >= settings.flush_bytes
        {
            return Ok(polled);
        }
        if !once && started.elapsed() >= interval {
            polled.caught_up = polled.buffer.rows == 0;
            return Ok(polled);
        }
        let msg = consumer.poll(POLL);
        let idle = msg.is_none();
        let mut positions = context.positions.lock().expect("positions lock");
        if positions.generation != polled.buffer.generation {
            debug!(
                dropped = polled.buffer.rows,
                "rebalance: dropping the uncommitted buffer"
            );
            polled.buffer = Buffer::new(positions.generation);
        }
        if matches!(msg, Some(Ok(_))) || (msg.is_none() && last_error.elapsed() > KAFKA_QUIET) {
            outage_since = None;
        }
        match msg {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => {
                // librdkafka reconnects by itself: keep polling (and commit what we have at the
                // flush interval) unless the broker stays unreachable too long.
                let since = *outage_since.get_or_insert_with(Instant::now);
                last_error = Instant::now();
                if since.elapsed() > KAFKA_OUTAGE_LIMIT {
                    return Err(Error::unavailable(
                        format!("kafka broker ({})", context.topic),
                        format!("no recovery within {KAFKA_OUTAGE_LIMIT:?}: {e}"),
                    ));
                }
                debug!(error = %e, "kafka client error; librdkafka retries");
            }
            Some(Ok(msg)) => {
                // Only records of partitions we own, at or after the position we set.
                if let Some(next) = positions.next.get_mut(&msg.partition()) {
                    if msg.offset() >= *next {
                        *next = msg.offset() + 1;
                        polled.buffer.push(&msg);
                        polled.rows_in += 1;
                    }
                }
            }
        }
        if once {
            let assigned = !positions.next.is_empty() || !positions.unpositioned.is_empty();
            if assigned && positions.unpositioned.is_empty() {
                // The consumer's position is asked for only when a poll found nothing.
                let position = idle.then(|| consumer.position().ok()).flatten();
                let drained = drained(&positions.next, &positions.end_at_start, |p| {
                    let at = position.as_ref()?.find_partition(&context.topic, p)?;
                    at.offset().to_raw()
                });
                if drained {
                    polled.caught_up = true;
                    return Ok(polled);
                }
            } else if Instant::now() > assignment_deadline {
                return Err(Error::unavailable(
                    "kafka broker",
                    format!(
                        "no partitions of topic {:?} were assigned within 60 s",
                        context.topic
                    ),
                ));
            }
        }
    }
}

impl BronzeJob {
    /// Polls one batch and commits it; `rows_out < rows_in` when it did not commit them all.
    async fn poll_and_commit(&mut self, cancel: &CancellationToken) -> Result<UnitReport> {
        let consumer = self.consumer.clone();
        let settings = self.settings.clone();
        let once = self.mode == Mode::Once;
        let cancel = cancel.clone();
        let mut polled =
            tokio::task::spawn_blocking(move || poll_batch(&consumer, &settings, once, &cancel))
                .await
                .map_err(|e| Error::Internal(format!("poll task: {e}")))??;
        let mut report = UnitReport {
            rows_in: polled.rows_in,
            caught_up: polled.caught_up,
            ..Default::default()
        };
        if polled.buffer.rows == 0 {
            return Ok(report);
        }
        let ranges = std::mem::take(&mut polled.buffer.ranges);
        let rows = polled.buffer.rows as u64;
        report.bytes_in = polled.buffer.bytes as u64;
        let batch = polled.buffer.finish()?;
        match self.commit(batch, &ranges).await? {
            Some(version) => {
                self.commit_kafka_offsets(&ranges);
                report.rows_out = rows;
                report.bytes_out = report.bytes_in;
                report.version_written = Some(version);
                debug!(rows, version, "bronze commit");
            }
            None => report.caught_up = false,
        }
        Ok(report)
    }
}

#[async_trait]
impl Job for BronzeJob {
    fn name(&self) -> String {
        format!("bronze:{}", self.table)
    }

    async fn run_unit(&mut self, cancel: &CancellationToken) -> Result<UnitReport> {
        let result = self.poll_and_commit(cancel).await;
        // A unit that read records without committing them all (an error, a failed or lost
        // commit, a rebalance) left the consumer past them: read them again from the table's
        // positions, or the next commit would skip them.
        if !matches!(&result, Ok(unit) if unit.rows_out == unit.rows_in) {
            self.consumer.context().unposition_all();
        }
        result
    }
}

/// `lakectl run bronze`.
pub const KIND: JobKind = JobKind {
    name: "bronze",
    summary: "Kafka topics -> raw Delta tables under <lake>/bronze, exactly once (continuous unless --once)",
    default_mode: Mode::Continuous,
    full_refresh: false,
    declared: |pipeline| pipeline.bronze.keys().cloned().collect(),
    writes: |table| vec![(Layer::Bronze, table.to_string())],
    run: |pipeline, tables, options| Box::pin(run_tables(pipeline, tables, options.mode)),
};

/// `lakectl run bronze [TABLE…]`: one job per table, run side by side on the shared runner.
pub async fn run_tables(pipeline: &Pipeline, tables: &[String], mode: Mode) -> Result<()> {
    let names = crate::stage::table_names(pipeline, "bronze", pipeline.bronze.keys(), tables)?;
    let cancel = lakehouse_core::runner::cancel_on_signals()?;
    let run_log = lakehouse_core::run_log::RunLog::new(pipeline.lake.open()?);
    let runs = names.iter().map(|name| {
        let runner = lakehouse_core::Runner::new(&pipeline.name, mode, cancel.clone())
            .with_config(&pipeline.runner)
            .with_run_log(run_log.clone());
        let cancel = cancel.clone();
        async move {
            let mut job = BronzeJob::new(pipeline, name, mode)?;
            let result = runner.run(&mut job).await;
            job.close().await;
            if result.is_err() {
                // One table stopped: the others end their units, and the process exits
                // non-zero for a supervisor to restart it.
                cancel.cancel();
            }
            result
        }
    });
    let results = futures::future::join_all(runs).await;
    for record in results.iter().flatten() {
        println!(
            "{}: {} — {} records in, {} rows written, table version {}",
            record.job,
            record.outcome.as_str(),
            record.rows_in,
            record.rows_out,
            crate::stage::version_or(record.last_version_written, "unchanged")
        );
    }
    results
        .into_iter()
        .find_map(Result::err)
        .map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nisshi (and Kafka's `log.message.timestamp.*.max.ms`) refuse such timestamps at
    /// produce time, so this is tested here rather than through a broker.
    /// A topic whose last offsets are a transaction's commit markers: `--once` waited for a
    /// record at those offsets for ever. Neither Nisshi (no transactions) nor librdkafka's mock
    /// cluster (it writes no markers: its high watermarks equal the records) has such a topic,
    /// so the rule is tested here.
    #[test]
    fn once_is_drained_when_the_position_passes_the_end_though_no_record_is_there() {
        let next = BTreeMap::from([(0, 5), (1, 8)]);
        // Records 0..5 then a commit marker at 5: the end at start is 6.
        let ends = HashMap::from([(0, 6), (1, 8)]);
        assert!(!drained(&next, &ends, |_| None), "by the last record alone");
        assert!(drained(&next, &ends, |p| Some(if p == 0 { 6 } else { 8 })));
        // A position behind the last record read (not yet updated) changes nothing.
        assert!(!drained(&next, &ends, |_| Some(0)));
        assert!(drained(&BTreeMap::from([(0, 6)]), &ends, |_| None));
    }

    #[test]
    fn kafka_timestamps_past_the_microsecond_range_are_no_time() {
        assert_eq!(kafka_micros(1_767_225_600_000), Some(1_767_225_600_000_000));
        assert_eq!(kafka_micros(-1), Some(-1000));
        assert_eq!(kafka_micros(i64::MAX / 100), None);
        assert_eq!(kafka_micros(i64::MIN), None);
    }
}
