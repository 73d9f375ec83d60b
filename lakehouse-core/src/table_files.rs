//! Reading a Delta table by its data files, for jobs that consume another table incrementally:
//! which files commits after a version added, which of today's files a reader at an older
//! version has not seen, and the rows of a list of files.
//!
//! Files are read whole (writers bound their size) and decoded off the async threads.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use deltalake::kernel::Action;
use deltalake::DeltaTable;
use futures::{StreamExt, TryStreamExt};
/// A data file's path under the table root.
pub use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::error::{Error, Result};

/// Files read at once: they are independent, and object-store latency dominates.
const PARALLEL_READS: usize = 4;

/// A data file of a table and the version of the commit that added it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub version: i64,
    /// Relative to the table root.
    pub path: Path,
    pub rows: u64,
    /// The values of the table's partition columns for this file, as the log writes them
    /// (Parquet files of a partitioned table do not hold those columns).
    pub partition_values: Vec<(String, Option<String>)>,
}

/// How much one unit of work reads: it stops before a commit that would take it past either
/// limit (its first commit is always taken, whatever its size). Rows alone do not bound
/// memory when rows vary in size: 100,000 rows of 10 KB are a gigabyte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitLimit {
    pub rows: u64,
    /// Bytes of the Parquet files read (compressed: rows take a few times this in memory).
    pub bytes: u64,
}

impl UnitLimit {
    pub const NONE: UnitLimit = UnitLimit {
        rows: u64::MAX,
        bytes: u64::MAX,
    };
}

/// The files that commits `after + 1 ..= latest` added with new data (an OPTIMIZE's rewrites
/// are skipped: their rows were seen before), up to `limit`. Returns the files and the last
/// version taken.
pub async fn added_since(
    table: &DeltaTable,
    table_name: &str,
    after: i64,
    latest: i64,
    limit: UnitLimit,
) -> Result<(Vec<DataFile>, i64)> {
    scan(table, table_name, after, latest, limit, false, None).await
}

/// The data files of the loaded snapshot: every row the table holds, each once.
pub fn live_paths(table: &DeltaTable) -> Result<HashSet<Path>> {
    Ok((table.snapshot()?.log_data().iter())
        .map(|f| f.object_store_path())
        .collect())
}

/// The files of `live` (a snapshot's, [`live_paths`]) in the order of the commits that added
/// them, commits `after + 1 ..= latest` up to `limit`: as [`added_since`] from a reader's
/// start, but from the snapshot's files, so a rebuild works after `vacuum` deleted the files
/// a compaction replaced. Returns the files and the last version taken.
pub async fn live_by_commit(
    table: &DeltaTable,
    table_name: &str,
    after: i64,
    latest: i64,
    limit: UnitLimit,
    live: &HashSet<Path>,
) -> Result<(Vec<DataFile>, i64)> {
    scan(table, table_name, after, latest, limit, false, Some(live)).await
}

/// [`added_since`] for readers that need every row exactly once: a commit that removed rows
/// (a MERGE, an update, a delete) is an error, because its added files hold rows seen before.
pub async fn appended_since(
    table: &DeltaTable,
    table_name: &str,
    after: i64,
    latest: i64,
    limit: UnitLimit,
) -> Result<(Vec<DataFile>, i64)> {
    scan(table, table_name, after, latest, limit, true, None).await
}

