//! A blob store in a local directory: the embedded default.
//!
//! Writes go to a temporary file under `<root>/.tmp` first. `put` then renames it over
//! the target (atomic on POSIX); `put_if_absent` hard-links it to the target, which
//! fails if the target exists, so exactly one racing writer wins and no reader ever sees
//! a half-written object. A key cannot be both an object and a prefix of other keys here
//! (`a` and `a/b`), which the service's key layout never needs.

use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::{
    BlobStore, ObjectMeta, PutOutcome, StoreError, StoreResult, Upload, validate_key,
    validate_prefix,
};

const TMP_DIR: &str = ".tmp";

/// Objects up to this size are read without the blocking pool (see `get`).
const INLINE_READ_BYTES: u64 = 64 << 10;

/// A store rooted at a local directory.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    counter: AtomicU64,
}

impl FsStore {
    /// Opens (creating if needed) a store at `root`.
    pub fn open(root: impl AsRef<Path>) -> crate::Result<Self> {
        let root = root.as_ref();
        std::fs::create_dir_all(root.join(TMP_DIR)).map_err(|e| crate::Error::io(root, e))?;
        let root = root.canonicalize().map_err(|e| crate::Error::io(root, e))?;
        Ok(FsStore {
            root,
            counter: AtomicU64::new(0),
        })
    }

    /// The directory holding the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local path of `key` (which need not exist).
    pub fn path_of(&self, key: &str) -> StoreResult<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn tmp_path(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.root.join(TMP_DIR).join(format!(
            "{}-{n}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ))
    }

    async fn blocking<T: Send + 'static>(
        op: &'static str,
        key: &str,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let key_owned = key.to_string();
        match tokio::task::spawn_blocking(f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(io_error(op, &key_owned, e)),
            Err(e) => Err(StoreError::Transient {
                op,
                key: key_owned,
                message: format!("blocking task failed: {e}"),
            }),
        }
    }

    /// Writes `body` to a fresh temporary file. No fsync: the rename or link makes the
    /// write atomic for readers, and durability across power loss is not this store's job.
    fn write_tmp(tmp: &Path, body: &[u8]) -> std::io::Result<()> {
        std::fs::File::create(tmp)?.write_all(body)
    }
}

fn io_error(op: &'static str, key: &str, e: std::io::Error) -> StoreError {
    let message = e.to_string();
    let key = key.to_string();
    match e.kind() {
        ErrorKind::Interrupted | ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            StoreError::Transient { op, key, message }
        }
        _ => StoreError::Permanent { op, key, message },
    }
}

