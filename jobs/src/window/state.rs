//! A window job's state between units, kept in the lake at `<lake>/_lakectl/state/window/<window>`:
//! the rows of windows and sessions that are not final yet, and `txn` actions for the source
//! version the state is at and the watermarks (a `txn` version is any 64-bit number: event
//! times are kept in microseconds). Each unit overwrites it whole; final windows' rows leave
//! it, so it stays bounded.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use lakehouse_core::storage::write_with_txns;
use lakehouse_core::table_files;
use lakehouse_core::{Lake, Layer, Result};

use super::assign::Watermarks;

/// The app id of the `txn` action in a window's output, quarantine and state commits: the
/// last source version the commit covers.
pub fn txn_app_id(window: &str) -> String {
    format!("lakectl-window-{window}")
}

/// App ids of the watermark `txn` actions: `<app id>:watermark` (what windows were emitted
/// by), `<app id>:partitions` (how many partition ids follow) and
/// `<app id>:max_event_time:<partition>`.
fn watermark_app_id(window: &str, part: &str) -> String {
    format!("{}:{part}", txn_app_id(window))
}

pub struct State {
    table: DeltaTable,
    window: String,
    /// The last source version folded in; -1 before the first unit.
    pub version: i64,
    pub watermarks: Watermarks,
    /// The rows of windows and sessions still open.
    pub rows: Vec<RecordBatch>,
}

impl State {
    pub async fn load(lake: &Lake, window: &str, delay: i64) -> Result<State> {
        let table = lake
            .table_or_new(Layer::System, &format!("state/window/{window}"))
            .await?;
        let version = lake
            .txn_version(&table, &txn_app_id(window))
            .await?
            .unwrap_or(-1);
        let txn = |part: String| {
            let table = &table;
            async move {
                lake.txn_version(table, &watermark_app_id(window, &part))
                    .await
            }
        };
        let mut watermarks = Watermarks {
            floor: txn("watermark".into()).await?,
            delay,
            ..Default::default()
        };
        for partition in 0..txn("partitions".into()).await?.unwrap_or(0) as i32 {
            if let Some(max) = txn(format!("max_event_time:{partition}")).await? {
                watermarks.max_seen.insert(partition, max);
            }
        }
        let mut rows = Vec::new();
        if table.version().is_some() {
            let files = table_files::live_since(&table, "window state", None).await?;
            for (_, batches) in table_files::read(&table, &files, None).await? {
                rows.extend(batches);
            }
        }
        Ok(State {
            table,
            window: window.to_string(),
            version,
            watermarks,
            rows,
        })
    }

    /// Replaces the state with `rows` (of `schema`) and `watermarks` at source version
    /// `version`.
    pub async fn save(
        self,
        schema: SchemaRef,
        rows: Vec<RecordBatch>,
        version: i64,
        watermarks: &Watermarks,
        checkpoint_interval: u64,
    ) -> Result<()> {
        let app_id = |part: &str| watermark_app_id(&self.window, part);
        let mut txns = vec![(txn_app_id(&self.window), version)];
        if let Some(watermark) = watermarks.floor {
            txns.push((app_id("watermark"), watermark));
        }
        if let Some(last) = watermarks.max_seen.keys().last() {
            txns.push((app_id("partitions"), *last as i64 + 1));
        }
        for (partition, max) in &watermarks.max_seen {
            txns.push((app_id(&format!("max_event_time:{partition}")), *max));
        }
        let rows = if rows.is_empty() {
            vec![RecordBatch::new_empty(schema)]
        } else {
            rows
        };
        write_with_txns(
            self.table,
            rows,
            SaveMode::Overwrite,
            txns,
            &[],
            checkpoint_interval,
            None,
        )
        .await?;
        Ok(())
    }
}
