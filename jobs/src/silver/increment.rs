//! Which bronze commits a unit reads, and the bronze rows it keeps at hand so a record can go
//! to quarantine as it arrived.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type};
use chrono::Utc;
use deltalake::DeltaTable;
use lakehouse_core::table_files::{self, DataFile, UnitLimit};
use lakehouse_core::Result;

use crate::columns::{quarantine_schema, with_column};

/// Bronze columns silver reads.
pub(super) const BRONZE_COLUMNS: [&str; 4] = ["value", "_partition", "_offset", "_kafka_ts"];

/// The bronze commits one unit consumes: versions `after + 1 ..= to`.
pub(super) struct Increment {
    pub(super) after: i64,
    pub(super) to: i64,
    pub(super) files: Vec<DataFile>,
}

/// A `--full-refresh` under way: it reads the files bronze had when it started (versions up
/// to `until`) by the commits that added them, not the commits' own files: those a compaction
/// replaced may be vacuumed, and their rows are in its files.
pub(super) struct Rebuild {
    pub(super) until: i64,
    pub(super) files: HashSet<lakehouse_core::table_files::Path>,
}

/// The next bronze commits after `after`, up to `limit` (at least one commit).
pub(super) async fn plan_increment(
    bronze: &DeltaTable,
    source: &str,
    after: i64,
    latest: i64,
    limit: UnitLimit,
    rebuild: Option<&Rebuild>,
) -> Result<Increment> {
    let name = format!("bronze.{source}");
    let (files, to) = if let Some(rebuild) = rebuild.filter(|r| after < r.until) {
        let until = latest.min(rebuild.until);
        table_files::live_by_commit(bronze, &name, after, until, limit, &rebuild.files).await?
    } else {
        table_files::added_since(bronze, &name, after, latest, limit).await?
    };
    Ok(Increment { after, to, files })
}

/// The increment's bronze rows: [`BRONZE_COLUMNS`] plus `_bronze_version`, in commit order.
pub(super) async fn read_increment(
    bronze: &DeltaTable,
    increment: &Increment,
) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    for (file, file_batches) in
        table_files::read(bronze, &increment.files, Some(&BRONZE_COLUMNS)).await?
    {
        for batch in file_batches {
            batches.push(with_version(batch, file.version)?);
        }
    }
    Ok(batches)
}

fn with_version(batch: RecordBatch, version: i64) -> Result<RecordBatch> {
    let versions = Arc::new(Int64Array::from(vec![version; batch.num_rows()]));
    with_column(
        &batch,
        Field::new("_bronze_version", DataType::Int64, false),
        versions,
    )
}

/// One bronze record's lineage, the key to its raw value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Origin {
    pub(super) partition: i32,
    pub(super) offset: i64,
}

/// A record on its way to quarantine.
pub(super) struct Quarantined {
    pub(super) origin: Origin,
    pub(super) rule: String,
    pub(super) error: String,
}

/// The bronze rows of a unit.
pub(super) struct BronzeRows {
    pub(super) batches: Vec<RecordBatch>,
}

impl BronzeRows {
    /// Where each of `origins` is among the batches. Only units that quarantine something
    /// pay for this scan.
    fn locate(&self, origins: &[Origin]) -> HashMap<Origin, (usize, usize)> {
        let wanted: HashSet<Origin> = origins.iter().copied().collect();
        let mut found = HashMap::with_capacity(wanted.len());
        if wanted.is_empty() {
            return found;
        }
        for (b, batch) in self.batches.iter().enumerate() {
            let (partitions, offsets) = lineage_arrays(batch);
            for row in 0..batch.num_rows() {
                let origin = Origin {
                    partition: partitions.value(row),
                    offset: offsets.value(row),
                };
                if wanted.contains(&origin) {
                    found.insert(origin, (b, row));
                }
            }
        }
        found
    }

    pub(super) fn rows(&self) -> u64 {
        self.batches.iter().map(|b| b.num_rows() as u64).sum()
    }

    /// Builds the quarantine batch for `records`, with their raw values and lineage.
    pub(super) fn quarantine_batch(
        &self,
        records: &[Quarantined],
        run_id: &str,
    ) -> Result<RecordBatch> {
        let n = records.len();
        let origins: Vec<Origin> = records.iter().map(|q| q.origin).collect();
        let index = self.locate(&origins);
        let (mut versions, mut partitions, mut offsets, mut kafka_ts, mut raw) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for q in records {
            let (b, row) = index[&q.origin];
            let batch = &self.batches[b];
            let value = values(batch);
            let ts = batch
                .column_by_name("_kafka_ts")
                .expect("bronze _kafka_ts")
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            let version = batch
                .column_by_name("_bronze_version")
                .expect("added on read")
                .as_primitive::<Int64Type>();
            versions.push(version.value(row));
            partitions.push(q.origin.partition);
            offsets.push(q.origin.offset);
            kafka_ts.push(ts.is_valid(row).then(|| ts.value(row)));
            raw.push(
                value
                    .is_valid(row)
                    .then(|| String::from_utf8_lossy(value.value(row)).into_owned()),
            );
        }
        let now = Utc::now().timestamp_micros();
        Ok(RecordBatch::try_new(
            quarantine_schema(),
            vec![
                Arc::new(Int64Array::from(versions)),
                Arc::new(Int32Array::from(partitions)),
                Arc::new(Int64Array::from(offsets)),
                Arc::new(TimestampMicrosecondArray::from(kafka_ts).with_timezone("UTC")),
                Arc::new(StringArray::from(raw)),
                Arc::new(StringArray::from_iter_values(
                    records.iter().map(|q| &q.rule),
                )),
                Arc::new(StringArray::from_iter_values(
                    records.iter().map(|q| &q.error),
                )),
                Arc::new(StringArray::from(vec![run_id; n])),
                Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
            ],
        )?)
    }
}

/// The record values of a bronze batch.
pub(super) fn values(batch: &RecordBatch) -> &BinaryArray {
    batch
        .column_by_name("value")
        .expect("bronze value")
        .as_binary()
}

pub(super) fn lineage_arrays(
    batch: &RecordBatch,
) -> (&arrow::array::PrimitiveArray<Int32Type>, &Int64Array) {
    (
        batch
            .column_by_name("_partition")
            .expect("lineage column _partition")
            .as_primitive::<Int32Type>(),
        batch
            .column_by_name("_offset")
            .expect("lineage column _offset")
            .as_primitive::<Int64Type>(),
    )
}

pub(super) fn origin_at(batch: &RecordBatch, row: usize) -> Origin {
    let (partitions, offsets) = lineage_arrays(batch);
    Origin {
        partition: partitions.value(row),
        offset: offsets.value(row),
    }
}
