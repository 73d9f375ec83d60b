//! Which rows of a table hold given values, reading only the parts of the table that may: the
//! question silver asks each unit (which of its keys the table already holds; which values a
//! `unique` expectation may collide with).
//!
//! Two levels of skipping, neither of which can skip a row that matches:
//! 1. **Files**, by the Delta log's statistics (each file's min and max per column, no I/O):
//!    a file whose range holds none of the values is not opened.
//! 2. **Row groups**, by the Parquet bloom filters lakectl writes on the columns it looks up
//!    ([`bloom_writer_properties`]): a row group whose filter rules out every value is not
//!    read. A filter only ever says "no" for a value it has never seen; a row group without one
//!    (written before, or by another writer) is read.
//!
//! Then the looked-up columns of what is left are read and compared exactly.
//!
//! What it costs: when values arrive roughly in order (sequence numbers, ids that begin with a
//! time such as ULIDs or UUIDv7, keys with a date) a unit's values fall in the ranges of the
//! newest files, and a lookup does not grow with the table. Values spread at random over their
//! domain (UUIDv4), or the keys of a topic whose partitions are read at different paces, fall
//! in many files' ranges: then those files' bloom filters are read (about 5 bytes a row at
//! [`BLOOM_FPP`], against 20–80 for a typical key itself), and a row group is read when one of
//! `n` values that are not there passes its filter, which happens with probability about
//! `n × BLOOM_FPP`. A [`FilterCache`] keeps the filters read, so a job that looks up every unit
//! opens only the files some value passes, not every file's footer and filters again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::row::{Row, RowConverter, Rows, SortField};
use bytes::Bytes;
use deltalake::DeltaTable;
use futures::future::BoxFuture;
use futures::FutureExt;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::ProjectionMask;
use parquet::basic::{Compression, Type as PhysicalType};
use parquet::bloom_filter::Sbbf;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};
use crate::table_files::{as_declared, DataFile};

/// The false-positive rate of the bloom filters lakectl writes (~40 bits a distinct value): low
/// enough that a unit of 100,000 new keys passes about one row group's filter in ten.
pub const BLOOM_FPP: f64 = 0.000_001;

/// Files looked at once: they are independent, and object-store latency dominates.
const PARALLEL_READS: usize = 4;

/// What a [`FilterCache`] holds at most: the filters of about 50 million keys.
pub const FILTER_CACHE_BYTES: usize = 256 << 20;

/// The bloom filters lookups read from a table's data files, kept for the next lookups. A Delta
/// data file never changes once written, so its filters hold for as long as it is in the table:
/// silver probing each unit's keys against hundreds of files then opens only the few files a
/// key passes, instead of reading every file's footer and filters again each unit. The oldest
/// files leave first when the cache is over its bytes; files that left the table leave it too.
pub struct FilterCache {
    budget: usize,
    files: Mutex<CachedFiles>,
}

#[derive(Default)]
struct CachedFiles {
    by_path: HashMap<Path, Arc<FileFilters>>,
    /// Oldest first.
    order: VecDeque<Path>,
    bytes: usize,
}

/// One file's bloom filters on some columns, per row group. A column the file lacks, or a row
/// group without a filter on it, has `None`: every value passes.
#[derive(Clone, Default)]
struct FileFilters {
    row_groups: usize,
    columns: HashMap<String, Vec<Option<(PhysicalType, Sbbf)>>>,
}

impl FileFilters {
    fn bytes(&self) -> usize {
        let per_row_group = |f: &Option<(PhysicalType, Sbbf)>| {
            std::mem::size_of::<Option<(PhysicalType, Sbbf)>>()
                + f.as_ref().map_or(0, |(_, filter)| filter.num_blocks() * 32)
        };
        (self.columns.iter())
            .map(|(column, filters)| {
                column.len() + filters.iter().map(per_row_group).sum::<usize>()
            })
            .sum()
    }

    fn has(&self, columns: &[&str]) -> bool {
        columns.iter().all(|c| self.columns.contains_key(*c))
    }

