//! Retries of transient store errors (throttling, 5xx, timeouts) with exponential
//! backoff and full jitter, so that a burst of throttled callers spreads out instead of
//! retrying in step.
//!
//! On S3 the SDK already retries each request (standard mode); this layer catches what
//! still fails, on every store: a whole request's worth of work is not redone for one
//! 503. A `put_if_absent` whose first try landed but whose answer was lost comes back
//! as `AlreadyExists`; every caller of it treats that as "someone wrote it".

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;

use super::{BlobStore, DynStore, ObjectMeta, PutOutcome, StoreResult, Upload};

/// First backoff; doubled per attempt up to [`MAX_BACKOFF`], then jittered.
const BASE_BACKOFF: Duration = Duration::from_millis(20);
/// Longest backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A store whose transient errors are retried, up to `attempts` tries per call.
#[derive(Debug)]
pub struct Retrying {
    inner: DynStore,
    attempts: u32,
}

impl Retrying {
    /// `inner`, each call tried up to `attempts` times.
    pub fn new(inner: DynStore, attempts: u32) -> Self {
        Retrying {
            inner,
            attempts: attempts.max(1),
        }
    }
}

/// Runs `call` until it succeeds, fails for good, or has been tried `attempts` times.
async fn retry<T, F, Fut>(attempts: u32, mut call: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut tried = 0;
    loop {
        tried += 1;
        match call().await {
            Err(e) if e.is_retryable() && tried < attempts => {
                let cap = BASE_BACKOFF
                    .saturating_mul(1 << (tried - 1).min(16))
                    .min(MAX_BACKOFF);
                let wait = rand::rng().random_range(Duration::ZERO..=cap);
                tracing::debug!(error = %e, tried, ms = wait.as_millis() as u64, "retrying");
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for Retrying {
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        retry(self.attempts, || self.inner.get(key)).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Option<Bytes>> {
        retry(self.attempts, || self.inner.get_range(key, range.clone())).await
    }
    async fn size(&self, key: &str) -> StoreResult<Option<u64>> {
        retry(self.attempts, || self.inner.size(key)).await
    }
    async fn put(&self, key: &str, body: Bytes) -> StoreResult<()> {
        retry(self.attempts, || self.inner.put(key, body.clone())).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> StoreResult<PutOutcome> {
        retry(self.attempts, || {
            self.inner.put_if_absent(key, body.clone())
        })
        .await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        retry(self.attempts, || self.inner.list(prefix)).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        retry(self.attempts, || self.inner.delete(key)).await
    }
    async fn presign_get(&self, key: &str, expires: Duration) -> StoreResult<String> {
        self.inner.presign_get(key, expires).await
    }
    async fn start_upload(&self, key: &str) -> StoreResult<Arc<dyn Upload>> {
        let upload = retry(self.attempts, || self.inner.start_upload(key)).await?;
        Ok(Arc::new(RetryingUpload {
            inner: upload,
            attempts: self.attempts,
        }))
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// An upload whose part writes and completion are retried too.
#[derive(Debug)]
struct RetryingUpload {
    inner: Arc<dyn Upload>,
    attempts: u32,
}

#[async_trait::async_trait]
impl Upload for RetryingUpload {
    async fn put_part(&self, number: u32, offset: u64, body: Bytes) -> StoreResult<()> {
        retry(self.attempts, || {
            self.inner.put_part(number, offset, body.clone())
        })
        .await
    }
    async fn complete(&self, parts: u32) -> StoreResult<()> {
        retry(self.attempts, || self.inner.complete(parts)).await
    }
    async fn abort(&self) -> StoreResult<()> {
        retry(self.attempts, || self.inner.abort()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::store::StoreError;

    #[tokio::test]
    async fn transient_errors_are_retried_and_permanent_ones_are_not() {
        let calls = AtomicU32::new(0);
        let flaky = || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(StoreError::Transient {
                    op: "get",
                    key: "k".into(),
                    message: "503".into(),
                })
            } else {
                Ok(7)
            }
        };
        assert_eq!(retry(3, flaky).await.unwrap(), 7);
        calls.store(0, Ordering::SeqCst);
        assert!(retry(2, flaky).await.is_err(), "gave up after two tries");
        let permanent = AtomicU32::new(0);
        let err = retry(5, || async {
            permanent.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(StoreError::Permanent {
                op: "get",
                key: "k".into(),
                message: "403".into(),
            })
        })
        .await;
        assert!(err.is_err());
        assert_eq!(permanent.load(Ordering::SeqCst), 1);
    }
}
