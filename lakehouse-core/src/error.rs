//! One error type for the core crate. Every error knows whose fault it is and whether
//! retrying can help, so the runner can decide on retries and the CLI on exit codes.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A pipeline file, environment variable or flag that cannot be used, and where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read pipeline file: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax errors, unknown keys, wrong types and missing keys, located in the file.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Parse {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("command-line flag {flag}: {message}")]
    Flag { flag: String, message: String },
    /// Well-formed but unusable values, found after all layers are merged.
    #[error("{}: `{key}`: {message}", file.display())]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
    #[error(
        "{}: `{key}` looks like a secret; secrets are read from the environment, never from the pipeline file",
        file.display()
    )]
    SecretInFile { file: PathBuf, key: String },
}

/// Whose fault an error is. Decides the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bad config, bad arguments or bad input: the user must change something.
    User,
    /// A service we depend on (broker, object store, Postgres) failed or is unreachable.
    External,
    /// A bug in lakectl.
    Internal,
}

impl Fault {
    /// Exit codes, documented in `lakectl --help`. 2 matches clap's usage errors;
    /// 69 and 70 are sysexits' EX_UNAVAILABLE and EX_SOFTWARE.
    pub fn exit_code(self) -> i32 {
        match self {
            Fault::User => 2,
            Fault::External => 69,
            Fault::Internal => 70,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// Input the user handed us that we cannot use (a missing CSV file, a bad argument).
    #[error("{0}")]
    Input(String),

    /// A service did not answer or refused; `service` names it for the user.
    #[error("{service} is unavailable: {message}")]
    Unavailable { service: String, message: String },

    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),

    #[error("delta table: {0}")]
    Delta(#[from] deltalake::DeltaTableError),

    /// SQL planning or execution; user SQL errors are the user's fault.
    #[error("sql: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),

    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("internal error (a bug in lakectl, please report it): {0}")]
    Internal(String),
}

impl Error {
    pub fn unavailable(service: impl Into<String>, message: impl ToString) -> Self {
        Error::Unavailable {
            service: service.into(),
            message: message.to_string(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            Error::Config(_) | Error::Input(_) => Fault::User,
            Error::Unavailable { .. } | Error::Kafka(_) | Error::Io { .. } => Fault::External,
            Error::ObjectStore(e) => object_store_fault(e),
            Error::Delta(e) => delta_fault(e),
            Error::DataFusion(e) => datafusion_fault(e),
            Error::Arrow(_) | Error::Internal(_) => Fault::Internal,
        }
    }

    /// The service an external error came from, as metrics and logs name it.
    pub fn service(&self) -> &str {
        match self {
            Error::Unavailable { service, .. } => service,
            Error::Kafka(_) => "kafka",
            Error::ObjectStore(_) | Error::Delta(_) => "object store",
            Error::Io { .. } => "local file system",
            Error::DataFusion(_) => "query engine",
            Error::Config(_) | Error::Input(_) | Error::Arrow(_) | Error::Internal(_) => "lakectl",
        }
    }

    /// Whether running the same unit of work again may succeed: an external failure may
    /// pass, except a Kafka error that says the request itself is wrong.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Kafka(e) => kafka_retryable(e),
            _ => self.fault() == Fault::External,
        }
    }
}

fn object_store_fault(e: &object_store::Error) -> Fault {
    use object_store::Error as E;
    match e {
        E::NotImplemented { .. } | E::UnknownConfigurationKey { .. } | E::InvalidPath { .. } => {
            Fault::User
        }
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => Fault::User,
        E::JoinError { .. } => Fault::Internal,
        // Generic covers network failures and HTTP 5xx, NotFound/Precondition are
        // races with other writers or a service that lost state: all outside our code.
        _ => Fault::External,
    }
}

fn delta_fault(e: &deltalake::DeltaTableError) -> Fault {
    use deltalake::DeltaTableError as D;
    match e {
        D::ObjectStore { source } => object_store_fault(source),
        // Commit conflicts are resolved by re-reading the table and trying again.
        D::Transaction { .. } | D::VersionAlreadyExists(_) | D::Io { .. } => Fault::External,
        D::NotATable(_) | D::InvalidTableLocation(_) | D::SchemaMismatch { .. } => Fault::User,
        D::Generic(_) | D::GenericError { .. } => Fault::External,
        D::KernelError(e) => kernel_fault(e),
        _ => io_cause_fault(e).unwrap_or(Fault::Internal),
    }
}

