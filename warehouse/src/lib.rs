//! The PostgreSQL side of lakectl: connecting, the Arrow → Postgres type mapping and DDL
//! ([`types`]), binary COPY ([`copy`]), upserts, and the `lakectl.load_state` table that makes
//! loads exactly-once (the source version is recorded in the load's own transaction).

use std::time::Duration;

use arrow::array::RecordBatch;
use lakehouse_core::Fault;
use sqlx::postgres::{PgConnectOptions, PgCopyIn, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

pub mod copy;
pub mod types;

pub use types::{quote_ident, Column, TableName, LOADED_AT};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no Postgres URL: set the environment variable {0} (postgres.url_env in the pipeline file)"
    )]
    NoUrl(String),
    #[error("Postgres URL in {var} is not valid: {source}")]
    BadUrl {
        var: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("postgres at {target} is unavailable: {source}")]
    Unavailable {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("postgres: {0}")]
    Query(#[from] sqlx::Error),
    /// The source and the target do not fit: a type lakectl cannot load, incompatible drift.
    #[error("{0}")]
    Schema(String),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

impl Error {
    pub fn fault(&self) -> Fault {
        match self {
            Error::NoUrl(_) | Error::BadUrl { .. } | Error::Schema(_) => Fault::User,
            Error::Unavailable { .. } => Fault::External,
            Error::Arrow(_) => Fault::Internal,
            Error::Query(e) => match e {
                sqlx::Error::Database(db) => sqlstate_fault(db.code().as_deref()),
                sqlx::Error::ColumnNotFound(_) => Fault::User,
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed => Fault::External,
                _ => Fault::Internal,
            },
        }
    }
}

impl From<Error> for lakehouse_core::Error {
    fn from(e: Error) -> Self {
        match e.fault() {
            Fault::User => lakehouse_core::Error::Input(e.to_string()),
            Fault::External => lakehouse_core::Error::unavailable("postgres", e),
            Fault::Internal => lakehouse_core::Error::Internal(e.to_string()),
        }
    }
}

/// A server error by SQLSTATE: the server going away, running short or a transaction losing
/// a race is external (retrying helps); anything else is about what we asked.
fn sqlstate_fault(code: Option<&str>) -> Fault {
    match code {
        Some(c) if c.starts_with("08") || c.starts_with("53") || c.starts_with("57") => {
            Fault::External
        }
        Some("40001" | "40P01") => Fault::External,
        _ => Fault::User,
    }
}

/// Host, port and database of a URL, without the password, for messages.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    )
}

/// Connects a small pool. `url_var` names where the URL came from, for error messages.
pub async fn connect(url: Option<&str>, url_var: &str) -> Result<PgPool> {
    let url = url.ok_or_else(|| Error::NoUrl(url_var.to_string()))?;
    let options: PgConnectOptions = url.parse().map_err(|source| Error::BadUrl {
        var: url_var.to_string(),
        source,
    })?;
    let options = options.log_statements(tracing::log::LevelFilter::Debug);
    let target = describe(&options);
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|source| Error::Unavailable { target, source })
}

/// Connects and runs `SELECT version()`; returns the server version string.
pub async fn probe(url: Option<&str>, url_var: &str) -> Result<String> {
    let pool = connect(url, url_var).await?;
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(version)
}

/// Runs one statement built by lakectl (every identifier in it quoted); returns the rows it
/// affected.
pub async fn execute(conn: &mut PgConnection, sql: &str) -> Result<u64> {
    Ok(sqlx::query(sql).execute(conn).await?.rows_affected())
}

