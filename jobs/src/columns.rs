//! Column shapes the job types share: UTC timestamps, the lake's quarantine tables, and a
//! batch with one more column.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use lakehouse_core::Result;

/// The quarantine table: the raw record, where it came from, and why it is here.
pub(crate) fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("_bronze_version", DataType::Int64, false),
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new("_kafka_ts", timestamp_type(), true),
        // Lossy only for values that are not UTF-8; bronze keeps the exact bytes.
        Field::new("raw_value", DataType::Utf8, true),
        Field::new("rule", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("_quarantined_at", timestamp_type(), false),
    ]))
}

pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `batch` with one more column at the end.
pub(crate) fn with_column(
    batch: &RecordBatch,
    field: Field,
    column: ArrayRef,
) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns = batch.columns().to_vec();
    fields.push(field);
    columns.push(column);
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}
