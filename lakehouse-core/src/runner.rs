//! The shared runner. A [`Job`] knows how to process one unit of work (a micro-batch, an
//! increment); the runner owns everything around it: once/continuous modes, retries with
//! backoff for external errors, cancellation on SIGINT/SIGTERM, progress, and the run record.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::RunnerConfig;
use crate::error::{Error, Result};
use crate::run_log::{Outcome, RunLog, RunRecord};
use crate::telemetry::Progress;

/// What one unit of work did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitReport {
    pub rows_in: u64,
    pub rows_out: u64,
    /// Record bytes read and written, where the job counts them (bronze, sink): for metrics.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Input table version this unit read up to, for jobs that read Delta tables.
    pub version_read: Option<i64>,
    /// Output table version this unit committed, if it committed.
    pub version_written: Option<i64>,
    /// Nothing more is available right now: `--once` stops, continuous mode idles.
    pub caught_up: bool,
}

#[async_trait]
pub trait Job: Send {
    /// `<kind>:<table>`, e.g. `bronze:books`; names the job in logs and run records.
    fn name(&self) -> String;

    /// Called when a run starts, with the id its run record carries (jobs that write it
    /// next to their data, like silver's quarantine, keep it).
    fn begin(&mut self, _run_id: &str) {}

    /// Processes one unit of work. A job watches `cancel` during long waits and, when it
    /// fires, finishes (or abandons) the unit cleanly and returns.
    async fn run_unit(&mut self, cancel: &CancellationToken) -> Result<UnitReport>;

    /// Called when a run ends (caught up in `--once`, stopped, or failed): a job that keeps
    /// work in memory from unit to unit (a window's state, quality rows) writes it out. After
    /// a failure the units before it are committed, and what they kept is worth writing; an
    /// error here then only warns, the run's own error stands.
    async fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Process what is there now, then exit.
    Once,
    /// Keep processing until cancelled.
    Continuous,
}

/// Adds one unit of work to the run's record.
fn absorb(record: &mut RunRecord, unit: &UnitReport) {
    record.units += 1;
    record.rows_in += unit.rows_in;
    record.rows_out += unit.rows_out;
    if unit.version_read.is_some() {
        record.first_version_read = record.first_version_read.or(unit.version_read);
        record.last_version_read = unit.version_read;
    }
    if unit.version_written.is_some() {
        record.last_version_written = unit.version_written;
    }
}

/// Exponential backoff for retryable errors: `initial * 2^attempt`, capped at `max`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    pub fn from_config(config: &RunnerConfig) -> RetryPolicy {
        RetryPolicy {
            max_retries: config.max_retries,
            initial: Duration::from_millis(config.initial_backoff_ms),
            max: Duration::from_millis(config.max_backoff_ms),
        }
    }

    pub fn backoff(&self, attempt: u32) -> Duration {
        self.initial
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.max)
    }
}

pub struct Runner {
    pipeline: String,
    mode: Mode,
    retry: RetryPolicy,
    idle_poll: Duration,
    cancel: CancellationToken,
    run_log: Option<RunLog>,
}

impl Runner {
    pub fn new(pipeline: impl Into<String>, mode: Mode, cancel: CancellationToken) -> Runner {
        let defaults = RunnerConfig::default();
        Runner {
            pipeline: pipeline.into(),
            mode,
            retry: RetryPolicy::from_config(&defaults),
            idle_poll: Duration::from_millis(defaults.idle_poll_ms),
            cancel,
            run_log: None,
        }
    }

