//! A blob store on S3 (or any S3-compatible endpoint) via aws-sdk-s3.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;

use super::{BlobStore, ObjectMeta, PutOutcome, StoreResult};

/// Settings of an S3 store.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// A key prefix inside the bucket ("" for none).
    pub prefix: String,
    /// Endpoint override (moto on loopback in tests).
    pub endpoint: Option<String>,
    /// Most requests in flight at once from this store.
    pub max_in_flight: usize,
}

impl S3Config {
    /// Settings from the environment (`CELLMATRIX_S3_ENDPOINT`, `CELLMATRIX_S3_MAX_IN_FLIGHT`).
    pub fn from_env(bucket: &str, prefix: &str) -> Self {
        S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: std::env::var("CELLMATRIX_S3_ENDPOINT").ok(),
            max_in_flight: std::env::var("CELLMATRIX_S3_MAX_IN_FLIGHT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64),
        }
    }
}

/// The S3 store.
#[derive(Debug)]
pub struct S3Store {
    config: S3Config,
}

impl S3Store {
    /// Connects with the standard AWS configuration chain.
    pub async fn connect(config: S3Config) -> crate::Result<Self> {
        Ok(S3Store { config })
    }
}

#[async_trait::async_trait]
impl BlobStore for S3Store {
    async fn get(&self, _key: &str) -> StoreResult<Option<Bytes>> {
        todo!()
    }
    async fn get_range(&self, _key: &str, _range: Range<u64>) -> StoreResult<Option<Bytes>> {
        todo!()
    }
    async fn size(&self, _key: &str) -> StoreResult<Option<u64>> {
        todo!()
    }
    async fn put(&self, _key: &str, _body: Bytes) -> StoreResult<()> {
        todo!()
    }
    async fn put_if_absent(&self, _key: &str, _body: Bytes) -> StoreResult<PutOutcome> {
        todo!()
    }
    async fn list(&self, _prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        todo!()
    }
    async fn delete(&self, _key: &str) -> StoreResult<()> {
        todo!()
    }
    async fn presign_get(&self, _key: &str, _expires: Duration) -> StoreResult<String> {
        todo!()
    }
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.config.bucket, self.config.prefix)
    }
}