/// Creates `lakectl.load_state` when missing: one row per target, the source version it holds.
pub async fn ensure_load_state(conn: &mut PgConnection) -> Result<()> {
    let mut tx = conn.begin().await?;
    change_catalog(
        &mut tx,
        [
            "CREATE SCHEMA IF NOT EXISTS lakectl",
            "CREATE TABLE IF NOT EXISTS lakectl.load_state (\
           target text PRIMARY KEY, \
           source text NOT NULL, \
           source_version bigint NOT NULL, \
           rows_loaded bigint NOT NULL, \
           loaded_at timestamp with time zone NOT NULL DEFAULT now())",
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Runs catalog statements (`CREATE SCHEMA`, `CREATE TABLE`, `ALTER TABLE`) inside the caller's
/// transaction, one lakectl process at a time until it ends: `IF NOT EXISTS` does not hold
/// against a concurrent create of the same name (the loser fails on a unique index of
/// `pg_namespace` or `pg_type`), which two loads into one new schema do at their first run.
pub async fn change_catalog<S: AsRef<str>>(
    conn: &mut PgConnection,
    statements: impl IntoIterator<Item = S>,
) -> Result<()> {
    let mut locked = false;
    for statement in statements {
        if !locked {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('lakectl.catalog'))")
                .execute(&mut *conn)
                .await?;
            locked = true;
        }
        execute(conn, statement.as_ref()).await?;
    }
    Ok(())
}

/// Serialises loads into one target until the transaction ends.
pub async fn lock_target(conn: &mut PgConnection, target: &TableName) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("lakectl.load:{}", target.plain()))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn recorded_version(conn: &mut PgConnection, target: &TableName) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT source_version FROM lakectl.load_state WHERE target = $1")
            .bind(target.plain())
            .fetch_optional(&mut *conn)
            .await?,
    )
}

pub async fn record_version(
    conn: &mut PgConnection,
    target: &TableName,
    source: &str,
    version: i64,
    rows: u64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO lakectl.load_state (target, source, source_version, rows_loaded, loaded_at) \
         VALUES ($1, $2, $3, $4, now()) ON CONFLICT (target) DO UPDATE SET \
         source = EXCLUDED.source, source_version = EXCLUDED.source_version, \
         rows_loaded = EXCLUDED.rows_loaded, loaded_at = EXCLUDED.loaded_at",
    )
    .bind(target.plain())
    .bind(source)
    .bind(version)
    .bind(rows as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The table's columns as Postgres spells their types, without [`LOADED_AT`]; `None` when
/// the table does not exist.
pub async fn existing_columns(
    conn: &mut PgConnection,
    table: &TableName,
) -> Result<Option<Vec<Column>>> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
    )
    .bind(&table.schema)
    .bind(&table.table)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .filter(|(name, _, _)| name != LOADED_AT)
            .map(|(name, pg_type, nullable)| Column {
                name,
                pg_type,
                nullable,
            })
            .collect(),
    ))
}

pub async fn is_empty(conn: &mut PgConnection, table: &TableName) -> Result<bool> {
    let any: bool = sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM {table})"))
        .fetch_one(&mut *conn)
        .await?;
    Ok(!any)
}

/// Upserts the rows of `stage` into `target` by `key`: one row per key, and a row that did not
/// change is not rewritten (its `_loaded_at` stays).
pub fn upsert_sql(target: &TableName, stage: &str, columns: &[String], key: &[String]) -> String {
    let q = |c: &String| quote_ident(c);
    let cols: Vec<String> = columns.iter().map(q).collect();
    let keys: Vec<String> = key.iter().map(q).collect();
    let rest: Vec<&String> = columns.iter().filter(|c| !key.contains(c)).collect();
    let loaded = quote_ident(LOADED_AT);
    let mut sets: Vec<String> = rest
        .iter()
        .map(|c| format!("{0} = EXCLUDED.{0}", q(c)))
        .collect();
    sets.push(format!("{loaded} = EXCLUDED.{loaded}"));
    let changed = if rest.is_empty() {
        String::new()
    } else {
        let target_row: Vec<String> = rest.iter().map(|c| format!("{target}.{}", q(c))).collect();
        let new_row: Vec<String> = rest.iter().map(|c| format!("EXCLUDED.{}", q(c))).collect();
        format!(
            " WHERE ({}) IS DISTINCT FROM ({})",
            target_row.join(", "),
            new_row.join(", ")
        )
    };
    let action = if rest.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}{changed}", sets.join(", "))
    };
    format!(
        "INSERT INTO {target} ({cols}, {loaded}) SELECT DISTINCT ON ({keys}) {cols}, now() \
         FROM {stage} ORDER BY {keys} ON CONFLICT ({keys}) {action}",
        cols = cols.join(", "),
        keys = keys.join(", "),
    )
}

