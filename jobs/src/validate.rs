//! `lakectl validate`: the pipeline parsed, then every service it uses asked to answer.

use std::time::Duration;

use lakehouse_core::{Error, Pipeline, Result};

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One line of the report: the service and what it said.
struct Check {
    service: String,
    result: std::result::Result<String, String>,
}

async fn within_timeout<T, E: std::fmt::Display>(
    probe: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> std::result::Result<T, String> {
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

pub async fn run(pipeline: &Pipeline) -> Result<()> {
    println!(
        "pipeline {:?} ({}): {} bronze, {} silver, {} gold, {} load tables",
        pipeline.name,
        pipeline.source_file.display(),
        pipeline.bronze.len(),
        pipeline.silver.len(),
        pipeline.gold.len(),
        pipeline.load.len()
    );
    let uses_kafka = !pipeline.bronze.is_empty() || pipeline.producer.is_some();
    let (kafka, lake, postgres) = tokio::join!(
        async {
            uses_kafka.then_some(())?;
            let result = lakehouse_core::kafka::probe(&pipeline.kafka, PROBE_TIMEOUT)
                .await
                .map(|n| format!("{n} broker(s)"))
                .map_err(|e| e.to_string());
            Some(Check {
                service: format!("kafka {}", pipeline.kafka.brokers),
                result,
            })
        },
        async {
            let result = match pipeline.lake.open() {
                Ok(lake) => within_timeout(lake.probe())
                    .await
                    .map(|()| "reachable".into()),
                Err(e) => Err(e.to_string()),
            };
            Some(Check {
                service: format!("lake {}", pipeline.lake.uri),
                result,
            })
        },
        async {
            (!pipeline.load.is_empty()).then_some(())?;
            let url = pipeline.postgres_url.as_deref();
            let result = within_timeout(warehouse::probe(url, &pipeline.postgres.url_env))
                .await
                .map(|version| version.split(',').next().unwrap_or_default().to_string());
            Some(Check {
                service: format!("postgres (${})", pipeline.postgres.url_env),
                result,
            })
        },
    );
    let checks: Vec<Check> = [kafka, lake, postgres].into_iter().flatten().collect();
    for check in &checks {
        match &check.result {
            Ok(detail) => println!("  ok    {}: {detail}", check.service),
            Err(message) => println!("  FAIL  {}: {message}", check.service),
        }
    }
    let down: Vec<&str> = checks
        .iter()
        .filter(|c| c.result.is_err())
        .map(|c| c.service.as_str())
        .collect();
    if down.is_empty() {
        println!("pipeline is valid and every service answers");
        Ok(())
    } else {
        Err(Error::unavailable(
            down.join(", "),
            "did not answer (see above)",
        ))
    }
}