    /// The row groups whose filters let a row of one of `probes` pass.
    fn passing(&self, probes: &[ValueSet]) -> Vec<usize> {
        (0..self.row_groups)
            .filter(|&row_group| {
                let filter = |column: &str| {
                    (self.columns.get(column)).and_then(|filters| filters[row_group].as_ref())
                };
                probes.iter().any(|p| p.passes_filters(filter))
            })
            .collect()
    }
}

impl Default for FilterCache {
    fn default() -> Self {
        FilterCache::with_budget(FILTER_CACHE_BYTES)
    }
}

impl FilterCache {
    pub fn with_budget(budget: usize) -> FilterCache {
        FilterCache {
            budget,
            files: Mutex::default(),
        }
    }

    /// How many files' filters it holds.
    pub fn len(&self) -> usize {
        self.lock().by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CachedFiles> {
        // The map is consistent between statements: a panic elsewhere cannot leave it torn.
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, path: &Path) -> Option<Arc<FileFilters>> {
        self.lock().by_path.get(path).cloned()
    }

    fn insert(&self, path: &Path, filters: FileFilters) {
        let bytes = filters.bytes();
        if bytes > self.budget {
            return;
        }
        let mut files = self.lock();
        match files.by_path.insert(path.clone(), Arc::new(filters)) {
            Some(old) => files.bytes -= old.bytes(),
            None => files.order.push_back(path.clone()),
        }
        files.bytes += bytes;
        while files.bytes > self.budget {
            let Some(oldest) = files.order.pop_front() else {
                break;
            };
            if let Some(gone) = files.by_path.remove(&oldest) {
                files.bytes -= gone.bytes();
            }
        }
    }

    /// Forgets the files not in `live` (compacted or vacuumed away).
    fn keep_only(&self, live: &HashSet<Path>) {
        let mut files = self.lock();
        let CachedFiles {
            by_path,
            order,
            bytes,
        } = &mut *files;
        by_path.retain(|path, filters| {
            let keep = live.contains(path);
            if !keep {
                *bytes -= filters.bytes();
            }
            keep
        });
        order.retain(|path| by_path.contains_key(path));
    }
}

/// Parquet writer settings with a bloom filter on each of `columns` (sized for the values
/// written, then folded to fit), compressed with `compression`.
pub fn bloom_writer_properties(columns: &[String], compression: Compression) -> WriterProperties {
    columns
        .iter()
        .fold(
            WriterProperties::builder().set_compression(compression),
            |props, c| {
                let column = ColumnPath::from(c.as_str());
                props
                    .set_column_bloom_filter_enabled(column.clone(), true)
                    .set_column_bloom_filter_fpp(column, BLOOM_FPP)
            },
        )
        .build()
}

/// What a lookup found, and what it read to find it.
#[derive(Debug)]
pub struct Found {
    /// The matching rows, the `read` columns only.
    pub rows: RecordBatch,
    /// Files of the table, those whose statistics left room for a value, and those of these
    /// read from storage (the others' bloom filters were in the cache and ruled every value out).
    pub files: usize,
    pub files_in_range: usize,
    pub files_opened: usize,
    /// Row groups of the opened files, and those read (their bloom filters let a value pass).
    pub row_groups: usize,
    pub row_groups_read: usize,
}

/// The rows of `table` (its `read` columns, typed as the table declares them; they must include
/// every probe column) that match a row of one of `probes`: each probe is a batch of some of the
/// table's columns, and a table row matches a probe row when every one of the probe's columns
/// is equal (NULL equals nothing, as in SQL). Every matching row is returned once, in no
/// particular order. `cache` keeps the bloom filters read for the next lookups in `table`.
pub async fn rows_matching(
    table: &DeltaTable,
    probes: &[RecordBatch],
    read: &[String],
    cache: &Arc<FilterCache>,
) -> Result<Found> {
    let snapshot = table.snapshot()?;
    let declared = snapshot.snapshot().arrow_schema();
    let out_schema = Arc::new(Schema::new(
        read.iter()
            .map(|c| Ok(declared.field_with_name(c)?.clone().with_nullable(true)))
            .collect::<Result<Vec<_>>>()?,
    ));
    let probes: Arc<[ValueSet]> = probes
        .iter()
        .filter(|p| p.num_rows() > 0)
        .map(|p| ValueSet::new(p, &declared))
        .collect::<Result<_>>()?;
    let files = snapshot.log_data().num_files();
    if cache.len() > files {
        let log = snapshot.log_data();
        cache.keep_only(&log.iter().map(|f| f.object_store_path()).collect());
    }
    if probes.is_empty() {
        return Ok(Found {
            rows: RecordBatch::new_empty(out_schema),
            files,
            files_in_range: 0,
            files_opened: 0,
            row_groups: 0,
            row_groups_read: 0,
        });
    }
    let candidates: Vec<(DataFile, u64)> = snapshot
        .log_data()
        .iter()
        .filter(|f| {
            let stats = f
                .stats()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
            probes.iter().any(|p| p.may_be_in(stats.as_ref()))
        })
        .map(|f| {
            let file = DataFile {
                version: snapshot.version() as i64,
                path: f.object_store_path(),
                rows: f.num_records().unwrap_or(0) as u64,
                partition_values: f.partition_values_map().into_iter().collect(),
            };
            (file, f.size() as u64)
        })
        .collect();
    let store = table.log_store().object_store(None);
    let reads: Vec<_> = candidates
        .into_iter()
        .map(|(file, size)| {
            matching_in_file(
                store.clone(),
                file,
                size,
                probes.clone(),
                declared.clone(),
                read.to_vec(),
                cache.clone(),
            )
        })
        .collect();
    let files_in_range = reads.len();
    let per_file: Vec<InFile> = futures::stream::iter(reads)
        .buffered(PARALLEL_READS)
        .try_collect()
        .await?;
    let rows: Vec<&RecordBatch> = per_file.iter().flat_map(|f| &f.rows).collect();
    Ok(Found {
        rows: arrow::compute::concat_batches(&out_schema, rows)?,
        files,
        files_in_range,
        files_opened: per_file.iter().filter(|f| f.opened).count(),
        row_groups: per_file.iter().map(|f| f.row_groups).sum(),
        row_groups_read: per_file.iter().map(|f| f.row_groups_read).sum(),
    })
}

/// Which rows of `probe` (some of the table's columns) `table` holds, every column equal, as
/// indices into `probe`; and what the lookup read.
pub async fn probe_rows_held(
    table: &DeltaTable,
    probe: &RecordBatch,
    cache: &Arc<FilterCache>,
) -> Result<(Vec<u32>, Found)> {
    let columns: Vec<String> = probe
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let found = rows_matching(table, std::slice::from_ref(probe), &columns, cache).await?;
    if found.rows.num_rows() == 0 {
        return Ok((Vec::new(), found));
    }
    let held = Sorted::new(found.rows.columns())?;
    let typed = as_table_types(probe, &found.rows.schema())?;
    let rows = held.converter.convert_columns(&typed)?;
    let indices = (0..probe.num_rows())
        .filter(|&r| typed.iter().all(|c| c.is_valid(r)) && held.contains(rows.row(r)))
        .map(|r| r as u32)
        .collect();
    Ok((indices, found))
}

/// What one file held, and how much of it was read.
struct InFile {
    rows: Vec<RecordBatch>,
    /// Whether the file was read from storage (not only its cached filters looked at).
    opened: bool,
    row_groups: usize,
    row_groups_read: usize,
}

/// The rows of one data file that match a probe: the row groups its bloom filters leave (from
/// `cache`, or read from the file and cached), read and compared.
async fn matching_in_file(
    store: Arc<dyn object_store::ObjectStore>,
    file: DataFile,
    size: u64,
    probes: Arc<[ValueSet]>,
    declared: SchemaRef,
    read: Vec<String>,
    cache: Arc<FilterCache>,
) -> Result<InFile> {
    let open = || async {
        let reader = FileReader {
            store: store.clone(),
            path: file.path.clone(),
            size,
        };
        ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(|e| parquet_error(&file.path, e))
    };
    let mut wanted: Vec<&str> = probes
        .iter()
        .flat_map(|p| p.columns.iter().map(String::as_str))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let cached = cache.get(&file.path);
    let (filters, mut builder) = match cached {
        Some(filters) if filters.has(&wanted) => (filters, None),
        cached => {
            let mut builder = open().await?;
            let mut filters = cached.map(|f| (*f).clone()).unwrap_or_default();
            read_filters(&mut builder, &file.path, &wanted, &mut filters).await?;
            cache.insert(&file.path, filters.clone());
            (Arc::new(filters), Some(builder))
        }
    };
    let row_groups = filters.passing(&probes);
    let (in_file, row_groups_read) = (filters.row_groups, row_groups.len());
    if row_groups.is_empty() {
        return Ok(InFile {
            rows: Vec::new(),
            opened: builder.is_some(),
            row_groups: in_file,
            row_groups_read,
        });
    }
    let builder = match builder.take() {
        Some(builder) => builder,
        None => open().await?,
    };
    let mask = ProjectionMask::columns(builder.parquet_schema(), read.iter().map(String::as_str));
    let batches: Vec<RecordBatch> = builder
        .with_row_groups(row_groups)
        .with_projection(mask)
        .build()
        .map_err(|e| parquet_error(&file.path, e))?
        .try_collect()
        .await
        .map_err(|e| parquet_error(&file.path, e))?;
    let rows = batches
        .iter()
        .map(|b| {
            let typed = as_declared(b, &file, &declared, &read)?;
            let mut keep = vec![false; typed.num_rows()];
            for probe in probes.iter() {
                probe.mark_matches(&typed, &mut keep)?;
            }
            Ok(filter_record_batch(&typed, &BooleanArray::from(keep))?)
        })
        .filter(|b| b.as_ref().map_or(true, |b| b.num_rows() > 0))
        .collect::<Result<_>>()?;
    Ok(InFile {
        rows,
        opened: true,
        row_groups: in_file,
        row_groups_read,
    })
}

/// Adds to `filters` each row group's bloom filter on each of `columns` it lacks (`None` for a
/// column the file does not hold, such as a partition column).
async fn read_filters(
    builder: &mut ParquetRecordBatchStreamBuilder<FileReader>,
    path: &Path,
    columns: &[&str],
    filters: &mut FileFilters,
) -> Result<()> {
    let parquet_schema = builder.parquet_schema().clone();
    filters.row_groups = builder.metadata().num_row_groups();
    for &column in columns {
        if filters.columns.contains_key(column) {
            continue;
        }
        let index = (0..parquet_schema.num_columns())
            .find(|&i| parquet_schema.column(i).path().string() == column);
        let mut per_row_group = Vec::with_capacity(filters.row_groups);
        for row_group in 0..filters.row_groups {
            let filter = match index {
                Some(i) => builder
                    .get_row_group_column_bloom_filter(row_group, i)
                    .await
                    .map_err(|e| parquet_error(path, e))?
                    .map(|f| (parquet_schema.column(i).physical_type(), f)),
                None => None,
            };
            per_row_group.push(filter);
        }
        filters.columns.insert(column.to_string(), per_row_group);
    }
    Ok(())
}

/// Range reads of one data file of known size: the footer, the bloom filters and the chosen
/// column chunks, each fetched alone.
struct FileReader {
    store: Arc<dyn object_store::ObjectStore>,
    path: Path,
    size: u64,
}

impl AsyncFileReader for FileReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                // Footers are small: one read usually gets the whole of it.
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// A Parquet failure while reading `path`, as the fault rules know it: a failed GET inside it
/// is the object store's (retried), anything else a damaged file.
fn parquet_error(path: &Path, e: parquet::errors::ParquetError) -> Error {
    if let parquet::errors::ParquetError::External(inner) = &e {
        if let Some(object_store::Error::NotFound { .. }) = inner.downcast_ref() {
            return Error::Input(format!(
                "data file {path} is gone (vacuumed while a unit read it); a full refresh of \
                 what reads it is needed"
            ));
        }
    }
    Error::DataFusion(
        datafusion::error::DataFusionError::ParquetError(Box::new(e))
            .context(format!("data file {path}")),
    )
}

/// Distinct non-NULL values of one or more columns in the Arrow row format (which sorts as the
/// values do), in order: one buffer and an index, so membership is a binary search with no
/// allocation per value.
struct Sorted {
    converter: RowConverter,
    rows: Rows,
    order: Vec<u32>,
}

impl Sorted {
    fn new(columns: &[ArrayRef]) -> Result<Sorted> {
        let converter = RowConverter::new(
            columns
                .iter()
                .map(|a| SortField::new(a.data_type().clone()))
                .collect(),
        )?;
        let rows = converter.convert_columns(columns)?;
        let valid = |i: usize| columns.iter().all(|c| c.is_valid(i));
        let mut order: Vec<u32> = (0..rows.num_rows())
            .filter(|&i| valid(i))
            .map(|i| i as u32)
            .collect();
        order.sort_unstable_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
        order.dedup_by(|a, b| rows.row(*a as usize) == rows.row(*b as usize));
        Ok(Sorted {
            converter,
            rows,
            order,
        })
    }

