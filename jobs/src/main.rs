//! The `lakectl` binary: parses the command line, loads the pipeline, hands off to a job
//! module, and turns errors into exit codes. `anyhow` lives here and nowhere else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use jobs::generate::{GenerateOptions, ProfileName, RunFlags};
use jobs::produce::{OnBadRow, Passes, ProduceOptions};
use lakehouse_core::config::{GenerateConfig, RecordFormat, Span};
use lakehouse_core::telemetry::{self, LogFormat};
use lakehouse_core::{Fault, Pipeline};

const AFTER_HELP: &str = "\
Every command reads the pipeline file given by -p/--pipeline or LAKECTL_PIPELINE.
Settings are layered: built-in defaults < pipeline file < LAKECTL_* env < --set KEY=VALUE.

Exit codes:
  0   success, or stopped cleanly by SIGINT/SIGTERM
  2   user error: bad arguments, pipeline file or input (fix it, retrying will not help)
  69  external failure: Kafka, the object store or Postgres is down or refused (retry later)
  70  internal error: a bug in lakectl (please report it)
  130 aborted by a second SIGINT/SIGTERM";

#[derive(Parser)]
#[command(
    name = "lakectl",
    version,
    about = "Medallion lakehouse pipelines: CSV/JSON topics in Kafka -> Delta bronze, silver, gold -> PostgreSQL",
    after_help = AFTER_HELP
)]
struct Cli {
    /// Pipeline file (TOML).
    #[arg(
        short,
        long,
        global = true,
        env = "LAKECTL_PIPELINE",
        value_name = "FILE"
    )]
    pipeline: Option<PathBuf>,

    /// Override a setting, e.g. --set kafka.brokers=host:9092 (beats env and file).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    set: Vec<(String, String)>,

    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "LAKECTL_LOG_FORMAT"
    )]
    log_format: LogFormatArg,

    /// Debug logging (RUST_LOG refines it further).
    #[arg(short, long, global = true)]
    verbose: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check the pipeline file and that each service it uses answers (broker, object store, Postgres).
    Validate {
        /// Pipeline file; same as -p.
        file: Option<PathBuf>,
    },
    /// Replay a CSV file into a Kafka topic as JSON records (defaults from [producer]).
    Produce(ProduceArgs),
    /// Generate a synthetic event stream with known defects into Kafka or an NDJSON file
    /// (defaults from [generate]). The same seed and options give the same bytes.
    #[command(after_help = GENERATE_HELP)]
    Generate(GenerateArgs),
    /// Run a job type over the tables of the pipeline.
    Run {
        /// Serve Prometheus metrics while the run lasts, on HOST:PORT: /metrics (OpenMetrics
        /// text: records, bytes, units, commits and their latency, consumer lag, watermarks,
        /// quarantined rows, retries), /healthz and /readyz. Also [runner] metrics_addr.
        #[arg(long, value_name = "HOST:PORT")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// The job type.
        #[arg(value_parser = kind_parser())]
        kind: String,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Show the latest run of every job recorded in the lake, and each bronze table's lag.
    Status,
    /// Run SQL over the pipeline's Delta tables and print the result. Tables are named
    /// bronze.<t>, silver.<t>, quarantine.<t>, gold.<t>, _lakectl.runs and _lakectl.quality.
    Query {
        /// e.g. "SELECT genre, count(*) FROM silver.books GROUP BY genre"
        sql: String,
    },
    /// Compact a table's small files into large ones, e.g. `optimize bronze.books`.
    Optimize {
        /// <layer>.<table>
        table: String,
    },
    /// Run a node of a Ballista cluster for the pipelines' SQL (`[engine] url =
    /// "ballista://host:port"` sends gold and `lakectl query` there).
    Cluster {
        #[command(subcommand)]
        node: ClusterNode,
    },
    /// Delete data files no table version within the retention period uses.
    Vacuum {
        /// <layer>.<table>
        table: String,
        /// Keep files that versions of the last N hours may still read.
        #[arg(long, default_value_t = 168, value_name = "N")]
        retention_hours: u64,
        /// List what would be deleted without deleting it.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum ClusterNode {
    /// The scheduler: plans queries into stages and hands their tasks to executors.
    Scheduler {
        /// Address to listen on (gRPC); executors and lakectl connect here.
        #[arg(long, default_value = "127.0.0.1:50050", value_name = "HOST:PORT")]
        bind: std::net::SocketAddr,
        /// An executor silent this long is dead: its tasks run again elsewhere.
        #[arg(long, default_value_t = 15, value_name = "SECONDS")]
        executor_timeout: u64,
    },
    /// An executor: runs tasks and serves its shuffle output (Arrow Flight on --bind, gRPC on
    /// the next port). Object stores come from the environment (AWS_* for s3:// lakes).
    Executor {
        /// The scheduler's address.
        #[arg(long, value_name = "HOST:PORT")]
        scheduler: String,
        #[arg(long, default_value = "127.0.0.1:50051", value_name = "HOST:PORT")]
        bind: std::net::SocketAddr,
        /// The host the scheduler and other executors reach this one at [default: the bind
        /// address].
        #[arg(long, value_name = "HOST")]
        advertise: Option<String>,
        /// Folder for shuffle files [default: a temporary folder].
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// Tasks at once [default: the number of cores].
        #[arg(long, value_name = "N")]
        slots: Option<usize>,
        /// The folder of a file:// lake: the only files it reads from the local disk. Without
        /// it, it reads s3:// lakes only (a plan names its files: whoever can reach the
        /// scheduler could otherwise read any file the executor can).
        #[arg(long, value_name = "DIR")]
        file_root: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ProduceArgs {
    /// CSV file: UTF-8 with or without BOM, LF or CRLF, a header row.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Kafka topic.
    #[arg(long)]
    topic: Option<String>,
    /// Column whose value is the record key (same key, same partition).
    #[arg(long, value_name = "COLUMN")]
    key: Option<String>,
    /// Records per second, e.g. 500 or 500/s; unlimited by default.
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Replay the file N times; from the second pass the key value gets the suffix #<pass>.
    #[arg(long = "loop", value_name = "N", conflicts_with = "forever")]
    passes: Option<u64>,
    /// Replay the file until stopped (SIGINT/SIGTERM).
    #[arg(long)]
    forever: bool,
    /// Stop after N records.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// What to do with a row that has the wrong number of fields or invalid UTF-8.
    #[arg(long, value_enum, default_value = "fail")]
    on_bad_row: OnBadRow,
}

const GENERATE_HELP: &str = "\
Profiles (JSON shapes in docs/produce-and-generate.md):
  user-activity    website visits: page_view, click, scroll, search, ...; key user_id
  customer-events  streaming-app events with nested device, location, content, subscription,
                   event_details and arrays; key user_id
  ecommerce        page_view, search, add_to_cart, purchase with price, quantity, revenue;
                   key user_id
  orders           order lifecycles in an envelope, payload checksummed with SHA-256;
                   key order_id

Each record is clean, late, corrupt or a duplicate; the shares hold to within one record in
every 1,000. --truth writes one JSON line per late, corrupt and duplicate record (seq,
event_id, key, defect, details); Kafka records carry their position as the header `seq`.

Examples:
  lakectl generate user-activity --topic activity --count 100000 --seed 7 \\
      --out-of-order 5s --late-fraction 0.01 --late-by 10m --truth truth.ndjson
  lakectl generate orders --out orders.ndjson --count 1000 --duplicate-fraction 0.02
  lakectl generate ecommerce --topic shop --partitions 3 --forever --rate 1000/s --start now";

#[derive(Args)]
struct GenerateArgs {
    /// The stream to make [default: [generate] profile].
    #[arg(value_enum)]
    profile: Option<ProfileName>,
    /// Kafka topic [default: [generate] topic].
    #[arg(long)]
    topic: Option<String>,
    /// Create the topic with N partitions when it does not exist (keys are partitioned like
    /// Kafka's Java client does: murmur2).
    #[arg(long, value_name = "N")]
    partitions: Option<i32>,
    /// Write the records to an NDJSON file (one value per line) instead of Kafka.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["topic", "partitions"])]
    out: Option<PathBuf>,
    /// Write the ground truth (every late, corrupt and duplicate record) as NDJSON.
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    /// Records to send, duplicates included.
    #[arg(long, value_name = "N", conflicts_with_all = ["duration", "forever"])]
    count: Option<u64>,
    /// Send for this long of wall time, e.g. 60s or 5m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "forever")]
    duration: Option<std::time::Duration>,
    /// Send until stopped (SIGINT/SIGTERM).
    #[arg(long)]
    forever: bool,
    /// Records per second of wall time, e.g. 1000/s; unlimited by default.
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Events per second of event time [default: --rate, else 100/s].
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    event_rate: Option<f64>,
    /// Random seed: the same seed and options give the same records [default: 0].
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Event time of the first event: RFC 3339, or `now` [default: 2026-01-01T00:00:00Z].
    #[arg(long, value_name = "TIME")]
    start: Option<String>,
    /// Jitter: each event's time is up to this much before its arrival, so events arrive out
    /// of order by up to this much, e.g. 5s.
    #[arg(long, value_name = "DURATION")]
    out_of_order: Option<Span>,
    /// Share of records that are late: their time is set back by --late-by (plus jitter).
    #[arg(long, value_name = "F")]
    late_fraction: Option<f64>,
    /// How far a late event's time is set back, e.g. 10m.
    #[arg(long, value_name = "DURATION")]
    late_by: Option<Span>,
    /// Share of records that re-send a recent clean record (same key, same bytes).
    #[arg(long, value_name = "F")]
    duplicate_fraction: Option<f64>,
    /// Share of records with one of the profile's corruptions (a bad checksum, a negative
    /// price, a missing required field, a wrong type, ...).
    #[arg(long, value_name = "F")]
    corrupt_fraction: Option<f64>,
    /// What goes to Kafka: json, or avro (Confluent-framed, the profile's Avro schema
    /// registered under <topic>-value in schema_registry.url; customer-events only). --out
    /// files are always NDJSON [default: [generate] format, else json].
    #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
    format: Option<RecordFormat>,
}

fn parse_format(s: &str) -> Result<RecordFormat, String> {
    match s {
        "json" => Ok(RecordFormat::Json),
        "avro" => Ok(RecordFormat::Avro),
        other => Err(format!("{other:?}: expected json or avro")),
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    lakehouse_core::config::parse_span(s)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let n = s.trim_end_matches("/s");
    match n.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!(
            "expected a positive number of records per second, got {s:?}"
        )),
    }
}

#[derive(Args)]
struct RunArgs {
    /// Process what is available now, then exit (for Kafka: up to the high watermarks seen at
    /// start). The default for every job type but bronze.
    #[arg(long, conflicts_with = "continuous")]
    once: bool,
    /// Keep processing new input as it arrives until Ctrl-C/SIGTERM. The default for bronze.
    #[arg(long)]
    continuous: bool,
    /// Rebuild from scratch (silver, gold): silver from the first bronze version, overwriting
    /// silver and its quarantine (after a change of schema, cleaning SQL or expectations);
    /// gold even when no input moved.
    #[arg(long)]
    full_refresh: bool,
    /// Tables to run; all tables of the job type when none are named.
    tables: Vec<String>,
}

/// The job types `run` takes, each with its summary for `--help`.
fn kind_parser() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        jobs::kind::kinds()
            .iter()
            .map(|k| clap::builder::PossibleValue::new(k.name).help(k.summary)),
    )
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// glibc gives each thread that allocates an arena of its own and keeps freed memory in each:
/// with tokio's, DataFusion's and the JSON parser's threads, silver over 5M records peaked at
/// 1.1 GB instead of 0.66 GB. Two arenas, unless MALLOC_ARENA_MAX says otherwise.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// The name of the tokio runtime's threads (see the panic hook in `main`).
const RUNTIME_THREADS: &str = "lakectl-runtime";

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    telemetry::init_logging(
        match cli.log_format {
            LogFormatArg::Human => LogFormat::Human,
            LogFormatArg::Json => LogFormat::Json,
        },
        cli.verbose,
    );
    // A panic is a bug: say so and use the internal-error exit code. Except in a task on the
    // runtime's threads: tokio hands it to whoever awaits the task as a JoinError, which is
    // where it belongs (our own code maps those to internal errors; delta-rs maps a panic in
    // its writer task — object_store 0.13's BufWriter panics when aborted after a failed
    // shutdown, e.g. when the object store is cut off at that moment — to a retryable error).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let in_task = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with(RUNTIME_THREADS));
        if !in_task {
            std::process::exit(Fault::Internal.exit_code());
        }
    }));

    // A unit's CPU work (a session window's sort) runs on a runtime thread without yielding:
    // with at least four threads the OS shares the cores between the jobs of a continuous
    // `run window`, and a short unit does not wait behind a long one for a thread.
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get().max(4));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(RUNTIME_THREADS)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let fault = fault_of(&e);
            eprintln!("error: {e:#}");
            ExitCode::from(fault.exit_code() as u8)
        }
    }
}

