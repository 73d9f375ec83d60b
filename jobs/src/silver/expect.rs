//! Step 5: the expectations, evaluated in one SQL pass over the unit's rows.

use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::concat_batches;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use lakehouse_core::quality::{evaluation_sql, pass_column};
use lakehouse_core::{lookup, Error, Result};

use super::{failing, SilverJob};

impl SilverJob {
    /// Step 5: every expectation's pass flags, next to the rows they judge; the rows an
    /// expectation's SQL cannot be computed for leave them, with that expectation's name.
    pub(super) async fn evaluate(
        &self,
        ctx: &SessionContext,
        rows: RecordBatch,
        silver: &DeltaTable,
    ) -> Result<(RecordBatch, Vec<BooleanArray>, Vec<(usize, String, String)>)> {
        let schema = rows.schema();
        let expectations = &self.settings.expect;
        if expectations.is_empty() {
            return Ok((rows, Vec::new(), Vec::new()));
        }
        let unique_columns = self.settings.unique_columns();
        let target = if !unique_columns.is_empty() && silver.version().is_some() {
            // Only the rows of silver holding one of this unit's values can be its duplicates.
            let probes: Vec<RecordBatch> = unique_columns
                .iter()
                .map(|c| Ok(rows.project(&[schema.index_of(c)?])?))
                .collect::<Result<_>>()?;
            let held = lookup::rows_matching(
                silver,
                &probes,
                &self.settings.lookup_columns(),
                &self.filters,
            )
            .await?
            .rows;
            ctx.register_table(
                "target",
                Arc::new(MemTable::try_new(held.schema(), vec![vec![held]])?),
            )?;
            Some("target")
        } else {
            None
        };
        let sql = evaluation_sql(expectations, "rows", &self.settings.key, target);
        let (batches, failing) =
            failing::without_failing_rows(&rows, |batch| self.run_sql(ctx, &sql, batch)).await?;
        let mut uncomputable = Vec::new();
        for (row, error) in failing {
            let alone = rows.slice(row, 1);
            let mut culprit = "expectations".to_string();
            for e in expectations {
                let sql =
                    evaluation_sql(std::slice::from_ref(e), "rows", &self.settings.key, target);
                if self.run_sql(ctx, &sql, alone.clone()).await.is_err() {
                    culprit = e.name.clone();
                    break;
                }
            }
            uncomputable.push((row, culprit, error));
        }
        let all = match batches.first() {
            Some(b) => concat_batches(&b.schema(), &batches)?,
            None => return Err(Error::Internal("DataFusion returned no batches".into())),
        };
        let verdicts = (0..expectations.len())
            .map(|i| {
                all.column_by_name(&pass_column(i))
                    .expect("evaluation adds a pass column per expectation")
                    .as_boolean()
                    .clone()
            })
            .collect();
        let data: Vec<usize> = (0..schema.fields().len()).collect();
        Ok((all.project(&data)?, verdicts, uncomputable))
    }

    /// `sql` over `rows` as the table `rows`.
    async fn run_sql(
        &self,
        ctx: &SessionContext,
        sql: &str,
        rows: RecordBatch,
    ) -> Result<Vec<RecordBatch>> {
        ctx.deregister_table("rows")?;
        ctx.register_table(
            "rows",
            Arc::new(MemTable::try_new(rows.schema(), vec![vec![rows]])?),
        )?;
        let df = ctx.sql(sql).await.map_err(|e| self.expectation_error(e))?;
        super::collect_or_empty(&self.engine, df).await
    }

    fn expectation_error(&self, e: datafusion::error::DataFusionError) -> Error {
        Error::Input(format!(
            "{}: [silver.{}] expectations do not evaluate on the cleaned rows: {e}",
            self.settings_origin(),
            self.table
        ))
    }

    fn settings_origin(&self) -> String {
        self.sql
            .as_ref()
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| "the pipeline file".into())
    }
}
