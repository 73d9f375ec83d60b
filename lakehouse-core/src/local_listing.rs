//! A local lake's object store: object_store's `LocalFileSystem`, with a listing from an offset
//! that skips the entries at or before it by name.
//!
//! Why: Delta readers and writers list a table's `_delta_log` from their version after every
//! commit they meet. `LocalFileSystem` answers that by walking the whole folder and turning
//! each entry's file path into an object path (a URL parse) before comparing it with the
//! offset, so each update cost O(commits so far): a fifth of the window jobs' CPU in a
//! 10-minute stream with a commit every 100 ms. Here the folder is read once for names, the
//! names after the offset are kept, and only those are asked for their metadata (by the inner
//! store, so an entry reads exactly as `LocalFileSystem` lists it). A folder holding a name
//! that is not plain (anything but letters, digits and `._=-`, such as the `#` of
//! `LocalFileSystem`'s upload parts) is listed by the inner store instead.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

#[derive(Debug)]
pub struct LocalListing {
    inner: Arc<LocalFileSystem>,
}

impl Default for LocalListing {
    /// The local filesystem from its root (`file:///`), as `object_store::parse_url` gives it.
    fn default() -> LocalListing {
        LocalListing {
            inner: Arc::new(LocalFileSystem::new()),
        }
    }
}

impl fmt::Display for LocalListing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// The files under `prefix` (a folder of the filesystem root) whose object paths come after
/// `offset`, sorted; `None` when some name there is not plain.
fn names_after(prefix: &Path, offset: &Path) -> std::io::Result<Option<Vec<Path>>> {
    let plain = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._=-".contains(&b))
    };
    if prefix.as_ref().contains('%') {
        return Ok(None); // an escaped name: the inner store maps it back
    }
    let mut found = Vec::new();
    let mut folders = vec![prefix.clone()];
    while let Some(folder) = folders.pop() {
        let dir = PathBuf::from(format!("/{folder}"));
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| plain(n)) else {
                return Ok(None);
            };
            let path = folder.clone().join(name);
            let kind = entry.file_type()?;
            // Symlinks are followed, as `LocalFileSystem` follows them.
            let is_dir = kind.is_dir()
                || (kind.is_symlink() && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()));
            if is_dir {
                folders.push(path);
            } else if path > *offset {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(Some(found))
}

#[async_trait]
impl ObjectStore for LocalListing {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let (prefix, offset) = (prefix.cloned().unwrap_or_default(), offset.clone());
        stream::once(async move {
            let names = {
                let (prefix, offset) = (prefix.clone(), offset.clone());
                tokio::task::spawn_blocking(move || names_after(&prefix, &offset)).await
            };
            match names {
                Ok(Ok(Some(paths))) => stream::iter(paths)
                    .then(move |path| {
                        let inner = inner.clone();
                        async move { inner.head(&path).await }
                    })
                    // Removed since it was read: not listed, as the walk would not have.
                    .filter(|meta| {
                        let gone = matches!(meta, Err(object_store::Error::NotFound { .. }));
                        std::future::ready(!gone)
                    })
                    .boxed(),
                Ok(Ok(None)) => inner.list_with_offset(Some(&prefix), &offset),
                Ok(Err(e)) => stream::once(std::future::ready(Err(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                })))
                .boxed(),
                Err(e) => stream::once(std::future::ready(Err(object_store::Error::JoinError {
                    source: e,
                })))
                .boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    async fn listed(
        store: &dyn ObjectStore,
        prefix: &Path,
        offset: &Path,
    ) -> Vec<(String, u64, Option<String>)> {
        let mut metas: Vec<ObjectMeta> = store
            .list_with_offset(Some(prefix), offset)
            .try_collect()
            .await
            .unwrap();
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        (metas.into_iter())
            .map(|m| (m.location.to_string(), m.size, m.e_tag))
            .collect()
    }

    /// The same objects and metadata as `LocalFileSystem` lists, from any offset, in a folder
    /// with a subfolder and with names that are not plain (then listed by the inner store).
    #[tokio::test]
    async fn lists_what_the_local_filesystem_lists() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::from_filesystem_path(dir.path()).unwrap();
        let log = root.clone().join("_delta_log");
        let ours = LocalListing::default();
        for v in 0..30 {
            let name = format!("{v:020}.json");
            ours.put(
                &log.clone().join(name.as_str()),
                PutPayload::from(vec![b'x'; v]),
            )
            .await
            .unwrap();
        }
        ours.put(
            &log.clone().join("00000000000000000010.checkpoint.parquet"),
            PutPayload::from_static(b"cp"),
        )
        .await
        .unwrap();
        ours.put(
            &log.clone().join("_commits").join("a.json"),
            PutPayload::from_static(b"c"),
        )
        .await
        .unwrap();
        let theirs = LocalFileSystem::new();
        let offsets = [
            "",
            "00000000000000000009.json",
            "00000000000000000010",
            "00000000000000000029.json",
            "zzz",
        ];
        for offset in offsets {
            let offset = log.clone().join(offset);
            let got = listed(&ours, &log, &offset).await;
            assert_eq!(got, listed(&theirs, &log, &offset).await, "from {offset}");
        }
        let from_nine = listed(&ours, &log, &log.clone().join("00000000000000000009.json")).await;
        assert_eq!(
            from_nine.len(),
            22,
            "10 to 29, the checkpoint and _commits/a.json"
        );
        // A folder that does not exist lists nothing, as the inner store's.
        let missing = root.clone().join("nowhere");
        assert!(listed(&ours, &missing, &missing).await.is_empty());
        // A name with `#` (an upload part) sends the folder to the inner store.
        std::fs::write(dir.path().join("_delta_log/x#1"), b"part").unwrap();
        let offset = log.clone().join("00000000000000000028.json");
        assert_eq!(
            listed(&ours, &log, &offset).await,
            listed(&theirs, &log, &offset).await
        );
    }
}
