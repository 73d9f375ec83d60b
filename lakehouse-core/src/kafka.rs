//! Kafka client plumbing shared by the producer and bronze.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// Base librdkafka settings for any client of this pipeline; the pipeline's `kafka.options`
/// come last so users can override them, and a client's own tuning goes in with
/// [`set_defaults`], which leaves what the options set alone.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", "lakectl")
        // Fail fast when the broker is down instead of librdkafka's endless reconnects.
        .set("socket.connection.setup.timeout.ms", "5000")
        .set("security.protocol", kafka.security_protocol.as_str());
    if let Some(mechanism) = kafka.sasl_mechanism {
        config.set("sasl.mechanism", mechanism.as_str());
    }
    let settings = [
        ("sasl.username", kafka.sasl_username.clone()),
        (
            "sasl.password",
            kafka.sasl_password.as_ref().map(|s| s.expose().to_string()),
        ),
        ("ssl.ca.location", path_text(&kafka.ssl_ca_location)),
        (
            "ssl.certificate.location",
            path_text(&kafka.ssl_certificate_location),
        ),
        ("ssl.key.location", path_text(&kafka.ssl_key_location)),
    ];
    for (key, value) in settings {
        if let Some(value) = value {
            config.set(key, value);
        }
    }
    // The key password only matters with a key (librdkafka rejects it alone).
    if let (Some(_), Some(password)) = (&kafka.ssl_key_location, &kafka.ssl_key_password) {
        config.set("ssl.key.password", password.expose());
    }
    for (key, value) in &kafka.options {
        config.set(key, value);
    }
    config
}

/// Sets each of a client's tuning `defaults` that the pipeline's `kafka.options` did not set:
/// the user's value wins. (Settings a client's correctness rests on are set outright.)
pub fn set_defaults<'a>(
    config: &mut ClientConfig,
    kafka: &KafkaConfig,
    defaults: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    for (key, value) in defaults {
        if !kafka.options.contains_key(key) {
            config.set(key, value);
        }
    }
}

fn path_text(path: &Option<std::path::PathBuf>) -> Option<String> {
    path.as_ref().map(|p| p.display().to_string())
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

/// Creates `topic` with `partitions` partitions unless it exists, and returns how many it has.
/// An existing topic is left as it is (a different count is logged, not changed).
pub async fn ensure_topic(kafka: &KafkaConfig, topic: &str, partitions: i32) -> Result<i32> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let unavailable = |e: &dyn std::fmt::Display| {
        Error::unavailable(format!("kafka broker {}", kafka.brokers), e)
    };
    let admin: AdminClient<DefaultClientContext> =
        client_config(kafka).create().map_err(Error::from)?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&[new], &options)
        .await
        .map_err(|e| unavailable(&e))?;
    for result in results {
        match result {
            Ok(_) => return Ok(partitions),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(Error::Input(format!(
                    "cannot create topic {topic:?} with {partitions} partitions: {code}"
                )))
            }
        }
    }
    let existing = partition_count(kafka, topic).await?;
    if existing != partitions {
        tracing::warn!(
            topic,
            existing,
            asked = partitions,
            "topic exists with another partition count; left as it is"
        );
    }
    Ok(existing)
}

/// How many partitions `topic` has (0 when it does not exist).
pub async fn partition_count(kafka: &KafkaConfig, topic: &str) -> Result<i32> {
    let config = client_config(kafka);
    let name = topic.to_string();
    let brokers = kafka.brokers.clone();
    tokio::task::spawn_blocking(move || -> Result<i32> {
        let consumer: BaseConsumer = config.create().map_err(Error::from)?;
        let metadata = consumer
            .fetch_metadata(Some(&name), Duration::from_secs(10))
            .map_err(|e| Error::unavailable(format!("kafka broker {brokers}"), e))?;
        Ok(metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32))
    })
    .await
    .map_err(|e| Error::Internal(format!("metadata task: {e}")))?
}

/// The partition the Java client's default partitioner (and librdkafka's `murmur2_random`)
/// gives `key` among `partitions`: murmur2 of the key bytes, made positive, modulo.
pub fn key_partition(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

/// Kafka's murmur2 (seed 0x9747b28c), as `org.apache.kafka.common.utils.Utils.murmur2`.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h = 0x9747_b28c_u32 ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if tail.len() == 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_defaults_yield_to_the_pipelines_options() {
        let kafka: KafkaConfig =
            toml::from_str("brokers = \"b:9092\"\noptions = { \"fetch.wait.max.ms\" = \"5\" }")
                .unwrap();
        let mut config = client_config(&kafka);
        set_defaults(
            &mut config,
            &kafka,
            [("fetch.wait.max.ms", "100"), ("linger.ms", "20")],
        );
        assert_eq!(
            config.get("fetch.wait.max.ms"),
            Some("5"),
            "the user's value"
        );
        assert_eq!(config.get("linger.ms"), Some("20"), "the client's default");
    }

    /// Values from Kafka's own test of `Utils.murmur2` (as signed Java ints).
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&str, i32); 4] = [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
        ];
        for (key, java) in cases {
            assert_eq!(murmur2(key.as_bytes()) as i32, java, "{key}");
        }
    }
}
