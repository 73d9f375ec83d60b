//! A claim, kept in the lake, that one process runs a job: for jobs whose output two
//! processes would each write in full (a Kafka sink sends every row it finds unsent, so two
//! sinks at once send rows twice; two compactions of one table each add its rows again).
//!
//! Claims are numbered files `<lake>/_lakectl/leases/<job>/<epoch>.json`, each written with a
//! create-only PUT (one winner among racing writers, on S3 and on a local disk). The newest
//! epoch is the claim. Its holder rewrites it every [`RENEW_EVERY`]; it is free when
//! released, when not renewed for [`EXPIRES_AFTER`], or — on the same host — when the process
//! that wrote it is gone (a `kill -9` frees it at once for the restarted process). A process
//! takes a free claim by writing the next epoch, and a holder that finds a newer epoch has lost
//! it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::{Error, Result};

/// How often a holder renews its claim.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// A claim not renewed for this long is free.
pub const EXPIRES_AFTER: Duration = Duration::from_secs(30);

/// What a claim file says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Claim {
    host: String,
    pid: u32,
    /// The process's start time (clock ticks since boot): with the pid, names one process.
    started: Option<u64>,
    /// Milliseconds since the epoch.
    renewed_at: i64,
    released: bool,
}

impl Claim {
    fn mine() -> Claim {
        Claim {
            host: hostname(),
            pid: std::process::id(),
            started: process_start(std::process::id()),
            renewed_at: Utc::now().timestamp_millis(),
            released: false,
        }
    }

    /// Whether the process that wrote it may still hold it.
    fn held(&self) -> bool {
        if self.released {
            return false;
        }
        if self.host == hostname() {
            return process_start(self.pid).is_some_and(|s| Some(s) == self.started);
        }
        let age_ms = Utc::now().timestamp_millis() - self.renewed_at;
        age_ms < EXPIRES_AFTER.as_millis() as i64
    }
}

/// A claim this process holds; renewed in the background until it is dropped or released.
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    folder: Path,
    epoch: u64,
    /// When the last renewal succeeded.
    renewed: Arc<Mutex<Instant>>,
    renewer: tokio::task::JoinHandle<()>,
    job: String,
}

