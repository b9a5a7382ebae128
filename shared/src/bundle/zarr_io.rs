//! Small helpers for writing and reading the 1-D arrays of AnnData-Zarr groups with zarrs:
//! the codecs, the AnnData attributes, chunk-parallel writes.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use zarrs::array::BytesToBytesCodecTraits;
use zarrs::array::codec::api as codec_api;
use zarrs::array::codec::{Crc32cCodec, ZstdCodec};
use zarrs::array::{Array, ArrayBuilder, Element, ElementOwned, FillValueMetadata, data_type};
use zarrs::group::GroupBuilder;
use zarrs::storage::AsyncReadableWritableListableStorage;

use crate::error::Error;
use crate::store::zarr::store_error_in;

/// A 1-D array on the store adapter.
pub type ZArray = Array<dyn zarrs::storage::AsyncReadableWritableListableStorageTraits>;

/// Chunks written at once per array.
const WRITE_CONCURRENCY: usize = 16;

/// Turns zarrs' own `_zarrs` attribute off once: anndata should see only AnnData attributes.
fn configure_zarrs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        zarrs::config::global_config_mut().set_include_zarrs_metadata(false);
    });
}

/// Converts a zarrs error into ours, keeping a wrapped store error (and its retryability).
pub fn zarr_err(what: &str, e: impl std::error::Error + 'static) -> Error {
    match store_error_in(&e) {
        Some(se) => Error::Store(se),
        None => Error::zarr(what, &e),
    }
}

/// Attributes of an AnnData element.
pub fn encoding(kind: &str, version: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("encoding-type".into(), json!(kind));
    m.insert("encoding-version".into(), json!(version));
    m
}

/// Writes a group's metadata with `attrs`.
pub async fn write_group(
    storage: &AsyncReadableWritableListableStorage,
    path: &str,
    attrs: Map<String, Value>,
) -> Result<(), Error> {
    configure_zarrs();
    let group = GroupBuilder::new()
        .attributes(attrs)
        .build(storage.clone(), path)
        .map_err(|e| zarr_err(path, e))?;
    group
        .async_store_metadata()
        .await
        .map_err(|e| zarr_err(path, e))
}

/// The element types the bundle arrays use.
pub trait Column: Element + Clone + Send + Sync + 'static {
    /// The zarr data type.
    fn data_type() -> zarrs::array::DataType;
    /// The fill value (padding of the last chunk).
    fn fill() -> Self;
    /// The fill value as zarr metadata.
    fn fill_json() -> Value;
}

macro_rules! numeric_column {
    ($t:ty, $dt:ident) => {
        impl Column for $t {
            fn data_type() -> zarrs::array::DataType {
                data_type::$dt()
            }
            fn fill() -> Self {
                <$t>::default()
            }
            fn fill_json() -> Value {
                json!(0)
            }
        }
    };
}
numeric_column!(u32, uint32);
numeric_column!(i32, int32);
numeric_column!(i64, int64);
numeric_column!(f32, float32);
numeric_column!(f64, float64);

impl Column for bool {
    fn data_type() -> zarrs::array::DataType {
        data_type::bool()
    }
    fn fill() -> Self {
        false
    }
    fn fill_json() -> Value {
        json!(false)
    }
}

impl Column for String {
    fn data_type() -> zarrs::array::DataType {
        data_type::string()
    }
    fn fill() -> Self {
        String::new()
    }
    fn fill_json() -> Value {
        json!("")
    }
}

/// How an array's chunks are stored. Either way every chunk carries a checksum, so a
/// flipped byte is an error naming the chunk, never a wrong count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkCodec {
    /// zstd at level 3 with its checksum: what is kept (bundles, results).
    Zstd,
    /// Uncompressed, with a crc32c checksum: scratch data written once and read once
    /// (a worker's part). Compressing it cost a worker more than decoding its whole
    /// input (zstd compresses at a fraction of the speed it decodes), for bytes that
    /// are deleted once the request is consolidated.
    Checked,
}

impl ChunkCodec {
    fn codecs(self) -> Vec<Arc<dyn BytesToBytesCodecTraits>> {
        match self {
            ChunkCodec::Zstd => vec![Arc::new(ReusedZstd(ZstdCodec::new(3, true)))],
            ChunkCodec::Checked => vec![Arc::new(Crc32cCodec::new())],
        }
    }
}

/// zarrs' zstd codec (the same metadata, the same bytes written), decoding with a
/// decompression context kept per thread: zarrs makes a fresh one per chunk, and for a
/// one-cell SmartSeq2 bundle (7 small chunks) making them cost more than decoding.
#[derive(Debug, Clone)]
struct ReusedZstd(ZstdCodec);

