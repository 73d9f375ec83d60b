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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
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

/// Every books gold table, rebuilt on the cluster, equals the in-process build; so does a
/// `lakectl query` with a join.
#[test]
fn books_gold_on_the_cluster_equals_in_process() {
    let Some(t) = TestPipeline::books() else {
        return;
    };
    ok(run(t.lakectl().arg("produce")));
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    ok(run(t.lakectl().args(["run", "silver"])));
    ok(run(t.lakectl().args(["run", "gold"])));
    let local: Vec<_> = BOOKS_GOLD.iter().map(|g| gold_rows(&t, g)).collect();
    let query = "SELECT g.genre, count(*) AS books, max(g.sales_millions) AS sales \
                 FROM silver.books s JOIN gold.sales_by_genre g \
                 ON coalesce(s.genre, 'Unknown') = g.genre GROUP BY g.genre ORDER BY 1";
    let local_query = ok(run(t.lakectl().args(["query", query]))).stdout;

    let cluster = Cluster::start();
    let on_cluster = |cmd: &mut Command| {
        cmd.env("LAKECTL_ENGINE_URL", &cluster.url);
    };
    let mut gold = t.lakectl();
    on_cluster(gold.args(["run", "gold", "--full-refresh"]));
    ok(run(&mut gold));
    for (table, rows) in BOOKS_GOLD.iter().zip(&local) {
        assert!(!rows.is_empty(), "{table}");
        assert_eq!(&gold_rows(&t, table), rows, "gold.{table} on the cluster");
    }
    let mut q = t.lakectl();
    on_cluster(q.args(["query", query]));
    assert_eq!(ok(run(&mut q)).stdout, local_query);
}

const SHUFFLE_JOIN: &str = r#"
[gold.pages_by_device]
sql = """
SELECT a.device, b.page, count(*) AS events, count(DISTINCT a.user_id) AS users
FROM silver.user_activity a
JOIN (SELECT event_id, page FROM silver.user_activity) b ON a.event_id = b.event_id
GROUP BY a.device, b.page
"""
"#;

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
