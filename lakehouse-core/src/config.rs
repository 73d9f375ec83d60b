//! The pipeline file and its layering: built-in defaults < file < `LAKECTL_*` env < CLI flags.
//!
//! Serde does the structural checks (unknown keys, wrong types, missing keys) and we turn its
//! byte span into `file:line:column`. Env and CLI overrides go through one [`Pipeline::set`]
//! so both layers accept exactly the same keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;

use crate::error::ConfigError;
use crate::quality::Expectation;
use crate::schema::ColumnType;
use crate::storage::{Lake, Layer, TableRef, Upkeep};

/// A whole pipeline: where the lake is, how to reach the services, and its tables per layer.
/// Its `Debug` leaves out what may hold a secret (the Postgres URL's password, storage keys,
/// a registry URL's credentials).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub name: String,
    #[serde(default)]
    pub lake: LakeConfig,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub postgres: PostgresConfig,
    #[serde(default)]
    pub schema_registry: SchemaRegistryConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub runner: RunnerConfig,
    pub producer: Option<ProducerConfig>,
    /// Defaults for `lakectl generate`; its flags win.
    #[serde(default)]
    pub generate: GenerateConfig,
    #[serde(default)]
    pub bronze: BTreeMap<String, BronzeTable>,
    #[serde(default)]
    pub silver: BTreeMap<String, SilverTable>,
    #[serde(default)]
    pub gold: BTreeMap<String, GoldTable>,
    #[serde(default)]
    pub window: BTreeMap<String, WindowTable>,
    #[serde(default)]
    pub sink: BTreeMap<String, SinkTopic>,
    #[serde(default)]
    pub load: BTreeMap<String, LoadTarget>,
    /// The file this pipeline came from; relative paths inside it resolve against its folder.
    #[serde(skip)]
    pub source_file: PathBuf,
    /// The Postgres URL, read from the env var named by `postgres.url_env`.
    #[serde(skip)]
    pub postgres_url: Option<String>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// `file://./lake` (relative to the working directory), `s3://bucket/prefix` or `memory://`.
    #[serde(default = "default_lake_uri")]
    pub uri: String,
    /// object_store options (`aws_region`, `aws_conditional_put`, ...). Keys and secrets come
    /// from `AWS_*` env vars instead.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// Write a Delta checkpoint every this many commits.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: u64,
    /// A writer compacts a table's small files after every this many commits (0: never).
    #[serde(default = "default_compact_every")]
    pub compact_every: u64,
}

impl LakeConfig {
    /// Opens the lake, its writers keeping tables as `checkpoint_interval` and
    /// `compact_every` say.
    pub fn open(&self) -> crate::Result<Lake> {
        Ok(Lake::open(&self.uri, &self.storage_options)?.with_upkeep(self.upkeep()))
    }

    pub fn upkeep(&self) -> Upkeep {
        Upkeep {
            checkpoint_interval: self.checkpoint_interval,
            compact_every: self.compact_every,
        }
    }
}

/// Where read-only SQL runs (gold, `lakectl query`): in process, or on a Ballista cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// `ballista://host:50050`; absent: in process. `LAKECTL_ENGINE_URL` overrides it.
    pub url: Option<String>,
    /// How long a query on the cluster may take before the unit fails (nothing written):
    /// Ballista 55 can leave a job waiting for ever after losing an executor mid-query.
    #[serde(default = "default_query_timeout")]
    pub query_timeout: Span,
}

fn default_query_timeout() -> Span {
    Span(std::time::Duration::from_secs(600))
}

/// A Confluent-compatible schema registry, for Avro topics.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// `http://host:8081`; `LAKECTL_SCHEMA_REGISTRY_URL` overrides it.
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Consumer group; defaults to `lakectl-<pipeline name>`.
    pub group_id: Option<String>,
    /// How clients talk to the brokers: plaintext (default), ssl, sasl_plaintext, sasl_ssl.
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    /// SASL mechanism, for the sasl_* protocols.
    pub sasl_mechanism: Option<SaslMechanism>,
    pub sasl_username: Option<String>,
    /// The env var holding the SASL password; the password never goes in the file.
    #[serde(default = "default_sasl_password_env")]
    pub sasl_password_env: String,
    /// PEM files for TLS: the CA to trust, and a client certificate and key for mutual TLS.
    pub ssl_ca_location: Option<PathBuf>,
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
    /// The env var holding the client key's password, if the key has one.
    #[serde(default = "default_ssl_key_password_env")]
    pub ssl_key_password_env: String,
    /// Extra librdkafka properties, passed through as they are (no secrets: those are refused).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Read from `sasl_password_env` and `ssl_key_password_env` when the pipeline loads.
    #[serde(skip)]
    pub sasl_password: Option<Secret>,
    #[serde(skip)]
    pub ssl_key_password: Option<Secret>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's `security.protocol` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// The SASL mechanisms lakectl passes to librdkafka, spelled as Kafka spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A password or key read from the environment. Its `Debug` shows no part of it, so a
/// config printed for debugging never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Name of the env var holding the connection URL (it carries the password).
    #[serde(default = "default_postgres_url_env")]
    pub url_env: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// Retries of one unit of work after an external, retryable error.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// In continuous mode, how long to wait after a unit that found nothing to do.
    #[serde(default = "default_idle_poll_ms")]
    pub idle_poll_ms: u64,
    /// Where `lakectl run` serves Prometheus metrics (`host:port`); `--metrics-addr` wins.
    #[serde(default)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerConfig {
    pub file: PathBuf,
    pub topic: String,
    /// CSV column whose value becomes the Kafka key.
    pub key: Option<String>,
    /// Records per second; unlimited when absent.
    pub rate: Option<f64>,
}

/// `lakectl generate` settings; each has a flag of the same name (`late_fraction` is
/// `--late-fraction`), and the flag wins. Semantics are documented on the flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    pub profile: Option<String>,
    pub topic: Option<String>,
    pub partitions: Option<i32>,
    pub count: Option<u64>,
    pub rate: Option<f64>,
    pub event_rate: Option<f64>,
    pub seed: Option<u64>,
    /// RFC 3339, or `now`.
    pub start: Option<String>,
    pub out_of_order: Option<Span>,
    pub late_fraction: Option<f64>,
    pub late_by: Option<Span>,
    pub duplicate_fraction: Option<f64>,
    pub corrupt_fraction: Option<f64>,
    /// What goes to Kafka: `json` or `avro` (Confluent-framed, the profile's schema
    /// registered under `<topic>-value`).
    pub format: Option<RecordFormat>,
}

