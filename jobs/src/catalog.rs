//! The pipeline's Delta tables as a DataFusion catalog: `bronze.<t>`, `silver.<t>`,
//! `quarantine.<t>`, `gold.<t>`, `window.<t>` and lakectl's own `_lakectl.runs` and `_lakectl.quality`, for
//! gold SQL and `lakectl query`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::catalog::MemorySchemaProvider;
use datafusion::prelude::SessionContext;
use lakehouse_core::quality::QUALITY_TABLE;
use lakehouse_core::run_log::RUNS_TABLE;
use lakehouse_core::{Error, Lake, Layer, Pipeline, Result};

/// Every table the pipeline declares, with the layer it lives in.
pub fn pipeline_tables(pipeline: &Pipeline) -> Vec<(Layer, String)> {
    let mut tables: Vec<(Layer, String)> = Vec::new();
    tables.extend(pipeline.bronze.keys().map(|t| (Layer::Bronze, t.clone())));
    tables.extend(pipeline.silver.keys().map(|t| (Layer::Silver, t.clone())));
    tables.extend(
        pipeline
            .silver
            .keys()
            .map(|t| (Layer::Quarantine, t.clone())),
    );
    tables.extend(pipeline.gold.keys().map(|t| (Layer::Gold, t.clone())));
    tables.extend(pipeline.window.keys().map(|t| (Layer::Window, t.clone())));
    tables.extend(
        pipeline
            .window
            .keys()
            .map(|t| (Layer::Quarantine, t.clone())),
    );
    tables.push((Layer::System, RUNS_TABLE.to_string()));
    tables.push((Layer::System, QUALITY_TABLE.to_string()));
    tables
}

/// Registers each of `tables` that exists as `<layer folder>.<table>`; returns the versions
/// registered, by that name.
pub async fn register(
    ctx: &SessionContext,
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
        ctx.register_table(qualified.as_str(), table.table_provider().await?)?;
    }
    Ok(versions)
}

/// `lakectl query SQL`: runs SQL over the pipeline's tables and prints the result.
pub async fn query(pipeline: &Pipeline, sql: &str) -> Result<()> {
    let ctx = lakehouse_core::sql::context();
    let lake = Lake::from_config(&pipeline.lake)?;
    let available = register(&ctx, &lake, &pipeline_tables(pipeline)).await?;
    let df = lakehouse_core::sql::read_only(&ctx, sql)
        .await
        .map_err(|e| match e {
            Error::DataFusion(e) => Error::Input(format!(
                "the query does not plan: {e}\ntables: {}",
                available.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            refused => refused,
        })?;
    let batches = df.collect().await?;
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    Ok(())
}
