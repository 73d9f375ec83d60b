//! Where the lake lives. The lake URI picks the object store: a local folder (`file://`),
//! S3 or any S3-compatible server (`s3://bucket/prefix`, configured by `AWS_*`), or
//! `memory://` for tests. Every Delta table of a pipeline is opened through one shared store,
//! and every `memory://` lake of a process is the same store, kept for the life of the process.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, Once, OnceLock};

use arrow::array::RecordBatch;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{Error, Result};
use crate::lake_uri::LakeUri;
use crate::lease::Lease;

/// The medallion layers; each is a folder under the lake root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Bronze,
    Silver,
    Quarantine,
    Gold,
    /// Event-time window and session tables.
    Window,
    /// lakectl's own bookkeeping (run records).
    System,
}

impl Layer {
    pub fn folder(self) -> &'static str {
        match self {
            Layer::Bronze => "bronze",
            Layer::Silver => "silver",
            Layer::Quarantine => "quarantine",
            Layer::Gold => "gold",
            Layer::Window => "window",
            Layer::System => "_lakectl",
        }
    }

    /// The data layer a `<layer>.<table>` name starts with (`_lakectl` is not one).
    pub fn from_folder(folder: &str) -> Option<Layer> {
        [
            Layer::Bronze,
            Layer::Silver,
            Layer::Quarantine,
            Layer::Gold,
            Layer::Window,
        ]
        .into_iter()
        .find(|l| l.folder() == folder)
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.folder())
    }
}

/// A table named `<layer>.<table>` (`silver.books`), parsed once where it is read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct TableRef {
    pub layer: Layer,
    pub name: String,
    text: String,
}

impl TableRef {
    pub fn parse(text: &str) -> std::result::Result<TableRef, String> {
        let (layer, name) = text.split_once('.').ok_or_else(|| {
            format!("name the table as <layer>.<table>, e.g. silver.books (got {text:?})")
        })?;
        let layer = Layer::from_folder(layer).ok_or_else(|| {
            format!("unknown layer {layer:?} in {text:?}: use bronze, silver, quarantine, gold or window")
        })?;
        Ok(TableRef {
            layer,
            name: name.to_string(),
            text: text.to_string(),
        })
    }

    /// `<layer>.<table>`, as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for TableRef {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<TableRef, String> {
        TableRef::parse(&text)
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The lake of one pipeline: its root and the object store behind it.
#[derive(Clone)]
pub struct Lake {
    root: LakeUri,
    options: HashMap<String, String>,
    /// The store with `/` at the bucket (or filesystem) root, as delta-rs expects.
    store: Arc<dyn ObjectStore>,
    /// What this handle (and its clones) read of the tables' logs, kept between units.
    known: Arc<Mutex<Known>>,
    /// For the tables [`Lake::append`] writes.
    upkeep: Upkeep,
}

/// What a lake handle read of its tables' logs. A continuous job polls every few hundred
/// milliseconds, and against S3 every request counts: opening a table afresh reads its
/// checkpoint and every commit since, and delta-rs answers each `txn` lookup by replaying
/// the same again. With ten jobs polling, the chaos harness's S3 server answered ~330
/// requests/s, nearly all re-reads of logs that had not moved.
#[derive(Default)]
struct Known {
    /// Loaded tables by URL, brought up to date by reading only the commits since.
    tables: HashMap<Url, DeltaTable>,
    /// `txn` versions by table URL, at one table version.
    txns: HashMap<Url, KnownTxns>,
}

struct KnownTxns {
    version: i64,
    /// App id → its latest `txn` version (`None`: the table has none).
    apps: HashMap<String, Option<i64>>,
}

/// Commits read one by one to move known `txn` versions forward; a longer gap is replayed
/// from the checkpoint instead.
const TXN_CATCH_UP_COMMITS: i64 = 16;

impl fmt::Debug for Lake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Options hold secrets: never print them.
        f.debug_struct("Lake")
            .field("root", &self.root.url().as_str())
            .finish()
    }
}

