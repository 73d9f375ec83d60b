//! What every `lakectl run <stage>` shares: which tables to run, and running one job per table
//! on the shared runner with run records and signal handling.

use std::collections::BTreeMap;

use lakehouse_core::quality::QualityReport;
use lakehouse_core::run_log::RunLog;
use lakehouse_core::{Error, Job, Mode, Pipeline, Result, RunRecord, Runner};

/// The tables named on the command line, or every table of `[<section>.*]` when none are.
pub fn table_names<'p>(
    pipeline: &'p Pipeline,
    section: &str,
    declared: impl Iterator<Item = &'p String>,
    named: &[String],
) -> Result<Vec<String>> {
    let names: Vec<String> = if named.is_empty() {
        declared.cloned().collect()
    } else {
        named.to_vec()
    };
    if names.is_empty() {
        return Err(Error::Input(format!(
            "no [{section}.*] tables in {}",
            pipeline.source_file.display()
        )));
    }
    Ok(names)
}

/// The settings of `[<section>.<name>]` in `tables`, or a user error naming the file.
pub fn settings<'p, T>(
    pipeline: &Pipeline,
    section: &str,
    tables: &'p BTreeMap<String, T>,
    name: &str,
) -> Result<&'p T> {
    tables.get(name).ok_or_else(|| {
        Error::Input(format!(
            "no [{section}.{name}] in {}",
            pipeline.source_file.display()
        ))
    })
}

/// Runs one job per table until a signal stops them: `--once` runs them in turn and stops at
/// the first failure; continuous runs them side by side, each on a task of its own (until
/// stopped), so that one's long unit does not hold back another's, and when one fails stops
/// the others after their units and returns its error. `report` prints what a finished run
/// did, failed runs included.
pub async fn run_each<J: Job + 'static>(
    pipeline: &Pipeline,
    names: &[String],
    mode: Mode,
    mut make: impl FnMut(&str) -> Result<J>,
    mut report: impl FnMut(&J, &Result<RunRecord>),
) -> Result<()> {
    let cancel = lakehouse_core::runner::cancel_on_signals()?;
    let run_log = RunLog::new(pipeline.lake.open()?);
    let runner = || {
        Runner::new(&pipeline.name, mode, cancel.clone())
            .with_config(&pipeline.runner)
            .with_run_log(run_log.clone())
    };
    if mode == Mode::Continuous {
        let jobs = names.iter().map(|n| make(n)).collect::<Result<Vec<J>>>()?;
        let mut runs: futures::stream::FuturesUnordered<_> = jobs
            .into_iter()
            .map(|mut job| {
                let runner = runner();
                tokio::spawn(async move {
                    let result = runner.run(&mut job).await;
                    (job, result)
                })
            })
            .collect();
        let mut first_error = None;
        while let Some(finished) = futures::StreamExt::next(&mut runs).await {
            let (job, result) = finished
                .map_err(|e| Error::Internal(format!("a job's task ended abnormally: {e}")))?;
            report(&job, &result);
            if let Err(e) = result {
                // One job stopped: the others finish their units and the process exits
                // non-zero, so that a supervisor restarts it whole.
                if first_error.is_none() {
                    tracing::error!(job = %job.name(), "stopping the other jobs of this process");
                    cancel.cancel();
                }
                first_error.get_or_insert(e);
            }
        }
        return first_error.map_or(Ok(()), Err);
    }
    for name in names {
        let mut job = make(name)?;
        let result = runner().run(&mut job).await;
        report(&job, &result);
        result?;
        if cancel.is_cancelled() {
            break;
        }
    }
    Ok(())
}

/// `3` or `unchanged`, for version columns of run summaries.
pub fn version_or(version: Option<i64>, none: &str) -> String {
    version.map_or(none.to_string(), |v| v.to_string())
}

/// What a job that reads a table and keeps a quality report prints when a run ends: the
/// report (when it counted anything), then `<job>: <outcome> — N <read> read, M <written>,
/// <source> version V, table version W`.
pub fn print_table_run(
    job: &str,
    quality: &QualityReport,
    result: &Result<RunRecord>,
    read: &str,
    written: &str,
    source: &str,
) {
    if !quality.rules.is_empty() {
        println!("{job} quality:\n{}", quality.render());
    }
    if let Ok(record) = result {
        println!(
            "{}: {} — {} {read} read, {} {written}, {source} version {}, table version {}",
            record.job,
            record.outcome.as_str(),
            record.rows_in,
            record.rows_out,
            version_or(record.last_version_read, "-"),
            version_or(record.last_version_written, "unchanged"),
        );
    }
}