/// A binary COPY in progress: batches are encoded and sent in chunks of about 4 MiB. Rows
/// Postgres would refuse are held back ([`copy::encode`]), so one of them cannot fail the
/// COPY of all the others.
pub struct Copier<'c> {
    copy: PgCopyIn<&'c mut PgConnection>,
    buffer: Vec<u8>,
    not_null: Vec<String>,
}

const COPY_CHUNK: usize = 4 << 20;

impl<'c> Copier<'c> {
    /// Starts `COPY <table> (<columns>) FROM STDIN` in binary; `table` is already quoted.
    /// `not_null` names the target's columns that take no NULL.
    pub async fn start(
        conn: &'c mut PgConnection,
        table: &str,
        columns: &[String],
        not_null: &[String],
    ) -> Result<Copier<'c>> {
        let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
        let copy = conn
            .copy_in_raw(&format!(
                "COPY {table} ({}) FROM STDIN (FORMAT binary)",
                cols.join(", ")
            ))
            .await?;
        let mut buffer = Vec::with_capacity(COPY_CHUNK + (1 << 20));
        copy::header(&mut buffer);
        Ok(Copier {
            copy,
            buffer,
            not_null: not_null.to_vec(),
        })
    }

    /// Sends the rows of `batch` Postgres takes; returns those it would refuse, unsent.
    pub async fn send(&mut self, batch: &RecordBatch) -> Result<Vec<copy::Refused>> {
        let refused = copy::encode(batch, &self.not_null, &mut self.buffer)?;
        if self.buffer.len() >= COPY_CHUNK {
            self.flush().await?;
        }
        Ok(refused)
    }

    async fn flush(&mut self) -> Result<()> {
        self.copy.send(self.buffer.as_slice()).await?;
        self.buffer.clear();
        lakehouse_core::runner::crash_point("load:during_copy");
        Ok(())
    }

    /// Ends the COPY; returns the rows Postgres took.
    pub async fn finish(mut self) -> Result<u64> {
        copy::trailer(&mut self.buffer);
        self.flush().await?;
        Ok(self.copy.finish().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_going_away_is_external_a_bad_statement_is_not() {
        for code in ["08006", "57P01", "57P03", "53300", "40001", "40P01"] {
            assert_eq!(sqlstate_fault(Some(code)), Fault::External, "{code}");
        }
        for code in ["42P01", "23505", "22P02"] {
            assert_eq!(sqlstate_fault(Some(code)), Fault::User, "{code}");
        }
        let e: lakehouse_core::Error = Error::Schema("x".into()).into();
        assert!(!e.is_retryable());
    }

    #[test]
    fn upserts_skip_unchanged_rows_and_quote_everything() {
        let target = TableName::parse("silver.books", "public");
        let sql = upsert_sql(
            &target,
            "stage",
            &["k".into(), "v\"x".into()],
            &["k".into()],
        );
        assert_eq!(
            sql,
            "INSERT INTO \"silver\".\"books\" (\"k\", \"v\"\"x\", \"_loaded_at\") SELECT DISTINCT ON (\"k\") \"k\", \"v\"\"x\", now() \
             FROM stage ORDER BY \"k\" ON CONFLICT (\"k\") DO UPDATE SET \"v\"\"x\" = EXCLUDED.\"v\"\"x\", \
             \"_loaded_at\" = EXCLUDED.\"_loaded_at\" WHERE (\"silver\".\"books\".\"v\"\"x\") IS DISTINCT FROM (EXCLUDED.\"v\"\"x\")"
        );
    }
}
