//! Kafka client plumbing shared by the producer and bronze.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// Base librdkafka settings for any client of this pipeline; the pipeline's `kafka.options`
/// come last so users can override anything.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", "lakectl")
        // Fail fast when the broker is down instead of librdkafka's endless reconnects.
        .set("socket.connection.setup.timeout.ms", "5000");
    for (key, value) in &kafka.options {
        config.set(key, value);
    }
    config
}

/// Asks the cluster for its metadata; returns the number of brokers that answered.
pub async fn probe(kafka: &KafkaConfig, timeout: Duration) -> Result<usize> {
    let config = client_config(kafka);
    let brokers = kafka.brokers.clone();
    let unavailable =
        move |e: &dyn std::fmt::Display| Error::unavailable(format!("kafka broker {brokers}"), e);
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create().map_err(Error::from)?;
        let metadata = consumer
            .fetch_metadata(None, timeout)
            .map_err(|e| unavailable(&e))?;
        match metadata.brokers().len() {
            0 => Err(unavailable(&"metadata lists no brokers")),
            n => Ok(n),
        }
    })
    .await
    .map_err(|e| Error::Internal(format!("metadata probe task: {e}")))?
}
