//! Confluent-framed Avro records (magic byte 0, a 4-byte big-endian schema id, the Avro body)
//! into typed Arrow columns, with `arrow-avro`: each record is read by its writer schema and
//! resolved to one reader schema, so a unit's rows share one Arrow schema however many writer
//! versions it holds.
//!
//! One bad record is an error for that record alone, as for JSON: no framing, an unknown or
//! unresolvable schema id, a body that does not decode. A body that fails half way leaves
//! `arrow-avro`'s decoder holding part of a row, so the decoder is rebuilt and the rows since
//! its last flush decoded again (rare: only units with bad records pay for it).
//!
//! The Arrow types are the ones a Delta table stores, as the JSON path gives them: enums and
//! strings as `Utf8`, timestamps as UTC microseconds, list items named `element`, every
//! field nullable.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};

use crate::{Error, Result};

/// Bytes before the Avro body: the magic byte and the schema id.
const FRAME: usize = 5;
const ROWS_PER_BATCH: usize = 8192;

/// The schema id of a framed record, or why it is not one.
pub fn schema_id(record: &[u8]) -> std::result::Result<u32, String> {
    match record {
        [0, a, b, c, d, _rest @ ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(format!(
            "not Confluent-framed Avro: expected magic byte 0 and a 4-byte schema id, got {} \
             bytes starting {:02x?}",
            record.len(),
            &record[..record.len().min(FRAME)]
        )),
    }
}

/// Reads records written with any of `writers` (schema id → Avro schema JSON) as `reader`.
pub struct AvroDecoder {
    reader: String,
    /// Writer schemas that resolve to the reader.
    usable: BTreeMap<u32, String>,
    /// Why the other writer ids cannot be read.
    unusable: BTreeMap<u32, String>,
    schema: SchemaRef,
}

/// The rows decoded, and the records (by position in the input) that could not be.
pub struct Decoded {
    pub batch: RecordBatch,
    pub bad: Vec<(usize, String)>,
}

/// The id the reader schema is kept under as a writer schema of its own, so a decoder can be
/// built when no record's writer schema resolves to it. Registry ids are 31-bit: no record's.
const READER_ID: u32 = u32::MAX;

impl AvroDecoder {
    /// `reader`: the reader schema; `writers`: every schema id the records may carry, with its
    /// schema, or why there is none (an id the registry does not have, say).
    pub fn new(
        reader: &str,
        writers: &BTreeMap<u32, std::result::Result<String, String>>,
    ) -> Result<AvroDecoder> {
        let mut usable = BTreeMap::new();
        let mut unusable = BTreeMap::new();
        for (&id, writer) in writers {
            match writer {
                Err(why) => {
                    unusable.insert(id, why.clone());
                }
                Ok(_) if id == READER_ID => {
                    unusable.insert(id, format!("schema id {id} is not one a registry gives"));
                }
                Ok(schema) => {
                    match build(reader, [(id, schema.as_str())], 1) {
                        Ok(_) => {
                            usable.insert(id, schema.clone());
                        }
                        Err(e) => {
                            unusable.insert(
                            id,
                            format!("writer schema id {id} cannot be read as the table's schema: {e}"),
                        );
                        }
                    }
                }
            }
        }
        let probe = build(reader, writer_schemas(reader, &usable), ROWS_PER_BATCH)
            .map_err(|e| Error::Input(format!("the reader schema cannot be used: {e}")))?;
        Ok(AvroDecoder {
            reader: reader.to_string(),
            schema: table_schema(&probe.schema()),
            usable,
            unusable,
        })
    }

    /// The Arrow schema of the decoded rows.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn decoder(&self, rows_per_batch: usize) -> Result<Decoder> {
        build(
            &self.reader,
            writer_schemas(&self.reader, &self.usable),
            rows_per_batch,
        )
        .map_err(|e| Error::Internal(format!("an Avro decoder that built once failed: {e}")))
    }

    /// Decodes `records` in order; `None` is a record without a value.
    pub fn decode<'a>(
        &self,
        records: impl IntoIterator<Item = Option<&'a [u8]>>,
    ) -> Result<Decoded> {
        let records: Vec<Option<&[u8]>> = records.into_iter().collect();
        if let Some(decoded) = self.decode_in(&records, ROWS_PER_BATCH)? {
            return Ok(decoded);
        }
        // A value arrow-avro decodes but cannot build an array of (an enum index past its
        // symbols) fails the whole batch it is in: again one row per batch, to find its record.
        self.decode_in(&records, 1)?.ok_or_else(|| {
            Error::Internal("a one-row Avro batch failed without naming its record".into())
        })
    }

    /// Decodes `records` in batches of `rows_per_batch`; `None` when a batch of more than one
    /// row could not be built.
    fn decode_in(
        &self,
        records: &[Option<&[u8]>],
        rows_per_batch: usize,
    ) -> Result<Option<Decoded>> {
        let mut run = Run {
            decoder: self.decoder(rows_per_batch)?,
            schema: &self.schema,
            batches: Vec::new(),
            unflushed: 0,
            since_flush: Vec::new(),
            unbuildable: false,
        };
        let mut bad = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let Some(record) = *record else {
                bad.push((i, crate::schema::TOMBSTONE.into()));
                continue;
            };
            let checked = schema_id(record).and_then(|id| match self.unusable.get(&id) {
                Some(why) => Err(why.clone()),
                None if self.usable.contains_key(&id) => Ok(()),
                None => Err(format!("schema id {id} was not looked up (a bug)")),
            });
            if let Err(why) = checked {
                bad.push((i, why));
                continue;
            }
            if let Err(why) = run.push(record) {
                if run.unbuildable && rows_per_batch > 1 {
                    return Ok(None);
                }
                bad.push((i, format!("the Avro body does not decode: {why}")));
                // The decoder may hold part of this record: start again from the last flush.
                run.decoder = self.decoder(rows_per_batch)?;
                run.unflushed = 0;
                run.unbuildable = false;
                for good in std::mem::take(&mut run.since_flush) {
                    run.push(good).map_err(|e| {
                        Error::Internal(format!("a record decoded twice differently: {e}"))
                    })?;
                }
            }
        }
        if let Err(why) = run.flush() {
            return match rows_per_batch {
                1 => Err(Error::Internal(format!(
                    "an empty Avro batch could not be built: {why}"
                ))),
                _ => Ok(None),
            };
        }
        Ok(Some(Decoded {
            batch: concat_batches(&self.schema, &run.batches)?,
            bad,
        }))
    }
}

