//! SQL that users and pipeline files hand lakectl (`lakectl query`, gold SQL, cleaning SQL,
//! `sql` expectations) only reads. DataFusion would otherwise run `INSERT INTO silver.t …`
//! (appending to a Delta table behind the pipeline's back), `COPY … TO '/any/file'`,
//! `CREATE EXTERNAL TABLE` or `SET`; each is refused while planning, before anything runs.
//!
//! Every context that runs such SQL comes from [`context`], so the same functions are there
//! everywhere: DataFusion's, plus JSON functions over strings (`json_get_str(payload,
//! 'order_id')`, `json_as_text`, `json_get_int`, `json_length`, `json_contains`, …).

use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};

/// A DataFusion context for SQL from users and pipeline files, with lakectl's functions.
pub fn context() -> SessionContext {
    let mut ctx = SessionContext::new();
    register_functions(&mut ctx).expect("registering functions in a new context cannot clash");
    ctx
}

/// The functions lakectl's SQL has beyond DataFusion's, wherever it is planned or run (in
/// process, or on every node of a cluster).
pub fn register_functions(
    registry: &mut dyn datafusion::execution::FunctionRegistry,
) -> datafusion::error::Result<()> {
    datafusion_functions_json::register_all(registry)
}

/// Plans `sql` on `ctx` if it only reads (SELECT, WITH, VALUES, EXPLAIN, SHOW/DESCRIBE).
/// A statement that writes is an [`Error::Input`] saying so; SQL that does not plan is an
/// [`Error::DataFusion`], for the caller to put in context.
pub async fn read_only(ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
    let plan = ctx.state().create_logical_plan(sql).await?;
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| {
            Error::Input(format!(
                "lakectl's SQL is read-only and this statement writes or changes the session \
                 ({}); use SELECT, WITH, VALUES or EXPLAIN",
                e.strip_backtrace()
                    .trim_start_matches("Error during planning: ")
            ))
        })?;
    Ok(ctx.execute_logical_plan(plan).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_run_and_writes_are_refused_before_running() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t AS VALUES (1), (2)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let n = read_only(&ctx, "WITH x AS (SELECT * FROM t) SELECT count(*) FROM x")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(n[0].num_rows(), 1);
        let target = dir.path().join("x.csv");
        for sql in [
            "INSERT INTO t VALUES (3)".to_string(),
            format!("COPY (SELECT 1) TO '{}'", target.display()),
            format!(
                "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '{}'",
                dir.path().display()
            ),
            "DROP TABLE t".to_string(),
            "SET datafusion.execution.batch_size = 1".to_string(),
            "EXPLAIN ANALYZE INSERT INTO t VALUES (4)".to_string(),
        ] {
            let err = read_only(&ctx, &sql)
                .await
                .err()
                .unwrap_or_else(|| panic!("{sql} ran"));
            assert!(err.to_string().contains("read-only"), "{sql}: {err}");
        }
        assert!(!target.exists(), "COPY wrote a file");
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
        let rows = ctx
            .sql("SELECT * FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(
            rows.iter().map(|b| b.num_rows()).sum::<usize>(),
            2,
            "t changed"
        );
    }
}
