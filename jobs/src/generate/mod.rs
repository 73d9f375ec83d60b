//! `lakectl generate`: deterministic synthetic event streams with known defects.
//!
//! A stream is one sequence per seed and options: `--count`, `--duration` and `--forever`
//! only decide where it stops, and `--rate` only how fast it is sent. Each profile
//! (`user_activity.rs`, `customer_events.rs`, `ecommerce.rs`, `orders.rs`) runs a fixed
//! number of *slots*; a slot runs one actor at a time (a visit, a viewing session, an order)
//! that emits a burst of events with gaps, then the next actor after a pause. Arrival times
//! come from the slots, so the stream holds `--event-rate` events per second of event time.
//!
//! Every record is exactly one of: clean; **late** (its event time set back by `--late-by`
//! plus jitter); **corrupt** (one of the profile's corruptions); a **duplicate** (the exact
//! bytes and key of a recent clean record sent again). Which one is drawn from stratified
//! blocks of 1,000 records, so each fraction holds to within one record per block. The truth
//! file lists every late, corrupt and duplicate record with its position (`seq`, also the
//! Kafka header `seq`).

mod avro;
mod customer_events;
mod ecommerce;
mod json;
mod options;
mod orders;
mod random;
mod user_activity;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lakehouse_core::config::RecordFormat;
use lakehouse_core::registry::SchemaRegistry;
use lakehouse_core::telemetry::Progress;
use lakehouse_core::{Error, Pipeline, Result};
use rdkafka::message::{Header, OwnedHeaders};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::topic_producer::{Pace, TopicProducer};
use json::Json;
pub use options::RunFlags;
pub use random::Rand;

/// The streams `lakectl generate` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileName {
    /// Website visits: page views, clicks, searches; keyed by user_id.
    UserActivity,
    /// Streaming-app events with nested device, location, content, subscription; keyed by user_id.
    CustomerEvents,
    /// Shop events: page_view, search, add_to_cart, purchase; keyed by user_id.
    Ecommerce,
    /// Order lifecycles in an envelope with a SHA-256 checksum of the payload; keyed by order_id.
    Orders,
}

impl ProfileName {
    pub fn name(self) -> &'static str {
        match self {
            ProfileName::UserActivity => "user-activity",
            ProfileName::CustomerEvents => "customer-events",
            ProfileName::Ecommerce => "ecommerce",
            ProfileName::Orders => "orders",
        }
    }

    fn build(self, seed: u64, start_ms: i64, event_rate: f64) -> Box<dyn Profile> {
        match self {
            ProfileName::UserActivity => {
                Box::new(user_activity::UserActivity::new(seed, start_ms, event_rate))
            }
            ProfileName::CustomerEvents => Box::new(customer_events::CustomerEvents::new(
                seed, start_ms, event_rate,
            )),
            ProfileName::Ecommerce => {
                Box::new(ecommerce::Ecommerce::new(seed, start_ms, event_rate))
            }
            ProfileName::Orders => Box::new(orders::Orders::new(seed, start_ms, event_rate)),
        }
    }

    /// The profile's Avro schema, for `--format avro`.
    pub fn avro_schema(self) -> Option<&'static str> {
        match self {
            ProfileName::CustomerEvents => Some(customer_events::AVRO_SCHEMA),
            _ => None,
        }
    }
}

/// When a run stops (besides SIGINT/SIGTERM).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    Count(u64),
    After(Duration),
    Forever,
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub profile: ProfileName,
    /// What goes to Kafka (files are always NDJSON).
    pub format: RecordFormat,
    /// Kafka topic; unused when `out` is set.
    pub topic: Option<String>,
    /// Create the topic with this many partitions when it does not exist.
    pub partitions: Option<i32>,
    /// An NDJSON file instead of Kafka: one record value per line.
    pub out: Option<PathBuf>,
    pub truth: Option<PathBuf>,
    pub stop: Stop,
    /// Records per second of wall time; unlimited when absent.
    pub rate: Option<f64>,
    /// Events per second of event time.
    pub event_rate: f64,
    pub seed: u64,
    /// Event time of the stream's start, ms since the epoch.
    pub start_ms: i64,
    pub out_of_order: Duration,
    pub late_fraction: f64,
    pub late_by: Duration,
    pub duplicate_fraction: f64,
    pub corrupt_fraction: f64,
}

