//! lakectl's SQL on a Ballista cluster: a scheduler and two executors from the same binary
//! (`lakectl cluster …`) on loopback. Gold tables and queries give what they give in process;
//! an executor killed mid-query leaves the gold table as it was, or the query is retried.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// A scheduler and two executors, stopped (SIGKILL) when dropped.
struct Cluster {
    url: String,
    executors: Vec<(Child, u16)>,
    scheduler: Child,
    _work: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let work = tempfile::tempdir().unwrap();
        let port = free_port();
        let scheduler = Command::new(env!("CARGO_BIN_EXE_lakectl"))
            .args(["cluster", "scheduler", "--executor-timeout", "5", "--bind"])
            .arg(format!("127.0.0.1:{port}"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.path().join("scheduler.log")).unwrap())
            .spawn()
            .unwrap();
        wait_for_port(port);
        let executors = (0..2)
            .map(|i| {
                // Flight on `flight`, gRPC on the next port: both must be free.
                let flight = loop {
                    let p = free_port();
                    if std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                        break p;
                    }
                };
                let dir = work.path().join(format!("executor-{i}"));
                std::fs::create_dir_all(&dir).unwrap();
                let child = Command::new(env!("CARGO_BIN_EXE_lakectl"))
                    .args(["cluster", "executor", "--slots", "2", "--scheduler"])
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--bind")
                    .arg(format!("127.0.0.1:{flight}"))
                    .arg("--work-dir")
                    .arg(&dir)
                    .env_remove("RUST_LOG")
                    .stdout(Stdio::null())
                    .stderr(
                        std::fs::File::create(work.path().join(format!("executor-{i}.log")))
                            .unwrap(),
                    )
                    .spawn()
                    .unwrap();
                wait_for_port(flight);
                (child, flight)
            })
            .collect();
        // Registered with the scheduler by their first heartbeat.
        std::thread::sleep(Duration::from_secs(3));
        Cluster {
            url: format!("ballista://127.0.0.1:{port}"),
            executors,
            scheduler,
            _work: work,
        }
    }
}