/// The kernel wraps errors in `Backtraced` whenever `RUST_BACKTRACE` is set: look inside.
fn kernel_fault(e: &delta_kernel::Error) -> Fault {
    use delta_kernel::Error as K;
    match e {
        K::Backtraced { source, .. } => kernel_fault(source),
        K::ObjectStore(source) => object_store_fault(source),
        K::IOError(_) | K::Reqwest(_) | K::JoinFailure(_) => Fault::External,
        _ => io_cause_fault(e).unwrap_or(Fault::Internal),
    }
}

/// The fault of an object-store or I/O failure anywhere among `e`'s causes. Delta wraps them
/// in Arrow, Parquet and generic errors depending on where the read failed, so a storage
/// outage must be recognised through those too, or it is taken for a bug and not retried.
fn io_cause_fault(e: &(dyn std::error::Error + 'static)) -> Option<Fault> {
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(store) = c.downcast_ref::<object_store::Error>() {
            return Some(object_store_fault(store));
        }
        if c.is::<std::io::Error>() {
            return Some(Fault::External);
        }
        cause = c.source();
    }
    None
}

fn datafusion_fault(e: &datafusion::error::DataFusionError) -> Fault {
    use datafusion::error::DataFusionError as D;
    match e {
        D::SQL(..) | D::Plan(_) | D::SchemaError(..) | D::NotImplemented(_) => Fault::User,
        D::ObjectStore(source) => object_store_fault(source),
        D::IoError(_) => Fault::External,
        D::Context(_, inner) | D::Diagnostic(_, inner) => datafusion_fault(inner),
        // A hash join hands its build side's error to every probe partition, shared.
        D::Shared(inner) => datafusion_fault(inner),
        // DataFusion's Parquet reader turns a failed footer fetch into text
        // (datafusion-datasource-parquet, reader.rs): only the text says it was storage.
        D::ParquetError(p)
            if matches!(p.as_ref(), parquet::errors::ParquetError::General(m)
                if m.starts_with("Failed to fetch metadata for file")) =>
        {
            Fault::External
        }
        // A Parquet read whose GET failed: the object store's error inside Parquet's.
        _ => io_cause_fault(e).unwrap_or(Fault::Internal),
    }
}

