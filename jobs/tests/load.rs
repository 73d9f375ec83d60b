//! `lakectl run load` against the real PostgreSQL: the books figures, a no-op re-run, exactly
//! the changed row after an upstream update, crashes during COPY and before the commit.

use crate::util::*;

fn load(t: &TestPipeline, crash_at: Option<&str>) -> Run {
    let mut cmd = t.lakectl();
    cmd.args(["run", "load"]);
    if let Some(point) = crash_at {
        cmd.env("LAKECTL_CRASH_AT", point);
    }
    run(&mut cmd)
}

/// The books columns compared between Delta and Postgres, timestamps as epoch microseconds.
const PG_BOOKS: &str = "book_title, authors, original_language, first_published_year::text, \
    sales_millions::text, genre, _bronze_version::text, _partition::text, _offset::text, \
    (extract(epoch from _kafka_ts) * 1000000)::bigint::text, \
    (extract(epoch from _silver_ts) * 1000000)::bigint::text";
const DELTA_BOOKS: &str = "book_title, authors, original_language, \
    CAST(first_published_year AS VARCHAR), CAST(sales_millions AS VARCHAR), genre, \
    CAST(_bronze_version AS VARCHAR), CAST(_partition AS VARCHAR), CAST(_offset AS VARCHAR), \
    CAST(CAST(_kafka_ts AS BIGINT) AS VARCHAR), CAST(CAST(_silver_ts AS BIGINT) AS VARCHAR)";

fn postgres_books(t: &TestPipeline) -> Vec<Vec<Option<String>>> {
    let mut rows = pg_rows(&format!("SELECT {PG_BOOKS} FROM {}", t.pg_target));
    rows.sort();
    rows
}

fn delta_books(t: &TestPipeline) -> Vec<Vec<Option<String>>> {
    let sql = format!("SELECT {DELTA_BOOKS} FROM t");
    let mut rows = table_rows(&t.lake(), Layer::Silver, "books", &sql);
    rows.sort();
    rows
}

fn target_exists(t: &TestPipeline) -> bool {
    pg_rows(&format!("SELECT to_regclass('{}')::text", t.pg_target))[0][0].is_some()
}

/// Books through produce, bronze and silver, ready to load.
fn books_in_silver() -> Option<TestPipeline> {
    let t = TestPipeline::books()?;
    t.create_topic(2);
    ok(run(t.lakectl().arg("produce")));
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    ok(run(t.lakectl().args(["run", "silver"])));
    Some(t)
}

/// One changed book, produced as the CSV's producer would, then through bronze and silver.
fn update_animal_farm(t: &TestPipeline, sales: &str) {
    let value = format!(
        r#"{{"Book":"Animal Farm","Author(s)":"George Orwell","Original language":"English","First published":1945,"Approximate sales in millions":{sales},"Genre":"Satirical allegorical novella, Political satire, Dystopian Fiction, Roman à clef"}}"#
    );
    t.produce_raw(&[(Some(b"Animal Farm ".as_slice()), Some(value.as_bytes()))]);
    ok(run(t.lakectl().args(["run", "bronze", "--once"])));
    ok(run(t.lakectl().args(["run", "silver"])));
}

#[test]
fn books_load_once_then_nothing_then_exactly_the_changed_row() {
    let Some(t) = books_in_silver() else {
        return;
    };
    let out = ok(load(&t, None));
    assert!(
        out.stdout.contains("174 rows read, 174 rows written"),
        "{}",
        out.stdout
    );
    let figures = pg_rows(&format!(
        "SELECT count(*)::text, count(DISTINCT authors)::text, sum(sales_millions)::text, \
         count(*) FILTER (WHERE genre IS NULL)::text FROM {}",
        t.pg_target
    ));
    assert_eq!(
        figures[0],
        ["174", "157", "5236.90", "56"].map(|s| Some(s.to_string()))
    );
    assert_eq!(
        postgres_books(&t),
        delta_books(&t),
        "Postgres equals the Delta table"
    );

    let with_loaded_at = format!(
        "SELECT book_title, sales_millions::text, _loaded_at::text FROM {}",
        t.pg_target
    );
    let mut before = pg_rows(&with_loaded_at);
    before.sort();
    let again = ok(load(&t, None));
    assert!(
        again.stdout.contains("0 rows read, 0 rows written"),
        "{}",
        again.stdout
    );
    let mut unchanged = pg_rows(&with_loaded_at);
    unchanged.sort();
    assert_eq!(
        unchanged, before,
        "a re-run changes nothing, not even _loaded_at"
    );

    update_animal_farm(&t, "21");
    let out = ok(load(&t, None));
    assert!(
        out.stdout.contains("1 rows written"),
        "only the changed row is written:\n{}",
        out.stdout
    );
    let mut after = pg_rows(&with_loaded_at);
    after.sort();
    let changed: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    let (old, new) = changed[0];
    assert_eq!(old[0].as_deref(), Some("Animal Farm"));
    assert_eq!(new[1].as_deref(), Some("21.00"));
    assert_ne!(old[2], new[2], "_loaded_at moves with the change");
    assert_eq!(postgres_books(&t), delta_books(&t));
    let state = pg_rows(&format!(
        "SELECT source_version::text FROM lakectl.load_state WHERE target = '{}'",
        t.pg_target
    ));
    let silver_version = block_on(t.lake().load_table(Layer::Silver, "books"))
        .unwrap()
        .unwrap()
        .version()
        .unwrap();
    assert_eq!(state, [[Some(silver_version.to_string())]]);
}

#[test]
fn a_crash_during_copy_or_before_commit_leaves_nothing_half_loaded() {
    let Some(t) = books_in_silver() else {
        return;
    };
    for point in ["load:during_copy", "load:before_commit"] {
        let out = load(&t, Some(point));
        assert!(
            out.code != 0 && out.stderr.contains(point),
            "{}",
            out.stderr
        );
        assert!(
            !target_exists(&t),
            "the first load's CREATE TABLE rolled back too ({point})"
        );
    }
    ok(load(&t, None));
    assert_eq!(postgres_books(&t), delta_books(&t));

    // The upsert path: an update, a crash before the commit, the old row still there.
    update_animal_farm(&t, "33.5");
    let before = postgres_books(&t);
    for point in ["load:during_copy", "load:before_commit"] {
        let out = load(&t, Some(point));
        assert!(out.code != 0, "{}", out.stderr);
        assert_eq!(
            postgres_books(&t),
            before,
            "crash at {point} changed the table"
        );
    }
    ok(load(&t, None));
    assert_eq!(postgres_books(&t), delta_books(&t));
    assert_eq!(
        pg_rows(&format!(
            "SELECT sales_millions::text FROM {} WHERE book_title = 'Animal Farm'",
            t.pg_target
        )),
        [[Some("33.50".to_string())]]
    );
}

#[test]
fn postgres_down_is_retried_then_named() {
    let Some(t) = books_in_silver() else {
        return;
    };
    let dead = format!("postgres://postgres@127.0.0.1:{}/lakectl", free_port());
    let t = t
        .with_env("DATABASE_URL", dead)
        .with_env("LAKECTL_RUNNER_MAX_RETRIES", "2")
        .with_env("LAKECTL_RUNNER_INITIAL_BACKOFF_MS", "50");
    let out = load(&t, None);
    assert_eq!(out.code, 69, "{}", out.stderr);
    assert!(out.stderr.contains("postgres"), "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("retrying in").count(),
        2,
        "{}",
        out.stderr
    );
}