#[derive(Debug, Clone, Default)]
pub struct GenerateReport {
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub late: u64,
    pub duplicates: u64,
    /// Corrupt records per corruption.
    pub corrupt: BTreeMap<&'static str, u64>,
    /// Event time of the first and the last original event.
    pub event_time_span: Option<(i64, i64)>,
    pub elapsed: Duration,
}

/// One original event as a profile writes it.
#[derive(Default, Clone)]
pub struct Event {
    pub value: Vec<u8>,
    pub key: String,
    pub event_id: String,
    /// When it arrives, in the stream's order (ms since the epoch).
    pub arrival_ms: i64,
    /// The time it carries: arrival minus the jitter (and the lateness, for a late event).
    pub event_ms: i64,
}

/// A kind of synthetic stream.
trait Profile: Send {
    /// The corruptions this profile can apply, named as in the truth file.
    fn corruptions(&self) -> &'static [&'static str];
    /// Writes the next event into `event`: it carries `arrival - delay_ms` as its time and
    /// the given corruption, if any.
    fn next(
        &mut self,
        rng: &mut Rand,
        delay_ms: i64,
        corruption: Option<&'static str>,
        event: &mut Event,
    );
}

/// What one record of the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Clean,
    Late,
    Corrupt,
    Duplicate,
}

/// Draws each record's kind from stratified blocks: block after block, the positions
/// 0..1000 are shuffled and position k stands for the interval [k/1000, (k+1)/1000), so
/// every block holds each kind's share to within one record.
struct Strata {
    block: Vec<u32>,
    next: usize,
    corrupt: f64,
    late: f64,
    duplicate: f64,
}

const STRATA_BLOCK: u32 = 1000;

impl Strata {
    fn new(corrupt: f64, late: f64, duplicate: f64) -> Strata {
        Strata {
            block: (0..STRATA_BLOCK).collect(),
            next: STRATA_BLOCK as usize,
            corrupt,
            late,
            duplicate,
        }
    }

    fn draw(&mut self, rng: &mut Rand) -> Kind {
        if self.next == self.block.len() {
            for i in (1..self.block.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                self.block.swap(i, j);
            }
            self.next = 0;
        }
        let u = (self.block[self.next] as f64 + rng.unit()) / STRATA_BLOCK as f64;
        self.next += 1;
        if u < self.corrupt {
            Kind::Corrupt
        } else if u < self.corrupt + self.late {
            Kind::Late
        } else if u < self.corrupt + self.late + self.duplicate {
            Kind::Duplicate
        } else {
            Kind::Clean
        }
    }
}

/// How a profile's actors behave: `events` per actor on average, `gap_s` seconds apart on
/// average, then a pause of `pause_s` on average before the slot's next actor starts.
pub struct Burst {
    pub events: f64,
    pub gap_s: f64,
    pub pause_s: f64,
}

impl Burst {
    /// Milliseconds a slot spends per event, pauses included.
    fn ms_per_event(&self) -> f64 {
        ((self.events - 1.0) * self.gap_s + self.pause_s) / self.events * 1000.0
    }
}

/// Actors that each emit a burst of events. A fixed number of slots run one actor at a time;
/// the slot of the earliest due actor is served next, so arrival times never go back.
pub struct Slots<A> {
    due: BinaryHeap<Reverse<(i64, usize)>>,
    actors: Vec<A>,
    /// Arrival time of the event served last.
    now: i64,
}

impl<A> Slots<A> {
    /// Enough slots for `event_rate` events per second of event time; the first actors start
    /// within one cycle after `start_ms`.
    pub fn new(
        seed: u64,
        start_ms: i64,
        event_rate: f64,
        burst: &Burst,
        mut first: impl FnMut(&mut Rand) -> A,
    ) -> Slots<A> {
        let mut rng = Rand::stream(seed, stream::SLOTS);
        let ms_per_event = burst.ms_per_event();
        let count = ((event_rate * ms_per_event / 1000.0).ceil() as usize).max(1);
        let mut slots = Slots {
            due: BinaryHeap::with_capacity(count),
            actors: Vec::with_capacity(count),
            now: start_ms,
        };
        for slot in 0..count {
            slots.actors.push(first(&mut rng));
            let offset = rng.below(ms_per_event as u64 + 1) as i64;
            slots.due.push(Reverse((start_ms + offset, slot)));
        }
        slots
    }