/// A length of time in the pipeline file: a number of seconds (`90`, `0.5`) or a string with
/// a unit (`"500ms"`, `"90s"`, `"2m"`, `"1h"`, `"1d"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SpanText")]
pub struct Span(pub std::time::Duration);

#[derive(Deserialize)]
#[serde(untagged)]
enum SpanText {
    Seconds(f64),
    Text(String),
}

impl TryFrom<SpanText> for Span {
    type Error = String;

    fn try_from(value: SpanText) -> Result<Span, String> {
        match value {
            SpanText::Seconds(s) => seconds(s, &s.to_string()),
            SpanText::Text(t) => parse_span(&t),
        }
        .map(Span)
    }
}

impl std::str::FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Span, String> {
        parse_span(s).map(Span)
    }
}

/// Parses `90`, `90s`, `1.5s`, `500ms`, `2m`, `1h` or `1d` (no unit means seconds).
pub fn parse_span(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit_seconds = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => f64::NAN,
    };
    match number.parse::<f64>() {
        Ok(n) if unit_seconds.is_finite() => seconds(n * unit_seconds, text),
        _ => Err(format!(
            "expected a duration like 90s, 500ms, 2m, 1h or 1d, got {text:?}"
        )),
    }
}

fn seconds(s: f64, text: &str) -> Result<std::time::Duration, String> {
    std::time::Duration::try_from_secs_f64(s)
        .map_err(|_| format!("expected a non-negative duration, got {text:?}"))
}

/// Kafka topic → `<lake>/bronze/<table>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BronzeTable {
    pub topic: String,
    #[serde(default = "default_flush_rows")]
    pub flush_rows: usize,
    #[serde(default = "default_flush_bytes")]
    pub flush_bytes: usize,
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
}

/// Bronze table → `<lake>/silver/<table>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilverTable {
    /// The bronze table it reads.
    pub source: String,
    /// Business key columns (of the cleaned rows): one row per key, the latest record wins.
    pub key: Vec<String>,
    /// How records are written: `json` (typed by `schema`) or `avro` (Confluent-framed, typed
    /// by the schemas in the schema registry).
    #[serde(default)]
    pub format: RecordFormat,
    /// Avro: the registry subject whose latest version is the reader schema; defaults to
    /// `<topic>-value`, the subject Confluent's serializers register under.
    pub subject: Option<String>,
    /// JSON: the fields of each record's `value` and their types, in column order.
    #[serde(default)]
    pub schema: IndexMap<String, ColumnType>,
    /// Cleaning SQL over the view `source`, inline or in a file next to the pipeline file.
    pub sql: Option<String>,
    pub sql_file: Option<PathBuf>,
    /// Expectations checked on every increment, in order.
    #[serde(default)]
    pub expect: Vec<Expectation>,
    /// Bronze rows per unit of work: bounds memory; each unit is one silver commit.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// ... and bytes of bronze files per unit, for rows of any size.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: u64,
    /// What a record whose key silver already holds does: `replace` the row (the latest
    /// record wins, for entities) or `keep` the row and drop the record as a duplicate (for
    /// immutable events: silver then only ever appends).
    #[serde(default)]
    pub on_existing_key: OnExistingKey,
    /// Columns of the cleaned rows the Delta table is partitioned by (folders `col=value/`
    /// that other engines prune on), e.g. a date derived from the event time.
    #[serde(default)]
    pub partition_by: Vec<String>,
}

impl SilverTable {
    /// The columns of the `unique` expectations.
    pub fn unique_columns(&self) -> Vec<String> {
        self.expect
            .iter()
            .filter_map(|e| match &e.rule {
                crate::quality::Rule::Unique { column } => Some(column.clone()),
                _ => None,
            })
            .collect()
    }

    /// The columns a unit looks values up in ([`crate::lookup`]): the key, then the `unique`
    /// expectations'. Silver's files carry bloom filters on them.
    pub fn lookup_columns(&self) -> Vec<String> {
        let mut columns = self.key.clone();
        for c in self.unique_columns() {
            if !columns.contains(&c) {
                columns.push(c);
            }
        }
        columns
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    #[default]
    Json,
    Avro,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExistingKey {
    #[default]
    Replace,
    Keep,
}

/// Columns silver adds to every row; a schema may not declare them.
pub const SILVER_LINEAGE: &[&str] = &[
    "_bronze_version",
    "_partition",
    "_offset",
    "_kafka_ts",
    "_silver_ts",
];

/// SQL over silver tables → `<lake>/gold/<table>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldTable {
    pub sql: String,
    /// Columns of the result the Delta table is partitioned by, as for silver.
    #[serde(default)]
    pub partition_by: Vec<String>,
}

/// Event-time windows over a silver table's new rows → `<lake>/window/<table>`. The exact
/// semantics are in docs/window.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowTable {
    /// The silver table it reads; it must only ever append (`on_existing_key = "keep"`).
    pub source: String,
    /// The event-time column (a timestamp).
    pub time: String,
    /// Exactly one of `tumble`, `hop` and `session`.
    pub tumble: Option<Span>,
    pub hop: Option<Hop>,
    pub session: Option<Session>,
    /// Group keys of tumbling and hopping windows (a session's are its `key`).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// SQL predicate: only the rows it keeps enter the windows.
    pub filter: Option<String>,
    /// One row per window and group: name = SQL over the window's rows (`count(*)`,
    /// `count(DISTINCT user_id)`, or an expression of `window_start`, `window_end` and keys).
    #[serde(default)]
    pub aggregates: IndexMap<String, String>,
    /// Instead of `aggregates`: every row of each final window, with its bounds and these
    /// columns, SQL over the window's rows (window functions such as
    /// `row_number() OVER (PARTITION BY window_start, user_id ORDER BY event_time)`).
    pub rows: Option<IndexMap<String, String>>,
    /// How far event time may go back: the watermark is the largest event time seen minus
    /// this.
    pub watermark: Span,
    #[serde(default)]
    pub output: WindowOutput,
    /// Output columns the Delta table is partitioned by, as for silver.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Source rows per unit of work: with the open windows' rows, what bounds memory.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// ... and bytes of source files per unit.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hop {
    pub size: Span,
    pub slide: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub gap: Span,
    pub key: Vec<String>,
    /// The longest a session may last: a key that never pauses for `gap` would otherwise
    /// keep one session open, and its rows in the state, for ever.
    pub max_duration: Option<Span>,
}

/// `append` writes each window once, when final; `update` rewrites its row every unit that
/// brings it rows, until final.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowOutput {
    #[default]
    Append,
    Update,
}

