//! Logging and progress. Logs go to stderr, human-readable by default or JSON lines for log
//! shippers; progress is a live bar on a terminal and a periodic log line otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Installs the global subscriber. `RUST_LOG` refines the default filter.
pub fn init_logging(format: LogFormat, verbose: bool) {
    // Our crates at info (debug with -v); dependencies (delta_kernel is chatty) at warn, but
    // for the lines a cluster node's operator needs: each job the scheduler runs, each task
    // an executor runs.
    let ours = if verbose { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "warn,lakectl={ours},jobs={ours},lakehouse_core={ours},warehouse={ours},\
             cluster={ours},ballista_scheduler::scheduler_server::query_stage_scheduler=info,\
             ballista_executor::executor_server=info,deltalake_core::writer::stats=error"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

const LOG_EVERY: Duration = Duration::from_secs(10);

/// Progress of one run.
pub struct Progress {
    bar: Option<ProgressBar>,
    job: String,
    last_log: Mutex<Instant>,
}

impl Progress {
    pub fn new(job: &str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} [{elapsed_precise}] {msg}")
                    .expect("static template"),
            );
            bar.set_prefix(job.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            job: job.to_string(),
            last_log: Mutex::new(Instant::now()),
        }
    }

    /// Shows `message` on the bar, or logs it every 10 s when stderr is not a terminal.
    pub fn update(&self, message: impl FnOnce() -> String) {
        match &self.bar {
            Some(bar) => bar.set_message(message()),
            None => {
                let mut last = self.last_log.lock().expect("progress lock");
                if last.elapsed() >= LOG_EVERY {
                    *last = Instant::now();
                    tracing::info!(job = %self.job, "{}", message());
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
