//! `lakectl run load`: silver and gold Delta tables → PostgreSQL tables, exactly once.
//!
//! One unit loads everything the source has that the target has not, in one Postgres
//! transaction:
//! 1. lock the target (advisory lock), read the source version `lakectl.load_state` records;
//!    equal to the source's version → nothing to do;
//! 2. create the target from the Arrow schema, or add new nullable columns (any other drift is
//!    an error before anything changes);
//! 3. read the files a reader at the recorded version has not seen (all files for `replace`
//!    and for the first load) and binary-COPY their rows — into the target directly when it is
//!    empty or the mode is `append`/`replace` (after a TRUNCATE), else into a temporary
//!    staging table followed by `INSERT … ON CONFLICT DO UPDATE` that skips unchanged rows;
//! 4. record the source version in `lakectl.load_state`, and commit.
//!
//! A crash anywhere before the commit rolls everything back; after it, the next run finds the
//! version recorded. Rows rewritten upstream (a MERGE rewrites whole files) are sent again and
//! the upsert leaves the unchanged ones as they were.

use async_trait::async_trait;
use lakehouse_core::config::{LoadMode, LoadTarget};
use lakehouse_core::runner::crash_point;
use lakehouse_core::table_files::{self, DataFile};
use lakehouse_core::{Error, Job, Lake, Layer, Mode, Pipeline, Result, UnitReport};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::stage;
use tracing::info;
use warehouse::{Copier, TableName};

/// Source files read and sent per round trip: bounds memory to a few files' rows.
const FILES_PER_CHUNK: usize = 4;
const STAGE: &str = "lakectl_stage";

pub struct LoadJob {
    name: String,
    settings: LoadTarget,
    source_layer: Layer,
    source_table: String,
    target: TableName,
    lake: Lake,
    postgres_url: Option<String>,
    postgres_url_env: String,
    /// Connected on first use, inside a unit, so a Postgres that is down at start is retried
    /// like one that goes down mid-load.
    pool: Option<PgPool>,
}

impl LoadJob {
    pub fn new(pipeline: &Pipeline, name: &str) -> Result<LoadJob> {
        let settings = pipeline.load.get(name).cloned().ok_or_else(|| {
            Error::Input(format!(
                "no [load.{name}] in {}",
                pipeline.source_file.display()
            ))
        })?;
        let (layer, table) = (settings.source.split_once('.'))
            .and_then(|(layer, t)| Some((Layer::from_folder(layer)?, t.to_string())))
            .ok_or_else(|| Error::Internal("load sources are checked with the config".into()))?;
        let target_name = settings
            .target
            .clone()
            .unwrap_or_else(|| settings.source.clone());
        let target = TableName::parse(&target_name, layer.folder());
        Ok(LoadJob {
            name: name.to_string(),
            settings,
            source_layer: layer,
            source_table: table,
            target,
            lake: Lake::from_config(&pipeline.lake)?,
            postgres_url: pipeline.postgres_url.clone(),
            postgres_url_env: pipeline.postgres.url_env.clone(),
            pool: None,
        })
    }

    async fn pool(&mut self) -> Result<PgPool> {
        if let Some(pool) = &self.pool {
            return Ok(pool.clone());
        }
        let pool = warehouse::connect(self.postgres_url.as_deref(), &self.postgres_url_env).await?;
        let mut conn = pool.acquire().await.map_err(warehouse::Error::from)?;
        warehouse::ensure_load_state(&mut conn).await?;
        self.pool = Some(pool.clone());
        Ok(pool)
    }