/// New rows of a table that only appends → a Kafka topic, each row once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkTopic {
    /// `silver.<table>` (with `on_existing_key = "keep"`) or `window.<table>` (append).
    pub source: TableRef,
    pub topic: String,
    /// The column whose value is each record's key (and picks its partition).
    pub key: String,
    /// Columns of the JSON value; all when empty.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Partitions of the topic when the sink creates it.
    #[serde(default = "default_sink_partitions")]
    pub partitions: i32,
    /// Source rows per unit of work.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// ... and bytes of source files per unit.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: u64,
}

fn default_sink_partitions() -> i32 {
    3
}

/// Columns every window row starts with.
pub const WINDOW_BOUNDS: [&str; 2] = ["window_start", "window_end"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    Upsert,
    Append,
    Replace,
}

/// A silver or gold table → a Postgres table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadTarget {
    /// `silver.<table>`, `gold.<table>` or `window.<table>`.
    pub source: TableRef,
    /// Postgres `schema.table`; defaults to the source name.
    pub target: Option<String>,
    #[serde(default)]
    pub key: Vec<String>,
    #[serde(default = "default_load_mode")]
    pub mode: LoadMode,
}

fn default_lake_uri() -> String {
    "file://./lake".into()
}
fn default_checkpoint_interval() -> u64 {
    Upkeep::DEFAULT.checkpoint_interval
}

fn default_compact_every() -> u64 {
    Upkeep::DEFAULT.compact_every
}
fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_sasl_password_env() -> String {
    "LAKECTL_KAFKA_SASL_PASSWORD".into()
}
fn default_ssl_key_password_env() -> String {
    "LAKECTL_KAFKA_SSL_KEY_PASSWORD".into()
}
fn default_postgres_url_env() -> String {
    "DATABASE_URL".into()
}
fn default_max_retries() -> u32 {
    5
}
fn default_initial_backoff_ms() -> u64 {
    500
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_idle_poll_ms() -> u64 {
    1_000
}
fn default_flush_rows() -> usize {
    100_000
}
/// Bronze's batch bytes: its Arrow builders hold about twice this while they grow, so it is
/// what bounds bronze's memory (16 MiB: peak RSS ~210 MiB over 5M records, 32 MiB: ~270 MiB).
fn default_flush_bytes() -> usize {
    16 << 20
}
fn default_flush_interval_ms() -> u64 {
    5_000
}
/// Source rows per unit of silver, window and sink jobs: one bronze commit at its default
/// `flush_rows`. A unit holds a few copies of its rows at once (read, typed, cleaned, checked),
/// so this bounds a job's memory.
fn default_batch_rows() -> usize {
    100_000
}
/// Bytes of source Parquet files per unit of silver, window and sink jobs: about 300,000
/// user-activity events, so `batch_rows` binds first for rows of a few hundred bytes; this
/// binds for wider ones.
fn default_batch_bytes() -> u64 {
    32 * 1024 * 1024
}
/// Which of a unit's limits (`batch_rows`, `batch_bytes`) is zero, if one is.
fn zero_unit_limit(batch_rows: usize, batch_bytes: u64) -> Option<&'static str> {
    if batch_rows == 0 {
        Some("batch_rows")
    } else if batch_bytes == 0 {
        Some("batch_bytes")
    } else {
        None
    }
}
fn default_load_mode() -> LoadMode {
    LoadMode::Upsert
}

macro_rules! default_via_serde {
    ($($ty:ty),*) => {$(
        impl Default for $ty {
            fn default() -> Self {
                toml::from_str("").expect("every field has a default")
            }
        }
    )*};
}
default_via_serde!(
    LakeConfig,
    KafkaConfig,
    PostgresConfig,
    RunnerConfig,
    EngineConfig
);

/// Env vars of the env layer and the key each one sets. Anything else under `LAKECTL_`
/// (like `LAKECTL_PIPELINE`) belongs to the CLI.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("LAKECTL_LAKE_URI", "lake.uri"),
    (
        "LAKECTL_LAKE_CHECKPOINT_INTERVAL",
        "lake.checkpoint_interval",
    ),
    ("LAKECTL_LAKE_COMPACT_EVERY", "lake.compact_every"),
    ("LAKECTL_KAFKA_BROKERS", "kafka.brokers"),
    ("LAKECTL_KAFKA_GROUP_ID", "kafka.group_id"),
    ("LAKECTL_POSTGRES_URL_ENV", "postgres.url_env"),
    ("LAKECTL_SCHEMA_REGISTRY_URL", "schema_registry.url"),
    ("LAKECTL_ENGINE_URL", "engine.url"),
    ("LAKECTL_ENGINE_QUERY_TIMEOUT", "engine.query_timeout"),
    ("LAKECTL_RUNNER_MAX_RETRIES", "runner.max_retries"),
    (
        "LAKECTL_RUNNER_INITIAL_BACKOFF_MS",
        "runner.initial_backoff_ms",
    ),
    ("LAKECTL_RUNNER_MAX_BACKOFF_MS", "runner.max_backoff_ms"),
    ("LAKECTL_RUNNER_IDLE_POLL_MS", "runner.idle_poll_ms"),
];

/// `AWS_*` variables that object_store understands become storage options of the env layer.
const AWS_ENV_OPTIONS: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT",
    "AWS_ALLOW_HTTP",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONDITIONAL_PUT",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
];

/// Words in an option's name that say its value is a secret (`ssl.key.pem` is a private key,
/// `aws_sse_customer_key_base64` an encryption key).
const SECRET_WORDS: &[&str] = &[
    "secret",
    "access_key",
    "token",
    "password",
    "key.pem",
    "customer_key",
    "account_key",
    "private_key",
];

fn looks_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| key.contains(w))
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field("source_file", &self.source_file)
            .field("lake", &self.lake)
            .field("kafka", &self.kafka)
            .field("postgres", &self.postgres)
            .field(
                "postgres_url",
                &self
                    .postgres_url
                    .as_deref()
                    .map(crate::redact::without_password),
            )
            .field("schema_registry", &self.schema_registry)
            .field("engine", &self.engine)
            .field("runner", &self.runner)
            .field("producer", &self.producer)
            .field("generate", &self.generate)
            .field("bronze", &self.bronze)
            .field("silver", &self.silver)
            .field("gold", &self.gold)
            .field("window", &self.window)
            .field("sink", &self.sink)
            .field("load", &self.load)
            .finish()
    }
}

impl std::fmt::Debug for LakeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: BTreeMap<&str, &str> = (self.storage_options.iter())
            .map(|(k, v)| (k.as_str(), if looks_secret(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("LakeConfig")
            .field("uri", &self.uri)
            .field("storage_options", &options)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("compact_every", &self.compact_every)
            .finish()
    }
}

impl std::fmt::Debug for SchemaRegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = (self.url.as_deref()).map(crate::redact::without_credentials);
        f.debug_struct("SchemaRegistryConfig")
            .field("url", &url)
            .finish()
    }
}

