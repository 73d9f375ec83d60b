//! Step 1: each bronze record's value into typed columns: JSON by the declared schema (on
//! every core), Avro by its writer schema resolved to the reader schema.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{Field, Schema};

use lakehouse_core::avro::{schema_id, AvroDecoder};
use lakehouse_core::registry::SchemaRegistry;
use lakehouse_core::schema::{ColumnType, RecordParser, TOMBSTONE};
use lakehouse_core::{Error, Result};

use super::increment::{origin_at, values, BronzeRows, Quarantined};
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
        let values = values(batch);
        let mut ok = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let result = if values.is_null(row) {
                Err(TOMBSTONE.to_string())
            } else {
                parser.push(values.value(row))
            };
            ok.push(result.is_ok());
            if let Err(error) = result {
                bad.push(parse_failure(batch, row, error));
            }
        }
        kept.push(lineage_of(batch, ok)?);
    }
    let typed = typed_with_lineage(RecordParser::arrow_fields(fields), parser.finish(), &kept)?;
    Ok((typed, bad))
}

/// Step 1 for Avro (`format = "avro"`): every record decoded into the reader schema's
/// columns; the ones that cannot be (no framing, an unknown or unreadable writer schema, a
/// body that does not decode) are returned for quarantine.
pub(super) fn avro_records(
    bronze: &BronzeRows,
    decoder: &AvroDecoder,
) -> Result<(RecordBatch, Vec<Quarantined>)> {
    let decoded = decoder.decode(bronze.batches.iter().flat_map(|b| values(b).iter()))?;
    // Record number → (batch, row).
    let mut ok: Vec<Vec<bool>> = (bronze.batches.iter())
        .map(|b| vec![true; b.num_rows()])
        .collect();
    let starts: Vec<usize> = (bronze.batches.iter())
        .scan(0, |start, b| {
            let this = *start;
            *start += b.num_rows();
            Some(this)
        })
        .collect();
    let mut bad = Vec::with_capacity(decoded.bad.len());
    for (i, error) in decoded.bad {
        let b = starts.partition_point(|&s| s <= i) - 1;
        ok[b][i - starts[b]] = false;
        bad.push(parse_failure(&bronze.batches[b], i - starts[b], error));
    }
    let kept = (bronze.batches.iter().zip(ok))
        .map(|(batch, ok)| lineage_of(batch, ok))
        .collect::<Result<Vec<_>>>()?;
    let fields = decoder
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let typed = typed_with_lineage(fields, decoded.batch.columns().to_vec(), &kept)?;
    Ok((typed, bad))
}

fn parse_failure(batch: &RecordBatch, row: usize, error: String) -> Quarantined {
    Quarantined {
        origin: origin_at(batch, row),
        rule: "parse".into(),
        error,
    }
}

/// The lineage columns of the rows of `batch` that `ok` keeps.
fn lineage_of(batch: &RecordBatch, ok: Vec<bool>) -> Result<RecordBatch> {
    let indices = RECORD_LINEAGE
        .iter()
        .map(|c| batch.schema().index_of(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let lineage = batch.project(&indices)?;
    Ok(filter_record_batch(&lineage, &BooleanArray::from(ok))?)
}

/// The typed columns followed by the lineage of the same rows.
fn typed_with_lineage(
    mut fields: Vec<Field>,
    mut columns: Vec<ArrayRef>,
    lineage: &[RecordBatch],
) -> Result<RecordBatch> {
    let lineage_schema = lineage[0].schema();
    let lineage = concat_batches(&lineage_schema, lineage)?;
    fields.extend(lineage_schema.fields().iter().map(|f| f.as_ref().clone()));
    columns.extend(lineage.columns().iter().cloned());
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Where Avro records' schemas come from: the registry, and the subject whose latest version
/// is the reader schema.
pub(super) struct AvroSource {
    pub(super) registry: SchemaRegistry,
    pub(super) subject: String,
}

impl AvroSource {
    /// A decoder for this unit's records: the subject's latest version as the reader schema
    /// (so a field a new writer version adds becomes a column), and the writer schema of every
    /// id the records carry (cached by the client: ids never change).
    pub(super) async fn decoder(&self, bronze: &BronzeRows) -> Result<AvroDecoder> {
        let mut ids = BTreeSet::new();
        for batch in &bronze.batches {
            ids.extend(
                values(batch)
                    .iter()
                    .flatten()
                    .filter_map(|v| schema_id(v).ok()),
            );
        }
        let reader = self.registry.latest(&self.subject).await?.ok_or_else(|| {
            Error::Input(format!(
                "subject {:?} has no schema in the schema registry at {}: register the \
                 records' schema there (Confluent's serializers do it under <topic>-value)",
                self.subject,
                self.registry.url()
            ))
        })?;
        // Looked up once a unit each; a record whose id has no usable schema is quarantined
        // (a registry that does not answer fails the unit, to be retried).
        let mut writers = BTreeMap::new();
        for id in ids {
            let writer = if id > i32::MAX as u32 {
                Err(format!(
                    "schema id {id} is past the 31-bit ids a registry gives"
                ))
            } else {
                match self.registry.schema_by_id(id).await {
                    Ok(Some(schema)) => Ok(schema),
                    Ok(None) => Err(format!("schema id {id} is not in the schema registry")),
                    Err(Error::Input(why)) => Err(format!("schema id {id}: {why}")),
                    Err(e) => return Err(e),
                }
            };
            writers.insert(id, writer);
        }
        AvroDecoder::new(&reader.schema, &writers)
    }
}
