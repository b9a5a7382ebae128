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

impl Counts {
    /// The requests, by how S3 prices them.
    pub fn requests(&self) -> crate::cost::Requests {
        crate::cost::Requests {
            get: self.gets,
            put: self.puts,
            list: self.lists,
            delete: self.deletes,
        }
    }
}

/// A kind of request, in a [`Logged`] entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// A GET, whole or ranged, or a size lookup (a HEAD).
    Get,
    /// A PUT, conditional or not, or the start of an upload in parts.
    Put,
    /// A LIST.
    List,
    /// A DELETE.
    Delete,
}

/// One request seen by a [`Counting::logging`] store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// What it was.
    pub op: Op,
    /// Its key (the prefix, for a LIST).
    pub key: String,
    /// Bytes returned or sent (0 for a LIST, a DELETE, a HEAD and an upload's start).
    pub bytes: u64,
}

/// Wraps a store and counts what goes through it; `watch` records the GETs of keys that
/// satisfy a predicate (manifest reads, say), and a logging store records every request.
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
    log: Option<Mutex<Vec<Logged>>>,
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
            log: None,
        }
    }

    /// Counts requests to `inner` and records every one of them, for
    /// [`take_log`](Self::take_log): a benchmark's breakdown by key.
    pub fn logging(inner: DynStore) -> Self {
        Counting {
            log: Some(Mutex::new(Vec::new())),
            ..Self::new(inner)
        }
    }

    /// Takes the requests recorded so far (none unless [`logging`](Self::logging)).
    pub fn take_log(&self) -> Vec<Logged> {
        self.log
            .as_ref()
            .map(|l| std::mem::take(&mut *l.lock().expect("log lock")))
            .unwrap_or_default()
    }

    fn record(&self, op: Op, key: &str, bytes: u64) {
        if let Some(log) = &self.log {
            log.lock().expect("log lock").push(Logged {
                op,
                key: key.to_string(),
                bytes,
            });
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
        let n = body.as_ref().map_or(0, |b| b.len() as u64);
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
        self.record(Op::Get, key, n);
        if (self.watch)(key) {
            self.watched
                .lock()
                .expect("watched lock")
                .push(key.to_string());
        }
    }

    fn put_bytes(&self, key: &str, body: &Bytes) {
        self.record(Op::Put, key, body.len() as u64);
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
        self.record(Op::Get, key, 0);
        self.inner.size(key).await
    }

    async fn put(&self, key: &str, body: Bytes) -> StoreResult<()> {
        self.put_bytes(key, &body);
        self.inner.put(key, body).await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> StoreResult<PutOutcome> {
        self.put_bytes(key, &body);
        self.inner.put_if_absent(key, body).await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        self.record(Op::List, prefix, 0);
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.deletes.fetch_add(1, Ordering::Relaxed);
        self.record(Op::Delete, key, 0);
        self.inner.delete(key).await
    }

    async fn presign_get(&self, key: &str, expires: Duration) -> StoreResult<String> {
        self.inner.presign_get(key, expires).await
    }

    async fn start_upload(&self, key: &str) -> StoreResult<std::sync::Arc<dyn super::Upload>> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.record(Op::Put, key, 0);
        self.inner.start_upload(key).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
