//! A window job's state between units: the rows of windows and sessions that are not final
//! yet, the source version they are at and the watermarks. The job keeps it in memory from
//! unit to unit; the lake holds a copy at `<lake>/_lakectl/state/window/<window>` (the rows,
//! and `txn` actions for the version and the watermarks: a `txn` version is any 64-bit
//! number, event times are kept in microseconds), written whole when it is due and when a
//! run ends. Final windows' rows leave it, so it stays bounded.
//!
//! Writing the copy after every unit rewrote every open row each time (a backfill's open
//! sessions held 370k rows, a live stream's 30-minute sessions every event of the last half
//! hour). It is written once the source rows read since the last copy are as many as that
//! copy held (and at least `batch_rows`): each row is written about once on average. A
//! process that dies replays the units after the copy from the source, which gives the same
//! rows (`mod.rs` says why no commit is made twice).

use arrow::array::RecordBatch;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use lakehouse_core::runner::crash_point;
use lakehouse_core::storage::{write_with_txns, Upkeep};
use lakehouse_core::table_files;
use lakehouse_core::{Lake, Layer, Result};

use super::assign::Watermarks;
use super::open::OpenRows;
use super::running::Running;

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
    /// The rows of windows and sessions still open, as the lake's copy holds them (sessions':
    /// by key, then event time), until the first unit indexes them into `open`.
    pub loaded: Vec<RecordBatch>,
    pub open: Option<OpenRows>,
    /// An `update` window's running aggregates over the open rows (`running.rs`): in memory
    /// only, fed the open rows by the first unit that meets them.
    pub running: Option<Running>,
    /// The source version of the lake's copy, and how many rows it holds.
    saved_version: i64,
    saved_rows: u64,
    /// Source rows read since the lake's copy.
    unsaved_rows_read: u64,
}

impl State {
    /// The lake's copy.
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
        let saved_rows = rows.iter().map(|b| b.num_rows() as u64).sum();
        Ok(State {
            table,
            window: window.to_string(),
            version,
            watermarks,
            loaded: rows,
            open: None,
            running: None,
            saved_version: version,
            saved_rows,
            unsaved_rows_read: 0,
        })
    }

    /// The state after a unit that read `rows_read` source rows up to `version` (its rows
    /// are in `open` already).
    pub fn advance(&mut self, version: i64, watermarks: Watermarks, rows_read: u64) {
        self.version = version;
        self.watermarks = watermarks;
        self.unsaved_rows_read += rows_read;
    }

    /// Whether the lake's copy is due: as many source rows read since it as it holds rows,
    /// and at least `min_rows`.
    pub fn due(&self, min_rows: u64) -> bool {
        self.version > self.saved_version && self.unsaved_rows_read >= self.saved_rows.max(min_rows)
    }

    /// Replaces the lake's copy with this state, unless it is there.
    pub async fn save(&mut self, upkeep: Upkeep) -> Result<()> {
        let Some(open) = (self.version != self.saved_version)
            .then_some(self.open.as_ref())
            .flatten()
        else {
            return Ok(());
        };
        // One batch, empty or not: an overwrite with it empties the copy.
        let rows = open.live_batch()?;
        let app_id = |part: &str| watermark_app_id(&self.window, part);
        let mut txns = vec![(txn_app_id(&self.window), self.version)];
        if let Some(watermark) = self.watermarks.floor {
            txns.push((app_id("watermark"), watermark));
        }
        if let Some(last) = self.watermarks.max_seen.keys().last() {
            txns.push((app_id("partitions"), *last as i64 + 1));
        }
        for (partition, max) in &self.watermarks.max_seen {
            txns.push((app_id(&format!("max_event_time:{partition}")), *max));
        }
        let saved_rows = rows.num_rows() as u64;
        self.table = write_with_txns(
            self.table.clone(),
            vec![rows],
            SaveMode::Overwrite,
            txns,
            &[],
            upkeep,
            None,
        )
        .await?;
        crash_point("window:after_state");
        self.saved_version = self.version;
        self.saved_rows = saved_rows;
        self.unsaved_rows_read = 0;
        Ok(())
    }
}
