//! The whole books pipeline through the CLI — produce, bronze, silver, gold, load — then
//! `dbt build`, with the numbers in Postgres checked against an independent reading of the CSV.

use std::collections::BTreeMap;
use std::process::Command;

use crate::util::*;

/// Books count and sales in hundredths, per group, straight from the CSV.
type Groups = BTreeMap<String, (u64, u64)>;

fn cents(sales: &str) -> u64 {
    let (whole, fraction) = sales.split_once('.').unwrap_or((sales, ""));
    whole.parse::<u64>().unwrap() * 100 + format!("{fraction:0<2}").parse::<u64>().unwrap()
}

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn sentence_case(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or(String::new(), |first| {
        first.to_uppercase().collect::<String>() + &chars.as_str().to_lowercase()
    })
}

/// Language, decade and genre groups of the CSV, by the rules the pipeline documents.
fn expected_groups() -> (Groups, Groups, Groups, u64) {
    let mut reader =
        csv::Reader::from_path(repo_root().join("data/best-selling-books.csv")).unwrap();
    let (mut language, mut decade, mut genre) = (Groups::new(), Groups::new(), Groups::new());
    let mut total = 0;
    for record in reader.records() {
        let r = record.unwrap();
        let sales = cents(&r[4]);
        total += sales;
        let genre_name = match r[5].trim() {
            "" => "Unknown".to_string(),
            g => sentence_case(g),
        };
        let year: u64 = r[3].parse().unwrap();
        for (groups, key) in [
            (&mut language, r[2].trim().to_string()),
            (&mut decade, (year / 10 * 10).to_string()),
            (&mut genre, genre_name),
        ] {
            let entry = groups.entry(key).or_default();
            entry.0 += 1;
            entry.1 += sales;
        }
    }
    (language, decade, genre, total)
}

fn postgres_groups(sql: &str) -> Groups {
    pg_rows(sql)
        .into_iter()
        .map(|r| {
            let text = |i: usize| r[i].clone().unwrap();
            (text(0), (text(1).parse().unwrap(), cents(&text(2))))
        })
        .collect()
}