impl Cluster {
    /// What a node logged so far at the default level (`scheduler`, `executor-0`, …).
    fn log(&self, node: &str) -> String {
        std::fs::read_to_string(self._work.path().join(format!("{node}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (child, _) in &mut self.executors {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.scheduler.kill();
        let _ = self.scheduler.wait();
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every row of a gold table, sorted, as text.
fn gold_rows(t: &TestPipeline, table: &str) -> Vec<Vec<Option<String>>> {
    let mut rows = table_rows(&t.lake(), Layer::Gold, table, "SELECT * FROM t");
    rows.sort();
    rows
}

const BOOKS_GOLD: [&str; 4] = [
    "sales_by_genre",
    "sales_by_language",
    "sales_by_decade",
    "quality_by_rule",
];

/// Silver's books, without the columns that differ between two runs over the same CSV (Kafka
/// timestamps and silver's commit time).
fn silver_books(t: &TestPipeline) -> Vec<Vec<Option<String>>> {
    let sql = "SELECT * EXCLUDE (_kafka_ts, _silver_ts) FROM t ORDER BY book_title";
    let rows = table_rows(&t.lake(), Layer::Silver, "books", sql);
    assert!(rows.len() > 100, "{}", rows.len());
    rows
}

/// The books pipeline from the same CSV twice, silver and gold built in process for one and on
/// the cluster for the other (the cleaning SQL and the expectations there): silver and every
/// gold table are equal; so is a `lakectl query` with a join.
#[test]
fn books_silver_and_gold_on_the_cluster_equal_in_process() {
    let (Some(local), Some(remote)) = (TestPipeline::books(), TestPipeline::books()) else {
        return;
    };
    for t in [&local, &remote] {
        ok(run(t.lakectl().arg("produce")));
        ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    }
    ok(run(local.lakectl().args(["run", "silver"])));
    ok(run(local.lakectl().args(["run", "gold"])));
    let query = "SELECT g.genre, count(*) AS books, max(g.sales_millions) AS sales \
                 FROM silver.books s JOIN gold.sales_by_genre g \
                 ON coalesce(s.genre, 'Unknown') = g.genre GROUP BY g.genre ORDER BY 1";
    let local_query = ok(run(local.lakectl().args(["query", query]))).stdout;

    let cluster = Cluster::start();
    for stage in ["silver", "gold"] {
        ok(run(remote
            .lakectl()
            .env("LAKECTL_ENGINE_URL", &cluster.url)
            .args(["run", stage])));
    }
    let (got, want) = (silver_books(&remote), silver_books(&local));
    assert_eq!(got.len(), want.len(), "silver.books on the cluster: rows");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "silver.books on the cluster");
    }
    for table in BOOKS_GOLD {
        assert_eq!(
            gold_rows(&remote, table),
            gold_rows(&local, table),
            "gold.{table} on the cluster"
        );
    }
    let mut q = remote.lakectl();
    q.env("LAKECTL_ENGINE_URL", &cluster.url);
    assert_eq!(ok(run(q.args(["query", query]))).stdout, local_query);
    // At the default log level an operator sees where each node listens and the jobs run.
    let scheduler = cluster.log("scheduler");
    assert!(
        scheduler.contains("ballista scheduler listening"),
        "{scheduler}"
    );
    assert!(
        scheduler.contains("Job finished successfully"),
        "{scheduler}"
    );
    let executor = cluster.log("executor-0");
    assert!(
        executor.contains("ballista executor starting"),
        "{executor}"
    );
}

/// The e-commerce pipeline with silver's SQL on the cluster (seven checks, one of them SQL,
/// the existing-key check against silver) and its gold there: silver, quarantine, the score
/// and gold equal the generator's truth and the oracle.
#[test]
fn ecommerce_on_the_cluster_matches_the_truth() {
    let Some(t) = TestPipeline::shipped("ecommerce", "shop", &[]) else {
        return;
    };
    let cluster = Cluster::start();
    crate::shop::assert_ecommerce_matches_the_truth(
        &t.with_env("LAKECTL_ENGINE_URL", cluster.url.clone()),
    );
}

/// The user-activity pipeline's silver and window jobs with their SQL on the cluster: the
/// windows, sessions and late records equal the oracle's. Before the cluster is up, the same
/// silver run fails naming it and writes nothing (so the SQL did not quietly run in process).
#[test]
fn silver_and_windows_on_the_cluster_equal_the_oracle() {
    let Some(t) = TestPipeline::user_activity(2_000, 5_000, 3_000) else {
        return;
    };
    let Some(stream) = crate::window::generate(&t, 20_000, 11) else {
        return;
    };
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));

    let nowhere = format!("ballista://127.0.0.1:{}", free_port());
    let out = run(t
        .lakectl()
        .env("LAKECTL_ENGINE_URL", &nowhere)
        .args(["run", "silver"]));
    assert_eq!(out.code, 69, "{}", out.stderr);
    assert!(out.stderr.contains(&nowhere), "{}", out.stderr);
    let silver = block_on(async { t.lake().load_table(Layer::Silver, "user_activity").await });
    assert!(silver.unwrap().is_none(), "silver was written");

    let cluster = Cluster::start();
    for stage in ["silver", "window"] {
        ok(run(t
            .lakectl()
            .env("LAKECTL_ENGINE_URL", &cluster.url)
            .args(["run", stage])));
    }
    crate::window::assert_windows_match_the_oracle(&t, &stream);
}

/// The gold query the cluster bench times (`scripts/bench.sh`, section `cluster`).
const SHUFFLE_JOIN: &str = include_str!("../../scripts/bench/pages_by_device.toml");

/// The latest version of a gold table.
fn gold_version(t: &TestPipeline, table: &str) -> Option<u64> {
    block_on(async { t.lake().load_table(Layer::Gold, table).await.unwrap() })
        .and_then(|g| g.version())
}

/// A gold query over 1,000,000 generated events whose JOIN of two million-row sides needs a
/// shuffle gives on the cluster what it gives in process. Then one executor is killed with
/// `kill -9` while the query runs: the run either still returns the same rows, or fails
/// with exit 69 naming the cluster — and the gold table is as it was.
#[test]
fn a_shuffle_join_over_a_million_rows_and_an_executor_killed_mid_query() {
    let Some(t) = TestPipeline::new("") else {
        return;
    };
    t.append(&format!(
        "[silver.user_activity]\nsource = \"{}\"\nkey = [\"event_id\"]\n\
         schema = {{ event_id = \"string\" }}\n{SHUFFLE_JOIN}",
        t.topic
    ));
    // A million generated events, written as the silver table by another engine.
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    ok(run(t
        .lakectl()
        .args(["generate", "user-activity", "--count", "1000000", "--out"])
        .arg(&events)));
    let script = r#"
import pyarrow.json
table = pyarrow.json.read_json(sys.argv[2])
deltalake.write_deltalake(sys.argv[1] + "silver/user_activity", table, storage_options=opts)
print(table.num_rows)
"#;
    let Some(written) = python_delta(script, &[&t.lake_uri, events.to_str().unwrap()]) else {
        return;
    };
    assert_eq!(written.trim(), "1000000");

    ok(run(t.lakectl().args(["run", "gold"])));
    let local = gold_rows(&t, "pages_by_device");
    assert!(local.len() > 100, "{}", local.len());

    let mut cluster = Cluster::start();
    let on_cluster = |cmd: &mut Command| {
        cmd.env("LAKECTL_ENGINE_URL", &cluster.url)
            .env("LAKECTL_ENGINE_QUERY_TIMEOUT", "40s");
    };
    let mut gold = t.lakectl();
    on_cluster(gold.args(["run", "gold", "--full-refresh"]));
    ok(run(&mut gold));
    assert_eq!(gold_rows(&t, "pages_by_device"), local, "on the cluster");
    let before = gold_version(&t, "pages_by_device");

    let mut gold = t.lakectl();
    on_cluster(gold.args(["run", "gold", "--full-refresh"]));
    let mut running = gold
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        running.try_wait().unwrap().is_none(),
        "the query ended before the kill"
    );
    let (victim, victim_port) = &mut cluster.executors[0];
    victim.kill().unwrap();
    let killed = Instant::now();
    let out = running.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "gold after executor :{victim_port} was killed mid-query: exit {:?}, {:.1} s later",
        out.status.code(),
        killed.elapsed().as_secs_f64()
    );
    match out.status.code() {
        Some(0) => assert_eq!(gold_version(&t, "pages_by_device"), before.map(|v| v + 1)),
        Some(69) => {
            assert!(
                stderr.contains(&format!("ballista cluster at {}", cluster.url)),
                "{stderr}"
            );
            assert_eq!(
                gold_version(&t, "pages_by_device"),
                before,
                "nothing written"
            );
        }
        other => panic!("exit {other:?}:\n{stderr}"),
    }
    assert_eq!(gold_rows(&t, "pages_by_device"), local);
}
