//! Step 6: the commits — quarantine, then silver (an append or a MERGE by key).

use std::future::IntoFuture;

use arrow::array::{AsArray, Int64Array, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::Int64Type;
use datafusion::logical_expr::{col, lit};
use datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use lakehouse_core::config::OnExistingKey;
use lakehouse_core::metrics::timed_commit;
use lakehouse_core::storage::write_with_txns;
use lakehouse_core::{lookup, Layer, Result};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use tracing::debug;

use super::increment::{BronzeRows, Increment, Quarantined};
use super::{txn_app_id, SilverJob};

impl SilverJob {
    /// Writes the quarantined records of this increment that a previous, interrupted attempt
    /// did not already write.
    pub(super) async fn write_quarantine(
        &self,
        records: &[Quarantined],
        bronze_rows: &BronzeRows,
        increment: &Increment,
        overwrite: bool,
    ) -> Result<()> {
        let table = self
            .lake
            .table_or_new(Layer::Quarantine, &self.table)
            .await?;
        let already = if overwrite {
            None
        } else {
            self.lake
                .txn_version(&table, &txn_app_id(&self.table))
                .await?
        };
        let batch = bronze_rows.quarantine_batch(records, &self.run_id)?;
        let batch = match already {
            Some(v) => {
                let versions = batch.column(0).as_primitive::<Int64Type>();
                let fresh = arrow::compute::kernels::cmp::gt(versions, &Int64Array::new_scalar(v))?;
                filter_record_batch(&batch, &fresh)?
            }
            None => batch,
        };
        // The first unit creates the table even when empty, so readers always find it.
        if batch.num_rows() == 0 && !overwrite && table.version().is_some() {
            return Ok(());
        }
        let mode = if overwrite {
            SaveMode::Overwrite
        } else {
            SaveMode::Append
        };
        self.commit(table, batch, increment.to, mode, &[]).await?;
        Ok(())
    }

    /// A write carrying this job's `txn` at `bronze_version`, creating the table if needed,
    /// partitioned by `partition_by` (silver's own setting; the quarantine is not partitioned).
    pub(super) async fn commit(
        &self,
        table: DeltaTable,
        batch: RecordBatch,
        bronze_version: i64,
        mode: SaveMode,
        partition_by: &[String],
    ) -> Result<DeltaTable> {
        write_with_txns(
            table,
            vec![batch],
            mode,
            self.txns(bronze_version),
            partition_by,
            self.upkeep,
            Some(self.writer_properties()),
        )
        .await
    }

    /// Bloom filters on the columns silver looks values up in, so a lookup skips the row
    /// groups that cannot hold them.
    fn writer_properties(&self) -> WriterProperties {
        lookup::bloom_writer_properties(&self.settings.lookup_columns(), Compression::SNAPPY)
    }

    /// The `txn` actions of a commit covering bronze up to `bronze_version`: that version,
    /// and the topic's partition count when bronze recorded it (for the windows).
    fn txns(&self, bronze_version: i64) -> Vec<(String, i64)> {
        let mut txns = vec![(txn_app_id(&self.table), bronze_version)];
        if let Some(n) = self.partitions {
            txns.push((super::partitions_app_id(&self.table), n));
        }
        txns
    }

    fn commit_properties(&self, bronze_version: i64) -> CommitProperties {
        let txns = (self.txns(bronze_version).into_iter())
            .map(|(app_id, version)| Transaction::new(app_id, version))
            .collect();
        CommitProperties::default().with_application_transactions(txns)
    }

    /// Step 6, silver part: MERGE by key; a row is replaced only by a record not older.
    pub(super) async fn merge(
        &self,
        silver: DeltaTable,
        rows: RecordBatch,
        bronze_version: i64,
    ) -> Result<DeltaTable> {
        if silver.version().is_none()
            || rows.num_rows() == 0
            || self.settings.on_existing_key == OnExistingKey::Keep
            || self.existing_key_rows(&silver, &rows).await?.is_empty()
        {
            // Nothing to match (`keep` left out the keys silver holds): an append is the same
            // MERGE, without reading the table.
            return self
                .commit(
                    silver,
                    rows,
                    bronze_version,
                    SaveMode::Append,
                    &self.settings.partition_by,
                )
                .await;
        }
        let declared = silver.snapshot()?.snapshot().arrow_schema();
        let rows = lakehouse_core::delta_types::as_delta_types(rows, Some(&declared))?;
        let ctx = SessionContext::new();
        let columns: Vec<String> = rows
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let source = ctx.read_batch(rows)?;
        let side = |alias: &str, c: &str| col(datafusion::common::Column::new(Some(alias), c));
        let same_key = self
            .settings
            .key
            .iter()
            .map(|k| side("target", k).eq(side("source", k)))
            .reduce(|a, b| a.and(b))
            .expect("keys are checked to be non-empty");
        let not_older = datafusion::functions::expr_fn::coalesce(vec![
            side("source", "_kafka_ts").gt_eq(side("target", "_kafka_ts")),
            lit(true),
        ]);
        let merge = silver
            .merge(source, same_key)
            .with_source_alias("source")
            .with_target_alias("target")
            .with_commit_properties(self.commit_properties(bronze_version))
            .with_writer_properties(self.writer_properties())
            .when_matched_update(|update| {
                columns.iter().fold(update.predicate(not_older), |u, c| {
                    u.update(
                        datafusion::common::Column::new_unqualified(c),
                        side("source", c),
                    )
                })
            })?
            .when_not_matched_insert(|insert| {
                columns.iter().fold(insert, |i, c| {
                    i.set(
                        datafusion::common::Column::new_unqualified(c),
                        side("source", c),
                    )
                })
            })?;
        let (table, metrics) = timed_commit(merge.into_future()).await?;
        debug!(
            inserted = metrics.num_target_rows_inserted,
            updated = metrics.num_target_rows_updated,
            "silver merge"
        );
        Ok(table)
    }

    /// Commits no rows, recording `bronze_version`: `Append` advances the `txn` version for
    /// increments that added no rows, `Overwrite` empties silver (a refresh over them).
    pub(super) async fn commit_no_rows(
        &self,
        silver: DeltaTable,
        bronze_version: i64,
        mode: SaveMode,
    ) -> Result<DeltaTable> {
        if silver.version().is_none() {
            // No table and nothing to write: the next unit looks at these commits again.
            return Ok(silver);
        }
        let schema = silver.snapshot()?.snapshot().arrow_schema();
        self.commit(
            silver,
            RecordBatch::new_empty(schema),
            bronze_version,
            mode,
            &self.settings.partition_by,
        )
        .await
    }
}