impl Lake {
    pub fn open(uri: &str, options: &BTreeMap<String, String>) -> Result<Lake> {
        static REGISTER: Once = Once::new();
        REGISTER.call_once(|| deltalake::aws::register_handlers(None));

        let root = LakeUri::parse(uri).map_err(|m| Error::Input(format!("lake.uri: {m}")))?;
        let options: HashMap<String, String> = options
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let bucket_root = {
            let mut url = root.url().clone();
            url.set_path("/");
            url
        };
        let store: Arc<dyn ObjectStore> = if root.url().scheme() == "memory" {
            // One store per process: a job and the test that checks it open their own handles.
            static MEMORY: OnceLock<Arc<InMemory>> = OnceLock::new();
            MEMORY.get_or_init(Arc::default).clone()
        } else {
            // Building a client does no I/O: any failure here is the configuration's fault.
            let (store, _) = object_store::parse_url_opts(&bucket_root, options.clone())
                .map_err(|e| Error::Input(format!("lake {}: {e}", root.url())))?;
            Arc::from(store)
        };
        Ok(Lake {
            root,
            options,
            store,
            known: Arc::default(),
            upkeep: Upkeep::DEFAULT,
        })
    }

    /// The same lake, its writers keeping tables with `upkeep`.
    pub fn with_upkeep(self, upkeep: Upkeep) -> Lake {
        Lake { upkeep, ..self }
    }

    /// Takes the claim on `job` (one process at a time), kept in `_lakectl/leases/<job>/`.
    pub async fn lease(&self, job: &str) -> Result<Lease> {
        let folder = self.path(&format!("_lakectl/leases/{job}"));
        Lease::acquire_in(self.store().clone(), folder, job).await
    }

    pub fn root(&self) -> &Url {
        self.root.url()
    }

    pub fn is_s3(&self) -> bool {
        matches!(self.root.url().scheme(), "s3" | "s3a")
    }