/// The files commits added, commit by commit: with new data, or — given `live` — the ones
/// among `live`, whatever the commit.
async fn scan(
    table: &DeltaTable,
    table_name: &str,
    after: i64,
    latest: i64,
    limit: UnitLimit,
    append_only: bool,
    live: Option<&HashSet<Path>>,
) -> Result<(Vec<DataFile>, i64)> {
    let mut files = Vec::new();
    let (mut rows, mut bytes) = (0, 0);
    let mut last = after;
    for version in after + 1..=latest {
        let mut commit_files = Vec::new();
        let (mut commit_rows, mut commit_bytes) = (0, 0);
        for action in commit_actions(table, table_name, version).await? {
            let add = match action {
                Action::Add(add) => add,
                Action::Remove(remove) if append_only && remove.data_change => {
                    return Err(Error::Input(format!(
                        "{table_name} version {version} removed or rewrote rows; what reads it \
                         needs a table that only appends"
                    )))
                }
                _ => continue,
            };
            let path = Path::from_url_path(&add.path)
                .map_err(|e| Error::Internal(format!("bad path in the Delta log: {e}")))?;
            let taken = match live {
                Some(live) => live.contains(&path),
                None => add.data_change,
            };
            if !taken {
                continue;
            }
            let file_rows = add
                .stats
                .as_deref()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .and_then(|s| s.get("numRecords").and_then(|n| n.as_u64()))
                .unwrap_or(0);
            commit_rows += file_rows;
            commit_bytes += add.size.max(0) as u64;
            commit_files.push(DataFile {
                version,
                path,
                rows: file_rows,
                partition_values: add.partition_values.into_iter().collect(),
            });
        }
        let taken_any = last > after;
        if taken_any && (rows + commit_rows > limit.rows || bytes + commit_bytes > limit.bytes) {
            break;
        }
        rows += commit_rows;
        bytes += commit_bytes;
        files.extend(commit_files);
        last = version;
        if rows >= limit.rows || bytes >= limit.bytes {
            break;
        }
    }
    Ok((files, last))
}

/// The actions of commit `version` of `table` (`table_name` in errors), read from its log.
pub async fn commit_actions(
    table: &DeltaTable,
    table_name: &str,
    version: i64,
) -> Result<Vec<Action>> {
    let bytes = table
        .log_store()
        .read_commit_entry(version as u64)
        .await?
        .ok_or_else(|| {
            Error::Input(format!(
                "{table_name} version {version} is no longer in its Delta log (log retention \
                 removed it); a full refresh of what reads it is needed"
            ))
        })?;
    Ok(deltalake::logstore::get_actions(version as u64, &bytes)?)
}

/// The files of the loaded snapshot a reader that saw version `seen` has not read all of: all
/// of them when `seen` is `None`. Rows rewritten by a MERGE or an update arrive in new
/// files, and so do rows a compaction (`dataChange: false`) moved out of files the reader had
/// not seen: a compaction's files count when it removed such a file. They may also hold rows
/// the reader saw (a compaction mixes old and new files), so this suits readers that upsert
/// by key; a reader that must see each row once follows the commits ([`appended_since`]).
pub async fn live_since(
    table: &DeltaTable,
    name: &str,
    seen: Option<i64>,
) -> Result<Vec<DataFile>> {
    let snapshot = table.snapshot()?;
    let version = table.version().map_or(-1, |v| v as i64);
    let live: Vec<DataFile> = snapshot
        .log_data()
        .iter()
        .map(|f| DataFile {
            version,
            path: f.object_store_path(),
            rows: f.num_records().unwrap_or(0) as u64,
            partition_values: f.partition_values_map().into_iter().collect(),
        })
        .collect();
    let Some(seen) = seen else {
        return Ok(live);
    };
    let unseen = unseen_paths(table, name, seen, version).await?;
    Ok(live
        .into_iter()
        .filter(|f| unseen.contains(&f.path))
        .collect())
}

/// The files commits `seen + 1 ..= latest` added that hold rows a reader at `seen` has not
/// read: every file a commit added with new data, and every file a rewrite without new data
/// (a compaction) added in a commit that removed one of those.
async fn unseen_paths(
    table: &DeltaTable,
    name: &str,
    seen: i64,
    latest: i64,
) -> Result<HashSet<Path>> {
    let path_of = |p: &str| {
        Path::from_url_path(p)
            .map_err(|e| Error::Internal(format!("bad path in the Delta log: {e}")))
    };
    let mut unseen = HashSet::new();
    for version in seen + 1..=latest {
        let actions = commit_actions(table, name, version).await?;
        let mut rewrites_unseen = false;
        for action in &actions {
            if let Action::Remove(remove) = action {
                rewrites_unseen |= !remove.data_change && unseen.contains(&path_of(&remove.path)?);
            }
        }
        for action in actions {
            if let Action::Add(add) = action {
                if add.data_change || rewrites_unseen {
                    unseen.insert(path_of(&add.path)?);
                }
            }
        }
    }
    Ok(unseen)
}