    /// Serves the slot due next: gives `event` a new id, its arrival time, and that time less
    /// `delay_ms` as its event time. Hand the slot back with `again` or `replace`.
    pub fn next_event(&mut self, rng: &mut Rand, delay_ms: i64, event: &mut Event) -> usize {
        let Reverse((at, slot)) = self.due.pop().expect("slots are never empty");
        self.now = at;
        rng.uuid(&mut event.event_id);
        event.arrival_ms = at;
        event.event_ms = at - delay_ms;
        slot
    }

    pub fn actor(&mut self, slot: usize) -> &mut A {
        &mut self.actors[slot]
    }

    /// The slot's actor emits again after a gap of `gap_s` seconds on average.
    pub fn again(&mut self, slot: usize, rng: &mut Rand, gap_s: f64) {
        let at = self.now + ms(rng.exp(gap_s));
        self.due.push(Reverse((at, slot)));
    }

    /// The slot's actor is done: `next` starts after a pause of `pause_s` seconds on average.
    pub fn replace(&mut self, slot: usize, rng: &mut Rand, pause_s: f64, next: A) {
        self.actors[slot] = next;
        self.again(slot, rng, pause_s);
    }
}

/// A population of users whose activity is Zipf-like (exponent 0.7): a few are very active,
/// most rarely seen.
pub struct Users {
    activity: random::Zipf,
    count: usize,
}

impl Users {
    pub fn new(count: usize) -> Users {
        Users {
            activity: random::Zipf::new(count, 0.7),
            count,
        }
    }

    /// A user drawn by activity: their rank (0 is the most active) and id. Ids are a fixed
    /// permutation of the ranks, so the most active users are not simply the lowest ids.
    pub fn draw(&self, rng: &mut Rand) -> (usize, String) {
        let rank = self.activity.sample(rng);
        (rank, format!("u{:06}", rank * 7919 % self.count))
    }
}

/// Milliseconds of `seconds`, at least 1.
fn ms(seconds: f64) -> i64 {
    ((seconds * 1000.0) as i64).max(1)
}

/// The stream's random purposes (see [`Rand::stream`]).
pub mod stream {
    pub const EVENTS: u64 = 1;
    pub const DEFECTS: u64 = 2;
    pub const SLOTS: u64 = 3;
    /// Stable attributes of an entity (a user's device, a product's price): stream
    /// `ENTITY + id`, so they never depend on when the entity first appears.
    pub const ENTITY: u64 = 1 << 32;
}

/// Where records go.
enum Sink {
    /// With the Avro schema and its registry id under `--format avro`.
    Kafka(TopicProducer, Option<(avro::AvroType, u32)>),
    File {
        out: BufWriter<File>,
        path: PathBuf,
        pace: Pace,
    },
}

impl Sink {
    fn send(&mut self, value: &[u8], key: &str, seq: u64) -> Result<()> {
        match self {
            Sink::Kafka(producer, avro) => {
                let seq = seq.to_string();
                let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
                    key: "seq",
                    value: Some(seq.as_bytes()),
                });
                let framed = avro
                    .as_ref()
                    .map(|(schema, id)| to_avro(schema, *id, value));
                let value = framed.as_deref().unwrap_or(value);
                producer.send(value, Some(key.as_bytes()), headers, None)
            }
            Sink::File { out, path, pace } => {
                pace.wait_for(seq);
                out.write_all(value)
                    .and_then(|_| out.write_all(b"\n"))
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))
            }
        }
    }
}

