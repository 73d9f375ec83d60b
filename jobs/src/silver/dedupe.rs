//! Step 4: one row per key within a unit, and the keys silver already holds.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::TimestampMicrosecondType;
use arrow::row::{Row, RowConverter, SortField};
use deltalake::DeltaTable;
use lakehouse_core::config::OnExistingKey;
use lakehouse_core::{lookup, Result};
use tracing::debug;

use super::increment::lineage_arrays;
use super::SilverJob;

/// Step 4: one row per key: the latest record (`replace`: the newest Kafka timestamp, a missing
/// one counting as oldest, then the highest partition and offset) or the first (`keep`: the
/// reverse order). Rows keep their order. A hash map over
/// the encoded keys: DataFusion's `row_number() OVER (PARTITION BY key)` took 40 % of a unit,
/// as it walks each one-row partition on its own.
pub(super) fn one_per_key(
    batch: &RecordBatch,
    key: &[String],
    keep: OnExistingKey,
) -> Result<RecordBatch> {
    let key_columns: Vec<ArrayRef> = key
        .iter()
        .map(|k| {
            batch
                .column_by_name(k)
                .cloned()
                .expect("key columns are checked after cleaning")
        })
        .collect();
    let converter = RowConverter::new(
        key_columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let keys = converter.convert_columns(&key_columns)?;
    let (partitions, offsets) = lineage_arrays(batch);
    let kafka_ts = batch
        .column_by_name("_kafka_ts")
        .expect("lineage column _kafka_ts")
        .as_primitive::<TimestampMicrosecondType>();
    let recency = |row: usize| {
        (
            kafka_ts.is_valid(row).then(|| kafka_ts.value(row)),
            partitions.value(row),
            offsets.value(row),
        )
    };
    let wins = |row: usize, best: usize| match keep {
        OnExistingKey::Replace => recency(row) > recency(best),
        OnExistingKey::Keep => recency(row) < recency(best),
    };
    let mut chosen: HashMap<Row<'_>, usize> = HashMap::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        chosen
            .entry(keys.row(row))
            .and_modify(|best| {
                if wins(row, *best) {
                    *best = row;
                }
            })
            .or_insert(row);
    }
    if chosen.len() == batch.num_rows() {
        return Ok(batch.clone());
    }
    let mut rows: Vec<u32> = chosen.into_values().map(|row| row as u32).collect();
    rows.sort_unstable();
    Ok(take_record_batch(batch, &UInt32Array::from(rows))?)
}

impl SilverJob {
    /// The rows of `rows` whose key silver already holds, reading only the parts of the table
    /// that may hold one of these keys ([`lakehouse_core::lookup`]).
    pub(super) async fn existing_key_rows(
        &self,
        silver: &DeltaTable,
        rows: &RecordBatch,
    ) -> Result<Vec<u32>> {
        if silver.version().is_none() || rows.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let key_columns: Vec<usize> = (self.settings.key.iter())
            .map(|k| rows.schema().index_of(k))
            .collect::<std::result::Result<_, _>>()?;
        let incoming = rows.project(&key_columns)?;
        let (held, found) = lookup::probe_rows_held(silver, &incoming, &self.filters).await?;
        debug!(
            keys = incoming.num_rows(),
            held = held.len(),
            files = found.files,
            files_in_range = found.files_in_range,
            files_opened = found.files_opened,
            row_groups_read = found.row_groups_read,
            "existing-key lookup"
        );
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::timestamp_type;
    use arrow::array::{Int32Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use std::sync::Arc;

    /// A row: key, second key, partition, offset, Kafka timestamp.
    type TestRow<'a> = (&'a str, i64, i32, i64, Option<i64>);

    /// The rows as a batch of the lineage columns and keys; `v` numbers them.
    fn batch(rows: &[TestRow]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
            Field::new("_partition", DataType::Int32, false),
            Field::new("_offset", DataType::Int64, false),
            Field::new("_kafka_ts", timestamp_type(), true),
            Field::new("v", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter(rows.iter().map(|r| r.4))
                        .with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from_iter_values(0..rows.len() as i64)),
            ],
        )
        .unwrap()
    }

    fn kept(batch: &RecordBatch) -> Vec<i64> {
        let v = batch
            .column_by_name("v")
            .unwrap()
            .as_primitive::<Int64Type>();
        v.values().to_vec()
    }

    #[test]
    fn the_latest_record_of_each_key_wins() {
        let rows = batch(&[
            ("newer first", 0, 0, 9, Some(20)),
            ("newer first", 0, 0, 10, Some(10)),
            ("same time", 0, 1, 1, Some(5)),
            ("same time", 0, 0, 5, Some(5)),
            ("same partition", 0, 2, 3, Some(5)),
            ("same partition", 0, 2, 7, Some(5)),
            ("no timestamp", 0, 0, 50, None),
            ("no timestamp", 0, 0, 40, Some(1)),
            ("alone", 0, 0, 60, None),
        ]);
        let latest = one_per_key(&rows, &["k".into()], OnExistingKey::Replace).unwrap();
        assert_eq!(kept(&latest), vec![0, 2, 5, 7, 8]);
        // `keep`: the first record, by the same order read the other way.
        let first = one_per_key(&rows, &["k".into()], OnExistingKey::Keep).unwrap();
        assert_eq!(kept(&first), vec![1, 3, 4, 6, 8]);
    }

    #[test]
    fn every_key_column_counts() {
        let rows = batch(&[
            ("a", 1, 0, 1, Some(1)),
            ("a", 2, 0, 2, Some(1)),
            ("a", 1, 0, 3, Some(1)),
        ]);
        let by_both =
            one_per_key(&rows, &["k".into(), "n".into()], OnExistingKey::Replace).unwrap();
        assert_eq!(kept(&by_both), vec![1, 2]);
        let by_first = one_per_key(&rows, &["k".into()], OnExistingKey::Replace).unwrap();
        assert_eq!(kept(&by_first), vec![2]);
    }
}
