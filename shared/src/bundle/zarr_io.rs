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
        let size = zstd::zstd_safe::get_frame_content_size(encoded).ok()??;
        let size = usize::try_from(size).ok()?;
        Some(DECOMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            let decompressor = match cell.as_mut() {
                Some(d) => d,
                None => cell.insert(zstd::bulk::Decompressor::new()?),
            };
            let mut out = Vec::with_capacity(size);
            decompressor.decompress_to_buffer(encoded, &mut out)?;
            Ok(out)
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
        futures::future::try_join_all(writes).await?;
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
    futures::try_join!(store_chunks(&array, chunk, 0, values), async {
        array
            .async_store_metadata()
            .await
            .map_err(|e| zarr_err(path, e))
    })?;
    Ok(())
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

/// Chunks of one [`read_values`] decoded ahead of the one being appended.
const CHUNKS_AHEAD: usize = 4;

/// Reads `range` of a 1-D array of plain values, as [`read_range`] does, a chunk at a
/// time: each chunk's decoded bytes are appended straight to the result. zarrs would
/// gather a range of several chunks into a buffer of bytes and then copy that into a
/// `Vec<T>` (a byte buffer is not aligned for `T`): two passes over the values and
/// two fresh buffers to fault in, where this makes one of each.
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
    let cuts = cut_at_multiples(range.clone(), chunk);
    let mut out: Vec<T> = Vec::with_capacity((range.end - range.start) as usize);
    let mut decoded = futures::stream::iter(cuts)
        .map(|cut| async move {
            array
                .async_retrieve_array_subset::<zarrs::array::ArrayBytes<'static>>(&[cut])
                .await
        })
        .buffered(CHUNKS_AHEAD);
    while let Some(bytes) = decoded.next().await {
        let bytes = bytes
            .map_err(|e| zarr_err(&what(), e))?
            .into_fixed()
            .map_err(|e| zarr_err(&what(), e))?;
        match bytemuck::try_cast_slice::<u8, T>(&bytes) {
            Ok(values) => out.extend_from_slice(values),
            // A decoded chunk is its own allocation, aligned; a slice of one may not be.
            Err(_) => out.extend(
                bytes
                    .chunks_exact(size_of::<T>())
                    .map(bytemuck::pod_read_unaligned::<T>),
            ),
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

/// Opens a 1-D array.
pub async fn open_array(
    storage: &AsyncReadableWritableListableStorage,
    path: &str,
) -> Result<ZArray, Error> {
    Array::async_open(storage.clone(), path)
        .await
        .map_err(|e| zarr_err(path, e))
}
