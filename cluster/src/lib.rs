//! lakectl's SQL on a Ballista cluster. `[engine] url = "ballista://host:50050"` makes gold,
//! `lakectl query` and other read-only SQL plan on the scheduler and run on its executors;
//! without it everything runs in process as before.
//!
//! - [`remote_context`]: the session a lakectl process plans in when a cluster is named.
//! - [`run_scheduler`], [`run_executor`]: `lakectl cluster scheduler|executor`, Ballista's
//!   scheduler and executor with what lakectl's plans need on every node: the codec for
//!   [`SnapshotTable`]s, the JSON functions, and object stores from the environment.
//! - [`SnapshotTable`]: how a Delta table travels (see its module).
//!
//! What stays in the lakectl process that drives a unit: reading the Delta log, the
//! exactly-once commit, silver's per-record parsing. The SQL runs remote: over data files,
//! and over a unit's rows, which travel inside the plan.

mod codec;
mod snapshot;
mod stores;

use std::net::SocketAddr;
use std::sync::Arc;

use ballista::prelude::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};

pub use codec::LakectlCodec;
pub use snapshot::{SnapshotFile, SnapshotTable};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine URL is not `ballista://host:port`: the user's to fix.
    #[error("engine url {url:?}: {message}")]
    Url { url: String, message: String },
    /// The scheduler or an executor failed or could not be reached.
    #[error("ballista: {0}")]
    Ballista(String),
    #[error("delta table: {0}")]
    Delta(String),
    #[error("sql: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("encoding a table for the cluster: {0}")]
    Encoding(#[from] serde_json::Error),
}

impl From<ballista_core::error::BallistaError> for Error {
    fn from(e: ballista_core::error::BallistaError) -> Error {
        Error::Ballista(e.to_string())
    }
}

/// The largest gRPC message between lakectl, the scheduler and executors. A silver or window
/// unit's rows travel inside its plan (Arrow IPC), so a plan is as large as a unit: Ballista's
/// 16 MiB default would refuse units of a few tens of thousands of wide rows.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// The scheduler address in `ballista://host:port`.
pub fn scheduler_address(url: &str) -> Result<(String, u16)> {
    url.strip_prefix("ballista://")
        .ok_or_else(|| "expected ballista://host:port".to_string())
        .and_then(|rest| host_port(rest.trim_end_matches('/')))
        .map_err(|message| Error::Url {
            url: url.to_string(),
            message,
        })
}

/// `host:port` (an executor's `--scheduler`).
pub fn host_port(text: &str) -> std::result::Result<(String, u16), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port".to_string())?;
    let port = port
        .parse()
        .map_err(|_| "the port is not a number".to_string())?;
    Ok((host.to_string(), port))
}

/// A session whose queries plan on the scheduler at `url` and run on its executors.
pub async fn remote_context(url: &str) -> Result<SessionContext> {
    let (host, port) = scheduler_address(url)?;
    let config = SessionConfig::new_with_ballista()
        .with_ballista_logical_extension_codec(Arc::new(LakectlCodec::default()))
        .with_ballista_grpc_client_max_message_size(MAX_MESSAGE_BYTES);
    let state = with_lakectl_functions(
        SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .build(),
    )?;
    Ok(SessionContext::remote_with_state(&format!("df://{host}:{port}"), state).await?)
}

fn with_lakectl_functions(mut state: SessionState) -> datafusion::error::Result<SessionState> {
    lakehouse_core::sql::register_functions(&mut state)?;
    Ok(state)
}

/// `lakectl cluster scheduler`: serves until the process is stopped.
pub async fn run_scheduler(bind: SocketAddr, executor_timeout_seconds: u64) -> Result<()> {
    let config = SchedulerConfig {
        bind_host: bind.ip().to_string(),
        bind_port: bind.port(),
        external_host: bind.ip().to_string(),
        executor_timeout_seconds,
        expire_dead_executor_interval_seconds: 1,
        grpc_server_max_decoding_message_size: MAX_MESSAGE_BYTES as u32,
        grpc_server_max_encoding_message_size: MAX_MESSAGE_BYTES as u32,
        // Launching a task on an executor sends its plan.
        grpc_client_max_message_size: MAX_MESSAGE_BYTES as u32,
        override_logical_codec: Some(Arc::new(LakectlCodec::default())),
        override_session_builder: Some(Arc::new(|config: SessionConfig| {
            with_lakectl_functions(
                SessionStateBuilder::new()
                    .with_config(config)
                    .with_default_features()
                    .build(),
            )
        })),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config).await?;
    tracing::info!(%bind, executor_timeout_seconds, "ballista scheduler listening");
    start_server(cluster, bind, Arc::new(config)).await?;
    Ok(())
}

/// Where an executor listens and which scheduler it serves.
pub struct ExecutorOptions {
    /// `host:port` of the scheduler.
    pub scheduler: (String, u16),
    /// Arrow Flight (shuffle reads); the gRPC port is the next one.
    pub bind: SocketAddr,
    /// The host other nodes reach this executor at (its container's name, say); default: the
    /// bind address.
    pub advertise: Option<String>,
    /// Shuffle files; a folder of its own per executor.
    pub work_dir: Option<String>,
    /// Tasks at once.
    pub slots: usize,
    pub heartbeat_seconds: u64,
    /// The folder of a `file://` lake this executor may read; `None`: `s3://` lakes only.
    pub file_root: Option<std::path::PathBuf>,
}

/// `lakectl cluster executor`: serves the scheduler until the process is stopped.
pub async fn run_executor(options: ExecutorOptions) -> Result<()> {
    let file_root = options.file_root.clone();
    let stores = Arc::new(stores::FromEnvironment::new(file_root.clone()));
    let functions = BallistaFunctionRegistry::from(&with_lakectl_functions(
        SessionStateBuilder::new().with_default_features().build(),
    )?);
    let config = ExecutorProcessConfig {
        bind_host: options.bind.ip().to_string(),
        external_host: Some(
            options
                .advertise
                .unwrap_or_else(|| options.bind.ip().to_string()),
        ),
        port: options.bind.port(),
        grpc_port: options.bind.port() + 1,
        scheduler_host: options.scheduler.0,
        scheduler_port: options.scheduler.1,
        work_dir: options.work_dir,
        vcores: options.slots,
        executor_heartbeat_interval_seconds: options.heartbeat_seconds,
        grpc_max_decoding_message_size: MAX_MESSAGE_BYTES as u32,
        grpc_max_encoding_message_size: MAX_MESSAGE_BYTES as u32,
        override_logical_codec: Some(Arc::new(LakectlCodec::default())),
        override_function_registry: Some(Arc::new(functions)),
        override_runtime_producer: Some(Arc::new(move |_config: &SessionConfig| {
            RuntimeEnvBuilder::new()
                .with_object_store_registry(stores.clone())
                .build_arc()
        })),
        ..Default::default()
    };
    tracing::info!(
        flight = %options.bind,
        grpc = options.bind.port() + 1,
        scheduler = %format!("{}:{}", config.scheduler_host, config.scheduler_port),
        slots = options.slots,
        file_root = ?file_root,
        "ballista executor starting"
    );
    start_executor_process(Arc::new(config)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_urls_name_a_scheduler() {
        assert_eq!(
            scheduler_address("ballista://127.0.0.1:50050").unwrap(),
            ("127.0.0.1".to_string(), 50050)
        );
        for bad in ["df://h:1", "ballista://h", "ballista://h:port"] {
            let err = scheduler_address(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