/// The fault of the first error in the chain that knows it; unknown errors are bugs.
fn fault_of(e: &anyhow::Error) -> Fault {
    e.chain()
        .find_map(|cause| {
            cause
                .downcast_ref::<lakehouse_core::Error>()
                .map(|e| e.fault())
                .or_else(|| cause.downcast_ref::<warehouse::Error>().map(|e| e.fault()))
                .or_else(|| {
                    cause
                        .downcast_ref::<lakehouse_core::ConfigError>()
                        .map(|_| Fault::User)
                })
        })
        .unwrap_or(Fault::Internal)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Validate { file } => {
            let path = file.as_deref().or(cli.pipeline.as_deref());
            jobs::validate::run(&load_pipeline(path, &cli.set)?).await?;
        }
        Command::Status => {
            jobs::status::run(&load_pipeline(cli.pipeline.as_deref(), &cli.set)?).await?;
        }
        Command::Cluster { node } => {
            let result = match node {
                ClusterNode::Scheduler {
                    bind,
                    executor_timeout,
                } => cluster::run_scheduler(*bind, *executor_timeout).await,
                ClusterNode::Executor {
                    scheduler,
                    bind,
                    advertise,
                    work_dir,
                    slots,
                    file_root,
                } => {
                    let scheduler = cluster::host_port(scheduler).map_err(|e| {
                        lakehouse_core::Error::Input(format!("--scheduler {scheduler:?}: {e}"))
                    })?;
                    cluster::run_executor(cluster::ExecutorOptions {
                        scheduler,
                        bind: *bind,
                        advertise: advertise.clone(),
                        work_dir: work_dir.as_ref().map(|d| d.display().to_string()),
                        slots: slots.unwrap_or_else(|| {
                            std::thread::available_parallelism().map_or(1, |n| n.get())
                        }),
                        heartbeat_seconds: 2,
                        file_root: file_root.clone(),
                    })
                    .await
                }
            };
            result.map_err(|e| lakehouse_core::Error::unavailable("ballista cluster", e))?;
        }
        Command::Query { sql } => {
            jobs::catalog::query(&load_pipeline(cli.pipeline.as_deref(), &cli.set)?, sql).await?;
        }
        Command::Optimize { table } => {
            let pipeline = load_pipeline(cli.pipeline.as_deref(), &cli.set)?;
            jobs::maintenance::optimize(&pipeline, table).await?;
        }
        Command::Vacuum {
            table,
            retention_hours,
            dry_run,
        } => {
            let pipeline = load_pipeline(cli.pipeline.as_deref(), &cli.set)?;
            jobs::maintenance::vacuum(&pipeline, table, *retention_hours, *dry_run).await?;
        }
        Command::Produce(args) => {
            let pipeline = load_pipeline(cli.pipeline.as_deref(), &cli.set)?;
            let options = produce_options(&pipeline, args)?;
            let cancel = lakehouse_core::runner::cancel_on_signals()?;
            let report = jobs::produce::run(&pipeline, options.clone(), cancel).await?;
            let seconds = report.elapsed.as_secs_f64();
            println!(
                "{} -> topic {}: sent {}, delivered {}, failed {}, bad rows skipped {} in {:.2} s ({:.0} records/s)",
                options.file.display(),
                options.topic,
                report.sent,
                report.delivered,
                report.failed,
                report.bad_rows.len(),
                seconds,
                report.delivered as f64 / seconds.max(1e-9)
            );
            for bad in &report.bad_rows {
                println!("  bad row skipped: {bad}");
            }
        }
        Command::Generate(args) => {
            // A pipeline file is optional: without one, Kafka comes from LAKECTL_KAFKA_BROKERS.
            let pipeline = match cli.pipeline.as_deref() {
                Some(path) => load_pipeline(Some(path), &cli.set)?,
                None => Pipeline::without_file(&|var| std::env::var(var).ok(), &cli.set)
                    .map_err(lakehouse_core::Error::from)?,
            };
            let options = generate_options(&pipeline, args)?;
            let cancel = lakehouse_core::runner::cancel_on_signals()?;
            let report = jobs::generate::run(&pipeline, options.clone(), cancel).await?;
            let target = match (&options.out, &options.topic) {
                (Some(path), _) => path.display().to_string(),
                (None, topic) => format!("topic {}", topic.as_deref().unwrap_or_default()),
            };
            let seconds = report.elapsed.as_secs_f64();
            println!(
                "{} -> {target}: sent {}, delivered {}, failed {} in {seconds:.2} s ({:.0} records/s)",
                options.profile.name(),
                report.sent,
                report.delivered,
                report.failed,
                report.delivered as f64 / seconds.max(1e-9),
            );
            let corrupt: Vec<String> = report
                .corrupt
                .iter()
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            println!(
                "  seed {}: late {}, duplicates {}, corrupt {} ({})",
                options.seed,
                report.late,
                report.duplicates,
                report.corrupt.values().sum::<u64>(),
                if corrupt.is_empty() {
                    "none".into()
                } else {
                    corrupt.join(", ")
                }
            );
            if let Some((first, last)) = report.event_time_span {
                let time = |ms| {
                    chrono::DateTime::from_timestamp_millis(ms)
                        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
                };
                println!("  event time {} to {}", time(first), time(last));
            }
        }
        Command::Run {
            kind,
            args,
            metrics_addr,
        } => {
            let pipeline = load_pipeline(cli.pipeline.as_deref(), &cli.set)?;
            if let Some(addr) = metrics_addr.or(pipeline.runner.metrics_addr) {
                lakehouse_core::metrics::serve(addr).await?;
            }
            let kind = jobs::kind::kind(kind).expect("clap accepts only known job types");
            if args.full_refresh && !kind.full_refresh {
                let takers: Vec<&str> = (jobs::kind::kinds().iter())
                    .filter(|k| k.full_refresh)
                    .map(|k| k.name)
                    .collect();
                return Err(lakehouse_core::Error::Input(format!(
                    "run {}: --full-refresh is for {} only",
                    kind.name,
                    takers.join(" and ")
                ))
                .into());
            }
            let options = jobs::kind::RunOptions {
                mode: args.mode(kind.default_mode),
                full_refresh: args.full_refresh,
            };
            (kind.run)(&pipeline, &args.tables, options).await?;
        }
    }
    Ok(())
}

