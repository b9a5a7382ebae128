//! Adapter from a [`BlobStore`] to zarrs' async storage traits, scoped to one key prefix
//! (a bundle's `matrix.zarr/`, a result's Zarr).
//!
//! Store errors travel through zarrs wrapped in `std::io::Error`, so that
//! [`store_error_in`] can recover them on the way out and keep their retryability.

use std::sync::Arc;

use futures::StreamExt;
use zarrs::storage::byte_range::{ByteRange, ByteRangeIterator};
use zarrs::storage::{
    AsyncListableStorageTraits, AsyncMaybeBytesIterator, AsyncReadableStorageTraits,
    AsyncReadableWritableListableStorage, AsyncWritableStorageTraits, Bytes, MaybeBytes,
    OffsetBytesIterator, StorageError, StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix,
    StorePrefixes,
};

use super::{DynStore, StoreError};

/// A [`BlobStore`](super::BlobStore) seen by zarrs as a store rooted at `prefix`.
#[derive(Debug, Clone)]
pub struct ZarrStore {
    inner: DynStore,
    /// Empty, or ends with `/`.
    prefix: String,
    /// Bytes written through this adapter (and its clones), so a writer knows its
    /// output size without listing it back.
    written: Arc<std::sync::atomic::AtomicU64>,
}

impl ZarrStore {
    /// Zarr keys `k` map to blob keys `prefix/k`.
    pub fn new(inner: DynStore, prefix: &str) -> Self {
        let prefix = match prefix.trim_end_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        ZarrStore {
            inner,
            prefix,
            written: Arc::default(),
        }
    }

    /// Bytes written through this adapter so far.
    pub fn bytes_written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The adapter as zarrs' shared storage handle.
    pub fn into_storage(self) -> AsyncReadableWritableListableStorage {
        Arc::new(self)
    }

    fn blob_key(&self, key: &StoreKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    fn zarr_key(&self, blob_key: &str) -> Result<StoreKey, StorageError> {
        Ok(StoreKey::new(&blob_key[self.prefix.len()..])?)
    }

    async fn keys_under(&self, prefix: &StorePrefix) -> Result<Vec<(StoreKey, u64)>, StorageError> {
        let full = format!("{}{}", self.prefix, prefix.as_str());
        let listed = self.inner.list(&full).await.map_err(wrap)?;
        listed
            .into_iter()
            .map(|m| Ok((self.zarr_key(&m.key)?, m.size)))
            .collect()
    }
}

fn wrap(e: StoreError) -> StorageError {
    StorageError::IOError(Arc::new(std::io::Error::other(e)))
}

/// Finds a [`StoreError`] in an error's source chain (as wrapped by this adapter).
pub fn store_error_in(e: &(dyn std::error::Error + 'static)) -> Option<StoreError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(se) = err.downcast_ref::<StoreError>() {
            return Some(se.clone());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(se) = inner.downcast_ref::<StoreError>()
        {
            return Some(se.clone());
        }
        // zarrs' errors wrap storage errors `transparent`ly, which hides them from
        // `source()`: look inside the variants that carry one.
        let storage = err
            .downcast_ref::<StorageError>()
            .or_else(|| match err.downcast_ref::<zarrs::array::ArrayError>() {
                Some(zarrs::array::ArrayError::StorageError(se)) => Some(se),
                Some(zarrs::array::ArrayError::CodecError(
                    zarrs::array::CodecError::StorageError(se),
                )) => Some(se),
                _ => None,
            })
            .or_else(
                || match err.downcast_ref::<zarrs::array::ArrayCreateError>() {
                    Some(zarrs::array::ArrayCreateError::StorageError(se)) => Some(se),
                    _ => None,
                },
            );
        if let Some(StorageError::IOError(io)) = storage
            && let Some(inner) = io.get_ref()
            && let Some(se) = inner.downcast_ref::<StoreError>()
        {
            return Some(se.clone());
        }
        cur = err.source();
    }
    None
}

impl ZarrStore {
    /// Reads ranges that start at an offset, without a size lookup; `None` if the
    /// object does not exist.
    async fn get_from_start<'a>(
        &'a self,
        blob_key: &str,
        ranges: &[ByteRange],
    ) -> Result<AsyncMaybeBytesIterator<'a>, StorageError> {
        let mut out = Vec::with_capacity(ranges.len());
        let mut whole: Option<bytes::Bytes> = None;
        for (i, range) in ranges.iter().enumerate() {
            let got = match *range {
                ByteRange::FromStart(offset, Some(len)) => {
                    let got = self
                        .inner
                        .get_range(blob_key, offset..offset + len)
                        .await
                        .map_err(wrap)?;
                    // A store returns what there is of a range that runs past the end
                    // (S3 does); zarrs takes that for an error, as the size check did.
                    if let Some(bytes) = &got
                        && bytes.len() as u64 != len
                    {
                        return Err(StorageError::Other(format!(
                            "byte range {range:?} is outside {blob_key} ({} bytes from {offset})",
                            bytes.len()
                        )));
                    }
                    got
                }
                ByteRange::FromStart(offset, None) => {
                    if whole.is_none() {
                        whole = self.inner.get(blob_key).await.map_err(wrap)?;
                    }
                    match &whole {
                        Some(all) if offset <= all.len() as u64 => {
                            Some(all.slice(offset as usize..))
                        }
                        Some(all) => {
                            return Err(StorageError::Other(format!(
                                "byte range {range:?} is outside {blob_key} ({} bytes)",
                                all.len()
                            )));
                        }
                        None => None,
                    }
                }
                ByteRange::Suffix(_) => unreachable!("suffixes are read after a size lookup"),
            };
            match got {
                Some(bytes) => out.push(Ok(bytes)),
                None if i == 0 => return Ok(None),
                None => {
                    return Err(StorageError::Other(format!(
                        "{blob_key} vanished while being read"
                    )));
                }
            }
        }
        Ok(Some(futures::stream::iter(out).boxed()))
    }
}