    async fn load(&mut self) -> Result<UnitReport> {
        let Some(source) = self
            .lake
            .load_table(self.source_layer, &self.source_table)
            .await?
        else {
            info!(source = %self.settings.source, "source table does not exist yet: nothing to load");
            return Ok(UnitReport {
                caught_up: true,
                ..Default::default()
            });
        };
        let version = source.version().expect("loaded tables have a version") as i64;
        let pool = self.pool().await?;
        let target = &self.target;
        let mut tx = pool.begin().await.map_err(warehouse::Error::from)?;
        warehouse::lock_target(&mut tx, target).await?;
        let recorded = warehouse::recorded_version(&mut tx, target).await?;
        if recorded == Some(version) {
            return Ok(UnitReport {
                version_read: Some(version),
                caught_up: true,
                ..Default::default()
            });
        }
        let schema = source.snapshot()?.snapshot().arrow_schema();
        let wanted = warehouse::types::columns_for(&schema, target)?;
        let existing = warehouse::existing_columns(&mut tx, target).await?;
        let created = existing.is_none();
        for statement in warehouse::types::schema_changes(
            target,
            &wanted,
            existing.as_deref(),
            &self.settings.key,
        )? {
            warehouse::execute(&mut tx, &statement).await?;
        }
        let mode = self.settings.mode;
        let seen = if mode == LoadMode::Replace {
            None
        } else {
            recorded
        };
        let files = table_files::live_since(&source, &self.settings.source, seen).await?;
        let columns: Vec<String> = wanted.iter().map(|c| c.name.clone()).collect();

        let direct = match mode {
            LoadMode::Append => true,
            LoadMode::Replace => {
                warehouse::execute(&mut tx, &format!("TRUNCATE {target}")).await?;
                true
            }
            LoadMode::Upsert => created || warehouse::is_empty(&mut tx, target).await?,
        };
        let copy_into = if direct {
            target.to_string()
        } else {
            let stage = format!(
                "CREATE TEMPORARY TABLE {STAGE} (LIKE {target} INCLUDING DEFAULTS) ON COMMIT DROP"
            );
            warehouse::execute(&mut tx, &stage).await?;
            STAGE.to_string()
        };
        let copied = self
            .copy_files(&mut tx, &source, &files, &copy_into, &columns)
            .await?;
        let written = if direct {
            copied
        } else {
            let sql = warehouse::upsert_sql(target, STAGE, &columns, &self.settings.key);
            warehouse::execute(&mut tx, &sql).await?
        };
        warehouse::record_version(&mut tx, target, &self.settings.source, version, copied).await?;
        crash_point("load:before_commit");
        tx.commit().await.map_err(warehouse::Error::from)?;
        info!(
            target = %target.plain(),
            version,
            files = files.len(),
            rows_sent = copied,
            rows_written = written,
            "load committed"
        );
        Ok(UnitReport {
            rows_in: copied,
            rows_out: written,
            version_read: Some(version),
            version_written: None,
            caught_up: true,
            ..Default::default()
        })
    }

    async fn copy_files(
        &self,
        conn: &mut sqlx::PgConnection,
        source: &deltalake::DeltaTable,
        files: &[DataFile],
        into: &str,
        columns: &[String],
    ) -> Result<u64> {
        let mut copier = Copier::start(conn, into, columns).await?;
        for chunk in files.chunks(FILES_PER_CHUNK) {
            for (_, batches) in table_files::read(source, chunk, None).await? {
                for batch in batches {
                    copier.send(&batch).await?;
                }
            }
        }
        Ok(copier.finish().await?)
    }
}

#[async_trait]
impl Job for LoadJob {
    fn name(&self) -> String {
        format!("load:{}", self.name)
    }

    async fn run_unit(&mut self, _cancel: &CancellationToken) -> Result<UnitReport> {
        self.load().await
    }
}

/// `lakectl run load [TABLE…]`: each load target in turn on the shared runner.
pub async fn run_tables(pipeline: &Pipeline, tables: &[String], mode: Mode) -> Result<()> {
    let names = stage::table_names(pipeline, "load", pipeline.load.keys(), tables)?;
    let make = |name: &str| LoadJob::new(pipeline, name);
    stage::run_each(pipeline, &names, mode, make, |job: &LoadJob, result| {
        if let Ok(record) = result {
            println!(
                "{}: {} — {} rows sent, {} rows written to {}, source version {}",
                record.job,
                record.outcome.as_str(),
                record.rows_in,
                record.rows_out,
                job.target.plain(),
                stage::version_or(record.last_version_read, "-"),
            );
        }
    })
    .await
}
