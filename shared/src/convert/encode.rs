//! The streaming machinery the conversions share: row blocks read ahead, encoded
//! and gzipped on blocking threads, written in order to one or more sinks.
//!
//! Each block becomes its own gzip member. Concatenated members are one valid gzip file
//! (RFC 1952; zlib's gzread, Python's gzip and R's gzfile read on across members), so
//! blocks compress in parallel and the bytes depend only on where blocks are cut, which
//! [`MatrixSource::blocks`](super::source::MatrixSource::blocks) decides from the matrix.

use std::future::Future;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use futures::stream::{FuturesOrdered, StreamExt};

use crate::error::Error;
use crate::store::DynStore;
use crate::store::writer::ObjectWriter;

/// gzip level of the text outputs: level 4 keeps most of the size gain of the default
/// level 6 at about twice its speed on numeric text.
pub const GZIP_LEVEL: u32 = 4;

/// Where encoded bytes go.
#[async_trait::async_trait]
pub trait ByteSink: Send {
    /// Appends `bytes`.
    async fn put(&mut self, bytes: &[u8]) -> Result<(), Error>;
}

#[async_trait::async_trait]
impl ByteSink for ObjectWriter {
    async fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        Ok(self.write(bytes).await?)
    }
}

/// A local file being written (scratch space of a conversion).
#[derive(Debug)]
pub struct LocalFile {
    path: PathBuf,
    file: tokio::io::BufWriter<tokio::fs::File>,
    len: u64,
}

impl LocalFile {
    /// Creates (truncates) `path`.
    pub async fn create(path: &Path) -> Result<Self, Error> {
        let file = tokio::fs::File::create(path)
            .await
            .map_err(|e| Error::io(path, e))?;
        Ok(LocalFile {
            path: path.to_path_buf(),
            file: tokio::io::BufWriter::with_capacity(1 << 20, file),
            len: 0,
        })
    }

    /// Flushes and closes; returns the path and size.
    pub async fn close(mut self) -> Result<(PathBuf, u64), Error> {
        use tokio::io::AsyncWriteExt;
        self.file
            .flush()
            .await
            .map_err(|e| Error::io(&self.path, e))?;
        Ok((self.path, self.len))
    }
}

#[async_trait::async_trait]
impl ByteSink for LocalFile {
    async fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        use tokio::io::AsyncWriteExt;
        self.len += bytes.len() as u64;
        self.file
            .write_all(bytes)
            .await
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// A fresh directory under `scratch` for one conversion to `format`, removed when
/// dropped.
pub fn scratch_dir(scratch: &Path, format: &str) -> Result<tempfile::TempDir, Error> {
    tempfile::Builder::new()
        .prefix(&format!("cellmatrix-{format}-"))
        .tempdir_in(scratch)
        .map_err(|e| Error::io(scratch, e))
}

/// Streams a local file into `key`; returns its size.
pub async fn upload(store: &DynStore, key: &str, path: &Path) -> Result<u64, Error> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io(path, e))?;
    let mut out = ObjectWriter::new(store.clone(), key);
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let step = match file.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => out.write(&buf[..n]).await.map_err(Error::from),
            Err(e) => Err(Error::io(path, e)),
        };
        if let Err(e) = step {
            // An unfinished upload would linger (and cost) on S3 until aborted.
            out.abort().await;
            return Err(e);
        }
    }
    Ok(out.finish().await?)
}

/// `text` as one gzip member (no name, mtime 0: the same text gives the same bytes).
pub fn gzip(text: &[u8], level: u32) -> Vec<u8> {
    let mut enc = GzBuilder::new().mtime(0).write(
        Vec::with_capacity(text.len() / 4 + 64),
        Compression::new(level),
    );
    enc.write_all(text)
        .and_then(|()| enc.finish())
        .expect("writing to memory cannot fail")
}

/// Blocks encoded at once: one per core, plus one being read.
fn parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Reads every block with `read` (a few ahead), encodes each on a blocking thread with
/// `encode` into one byte string per sink, and writes them to `sinks` in block order.
pub async fn encode_in_order<B, F, Fut, E>(
    blocks: &[Range<u64>],
    read: F,
    encode: E,
    sinks: &mut [&mut dyn ByteSink],
) -> Result<(), Error>
where
    B: Send + 'static,
    F: Fn(Range<u64>) -> Fut,
    Fut: Future<Output = Result<B, Error>>,
    E: Fn(B) -> Result<Vec<Vec<u8>>, Error> + Clone + Send + Sync + 'static,
{
    let limit = parallelism() + 1;
    let mut pending = FuturesOrdered::new();
    let mut next = blocks.iter().cloned();
    loop {
        while pending.len() < limit {
            let Some(range) = next.next() else { break };
            let encode = encode.clone();
            let block = read(range);
            pending.push_back(async move {
                let block = block.await?;
                tokio::task::spawn_blocking(move || encode(block))
                    .await
                    .map_err(|e| Error::Internal(format!("encoding task failed: {e}")))?
            });
        }
        let Some(done) = pending.next().await else {
            break;
        };
        let outputs = done?;
        for (sink, bytes) in sinks.iter_mut().zip(outputs) {
            sink.put(&bytes).await?;
        }
    }
    Ok(())
}

/// Appends `v` in decimal.
pub fn push_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends `v` in decimal.
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends the shortest decimal that reads back as `v` (as f32).
pub fn push_f32(out: &mut Vec<u8>, v: f32) {
    push_float(out, ryu::Buffer::new().format(v));
}

/// Appends the shortest decimal that reads back as `v`.
pub fn push_f64(out: &mut Vec<u8>, v: f64) {
    push_float(out, ryu::Buffer::new().format(v));
}

/// ryu writes integral values as `1.0`; `1` is shorter and what users expect. Non-finite
/// values cannot occur (ingest refuses them) but stay readable: `NaN`, `inf`, `-inf`.
fn push_float(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.strip_suffix(".0").unwrap_or(s).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn numbers() {
        let mut out = Vec::new();
        push_u32(&mut out, 0);
        out.push(b' ');
        push_f32(&mut out, 1.0);
        out.push(b' ');
        push_f32(&mut out, 0.1);
        out.push(b' ');
        push_f64(&mut out, 2.5e-7);
        out.push(b' ');
        push_f64(&mut out, 1e22);
        assert_eq!(String::from_utf8(out).unwrap(), "0 1 0.1 2.5e-7 1e22");
        // What we write reads back exactly.
        for v in [0.1f32, 1.0 / 3.0, 16_777_217.0, f32::MIN_POSITIVE] {
            let mut s = Vec::new();
            push_f32(&mut s, v);
            assert_eq!(std::str::from_utf8(&s).unwrap().parse::<f32>().unwrap(), v);
        }
    }

    #[test]
    fn gzip_members_concatenate() {
        let mut both = gzip(b"hello ", 4);
        both.extend(gzip(b"world", 1));
        assert_eq!(gzip(b"hello ", 4), gzip(b"hello ", 4), "deterministic");
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&both[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello world");
    }
}
