//! Fixtures shared by the CLI tests: the `lakectl` binary, the shipped pipeline, dead ports.
#![allow(dead_code)] // not every fixture is used by every test module

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use lakehouse_core::testing::{service_env, unique_name};
pub use lakehouse_core::Layer;

/// A record to produce as raw bytes: (key, value), either may be absent.
pub type RawRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

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

/// The run, after asserting it exited 0 (its output shown when not).
pub fn ok(out: Run) -> Run {
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    out
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

/// A loopback port nothing listens on now: a dead address, or one for a test's own service.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `curl` a URL: (HTTP status, body).
pub fn http_get(url: &str, query: Option<&str>) -> (u16, String) {
    let mut curl = std::process::Command::new("curl");
    curl.args(["-s", "-G", "-w", "\n%{http_code}", url]);
    if let Some(q) = query {
        curl.arg("--data-urlencode").arg(format!("query={q}"));
    }
    let out = curl.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// True when every service of the stack is exported (panics under CI when one is not).
pub fn services_up() -> bool {
    ["LAKECTL_KAFKA_BROKERS", "AWS_ENDPOINT_URL", "DATABASE_URL"]
        .iter()
        .all(|v| service_env(v).is_some())
}

/// Runs a future to completion from a synchronous test.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A pipeline of its own for one test: a unique topic, bronze table and lake prefix.
pub struct TestPipeline {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub lake_uri: String,
    pub topic: String,
    pub table: String,
    /// The Postgres table the pipeline loads into (books pipeline only).
    pub pg_target: String,
    /// Env overrides for lakectl and for the test's own clients (beat the process env).
    env: std::collections::BTreeMap<String, String>,
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
        let lake_uri = format!("s3://lake/{name}/");
        Some(TestPipeline {
            _dir: dir,
            path,
            env: [("LAKECTL_LAKE_URI".to_string(), lake_uri.clone())].into(),
            lake_uri,
            topic: name.clone(),
            pg_target: format!("silver.{name}"),
            table: name,
        })
    }

    /// The shipped books pipeline (with its cleaning SQL), on a topic and lake prefix of its
    /// own; the tables keep their name, `books`.
    pub fn books() -> Option<TestPipeline> {
        let mut t = TestPipeline::new("")?;
        let shipped = std::fs::read_to_string(books_pipeline()).unwrap();
        let data = repo_root().join("data");
        let text = shipped
            .replace("topic = \"books\"", &format!("topic = \"{}\"", t.topic))
            .replace("\"../data/", &format!("\"{}/", data.display()))
            .replace(
                "target = \"silver.books\"",
                &format!("target = \"{}\"", t.pg_target),
            );
        assert!(
            text.contains(&t.topic),
            "the books pipeline names its topic `books`"
        );
        std::fs::write(&t.path, text).unwrap();
        std::fs::copy(
            repo_root().join("pipelines/books.silver.sql"),
            t.path.with_file_name("books.silver.sql"),
        )
        .unwrap();
        t.table = "books".into();
        Some(t)
    }

    /// A shipped pipeline (`pipelines/<name>.toml`, whose pipeline, topic and table are all
    /// called `name`) on a topic, lake prefix and Postgres schema of its own: `pg_target`
    /// is the schema, which replaces `schema` in every load target. `edits` are more
    /// (from, to) replacements of its text; `{topic}` in a `to` is the test's topic.
    pub fn shipped(name: &str, schema: &str, edits: &[(&str, String)]) -> Option<TestPipeline> {
        let mut t = TestPipeline::new("")?;
        let shipped =
            std::fs::read_to_string(repo_root().join(format!("pipelines/{name}.toml"))).unwrap();
        let mut text = shipped
            .replace(
                &format!("name = \"{name}\""),
                &format!("name = \"{}\"", t.topic),
            )
            .replace(
                &format!("topic = \"{name}\""),
                &format!("topic = \"{}\"", t.topic),
            )
            .replace(
                &format!("target = \"{schema}."),
                &format!("target = \"{}.", t.topic),
            );
        for (from, to) in edits {
            assert!(text.contains(from), "{name}.toml has no {from:?}");
            text = text.replace(from, &to.replace("{topic}", &t.topic));
        }
        std::fs::write(&t.path, text).unwrap();
        t.table = name.into();
        t.pg_target = t.topic.clone();
        Some(t)
    }

    /// The shipped user-activity pipeline (see [`TestPipeline::shipped`]) with bronze commits
    /// of `flush_rows`, silver units of `silver_rows`, window and sink units of `window_rows`,
    /// sessions of at most an hour; the sink's topic is `<topic>_enriched`.
    pub fn user_activity(
        flush_rows: usize,
        silver_rows: usize,
        window_rows: usize,
    ) -> Option<TestPipeline> {
        TestPipeline::shipped(
            "user_activity",
            "activity",
            &[
                (
                    "[bronze.user_activity]\n",
                    format!("[bronze.user_activity]\nflush_rows = {flush_rows}\n"),
                ),
                (
                    "on_existing_key = \"keep\"",
                    format!("on_existing_key = \"keep\"\nbatch_rows = {silver_rows}"),
                ),
                (
                    "watermark = \"2m\"",
                    format!("watermark = \"2m\"\nbatch_rows = {window_rows}"),
                ),
                // Shorter sessions than shipped, so that 5 hours of test events reach it.
                ("max_duration = \"4h\"", "max_duration = \"1h\"".to_string()),
                (
                    "topic = \"enriched_activity\"",
                    format!("topic = \"{{topic}}_enriched\"\nbatch_rows = {window_rows}"),
                ),
            ],
        )
    }

    /// Adds TOML to the pipeline file (more sections, more tables).
    pub fn append(&self, toml: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .unwrap();
        writeln!(file, "\n{toml}").unwrap();
    }

    /// A fresh log file in the test's folder, for a child process's stderr.
    pub fn log_file(&self, name: &str) -> (PathBuf, std::fs::File) {
        let path = self
            .path
            .with_file_name(format!("{name}-{}.log", unique_name("run")));
        let file = std::fs::File::create(&path).unwrap();
        (path, file)
    }

    /// Points lakectl and the test's clients at another service address.
    pub fn with_env(mut self, var: &str, value: impl Into<String>) -> TestPipeline {
        self.env.insert(var.to_string(), value.into());
        self
    }

    fn var(&self, var: &str) -> Option<String> {
        self.env
            .get(var)
            .cloned()
            .or_else(|| std::env::var(var).ok())
    }

    pub fn brokers(&self) -> String {
        self.var("LAKECTL_KAFKA_BROKERS").unwrap()
    }

    /// `lakectl -p <pipeline>` writing to this test's lake prefix.
    pub fn lakectl(&self) -> Command {
        let mut cmd = lakectl();
        cmd.arg("-p").arg(&self.path).envs(&self.env);
        cmd
    }

    pub fn pipeline(&self) -> lakehouse_core::Pipeline {
        lakehouse_core::Pipeline::load(&self.path, &|v| self.var(v), &[]).unwrap()
    }

    pub fn lake(&self) -> lakehouse_core::Lake {
        self.pipeline().lake.open().unwrap()
    }

    pub fn create_topic(&self, partitions: i32) {
        create_topic(&self.brokers(), &self.topic, partitions);
    }

    pub fn read_topic(&self) -> Vec<Record> {
        read_topic(&self.brokers(), &self.topic)
    }

    pub fn produce_raw(&self, records: &[RawRecord<'_>]) {
        produce_raw(&self.brokers(), &self.topic, records);
    }
}

pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let results = block_on(admin.create_topics(
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
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Record> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};
    use std::time::Duration;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
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

/// Produces raw records (bytes as given) to a topic; returns when all are delivered and
/// panics if any was not.
pub fn produce_raw(brokers: &str, topic: &str, records: &[RawRecord<'_>]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    block_on(async {
        let sends = records.iter().map(|(key, value)| {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
            if let Some(k) = key {
                record = record.key(*k);
            }
            if let Some(v) = value {
                record = record.payload(*v);
            }
            producer.send(record, std::time::Duration::from_secs(30))
        });
        for result in futures::future::join_all(sends).await {
            if let Err((e, _)) = result {
                panic!("record not delivered to {topic} at {brokers}: {e}");
            }
        }
    });
}

/// Runs `body` with the test venv's Python (`deltalake` as another engine), after a prelude
/// that imports `json`, `os`, `sys`, `deltalake` and sets `opts`, the storage options of the
/// stack's S3; returns its stdout. `None` (or a panic under CI) without the venv.
pub fn python_delta(body: &str, args: &[&str]) -> Option<String> {
    let script = format!(
        r#"import json, os, sys, deltalake
opts = {{k.lower(): os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ALLOW_HTTP")}}
{body}
# deltalake's runtime threads can abort the interpreter's teardown ("terminate called without
# an active exception", a known upstream bug): the answer is out, leave at once.
sys.stdout.flush()
os._exit(0)
"#
    );
    let mut args_with_script: Vec<&std::ffi::OsStr> = vec!["-c".as_ref(), script.as_ref()];
    args_with_script.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
    run_python(&args_with_script).map(|out| String::from_utf8(out).unwrap())
}

/// Runs the test venv's Python with `args` and returns its stdout, after asserting it
/// succeeded. `None` (or a panic under CI) without the venv.
pub fn run_python(args: &[&std::ffi::OsStr]) -> Option<Vec<u8>> {
    Some(run_python_with(&service_env("LAKECTL_TEST_PYTHON")?, args))
}

/// Runs `python` with `args`, asserts it succeeded, and returns its stdout.
pub fn run_python_with(python: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = Command::new(python).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Asserts what another engine read with a partition filter (`python_delta` output with
/// `hour_files`, the files it opened relative to the table, and `files`, how many the table
/// has): some files, fewer than all, each in the folder `prefix`.
pub fn assert_pruned(seen: &serde_json::Value, prefix: &str) {
    let opened = seen["hour_files"].as_array().unwrap();
    assert!(
        !opened.is_empty() && opened.len() < seen["files"].as_u64().unwrap() as usize,
        "{seen}"
    );
    for f in opened {
        assert!(f.as_str().unwrap().starts_with(prefix), "{seen}");
    }
}

/// Runs `sql` over a table registered as `t`; no batches when the table does not exist.
pub fn query_table(
    lake: &lakehouse_core::Lake,
    layer: lakehouse_core::Layer,
    table: &str,
    sql: &str,
) -> Vec<arrow::array::RecordBatch> {
    block_on(async {
        let Some(t) = lake.load_table(layer, table).await.unwrap() else {
            return Vec::new();
        };
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("t", t.table_provider().await.unwrap())
            .unwrap();
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    })
}

/// Rows in a bronze table, from the Delta log's statistics (cheap enough to poll).
pub fn bronze_count(lake: &lakehouse_core::Lake, table: &str) -> usize {
    use arrow::array::AsArray;
    query_table(lake, Layer::Bronze, table, "SELECT count(*) FROM t")
        .first()
        .map_or(0, |b| {
            b.column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0) as usize
        })
}

/// (partition, offset, value) of every row of a bronze table, sorted.
pub fn bronze_rows(lake: &lakehouse_core::Lake, table: &str) -> Vec<(i32, i64, Option<Vec<u8>>)> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, Int64Type};
    let sql = "SELECT _partition, _offset, CAST(value AS BYTEA) AS value FROM t ORDER BY _partition, _offset";
    let mut rows = Vec::new();
    for b in &query_table(lake, Layer::Bronze, table, sql) {
        let values =
            arrow::compute::cast(b.column(2), &arrow::datatypes::DataType::Binary).unwrap();
        let (p, o, v) = (
            b.column(0).as_primitive::<Int32Type>(),
            b.column(1).as_primitive::<Int64Type>(),
            values.as_binary::<i32>(),
        );
        for i in 0..b.num_rows() {
            rows.push((
                p.value(i),
                o.value(i),
                (!v.is_null(i)).then(|| v.value(i).to_vec()),
            ));
        }
    }
    rows
}

/// A Nisshi broker of the test's own (sqlite, in a temp dir), to kill and restart.
pub struct PrivateBroker {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PrivateBroker {
    pub fn start() -> Option<PrivateBroker> {
        service_env("LAKECTL_NISSHI_BIN")?;
        let mut broker = PrivateBroker {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            child: None,
        };
        broker.restart();
        Some(broker)
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port and data.
    pub fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(std::env::var("LAKECTL_NISSHI_BIN").unwrap())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args([
                "--storage-engine",
                "sqlite://nisshi.db",
                "--group-initial-rebalance-delay",
                "0s",
                "--silent",
            ])
            .current_dir(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "private broker did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A moto S3 server of the test's own, with the bucket `lake`.
pub struct PrivateS3 {
    pub port: u16,
    child: std::process::Child,
}

impl PrivateS3 {
    pub fn start() -> Option<PrivateS3> {
        let bin = service_env("LAKECTL_MOTO_BIN")?;
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let s3 = PrivateS3 { port, child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // moto accepts an unsigned CreateBucket.
        while http_put(port, "/lake").is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "private moto did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Some(s3)
    }
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_put(port: u16, path: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(stream, "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    if response.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(response))
    }
}

/// A TCP proxy whose link can be cut: while cut, every connection is accepted and closed at
/// once and open ones are shut down, as a service that drops off the network does.
pub struct FlakyProxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl FlakyProxy {
    pub fn start(target: u16) -> FlakyProxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection reset
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut open = open2.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        FlakyProxy { port, up, open }
    }

    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Rows of a Postgres query, every column as text (cast in the SQL), NULL as `None`.
pub fn pg_rows(sql: &str) -> Vec<Vec<Option<String>>> {
    use sqlx::Row;
    let url = service_env("DATABASE_URL").expect("DATABASE_URL");
    block_on(async {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.get::<Option<String>, _>(i))
                    .collect()
            })
            .collect()
    })
}

/// Rows of `sql` over `<layer>/<table>` (registered as `t`) as text, NULL as `None`; empty when
/// the table does not exist.
pub fn table_rows(
    lake: &lakehouse_core::Lake,
    layer: Layer,
    table: &str,
    sql: &str,
) -> Vec<Vec<Option<String>>> {
    use arrow::array::{Array, AsArray};
    let mut out = Vec::new();
    for batch in query_table(lake, layer, table, sql) {
        let columns: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).unwrap())
            .collect();
        for i in 0..batch.num_rows() {
            out.push(
                columns
                    .iter()
                    .map(|c| (!c.is_null(i)).then(|| c.as_string::<i32>().value(i).to_string()))
                    .collect(),
            );
        }
    }
    out
}

/// The partitions of the shipped pipelines' generated topics.
const STREAM_PARTITIONS: i32 = 3;

/// A stream sent to the test's topic and written to a file, with its truth file.
pub struct Stream {
    pub dir: tempfile::TempDir,
    pub events: Vec<serde_json::Value>,
    pub truth: Vec<serde_json::Value>,
}

impl Stream {
    pub fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.path().join(file)
    }

    pub fn seqs(&self, defect: &str) -> BTreeSet<u64> {
        (self.truth.iter())
            .filter(|t| t["defect"] == defect)
            .map(|t| t["seq"].as_u64().unwrap())
            .collect()
    }

    /// Where each record landed: (partition, offset) → its seq, from the partition of its
    /// key (the truth's for defects, `key_of` the record's for the rest).
    pub fn by_position(
        &self,
        key_of: impl Fn(&serde_json::Value) -> String,
    ) -> HashMap<(i32, i64), u64> {
        let keys: HashMap<u64, String> = (self.truth.iter())
            .map(|t| {
                (
                    t["seq"].as_u64().unwrap(),
                    t["key"].as_str().unwrap().into(),
                )
            })
            .collect();
        let mut next = [0i64; STREAM_PARTITIONS as usize];
        let mut out = HashMap::new();
        for (seq, event) in self.events.iter().enumerate() {
            let key = keys
                .get(&(seq as u64))
                .cloned()
                .unwrap_or_else(|| key_of(event));
            let p = lakehouse_core::kafka::key_partition(key.as_bytes(), STREAM_PARTITIONS);
            out.insert((p, next[p as usize]), seq as u64);
            next[p as usize] += 1;
        }
        out
    }

    /// Asserts that `table`'s quarantine holds exactly the corrupt records, each under the
    /// rule `rule_of` names for its corruption; records are found by the partition of their
    /// key (`key_of`). Returns how many.
    pub fn assert_quarantine_matches_truth(
        &self,
        t: &TestPipeline,
        table: &str,
        rule_of: impl Fn(&str) -> &'static str,
        key_of: impl Fn(&serde_json::Value) -> String,
    ) -> usize {
        let want: BTreeMap<u64, String> = (self.truth.iter())
            .filter(|t| t["defect"] == "corrupt")
            .map(|t| {
                let rule = rule_of(t["corruption"].as_str().unwrap());
                (t["seq"].as_u64().unwrap(), rule.to_string())
            })
            .collect();
        let at = self.by_position(key_of);
        let got: BTreeMap<u64, String> = quarantine_rules(t, table)
            .into_iter()
            .map(|(position, rule)| (at[&position], rule))
            .collect();
        assert_eq!(
            got, want,
            "quarantine holds each corrupted record under its rule"
        );
        want.len()
    }

    /// What `tests/oracle/<script>` prints, given `before` then the events and truth files
    /// then `after` as arguments: JSON.
    pub fn oracle(
        &self,
        script: &str,
        before: &[&str],
        after: &[&str],
    ) -> Option<serde_json::Value> {
        let script = repo_root().join("jobs/tests/oracle").join(script);
        let (events, truth) = (self.path("events.ndjson"), self.path("truth.ndjson"));
        let mut args: Vec<&std::ffi::OsStr> = vec![script.as_os_str()];
        args.extend(before.iter().map(std::ffi::OsStr::new));
        args.extend([events.as_os_str(), truth.as_os_str()]);
        args.extend(after.iter().map(std::ffi::OsStr::new));
        let out = run_python(&args)?;
        Some(serde_json::from_slice(&out).unwrap())
    }
}

/// The pipeline's `[generate]` stream, `count` records of it, to the topic and to a file.
pub fn generate_stream(t: &TestPipeline, count: u64) -> Stream {
    let dir = tempfile::tempdir().unwrap();
    let (events, truth) = (
        dir.path().join("events.ndjson"),
        dir.path().join("truth.ndjson"),
    );
    let n = count.to_string();
    ok(run(t
        .lakectl()
        .args(["generate", "--count", &n, "--topic", &t.topic, "--truth"])
        .arg(&truth)));
    ok(run(t
        .lakectl()
        .args(["generate", "--count", &n, "--out"])
        .arg(&events)));
    let lines = |path: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    Stream {
        events: lines(&events),
        truth: lines(&truth),
        dir,
    }
}

pub fn quarantine_rules(t: &TestPipeline, table: &str) -> Vec<((i32, i64), String)> {
    table_rows(
        &t.lake(),
        Layer::Quarantine,
        table,
        "SELECT _partition, _offset, rule FROM t ORDER BY 1, 2",
    )
    .into_iter()
    .map(|r| {
        let n = |i: usize| r[i].as_deref().unwrap().parse::<i64>().unwrap();
        ((n(0) as i32, n(1)), r[2].clone().unwrap())
    })
    .collect()
}

/// Every Delta table in `t`'s lake (data, quarantine, lakectl's own state and logs), by its
/// folder under the lake root, e.g. `silver/orders`, `_lakectl/state/sink/out`.
pub fn lake_tables(t: &TestPipeline) -> Vec<String> {
    use futures::TryStreamExt;
    let lake = t.lake();
    let root = lake.path("");
    let listed: Vec<object_store::ObjectMeta> =
        block_on(async { lake.store().list(Some(&root)).try_collect().await.unwrap() });
    let prefix = format!("{}/", root.as_ref());
    let tables: BTreeSet<String> = listed
        .iter()
        .filter_map(|m| {
            let relative = m.location.as_ref().strip_prefix(&prefix)?;
            Some(relative.split_once("/_delta_log/")?.0.to_string())
        })
        .collect();
    tables.into_iter().collect()
}

/// Reads every table of `t`'s lake with Python `deltalake` and with Polars (which refuses a
/// file whose physical types differ from the Delta schema, e.g. `UInt64` for `long`) and
/// asserts both count the rows lakectl does: `lakectl query` for the tables its catalog names,
/// its own reader for the rest. Returns how many tables were read.
pub fn assert_every_table_reads_alike(t: &TestPipeline) -> usize {
    let tables = lake_tables(t);
    assert!(!tables.is_empty(), "no tables in {}", t.lake_uri);
    let lake = t.lake();
    let ours: BTreeMap<String, usize> = block_on(async {
        let mut counts = BTreeMap::new();
        for table in &tables {
            let (folder, name) = table.split_once('/').unwrap();
            let layer = Layer::from_folder(folder).unwrap_or(Layer::System);
            let delta = lake.load_table(layer, name).await.unwrap().unwrap();
            let files = lakehouse_core::table_files::live_since(&delta, table, None)
                .await
                .unwrap();
            let rows: usize = lakehouse_core::table_files::read(&delta, &files, None)
                .await
                .unwrap()
                .iter()
                .flat_map(|(_, batches)| batches.iter().map(|b| b.num_rows()))
                .sum();
            counts.insert(table.clone(), rows);
        }
        counts
    });
    // The catalog's names: <layer>.<table> for the data layers, _lakectl.runs and .quality.
    let named: Vec<(&String, String)> = tables
        .iter()
        .filter_map(|table| {
            let (folder, name) = table.split_once('/')?;
            let plain = !name.contains('/');
            (plain && (Layer::from_folder(folder).is_some() || ["runs", "quality"].contains(&name)))
                .then(|| (table, format!("\"{folder}\".\"{name}\"")))
        })
        .collect();
    let sql = named
        .iter()
        .map(|(table, name)| format!("SELECT '{table}' AS t, count(*) AS n FROM {name}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let out = ok(run(t.lakectl().args(["query", &sql])));
    for (table, _) in &named {
        let line = out
            .stdout
            .lines()
            .find(|l| {
                l.split('|')
                    .nth(1)
                    .is_some_and(|c| c.trim() == table.as_str())
            })
            .unwrap_or_else(|| panic!("lakectl query has no count of {table}:\n{}", out.stdout));
        let n: usize = line.split('|').nth(2).unwrap().trim().parse().unwrap();
        assert_eq!(
            n, ours[*table],
            "{table}: lakectl query and lakectl's reader"
        );
    }
    let body = r#"
import polars
out = {}
for table in sys.argv[2:]:
    uri = sys.argv[1] + table
    got = {}
    try:
        got["deltalake"] = deltalake.DeltaTable(uri, storage_options=opts).to_pyarrow_table().num_rows
    except Exception as e:
        got["deltalake"] = f"error: {e}"
    try:
        got["polars"] = polars.read_delta(uri, storage_options=opts).height
    except Exception as e:
        got["polars"] = f"error: {e}"
    out[table] = got
print(json.dumps(out))
"#;
    let mut args = vec![t.lake_uri.as_str()];
    args.extend(tables.iter().map(String::as_str));
    let Some(read) = python_delta(body, &args) else {
        return 0;
    };
    let read: serde_json::Value = serde_json::from_str(&read).unwrap();
    for table in &tables {
        for engine in ["deltalake", "polars"] {
            assert_eq!(
                read[table][engine],
                serde_json::json!(ours[table]),
                "{table} read by {engine}"
            );
        }
    }
    tables.len()
}
