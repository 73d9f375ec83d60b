//! Prometheus metrics of a lakectl process, served while a run lasts on `--metrics-addr`
//! (`[runner] metrics_addr`): `/metrics` (OpenMetrics text), `/healthz` (live: the process
//! answers) and `/readyz` (ready: every job of the run finished a unit, i.e. reached its
//! services). Without an address nothing is served and recording costs a few atomics.
//!
//! Every series carries the job as `stage` and `table` (`bronze:books` is `stage="bronze",
//! table="books"`). The runner records units,
//! records, bytes, commits and retries for every job type; the Delta commit paths time their
//! commits; bronze reports consumer lag, windows their watermark and the rows of their open windows, silver and
//! windows what they quarantined per rule. The names are listed in docs/operations.md.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::{Error, Result, UnitReport};

/// A job as labels: `bronze:books` is stage `bronze`, table `books`. (Not `job`: Prometheus
/// gives that label to the scrape job.)
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    stage: String,
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    #[prometheus(flatten)]
    job: JobLabel,
    topic: String,
    partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    #[prometheus(flatten)]
    job: JobLabel,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    #[prometheus(flatten)]
    job: JobLabel,
    service: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn commit_histogram() -> Histogram {
    // 5 ms … ~40 s: a local commit to a slow S3 under load.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

struct Metrics {
    registry: Registry,
    records_in: Family<JobLabel, Counter>,
    records_out: Family<JobLabel, Counter>,
    bytes_in: Family<JobLabel, Counter>,
    bytes_out: Family<JobLabel, Counter>,
    units: Family<JobLabel, Counter>,
    commits: Family<JobLabel, Counter>,
    commit_seconds: Family<JobLabel, Histogram, fn() -> Histogram>,
    last_commit: Family<JobLabel, FloatGauge>,
    consumer_lag: Family<PartitionLabel, Gauge>,
    watermark: Family<JobLabel, FloatGauge>,
    state_rows: Family<JobLabel, Gauge>,
    quarantined: Family<RuleLabel, Counter>,
    retries: Family<ServiceLabel, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("lakectl"),
            records_in: Family::default(),
            records_out: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            units: Family::default(),
            commits: Family::default(),
            commit_seconds: Family::new_with_constructor(commit_histogram),
            last_commit: Family::default(),
            consumer_lag: Family::default(),
            watermark: Family::default(),
            state_rows: Family::default(),
            quarantined: Family::default(),
            retries: Family::default(),
        };
        let r = &mut m.registry;
        r.register("records_in", "Records a job read", m.records_in.clone());
        r.register(
            "records_out",
            "Rows a job wrote (committed)",
            m.records_out.clone(),
        );
        r.register_with_unit(
            "read",
            "Record bytes a job read (bronze: Kafka keys, values and headers)",
            Unit::Bytes,
            m.bytes_in.clone(),
        );
        r.register_with_unit(
            "written",
            "Record bytes a job wrote (bronze: to Delta; sink: to Kafka)",
            Unit::Bytes,
            m.bytes_out.clone(),
        );
        r.register("units", "Units of work a job finished", m.units.clone());
        r.register(
            "commits",
            "Units that committed a new table version",
            m.commits.clone(),
        );
        r.register_with_unit(
            "commit_duration",
            "Time a Delta commit took: data files and log entry",
            Unit::Seconds,
            m.commit_seconds.clone(),
        );
        r.register_with_unit(
            "last_commit_timestamp",
            "When a job last committed, seconds since the epoch",
            Unit::Seconds,
            m.last_commit.clone(),
        );
        r.register(
            "kafka_consumer_lag",
            "Records on the broker not yet committed to the bronze table, per partition",
            m.consumer_lag.clone(),
        );
        r.register_with_unit(
            "window_watermark",
            "A window job's watermark (the slowest partition's), seconds since the epoch",
            Unit::Seconds,
            m.watermark.clone(),
        );
        r.register(
            "window_state_rows",
            "Rows of the open windows and sessions a window job holds in its state",
            m.state_rows.clone(),
        );
        r.register(
            "rows_quarantined",
            "Rows a job sent to quarantine, per rule",
            m.quarantined.clone(),
        );
        r.register(
            "retries",
            "Units retried after a retryable error, per service that failed",
            m.retries.clone(),
        );
        m
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
/// Jobs of the run that have not finished a unit yet; `/readyz` answers 200 at zero.
static NOT_READY: AtomicUsize = AtomicUsize::new(0);
static SERVING: AtomicBool = AtomicBool::new(false);
/// Whether a job of the run has started: before, there is nothing to be ready.
static STARTED: AtomicBool = AtomicBool::new(false);
/// Jobs of the run that stopped with an error, and why; `/readyz` fails while there is one.
static FAILED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

fn job(name: &str) -> JobLabel {
    let (stage, table) = name.split_once(':').unwrap_or((name, ""));
    JobLabel {
        stage: stage.to_string(),
        table: table.to_string(),
    }
}

tokio::task_local! {
    /// The job whose unit is running on this task: set by the runner, read by commit timing.
    static JOB: String;
}

/// Runs `unit` with `job` as the job its commits are timed under.
pub async fn in_job<T>(name: &str, unit: impl Future<Output = T>) -> T {
    JOB.scope(name.to_string(), unit).await
}

/// Awaits a Delta commit and records how long it took, under the running job.
pub async fn timed_commit<T>(commit: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = commit.await;
    let seconds = started.elapsed().as_secs_f64();
    let _ = JOB.try_with(|name| {
        metrics()
            .commit_seconds
            .get_or_create(&job(name))
            .observe(seconds)
    });
    out
}

/// Whether a metrics endpoint is up (jobs then turn on what costs something, like librdkafka's
/// statistics).
pub fn serving() -> bool {
    SERVING.load(Ordering::Relaxed)
}

/// A job starts: not ready until its first unit ends.
pub fn job_started() {
    NOT_READY.fetch_add(1, Ordering::Relaxed);
    STARTED.store(true, Ordering::Relaxed);
}

/// What the runner learns from each finished unit of `name`; `first` marks the job ready.
pub fn unit_finished(name: &str, unit: &UnitReport, first: bool) {
    let m = metrics();
    let label = job(name);
    m.units.get_or_create(&label).inc();
    m.records_in.get_or_create(&label).inc_by(unit.rows_in);
    m.records_out.get_or_create(&label).inc_by(unit.rows_out);
    m.bytes_in.get_or_create(&label).inc_by(unit.bytes_in);
    m.bytes_out.get_or_create(&label).inc_by(unit.bytes_out);
    if unit.version_written.is_some() {
        m.commits.get_or_create(&label).inc();
        let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
        m.last_commit.get_or_create(&label).set(now);
    }
    if first {
        NOT_READY.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `name` stopped with `error`: the process is no longer ready (its other jobs finish their
/// units and it exits non-zero).
pub fn job_failed(name: &str, error: &str) {
    FAILED
        .lock()
        .expect("failed jobs lock")
        .push(format!("{name} stopped: {error}"));
}

/// Why the process is not ready, if it is not.
pub(crate) fn not_ready() -> Option<String> {
    let failed = FAILED.lock().expect("failed jobs lock");
    if !failed.is_empty() {
        return Some(failed.join("\n") + "\n");
    }
    match NOT_READY.load(Ordering::Relaxed) {
        0 if STARTED.load(Ordering::Relaxed) => None,
        0 => Some("no job has started yet\n".to_string()),
        n => Some(format!("{n} job(s) have not finished a unit yet\n")),
    }
}

/// A unit of `name` is retried after `service` failed.
pub fn retried(name: &str, service: &str) {
    metrics()
        .retries
        .get_or_create(&ServiceLabel {
            job: job(name),
            service: service.to_string(),
        })
        .inc();
}

/// Consumer lag of a partition `name` owns; `None` when it no longer owns it.
pub fn consumer_lag(name: &str, topic: &str, partition: i32, lag: Option<i64>) {
    let label = PartitionLabel {
        job: job(name),
        topic: topic.to_string(),
        partition,
    };
    match lag {
        Some(lag) => {
            metrics().consumer_lag.get_or_create(&label).set(lag);
        }
        None => {
            metrics().consumer_lag.remove(&label);
        }
    }
}

/// A window job's watermark (microseconds since the epoch) and the rows its open windows hold,
/// after a unit.
pub fn window_state(name: &str, watermark_micros: Option<i64>, state_rows: usize) {
    let m = metrics();
    if let Some(w) = watermark_micros {
        m.watermark.get_or_create(&job(name)).set(w as f64 / 1e6);
    }
    m.state_rows
        .get_or_create(&job(name))
        .set(state_rows as i64);
}

/// Rows `name` sent to quarantine under `rule`.
pub fn quarantined(name: &str, rule: &str, rows: u64) {
    metrics()
        .quarantined
        .get_or_create(&RuleLabel {
            job: job(name),
            rule: rule.to_string(),
        })
        .inc_by(rows);
}

/// Everything recorded so far, in the OpenMetrics text format.
pub fn encode() -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics().registry)
        .expect("writing to a String cannot fail");
    text
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the process exits.
pub async fn serve(addr: SocketAddr) -> Result<()> {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::Input(format!(
            "metrics_addr {addr}: cannot listen there ({e}); pick a free port"
        ))
    })?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|| async {
                match not_ready() {
                    None => (StatusCode::OK, "ready\n".to_string()),
                    Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                }
            }),
        );
    SERVING.store(true, Ordering::Relaxed);
    tracing::info!(%addr, "serving metrics on /metrics, /healthz, /readyz");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let unit = UnitReport {
            rows_in: 5,
            rows_out: 4,
            bytes_in: 100,
            bytes_out: 90,
            version_written: Some(3),
            ..Default::default()
        };
        unit_finished("test:t", &unit, false);
        quarantined("test:t", "parse", 1);
        retried("test:t", "kafka broker");
        consumer_lag("test:t", "topic", 2, Some(7));
        window_state("test:t", Some(1_700_000_000_000_000), 3);
        let text = encode();
        for line in [
            "lakectl_records_in_total{stage=\"test\",table=\"t\"} 5",
            "lakectl_records_out_total{stage=\"test\",table=\"t\"} 4",
            "lakectl_read_bytes_total{stage=\"test\",table=\"t\"} 100",
            "lakectl_written_bytes_total{stage=\"test\",table=\"t\"} 90",
            "lakectl_units_total{stage=\"test\",table=\"t\"} 1",
            "lakectl_commits_total{stage=\"test\",table=\"t\"} 1",
            "lakectl_rows_quarantined_total{stage=\"test\",table=\"t\",rule=\"parse\"} 1",
            "lakectl_retries_total{stage=\"test\",table=\"t\",service=\"kafka broker\"} 1",
            "lakectl_kafka_consumer_lag{stage=\"test\",table=\"t\",topic=\"topic\",partition=\"2\"} 7",
            "lakectl_window_watermark_seconds{stage=\"test\",table=\"t\"} 1700000000.0",
            "lakectl_window_state_rows{stage=\"test\",table=\"t\"} 3",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert!(text.contains("# TYPE lakectl_last_commit_timestamp_seconds gauge"));
        consumer_lag("test:t", "topic", 2, None);
        assert!(!encode().contains("partition=\"2\""));
    }

    /// The Grafana dashboard docker-compose provisions (Grafana itself is not installable
    /// here): well formed, every panel on the Prometheus data source, and every lakectl
    /// metric its queries name is one this module exports.
    #[test]
    fn the_grafana_dashboard_queries_exported_metrics() {
        use futures::FutureExt;
        let text = include_str!("../../docker/grafana/dashboards/lakectl.json");
        let dashboard: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(dashboard["uid"], "lakectl");
        // A series in every family: empty families are not encoded.
        let name = "dashboard:t";
        let committed = UnitReport {
            version_written: Some(0),
            ..Default::default()
        };
        unit_finished(name, &committed, false);
        quarantined(name, "parse", 0);
        retried(name, "kafka broker");
        consumer_lag(name, "topic", 0, Some(0));
        window_state(name, Some(0), 0);
        in_job(name, timed_commit(async {})).now_or_never();
        let exported = encode();
        let families: Vec<&str> = exported
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let known = |name: &str| {
            let base = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            families.contains(&base)
        };
        let name = regex::Regex::new(r"lakectl_[a-z_]+").unwrap();
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(panels.len() >= 8);
        let mut seen = std::collections::BTreeSet::new();
        for panel in panels {
            let title = panel["title"].as_str().unwrap();
            assert_eq!(panel["datasource"]["uid"], "prometheus", "{title}");
            for key in ["x", "y", "w", "h"] {
                assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
            }
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{title}");
            for target in targets {
                let expr = target["expr"].as_str().unwrap();
                for m in name.find_iter(expr) {
                    assert!(known(m.as_str()), "{title}: {} is not exported", m.as_str());
                    seen.insert(m.as_str().to_string());
                }
            }
        }
        // Lag, commit latency and quarantine are on it: what an operator looks at first.
        for must in [
            "lakectl_kafka_consumer_lag",
            "lakectl_commit_duration_seconds_bucket",
            "lakectl_rows_quarantined_total",
        ] {
            assert!(seen.contains(must), "no panel shows {must}");
        }
    }
}
