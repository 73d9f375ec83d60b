//! Fixtures shared by the CLI tests: the `lakectl` binary, the shipped pipeline, dead ports.
#![allow(dead_code)] // not every fixture is used by every test module

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use lakehouse_core::testing::{service_env, unique_name};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn books_pipeline() -> PathBuf {
    repo_root().join("pipelines/books.toml")
}

/// `lakectl` with the test's environment (the services' addresses included).
pub fn lakectl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lakectl"));
    cmd.env_remove("LAKECTL_PIPELINE").env("NO_COLOR", "1");
    cmd
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("lakectl runs");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A loopback port nothing listens on.
pub fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// True when every service of the stack is exported (panics under CI when one is not).
pub fn services_up() -> bool {
    ["LAKECTL_KAFKA_BROKERS", "AWS_ENDPOINT_URL", "DATABASE_URL"]
        .iter()
        .all(|v| service_env(v).is_some())
}

/// A pipeline of its own for one test: a unique topic, bronze table and lake prefix.
pub struct TestPipeline {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub lake_uri: String,
    pub topic: String,
    pub table: String,
}

impl TestPipeline {
    /// `None` (or a panic under CI) when the services are not up. `bronze` is extra TOML
    /// for the `[bronze.<table>]` section (flush limits).
    pub fn new(bronze: &str) -> Option<TestPipeline> {
        if !services_up() {
            return None;
        }
        let name = unique_name("t");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.toml");
        std::fs::write(
            &path,
            format!("name = \"{name}\"\n[bronze.{name}]\ntopic = \"{name}\"\n{bronze}\n"),
        )
        .unwrap();
        Some(TestPipeline {
            _dir: dir,
            path,
            lake_uri: format!("s3://lake/{name}/"),
            topic: name.clone(),
            table: name,
        })
    }

    /// `lakectl -p <pipeline>` writing to this test's lake prefix.
    pub fn lakectl(&self) -> Command {
        let mut cmd = lakectl();
        cmd.arg("-p")
            .arg(&self.path)
            .env("LAKECTL_LAKE_URI", &self.lake_uri);
        cmd
    }

    pub fn pipeline(&self) -> lakehouse_core::Pipeline {
        let lake_uri = self.lake_uri.clone();
        lakehouse_core::Pipeline::load(
            &self.path,
            &move |v| {
                if v == "LAKECTL_LAKE_URI" {
                    Some(lake_uri.clone())
                } else {
                    std::env::var(v).ok()
                }
            },
            &[],
        )
        .unwrap()
    }

    pub fn lake(&self) -> lakehouse_core::Lake {
        lakehouse_core::Lake::from_config(&self.pipeline().lake).unwrap()
    }

    pub fn create_topic(&self, partitions: i32) {
        create_topic(&self.topic, partitions);
    }
}

pub fn brokers() -> String {
    std::env::var("LAKECTL_KAFKA_BROKERS").unwrap()
}

pub fn create_topic(topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

/// One Kafka record as read back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Every record of a topic, read by assignment (no group) up to the high watermarks.
pub fn read_topic(topic: &str) -> Vec<Record> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};
    use std::time::Duration;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique_name("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for &p in &partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let total: i64 = ends.values().sum();
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (records.len() as i64) < total {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of {total} records",
            records.len()
        );
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            let msg = msg.unwrap();
            records.push(Record {
                partition: msg.partition(),
                offset: msg.offset(),
                key: msg.key().map(<[u8]>::to_vec),
                value: msg.payload().map(<[u8]>::to_vec),
                headers: msg
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    records.sort();
    records
}

/// Produces raw records (bytes as given) to a topic; returns when all are delivered.
pub fn produce_raw(topic: &str, records: &[(Option<&[u8]>, Option<&[u8]>)]) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    for (key, value) in records {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(std::time::Duration::from_secs(30)).unwrap();
}

/// Rows in a bronze table, from the Delta log's statistics (cheap enough to poll).
pub fn bronze_count(lake: &lakehouse_core::Lake, table: &str) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let Some(t) = lake
            .load_table(lakehouse_core::Layer::Bronze, table)
            .await
            .unwrap()
        else {
            return 0;
        };
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("t", t.table_provider().await.unwrap())
            .unwrap();
        let batches = ctx
            .sql("SELECT count(*) FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        use arrow::array::AsArray;
        batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0) as usize
    })
}

/// (partition, offset, value) of every row of a bronze table, sorted.
pub fn bronze_rows(lake: &lakehouse_core::Lake, table: &str) -> Vec<(i32, i64, Option<Vec<u8>>)> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, Int64Type};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let Some(t) = lake.load_table(lakehouse_core::Layer::Bronze, table).await.unwrap() else {
            return Vec::new();
        };
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("t", t.table_provider().await.unwrap()).unwrap();
        let batches = ctx
            .sql("SELECT _partition, _offset, CAST(value AS BYTEA) AS value FROM t ORDER BY _partition, _offset")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut rows = Vec::new();
        for b in &batches {
            let values = arrow::compute::cast(b.column(2), &arrow::datatypes::DataType::Binary).unwrap();
            let (p, o, v) = (b.column(0).as_primitive::<Int32Type>(), b.column(1).as_primitive::<Int64Type>(), values.as_binary::<i32>());
            for i in 0..b.num_rows() {
                rows.push((p.value(i), o.value(i), (!v.is_null(i)).then(|| v.value(i).to_vec())));
            }
        }
        rows
    })
}