impl Pipeline {
    /// Reads the file and applies the env and CLI layers. `env` is a lookup so tests can
    /// pass a map instead of the process environment; `cli` holds `key=value` pairs.
    pub fn load(
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        cli: &[(String, String)],
    ) -> Result<Pipeline, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Pipeline::from_text(&text, file, env, cli)
    }

    /// A pipeline without a file: built-in defaults < env < CLI, for commands that need only
    /// a service address (`lakectl generate` into Kafka).
    pub fn without_file(
        env: &dyn Fn(&str) -> Option<String>,
        cli: &[(String, String)],
    ) -> Result<Pipeline, ConfigError> {
        Pipeline::from_text(
            "name = \"lakectl\"",
            Path::new("(no pipeline file)"),
            env,
            cli,
        )
    }

    /// [`Pipeline::load`] of a file's text already read; `file` names it in errors and is
    /// where relative paths in it resolve.
    pub fn from_text(
        text: &str,
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        cli: &[(String, String)],
    ) -> Result<Pipeline, ConfigError> {
        let mut pipeline = Pipeline::parse(text, file)?;
        pipeline.apply_env(env)?;
        for (key, value) in cli {
            pipeline
                .set(key, value)
                .map_err(|message| ConfigError::Flag {
                    flag: format!("--set {key}"),
                    message,
                })?;
        }
        pipeline.postgres_url = env(&pipeline.postgres.url_env);
        pipeline.kafka.sasl_password = env(&pipeline.kafka.sasl_password_env).map(Secret);
        pipeline.kafka.ssl_key_password = env(&pipeline.kafka.ssl_key_password_env).map(Secret);
        pipeline.check()?;
        Ok(pipeline)
    }

    /// Parses the file layer alone (defaults < file).
    pub fn parse(text: &str, file: &Path) -> Result<Pipeline, ConfigError> {
        let mut pipeline: Pipeline = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_and_column(text, span.start))
                .unwrap_or((1, 1));
            ConfigError::Parse {
                file: file.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        pipeline.source_file = file.to_path_buf();
        let looks_secret = |k: &&String| looks_secret(k);
        let secret = (pipeline.lake.storage_options.keys().find(looks_secret))
            .map(|k| format!("lake.storage_options.{k}"))
            .or_else(|| {
                (pipeline.kafka.options.keys().find(looks_secret))
                    .map(|k| format!("kafka.options.\"{k}\""))
            });
        if let Some(key) = secret {
            return Err(ConfigError::SecretInFile {
                file: file.to_path_buf(),
                key,
            });
        }
        Ok(pipeline)
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (var, key) in ENV_KEYS {
            if let Some(value) = env(var) {
                self.set(key, &value).map_err(|message| ConfigError::Env {
                    var: var.to_string(),
                    message,
                })?;
            }
        }
        for var in AWS_ENV_OPTIONS {
            if let Some(value) = env(var) {
                self.lake
                    .storage_options
                    .insert(var.to_ascii_lowercase(), value);
            }
        }
        Ok(())
    }

    /// Sets one scalar key of the global sections, as the env and CLI layers do.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        fn number<T: std::str::FromStr>(value: &str) -> Result<T, String> {
            value
                .trim()
                .parse()
                .map_err(|_| format!("expected a non-negative integer, got {value:?}"))
        }
        match key {
            "lake.uri" => self.lake.uri = value.to_string(),
            "lake.checkpoint_interval" => self.lake.checkpoint_interval = number(value)?,
            "lake.compact_every" => self.lake.compact_every = number(value)?,
            "kafka.brokers" => self.kafka.brokers = value.to_string(),
            "kafka.group_id" => self.kafka.group_id = Some(value.to_string()),
            "postgres.url_env" => self.postgres.url_env = value.to_string(),
            "schema_registry.url" => self.schema_registry.url = Some(value.to_string()),
            // Empty: back to in process (an env layer's cluster switched off by --set).
            "engine.url" => self.engine.url = Some(value.to_string()).filter(|v| !v.is_empty()),
            "engine.query_timeout" => self.engine.query_timeout = Span(parse_span(value)?),
            "runner.max_retries" => self.runner.max_retries = number(value)?,
            "runner.initial_backoff_ms" => self.runner.initial_backoff_ms = number(value)?,
            "runner.max_backoff_ms" => self.runner.max_backoff_ms = number(value)?,
            "runner.idle_poll_ms" => self.runner.idle_poll_ms = number(value)?,
            _ => {
                let known: Vec<&str> = ENV_KEYS.iter().map(|(_, k)| *k).collect();
                return Err(format!(
                    "unknown key `{key}`; settable keys: {}",
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Checks that need every layer merged.
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: self.source_file.clone(),
            key,
            message,
        };
        if self.name.trim().is_empty() {
            return Err(invalid("name".into(), "must not be empty".into()));
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers".into(), "must not be empty".into()));
        }
        let kafka = &self.kafka;
        match (kafka.security_protocol.uses_sasl(), kafka.sasl_mechanism) {
            (true, None) => {
                return Err(invalid(
                    "kafka.sasl_mechanism".into(),
                    format!(
                        "security_protocol = \"{}\" needs a mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                        kafka.security_protocol.as_str()
                    ),
                ))
            }
            (false, Some(_)) => {
                return Err(invalid(
                    "kafka.sasl_mechanism".into(),
                    "is only used with security_protocol = \"sasl_plaintext\" or \"sasl_ssl\"".into(),
                ))
            }
            _ => {}
        }
        if kafka.security_protocol.uses_sasl() {
            if kafka.sasl_username.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(
                    "kafka.sasl_username".into(),
                    "SASL needs a user name".into(),
                ));
            }
            if kafka.sasl_password.is_none() {
                return Err(ConfigError::Env {
                    var: kafka.sasl_password_env.clone(),
                    message: format!(
                        "not set; {} names it (kafka.sasl_password_env) as the SASL password for {}",
                        self.source_file.display(),
                        kafka.sasl_username.as_deref().unwrap_or_default()
                    ),
                });
            }
        }
        if self.runner.initial_backoff_ms > self.runner.max_backoff_ms {
            return Err(invalid(
                "runner.initial_backoff_ms".into(),
                "must not exceed runner.max_backoff_ms".into(),
            ));
        }
        crate::lake_uri::LakeUri::parse(&self.lake.uri)
            .map_err(|message| invalid("lake.uri".into(), message))?;
        for (name, table) in &self.bronze {
            check_table_name("bronze", name).map_err(|m| invalid(format!("bronze.{name}"), m))?;
            if table.flush_rows == 0 || table.flush_bytes == 0 {
                return Err(invalid(
                    format!("bronze.{name}.flush_rows"),
                    "flush limits must be greater than zero".into(),
                ));
            }
        }
        for (name, table) in &self.silver {
            check_table_name("silver", name).map_err(|m| invalid(format!("silver.{name}"), m))?;
            if !self.bronze.contains_key(&table.source) {
                return Err(invalid(
                    format!("silver.{name}.source"),
                    format!("no bronze table named {:?} in this pipeline", table.source),
                ));
            }
            if table.key.is_empty() {
                return Err(invalid(
                    format!("silver.{name}.key"),
                    "needs at least one column".into(),
                ));
            }
            match table.format {
                RecordFormat::Json if table.schema.is_empty() => {
                    return Err(invalid(
                        format!("silver.{name}.schema"),
                        "declare at least one field of the records".into(),
                    ));
                }
                RecordFormat::Avro if !table.schema.is_empty() => {
                    return Err(invalid(
                        format!("silver.{name}.schema"),
                        "Avro records are typed by their schemas in the registry: remove the \
                         schema (or set format = \"json\")"
                            .into(),
                    ));
                }
                RecordFormat::Avro if self.schema_registry.url.is_none() => {
                    return Err(invalid(
                        "schema_registry.url".into(),
                        format!("silver.{name} reads Avro: name the schema registry (or set LAKECTL_SCHEMA_REGISTRY_URL)"),
                    ));
                }
                _ => {}
            }
            if let Some(field) = table
                .schema
                .keys()
                .find(|f| SILVER_LINEAGE.contains(&f.as_str()))
            {
                return Err(invalid(
                    format!("silver.{name}.schema.{field}"),
                    format!("{field} is a lineage column silver adds itself; rename the field in the cleaning SQL instead"),
                ));
            }
            if let Some(setting) = zero_unit_limit(table.batch_rows, table.batch_bytes) {
                return Err(invalid(
                    format!("silver.{name}.{setting}"),
                    "must be greater than zero".into(),
                ));
            }
            match (&table.sql, &table.sql_file) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        format!("silver.{name}.sql_file"),
                        "give `sql` or `sql_file`, not both".into(),
                    ))
                }
                (None, Some(file)) => {
                    let path = self.resolve_path(file);
                    std::fs::metadata(&path).map_err(|e| {
                        invalid(
                            format!("silver.{name}.sql_file"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?;
                }
                (None, None) if table.format == RecordFormat::Json => {
                    // Without SQL the columns are the schema's: the key must be among them.
                    if let Some(k) = table.key.iter().find(|k| !table.schema.contains_key(*k)) {
                        return Err(invalid(
                            format!("silver.{name}.key"),
                            format!("{k:?} is not a field of silver.{name}.schema (and there is no cleaning SQL to make it)"),
                        ));
                    }
                }
                _ => {}
            }
        }
        for name in self.gold.keys() {
            check_table_name("gold", name).map_err(|m| invalid(format!("gold.{name}"), m))?;
        }
        for (name, table) in &self.window {
            self.validate_window(name, table)
                .map_err(|(key, m)| invalid(key, m))?;
        }
        for (name, sink) in &self.sink {
            self.validate_sink(name, sink)
                .map_err(|(key, m)| invalid(key, m))?;
        }
        for (name, target) in &self.load {
            let t = &target.source.name;
            let known = match target.source.layer {
                Layer::Silver => self.silver.contains_key(t),
                Layer::Gold => self.gold.contains_key(t),
                Layer::Window => self.window.contains_key(t),
                _ => false,
            };
            if !known {
                return Err(invalid(
                    format!("load.{name}.source"),
                    format!(
                        "{:?} is not a silver.<table>, gold.<table> or window.<table> of this pipeline",
                        target.source.as_str()
                    ),
                ));
            }
            if target.mode == LoadMode::Upsert && target.key.is_empty() {
                return Err(invalid(
                    format!("load.{name}.key"),
                    "mode \"upsert\" needs key columns".into(),
                ));
            }
        }
        Ok(())
    }

    /// Checks one `[window.<name>]`; errors name the key.
    fn validate_window(&self, name: &str, table: &WindowTable) -> Result<(), (String, String)> {
        let key = |k: &str| format!("window.{name}.{k}");
        check_table_name("window", name).map_err(|m| (format!("window.{name}"), m))?;
        match self.silver.get(&table.source) {
            None => {
                return Err((
                    key("source"),
                    format!("no silver table named {:?} in this pipeline", table.source),
                ))
            }
            Some(silver) if silver.on_existing_key != OnExistingKey::Keep => {
                return Err((
                    key("source"),
                    format!(
                        "silver.{} replaces rows (on_existing_key = \"replace\"); windows read \
                         only tables that append: set on_existing_key = \"keep\" there",
                        table.source
                    ),
                ))
            }
            Some(_) => {}
        }
        if self.silver.contains_key(name) {
            return Err((
                format!("window.{name}"),
                format!("silver.{name} exists too, and both would keep their late or bad rows in quarantine.{name}: rename one"),
            ));
        }
        let kinds = [
            table.tumble.is_some(),
            table.hop.is_some(),
            table.session.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err((
                format!("window.{name}"),
                "give exactly one of tumble, hop and session".into(),
            ));
        }
        let positive = |k: &str, span: Span| {
            if span.0.is_zero() {
                Err((key(k), "must be longer than zero".to_string()))
            } else {
                Ok(())
            }
        };
        if let Some(size) = table.tumble {
            positive("tumble", size)?;
        }
        if let Some(hop) = table.hop {
            positive("hop.size", hop.size)?;
            positive("hop.slide", hop.slide)?;
            if hop.slide.0 > hop.size.0 {
                return Err((
                    key("hop.slide"),
                    "must not be longer than hop.size (rows between windows would belong to none)"
                        .into(),
                ));
            }
        }
        if let Some(session) = &table.session {
            positive("session.gap", session.gap)?;
            if let Some(max) = session.max_duration {
                positive("session.max_duration", max)?;
            }
            if session.key.is_empty() {
                return Err((key("session.key"), "needs at least one column".into()));
            }
            if !table.group_by.is_empty() {
                return Err((
                    key("group_by"),
                    "a session's group keys are session.key; leave group_by out".into(),
                ));
            }
            if table.output == WindowOutput::Update {
                return Err((
                    key("output"),
                    "sessions are written in \"append\" mode only: an open session's bounds \
                     move as events arrive, so there is no stable row to update"
                        .into(),
                ));
            }
        }
        match (&table.rows, table.aggregates.is_empty()) {
            (None, true) => return Err((
                format!("window.{name}"),
                "declare its output: aggregates (a row per window) or rows (each row of a window)"
                    .into(),
            )),
            (Some(_), false) => {
                return Err((key("rows"), "give aggregates or rows, not both".into()))
            }
            (Some(_), true) if table.output == WindowOutput::Update => {
                return Err((
                    key("output"),
                    "rows are written once, when their window is final: use \"append\"".into(),
                ))
            }
            _ => {}
        }
        // Output columns known here: rows add the source's columns, which are not.
        let (section, known, extra) = match &table.rows {
            Some(rows) => ("rows", &[][..], rows),
            None => (
                "aggregates",
                &table.session.as_ref().map_or(&table.group_by, |s| &s.key)[..],
                &table.aggregates,
            ),
        };
        let mut columns: Vec<&str> = WINDOW_BOUNDS.to_vec();
        for column in known.iter().chain(extra.keys()) {
            if columns.contains(&column.as_str()) {
                return Err((
                    key(section),
                    format!("{column:?} would be two output columns"),
                ));
            }
            columns.push(column);
        }
        let unknown = (table.partition_by.iter()).find(|c| !columns.contains(&c.as_str()));
        if let (None, Some(c)) = (&table.rows, unknown) {
            return Err((
                key("partition_by"),
                format!("{c:?} is not an output column ({})", columns.join(", ")),
            ));
        }
        if let Some(setting) = zero_unit_limit(table.batch_rows, table.batch_bytes) {
            return Err((key(setting), "must be greater than zero".into()));
        }
        Ok(())
    }

    /// Checks one `[sink.<name>]`: its source must only ever append.
    fn validate_sink(&self, name: &str, sink: &SinkTopic) -> Result<(), (String, String)> {
        let key = |k: &str| format!("sink.{name}.{k}");
        check_table_name("sink", name).map_err(|m| (format!("sink.{name}"), m))?;
        let t = &sink.source.name;
        let appends = match sink.source.layer {
            Layer::Silver => self
                .silver
                .get(t)
                .map(|s| s.on_existing_key == OnExistingKey::Keep),
            Layer::Window => self.window.get(t).map(|w| w.output == WindowOutput::Append),
            _ => None,
        };
        match appends {
            None => Err((
                key("source"),
                format!(
                    "{:?} is not a silver.<table> or window.<table> of this pipeline",
                    sink.source.as_str()
                ),
            )),
            Some(false) => Err((
                key("source"),
                format!(
                    "{} rewrites rows; a sink sends each row once, so it reads tables that only \
                     append (silver with on_existing_key = \"keep\", windows with output = \"append\")",
                    sink.source
                ),
            )),
            Some(true) if sink.partitions < 1 => {
                Err((key("partitions"), "must be at least 1".into()))
            }
            Some(true) => match zero_unit_limit(sink.batch_rows, sink.batch_bytes) {
                Some(setting) => Err((key(setting), "must be greater than zero".into())),
                None => Ok(()),
            },
        }
    }

    /// The Kafka consumer group of this pipeline.
    pub fn group_id(&self) -> String {
        self.kafka
            .group_id
            .clone()
            .unwrap_or_else(|| format!("lakectl-{}", self.name))
    }

    /// A path from the pipeline file, resolved against the file's folder.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        match self.source_file.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }
}

