//! `lakectl run … --metrics-addr`: a real Prometheus (Debian's 2.42, `scripts/install-deps.sh`)
//! scrapes continuous bronze every second; its query API shows the counters reach the
//! generated record count and the consumer lag rise with the backlog and fall back to zero.

use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// A Prometheus server scraping `target` every second, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: lakectl\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is not installed: run scripts/install-deps.sh");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(&format!("{url}/-/ready"), None).0 != 200 {
            assert!(Instant::now() < deadline, "prometheus did not get ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        Prometheus {
            child,
            url,
            _dir: dir,
        }
    }

    /// The values of an instant query, one per series.
    fn query(&self, promql: &str) -> Vec<f64> {
        let (code, body) = http_get(&format!("{}/api/v1/query", self.url), Some(promql));
        assert_eq!(code, 200, "{promql}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"][1].as_str().unwrap().parse().unwrap())
            .collect()
    }

    /// Waits until `promql`'s values satisfy `ok`, up to a minute; returns them.
    fn wait_for(&self, promql: &str, ok: impl Fn(&[f64]) -> bool) -> Vec<f64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let values = self.query(promql);
            if ok(&values) {
                return values;
            }
            assert!(Instant::now() < deadline, "{promql}: still {values:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_sees_records_commits_and_lag_move() {
    let Some(t) = TestPipeline::new("flush_rows = 5000") else {
        return;
    };
    let n = 200_000;
    // A backlog first, so that bronze takes a few seconds (40 commits) to drain it.
    ok(run(t.lakectl().args([
        "generate",
        "user-activity",
        "--count",
        &n.to_string(),
        "--topic",
        &t.topic,
        "--partitions",
        "3",
    ])));
    let addr = format!("127.0.0.1:{}", free_port());
    let prometheus = Prometheus::start(&addr);
    let (log, file) = t.log_file("bronze");
    let mut bronze = t
        .lakectl()
        .args(["run", "bronze", "--continuous", "--metrics-addr", &addr])
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();

    let job = format!("{{stage=\"bronze\",table=\"{}\"}}", t.table);
    let lag = format!("sum(lakectl_kafka_consumer_lag{job})");
    let peak_lag = format!("max(max_over_time(lakectl_kafka_consumer_lag{job}[5m]))");
    let peak = prometheus.wait_for(&peak_lag, |v| v.first().is_some_and(|&p| p > 0.0));
    prometheus.wait_for(&format!("lakectl_records_out_total{job}"), |v| {
        v == [n as f64]
    });
    prometheus.wait_for(&lag, |v| v == [0.0]);
    let records_in = prometheus.query(&format!("lakectl_records_in_total{job}"));
    assert_eq!(records_in, [n as f64]);
    let commits = prometheus.query(&format!("lakectl_commits_total{job}"))[0];
    assert!(commits >= (n / 5000) as f64, "{commits} commits");
    let timed = prometheus.query(&format!("lakectl_commit_duration_seconds_count{job}"))[0];
    assert_eq!(timed, commits, "every commit is timed");
    let bytes = prometheus.query(&format!("lakectl_read_bytes_total{job}"))[0];
    assert!(bytes > 100.0 * n as f64, "{bytes} bytes");
    let partitions = prometheus
        .query(&format!("lakectl_kafka_consumer_lag{job}"))
        .len();
    assert_eq!(partitions, 3, "a lag series per partition");
    eprintln!("lag peaked at {} records; {commits} commits", peak[0]);

    // The endpoint itself: OpenMetrics text, live and ready.
    let base = format!("http://{addr}");
    assert_eq!(http_get(&format!("{base}/healthz"), None).0, 200);
    assert_eq!(http_get(&format!("{base}/readyz"), None).0, 200);
    let (code, text) = http_get(&format!("{base}/metrics"), None);
    assert_eq!(code, 200);
    assert!(text.ends_with("# EOF\n"), "{text}");

    // SIGTERM: a clean stop.
    unsafe { libc::kill(bronze.id() as i32, libc::SIGTERM) };
    let status = bronze.wait().unwrap();
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(log).unwrap()
    );
}