    fn contains(&self, row: Row<'_>) -> bool {
        self.order
            .binary_search_by(|&i| self.rows.row(i as usize).cmp(&row))
            .is_ok()
    }

    /// Whether a value lies in `min ..= max` (rows of this set's converter).
    fn any_between(&self, min: Row<'_>, max: Row<'_>) -> bool {
        let first_not_below = self
            .order
            .partition_point(|&i| self.rows.row(i as usize) < min);
        self.order
            .get(first_not_below)
            .is_some_and(|&i| self.rows.row(i as usize) <= max)
    }
}

/// One probe's values, prepared for the three questions asked of them.
struct ValueSet {
    columns: Vec<String>,
    /// Per column: its values as the table types them (which is how bloom filters hash them),
    /// and their sorted distinct values (for the file statistics).
    typed: Vec<ArrayRef>,
    per_column: Vec<Sorted>,
    /// Whole probe rows (all columns), for the exact comparison; `None` when that is the one
    /// column's set.
    whole: Option<Sorted>,
}

impl ValueSet {
    fn new(probe: &RecordBatch, declared: &Schema) -> Result<ValueSet> {
        let columns: Vec<String> = probe
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let typed = as_table_types(probe, declared)?;
        let per_column = typed
            .iter()
            .map(|a| Sorted::new(std::slice::from_ref(a)))
            .collect::<Result<_>>()?;
        let whole = if typed.len() > 1 {
            Some(Sorted::new(&typed)?)
        } else {
            None
        };
        Ok(ValueSet {
            columns,
            typed,
            per_column,
            whole,
        })
    }