/// A decoder and the batches it has given so far, in the table's types.
struct Run<'a> {
    decoder: Decoder,
    schema: &'a SchemaRef,
    batches: Vec<RecordBatch>,
    /// Rows in the decoder not yet flushed. Counted here: the decoder's capacity drops to 0
    /// when a new writer schema waits for the batch to go out, so it does not tell.
    unflushed: usize,
    /// Records decoded since the last flush, to decode again after a rebuild.
    since_flush: Vec<&'a [u8]>,
    /// Whether the last flush decoded its rows but could not build their arrays.
    unbuildable: bool,
}

impl<'a> Run<'a> {
    /// Decodes one record as exactly one row.
    fn push(&mut self, record: &'a [u8]) -> std::result::Result<(), String> {
        let mut flushed = 0;
        let pushed = self.decode_one(record, &mut flushed);
        if pushed.is_err() {
            // A batch that went out in the middle of this record holds its first rows.
            self.drop_last_rows(flushed);
        }
        pushed
    }

    /// `flushed`: the rows of this record in batches flushed meanwhile.
    fn decode_one(
        &mut self,
        record: &'a [u8],
        flushed: &mut usize,
    ) -> std::result::Result<(), String> {
        let mut position = 0;
        while position < record.len() {
            let consumed = self
                .decoder
                .decode(&record[position..])
                .map_err(|e| e.to_string())?;
            position += consumed;
            if self.decoder.batch_is_full() {
                // Full, or a new writer schema waits for the old one's rows to go out.
                *flushed += self.flush()?;
            } else if consumed == 0 || position < record.len() {
                return Err("the record ends inside an Avro value or has bytes after it".into());
            }
        }
        let in_decoder = self.decoder.batch_size() - self.decoder.capacity();
        let rows = *flushed + in_decoder - self.unflushed;
        if rows != 1 {
            return Err(format!("the record holds {rows} Avro values, not one"));
        }
        self.unflushed = in_decoder;
        // A row already flushed (the batch filled on it) is safe from a rebuild.
        if in_decoder > 0 {
            self.since_flush.push(record);
        }
        Ok(())
    }

