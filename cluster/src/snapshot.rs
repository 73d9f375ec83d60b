//! A Delta table as the exact Parquet files of one snapshot, for plans that leave the process.
//!
//! delta-rs serializes its table provider but not its scan node (its physical codec only knows
//! the retired `DeltaScan`), so a Delta scan cannot be shipped to an executor. lakectl reads
//! the Delta log itself and hands the plan the snapshot's files — paths, sizes and partition
//! values — as a plain Parquet scan, which DataFusion's own codec serializes. Every executor
//! then reads the same version, never a folder listing (which would include files a later
//! commit removed). The log stays with lakectl; only data files travel.

use std::sync::Arc;

use arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use deltalake::DeltaTable;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One data file of the snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// From the object store's root (the bucket, or `/` for local files).
    pub path: String,
    pub size: u64,
    /// The file's value of each partition column, in [`SnapshotTable::partition_columns`]
    /// order, as the Delta log writes them.
    pub partition_values: Vec<Option<String>>,
}

/// What travels in a plan: the store, the partition columns and the files. The schema travels
/// beside it (the codec gets it back from DataFusion).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wire {
    store: String,
    partition_columns: Vec<String>,
    files: Vec<SnapshotFile>,
}

#[derive(Debug, Clone)]
pub struct SnapshotTable {
    wire: Wire,
    /// Data columns first, then the partition columns (where a Parquet scan puts them).
    schema: SchemaRef,
}

impl SnapshotTable {
    /// The files of `table`'s loaded snapshot.
    pub fn of(table: &DeltaTable) -> Result<SnapshotTable> {
        let snapshot = table.snapshot()?;
        let metadata_columns = snapshot.metadata().partition_columns().to_vec();
        let delta_schema = snapshot.snapshot().arrow_schema();
        let root = table.log_store().root_url().clone();
        let store = format!("{}://{}/", root.scheme(), root.host_str().unwrap_or(""));
        let prefix = root.path().trim_matches('/').to_string();
        let files = snapshot
            .log_data()
            .iter()
            .map(|f| {
                let values = f.partition_values_map();
                SnapshotFile {
                    path: [prefix.as_str(), f.object_store_path().as_ref()]
                        .iter()
                        .filter(|p| !p.is_empty())
                        .copied()
                        .collect::<Vec<_>>()
                        .join("/"),
                    size: f.size().max(0) as u64,
                    partition_values: metadata_columns
                        .iter()
                        .map(|c| values.get(c).cloned().flatten())
                        .collect(),
                }
            })
            .collect();
        let wire = Wire {
            store,
            partition_columns: metadata_columns,
            files,
        };
        let schema = scan_order(&delta_schema, &wire.partition_columns);
        Ok(SnapshotTable { wire, schema })
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec(&self.wire)?)
    }

    pub(crate) fn decode(buf: &[u8], schema: SchemaRef) -> Result<SnapshotTable> {
        Ok(SnapshotTable {
            wire: serde_json::from_slice(buf)?,
            schema,
        })
    }

    fn partition_fields(&self) -> Vec<FieldRef> {
        let data = self.schema.fields().len() - self.wire.partition_columns.len();
        self.schema.fields()[data..].to_vec()
    }
}

/// `schema` with the partition columns moved to the end, in the log's order.
fn scan_order(schema: &Schema, partition_columns: &[String]) -> SchemaRef {
    let data = schema
        .fields()
        .iter()
        .filter(|f| !partition_columns.contains(f.name()));
    let partitions = partition_columns
        .iter()
        .filter_map(|c| schema.field_with_name(c).ok());
    Arc::new(Schema::new(
        data.map(|f| f.as_ref().clone())
            .chain(partitions.cloned())
            .map(|f: Field| f.with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let partition_fields = self.partition_fields();
        let data_fields =
            &self.schema.fields()[..self.schema.fields().len() - partition_fields.len()];
        let file_schema = Arc::new(Schema::new(data_fields.to_vec()));
        let mut files = Vec::with_capacity(self.wire.files.len());
        for f in &self.wire.files {
            let mut file =
                datafusion::datasource::listing::PartitionedFile::new(f.path.clone(), f.size);
            file.partition_values = partition_fields
                .iter()
                .zip(&f.partition_values)
                .map(|(field, value)| match value {
                    Some(v) => ScalarValue::try_from_string(v.clone(), field.data_type()),
                    None => ScalarValue::try_from(field.data_type()),
                })
                .collect::<datafusion::error::Result<_>>()?;
            files.push(file);
        }
        // As many groups as the session runs partitions, so the scan spreads over the cluster.
        let groups = state.config().target_partitions().max(1);
        let per_group = files.len().div_ceil(groups).max(1);
        let file_groups: Vec<FileGroup> = files
            .chunks(per_group)
            .map(|c| FileGroup::new(c.to_vec()))
            .collect();
        let source = ParquetSource::new(
            TableSchema::builder(file_schema)
                .with_table_partition_cols(partition_fields)
                .build(),
        );
        let config =
            FileScanConfigBuilder::new(ObjectStoreUrl::parse(&self.wire.store)?, Arc::new(source))
                .with_file_groups(file_groups)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

impl From<deltalake::DeltaTableError> for Error {
    fn from(e: deltalake::DeltaTableError) -> Error {
        Error::Delta(e.to_string())
    }
}
