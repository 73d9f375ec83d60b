//! Sending records to one Kafka topic, shared by `produce` and `generate`: idempotent with
//! `acks=all`, paced to a rate, waiting for librdkafka's queue when it is full, and counting
//! delivery reports so a run reports exactly what the broker confirmed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lakehouse_core::config::KafkaConfig;
use lakehouse_core::{Error, Result};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use tracing::info;

/// Holds a loop to `rate` records per second of wall time since it started.
pub struct Pace {
    started: Instant,
    rate: Option<f64>,
}

impl Pace {
    pub fn new(rate: Option<f64>) -> Pace {
        Pace {
            started: Instant::now(),
            rate,
        }
    }

    /// Sleeps until record number `n` (0-based) is due.
    pub fn wait_for(&self, n: u64) {
        if let Some(rate) = self.rate {
            let due = self.started + Duration::from_secs_f64(n as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// What the broker confirmed at the end of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    pub sent: u64,
    pub delivered: u64,
    /// Failed delivery reports plus records with no report by the end of the final flush.
    pub failed: u64,
}

/// Counts delivery reports; librdkafka calls it from `poll`/`flush`.
#[derive(Default)]
struct DeliveryCounter {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .expect("delivery lock")
                    .get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// A producer for one topic. Synchronous: use it from a blocking thread.
pub struct TopicProducer {
    producer: BaseProducer<DeliveryCounter>,
    topic: String,
    pace: Pace,
    sent: u64,
}

impl TopicProducer {
    /// Our throughput settings and `extra` apply where the pipeline's `kafka.options` do not
    /// set the same key; the delivery guarantees always apply.
    pub fn new(
        kafka: &KafkaConfig,
        topic: &str,
        rate: Option<f64>,
        extra: &[(&str, &str)],
    ) -> Result<TopicProducer> {
        TopicProducer::configured(kafka, topic, rate, extra, &[])
    }

    /// [`TopicProducer::new`] with settings `fixed` that beat the pipeline's `kafka.options`.
    fn configured(
        kafka: &KafkaConfig,
        topic: &str,
        rate: Option<f64>,
        extra: &[(&str, &str)],
        fixed: &[(&str, &str)],
    ) -> Result<TopicProducer> {
        let mut config = lakehouse_core::kafka::client_config(kafka);
        // Larger batches: +10 % records/s into Nisshi on 2 cores, for at most 20 ms of latency.
        // One request in flight: with more, librdkafka's broker thread spins between the small
        // requests of a paced or trickling stream (generate at 2,000 records/s: 0.9 of a core
        // with 5 in flight, 0.06 with 1; 100,000 records unpaced: 46.3 s and 48.8 s, as fast
        // as Nisshi takes them either way). Delivery and order are the same.
        let ours = [
            ("linger.ms", "20"),
            ("max.in.flight.requests.per.connection", "1"),
            ("batch.num.messages", "100000"),
            ("queue.buffering.max.messages", "500000"),
            ("message.timeout.ms", "60000"),
        ];
        lakehouse_core::kafka::set_defaults(&mut config, kafka, ours.iter().chain(extra).copied());
        config.set("enable.idempotence", "true").set("acks", "all");
        for (key, value) in fixed {
            config.set(*key, *value);
        }
        let producer = config
            .create_with_context(DeliveryCounter::default())
            .map_err(Error::from)?;
        Ok(TopicProducer {
            producer,
            topic: topic.to_string(),
            pace: Pace::new(rate),
            sent: 0,
        })
    }

    /// A producer that never leaves a gap in a partition: its messages never time out (a
    /// message that times out while later ones land is a gap), and any other gap is a fatal
    /// error that fails every message after it. For the sink, which trusts that each
    /// partition holds a prefix of what it sent; these two settings beat `kafka.options`.
    pub fn without_gaps(kafka: &KafkaConfig, topic: &str) -> Result<TopicProducer> {
        TopicProducer::configured(
            kafka,
            topic,
            None,
            &[],
            &[
                ("message.timeout.ms", "0"),
                ("enable.gapless.guarantee", "true"),
            ],
        )
    }

    pub fn sent(&self) -> u64 {
        self.sent
    }

    pub fn delivered(&self) -> u64 {
        self.producer.context().delivered.load(Ordering::Relaxed)
    }

    pub fn elapsed(&self) -> Duration {
        self.pace.elapsed()
    }

    /// Sends one record when the rate allows, waiting for queue space when librdkafka's
    /// buffer is full. Serves delivery reports every 1,000 records. Without a `partition`
    /// the partitioner picks one from the key.
    pub fn send(
        &mut self,
        payload: &[u8],
        key: Option<&[u8]>,
        headers: OwnedHeaders,
        partition: Option<i32>,
    ) -> Result<()> {
        self.pace.wait_for(self.sent);
        let mut record = BaseRecord::to(&self.topic)
            .payload(payload)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        self.sent += 1;
        if self.sent.is_multiple_of(1_000) {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    /// Waits for every delivery report of what was sent, whatever `outcome` the sending loop
    /// had, then returns the counts, the loop's error, or an error for what was not delivered.
    pub fn finish(&self, outcome: Result<()>) -> Result<Delivery> {
        let flushed = self.producer.flush(Duration::from_secs(120));
        let context = self.producer.context();
        let delivered = context.delivered.load(Ordering::Relaxed);
        let failed = context.failed.load(Ordering::Relaxed);
        let unconfirmed = self.sent.saturating_sub(delivered + failed);
        let delivery = Delivery {
            sent: self.sent,
            delivered,
            failed: failed + unconfirmed,
        };
        info!(
            topic = %self.topic,
            sent = delivery.sent,
            delivered = delivery.delivered,
            failed = delivery.failed,
            "deliveries confirmed"
        );
        outcome?;
        if let Err(e) = flushed {
            return Err(Error::unavailable(
                "kafka broker",
                format!("deliveries unconfirmed after flush: {e}"),
            ));
        }
        if delivery.failed > 0 {
            let first = context.first_error.lock().expect("delivery lock").clone();
            return Err(Error::unavailable(
                "kafka broker",
                format!(
                    "{} of {} records were not delivered (first error: {})",
                    delivery.failed,
                    delivery.sent,
                    first.unwrap_or_default()
                ),
            ));
        }
        Ok(delivery)
    }
}
