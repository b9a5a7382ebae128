//! A store wrapper that counts requests and bytes: the worker's read/write stats, and
//! the tests and benchmarks that assert how many requests a pipeline makes.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::{BlobStore, DynStore, ObjectMeta, PutOutcome, StoreResult};

/// Counts of the requests made through a [`Counting`] store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// GETs, whole or ranged, and size lookups.
    pub gets: u64,
    /// PUTs, conditional or not.
    pub puts: u64,
    /// LISTs (one per call, however many pages).
    pub lists: u64,
    /// DELETEs.
    pub deletes: u64,
    /// Bytes returned by GETs.
    pub bytes_read: u64,
    /// Bytes sent by PUTs.
    pub bytes_written: u64,
}

/// Wraps a store and counts what goes through it; `watch` records the GETs of keys that
/// satisfy a predicate (manifest reads, say).
pub struct Counting {
    inner: DynStore,
    gets: AtomicU64,
    puts: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    watched: Mutex<Vec<String>>,
    watch: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

impl std::fmt::Debug for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counting")
            .field("inner", &self.inner)
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

impl Counting {
    /// Counts requests to `inner`.
    pub fn new(inner: DynStore) -> Self {
        Self::watching(inner, |_| false)
    }

    /// Counts requests to `inner` and records GETs of keys for which `watch` is true.
    pub fn watching(inner: DynStore, watch: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Counting {
            inner,
            gets: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            watched: Mutex::new(Vec::new()),
            watch: Box::new(watch),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            gets: get(&self.gets),
            puts: get(&self.puts),
            lists: get(&self.lists),
            deletes: get(&self.deletes),
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
        }
    }

    /// Takes the watched keys read so far.
    pub fn take_watched(&self) -> Vec<String> {
        std::mem::take(&mut *self.watched.lock().expect("watched lock"))
    }

    fn got(&self, key: &str, body: &Option<Bytes>) {
        self.gets.fetch_add(1, Ordering::Relaxed);
        if let Some(b) = body {
            self.bytes_read.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        if (self.watch)(key) {
            self.watched
                .lock()
                .expect("watched lock")
                .push(key.to_string());
        }
    }

    fn put_bytes(&self, body: &Bytes) {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.bytes_written
            .fetch_add(body.len() as u64, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl BlobStore for Counting {
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        let body = self.inner.get(key).await?;
        self.got(key, &body);
        Ok(body)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Option<Bytes>> {
        let body = self.inner.get_range(key, range).await?;
        self.got(key, &body);
        Ok(body)
    }

    async fn size(&self, key: &str) -> StoreResult<Option<u64>> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.size(key).await
    }

    async fn put(&self, key: &str, body: Bytes) -> StoreResult<()> {
        self.put_bytes(&body);
        self.inner.put(key, body).await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> StoreResult<PutOutcome> {
        self.put_bytes(&body);
        self.inner.put_if_absent(key, body).await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.deletes.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(key).await
    }

    async fn presign_get(&self, key: &str, expires: Duration) -> StoreResult<String> {
        self.inner.presign_get(key, expires).await
    }

    async fn start_upload(&self, key: &str) -> StoreResult<std::sync::Arc<dyn super::Upload>> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.start_upload(key).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