/// Table names become folder names and SQL identifiers: keep them plain.
fn check_table_name(layer: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{layer} table name {name:?} must be letters, digits and underscores, not starting with a digit"
        ))
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const MINIMAL: &str = r#"
name = "books"

[bronze.books]
topic = "books"
"#;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn load_with(
        text: &str,
        env: &[(&str, &str)],
        cli: &[(&str, &str)],
    ) -> Result<Pipeline, ConfigError> {
        let (_dir, path) = write(text);
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cli: Vec<(String, String)> = cli
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Pipeline::load(&path, &|k| env.get(k).cloned(), &cli)
    }

    #[test]
    fn defaults_apply_when_the_file_is_silent() {
        let p = load_with(MINIMAL, &[], &[]).unwrap();
        assert_eq!(p.lake.uri, "file://./lake");
        assert_eq!(p.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(p.group_id(), "lakectl-books");
        assert_eq!(p.runner.max_retries, 5);
        assert_eq!(p.bronze["books"].flush_rows, 100_000);
        assert_eq!(p.postgres.url_env, "DATABASE_URL");
    }

    #[test]
    fn each_layer_overrides_the_one_below() {
        let file = format!("{MINIMAL}\n[kafka]\nbrokers = \"file:1\"\n[runner]\nmax_retries = 7\nidle_poll_ms = 10\n");
        // file beats default
        let p = load_with(&file, &[], &[]).unwrap();
        assert_eq!(p.kafka.brokers, "file:1");
        assert_eq!(p.runner.max_retries, 7);
        // env beats file
        let env = [
            ("LAKECTL_KAFKA_BROKERS", "env:2"),
            ("LAKECTL_RUNNER_MAX_RETRIES", "9"),
        ];
        let p = load_with(&file, &env, &[]).unwrap();
        assert_eq!(p.kafka.brokers, "env:2");
        assert_eq!(p.runner.max_retries, 9);
        assert_eq!(
            p.runner.idle_poll_ms, 10,
            "keys the env does not set keep the file's value"
        );
        // CLI beats env
        let p = load_with(&file, &env, &[("kafka.brokers", "cli:3")]).unwrap();
        assert_eq!(p.kafka.brokers, "cli:3");
        assert_eq!(p.runner.max_retries, 9);
    }

    #[test]
    fn aws_env_becomes_storage_options_and_postgres_url_comes_from_the_named_var() {
        let file = format!("{MINIMAL}\n[postgres]\nurl_env = \"BOOKS_PG\"\n");
        let env = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_SECRET_ACCESS_KEY", "s3cret"),
            ("BOOKS_PG", "postgres://u:p@127.0.0.1/db"),
            ("DATABASE_URL", "postgres://ignored"),
        ];
        let p = load_with(&file, &env, &[]).unwrap();
        assert_eq!(
            p.lake.storage_options["aws_endpoint_url"],
            "http://127.0.0.1:9000"
        );
        assert_eq!(p.lake.storage_options["aws_secret_access_key"], "s3cret");
        assert_eq!(
            p.postgres_url.as_deref(),
            Some("postgres://u:p@127.0.0.1/db")
        );
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let text = "name = \"x\"\n\n[kafka]\nbrokers = \"a:1\"\nbrokerz = \"b:2\"\n";
        let err = load_with(text, &[], &[]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Parse { line: 5, .. }), "{msg}");
        assert!(msg.contains("brokerz"), "{msg}");
        assert!(msg.contains("pipeline.toml:5:"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_key_and_line() {
        let text = "name = \"x\"\n[runner]\nmax_retries = \"five\"\n";
        let err = load_with(text, &[], &[]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Parse { line: 3, .. }), "{msg}");
        assert!(msg.contains("invalid type"), "{msg}");
    }

    #[test]
    fn missing_required_key_names_the_key_and_the_table_line() {
        let text = "name = \"x\"\n\n[bronze.books]\nflush_rows = 10\n";
        let err = load_with(text, &[], &[]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Parse { line: 3, .. }), "{msg}");
        assert!(msg.contains("missing field `topic`"), "{msg}");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = load_with("name = \"x\"\n[kafka\n", &[], &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: 2, .. }), "{err}");
    }

    #[test]
    fn unreadable_file_names_the_file() {
        let err = Pipeline::load(Path::new("/nonexistent/p.toml"), &|_| None, &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/p.toml"), "{err}");
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let err = load_with(MINIMAL, &[("LAKECTL_RUNNER_MAX_RETRIES", "lots")], &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Env { .. }));
        assert!(
            err.to_string().contains("LAKECTL_RUNNER_MAX_RETRIES"),
            "{err}"
        );
    }

    #[test]
    fn bad_cli_key_names_the_flag_and_lists_keys() {
        let err = load_with(MINIMAL, &[], &[("kafka.brokerz", "x")]).unwrap_err();
        assert!(matches!(err, ConfigError::Flag { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("--set kafka.brokerz") && msg.contains("kafka.brokers"),
            "{msg}"
        );
    }

    #[test]
    fn invalid_values_name_the_key_and_file() {
        let bad_uri = format!("{MINIMAL}\n[lake]\nuri = \"ftp://host/x\"\n");
        let err = load_with(&bad_uri, &[], &[]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "lake.uri"),
            "{err}"
        );
        assert!(err.to_string().contains("pipeline.toml"), "{err}");

        let dangling = format!("{MINIMAL}\n[silver.clean]\nsource = \"nope\"\nkey = [\"id\"]\nschema = {{ id = \"int\" }}\n");
        let err = load_with(&dangling, &[], &[]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "silver.clean.source"),
            "{err}"
        );

        let upsert_without_key =
            format!("{MINIMAL}\n[gold.g]\nsql = \"select 1\"\n[load.g]\nsource = \"gold.g\"\n");
        let err = load_with(&upsert_without_key, &[], &[]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "load.g.key"),
            "{err}"
        );
    }

    #[test]
    fn window_tables_are_checked_key_by_key() {
        let silver = format!(
            "{MINIMAL}\n[silver.events]\nsource = \"books\"\nkey = [\"id\"]\non_existing_key = \"keep\"\nschema = {{ id = \"int\", t = \"timestamp\" }}\n"
        );
        let window = |body: &str| {
            format!("{silver}[window.w]\nsource = \"events\"\ntime = \"t\"\nwatermark = \"1m\"\naggregates = {{ n = \"count(*)\" }}\n{body}")
        };
        assert!(load_with(&window("tumble = \"1m\"\n"), &[], &[]).is_ok());
        for (body, wanted, says) in [
            ("", "window.w", "exactly one"),
            (
                "tumble = \"1m\"\nhop = { size = \"5m\", slide = \"1m\" }\n",
                "window.w",
                "exactly one",
            ),
            (
                "hop = { size = \"1m\", slide = \"5m\" }\n",
                "window.w.hop.slide",
                "hop.size",
            ),
            ("tumble = \"0s\"\n", "window.w.tumble", "longer than zero"),
            (
                "session = { gap = \"30m\", key = [\"id\"] }\noutput = \"update\"\n",
                "window.w.output",
                "append",
            ),
            (
                "session = { gap = \"30m\", key = [\"id\"] }\ngroup_by = [\"id\"]\n",
                "window.w.group_by",
                "session.key",
            ),
            (
                "tumble = \"1m\"\npartition_by = [\"day\"]\n",
                "window.w.partition_by",
                "window_start",
            ),
            (
                "tumble = \"1m\"\ngroup_by = [\"n\"]\n",
                "window.w.aggregates",
                "two output columns",
            ),
            (
                "tumble = \"1m\"\nbatch_rows = 0\n",
                "window.w.batch_rows",
                "greater than zero",
            ),
            (
                "tumble = \"1m\"\nbatch_bytes = 0\n",
                "window.w.batch_bytes",
                "greater than zero",
            ),
        ] {
            let err = load_with(&window(body), &[], &[]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key, message, .. } if key == wanted && message.contains(says)),
                "{body}: {err}"
            );
        }
        let replacing = window("tumble = \"1m\"\n").replace("on_existing_key = \"keep\"\n", "");
        let err = load_with(&replacing, &[], &[]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, message, .. } if key == "window.w.source" && message.contains("keep")),
            "{err}"
        );
    }

    #[test]
    fn silver_tables_are_checked_where_they_are_written() {
        let base = format!("{MINIMAL}\n[silver.s]\nsource = \"books\"\nkey = [\"id\"]\n");
        let bad_type = format!("{base}[silver.s.schema]\nid = \"int\"\nwhen = \"datetime\"\n");
        match load_with(&bad_type, &[], &[]).unwrap_err() {
            ConfigError::Parse { line, message, .. } => {
                let when_line = bad_type
                    .lines()
                    .position(|l| l.starts_with("when"))
                    .unwrap()
                    + 1;
                assert_eq!(line, when_line);
                assert!(
                    message.contains("datetime") && message.contains("decimal(p,s)"),
                    "{message}"
                );
            }
            other => panic!("{other}"),
        }
        let schema = format!("{base}[silver.s.schema]\nid = \"int\"\n");
        let bad_rule =
            format!("{schema}[[silver.s.expect]]\nrule = \"positive\"\ncolumn = \"id\"\n");
        let err = load_with(&bad_rule, &[], &[]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Parse { message, .. } if message.contains("unknown rule")),
            "{err}"
        );

        let lineage = format!("{schema}_offset = \"int\"\n");
        let err = load_with(&lineage, &[], &[]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "silver.s.schema._offset"),
            "{err}"
        );

        let no_bytes = schema.replace("key = [\"id\"]", "key = [\"id\"]\nbatch_bytes = 0");
        let err = load_with(&no_bytes, &[], &[]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, message, .. } if key == "silver.s.batch_bytes" && message.contains("greater than zero")),
            "{err}"
        );

        let key_nowhere = schema.replace("key = [\"id\"]", "key = [\"title\"]");
        let err = load_with(&key_nowhere, &[], &[]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "silver.s.key"),
            "{err}"
        );

        let missing_sql =
            schema.replace("key = [\"id\"]", "key = [\"id\"]\nsql_file = \"nope.sql\"");
        let err = load_with(&missing_sql, &[], &[]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, message, .. } if key == "silver.s.sql_file" && message.contains("nope.sql")),
            "{err}"
        );
    }

    #[test]
    fn secrets_in_the_file_are_refused() {
        let text =
            format!("{MINIMAL}\n[lake.storage_options]\naws_secret_access_key = \"hunter2\"\n");
        let err = load_with(&text, &[], &[]).unwrap_err();
        assert!(matches!(err, ConfigError::SecretInFile { .. }), "{err}");
        assert!(
            !err.to_string().contains("hunter2"),
            "the secret must not be echoed"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_pipeline_folder() {
        let mut p = Pipeline::parse(MINIMAL, Path::new("/etc/pipes/p.toml")).unwrap();
        assert_eq!(
            p.resolve_path(Path::new("../data/x.csv")),
            PathBuf::from("/etc/pipes/../data/x.csv")
        );
        p.source_file = PathBuf::from("p.toml");
        assert_eq!(p.resolve_path(Path::new("x.csv")), PathBuf::from("x.csv"));
    }

    const SASL: &str = "[kafka]\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"etl\"\n";

    #[test]
    fn kafka_sasl_takes_its_password_from_the_environment() {
        let text = format!("{MINIMAL}\n{SASL}");
        let p = load_with(&text, &[("LAKECTL_KAFKA_SASL_PASSWORD", "pw-123")], &[]).unwrap();
        assert_eq!(p.kafka.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(
            p.kafka.sasl_password.as_ref().map(Secret::expose),
            Some("pw-123")
        );
        assert!(
            !format!("{p:?}").contains("pw-123"),
            "Debug shows the password"
        );
        let config = crate::kafka::client_config(&p.kafka);
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("etl"));
        assert_eq!(config.get("sasl.password"), Some("pw-123"));

        let err = load_with(&text, &[], &[]).unwrap_err().to_string();
        assert!(
            err.contains("LAKECTL_KAFKA_SASL_PASSWORD") && err.contains("not set"),
            "{err}"
        );
        let named = format!("{text}sasl_password_env = \"ETL_KAFKA_PW\"\n");
        let err = load_with(&named, &[], &[]).unwrap_err().to_string();
        assert!(err.contains("ETL_KAFKA_PW"), "{err}");
    }

    #[test]
    fn kafka_security_mistakes_name_the_setting() {
        let typo = format!(
            "{MINIMAL}\n{}",
            SASL.replace("SCRAM-SHA-512", "SCRAM-SHA-1")
        );
        let err = load_with(&typo, &[("LAKECTL_KAFKA_SASL_PASSWORD", "x")], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":9:") && err.contains("SCRAM-SHA-1") && err.contains("SCRAM-SHA-256"),
            "{err}"
        );
        let no_mechanism = format!("{MINIMAL}\n[kafka]\nsecurity_protocol = \"sasl_plaintext\"\n");
        let err = load_with(&no_mechanism, &[], &[]).unwrap_err().to_string();
        assert!(err.contains("kafka.sasl_mechanism"), "{err}");
        let protocol = format!("{MINIMAL}\n[kafka]\nsecurity_protocol = \"tls\"\n");
        let err = load_with(&protocol, &[], &[]).unwrap_err().to_string();
        assert!(err.contains(":8:") && err.contains("sasl_ssl"), "{err}");
        for secret in [
            "sasl.password",
            "ssl.key.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
        ] {
            let text = format!("{MINIMAL}\n[kafka.options]\n\"{secret}\" = \"hunter2\"\n");
            let err = load_with(&text, &[], &[]).unwrap_err().to_string();
            assert!(err.contains(secret) && err.contains("secret"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn storage_keys_in_the_file_are_refused_and_debug_output_shows_no_secret() {
        let text = format!(
            "{MINIMAL}\n[lake.storage_options]\naws_sse_customer_key_base64 = \"hunter2\"\n"
        );
        let err = load_with(&text, &[], &[]).unwrap_err().to_string();
        assert!(err.contains("aws_sse_customer_key_base64"), "{err}");
        let text =
            format!("{MINIMAL}\n[schema_registry]\nurl = \"http://u:hunter2@registry:8081\"\n");
        let p = load_with(
            &text,
            &[
                ("DATABASE_URL", "postgres://u:hunter2@db/lakectl"),
                ("AWS_SECRET_ACCESS_KEY", "hunter2"),
                ("AWS_REGION", "eu-west-1"),
            ],
            &[],
        )
        .unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("eu-west-1") && shown.contains("db/lakectl"),
            "{shown}"
        );
    }

    #[test]
    fn spans_take_a_unit_or_mean_seconds() {
        use std::time::Duration;
        for (text, want) in [
            ("90", Duration::from_secs(90)),
            ("90s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            (" 1h ", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86400)),
        ] {
            assert_eq!(parse_span(text), Ok(want), "{text}");
        }
        for bad in ["", "s", "1w", "-1s", "1.2.3s", "ten"] {
            let err = parse_span(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn the_generate_section_takes_numbers_and_spans() {
        let p = load_with(
            &format!(
                "{MINIMAL}\n[generate]\nprofile = \"orders\"\nlate_by = \"5m\"\nout_of_order = 2\ncount = 10\n"
            ),
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(p.generate.profile.as_deref(), Some("orders"));
        assert_eq!(
            p.generate.late_by,
            Some(Span(std::time::Duration::from_secs(300)))
        );
        assert_eq!(
            p.generate.out_of_order,
            Some(Span(std::time::Duration::from_secs(2)))
        );
        let err = load_with(
            &format!("{MINIMAL}\n[generate]\nlate_by = \"soon\"\n"),
            &[],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(":8:") && err.contains("\"soon\""), "{err}");
    }

    #[test]
    fn without_a_file_env_and_flags_still_apply() {
        let env: HashMap<&str, &str> = [("LAKECTL_KAFKA_BROKERS", "10.0.0.1:9092")].into();
        let p = Pipeline::without_file(&|k| env.get(k).map(|v| v.to_string()), &[]).unwrap();
        assert_eq!(p.kafka.brokers, "10.0.0.1:9092");
        assert!(p.bronze.is_empty());
    }

    #[test]
    fn the_shipped_books_pipeline_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/books.toml");
        let p = Pipeline::load(&path, &|_| None, &[]).unwrap();
        assert_eq!(p.bronze["books"].topic, "books");
        assert!(p.silver.contains_key("books"));
    }
}
