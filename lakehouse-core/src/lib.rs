//! Everything lakectl jobs share: the pipeline config, the object store and Delta helpers,
//! Kafka client plumbing, the runner with its run records, errors and telemetry.

pub mod avro;
pub mod config;
pub mod delta_types;
pub mod error;
pub mod kafka;
pub mod lake_uri;
pub mod lease;
pub mod lookup;
pub mod metrics;
pub mod quality;
pub mod redact;
pub mod registry;
pub mod run_log;
pub mod runner;
pub mod schema;
pub mod sql;
pub mod storage;
pub mod table_files;
pub mod telemetry;
pub mod testing;

pub use config::Pipeline;
pub use error::{ConfigError, Error, Fault, Result};
pub use run_log::{Outcome, RunRecord};
pub use runner::{Job, Mode, Runner, UnitReport};
pub use storage::{Lake, Layer};
