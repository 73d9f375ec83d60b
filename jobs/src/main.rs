//! The `lakectl` binary: parses the command line, loads the pipeline, hands off to a job
//! module, and turns errors into exit codes. `anyhow` lives here and nowhere else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
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
    /// Run a job type over the tables of the pipeline.
    Run {
        #[command(subcommand)]
        stage: Stage,
    },
    /// Show the latest run of every job recorded in the lake.
    Status,
}

#[derive(Subcommand)]
enum Stage {
    /// Kafka topics -> raw Delta tables under <lake>/bronze (continuous unless --once).
    Bronze(RunArgs),
    /// Bronze -> typed, cleaned, deduplicated Delta tables under <lake>/silver.
    Silver(RunArgs),
    /// SQL over silver -> Delta tables under <lake>/gold.
    Gold(RunArgs),
    /// Silver/gold Delta tables -> PostgreSQL.
    Load(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Process what is available now, then exit (for Kafka: up to the high watermarks seen at start).
    #[arg(long)]
    once: bool,
    /// Tables to run; all tables of the stage when none are named.
    tables: Vec<String>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(
        match cli.log_format {
            LogFormatArg::Human => LogFormat::Human,
            LogFormatArg::Json => LogFormat::Json,
        },
        cli.verbose,
    );
    // A panic is a bug: say so and use the internal-error exit code.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::exit(Fault::Internal.exit_code());
    }));

    let runtime = tokio::runtime::Builder::new_multi_thread()
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
        Command::Run { stage } => {
            let pipeline = load_pipeline(cli.pipeline.as_deref(), &cli.set)?;
            let (name, args) = match stage {
                Stage::Bronze(a) => ("bronze", a),
                Stage::Silver(a) => ("silver", a),
                Stage::Gold(a) => ("gold", a),
                Stage::Load(a) => ("load", a),
            };
            anyhow::bail!(
                "`lakectl run {name}` is not available in this build yet (pipeline {}, once={}, tables {:?})",
                pipeline.name,
                args.once,
                args.tables
            );
        }
    }
    Ok(())
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
