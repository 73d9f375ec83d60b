//! The pipeline's Delta tables as a DataFusion catalog: `bronze.<t>`, `silver.<t>`,
//! `quarantine.<t>`, `gold.<t>`, `window.<t>` and lakectl's own `_lakectl.runs` and
//! `_lakectl.quality`, for gold SQL and `lakectl query`, on the engine the pipeline names: in
//! process, or a Ballista cluster (`[engine] url`), where each table travels as the data files
//! of the snapshot read here (`cluster::SnapshotTable`).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::catalog::{MemorySchemaProvider, TableProvider};
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use lakehouse_core::quality::QUALITY_TABLE;
use lakehouse_core::run_log::RUNS_TABLE;
use lakehouse_core::{Error, Lake, Layer, Pipeline, Result};

/// Where read-only SQL runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    InProcess,
    /// The scheduler's `ballista://host:port`, and how long a query may take there.
    Cluster(String, std::time::Duration),
}

impl Engine {
    pub fn of(pipeline: &Pipeline) -> Engine {
        match &pipeline.engine.url {
            Some(url) => Engine::Cluster(url.clone(), pipeline.engine.query_timeout.0),
            None => Engine::InProcess,
        }
    }

    /// A session for the pipeline's SQL, with the same functions on either engine.
    pub async fn context(&self) -> Result<SessionContext> {
        match self {
            Engine::InProcess => Ok(lakehouse_core::sql::context()),
            Engine::Cluster(url, _) => cluster::remote_context(url)
                .await
                .map_err(|e| cluster_error(url, e)),
        }
    }

    /// A Delta table as this engine reads it.
    pub async fn provider(&self, table: &deltalake::DeltaTable) -> Result<Arc<dyn TableProvider>> {
        match self {
            Engine::InProcess => Ok(table.table_provider().await?),
            Engine::Cluster(url, _) => Ok(Arc::new(
                cluster::SnapshotTable::of(table).map_err(|e| cluster_error(url, e))?,
            )),
        }
    }

    /// Runs `df` to the end: on the cluster within its query timeout, else a service error
    /// that says so (the caller has written nothing yet).
    pub async fn collect(&self, df: DataFrame) -> Result<Vec<RecordBatch>> {
        match self {
            Engine::InProcess => Ok(df.collect().await?),
            Engine::Cluster(url, limit) => match tokio::time::timeout(*limit, df.collect()).await {
                Ok(Ok(batches)) => Ok(batches),
                // Ballista flattens its gRPC errors into text: one that failed to reach the
                // scheduler (or lost it) is the cluster's fault, and worth a retry.
                Ok(Err(DataFusionError::Execution(message))) if message.contains("transport") => {
                    Err(Error::unavailable(
                        format!("ballista cluster at {url}"),
                        message,
                    ))
                }
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err(Error::unavailable(
                    format!("ballista cluster at {url}"),
                    format!(
                        "the query did not finish within engine.query_timeout ({} s); an \
                         executor lost mid-query can leave the job waiting (see the \
                         scheduler's log); nothing was written",
                        limit.as_secs()
                    ),
                )),
            },
        }
    }
}

/// A cluster error as whose fault it is: a bad URL is the user's, a cluster that does not
/// answer is a service's.
fn cluster_error(url: &str, e: cluster::Error) -> Error {
    match e {
        cluster::Error::Url { .. } => Error::Input(e.to_string()),
        cluster::Error::DataFusion(e) => Error::DataFusion(e),
        other => Error::unavailable(format!("ballista cluster at {url}"), other),
    }
}

/// Every table the pipeline's jobs write, with the layer it lives in, and lakectl's own logs.
pub fn pipeline_tables(pipeline: &Pipeline) -> Vec<(Layer, String)> {
    let mut tables: Vec<(Layer, String)> = crate::kind::kinds()
        .iter()
        .flat_map(|kind| {
            (kind.declared)(pipeline)
                .into_iter()
                .flat_map(|t| (kind.writes)(&t))
        })
        .collect();
    tables.push((Layer::System, RUNS_TABLE.to_string()));
    tables.push((Layer::System, QUALITY_TABLE.to_string()));
    tables
}

/// Registers each of `tables` that exists as `<layer folder>.<table>`; returns the versions
/// registered, by that name.
pub async fn register(
    ctx: &SessionContext,
    engine: &Engine,
    lake: &Lake,
    tables: &[(Layer, String)],
) -> Result<BTreeMap<String, i64>> {
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| Error::Internal("DataFusion has no default catalog".into()))?;
    let mut versions = BTreeMap::new();
    for (layer, name) in tables {
        let Some(table) = lake.load_table(*layer, name).await? else {
            continue;
        };
        if catalog.schema(layer.folder()).is_none() {
            catalog.register_schema(layer.folder(), Arc::new(MemorySchemaProvider::new()))?;
        }
        let qualified = format!("{}.{name}", layer.folder());
        versions.insert(qualified.clone(), table.version().map_or(-1, |v| v as i64));
        ctx.register_table(qualified.as_str(), engine.provider(&table).await?)?;
    }
    Ok(versions)
}

/// `lakectl query SQL`: runs SQL over the pipeline's tables and prints the result.
pub async fn query(pipeline: &Pipeline, sql: &str) -> Result<()> {
    let engine = Engine::of(pipeline);
    let ctx = engine.context().await?;
    let lake = pipeline.lake.open()?;
    let available = register(&ctx, &engine, &lake, &pipeline_tables(pipeline)).await?;
    let df = lakehouse_core::sql::read_only(&ctx, sql)
        .await
        .map_err(|e| match e {
            Error::DataFusion(e) => Error::Input(format!(
                "the query does not plan: {e}\ntables: {}",
                available.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            refused => refused,
        })?;
    let batches = engine.collect(df).await?;
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    Ok(())
}