thread_local! {
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

impl ReusedZstd {
    /// Decodes a frame that records its size into a buffer of exactly that size; `None`
    /// where it does not (zarrs' own decoding takes those).
    fn decode_sized(encoded: &[u8]) -> Option<Result<Vec<u8>, std::io::Error>> {
        let mut out = Vec::new();
        Self::decode_into(encoded, &mut out).map(|r| r.map(|()| out))
    }

    /// Decodes a frame that records its size into `out` (cleared first, its capacity
    /// reused), checking the frame's checksum; `None` where the frame does not record
    /// its size.
    fn decode_into(encoded: &[u8], out: &mut Vec<u8>) -> Option<Result<(), std::io::Error>> {
        let size = zstd::zstd_safe::get_frame_content_size(encoded).ok()??;
        let size = usize::try_from(size).ok()?;
        Some(DECOMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            let decompressor = match cell.as_mut() {
                Some(d) => d,
                None => cell.insert(zstd::bulk::Decompressor::new()?),
            };
            out.clear();
            out.reserve(size);
            decompressor.decompress_to_buffer(encoded, out)?;
            Ok(())
        }))
    }
}

impl zarrs::plugin::ExtensionName for ReusedZstd {
    fn name(&self, version: zarrs::plugin::ZarrVersion) -> Option<std::borrow::Cow<'static, str>> {
        self.0.name(version)
    }
}

impl codec_api::CodecTraits for ReusedZstd {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn configuration(
        &self,
        version: zarrs::plugin::ZarrVersion,
        options: &codec_api::CodecMetadataOptions,
    ) -> Option<zarrs::metadata::Configuration> {
        self.0.configuration(version, options)
    }

    fn partial_decoder_capability(&self) -> codec_api::PartialDecoderCapability {
        self.0.partial_decoder_capability()
    }

    fn partial_encoder_capability(&self) -> codec_api::PartialEncoderCapability {
        self.0.partial_encoder_capability()
    }
}

impl BytesToBytesCodecTraits for ReusedZstd {
    fn into_dyn(self: Arc<Self>) -> Arc<dyn BytesToBytesCodecTraits> {
        self as Arc<dyn BytesToBytesCodecTraits>
    }

    fn recommended_concurrency(
        &self,
        decoded: &codec_api::BytesRepresentation,
    ) -> Result<codec_api::RecommendedConcurrency, codec_api::CodecError> {
        self.0.recommended_concurrency(decoded)
    }

    fn encoded_representation(
        &self,
        decoded: &codec_api::BytesRepresentation,
    ) -> codec_api::BytesRepresentation {
        self.0.encoded_representation(decoded)
    }

    fn encode<'a>(
        &self,
        decoded: codec_api::ArrayBytesRaw<'a>,
        options: &codec_api::CodecOptions,
    ) -> Result<codec_api::ArrayBytesRaw<'a>, codec_api::CodecError> {
        self.0.encode(decoded, options)
    }

    fn decode<'a>(
        &self,
        encoded: codec_api::ArrayBytesRaw<'a>,
        decoded: &codec_api::BytesRepresentation,
        options: &codec_api::CodecOptions,
    ) -> Result<codec_api::ArrayBytesRaw<'a>, codec_api::CodecError> {
        match Self::decode_sized(&encoded) {
            Some(result) => Ok(std::borrow::Cow::Owned(result?)),
            None => self.0.decode(encoded, decoded, options),
        }
    }
}

/// The array handle of a 1-D array of `len` elements, `chunk` per chunk, zstd-compressed
/// with a checksum; building it writes nothing.
pub fn array_handle<T: Column>(
    storage: &AsyncReadableWritableListableStorage,
    path: &str,
    len: u64,
    chunk: u64,
    attrs: Map<String, Value>,
) -> Result<ZArray, Error> {
    array_handle_with::<T>(storage, path, len, chunk, attrs, ChunkCodec::Zstd)
}

/// [`array_handle`] with chunks stored as `codec` says.
pub fn array_handle_with<T: Column>(
    storage: &AsyncReadableWritableListableStorage,
    path: &str,
    len: u64,
    chunk: u64,
    attrs: Map<String, Value>,
    codec: ChunkCodec,
) -> Result<ZArray, Error> {
    configure_zarrs();
    let fill: FillValueMetadata =
        serde_json::from_value(T::fill_json()).map_err(|e| Error::zarr(path, e))?;
    let array = ArrayBuilder::new(vec![len], vec![chunk.max(1)], T::data_type(), fill)
        .bytes_to_bytes_codecs(codec.codecs())
        .attributes(attrs)
        .build(storage.clone(), path)
        .map_err(|e| zarr_err(path, e))?;
    Ok(array)
}