    /// The object store at the bucket root, and the path of `relative` under the lake root.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn path(&self, relative: &str) -> StorePath {
        let root = self.root.url().path().trim_matches('/');
        let relative = relative.trim_matches('/');
        StorePath::from(if root.is_empty() {
            relative.to_string()
        } else {
            format!("{root}/{relative}")
        })
    }

    /// `<lake>/<layer>/<table>/`.
    pub fn table_url(&self, layer: Layer, table: &str) -> Url {
        self.root
            .url()
            .join(&format!("{}/{}/", layer.folder(), table))
            .expect("table names are checked to be plain identifiers")
    }

    /// Opens a table handle without loading it; works before the table exists.
    pub fn table(&self, layer: Layer, table: &str) -> Result<DeltaTable> {
        let url = self.table_url(layer, table);
        Ok(DeltaTableBuilder::from_url(url.clone())?
            .with_storage_backend(self.store.clone(), url)
            .with_storage_options(self.options.clone())
            .build()?)
    }

    /// Loads the table if it exists; otherwise returns an unloaded handle (`version()` is
    /// `None`) that a write will create the table through. A table this handle loaded before
    /// only reads the commits since (one LIST when there are none).
    pub async fn table_or_new(&self, layer: Layer, table: &str) -> Result<DeltaTable> {
        let url = self.table_url(layer, table);
        let known = self.known().tables.get(&url).cloned();
        if let Some(mut t) = known {
            // Failing that (an outage, say), the fresh load below answers: with the same
            // error, or with the table as it is now.
            if self.refresh(layer, table, &mut t).await.is_ok() {
                self.known().tables.insert(url, t.clone());
                return Ok(t);
            }
        }
        let mut t = self.table(layer, table)?;
        if t.verify_deltatable_existence().await? {
            t.load().await?;
            self.known().tables.insert(url, t.clone());
        }
        Ok(t)
    }

    /// Brings a loaded table handle to the table's latest version. The next commit's file is
    /// looked for first: Delta versions have no gaps, so when it is missing there is nothing
    /// newer, and a poll that finds nothing costs one HEAD instead of a LIST of a `_delta_log`
    /// that grows with every commit.
    pub async fn refresh(&self, layer: Layer, table: &str, t: &mut DeltaTable) -> Result<()> {
        if let Some(version) = t.version() {
            let next = format!(
                "{}/{table}/_delta_log/{:020}.json",
                layer.folder(),
                version + 1
            );
            if let Err(object_store::Error::NotFound { .. }) =
                self.store.head(&self.path(&next)).await
            {
                return Ok(());
            }
        }
        t.update_incremental(None).await?;
        Ok(())
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().expect("lake cache lock")
    }

    /// The version of the `txn` action `app_id` in the loaded `table`: what the writer that
    /// owns that app id last committed. `None` when the table has none, or no version yet.
    /// Answers for a table version this handle saw before come from memory; a few commits
    /// later, from those commits alone.
    pub async fn txn_version(&self, table: &DeltaTable, app_id: &str) -> Result<Option<i64>> {
        let Some(version) = table.version().map(|v| v as i64) else {
            return Ok(None);
        };
        let uri = table.table_url().clone();
        let since = match self.known().txns.get(&uri) {
            Some(k) if k.version == version => match k.apps.get(app_id) {
                Some(answer) => return Ok(*answer),
                None => None,
            },
            Some(k) if k.version < version && version - k.version <= TXN_CATCH_UP_COMMITS => {
                Some(k.version)
            }
            _ => None,
        };
        if let Some(since) = since {
            let newer = txns_in_commits(table, since + 1, version).await?;
            let mut known = self.known();
            if let Some(k) = known.txns.get_mut(&uri).filter(|k| k.version == since) {
                k.apps
                    .extend(newer.into_iter().map(|(app, v)| (app, Some(v))));
                k.version = version;
                if let Some(answer) = k.apps.get(app_id) {
                    return Ok(*answer);
                }
            }
        }
        let answer = txn_version(table, app_id).await?;
        let mut known = self.known();
        let entry = known.txns.entry(uri).or_insert_with(|| KnownTxns {
            version,
            apps: HashMap::new(),
        });
        if entry.version != version {
            if entry.version > version {
                // A caller holding an older snapshot: answer it, keep the newer knowledge.
                return Ok(answer);
            }
            *entry = KnownTxns {
                version,
                apps: HashMap::new(),
            };
        }
        entry.apps.insert(app_id.to_string(), answer);
        Ok(answer)
    }

    /// Opens and loads a table; `None` when it does not exist yet.
    pub async fn load_table(&self, layer: Layer, table: &str) -> Result<Option<DeltaTable>> {
        let t = self.table_or_new(layer, table).await?;
        Ok(t.version().is_some().then_some(t))
    }

    /// Appends `batch` to `<layer>/<table>`, creating the table on the first write (with
    /// checkpoints every `lake.checkpoint_interval` commits: the run and quality logs take
    /// commits of several jobs, and every writer reads the commits since the last; and
    /// compacted every `lake.compact_every`).
    pub async fn append(&self, layer: Layer, table: &str, batch: RecordBatch) -> Result<()> {
        let table = self.table_or_new(layer, table).await?;
        write_with_txns(
            table,
            vec![batch],
            SaveMode::Append,
            Vec::new(),
            &[],
            self.upkeep,
            None,
        )
        .await?;
        Ok(())
    }

    /// Answers whether the lake's bucket/folder is reachable, for `lakectl validate`.
    pub async fn probe(&self) -> Result<()> {
        use futures::TryStreamExt;
        let prefix = self.path("");
        let listing = self.store.list(Some(&prefix)).try_next().await;
        match listing {
            Ok(_) => Ok(()),
            // A local lake folder that does not exist yet is created on the first write.
            Err(object_store::Error::NotFound { .. }) if !self.is_s3() => Ok(()),
            Err(e) => Err(Error::unavailable(
                format!("object store {}", self.root.url()),
                e,
            )),
        }
    }
}

/// [`Lake::txn_version`] by a replay of the log from its checkpoint.
async fn txn_version(table: &DeltaTable, app_id: &str) -> Result<Option<i64>> {
    if table.version().is_none() {
        return Ok(None);
    }
    Ok(table
        .snapshot()?
        .transaction_version(&table.log_store(), app_id)
        .await?)
}

/// The last `txn` version of each app id that commits `first..=last` of `table` carry.
async fn txns_in_commits(
    table: &DeltaTable,
    first: i64,
    last: i64,
) -> Result<HashMap<String, i64>> {
    let name = table.table_url().to_string();
    let mut txns = HashMap::new();
    for version in first..=last {
        for action in crate::table_files::commit_actions(table, &name, version).await? {
            if let deltalake::kernel::Action::Txn(txn) = action {
                txns.insert(txn.app_id, txn.version);
            }
        }
    }
    Ok(txns)
}

/// What a writer does to keep its tables cheap to read as commits pile up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upkeep {
    /// A Delta checkpoint every this many commits (a table property set when it is made).
    pub checkpoint_interval: u64,
    /// Compacts the table's small files after every this many commits (0: never).
    pub compact_every: u64,
}