fn kafka_retryable(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::KafkaError as K;
    use rdkafka::types::RDKafkaErrorCode as C;
    match e {
        K::ClientConfig(..) | K::Subscription(_) | K::SetPartitionOffset(_) => false,
        _ => !matches!(
            e.rdkafka_error_code(),
            Some(C::UnknownTopicOrPartition | C::TopicAuthorizationFailed | C::InvalidConfig)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_get_inside_a_parquet_read_is_retried() {
        // What silver saw when S3 was cut while DataFusion read a data file (chaos harness).
        let get = object_store::Error::Generic {
            store: "S3",
            source: "error sending request".into(),
        };
        let e = Error::DataFusion(datafusion::error::DataFusionError::ParquetError(Box::new(
            parquet::errors::ParquetError::External(Box::new(get)),
        )));
        assert_eq!(e.fault(), Fault::External);
        assert!(e.is_retryable());
    }

    #[test]
    fn a_failed_footer_fetch_datafusion_turned_into_text_is_retried() {
        // Also seen by the chaos harness while S3 was cut.
        let fetch_failed = || {
            datafusion::error::DataFusionError::ParquetError(Box::new(
                parquet::errors::ParquetError::General(
                    "Failed to fetch metadata for file lake/silver/t/part-0.parquet: Object \
                     Store error: Generic S3 error: error sending request"
                        .into(),
                ),
            ))
        };
        let e = Error::DataFusion(fetch_failed());
        assert!(e.is_retryable());
        // As a hash join reports it (silver's existing-key check).
        let shared =
            datafusion::error::DataFusionError::Shared(std::sync::Arc::new(fetch_failed()));
        assert!(Error::DataFusion(shared).is_retryable());
        let other = Error::DataFusion(datafusion::error::DataFusionError::ParquetError(Box::new(
            parquet::errors::ParquetError::General("Invalid Parquet file. Corrupt footer".into()),
        )));
        assert!(!other.is_retryable());
    }

    #[test]
    fn user_errors_are_not_retried() {
        let e = Error::Input("no such file: x.csv".into());
        assert_eq!(e.fault(), Fault::User);
        assert!(!e.is_retryable());
        assert_eq!(e.fault().exit_code(), 2);
    }

    #[test]
    fn unavailable_services_are_external_and_retried() {
        let e = Error::unavailable("kafka broker 127.0.0.1:1", "connection refused");
        assert_eq!(e.fault(), Fault::External);
        assert!(e.is_retryable());
        assert_eq!(e.fault().exit_code(), 69);
        assert!(e.to_string().contains("kafka broker 127.0.0.1:1"));
    }

    #[test]
    fn internal_errors_are_bugs_and_not_retried() {
        let e = Error::Internal("impossible state".into());
        assert_eq!(e.fault(), Fault::Internal);
        assert!(!e.is_retryable());
        assert_eq!(e.fault().exit_code(), 70);
    }

    #[test]
    fn object_store_network_failures_are_retried_but_auth_failures_are_not() {
        let network = Error::ObjectStore(object_store::Error::Generic {
            store: "S3",
            source: "connection reset".into(),
        });
        assert_eq!(network.fault(), Fault::External);
        assert!(network.is_retryable());

        let denied = Error::ObjectStore(object_store::Error::PermissionDenied {
            path: "lake/x".into(),
            source: "403".into(),
        });
        assert_eq!(denied.fault(), Fault::User);
        assert!(!denied.is_retryable());
    }

    #[test]
    fn delta_commit_conflicts_are_retried_schema_mismatches_are_not() {
        let conflict = Error::Delta(deltalake::DeltaTableError::VersionAlreadyExists(3));
        assert!(conflict.is_retryable());
        let mismatch = Error::Delta(deltalake::DeltaTableError::SchemaMismatch {
            msg: "column x".into(),
        });
        assert_eq!(mismatch.fault(), Fault::User);
        assert!(!mismatch.is_retryable());
    }

    #[test]
    fn an_object_store_failure_wrapped_by_the_delta_kernel_is_retried() {
        let network = object_store::Error::Generic {
            store: "S3",
            source: "error sending request".into(),
        };
        let kernel = deltalake::DeltaTableError::KernelError(network.into());
        let e = Error::Delta(kernel);
        assert_eq!(e.fault(), Fault::External, "{e}");
        assert!(e.is_retryable());
    }

    #[test]
    fn a_storage_failure_deep_inside_a_kernel_error_is_retried() {
        let network = object_store::Error::Generic {
            store: "S3",
            source: "connection reset".into(),
        };
        let generic = delta_kernel::Error::GenericError {
            source: Box::new(network),
        };
        let e = Error::Delta(deltalake::DeltaTableError::KernelError(generic));
        assert_eq!(e.fault(), Fault::External, "{e}");
        assert!(e.is_retryable());
        let bug = delta_kernel::Error::InternalError("impossible".into());
        assert_eq!(
            Error::Delta(deltalake::DeltaTableError::KernelError(bug)).fault(),
            Fault::Internal
        );
    }

    #[test]
    fn a_kernel_error_with_a_backtrace_is_classified_by_what_it_wraps() {
        // What the kernel hands back whenever RUST_BACKTRACE is set (CI sets it).
        let network = object_store::Error::Generic {
            store: "S3",
            source: "connection refused".into(),
        };
        let backtraced = delta_kernel::Error::Backtraced {
            source: Box::new(delta_kernel::Error::ObjectStore(network)),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        let e = Error::Delta(deltalake::DeltaTableError::KernelError(backtraced));
        assert_eq!(e.fault(), Fault::External);
        assert!(e.is_retryable());
    }

    #[test]
    fn kafka_transport_errors_are_retried_config_errors_are_not() {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode;
        let transport = Error::Kafka(KafkaError::MetadataFetch(
            RDKafkaErrorCode::BrokerTransportFailure,
        ));
        assert_eq!(transport.fault(), Fault::External);
        assert!(transport.is_retryable());
        let bad_subscription = Error::Kafka(KafkaError::Subscription("^[".into()));
        assert!(!bad_subscription.is_retryable());
        let unknown_topic = Error::Kafka(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
        assert!(!unknown_topic.is_retryable());
    }

    #[test]
    fn config_errors_are_user_errors() {
        let e = Error::Config(ConfigError::Env {
            var: "LAKECTL_RUNNER_MAX_RETRIES".into(),
            message: "not a number".into(),
        });
        assert_eq!(e.fault(), Fault::User);
        assert!(!e.is_retryable());
    }
}
