//! A store in this process's memory: for unit tests of the handlers and of pure logic
//! that needs a store, where a directory would only add I/O and clean-up. It passes the
//! same conformance suite as the directory and S3 stores, so a test on it tests the
//! contract, not a convenience.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::{
    BlobStore, ObjectMeta, PutOutcome, StoreError, StoreResult, Upload, validate_key,
    validate_prefix,
};

/// Objects in a sorted map behind one lock: every operation is atomic, as a put is on
/// the other stores.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Arc<Mutex<Objects>>,
}

type Objects = BTreeMap<String, (Bytes, u64)>;

/// The store has no clock: each write gets the next number, which a listing reports as
/// its `modified`, so an overwrite shows as one.
fn next_write() -> u64 {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    WRITES.fetch_add(1, Ordering::Relaxed) + 1
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, Objects> {
        // A panic while the lock was held cannot leave a map half-changed: each
        // operation is one map call.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl BlobStore for MemoryStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        validate_key(key)?;
        Ok(self.objects().get(key).map(|(b, _)| b.clone()))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Option<Bytes>> {
        validate_key(key)?;
        let Some(body) = self.objects().get(key).map(|(b, _)| b.clone()) else {
            return Ok(None);
        };
        let size = body.len() as u64;
        if range.start > size || range.start > range.end {
            return Err(StoreError::InvalidRange {
                key: key.to_string(),
                start: range.start,
                end: range.end,
                size,
            });
        }
        let end = range.end.min(size);
        Ok(Some(body.slice(range.start as usize..end as usize)))
    }

    async fn size(&self, key: &str) -> StoreResult<Option<u64>> {
        validate_key(key)?;
        Ok(self.objects().get(key).map(|(b, _)| b.len() as u64))
    }

    async fn put(&self, key: &str, body: Bytes) -> StoreResult<()> {
        validate_key(key)?;
        self.objects().insert(key.to_string(), (body, next_write()));
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> StoreResult<PutOutcome> {
        validate_key(key)?;
        let mut objects = self.objects();
        if objects.contains_key(key) {
            return Ok(PutOutcome::AlreadyExists);
        }
        objects.insert(key.to_string(), (body, next_write()));
        Ok(PutOutcome::Created)
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        validate_prefix(prefix)?;
        Ok(self
            .objects()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, written))| ObjectMeta {
                key: k.clone(),
                size: v.len() as u64,
                modified: Some(*written),
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        validate_key(key)?;
        self.objects().remove(key);
        Ok(())
    }

    async fn presign_get(&self, key: &str, _expires: Duration) -> StoreResult<String> {
        validate_key(key)?;
        Ok(format!("memory:///{key}"))
    }

    async fn start_upload(&self, key: &str) -> StoreResult<Arc<dyn Upload>> {
        validate_key(key)?;
        Ok(Arc::new(MemoryUpload {
            key: key.to_string(),
            objects: Arc::clone(&self.objects),
            parts: Mutex::default(),
        }))
    }

    fn describe(&self) -> String {
        "memory://".to_string()
    }
}

/// Parts held apart until `complete` puts them together under the key at once.
#[derive(Debug)]
struct MemoryUpload {
    key: String,
    objects: Arc<Mutex<Objects>>,
    parts: Mutex<HashMap<u32, Bytes>>,
}

impl MemoryUpload {
    fn parts(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Bytes>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Upload for MemoryUpload {
    async fn put_part(&self, number: u32, _offset: u64, body: Bytes) -> StoreResult<()> {
        self.parts().insert(number, body);
        Ok(())
    }

    async fn complete(&self, parts: u32) -> StoreResult<()> {
        let held = std::mem::take(&mut *self.parts());
        let mut body = BytesMut::new();
        for n in 1..=parts {
            let part = held.get(&n).ok_or_else(|| StoreError::Permanent {
                op: "complete_upload",
                key: self.key.clone(),
                message: format!("part {n} of {parts} was never written"),
            })?;
            body.extend_from_slice(part);
        }
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        objects.insert(self.key.clone(), (body.freeze(), next_write()));
        Ok(())
    }

    async fn abort(&self) -> StoreResult<()> {
        self.parts().clear();
        Ok(())
    }
}