#[test]
fn books_from_csv_to_dbt_marts() {
    let Some(t) = TestPipeline::books() else {
        return;
    };
    t.create_topic(3);
    // Gold before any silver (as when every stage starts at once, continuous): it waits for
    // its inputs instead of failing, and writes nothing.
    let early = ok(run(t.lakectl().args(["run", "gold"])));
    assert!(
        early.stderr.contains("an input table does not exist yet"),
        "{}",
        early.stderr
    );
    let gold = block_on(async { t.lake().load_table(Layer::Gold, "sales_by_genre").await });
    assert!(
        gold.unwrap().is_none(),
        "gold was written without its inputs"
    );
    for args in [
        &["produce"][..],
        &["run", "bronze", "--once"],
        &["run", "silver"],
        &["run", "gold"],
        &["run", "load"],
    ] {
        ok(run(t.lakectl().args(args)));
    }

    let (language, decade, genre, total) = expected_groups();
    assert_eq!(money(total), "5236.90");
    let figures = pg_rows(&format!(
        "SELECT count(*)::text, count(DISTINCT authors)::text, sum(sales_millions)::text FROM {}",
        t.pg_target
    ));
    assert_eq!(
        figures[0],
        ["174", "157", "5236.90"].map(|s| Some(s.to_string()))
    );
    assert_eq!(
        postgres_groups("SELECT original_language, books::text, sales_millions::text FROM gold.sales_by_language"),
        language
    );
    assert_eq!(
        postgres_groups(
            "SELECT decade::text, books::text, sales_millions::text FROM gold.sales_by_decade"
        ),
        decade
    );
    assert_eq!(
        postgres_groups("SELECT genre, books::text, sales_millions::text FROM gold.sales_by_genre"),
        genre
    );

    assert_eq!(
        pg_rows(
            "SELECT rows_checked::text, rows_failed::text FROM gold.quality_by_rule \
             WHERE job = 'silver:books' AND rule = 'parse'"
        ),
        [[Some("174".to_string()), Some("0".to_string())]],
        "the quality report reaches Postgres"
    );

    // dbt: staging and marts over the loaded table, with every test.
    let table = t.pg_target.split_once('.').unwrap().1;
    let dbt_schema = format!("dbt_{table}");
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/dbt.sh"))
        .args([
            "build",
            "--vars",
            &format!("{{books_schema: silver, books_table: {table}}}"),
        ])
        .env("DBT_SCHEMA", &dbt_schema)
        .env("DATABASE_URL", service_env("DATABASE_URL").unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dbt build failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ERROR=0") && stdout.contains("WARN=0"),
        "{stdout}"
    );
    let marts = pg_rows(&format!(
        "SELECT (SELECT count(*) FROM {s}.fact_books)::text, (SELECT count(*) FROM {s}.dim_author)::text, \
         (SELECT count(*) FROM {s}.dim_language)::text, (SELECT sum(sales_millions) FROM {s}.fact_books)::text, \
         (SELECT count(*) FROM {s}.dim_author WHERE is_joint_credit)::text",
        s = format!("{dbt_schema}_marts")
    ));
    assert_eq!(
        marts[0],
        ["174", "157", &language.len().to_string(), "5236.90", "2"].map(|s| Some(s.to_string()))
    );

    check_superset(&format!("{dbt_schema}_marts"), &language, &genre);

    // Gold again with no input moved: nothing is rebuilt. (The loads above added their rows
    // to the quality table, an input of quality_by_rule: one run takes them in first.)
    ok(run(t.lakectl().args(["run", "gold"])));
    let again = ok(run(t.lakectl().args(["run", "gold"])));
    assert_eq!(
        again
            .stdout
            .matches("0 rows written, table version unchanged")
            .count(),
        4,
        "{}",
        again.stdout
    );

    // SQL only reads: `query` and gold SQL that would write are refused before they run.
    let scratch = tempfile::tempdir().unwrap();
    let copy_to = scratch.path().join("x.csv");
    for sql in [
        "INSERT INTO silver.books SELECT * FROM silver.books".to_string(),
        format!("COPY (SELECT 1) TO '{}'", copy_to.display()),
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/tmp/'".to_string(),
        "DROP TABLE silver.books".to_string(),
    ] {
        let out = run(t.lakectl().args(["query", &sql]));
        assert_eq!(out.code, 2, "{sql}: {}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains("read-only"), "{sql}: {}", out.stderr);
    }
    assert!(!copy_to.exists(), "COPY wrote a local file");
    let count = ok(run(t
        .lakectl()
        .args(["query", "SELECT count(*) AS n FROM silver.books"])));
    assert!(count.stdout.contains("| 174 |"), "{}", count.stdout);
    t.append("[gold.sneaky]\nsql = \"INSERT INTO silver.books SELECT * FROM silver.books\"");
    let out = run(t.lakectl().args(["run", "gold", "sneaky"]));
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("gold.sneaky") && out.stderr.contains("read-only"),
        "{}",
        out.stderr
    );
    let count = ok(run(t
        .lakectl()
        .args(["query", "SELECT count(*) AS n FROM silver.books"])));
    assert!(count.stdout.contains("| 174 |"), "{}", count.stdout);
    assert_every_table_reads_alike(&t);
}

/// `scripts/superset.sh` with the test's Postgres, a state folder of its own, and `env`
/// (where the dashboards' tables are).
fn superset(
    state: &std::path::Path,
    env: &[(&str, String)],
    args: &[&str],
) -> std::process::Output {
    Command::new("bash")
        .arg(repo_root().join("scripts/superset.sh"))
        .args(args)
        .env("SUPERSET_STATE", state)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("DATABASE_URL", service_env("DATABASE_URL").unwrap())
        .output()
        .unwrap()
}

/// Stops the test's Superset however the test ends.
struct SupersetGuard(std::path::PathBuf);

impl Drop for SupersetGuard {
    fn drop(&mut self) {
        superset(&self.0, &[], &["down"]);
    }
}

/// The shipped e-commerce and orders pipelines, a few thousand events each, through load:
/// the tables of their dashboards, in Postgres schemas of their own (returned).
fn shop_pipelines() -> Option<(TestPipeline, TestPipeline)> {
    let shop = TestPipeline::shipped("ecommerce", "shop", &[])?;
    let orders = TestPipeline::shipped("orders", "orders", &[])?;
    for t in [&shop, &orders] {
        ok(run(t.lakectl().args([
            "generate", "--count", "3000", "--topic", &t.topic,
        ])));
        for stage in ["bronze", "silver", "gold", "load"] {
            ok(run(t.lakectl().args(["run", stage, "--once"])));
        }
    }
    Some((shop, orders))
}

