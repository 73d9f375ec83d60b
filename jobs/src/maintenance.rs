//! `lakectl optimize` and `lakectl vacuum`: upkeep for a table of any layer, named
//! `<layer>.<table>` (e.g. `bronze.books`).
//!
//! Both are safe next to a running writer: optimize commits a rewrite that conflicts with no
//! append, and the `txn` versions bronze positions itself from live on in the log.

use lakehouse_core::storage::TableRef;
use lakehouse_core::{lookup, storage, Error, Layer, Pipeline, Result};
use parquet::basic::{Compression, ZstdLevel};

/// The table `<layer>.<table>` names, which must exist, with its layer and name.
async fn existing(
    pipeline: &Pipeline,
    table: &str,
) -> Result<(Layer, String, deltalake::DeltaTable)> {
    let TableRef { layer, name, .. } = TableRef::parse(table).map_err(Error::Input)?;
    let lake = pipeline.lake.open()?;
    let delta = lake.load_table(layer, &name).await?.ok_or_else(|| {
        Error::Input(format!(
            "no table {} in the lake",
            lake.table_url(layer, &name)
        ))
    })?;
    Ok((layer, name, delta))
}

/// Compacts small files into larger ones (delta-rs' default target, 100 MiB; writers compact
/// their own small files into 8-MiB ones as they go, `storage::compact_if_due`). A silver table's
/// new files keep the bloom filters its lookups skip row groups by.
pub async fn optimize(pipeline: &Pipeline, table: &str) -> Result<()> {
    let (layer, name, delta) = existing(pipeline, table).await?;
    let properties = match (layer, pipeline.silver.get(&name)) {
        (Layer::Silver, Some(silver)) => {
            // delta-rs' own compression for optimize, with the filters added.
            let zstd = Compression::ZSTD(ZstdLevel::try_new(4).expect("a valid zstd level"));
            Some(lookup::bloom_writer_properties(
                &silver.lookup_columns(),
                zstd,
            ))
        }
        _ => None,
    };
    let (delta, metrics) = storage::compact(delta, None, properties).await?;
    println!(
        "{table}: {} files compacted into {}, table version {}",
        metrics.num_files_removed,
        metrics.num_files_added,
        delta.version().unwrap_or_default()
    );
    Ok(())
}

/// Deletes files no version within the retention period references.
pub async fn vacuum(
    pipeline: &Pipeline,
    table: &str,
    retention_hours: u64,
    dry_run: bool,
) -> Result<()> {
    let (_, _, delta) = existing(pipeline, table).await?;
    let (_, metrics) = delta
        .vacuum()
        .with_retention_period(chrono::Duration::hours(retention_hours as i64))
        // The user chose the period on the command line; Delta's 7-day floor is a default.
        .with_enforce_retention_duration(false)
        .with_dry_run(dry_run)
        .await?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    println!(
        "{table}: {verb} {} unreferenced files older than {retention_hours} h",
        metrics.files_deleted.len()
    );
    Ok(())
}
