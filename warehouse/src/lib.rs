//! The PostgreSQL side of lakectl: connecting, and (as the loader grows) type mapping,
//! binary COPY, upserts and the `lakectl.load_state` bookkeeping.

use std::time::Duration;

use lakehouse_core::Fault;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

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
}

impl Error {
    pub fn fault(&self) -> Fault {
        match self {
            Error::NoUrl(_) | Error::BadUrl { .. } => Fault::User,
            Error::Unavailable { .. } => Fault::External,
            Error::Query(e) => match e {
                sqlx::Error::Database(_) | sqlx::Error::ColumnNotFound(_) => Fault::User,
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => {
                    Fault::External
                }
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