    fn drop_last_rows(&mut self, mut rows: usize) {
        while rows > 0 {
            let Some(last) = self.batches.pop() else {
                return;
            };
            let keep = last.num_rows().saturating_sub(rows);
            rows -= last.num_rows() - keep;
            if keep > 0 {
                self.batches.push(last.slice(0, keep));
            }
        }
    }

    /// Flushes the decoder; returns how many of the flushed rows no earlier record counted.
    fn flush(&mut self) -> std::result::Result<usize, String> {
        let mut rows = 0;
        let flushed = self.decoder.flush().map_err(|e| e.to_string());
        let built = flushed.and_then(|batch| {
            batch
                .map(|b| to_table_types(&b, self.schema).map_err(|e| e.to_string()))
                .transpose()
        });
        match built {
            Ok(Some(batch)) => {
                rows = batch.num_rows().saturating_sub(self.unflushed);
                self.batches.push(batch);
            }
            Ok(None) => {}
            Err(why) => {
                self.unbuildable = true;
                return Err(why);
            }
        }
        self.unflushed = 0;
        self.since_flush.clear();
        Ok(rows)
    }
}

/// The usable writer schemas and the reader's own (see [`READER_ID`]).
fn writer_schemas<'s>(
    reader: &'s str,
    usable: &'s BTreeMap<u32, String>,
) -> impl Iterator<Item = (u32, &'s str)> {
    (usable.iter().map(|(id, s)| (*id, s.as_str()))).chain([(READER_ID, reader)])
}

fn build<'s>(
    reader: &str,
    writers: impl IntoIterator<Item = (u32, &'s str)>,
    rows_per_batch: usize,
) -> std::result::Result<Decoder, String> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    for (id, schema) in writers {
        store
            .set(Fingerprint::Id(id), AvroSchema::new(schema.to_string()))
            .map_err(|e| e.to_string())?;
    }
    ReaderBuilder::new()
        .with_writer_schema_store(store)
        .with_reader_schema(AvroSchema::new(reader.to_string()))
        .with_batch_size(rows_per_batch)
        .build_decoder()
        .map_err(|e| e.to_string())
}

/// The schema of the decoded rows as the table stores them.
fn table_schema(decoded: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        decoded
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), table_type(f.data_type()), true))
            .collect::<Vec<_>>(),
    ))
}

fn table_type(t: &DataType) -> DataType {
    match t {
        DataType::Dictionary(_, values) => table_type(values),
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::FixedSizeBinary(_) | DataType::BinaryView | DataType::LargeBinary => {
            DataType::Binary
        }
        DataType::Timestamp(_, Some(_)) => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        DataType::Timestamp(_, None) => DataType::Timestamp(TimeUnit::Microsecond, None),
        DataType::List(item) | DataType::LargeList(item) => DataType::List(Arc::new(Field::new(
            "element",
            table_type(item.data_type()),
            true,
        ))),
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| Field::new(f.name(), table_type(f.data_type()), true))
                .collect::<Fields>(),
        ),
        other => other.clone(),
    }
}