/// Stores the chunks holding `values`, which start at the first element of chunk
/// `first_chunk` and run to the end of a chunk or of the array; chunk-aligned writers
/// of disjoint ranges never touch the same object.
pub async fn store_chunks<T: Column>(
    array: &ZArray,
    chunk: u64,
    first_chunk: u64,
    values: &[T],
) -> Result<(), Error> {
    let chunk = chunk.max(1);
    let path = array.path().as_str().to_string();
    let n_chunks = (values.len() as u64).div_ceil(chunk);
    let path = &path;
    // Batches of futures built eagerly: a lazily mapped stream of borrowing closures is
    // not `Send` (which the Lambda runtime needs). Full chunks are borrowed; only the
    // padded last one is a copy.
    let batch = WRITE_CONCURRENCY as u64;
    for first in (0..n_chunks).step_by(WRITE_CONCURRENCY) {
        let writes: Vec<_> = (first..(first + batch).min(n_chunks))
            .map(|i| {
                let start = (i * chunk) as usize;
                let end = (start + chunk as usize).min(values.len());
                let part: std::borrow::Cow<'_, [T]> = if end - start == chunk as usize {
                    std::borrow::Cow::Borrowed(&values[start..end])
                } else {
                    // A regular grid's last chunk is full size on disk, padded with the
                    // fill value.
                    let mut last = values[start..end].to_vec();
                    last.resize(chunk as usize, T::fill());
                    std::borrow::Cow::Owned(last)
                };
                async move {
                    array
                        .async_store_chunk(&[first_chunk + i], part.as_ref())
                        .await
                        .map_err(|e| zarr_err(path, e))
                }
            })
            .collect();
        // Every write settles before an error returns: a dropped one could still land
        // (a file store's blocking write, a request S3 already has), after its writer's
        // cleanup looked.
        for outcome in futures::future::join_all(writes).await {
            outcome?;
        }
    }
    Ok(())
}

/// Writes a complete 1-D array at `path`, `chunk` elements per chunk, with `attrs`.
/// Chunks go first and the array metadata last.
pub async fn write_array<T: Column>(
    storage: &AsyncReadableWritableListableStorage,
    path: &str,
    values: &[T],
    chunk: u64,
    attrs: Map<String, Value>,
) -> Result<(), Error> {
    write_array_with(storage, path, values, chunk, attrs, ChunkCodec::Zstd).await
}

/// [`write_array`] with chunks stored as `codec` says.
pub async fn write_array_with<T: Column>(
    storage: &AsyncReadableWritableListableStorage,
    path: &str,
    values: &[T],
    chunk: u64,
    attrs: Map<String, Value>,
    codec: ChunkCodec,
) -> Result<(), Error> {
    let array = array_handle_with::<T>(storage, path, values.len() as u64, chunk, attrs, codec)?;
    store_chunks(&array, chunk, 0, values).await?;
    array
        .async_store_metadata()
        .await
        .map_err(|e| zarr_err(path, e))
}

/// [`write_array_with`] for scratch data that readers learn of from a marker written
/// after it (a worker's part, then its done marker), stored [`ChunkCodec::Checked`]:
/// its metadata goes with its chunks rather than after them, a round trip less.
pub async fn write_scratch_array<T: Column>(
    storage: &AsyncReadableWritableListableStorage,
    path: &str,
    values: &[T],
    chunk: u64,
    attrs: Map<String, Value>,
) -> Result<(), Error> {
    let array = array_handle_with::<T>(
        storage,
        path,
        values.len() as u64,
        chunk,
        attrs,
        ChunkCodec::Checked,
    )?;
    let (chunks, metadata) = futures::join!(store_chunks(&array, chunk, 0, values), async {
        array
            .async_store_metadata()
            .await
            .map_err(|e| zarr_err(path, e))
    });
    chunks.and(metadata)
}

/// Reads elements `range` of a 1-D array.
pub async fn read_range<T: ElementOwned + Send + Sync>(
    array: &ZArray,
    range: std::ops::Range<u64>,
) -> Result<Vec<T>, Error> {
    if range.is_empty() {
        return Ok(Vec::new());
    }
    array
        .async_retrieve_array_subset::<Vec<T>>(&[range])
        .await
        .map_err(|e| zarr_err(array.path().as_str(), e))
}

