//! Step 1: each bronze record's JSON value into the declared schema, on every core.

use std::sync::Arc;

use arrow::array::{Array, AsArray, BinaryArray, BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::Schema;
use lakehouse_core::schema::{ColumnType, RecordParser};
use lakehouse_core::{Error, Result};

use super::increment::{origin_at, BronzeRows, Quarantined};
use super::RECORD_LINEAGE;

/// Step 1: types every record; the ones that cannot be typed are returned for quarantine.
pub(super) fn records(
    bronze: &BronzeRows,
    fields: &[(String, ColumnType)],
) -> Result<(RecordBatch, Vec<Quarantined>)> {
    if bronze.batches.is_empty() {
        return Err(Error::Internal("parse called without bronze rows".into()));
    }
    // JSON parsing is most of silver's CPU: one thread per core, each on a run of batches,
    // results joined in order.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = bronze.batches.len().div_ceil(threads);
    let parts: Vec<Result<(RecordBatch, Vec<Quarantined>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = bronze
            .batches
            .chunks(per_thread)
            .map(|batches| scope.spawn(move || parse_batches(batches, fields)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a parse thread panicked"))
            .collect()
    });
    let mut typed = Vec::with_capacity(parts.len());
    let mut bad = Vec::new();
    for part in parts {
        let (batch, part_bad) = part?;
        typed.push(batch);
        bad.extend(part_bad);
    }
    Ok((concat_batches(&typed[0].schema(), &typed)?, bad))
}

/// [`records`] for a run of bronze batches: the typed rows with their lineage, and the records
/// that could not be typed.
fn parse_batches(
    batches: &[RecordBatch],
    fields: &[(String, ColumnType)],
) -> Result<(RecordBatch, Vec<Quarantined>)> {
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let mut parser = RecordParser::new(fields, rows);
    let mut kept: Vec<RecordBatch> = Vec::new();
    let mut bad = Vec::new();
    for batch in batches {
        let values: &BinaryArray = batch
            .column_by_name("value")
            .expect("bronze value")
            .as_binary();
        let mut ok = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let result = if values.is_null(row) {
                Err("the record has no value (a tombstone); deletes are not supported".to_string())
            } else {
                parser.push(values.value(row))
            };
            ok.push(result.is_ok());
            if let Err(error) = result {
                bad.push(Quarantined {
                    origin: origin_at(batch, row),
                    rule: "parse".into(),
                    error,
                });
            }
        }
        let indices = RECORD_LINEAGE
            .iter()
            .map(|c| batch.schema().index_of(c))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let lineage = batch.project(&indices)?;
        kept.push(filter_record_batch(&lineage, &BooleanArray::from(ok))?);
    }
    let lineage_schema = kept[0].schema();
    let lineage = concat_batches(&lineage_schema, &kept)?;
    let mut schema_fields = RecordParser::arrow_fields(fields);
    schema_fields.extend(lineage_schema.fields().iter().map(|f| f.as_ref().clone()));
    let mut columns = parser.finish();
    columns.extend(lineage.columns().iter().cloned());
    Ok((
        RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), columns)?,
        bad,
    ))
}
