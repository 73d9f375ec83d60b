//! `lakectl status`: the latest run of every job, from the run records in the lake, and how
//! far each bronze table is behind its topic.

use std::collections::BTreeMap;

use lakehouse_core::run_log::RunLog;
use lakehouse_core::{Pipeline, Result, RunRecord};

pub async fn run(pipeline: &Pipeline) -> Result<()> {
    let runs = RunLog::new(pipeline.lake.open()?).read_all().await?;
    let mut latest: BTreeMap<&str, &RunRecord> = BTreeMap::new();
    for run in &runs {
        latest.insert(&run.job, run);
    }
    if latest.is_empty() {
        println!("no runs recorded yet in {}", pipeline.lake.uri);
    } else {
        print_runs(&latest);
    }
    let never: Vec<String> = crate::kind::kinds()
        .iter()
        .flat_map(|kind| {
            (kind.declared)(pipeline)
                .into_iter()
                .map(|t| format!("{}:{t}", kind.name))
        })
        .filter(|job| !latest.contains_key(job.as_str()))
        .collect();
    if !never.is_empty() && !latest.is_empty() {
        println!("never run: {}", never.join(", "));
    }
    for (table, settings) in &pipeline.bronze {
        println!("\nbronze.{table}: lag behind topic {:?}", settings.topic);
        println!(
            "  {:>9} {:>14} {:>14} {:>10}",
            "partition", "last written", "high watermark", "lag"
        );
        for p in crate::bronze::lag(pipeline, table).await? {
            let written = p.last_written.map_or("-".to_string(), |w| w.to_string());
            println!(
                "  {:>9} {:>14} {:>14} {:>10}",
                p.partition, written, p.high_watermark, p.lag
            );
        }
    }
    Ok(())
}

fn print_runs(latest: &BTreeMap<&str, &RunRecord>) {
    println!(
        "{:<20} {:<10} {:<20} {:>10} {:>10} {:>9}",
        "job", "outcome", "ended (UTC)", "rows in", "rows out", "version"
    );
    for (job, run) in latest {
        println!(
            "{:<20} {:<10} {:<20} {:>10} {:>10} {:>9}",
            job,
            run.outcome.as_str(),
            run.ended_at.format("%Y-%m-%d %H:%M:%S"),
            run.rows_in,
            run.rows_out,
            run.last_version_written
                .map_or("-".to_string(), |v| v.to_string())
        );
    }
}