impl Upkeep {
    /// `lake.checkpoint_interval` and `lake.compact_every` when the pipeline says nothing.
    pub const DEFAULT: Upkeep = Upkeep {
        checkpoint_interval: 10,
        compact_every: 100,
    };
}

/// Auto compaction writes files up to this size, from files below it. Big enough that a
/// stream's small files become few (a 100-ms flush writes some 50 KB), small enough that a
/// compaction takes a fraction of a second; `lakectl optimize` makes the large files.
const COMPACT_TARGET_BYTES: u64 = 8 << 20;

/// Rewrites `table`'s small files into fewer (delta-rs' `optimize`; up to `target` bytes each,
/// its default without; `writer_properties` for the new files), one process at a time: the
/// compaction claims the table (a [`Lease`] in `<table>/_lakectl_compaction/`) and works from
/// the table's latest version once it holds the claim. Two compactions from one version
/// would each commit their rewrite of the same files — delta-rs does not count two removes
/// with `dataChange: false` as a conflict — and the second would add every row again (seen
/// in a chaos run: a writer's auto compaction and `lakectl optimize` 1.5 s apart). A claim
/// another process holds is an error ([`Error::Input`] naming it).
pub async fn compact(
    mut table: DeltaTable,
    target: Option<u64>,
    writer_properties: Option<parquet::file::properties::WriterProperties>,
) -> Result<(DeltaTable, deltalake::operations::optimize::Metrics)> {
    let job = format!("compaction of {}", table.table_url());
    let claim = Lease::acquire_in(
        table.object_store(),
        StorePath::from("_lakectl_compaction"),
        &job,
    )
    .await?;
    let compacted = async {
        table.update_incremental(None).await?;
        let mut optimize = table.optimize();
        if let Some(target) = target.and_then(std::num::NonZeroU64::new) {
            optimize = optimize.with_target_size(target);
        }
        if let Some(properties) = writer_properties {
            optimize = optimize.with_writer_properties(properties);
        }
        Ok::<_, Error>(optimize.await?)
    }
    .await;
    claim.release().await;
    compacted
}

/// Auto compaction, as Delta's `autoCompact`: after a commit whose version is a multiple of
/// `compact_every`, the table's files under [`COMPACT_TARGET_BYTES`] are rewritten into
/// fewer ([`compact`]). Why: every reader and writer of a table re-lists its files (and parses
/// their statistics) after each commit it meets, so a stream that adds a file per commit made
/// every stage slower as the run went on. The rewrite changes no row (`dataChange: false`):
/// readers of the table's commits skip it, and it conflicts with no append. It is upkeep: a
/// failure (another process compacting the table, say) only warns, and the table is returned
/// as it was.
pub async fn compact_if_due(
    table: DeltaTable,
    upkeep: Upkeep,
    writer_properties: Option<parquet::file::properties::WriterProperties>,
) -> DeltaTable {
    let due = upkeep.compact_every > 0
        && table
            .version()
            .is_some_and(|v| v > 0 && v.is_multiple_of(upkeep.compact_every));
    if !due {
        return table;
    }
    let started = std::time::Instant::now();
    match compact(table.clone(), Some(COMPACT_TARGET_BYTES), writer_properties).await {
        Ok((compacted, metrics)) => {
            tracing::debug!(
                table = %compacted.table_url(),
                removed = metrics.num_files_removed,
                added = metrics.num_files_added,
                ms = started.elapsed().as_millis() as u64,
                "compacted small files"
            );
            compacted
        }
        Err(e) => {
            tracing::warn!(table = %table.table_url(), error = %e, "compaction failed; the table keeps its files");
            table
        }
    }
}