/// The rows of `files`, in order, `columns` only (all when `None`), typed as the table
/// declares them; each file's batches with the file. A file may hold a column in another
/// Arrow type than the table's (a writer's UInt64 in a Delta `long`), and a partitioned
/// table's files hold no partition columns: those are filled in from the log.
pub async fn read(
    table: &DeltaTable,
    files: &[DataFile],
    columns: Option<&[&str]>,
) -> Result<Vec<(DataFile, Vec<RecordBatch>)>> {
    let store = table.log_store().object_store(None);
    let schema = match table.version() {
        Some(_) => Some(table.snapshot()?.snapshot().arrow_schema()),
        None => None,
    };
    let columns: Option<Arc<[String]>> = columns.map(|c| c.iter().map(|s| s.to_string()).collect());
    // Built eagerly: a lazy `map` here trips the compiler's Send check for callers' futures.
    let reads: Vec<_> = files
        .iter()
        .map(|file| read_file(store.clone(), file.clone(), columns.clone()))
        .collect();
    let read: Vec<(DataFile, Vec<RecordBatch>)> = futures::stream::iter(reads)
        .buffered(PARALLEL_READS)
        .try_collect()
        .await?;
    let Some(schema) = schema else {
        return Ok(read);
    };
    let wanted: Vec<String> = match &columns {
        Some(c) => c.to_vec(),
        None => schema.fields().iter().map(|f| f.name().clone()).collect(),
    };
    read.into_iter()
        .map(|(file, batches)| {
            let batches = batches
                .iter()
                .map(|b| as_declared(b, &file, &schema, &wanted))
                .collect::<Result<_>>()?;
            Ok((file, batches))
        })
        .collect()
}

/// `batch` with the `wanted` columns in that order and the table's types, partition columns
/// made from `file`'s values. A batch that already is that is returned as it is.
pub(crate) fn as_declared(
    batch: &RecordBatch,
    file: &DataFile,
    schema: &arrow::datatypes::Schema,
    wanted: &[String],
) -> Result<RecordBatch> {
    let declared = |name: &str| schema.field_with_name(name).ok();
    let as_is = batch.num_columns() == wanted.len()
        && (batch.schema().fields().iter().zip(wanted)).all(|(f, w)| {
            f.name() == w && declared(w).is_none_or(|d| d.data_type() == f.data_type())
        });
    if as_is {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(wanted.len());
    let mut arrays = Vec::with_capacity(wanted.len());
    for name in wanted {
        let (field, array) = if let Some(array) = batch.column_by_name(name) {
            let field = declared(name).map_or_else(
                || batch.schema().field_with_name(name).cloned(),
                |d| Ok(d.clone().with_nullable(true)),
            )?;
            let array = if array.data_type() == field.data_type() {
                array.clone()
            } else {
                arrow::compute::cast(array, field.data_type())?
            };
            (field, array)
        } else if let Some((_, value)) = file.partition_values.iter().find(|(c, _)| c == name) {
            let field = schema.field_with_name(name)?.clone().with_nullable(true);
            let text = arrow::array::StringArray::from(vec![value.as_deref(); batch.num_rows()]);
            let typed = arrow::compute::cast(&text, field.data_type()).map_err(|e| {
                Error::Internal(format!(
                    "partition value {value:?} of column {name} in {}: {e}",
                    file.path
                ))
            })?;
            (field, typed)
        } else {
            continue;
        };
        fields.push(field);
        arrays.push(array);
    }
    Ok(RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(fields)),
        arrays,
    )?)
}

async fn read_file(
    store: Arc<dyn ObjectStore>,
    file: DataFile,
    columns: Option<Arc<[String]>>,
) -> Result<(DataFile, Vec<RecordBatch>)> {
    let bytes = match store.get(&file.path).await {
        Ok(got) => got.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Error::Input(format!(
                "data file {} is gone (vacuumed before it was read); a full refresh of what \
                 reads it is needed",
                file.path
            )))
        }
        Err(e) => return Err(e.into()),
    };
    tokio::task::spawn_blocking(move || {
        let unreadable = |e: parquet::errors::ParquetError| {
            Error::Internal(format!("data file {}: {e}", file.path))
        };
        let mut builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(unreadable)?;
        if let Some(columns) = &columns {
            let mask = ProjectionMask::columns(
                builder.parquet_schema(),
                columns.iter().map(String::as_str),
            );
            builder = builder.with_projection(mask);
        }
        let batches = builder
            .build()
            .map_err(unreadable)?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok((file, batches))
    })
    .await
    .map_err(|e| Error::Internal(format!("decode task: {e}")))?
}