impl RunArgs {
    fn mode(&self, default: lakehouse_core::Mode) -> lakehouse_core::Mode {
        match (self.once, self.continuous) {
            (true, _) => lakehouse_core::Mode::Once,
            (_, true) => lakehouse_core::Mode::Continuous,
            _ => default,
        }
    }
}

/// The pipeline's [producer] section overlaid with the flags given.
fn produce_options(pipeline: &Pipeline, args: &ProduceArgs) -> anyhow::Result<ProduceOptions> {
    let base = ProduceOptions::from_pipeline(pipeline);
    let missing = |flag: &str| {
        lakehouse_core::Error::Input(format!(
            "no {flag}: pass it or set it in the [producer] section of {}",
            pipeline.source_file.display()
        ))
    };
    let file = match (&args.file, &base) {
        (Some(file), _) => file.clone(),
        (None, Some(base)) => base.file.clone(),
        (None, None) => return Err(missing("--file").into()),
    };
    let topic = match (&args.topic, &base) {
        (Some(topic), _) => topic.clone(),
        (None, Some(base)) => base.topic.clone(),
        (None, None) => return Err(missing("--topic").into()),
    };
    Ok(ProduceOptions {
        file,
        topic,
        key: args
            .key
            .clone()
            .or(base.as_ref().and_then(|b| b.key.clone())),
        rate: args.rate.or(base.as_ref().and_then(|b| b.rate)),
        passes: match (args.forever, args.passes) {
            (true, _) => Passes::Forever,
            (false, n) => Passes::Times(n.unwrap_or(1)),
        },
        limit: args.limit,
        on_bad_row: args.on_bad_row,
    })
}