fn not_found_is_none<T>(r: std::io::Result<T>) -> std::io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[async_trait::async_trait]
impl BlobStore for FsStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        let path = self.path_of(key)?;
        // A small object is read on the calling thread: a blocking-pool round trip
        // (a wake-up there and one back) costs more than the read of a file in the page
        // cache, and a one-cell SmartSeq2 bundle is seven such files.
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Ok(m) if m.len() <= INLINE_READ_BYTES => {
                return not_found_is_none(std::fs::read(&path))
                    .map(|b| b.map(Bytes::from))
                    .map_err(|e| io_error("get", key, e));
            }
            _ => {}
        }
        Self::blocking("get", key, move || {
            Ok(not_found_is_none(std::fs::read(&path))?.map(Bytes::from))
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Option<Bytes>> {
        let path = self.path_of(key)?;
        let k = key.to_string();
        let r = Self::blocking("get_range", key, move || {
            let Some(mut f) = not_found_is_none(std::fs::File::open(&path))? else {
                return Ok(None);
            };
            let size = f.metadata()?.len();
            if range.start > size || range.start > range.end {
                return Ok(Some(Err(size)));
            }
            let end = range.end.min(size);
            f.seek(SeekFrom::Start(range.start))?;
            let mut buf = vec![0u8; (end - range.start) as usize];
            f.read_exact(&mut buf)?;
            Ok(Some(Ok(Bytes::from(buf))))
        })
        .await?;
        match r {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(size)) => Err(StoreError::InvalidRange {
                key: k,
                start: range.start,
                end: range.end,
                size,
            }),
        }
    }

    async fn size(&self, key: &str) -> StoreResult<Option<u64>> {
        let path = self.path_of(key)?;
        Self::blocking("size", key, move || {
            Ok(not_found_is_none(std::fs::metadata(&path))?
                .filter(|m| m.is_file())
                .map(|m| m.len()))
        })
        .await
    }

    async fn put(&self, key: &str, body: Bytes) -> StoreResult<()> {
        let path = self.path_of(key)?;
        let tmp = self.tmp_path();
        Self::blocking("put", key, move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            Self::write_tmp(&tmp, &body)?;
            std::fs::rename(&tmp, &path).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        })
        .await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> StoreResult<PutOutcome> {
        let path = self.path_of(key)?;
        let tmp = self.tmp_path();
        Self::blocking("put_if_absent", key, move || {
            if path.exists() {
                return Ok(PutOutcome::AlreadyExists);
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            Self::write_tmp(&tmp, &body)?;
            // link(2) fails with EEXIST if the target exists: the exclusive step.
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => Ok(PutOutcome::Created),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(PutOutcome::AlreadyExists),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        validate_prefix(prefix)?;
        let root = self.root.clone();
        let prefix_owned = prefix.to_string();
        Self::blocking("list", prefix, move || {
            // Start from the deepest directory the prefix names, then filter by the full prefix.
            let dir_part = match prefix_owned.rfind('/') {
                Some(i) => &prefix_owned[..i],
                None => "",
            };
            let mut out = Vec::new();
            let mut stack = vec![root.join(dir_part)];
            while let Some(dir) = stack.pop() {
                let Some(entries) = not_found_is_none(std::fs::read_dir(&dir))? else {
                    continue;
                };
                for entry in entries {
                    let entry = entry?;
                    let path = entry.path();
                    let Ok(rel) = path.strip_prefix(&root) else {
                        continue;
                    };
                    let Some(rel) = rel.to_str() else { continue };
                    if rel == TMP_DIR || rel.starts_with(".tmp/") {
                        continue;
                    }
                    // An entry deleted while the directory is read is gone, not an error:
                    // a listing is no snapshot (nor is S3's), and a request's cleanup
                    // deletes while a late invocation lists to clean up after itself.
                    let Some(ft) = not_found_is_none(entry.file_type())? else {
                        continue;
                    };
                    if ft.is_dir() {
                        let as_prefix = format!("{rel}/");
                        if as_prefix.starts_with(&prefix_owned)
                            || prefix_owned.starts_with(&as_prefix)
                        {
                            stack.push(path);
                        }
                    } else if ft.is_file() && rel.starts_with(&prefix_owned) {
                        let Some(meta) = not_found_is_none(entry.metadata())? else {
                            continue;
                        };
                        let modified = meta
                            .modified()
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map(|d| d.as_millis() as u64);
                        out.push(ObjectMeta {
                            key: rel.to_string(),
                            size: meta.len(),
                            modified,
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let path = self.path_of(key)?;
        Self::blocking("delete", key, move || {
            not_found_is_none(std::fs::remove_file(&path)).map(|_| ())
        })
        .await
    }

    async fn presign_get(&self, key: &str, _expires: Duration) -> StoreResult<String> {
        Ok(format!("file://{}", self.path_of(key)?.display()))
    }

    async fn start_upload(&self, key: &str) -> StoreResult<std::sync::Arc<dyn Upload>> {
        let path = self.path_of(key)?;
        let tmp = self.tmp_path();
        let tmp2 = tmp.clone();
        let file =
            Self::blocking("start_upload", key, move || std::fs::File::create(&tmp2)).await?;
        Ok(std::sync::Arc::new(FsUpload {
            key: key.to_string(),
            path,
            tmp,
            file: std::sync::Arc::new(file),
            done: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

/// A part-wise write into a temporary file, renamed over the key on completion.
#[derive(Debug)]
struct FsUpload {
    key: String,
    path: PathBuf,
    tmp: PathBuf,
    file: std::sync::Arc<std::fs::File>,
    done: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Upload for FsUpload {
    async fn put_part(&self, _number: u32, offset: u64, body: Bytes) -> StoreResult<()> {
        use std::os::unix::fs::FileExt;
        let file = self.file.clone();
        FsStore::blocking("put_part", &self.key, move || {
            file.write_all_at(&body, offset)
        })
        .await
    }

    async fn complete(&self, _parts: u32) -> StoreResult<()> {
        let (path, tmp) = (self.path.clone(), self.tmp.clone());
        FsStore::blocking("complete_upload", &self.key, move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::rename(&tmp, &path)
        })
        .await?;
        self.done.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn abort(&self) -> StoreResult<()> {
        let tmp = self.tmp.clone();
        FsStore::blocking("abort_upload", &self.key, move || {
            not_found_is_none(std::fs::remove_file(&tmp)).map(|_| ())
        })
        .await
    }
}

impl Drop for FsUpload {
    fn drop(&mut self) {
        // An upload dropped without completing leaves no temporary file behind.
        if !self.done.load(Ordering::Relaxed) {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
