//! `lakectl run gold`: DataFusion SQL over silver and gold tables → `<lake>/gold/<table>`,
//! rebuilt only when an input moved.
//!
//! The SQL names its inputs `<layer>.<table>`: `silver.books`, `gold.sales_by_genre`,
//! `quarantine.books`, `_lakectl.quality`. Each gold commit overwrites the
//! table and carries one `txn` action per input (app id `lakectl-gold-<table>:<layer>.<input>`,
//! version = the input version it read); a run whose inputs still have those versions does
//! nothing. A crash before the commit leaves the previous build; after it, the next run sees
//! the versions recorded.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use lakehouse_core::storage::{write_with_txns, Upkeep};
use lakehouse_core::{Error, Job, Lake, Layer, Mode, Pipeline, Result, UnitReport};
use tokio_util::sync::CancellationToken;

use crate::kind::JobKind;
use crate::stage;
use tracing::{info, warn};

/// The app id of the `txn` action recording the version of `input` (`silver.books`).
pub fn txn_app_id(table: &str, input: &str) -> String {
    format!("lakectl-gold-{table}:{input}")
}

pub struct GoldJob {
    table: String,
    sql: String,
    partition_by: Vec<String>,
    lake: Lake,
    /// In process, or the Ballista cluster `[engine] url` names.
    engine: crate::catalog::Engine,
    /// Tables the SQL may read: every table of the pipeline but itself (silver, quarantine,
    /// other gold tables, bronze, and lakectl's `_lakectl.runs` and `_lakectl.quality`).
    candidates: Vec<(Layer, String)>,
    upkeep: Upkeep,
    /// `--full-refresh`: rebuild even when no input moved.
    force: bool,
}

impl GoldJob {
    pub fn new(pipeline: &Pipeline, table: &str, force: bool) -> Result<GoldJob> {
        let settings = crate::stage::settings(pipeline, "gold", &pipeline.gold, table)?;
        let candidates = crate::catalog::pipeline_tables(pipeline)
            .into_iter()
            .filter(|(layer, name)| !(*layer == Layer::Gold && name == table))
            .collect();
        Ok(GoldJob {
            table: table.to_string(),
            sql: settings.sql.clone(),
            partition_by: settings.partition_by.clone(),
            lake: pipeline.lake.open()?,
            engine: crate::catalog::Engine::of(pipeline),
            candidates,
            upkeep: pipeline.lake.upkeep(),
            force,
        })
    }

    /// The `<layer>.<table>` names the SQL reads, subqueries included (CTE names are not).
    fn named_tables(
        &self,
        ctx: &SessionContext,
    ) -> datafusion::error::Result<std::collections::HashSet<String>> {
        let state = ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(&self.sql, &dialect)?;
        Ok(state
            .resolve_table_references(&statement)?
            .iter()
            .map(|name| match name.schema() {
                Some(schema) => format!("{schema}.{}", name.table()),
                None => name.table().to_string(),
            })
            .collect())
    }