/// Writes `batches` with one `txn` action per entry of `txns` (app id, version) in the same
/// commit, creating the table with lakectl's properties when it does not exist and
/// partitioning a new table by `partition_by`, its Parquet files written with
/// `writer_properties` (delta-rs' defaults when `None`). An overwrite may change the schema.
/// An append compacts the table when it is due ([`compact_if_due`]).
pub async fn write_with_txns(
    table: DeltaTable,
    batches: Vec<RecordBatch>,
    mode: SaveMode,
    txns: Vec<(String, i64)>,
    partition_by: &[String],
    upkeep: Upkeep,
    writer_properties: Option<parquet::file::properties::WriterProperties>,
) -> Result<DeltaTable> {
    use deltalake::kernel::transaction::CommitProperties;
    use deltalake::kernel::Transaction;
    let creating = table.version().is_none();
    // An overwrite may change the schema: only an append keeps the declared types.
    let declared = match mode {
        SaveMode::Append if !creating => Some(table.snapshot()?.snapshot().arrow_schema()),
        _ => None,
    };
    let batches = (batches.into_iter())
        .map(|b| crate::delta_types::as_delta_types(b, declared.as_deref()))
        .collect::<Result<Vec<_>>>()?;
    let evolves = !creating && mode == SaveMode::Append && adds_columns(&table, &batches)?;
    let txns = txns
        .into_iter()
        .map(|(app_id, version)| Transaction::new(app_id, version))
        .collect();
    let mut write = table
        .write(batches)
        .with_save_mode(mode)
        .with_commit_properties(CommitProperties::default().with_application_transactions(txns));
    if !partition_by.is_empty() {
        write = write.with_partition_columns(partition_by.to_vec());
    }
    if let Some(properties) = writer_properties.clone() {
        write = write.with_writer_properties(properties);
    }
    if mode == SaveMode::Overwrite {
        write = write.with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite);
    } else if evolves {
        // A record format that gained a field (a new Avro writer version): the table gains a
        // nullable column; older rows read it as NULL.
        write = write.with_schema_mode(deltalake::operations::write::SchemaMode::Merge);
    }
    if creating {
        write = write.with_configuration(table_properties(upkeep.checkpoint_interval));
    }
    let table = crate::metrics::timed_commit(std::future::IntoFuture::into_future(write)).await?;
    Ok(match mode {
        SaveMode::Append => compact_if_due(table, upkeep, writer_properties).await,
        _ => table,
    })
}

/// Whether `batches` have a column the table does not.
fn adds_columns(table: &DeltaTable, batches: &[RecordBatch]) -> Result<bool> {
    let Some(batch) = batches.first() else {
        return Ok(false);
    };
    let existing = table.snapshot()?.snapshot().arrow_schema();
    Ok(batch
        .schema()
        .fields()
        .iter()
        .any(|f| existing.field_with_name(f.name()).is_err()))
}

/// The properties lakectl creates every table with: a Delta checkpoint every
/// `checkpoint_interval` commits keeps the log cheap to open.
pub fn table_properties(checkpoint_interval: u64) -> [(&'static str, Option<String>); 1] {
    [(
        "delta.checkpointInterval",
        Some(checkpoint_interval.to_string()),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_refs_parse_once_and_name_what_is_wrong() {
        let t = TableRef::parse("window.page_views").unwrap();
        assert_eq!(
            (t.layer, t.name.as_str(), t.as_str()),
            (Layer::Window, "page_views", "window.page_views")
        );
        assert!(TableRef::parse("books")
            .unwrap_err()
            .contains("<layer>.<table>"));
        assert!(TableRef::parse("platinum.books")
            .unwrap_err()
            .contains("unknown layer \"platinum\""));
    }

    #[test]
    fn table_urls_follow_the_layer_layout() {
        let lake = Lake::open("s3://lake/pipelines/books", &Default::default()).unwrap();
        assert_eq!(
            lake.table_url(Layer::Bronze, "books").as_str(),
            "s3://lake/pipelines/books/bronze/books/"
        );
        assert_eq!(
            lake.path("silver/books").as_ref(),
            "pipelines/books/silver/books"
        );
    }

    #[test]
    fn incomplete_credentials_are_a_user_error() {
        let mut opts = BTreeMap::new();
        opts.insert("aws_secret_access_key".to_string(), "hunter2".to_string());
        let err = Lake::open("s3://lake", &opts).unwrap_err();
        assert_eq!(err.fault(), crate::Fault::User, "{err}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn debug_output_hides_storage_options() {
        let mut opts = BTreeMap::new();
        opts.insert("aws_access_key_id".to_string(), "AKIA".to_string());
        opts.insert("aws_secret_access_key".to_string(), "hunter2".to_string());
        let lake = Lake::open("s3://lake", &opts).unwrap();
        assert!(!format!("{lake:?}").contains("hunter2"));
    }
}