fn to_table_types(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Apache Avro's `missing_field_no_default`: the reader has a field without a default that
    /// the writer lacks. Such records are bad records; the decoder (and the unit) stand.
    #[test]
    fn records_whose_writer_schema_does_not_resolve_are_bad_not_the_unit() {
        let reader = r#"{"type":"record","name":"r","fields":[
            {"name":"a","type":"string"},{"name":"b","type":"long"}]}"#;
        let writer = r#"{"type":"record","name":"r","fields":[{"name":"a","type":"string"}]}"#;
        let writers = BTreeMap::from([
            (7, Ok(writer.to_string())),
            (
                1 << 31,
                Err("schema id 2147483648 is past the 31-bit ids".to_string()),
            ),
        ]);
        let decoder = AvroDecoder::new(reader, &writers).unwrap();
        assert_eq!(decoder.schema().fields().len(), 2);
        let old_writer = [0u8, 0, 0, 0, 7, 2, b'x'];
        let huge_id = [0u8, 0x80, 0, 0, 0, 2, b'x'];
        let decoded = decoder
            .decode([Some(&old_writer[..]), Some(&huge_id[..])])
            .unwrap();
        assert_eq!(decoded.batch.num_rows(), 0);
        let bad: Vec<(usize, &str)> = decoded.bad.iter().map(|(i, e)| (*i, e.as_str())).collect();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(
            bad[0].1.contains("cannot be read as the table's schema"),
            "{bad:?}"
        );
        assert!(bad[1].1.contains("31-bit"), "{bad:?}");
    }

    /// Found by fuzzing (fuzz/fuzz_targets/avro_record.rs): an enum index past the symbols
    /// decodes, and only building the batch's arrays fails; that record is bad, not the unit.
    #[test]
    fn an_enum_index_past_the_symbols_is_a_bad_record_not_the_unit() {
        let schema = r#"{"type":"record","name":"r","fields":[
            {"name":"kind","type":{"type":"enum","name":"k","symbols":["A","B"]}},
            {"name":"n","type":"long"}]}"#;
        let writers = BTreeMap::from([(3, Ok(schema.to_string()))]);
        let decoder = AvroDecoder::new(schema, &writers).unwrap();
        // Bodies: the enum index and the long, both zigzag (index 1 = 0x02, 4 = 0x08; n 5 = 0x0a).
        let b = [0u8, 0, 0, 0, 3, 0x02, 0x0a];
        let past = [0u8, 0, 0, 0, 3, 0x08, 0x0a];
        let a = [0u8, 0, 0, 0, 3, 0x00, 0x02];
        let decoded = decoder
            .decode([Some(&b[..]), Some(&past[..]), Some(&a[..])])
            .unwrap();
        let kinds = arrow::compute::cast(decoded.batch.column(0), &DataType::Utf8).unwrap();
        let kinds = kinds
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        assert_eq!(kinds.iter().collect::<Vec<_>>(), [Some("B"), Some("A")]);
        assert_eq!(decoded.bad.len(), 1, "{:?}", decoded.bad);
        assert_eq!(decoded.bad[0].0, 1);
        assert!(decoded.bad[0].1.contains("key 4"), "{:?}", decoded.bad);
    }
    /// Found by fuzzing: a record holding a second framed value under another writer schema
    /// made the decoder send its batch out mid-record; the record was refused but its first
    /// value had gone out with the batch.
    #[test]
    fn a_record_refused_after_its_batch_went_out_leaves_no_row() {
        let schema = r#"{"type":"record","name":"r","fields":[{"name":"n","type":"long"}]}"#;
        let writers = BTreeMap::from([(1, Ok(schema.to_string())), (2, Ok(schema.to_string()))]);
        let decoder = AvroDecoder::new(schema, &writers).unwrap();
        let good = [0u8, 0, 0, 0, 1, 0x06];
        let two_values = [0u8, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x04];
        let decoded = decoder
            .decode([Some(&good[..]), Some(&two_values[..]), Some(&good[..])])
            .unwrap();
        let n = decoded
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>();
        assert_eq!(n.unwrap().values().to_vec(), [3, 3]);
        assert_eq!(decoded.bad.len(), 1, "{:?}", decoded.bad);
        assert_eq!(decoded.bad[0].0, 1);
    }
}