/// A record in Avro, framed. A record a corruption made unfit for the schema (a timestamp as
/// a number) goes as its JSON text, unframed: what a producer writing JSON to an Avro topic
/// sends, and what a consumer must quarantine.
fn to_avro(schema: &avro::AvroType, id: u32, json: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(json.len());
    let value: serde_json::Value = serde_json::from_slice(json).expect("profiles write valid JSON");
    match schema.encode(&value, &mut body) {
        Ok(()) => avro::framed(id, &body),
        Err(_) => json.to_vec(),
    }
}

/// Generates the stream into Kafka or a file. Runs on a blocking thread.
pub async fn run(
    pipeline: &Pipeline,
    options: GenerateOptions,
    cancel: CancellationToken,
) -> Result<GenerateReport> {
    let sink = match (&options.out, &options.topic) {
        (Some(path), _) => Sink::File {
            out: create(path)?,
            path: path.clone(),
            pace: Pace::new(options.rate),
        },
        (None, Some(topic)) => {
            lakehouse_core::kafka::probe(&pipeline.kafka, Duration::from_secs(10)).await?;
            if let Some(partitions) = options.partitions {
                lakehouse_core::kafka::ensure_topic(&pipeline.kafka, topic, partitions).await?;
            }
            let avro = match options.format {
                RecordFormat::Json => None,
                RecordFormat::Avro => Some(register_schema(pipeline, &options, topic).await?),
            };
            // Kafka's own partitioner (murmur2), so keys land where Java clients put them.
            Sink::Kafka(
                TopicProducer::new(
                    &pipeline.kafka,
                    topic,
                    options.rate,
                    &[("partitioner", "murmur2_random")],
                )?,
                avro,
            )
        }
        (None, None) => {
            return Err(Error::Input(
                "no destination: give --topic (or [generate] topic) or --out FILE".into(),
            ))
        }
    };
    let truth = options.truth.as_deref().map(create).transpose()?;
    tokio::task::spawn_blocking(move || generate(&options, sink, truth, &cancel))
        .await
        .map_err(|e| Error::Internal(format!("generator thread: {e}")))?
}

/// Registers the profile's Avro schema under `<topic>-value`, as Confluent's serializers do.
async fn register_schema(
    pipeline: &Pipeline,
    options: &GenerateOptions,
    topic: &str,
) -> Result<(avro::AvroType, u32)> {
    let schema = options
        .profile
        .avro_schema()
        .ok_or_else(|| Error::Internal("an Avro run of a profile without a schema".into()))?;
    let url = pipeline.schema_registry.url.as_deref().ok_or_else(|| {
        Error::Input(
            "--format avro needs the schema registry: set schema_registry.url (or \
             LAKECTL_SCHEMA_REGISTRY_URL)"
                .into(),
        )
    })?;
    let id = SchemaRegistry::new(url)?
        .register(&format!("{topic}-value"), schema)
        .await?;
    let parsed = avro::AvroType::parse(schema)
        .map_err(|e| Error::Internal(format!("the profile's Avro schema: {e}")))?;
    Ok((parsed, id))
}

/// A buffered file for the records or the truth; a path that cannot be created is the user's.
fn create(path: &std::path::Path) -> Result<BufWriter<File>> {
    let file = File::create(path)
        .map_err(|e| Error::Input(format!("cannot create {}: {e}", path.display())))?;
    Ok(BufWriter::with_capacity(1 << 20, file))
}

/// Recent clean records a duplicate may repeat.
const RECENT: usize = 1000;

