//! A store that fails on purpose: S3's transient errors, and a crash right after a write.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{Dice, FaultPlan, landing};
use crate::store::{BlobStore, DynStore, ObjectMeta, PutOutcome, StoreError, StoreResult, Upload};

/// Wraps a store with [`FaultPlan::store_error`], [`FaultPlan::store_timeout`] and
/// [`FaultPlan::partial_write`].
#[derive(Debug)]
pub struct FaultyStore {
    inner: DynStore,
    plan: FaultPlan,
    requests: Dice,
    partial: Dice,
}

impl FaultyStore {
    /// `inner`, failing as `plan` says.
    pub fn new(inner: DynStore, plan: FaultPlan) -> Self {
        FaultyStore {
            requests: Dice::new(plan.seed, "store"),
            partial: Dice::new(plan.seed, "partial"),
            inner,
            plan,
        }
    }

    /// Fails a request before it reaches the store, so a retry is always safe: S3's 503
    /// SlowDown, or a timeout after `timeout_ms`.
    async fn before(&self, op: &'static str, key: &str) -> StoreResult<()> {
        let p = &self.plan;
        let roll = self.requests.uniform();
        if roll < p.store_error {
            return Err(StoreError::Transient {
                op,
                key: key.into(),
                message: "503 SlowDown: please reduce your request rate (injected)".into(),
            });
        }
        if roll < p.store_error + p.store_timeout {
            tokio::time::sleep(Duration::from_millis(p.timeout_ms)).await;
            return Err(StoreError::Transient {
                op,
                key: key.into(),
                message: "timed out (injected)".into(),
            });
        }
        Ok(())
    }

    /// After a worker's part write lands, maybe crash its invocation: the part is half
    /// written and no done marker follows.
    async fn after_write(&self, key: &str) -> StoreResult<()> {
        if key.contains("/parts/") && self.partial.flip(self.plan.partial_write) {
            return Err(match super::crash(key).await {
                crate::Error::Store(e) => e,
                other => StoreError::Transient {
                    op: "put",
                    key: key.into(),
                    message: other.to_string(),
                },
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl BlobStore for FaultyStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        self.before("get", key).await?;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Option<Bytes>> {
        self.before("get", key).await?;
        self.inner.get_range(key, range).await
    }
    async fn size(&self, key: &str) -> StoreResult<Option<u64>> {
        self.before("head", key).await?;
        self.inner.size(key).await
    }
    async fn put(&self, key: &str, body: Bytes) -> StoreResult<()> {
        self.before("put", key).await?;
        let (inner, owned) = (self.inner.clone(), key.to_string());
        landing(async move { inner.put(&owned, body).await }).await?;
        self.after_write(key).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> StoreResult<PutOutcome> {
        self.before("put", key).await?;
        let (inner, owned) = (self.inner.clone(), key.to_string());
        let outcome = landing(async move { inner.put_if_absent(&owned, body).await }).await?;
        self.after_write(key).await?;
        Ok(outcome)
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        self.before("list", prefix).await?;
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.before("delete", key).await?;
        let (inner, owned) = (self.inner.clone(), key.to_string());
        landing(async move { inner.delete(&owned).await }).await
    }
    async fn presign_get(&self, key: &str, expires: Duration) -> StoreResult<String> {
        self.inner.presign_get(key, expires).await
    }
    async fn start_upload(&self, key: &str) -> StoreResult<Arc<dyn Upload>> {
        self.before("upload", key).await?;
        self.inner.start_upload(key).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::retry::Retrying;

    fn memory() -> (tempfile::TempDir, DynStore) {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(crate::store::fs::FsStore::open(dir.path()).unwrap());
        (dir, store)
    }

    #[tokio::test]
    async fn injected_errors_are_transient_and_retries_get_through() {
        let (_dir, inner) = memory();
        let plan = FaultPlan {
            seed: 3,
            store_error: 0.3,
            store_timeout: 0.1,
            timeout_ms: 1,
            ..Default::default()
        };
        let faulty: DynStore = Arc::new(FaultyStore::new(inner.clone(), plan));
        let mut failed = 0;
        for i in 0..200 {
            match faulty
                .put(&format!("k/{i}"), Bytes::from_static(b"x"))
                .await
            {
                Ok(()) => {}
                Err(e) => {
                    assert!(e.is_retryable(), "{e}");
                    failed += 1;
                }
            }
        }
        assert!((50..110).contains(&failed), "{failed} of 200 failed");
        // A failed request was not applied: only the successful puts are there.
        assert_eq!(inner.list("k/").await.unwrap().len(), 200 - failed);
        let retrying: DynStore = Arc::new(Retrying::new(faulty, 8));
        for i in 0..200 {
            retrying
                .put(&format!("r/{i}"), Bytes::from_static(b"x"))
                .await
                .unwrap();
        }
        assert_eq!(inner.list("r/").await.unwrap().len(), 200);
    }
}