    pub fn with_config(mut self, config: &RunnerConfig) -> Runner {
        self.retry = RetryPolicy::from_config(config);
        self.idle_poll = Duration::from_millis(config.idle_poll_ms);
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Runner {
        self.retry = retry;
        self
    }

    pub fn with_run_log(mut self, run_log: RunLog) -> Runner {
        self.run_log = Some(run_log);
        self
    }

    /// Runs the job to the end of its mode and records the run. Returns the record when
    /// the job succeeded or was cancelled, the job's error when it failed.
    pub async fn run(&self, job: &mut dyn Job) -> Result<RunRecord> {
        let mut record = RunRecord::start(&self.pipeline, &job.name());
        job.begin(&record.run_id);
        info!(job = %record.job, run_id = %record.run_id, mode = ?self.mode, "run started");
        let progress = Progress::new(&record.job);
        crate::metrics::job_started();
        let mut result = self.drive(job, &mut record, &progress).await;
        match (job.finish().await, &result) {
            (Err(e), Ok(_)) => result = Err(e),
            (Err(e), Err(_)) => {
                warn!(job = %record.job, error = %e, "finishing the failed run failed too")
            }
            (Ok(()), _) => {}
        }
        progress.finish();
        record.ended_at = Utc::now();
        match &result {
            Ok(outcome) => record.outcome = *outcome,
            Err(e) => {
                record.outcome = Outcome::Failed;
                record.error = Some(e.to_string());
                error!(job = %record.job, error = %e, fault = ?e.fault(), "the job stopped");
                crate::metrics::job_failed(&record.job, &e.to_string());
            }
        }
        info!(
            job = %record.job,
            outcome = record.outcome.as_str(),
            units = record.units,
            rows_in = record.rows_in,
            rows_out = record.rows_out,
            seconds = (record.ended_at - record.started_at).num_milliseconds() as f64 / 1000.0,
            "run ended"
        );
        if let Some(log) = &self.run_log {
            // The data is already committed; a lost run record is worth a loud warning,
            // not a failed run.
            if let Err(e) = log.append(&record).await {
                warn!(error = %e, "could not write the run record to the lake");
            }
        }
        result.map(|_| record)
    }

    async fn drive(
        &self,
        job: &mut dyn Job,
        record: &mut RunRecord,
        progress: &Progress,
    ) -> Result<Outcome> {
        loop {
            if self.cancel.is_cancelled() {
                return Ok(Outcome::Cancelled);
            }
            let Some(unit) = self.unit_with_retries(job, &record.job).await? else {
                return Ok(Outcome::Cancelled);
            };
            crate::metrics::unit_finished(&record.job, &unit, record.units == 0);
            absorb(record, &unit);
            progress.update(|| {
                format!(
                    "{} units, {} rows in, {} rows out",
                    record.units, record.rows_in, record.rows_out
                )
            });
            if unit.caught_up {
                match self.mode {
                    Mode::Once => {
                        return Ok(if self.cancel.is_cancelled() {
                            Outcome::Cancelled
                        } else {
                            Outcome::Succeeded
                        })
                    }
                    Mode::Continuous => {
                        tokio::select! {
                            _ = tokio::time::sleep(self.idle_poll) => {}
                            _ = self.cancel.cancelled() => {}
                        }
                    }
                }
            }
        }
    }

    /// One unit, retried while its error is retryable. `None` when cancelled while waiting.
    async fn unit_with_retries(&self, job: &mut dyn Job, name: &str) -> Result<Option<UnitReport>> {
        let mut attempt = 0;
        loop {
            match crate::metrics::in_job(name, job.run_unit(&self.cancel)).await {
                Ok(unit) => return Ok(Some(unit)),
                Err(e) if e.is_retryable() && attempt < self.retry.max_retries => {
                    let delay = self.retry.backoff(attempt);
                    attempt += 1;
                    crate::metrics::retried(name, e.service());
                    warn!(error = %e, attempt, max = self.retry.max_retries, "retryable error; retrying in {delay:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.cancel.cancelled() => return Ok(None),
                    }
                }
                Err(e) => {
                    if e.is_retryable() {
                        warn!(attempts = attempt + 1, "giving up: retries exhausted");
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// Dies at once, like `kill -9`, when `LAKECTL_CRASH_AT` names this point. Fault tests use
/// it to crash exactly between two commits, where a timed kill rarely lands.
pub fn crash_point(name: &str) {
    if std::env::var("LAKECTL_CRASH_AT").is_ok_and(|v| v == name) {
        eprintln!("LAKECTL_CRASH_AT={name}: aborting");
        std::process::abort();
    }
}

/// A token cancelled by the first SIGINT or SIGTERM. A second signal exits at once (130).
pub fn cancel_on_signals() -> Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::io("SIGINT handler", e))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::io("SIGTERM handler", e))?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        info!("stop requested: finishing the current unit of work (signal again to abort)");
        cancel.cancel();
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        warn!("second signal: aborting without finishing");
        std::process::exit(130);
    });
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Plays back a script of unit results.
    struct Scripted {
        script: VecDeque<Result<UnitReport>>,
        calls: u32,
        finished: bool,
    }

    impl Scripted {
        fn new(script: Vec<Result<UnitReport>>) -> Scripted {
            Scripted {
                script: script.into(),
                calls: 0,
                finished: false,
            }
        }
    }

    #[async_trait]
    impl Job for Scripted {
        fn name(&self) -> String {
            "test:scripted".into()
        }
        async fn run_unit(&mut self, _cancel: &CancellationToken) -> Result<UnitReport> {
            self.calls += 1;
            self.script
                .pop_front()
                .unwrap_or_else(|| Err(Error::Internal("script ran out".into())))
        }
        async fn finish(&mut self) -> Result<()> {
            self.finished = true;
            Ok(())
        }
    }

    fn rows(n: u64, caught_up: bool) -> Result<UnitReport> {
        Ok(UnitReport {
            rows_in: n,
            rows_out: n,
            caught_up,
            ..Default::default()
        })
    }

    fn fast_runner(mode: Mode, max_retries: u32) -> Runner {
        Runner::new("p", mode, CancellationToken::new()).with_retry(RetryPolicy {
            max_retries,
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
        })
    }

    #[tokio::test]
    async fn once_mode_runs_units_until_caught_up() {
        let mut job = Scripted::new(vec![rows(10, false), rows(5, true)]);
        let record = fast_runner(Mode::Once, 0).run(&mut job).await.unwrap();
        assert_eq!(record.outcome, Outcome::Succeeded);
        assert_eq!((record.units, record.rows_in), (2, 15));
        assert_eq!(job.calls, 2);
        assert!(job.finished);
    }

    #[tokio::test]
    async fn external_errors_are_retried_until_they_pass() {
        let down = || Err(Error::unavailable("kafka broker", "connection refused"));
        let mut job = Scripted::new(vec![down(), down(), rows(3, true)]);
        let record = fast_runner(Mode::Once, 5).run(&mut job).await.unwrap();
        assert_eq!(record.outcome, Outcome::Succeeded);
        assert_eq!(job.calls, 3);
    }

    #[tokio::test]
    async fn user_errors_fail_at_once_without_retry() {
        let mut job = Scripted::new(vec![Err(Error::Input("bad file".into())), rows(1, true)]);
        let err = fast_runner(Mode::Once, 5).run(&mut job).await.unwrap_err();
        assert!(matches!(err, Error::Input(_)));
        assert_eq!(job.calls, 1);
        assert!(
            job.finished,
            "a failed run is finished too: its committed units' rows"
        );
        let why = crate::metrics::not_ready().unwrap_or_default();
        assert!(
            why.contains("test:scripted stopped: bad file"),
            "/readyz says which job stopped and why: {why:?}"
        );
    }

    #[tokio::test]
    async fn retries_run_out_and_the_error_names_the_service() {
        let down = || Err(Error::unavailable("object store s3://lake/", "timeout"));
        let mut job = Scripted::new(vec![down(), down(), down(), rows(1, true)]);
        let err = fast_runner(Mode::Once, 2).run(&mut job).await.unwrap_err();
        assert_eq!(job.calls, 3, "one try and two retries");
        assert!(err.to_string().contains("object store s3://lake/"));
    }

    #[tokio::test]
    async fn a_cancelled_token_stops_continuous_mode_with_outcome_cancelled() {
        let runner = fast_runner(Mode::Continuous, 0);
        let cancel = runner.cancel.clone();
        struct Endless(CancellationToken, u32);
        #[async_trait]
        impl Job for Endless {
            fn name(&self) -> String {
                "test:endless".into()
            }
            async fn run_unit(&mut self, _: &CancellationToken) -> Result<UnitReport> {
                self.1 += 1;
                if self.1 == 3 {
                    self.0.cancel();
                }
                rows(1, false)
            }
        }
        let mut job = Endless(cancel, 0);
        let record = runner.run(&mut job).await.unwrap();
        assert_eq!(record.outcome, Outcome::Cancelled);
        assert_eq!(
            record.units, 3,
            "the unit in flight finishes, no new one starts"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            max_retries: 10,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let delays: Vec<u128> = (0..6).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn record_tracks_version_range() {
        let mut r = RunRecord::start("p", "j");
        for (read, written) in [(Some(3), Some(10)), (None, None), (Some(5), Some(11))] {
            absorb(
                &mut r,
                &UnitReport {
                    version_read: read,
                    version_written: written,
                    ..Default::default()
                },
            );
        }
        assert_eq!(
            (
                r.first_version_read,
                r.last_version_read,
                r.last_version_written
            ),
            (Some(3), Some(5), Some(11))
        );
    }
}