    async fn build(&self) -> Result<UnitReport> {
        let ctx = self.engine.context().await?;
        let does_not_plan = |e: datafusion::error::DataFusionError| {
            let tables: Vec<String> = self
                .candidates
                .iter()
                .map(|(layer, name)| format!("{}.{name}", layer.folder()))
                .collect();
            Error::Input(format!(
                "gold.{}: the SQL does not plan: {e} (inputs are named <layer>.<table>; this \
                 pipeline has {})",
                self.table,
                tables.join(", ")
            ))
        };
        // Only the tables the SQL names are opened: each is a Delta log to read.
        let named = self.named_tables(&ctx).map_err(does_not_plan)?;
        let wanted: Vec<(Layer, String)> = self
            .candidates
            .iter()
            .filter(|(layer, name)| named.contains(&format!("{}.{name}", layer.folder())))
            .cloned()
            .collect();
        let inputs: BTreeMap<String, i64> =
            crate::catalog::register(&ctx, &self.engine, &self.lake, &wanted).await?;
        // A declared input no stage has written yet (gold running before silver, continuous
        // gold started with the rest): nothing to build until it exists.
        if let Some((layer, name)) = (wanted.iter())
            .find(|(layer, name)| !inputs.contains_key(&format!("{}.{name}", layer.folder())))
        {
            warn!(table = %self.table, input = %format!("{}.{name}", layer.folder()), "an input table does not exist yet: nothing to build");
            return Ok(UnitReport {
                caught_up: true,
                ..Default::default()
            });
        }
        let df = lakehouse_core::sql::read_only(&ctx, &self.sql)
            .await
            .map_err(|e| match e {
                Error::DataFusion(e) => does_not_plan(e),
                refused => Error::Input(format!("gold.{}: {refused}", self.table)),
            })?;
        if let Some(c) =
            (self.partition_by.iter()).find(|c| df.schema().as_arrow().index_of(c).is_err())
        {
            return Err(Error::Input(format!(
                "gold.{}.partition_by: column {c:?} is not in the SQL's result",
                self.table
            )));
        }
        let gold = self.lake.table_or_new(Layer::Gold, &self.table).await?;
        if gold.version().is_some() && !self.force {
            let mut unchanged = true;
            for (input, version) in &inputs {
                let recorded = self
                    .lake
                    .txn_version(&gold, &txn_app_id(&self.table, input))
                    .await?;
                unchanged &= recorded == Some(*version);
            }
            if unchanged {
                info!(table = %self.table, "no input moved: nothing to rebuild");
                return Ok(UnitReport {
                    caught_up: true,
                    ..Default::default()
                });
            }
        }
        let schema = Arc::new(df.schema().as_arrow().clone());
        let mut batches = self.engine.collect(df).await?;
        if batches.is_empty() {
            // No rows is a result too: the table holds none, with the SQL's columns.
            batches.push(RecordBatch::new_empty(schema));
        }
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let txns = inputs
            .iter()
            .map(|(input, version)| (txn_app_id(&self.table, input), *version))
            .collect();
        let written = write_with_txns(
            gold,
            batches,
            SaveMode::Overwrite,
            txns,
            &self.partition_by,
            self.upkeep,
            None,
        )
        .await?;
        Ok(UnitReport {
            rows_in: rows,
            rows_out: rows,
            version_read: None,
            version_written: written.version().map(|v| v as i64),
            caught_up: true,
            ..Default::default()
        })
    }
}

#[async_trait]
impl Job for GoldJob {
    fn name(&self) -> String {
        format!("gold:{}", self.table)
    }

    async fn run_unit(&mut self, _cancel: &CancellationToken) -> Result<UnitReport> {
        let report = self.build().await?;
        self.force = false;
        Ok(report)
    }
}

/// `lakectl run gold`.
pub const KIND: JobKind = JobKind {
    name: "gold",
    summary: "SQL over silver and gold tables -> <lake>/gold, rebuilt only when an input moved",
    default_mode: Mode::Once,
    full_refresh: true,
    declared: |pipeline| pipeline.gold.keys().cloned().collect(),
    writes: |table| vec![(Layer::Gold, table.to_string())],
    run: |pipeline, tables, options| {
        Box::pin(run_tables(
            pipeline,
            tables,
            options.mode,
            options.full_refresh,
        ))
    },
};

/// `lakectl run gold [TABLE…]`: each table in turn on the shared runner.
pub async fn run_tables(
    pipeline: &Pipeline,
    tables: &[String],
    mode: Mode,
    full_refresh: bool,
) -> Result<()> {
    let names = stage::table_names(pipeline, "gold", pipeline.gold.keys(), tables)?;
    let make = |name: &str| GoldJob::new(pipeline, name, full_refresh);
    stage::run_each(pipeline, &names, mode, make, |_, result| {
        if let Ok(record) = result {
            println!(
                "{}: {} — {} rows written, table version {}",
                record.job,
                record.outcome.as_str(),
                record.rows_out,
                stage::version_or(record.last_version_written, "unchanged"),
            );
        }
    })
    .await
}