    fn whole(&self) -> &Sorted {
        self.whole.as_ref().unwrap_or(&self.per_column[0])
    }

    /// Level 1: whether a file with these Delta statistics may hold a probe row. Missing
    /// statistics, or a type they cannot be compared in, mean it may.
    fn may_be_in(&self, stats: Option<&serde_json::Value>) -> bool {
        let Some(stats) = stats else { return true };
        self.columns.iter().enumerate().all(|(i, column)| {
            let bound = |which: &str| stats.get(which).and_then(|v| v.get(column));
            let (Some(min), Some(max)) = (bound("minValues"), bound("maxValues")) else {
                return true;
            };
            let data_type = self.typed[i].data_type();
            let (Some(min), Some(max)) = (stat_value(min, data_type), stat_value(max, data_type))
            else {
                return true;
            };
            let values = &self.per_column[i];
            let Ok(bounds) = arrow::compute::concat(&[min.as_ref(), max.as_ref()])
                .map_err(Error::from)
                .and_then(|b| Ok(values.converter.convert_columns(&[b])?))
            else {
                return true;
            };
            values.any_between(bounds.row(0), bounds.row(1))
        })
    }

    /// Level 2: whether a row group with these bloom filters (`filter` of a column; a column
    /// without one passes) may hold a probe row: every column must have a value that passes.
    fn passes_filters<'f>(
        &self,
        filter: impl Fn(&str) -> Option<&'f (PhysicalType, Sbbf)>,
    ) -> bool {
        self.columns
            .iter()
            .zip(&self.typed)
            .all(|(column, values)| match filter(column) {
                None => true,
                Some((physical, filter)) => any_passes(filter, *physical, values),
            })
    }