/// The pipeline's [generate] section overlaid with the flags given.
fn generate_options(pipeline: &Pipeline, args: &GenerateArgs) -> anyhow::Result<GenerateOptions> {
    let flags = GenerateConfig {
        profile: args.profile.map(|p| p.name().to_string()),
        topic: args.topic.clone(),
        partitions: args.partitions,
        count: args.count,
        rate: args.rate,
        event_rate: args.event_rate,
        seed: args.seed,
        start: args.start.clone(),
        out_of_order: args.out_of_order,
        late_fraction: args.late_fraction,
        late_by: args.late_by,
        duplicate_fraction: args.duplicate_fraction,
        corrupt_fraction: args.corrupt_fraction,
        format: args.format,
    };
    let run = RunFlags {
        out: args.out.clone(),
        truth: args.truth.clone(),
        duration: args.duration,
        forever: args.forever,
    };
    Ok(GenerateOptions::resolve(
        &pipeline.generate,
        &pipeline.source_file,
        &flags,
        run,
    )?)
}

fn load_pipeline(path: Option<&Path>, set: &[(String, String)]) -> anyhow::Result<Pipeline> {
    let path = path.ok_or_else(|| {
        lakehouse_core::Error::Input(
            "no pipeline file: pass -p/--pipeline FILE or set LAKECTL_PIPELINE".into(),
        )
    })?;
    let pipeline = Pipeline::load(path, &|var| std::env::var(var).ok(), set)
        .map_err(lakehouse_core::Error::from)
        .with_context(|| format!("loading pipeline {}", path.display()))?;
    Ok(pipeline)
}