/// `range` cut at every multiple of `step` (at least 1) inside it.
pub fn cut_at_multiples(range: std::ops::Range<u64>, step: u64) -> Vec<std::ops::Range<u64>> {
    let step = step.max(1);
    let mut out = Vec::new();
    let mut at = range.start;
    while at < range.end {
        let next = ((at / step + 1) * step).min(range.end);
        out.push(at..next);
        at = next;
    }
    out
}

/// Chunks of one [`read_values`] fetched ahead of the one being appended (those zarrs
/// reads, decoded too).
const CHUNKS_AHEAD: usize = 4;

/// Reads `range` of a 1-D array of plain values, as [`read_range`] does, a chunk at a
/// time: each chunk's decoded bytes are appended straight to the result. zarrs would
/// gather a range of several chunks into a buffer of bytes and then copy that into a
/// `Vec<T>` (a byte buffer is not aligned for `T`): two passes over the values and
/// two fresh buffers to fault in, where this makes one of each. A chunk of an array
/// built by [`array_handle`] is decoded here, into a buffer kept per thread, rather
/// than by zarrs into a fresh one per chunk (and, for a part of a chunk, through its
/// partial decoder's cache): the pages a worker faulted in per chunk cost it about as
/// much as decoding did.
pub async fn read_values<T: bytemuck::Pod>(
    array: &ZArray,
    range: std::ops::Range<u64>,
) -> Result<Vec<T>, Error> {
    use futures::StreamExt;
    if range.is_empty() {
        return Ok(Vec::new());
    }
    let what = || array.path().as_str().to_string();
    let chunk = array
        .chunk_shape(&[0])
        .map_err(|e| zarr_err(&what(), e))?
        .first()
        .map_or(1, |n| n.get());
    let direct = decodes_directly(array);
    let cuts = cut_at_multiples(range.clone(), chunk);
    let mut out: Vec<T> = Vec::with_capacity((range.end - range.start) as usize);
    let mut read = futures::stream::iter(cuts)
        .map(|cut| async move {
            let index = cut.start / chunk;
            if direct {
                // A missing chunk reads as the fill value: zarrs' path gives it.
                if let Some(encoded) = array
                    .async_retrieve_encoded_chunk(&[index])
                    .await
                    .map_err(|e| zarr_err(&what(), e))?
                {
                    return Ok(ChunkRead::Encoded(index, encoded, cut));
                }
            }
            Ok::<_, Error>(ChunkRead::Decoded(decoded_by_zarrs(array, cut).await?))
        })
        .buffered(CHUNKS_AHEAD);
    while let Some(chunk_read) = read.next().await {
        match chunk_read? {
            ChunkRead::Decoded(bytes) => append_values(&mut out, &bytes),
            ChunkRead::Encoded(index, encoded, cut) => {
                let decoded = SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    let result = ReusedZstd::decode_into(&encoded, &mut scratch);
                    // A chunk is stored whole (the last one padded); the cut is a part
                    // of it.
                    let want = chunk as usize * size_of::<T>();
                    let offset = (cut.start - index * chunk) as usize * size_of::<T>();
                    let len = (cut.end - cut.start) as usize * size_of::<T>();
                    let decoded = match result {
                        Some(Ok(())) if scratch.len() == want => {
                            append_values(&mut out, &scratch[offset..offset + len]);
                            Ok(true)
                        }
                        Some(Ok(())) => Err(format!(
                            "chunk {index} decodes to {} bytes, not {want}",
                            scratch.len()
                        )),
                        Some(Err(e)) => Err(format!("chunk {index}: {e}")),
                        None => Ok(false),
                    };
                    if scratch.capacity() > MAX_SCRATCH_BYTES {
                        *scratch = Vec::new();
                    }
                    decoded
                });
                // A frame that does not record its size: zarrs decodes it.
                if !decoded.map_err(|m| Error::zarr(what(), m))? {
                    append_values(&mut out, &decoded_by_zarrs(array, cut).await?);
                }
            }
        }
    }
    if out.len() as u64 != range.end - range.start {
        return Err(Error::zarr(
            what(),
            format!("{} values read of {}", out.len(), range.end - range.start),
        ));
    }
    Ok(out)
}

/// The bytes of `cut` (within one chunk) of a 1-D array of plain values, as zarrs
/// decodes them.
async fn decoded_by_zarrs(array: &ZArray, cut: std::ops::Range<u64>) -> Result<Vec<u8>, Error> {
    let what = || array.path().as_str().to_string();
    let bytes = array
        .async_retrieve_array_subset::<zarrs::array::ArrayBytes<'static>>(&[cut])
        .await
        .map_err(|e| zarr_err(&what(), e))?
        .into_fixed()
        .map_err(|e| zarr_err(&what(), e))?;
    Ok(bytes.into_owned())
}