#[async_trait::async_trait]
impl AsyncReadableStorageTraits for ZarrStore {
    async fn get(&self, key: &StoreKey) -> Result<MaybeBytes, StorageError> {
        self.inner.get(&self.blob_key(key)).await.map_err(wrap)
    }

    async fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<AsyncMaybeBytesIterator<'a>, StorageError> {
        let blob_key = self.blob_key(key);
        let ranges: Vec<ByteRange> = byte_ranges.collect();
        // Only a suffix needs the object's size first. Anything else is read straight
        // away: on S3 a size lookup is a round trip of its own, in series with the read,
        // and a bundle's small arrays are read this way once per slice.
        if !ranges.iter().any(|r| matches!(r, ByteRange::Suffix(_))) {
            return self.get_from_start(&blob_key, &ranges).await;
        }
        let Some(size) = self.inner.size(&blob_key).await.map_err(wrap)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for range in ranges {
            let r = range.to_range(size);
            if range.end(size) > size || r.start > r.end {
                return Err(StorageError::Other(format!(
                    "byte range {range:?} is outside {blob_key} ({size} bytes)"
                )));
            }
            let bytes = self
                .inner
                .get_range(&blob_key, r)
                .await
                .map_err(wrap)?
                .ok_or_else(|| {
                    StorageError::Other(format!("{blob_key} vanished while being read"))
                })?;
            out.push(Ok(bytes));
        }
        Ok(Some(futures::stream::iter(out).boxed()))
    }

    async fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.inner.size(&self.blob_key(key)).await.map_err(wrap)
    }

    fn supports_get_partial(&self) -> bool {
        true
    }
}

#[async_trait::async_trait]
impl AsyncWritableStorageTraits for ZarrStore {
    async fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        let len = value.len() as u64;
        self.inner
            .put(&self.blob_key(key), value)
            .await
            .map_err(wrap)?;
        self.written
            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn set_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        offset_values: OffsetBytesIterator<'a>,
    ) -> Result<(), StorageError> {
        // Object stores have no partial writes: read, patch, write back.
        zarrs::storage::async_store_set_partial_many(self, key, offset_values).await
    }

    async fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.inner.delete(&self.blob_key(key)).await.map_err(wrap)
    }

    async fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        for (key, _) in self.keys_under(prefix).await? {
            self.erase(&key).await?;
        }
        Ok(())
    }

    fn supports_set_partial(&self) -> bool {
        false
    }
}

#[async_trait::async_trait]
impl AsyncListableStorageTraits for ZarrStore {
    async fn list(&self) -> Result<StoreKeys, StorageError> {
        self.list_prefix(&StorePrefix::root()).await
    }

    async fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        Ok(self
            .keys_under(prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    async fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        let mut keys = Vec::new();
        let mut prefixes = std::collections::BTreeSet::new();
        for (key, _) in self.keys_under(prefix).await? {
            let rest = &key.as_str()[prefix.as_str().len()..];
            match rest.split_once('/') {
                Some((dir, _)) => {
                    prefixes.insert(format!("{}{dir}/", prefix.as_str()));
                }
                None => keys.push(key),
            }
        }
        let prefixes: StorePrefixes = prefixes
            .into_iter()
            .map(StorePrefix::new)
            .collect::<Result<_, _>>()?;
        Ok(StoreKeysPrefixes::new(keys, prefixes))
    }

    async fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        Ok(self.keys_under(prefix).await?.iter().map(|(_, s)| s).sum())
    }
}