impl Lease {
    /// Takes the claim on `job`, kept in `folder` of `store`, or fails (the user's to resolve)
    /// naming the process that holds it. [`Lake::lease`](crate::Lake::lease) keeps a job's
    /// claims in the lake.
    pub async fn acquire_in(store: Arc<dyn ObjectStore>, folder: Path, job: &str) -> Result<Lease> {
        let epoch = match newest(&store, &folder).await? {
            None => 0,
            Some((epoch, claim)) if !claim.held() => epoch + 1,
            Some((_, claim)) => return Err(held_by(job, &claim)),
        };
        let claim = Claim::mine();
        let put = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match store
            .put_opts(&file(&folder, epoch), encode(&claim)?, put)
            .await
        {
            Ok(_) => {}
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                // Another process took it at the same moment.
                let holder = newest(&store, &folder).await?.map(|(_, c)| c);
                return Err(holder.map_or_else(
                    || Error::Input(format!("{job} was claimed by another process just now")),
                    |c| held_by(job, &c),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let renewed = Arc::new(Mutex::new(Instant::now()));
        let renewer = tokio::spawn(renew(store.clone(), file(&folder, epoch), renewed.clone()));
        Ok(Lease {
            store,
            folder,
            epoch,
            renewed,
            renewer,
            job: job.to_string(),
        })
    }

    /// Whether this process still holds the claim: call before writing what only the holder
    /// may. An error when another process has taken it (stop: it runs the job now), or when
    /// renewals failed for so long that another may have.
    pub async fn check(&self) -> Result<()> {
        let since = self.renewed.lock().expect("lease lock").elapsed();
        if since >= EXPIRES_AFTER {
            return Err(Error::unavailable(
                "object store",
                format!(
                    "the claim on {} could not be renewed for {} s; not sending until it is",
                    self.job,
                    since.as_secs()
                ),
            ));
        }
        match self.store.head(&file(&self.folder, self.epoch + 1)).await {
            Ok(_) => Err(Error::Input(format!(
                "another process took over {} (its claim lapsed): this one stops",
                self.job
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the claim up, so the next process need not wait for it to expire.
    pub async fn release(self) {
        self.renewer.abort();
        let claim = Claim {
            released: true,
            ..Claim::mine()
        };
        let path = file(&self.folder, self.epoch);
        let written = match encode(&claim) {
            Ok(payload) => self.store.put(&path, payload).await.map(|_| ()),
            Err(e) => Err(object_store::Error::Generic {
                store: "lease",
                source: e.to_string().into(),
            }),
        };
        if let Err(e) = written {
            warn!(job = %self.job, error = %e, "could not release the claim; it expires by itself");
        }
        // Only the newest claim counts: the one before it goes, so a claim taken often (a
        // table's compactions) keeps its folder at two files.
        if let Some(before) = self.epoch.checked_sub(1) {
            let _ = self.store.delete(&file(&self.folder, before)).await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

async fn renew(store: Arc<dyn ObjectStore>, path: Path, renewed: Arc<Mutex<Instant>>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let written = match encode(&Claim::mine()) {
            Ok(payload) => store.put(&path, payload).await.map(|_| ()),
            Err(_) => continue,
        };
        match written {
            Ok(()) => *renewed.lock().expect("lease lock") = Instant::now(),
            Err(e) => warn!(%path, error = %e, "could not renew a claim; retrying"),
        }
    }
}

fn file(folder: &Path, epoch: u64) -> Path {
    folder.clone().join(format!("{epoch:020}.json"))
}

fn encode(claim: &Claim) -> Result<PutPayload> {
    serde_json::to_vec(claim)
        .map(PutPayload::from)
        .map_err(|e| Error::Internal(format!("claim JSON: {e}")))
}

/// The newest claim in `folder`, if any.
async fn newest(store: &Arc<dyn ObjectStore>, folder: &Path) -> Result<Option<(u64, Claim)>> {
    let listed: Vec<_> = match store.list(Some(folder)).try_collect().await {
        Ok(listed) => listed,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some((epoch, path)) = listed
        .into_iter()
        .filter_map(|m| {
            let name = m
                .location
                .filename()?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()?;
            Some((name, m.location))
        })
        .max_by_key(|(epoch, _)| *epoch)
    else {
        return Ok(None);
    };
    let bytes = store.get(&path).await?.bytes().await?;
    let claim = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Internal(format!("claim {path} is not what lakectl writes: {e}")))?;
    Ok(Some((epoch, claim)))
}

fn held_by(job: &str, claim: &Claim) -> Error {
    Error::Input(format!(
        "{job} is already running: process {} on host {} holds it (renewed {}); two at once \
         would write rows twice — stop that one first, or wait {} s after it stopped",
        claim.pid,
        claim.host,
        DateTime::<Utc>::from_timestamp_millis(claim.renewed_at)
            .map_or_else(|| claim.renewed_at.to_string(), |t| t.to_rfc3339()),
        EXPIRES_AFTER.as_secs()
    ))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; it ends at the last ')'.
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lake() -> (tempfile::TempDir, crate::Lake) {
        let dir = tempfile::tempdir().unwrap();
        let lake = crate::Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        (dir, lake)
    }

    #[tokio::test]
    async fn a_second_claim_is_refused_while_the_first_is_held_and_taken_once_released() {
        let (_dir, lake) = lake();
        let first = lake.lease("sink-x").await.unwrap();
        first.check().await.unwrap();
        let err = lake.lease("sink-x").await.err().unwrap();
        assert!(err.to_string().contains("already running"), "{err}");
        assert!(err.to_string().contains(&std::process::id().to_string()));
        lake.lease("sink-y").await.unwrap();
        first.release().await;
        let second = lake.lease("sink-x").await.unwrap();
        assert_eq!(second.epoch, 1);
        second.check().await.unwrap();
    }

    #[tokio::test]
    async fn a_claim_of_a_dead_process_is_free_and_its_holder_learns_it_lost_it() {
        let (_dir, lake) = lake();
        let held = lake.lease("sink-x").await.unwrap();
        // As a process killed with kill -9 leaves it: this pid, another start time.
        let dead = Claim {
            started: Some(0),
            ..Claim::mine()
        };
        held.store
            .put(&file(&held.folder, held.epoch), encode(&dead).unwrap())
            .await
            .unwrap();
        let taker = lake.lease("sink-x").await.unwrap();
        assert_eq!(taker.epoch, 1);
        let err = held.check().await.unwrap_err();
        assert!(err.to_string().contains("took over"), "{err}");
    }

    #[test]
    fn claims_on_other_hosts_expire_and_this_process_is_alive() {
        let mut other = Claim::mine();
        other.host = "elsewhere".into();
        assert!(other.held());
        other.renewed_at -= EXPIRES_AFTER.as_millis() as i64 + 1;
        assert!(!other.held());
        assert!(Claim::mine().held());
        assert!(process_start(std::process::id()).is_some());
    }
}
