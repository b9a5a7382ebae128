//! The blob store: the one narrow trait through which everything reads and writes data.
//!
//! Three implementations: [`fs::FsStore`] (a local directory, the embedded default),
//! [`s3::S3Store`] (any S3 endpoint) and [`memory::MemoryStore`] (unit tests).
//! [`zarr::ZarrStore`] adapts any of them to zarrs' async storage traits.
//! [`conformance`] (feature `testing`) is the test suite every implementation passes.

use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod counting;
pub mod fs;
pub mod memory;
pub mod retry;
pub mod s3;
pub mod writer;
pub mod zarr;

/// What [`BlobStore::put_if_absent`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// This call created the object.
    Created,
    /// The object already existed; it was left unchanged.
    AlreadyExists,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The full key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, in ms on the store's clock (S3's `LastModified`, to the
    /// second; a file's mtime), or for a store without a clock a counter of writes: a
    /// value that changes when the object is written again, so that a listing shows an
    /// invocation's heartbeat. `None` where the store cannot tell.
    pub modified: Option<u64>,
}

/// Errors of a blob store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The key is not acceptable (empty, absolute, `..`, odd characters).
    #[error("invalid store key {key:?}: {reason}")]
    InvalidKey {
        /// The key (clipped).
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A ranged read outside the object.
    #[error("range {start}..{end} of {key} is outside the object ({size} bytes)")]
    InvalidRange {
        /// The key.
        key: String,
        /// Requested start.
        start: u64,
        /// Requested end.
        end: u64,
        /// The object's size.
        size: u64,
    },
    /// A failure that may pass: throttling, 5xx, timeouts, connection resets.
    #[error("{op} {key}: {message} (retryable)")]
    Transient {
        /// The operation.
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// What happened.
        message: String,
    },
    /// A failure that will not pass by retrying: access denied, missing bucket.
    #[error("{op} {key}: {message}")]
    Permanent {
        /// The operation.
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// What happened.
        message: String,
    },
}

impl StoreError {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Transient { .. })
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// A key-value blob store with the few operations the service needs.
///
/// Keys are `/`-separated relative paths, checked by [`validate_key`]. Values are
/// immutable once written by `put_if_absent`; `put` replaces atomically (a reader sees
/// the old or the new value, never a mix).
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + Debug {
    /// The whole object, or `None` if it does not exist.
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>>;

    /// Bytes `range` of the object, or `None` if it does not exist. The end is clamped
    /// to the object's size; a start beyond the end is [`StoreError::InvalidRange`].
    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Option<Bytes>>;

    /// The object's size, or `None` if it does not exist.
    async fn size(&self, key: &str) -> StoreResult<Option<u64>>;

    /// Whether the object exists (a [`size`](Self::size) look-up).
    async fn exists(&self, key: &str) -> StoreResult<bool> {
        Ok(self.size(key).await?.is_some())
    }

    /// Writes the object, replacing any previous value atomically.
    async fn put(&self, key: &str, body: Bytes) -> StoreResult<()>;

    /// Writes the object only if no object has that key. Exactly one of any number of
    /// racing callers gets [`PutOutcome::Created`].
    async fn put_if_absent(&self, key: &str, body: Bytes) -> StoreResult<PutOutcome>;

    /// Every object whose key starts with `prefix`, sorted by key. Pages through
    /// listings of any size.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>>;

    /// Deletes the object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> StoreResult<()>;

    /// A URL from which the object can be downloaded for `expires`, without credentials.
    async fn presign_get(&self, key: &str, expires: Duration) -> StoreResult<String>;

    /// Starts writing the object in parts, for objects too large to hold in memory.
    /// Nothing is visible under `key` until [`Upload::complete`]. [`writer::ObjectWriter`]
    /// is the convenient way to use it.
    async fn start_upload(&self, key: &str) -> StoreResult<Arc<dyn Upload>>;

    /// A short description for logs and messages (`file:///data`, `s3://bucket/prefix`).
    fn describe(&self) -> String;
}

/// Smallest part of an [`Upload`] but the last (S3's limit).
pub const MIN_PART_BYTES: usize = 5 << 20;
/// Most parts of an [`Upload`] (S3's limit).
pub const MAX_PARTS: u32 = 10_000;

/// An object being written in parts: an S3 multipart upload, a temporary file on disk.
#[async_trait::async_trait]
pub trait Upload: Send + Sync + Debug {
    /// Writes part `number` (1-based, at most [`MAX_PARTS`]), which starts at byte
    /// `offset` of the object. Parts may be written concurrently and in any order; every
    /// part but the last holds at least [`MIN_PART_BYTES`].
    async fn put_part(&self, number: u32, offset: u64, body: Bytes) -> StoreResult<()>;

    /// Makes parts `1..=parts` the object, replacing any previous value atomically.
    async fn complete(&self, parts: u32) -> StoreResult<()>;

    /// Drops what was written; the key is left as it was.
    async fn abort(&self) -> StoreResult<()>;
}

/// A shared, dynamically typed store.
pub type DynStore = Arc<dyn BlobStore>;

/// Longest key accepted; S3 allows 1024 bytes and a prefix may be prepended.
pub const MAX_KEY_LEN: usize = 900;

/// Checks that `key` is a safe relative key: non-empty, at most [`MAX_KEY_LEN`] bytes,
/// made of `[A-Za-z0-9._-]` segments separated by single `/`, with no `.` or `..` segment.
pub fn validate_key(key: &str) -> StoreResult<()> {
    let bad = |reason| StoreError::InvalidKey {
        key: crate::text::clip(key),
        reason,
    };
    if key.is_empty() {
        return Err(bad("empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(bad("too long"));
    }
    for seg in key.split('/') {
        if seg.is_empty() {
            return Err(bad("empty path segment (leading, trailing or doubled '/')"));
        }
        if seg == "." || seg == ".." {
            return Err(bad("'.' or '..' segment"));
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(bad("characters other than A-Z a-z 0-9 . _ - /"));
        }
    }
    Ok(())
}

/// Checks a listing prefix: empty, or a valid key optionally ending in `/`.
pub fn validate_prefix(prefix: &str) -> StoreResult<()> {
    match prefix.strip_suffix('/') {
        _ if prefix.is_empty() => Ok(()),
        Some(p) => validate_key(p),
        None => validate_key(prefix),
    }
}

/// Opens a store from a location: a local path (or `file://` URL), or `s3://bucket[/prefix]`.
/// S3 settings (region, credentials, endpoint override) come from the standard AWS
/// environment, plus `CELLMATRIX_S3_ENDPOINT` for an endpoint override.
pub async fn open(location: &str) -> crate::Result<DynStore> {
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let config = s3::S3Config::from_env(bucket, prefix);
        Ok(Arc::new(s3::S3Store::connect(config).await?))
    } else {
        let path = location.strip_prefix("file://").unwrap_or(location);
        Ok(Arc::new(fs::FsStore::open(path)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in [
            "a",
            "bundles/x.y/manifest.json",
            "a/b/c/0",
            "catalog/gen/000000000001.json",
        ] {
            validate_key(ok).unwrap();
        }
        for bad in [
            "", "/a", "a/", "a//b", "../a", "a/../b", "a/./b", "a b", "a%2Fb", "a\\b", "ä",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        assert!(validate_key(&"a".repeat(MAX_KEY_LEN + 1)).is_err());
        validate_prefix("").unwrap();
        validate_prefix("bundles/").unwrap();
        assert!(validate_prefix("/").is_err());
    }
}
