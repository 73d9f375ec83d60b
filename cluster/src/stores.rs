//! Object stores on an executor, made on first use from the environment: an `s3://bucket`
//! from the `AWS_*` variables every lakectl process reads (endpoint, keys, region,
//! `AWS_ALLOW_HTTP`), a `file://` path from the local disk.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use url::Url;

#[derive(Debug, Default)]
pub struct FromEnvironment {
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
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
            "file" => Arc::new(LocalFileSystem::new()),
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
