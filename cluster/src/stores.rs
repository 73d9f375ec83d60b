//! Object stores on an executor, made on first use from the environment: an `s3://bucket`
//! from the `AWS_*` variables every lakectl process reads (endpoint, keys, region,
//! `AWS_ALLOW_HTTP`), a `file://` path from the local disk under the one folder the executor
//! was given (`--file-root`, the lake's folder), and none without it: a plan names the
//! files it reads, and whoever can send one could otherwise read any file the executor can.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use url::Url;

#[derive(Debug, Default)]
pub struct FromEnvironment {
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
    /// The folder `file://` reads stay in; `None`: no `file://` reads.
    file_root: Option<std::path::PathBuf>,
}

impl FromEnvironment {
    pub fn new(file_root: Option<std::path::PathBuf>) -> FromEnvironment {
        FromEnvironment {
            stores: RwLock::default(),
            file_root,
        }
    }
}

/// `scheme://host`: one store per bucket.
fn key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""))
}

impl ObjectStoreRegistry for FromEnvironment {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.stores
            .write()
            .expect("not poisoned")
            .insert(key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        self.stores
            .write()
            .expect("not poisoned")
            .remove(&key(url))
            .ok_or_else(|| DataFusionError::Execution(format!("no object store for {url}")))
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let key = key(url);
        if let Some(store) = self.stores.read().expect("not poisoned").get(&key) {
            return Ok(store.clone());
        }
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "s3" => Arc::new(
                AmazonS3Builder::from_env()
                    .with_bucket_name(url.host_str().unwrap_or_default())
                    .build()
                    .map_err(|e| DataFusionError::External(Box::new(e)))?,
            ),
            "file" => match &self.file_root {
                Some(root) => Arc::new(Rooted::new(root)?),
                None => {
                    return Err(DataFusionError::Execution(
                        "this executor reads no file:// lake: start it with --file-root <the \
                         lake's folder>"
                            .into(),
                    ))
                }
            },
            other => {
                return Err(DataFusionError::Execution(format!(
                    "lakectl's executors read s3:// and file:// lakes, not {other}://"
                )))
            }
        };
        self.stores
            .write()
            .expect("not poisoned")
            .insert(key, store.clone());
        Ok(store)
    }
}

/// The local disk, limited to the files under one folder: any other path is refused.
#[derive(Debug)]
pub struct Rooted {
    inner: LocalFileSystem,
    /// The folder as an object path (absolute, without its leading `/`).
    root: Path,
}

impl Rooted {
    pub fn new(root: &std::path::Path) -> Result<Rooted> {
        let absolute = std::fs::canonicalize(root).map_err(|e| {
            DataFusionError::Execution(format!("--file-root {}: {e}", root.display()))
        })?;
        let root = Path::from_absolute_path(&absolute)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Rooted {
            inner: LocalFileSystem::new(),
            root,
        })
    }

    fn allowed(&self, location: &Path) -> object_store::Result<()> {
        if location.prefix_matches(&self.root) {
            return Ok(());
        }
        Err(object_store::Error::PermissionDenied {
            path: location.to_string(),
            source: format!("outside this executor's --file-root /{}", self.root).into(),
        })
    }
}

impl std::fmt::Display for Rooted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rooted(/{})", self.root)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Rooted {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.allowed(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.allowed(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.allowed(location)?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.allowed(location)?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let root = self.root.clone();
        let checked = locations
            .map(move |location| {
                let location = location?;
                if location.prefix_matches(&root) {
                    Ok(location)
                } else {
                    Err(object_store::Error::PermissionDenied {
                        path: location.to_string(),
                        source: "outside this executor's --file-root".into(),
                    })
                }
            })
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match prefix.map(|p| self.allowed(p)) {
            Some(Ok(())) => self.inner.list(prefix),
            Some(Err(e)) => futures::stream::once(async move { Err(e) }).boxed(),
            None => self.inner.list(Some(&self.root)),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let prefix = prefix.unwrap_or(&self.root);
        self.allowed(prefix)?;
        self.inner.list_with_delimiter(Some(prefix)).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.allowed(from)?;
        self.allowed(to)?;
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn files_outside_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lake")).unwrap();
        std::fs::write(dir.path().join("lake/in.txt"), "in").unwrap();
        std::fs::write(dir.path().join("out.txt"), "out").unwrap();
        let store = Rooted::new(&dir.path().join("lake")).unwrap();
        let path = |p: &std::path::Path| {
            Path::from_absolute_path(std::fs::canonicalize(p).unwrap()).unwrap()
        };
        let inside = store
            .get(&path(&dir.path().join("lake/in.txt")))
            .await
            .unwrap();
        assert_eq!(inside.bytes().await.unwrap().as_ref(), b"in");
        let err = store
            .get(&path(&dir.path().join("out.txt")))
            .await
            .unwrap_err();
        assert!(
            matches!(err, object_store::Error::PermissionDenied { .. }),
            "{err}"
        );
        let passwd = Path::from("etc/passwd");
        assert!(store.get(&passwd).await.is_err());
        let none = FromEnvironment::new(None);
        let url = Url::parse("file:///etc/passwd").unwrap();
        assert!(none.get_store(&url).is_err());
    }
}