/// A chunk of a [`read_values`] range: decoded by zarrs, or its stored bytes for
/// [`read_values`] to decode.
enum ChunkRead {
    Decoded(Vec<u8>),
    Encoded(u64, zarrs::storage::Bytes, std::ops::Range<u64>),
}

thread_local! {
    /// The buffer [`read_values`] decodes whole chunks into on this thread.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A decode buffer larger than this is not kept for the next chunk: a bundle's chunks
/// are a few MB, and a worker process lives on between invocations.
const MAX_SCRATCH_BYTES: usize = 64 << 20;

/// Whether [`read_values`] may decode `array`'s whole chunks itself: its chunks are
/// zstd frames of its elements' bytes, as [`array_handle`] builds it (the bytes codec's
/// default is this machine's order, little-endian wherever the service runs). An array
/// opened from stored metadata is decoded by zarrs.
fn decodes_directly(array: &ZArray) -> bool {
    let codecs = array.codecs();
    cfg!(target_endian = "little")
        && codecs.array_to_array_codecs().is_empty()
        && matches!(codecs.bytes_to_bytes_codecs(), [only] if only.as_any().is::<ReusedZstd>())
}

/// Appends the values in `bytes` (whole values, this machine's order) to `out`.
fn append_values<T: bytemuck::Pod>(out: &mut Vec<T>, bytes: &[u8]) {
    match bytemuck::try_cast_slice::<u8, T>(bytes) {
        Ok(values) => out.extend_from_slice(values),
        // A byte buffer need not be aligned for `T`.
        Err(_) => out.extend(
            bytes
                .chunks_exact(size_of::<T>())
                .map(bytemuck::pod_read_unaligned::<T>),
        ),
    }
}

/// Opens a 1-D array.
pub async fn open_array(
    storage: &AsyncReadableWritableListableStorage,
    path: &str,
) -> Result<ZArray, Error> {
    Array::async_open(storage.clone(), path)
        .await
        .map_err(|e| zarr_err(path, e))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::DynStore;
    use crate::store::fs::FsStore;
    use crate::store::zarr::ZarrStore;

    /// 50 values in chunks of 7: the last chunk is padded.
    async fn stored() -> (
        tempfile::TempDir,
        DynStore,
        AsyncReadableWritableListableStorage,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
        let storage = ZarrStore::new(store.clone(), "a").into_storage();
        let values: Vec<u32> = (0..50).map(|i| i * 3 + 1).collect();
        write_array(&storage, "/v", &values, 7, Map::new())
            .await
            .unwrap();
        (dir, store, storage)
    }

    #[tokio::test]
    async fn read_values_decodes_any_range_as_zarrs_does() {
        let (_dir, _store, storage) = stored().await;
        let built = array_handle::<u32>(&storage, "/v", 50, 7, Map::new()).unwrap();
        let opened = open_array(&storage, "/v").await.unwrap();
        assert!(decodes_directly(&built));
        assert!(!decodes_directly(&opened));
        for start in 0..=50u64 {
            for end in start..=50 {
                let want: Vec<u32> = (start as u32..end as u32).map(|i| i * 3 + 1).collect();
                assert_eq!(read_values::<u32>(&built, start..end).await.unwrap(), want);
                assert_eq!(read_values::<u32>(&opened, start..end).await.unwrap(), want);
            }
        }
    }

    #[tokio::test]
    async fn read_values_names_a_corrupt_chunk_and_reads_a_missing_one_as_fill() {
        let (_dir, store, storage) = stored().await;
        let built = array_handle::<u32>(&storage, "/v", 50, 7, Map::new()).unwrap();
        let key = "a/v/c/2";
        let mut bytes = store.get(key).await.unwrap().unwrap().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        store.put(key, bytes.into()).await.unwrap();
        let e = read_values::<u32>(&built, 10..20).await.unwrap_err();
        assert!(e.to_string().contains("chunk 2"), "{e}");
        // Chunks 0 and 1 still read.
        assert_eq!(read_values::<u32>(&built, 0..14).await.unwrap().len(), 14);

        store.delete(key).await.unwrap();
        let read = read_values::<u32>(&built, 12..23).await.unwrap();
        assert_eq!(read[..2], [37, 40]);
        assert_eq!(read[2..9], [0; 7]);
        assert_eq!(read[9..], [64, 67]);
    }
}