/// Bootstraps Superset over the loaded tables and the marts, checks every chart's data of the
/// books, e-commerce and orders dashboards as its API serves it against Postgres and the CSV,
/// and takes a screenshot of the books dashboard in headless Chromium.
fn check_superset(marts: &str, language: &Groups, genre: &Groups) {
    let Some((shop, orders)) = shop_pipelines() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let guard = SupersetGuard(dir.path().to_path_buf());
    let env = [
        ("SUPERSET_MARTS_SCHEMA", marts.to_string()),
        ("SUPERSET_SHOP_SCHEMA", shop.pg_target.clone()),
        ("SUPERSET_ORDERS_SCHEMA", orders.pg_target.clone()),
        ("SUPERSET_DASHBOARDS", "books ecommerce orders".to_string()),
    ];
    let up = superset(&guard.0, &env, &["up"]);
    assert!(
        up.status.success(),
        "superset up:\n{}",
        String::from_utf8_lossy(&up.stderr)
    );

    let checked = superset(&guard.0, &env, &["check"]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let charts: serde_json::Value = serde_json::from_slice(&checked.stdout).unwrap();
    let rows = |chart: &str| charts[chart].as_array().unwrap().clone();
    let total = |chart: &str, column: &str| -> f64 {
        rows(chart)
            .iter()
            .map(|r| r[column].as_f64().unwrap())
            .sum()
    };
    let sales = "sales (millions)";
    let mut largest: Vec<u64> = genre.values().map(|(_, cents)| *cents).collect();
    largest.sort_unstable_by(|a, b| b.cmp(a));
    let top_genres: Vec<u64> = rows("Top genres by sales")
        .iter()
        .map(|r| (r[sales].as_f64().unwrap() * 100.0).round() as u64)
        .collect();
    assert_eq!(
        top_genres,
        largest[..12],
        "the 12 largest genres, largest first"
    );
    assert_eq!(rows("Sales by original language").len(), language.len());
    let english = rows("Sales by original language")
        .into_iter()
        .find(|r| r["original_language"] == "English")
        .unwrap();
    assert_eq!(
        english[sales].as_f64().unwrap(),
        language["English"].1 as f64 / 100.0
    );
    let top = rows("Top books by sales");
    assert_eq!(top.len(), 10);
    assert_eq!(top[0][sales].as_f64(), Some(200.0), "{top:?}");
    let quarantined = rows("Rows quarantined per rule");
    assert!(
        quarantined.iter().any(|r| r["rule"] == "parse"),
        "{quarantined:?}"
    );
    assert_eq!(total("Rows quarantined per rule", "rows failed"), 0.0);

    // E-commerce and orders: each chart against the loaded tables.
    let scalar = |sql: String| -> f64 { pg_rows(&sql)[0][0].as_deref().unwrap().parse().unwrap() };
    let s = &shop.pg_target;
    let events = scalar(format!("SELECT count(*)::text FROM {s}.events"));
    assert!(events > 2000.0, "{events}");
    for chart in ["Events by type", "Events by device", "Events per hour"] {
        assert_eq!(total(chart, "events"), events, "{chart}");
    }
    assert_eq!(rows("Events by type").len(), 4);
    assert_eq!(
        rows("Events per hour").len() as f64,
        scalar(format!(
            "SELECT count(DISTINCT (year, month, day, hour))::text FROM {s}.events_hourly"
        ))
    );
    let revenue = rows("Revenue by product (top 15)");
    assert_eq!(revenue.len(), 15);
    let best = scalar(format!(
        "SELECT sum(revenue)::text FROM {s}.revenue_hourly GROUP BY product_id ORDER BY sum(revenue) DESC LIMIT 1"
    ));
    assert!(
        (revenue[0]["revenue"].as_f64().unwrap() - best).abs() < 0.005,
        "{revenue:?}"
    );
    let scores = rows("Quality score per run (%)");
    assert_eq!(scores.len(), 1, "{scores:?}");
    assert!(
        (scores[0]["score %"].as_f64().unwrap() - 95.0).abs() < 0.05,
        "{scores:?}"
    );
    let o = &orders.pg_target;
    let order_count = scalar(format!("SELECT count(*)::text FROM {o}.order_status"));
    assert_eq!(total("Orders by status", "orders"), order_count);
    assert_eq!(
        total("Minutes from created to delivered", "orders"),
        order_count
    );
    assert_eq!(
        total("Quarantined records by rule", "records"),
        scalar(format!(
            "SELECT sum(records)::text FROM {o}.quarantined_by_rule"
        ))
    );

    let png = guard.0.join("dashboard.png");
    let shot = superset(&guard.0, &env, &["screenshot", png.to_str().unwrap()]);
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "{} bytes",
        bytes.len()
    );
}