fn generate(
    options: &GenerateOptions,
    mut sink: Sink,
    mut truth: Option<BufWriter<File>>,
    cancel: &CancellationToken,
) -> Result<GenerateReport> {
    let started = Instant::now();
    let mut profile = options
        .profile
        .build(options.seed, options.start_ms, options.event_rate);
    let corruptions = profile.corruptions();
    let mut events = Rand::stream(options.seed, stream::EVENTS);
    let mut defects = Rand::stream(options.seed, stream::DEFECTS);
    let mut strata = Strata::new(
        options.corrupt_fraction,
        options.late_fraction,
        options.duplicate_fraction,
    );
    let jitter_ms = options.out_of_order.as_millis() as u64;
    let late_ms = options.late_by.as_millis() as i64;
    let mut recent: VecDeque<(u64, Event)> = VecDeque::with_capacity(RECENT);
    let mut event = Event::default();
    let mut report = GenerateReport::default();
    let mut line = Vec::with_capacity(256);
    let progress = Progress::new(&format!("generate:{}", options.profile.name()));
    let mut seq = 0u64;
    let outcome: Result<()> = loop {
        let done = match options.stop {
            Stop::Count(n) => seq >= n,
            Stop::After(d) => started.elapsed() >= d,
            Stop::Forever => false,
        };
        if done || cancel.is_cancelled() {
            break Ok(());
        }
        let mut kind = strata.draw(&mut defects);
        if kind == Kind::Duplicate && recent.is_empty() {
            kind = Kind::Clean;
        }
        line.clear();
        let sent = if kind == Kind::Duplicate {
            let (of_seq, original) = &recent[defects.below(recent.len() as u64) as usize];
            report.duplicates += 1;
            let mut t = truth_line(&mut line, seq, original, "duplicate");
            t.int("of_seq", *of_seq as i64);
            t.end();
            sink.send(&original.value, &original.key, seq)
        } else {
            let jitter = if jitter_ms > 0 {
                defects.below(jitter_ms + 1) as i64
            } else {
                0
            };
            let (delay, corruption) = match kind {
                Kind::Late => (jitter + late_ms, None),
                Kind::Corrupt => (jitter, Some(defects.pick(corruptions))),
                _ => (jitter, None),
            };
            profile.next(&mut events, delay, corruption, &mut event);
            report.event_time_span = Some(match report.event_time_span {
                None => (event.event_ms, event.event_ms),
                Some((first, _)) => (first, event.event_ms),
            });
            match (kind, corruption) {
                (Kind::Late, _) => {
                    report.late += 1;
                    let mut t = truth_line(&mut line, seq, &event, "late");
                    t.int("late_by_ms", delay)
                        .time("event_time", event.event_ms)
                        .time("arrival_time", event.arrival_ms);
                    t.end();
                }
                (_, Some(name)) => {
                    *report.corrupt.entry(name).or_default() += 1;
                    let mut t = truth_line(&mut line, seq, &event, "corrupt");
                    t.str("corruption", name);
                    t.end();
                }
                _ => {}
            }
            let sent = sink.send(&event.value, &event.key, seq);
            if kind == Kind::Clean {
                if recent.len() == RECENT {
                    let (_, reused) = recent.pop_front().expect("full");
                    recent.push_back((seq, std::mem::replace(&mut event, reused)));
                } else {
                    recent.push_back((seq, event.clone()));
                }
            }
            sent
        };
        if let Err(e) = sent {
            break Err(e);
        }
        if let (Some(out), false) = (truth.as_mut(), line.is_empty()) {
            line.push(b'\n');
            if let Err(e) = out.write_all(&line) {
                break Err(Error::io("writing the truth file", e));
            }
        }
        seq += 1;
        if seq.is_multiple_of(10_000) {
            progress.update(|| format!("{seq} records"));
        }
    };
    progress.finish();
    let flushed = match &mut truth {
        Some(out) => out
            .flush()
            .map_err(|e| Error::io("writing the truth file", e)),
        None => Ok(()),
    };
    match sink {
        Sink::Kafka(producer, _) => {
            let delivery = producer.finish(outcome.and(flushed))?;
            report.sent = delivery.sent;
            report.delivered = delivery.delivered;
            report.failed = delivery.failed;
        }
        Sink::File { mut out, path, .. } => {
            outcome.and(flushed)?;
            out.flush()
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            report.sent = seq;
            report.delivered = seq;
        }
    }
    report.elapsed = started.elapsed();
    info!(
        sent = report.sent,
        late = report.late,
        duplicates = report.duplicates,
        corrupt = report.corrupt.values().sum::<u64>(),
        "generate finished"
    );
    Ok(report)
}