    /// Sets `keep[i]` for each row of `batch` (which has every probe column) that equals a
    /// probe row.
    fn mark_matches(&self, batch: &RecordBatch, keep: &mut [bool]) -> Result<()> {
        let columns: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|c| {
                batch
                    .column_by_name(c)
                    .cloned()
                    .ok_or_else(|| Error::Internal(format!("lookup read no column {c}")))
            })
            .collect::<Result<_>>()?;
        let whole = self.whole();
        let rows = whole.converter.convert_columns(&columns)?;
        for (i, kept) in keep.iter_mut().enumerate() {
            if !*kept && columns.iter().all(|c| c.is_valid(i)) {
                *kept = whole.contains(rows.row(i));
            }
        }
        Ok(())
    }
}

/// The columns of `batch` cast to the types `declared` gives them: the comparisons must see
/// values as the files are read.
fn as_table_types(batch: &RecordBatch, declared: &Schema) -> Result<Vec<ArrayRef>> {
    batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, a)| Ok(cast(a, declared.field_with_name(f.name())?.data_type())?))
        .collect()
}

/// A Delta statistic (JSON) as a one-value array of `data_type`, for the types whose statistics
/// are exact bounds: strings (Parquet truncates a long max upward, a long min downward) and
/// integers. Timestamps are left out: Delta rounds them to milliseconds, which can put a
/// max below the true one.
fn stat_value(value: &serde_json::Value, data_type: &DataType) -> Option<ArrayRef> {
    let as_array: ArrayRef = match (data_type, value) {
        (
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View,
            serde_json::Value::String(s),
        ) => Arc::new(StringArray::from(vec![s.as_str()])),
        (t, serde_json::Value::Number(n)) if t.is_integer() => {
            Arc::new(Int64Array::from(vec![n.as_i64()?]))
        }
        _ => return None,
    };
    cast(&as_array, data_type).ok().filter(|a| a.is_valid(0))
}

/// Whether some value of `values` passes `filter`, hashed as a writer of a column of
/// `physical` type hashes it. A type this does not hash counts as passing.
fn any_passes(filter: &Sbbf, physical: PhysicalType, values: &ArrayRef) -> bool {
    use arrow::array::AsArray;
    let valid = |i: &usize| values.is_valid(*i);
    match (physical, values.data_type()) {
        (PhysicalType::BYTE_ARRAY, DataType::Utf8) => {
            let strings = values.as_string::<i32>();
            (0..values.len())
                .filter(valid)
                .any(|i| filter.check(strings.value(i)))
        }
        (PhysicalType::INT64, t) if t.is_signed_integer() => {
            any_int_passes::<arrow::datatypes::Int64Type>(filter, values)
        }
        (PhysicalType::INT32, t) if t.is_signed_integer() => {
            any_int_passes::<arrow::datatypes::Int32Type>(filter, values)
        }
        _ => true,
    }
}

/// [`any_passes`] for an integer column stored as `T`; a value that does not fit `T` passes
/// (it cannot be in such a column, but a filter is never the reason a value is missed).
fn any_int_passes<T>(filter: &Sbbf, values: &ArrayRef) -> bool
where
    T: arrow::datatypes::ArrowPrimitiveType,
    T::Native: parquet::data_type::AsBytes,
{
    use arrow::array::AsArray;
    let Ok(ints) = cast(values, &T::DATA_TYPE) else {
        return true;
    };
    let ints = ints.as_primitive::<T>();
    (0..values.len())
        .filter(|&i| values.is_valid(i))
        .any(|i| !ints.is_valid(i) || filter.check(&ints.value(i)))
}