/// Starts a truth-file line for `event` at position `seq`; add fields, then `end` it.
fn truth_line<'a>(line: &'a mut Vec<u8>, seq: u64, event: &Event, defect: &str) -> Json<'a> {
    let mut t = Json::object(line);
    t.int("seq", seq as i64)
        .str("event_id", &event.event_id)
        .str("key", &event.key)
        .str("defect", defect);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strata_hold_each_share_to_one_record_per_block() {
        let mut rng = Rand::stream(1, 1);
        let mut strata = Strata::new(0.03, 0.05, 0.02);
        let mut counts = BTreeMap::new();
        for _ in 0..10 * STRATA_BLOCK {
            *counts
                .entry(format!("{:?}", strata.draw(&mut rng)))
                .or_insert(0) += 1;
        }
        assert_eq!(counts["Corrupt"], 300);
        assert_eq!(counts["Late"], 500);
        assert_eq!(counts["Duplicate"], 200);
        assert_eq!(counts["Clean"], 9000);
    }

    #[test]
    fn slots_serve_in_time_order_at_the_event_rate() {
        let burst = Burst {
            events: 5.0,
            gap_s: 5.0,
            pause_s: 5.0,
        };
        let mut slots = Slots::new(2, 1_000, 100.0, &burst, |_| ());
        assert_eq!(slots.actors.len(), 500);
        let mut rng = Rand::stream(2, 2);
        let mut event = Event::default();
        let mut last = 0;
        for _ in 0..50_000 {
            let slot = slots.next_event(&mut rng, 0, &mut event);
            assert!(event.arrival_ms >= last);
            last = event.arrival_ms;
            slots.again(slot, &mut rng, 5.0);
        }
        // 50,000 events at 100 per second take about 500 s of event time.
        assert!((450_000..550_000).contains(&(last - 1_000)), "{last}");
    }

    /// Every profile: same seed, same bytes; every corruption changes the record; records
    /// are JSON objects with the profile's key field.
    #[test]
    fn profiles_are_deterministic_and_apply_every_corruption() {
        for name in [
            ProfileName::UserActivity,
            ProfileName::CustomerEvents,
            ProfileName::Ecommerce,
            ProfileName::Orders,
        ] {
            let stream = |seed: u64, corruption: Option<&'static str>| {
                let mut profile = name.build(seed, 1_767_225_600_000, 50.0);
                let mut rng = Rand::stream(seed, stream::EVENTS);
                let mut event = Event::default();
                (0..300)
                    .map(|_| {
                        profile.next(&mut rng, 0, corruption, &mut event);
                        String::from_utf8(event.value.clone()).unwrap()
                    })
                    .collect::<Vec<_>>()
            };
            let clean = stream(1, None);
            assert_eq!(clean, stream(1, None), "{name:?}");
            assert_ne!(clean, stream(2, None), "{name:?}");
            for value in &clean {
                let v: serde_json::Value = serde_json::from_str(value).unwrap();
                assert!(v.is_object(), "{name:?}: {value}");
            }
            for corruption in name.build(1, 0, 1.0).corruptions() {
                let bad = stream(1, Some(corruption));
                assert!(
                    bad.iter().zip(&clean).all(|(b, c)| b != c),
                    "{name:?}: {corruption} left a record as it was"
                );
            }
        }
    }

    /// Every clean customer event fits the profile's Avro schema; a `wrong_type` one does not
    /// and goes as JSON text; `missing_field` still fits (user_id is nullable).
    #[test]
    fn customer_events_encode_in_avro_and_wrong_types_go_as_json() {
        let schema = avro::AvroType::parse(customer_events::AVRO_SCHEMA).unwrap();
        let name = ProfileName::CustomerEvents;
        let mut profile = name.build(1, 1_767_225_600_000, 50.0);
        let mut rng = Rand::stream(1, stream::EVENTS);
        let mut event = Event::default();
        for corruption in [None, Some("missing_field"), Some("wrong_type")] {
            for _ in 0..200 {
                profile.next(&mut rng, 0, corruption, &mut event);
                let sent = to_avro(&schema, 7, &event.value);
                let framed = sent.starts_with(&[0, 0, 0, 0, 7]);
                assert_eq!(framed, corruption != Some("wrong_type"), "{corruption:?}");
                if !framed {
                    assert_eq!(sent, event.value);
                }
            }
        }
    }
}
