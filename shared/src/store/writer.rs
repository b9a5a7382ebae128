//! Writing one large object as a stream of bytes: buffered into parts, a few parts in
//! flight at once, a plain `put` when the whole object fits in one part.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;

use super::{DynStore, MAX_PARTS, MIN_PART_BYTES, StoreError, StoreResult, Upload};

/// Bytes per part: 10,000 parts of 16 MiB make 156 GiB, beyond any matrix we write.
pub const PART_BYTES: usize = 16 << 20;
/// Parts uploaded at once; with the part being filled this bounds the writer's memory
/// to about five parts.
const PARTS_IN_FLIGHT: usize = 4;

/// Streams bytes into one object of a store. Nothing is visible under the key until
/// [`finish`](Self::finish) returns; on an error, call [`abort`](Self::abort).
#[derive(Debug)]
pub struct ObjectWriter {
    store: DynStore,
    key: String,
    part_bytes: usize,
    buf: BytesMut,
    upload: Option<Arc<dyn Upload>>,
    parts: u32,
    offset: u64,
    in_flight: JoinSet<StoreResult<()>>,
}

impl ObjectWriter {
    /// A writer of `key`.
    pub fn new(store: DynStore, key: impl Into<String>) -> Self {
        Self::with_part_bytes(store, key, PART_BYTES)
    }

    /// A writer with parts of `part_bytes` (at least [`MIN_PART_BYTES`]).
    pub fn with_part_bytes(store: DynStore, key: impl Into<String>, part_bytes: usize) -> Self {
        let part_bytes = part_bytes.max(MIN_PART_BYTES);
        ObjectWriter {
            store,
            key: key.into(),
            part_bytes,
            buf: BytesMut::with_capacity(part_bytes),
            upload: None,
            parts: 0,
            offset: 0,
            in_flight: JoinSet::new(),
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.offset + self.buf.len() as u64
    }

    /// Appends `data`.
    pub async fn write(&mut self, mut data: &[u8]) -> StoreResult<()> {
        while !data.is_empty() {
            let take = (self.part_bytes - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.part_bytes {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    async fn send_part(&mut self) -> StoreResult<()> {
        let upload = match &self.upload {
            Some(u) => u.clone(),
            None => {
                let u = self.store.start_upload(&self.key).await?;
                self.upload = Some(u.clone());
                u
            }
        };
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.join_one().await?;
        }
        if self.parts >= MAX_PARTS {
            return Err(StoreError::Permanent {
                op: "put_part",
                key: self.key.clone(),
                message: format!("more than {MAX_PARTS} parts"),
            });
        }
        self.parts += 1;
        let body: Bytes =
            std::mem::replace(&mut self.buf, BytesMut::with_capacity(self.part_bytes)).freeze();
        let (number, offset) = (self.parts, self.offset);
        self.offset += body.len() as u64;
        self.in_flight.spawn(crate::fault::carried(async move {
            upload.put_part(number, offset, body).await
        }));
        Ok(())
    }

    async fn join_one(&mut self) -> StoreResult<()> {
        match self.in_flight.join_next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(StoreError::Transient {
                op: "put_part",
                key: self.key.clone(),
                message: format!("part upload task failed: {e}"),
            }),
            None => Ok(()),
        }
    }

    /// Writes what is buffered and makes the object visible; returns its size.
    pub async fn finish(mut self) -> StoreResult<u64> {
        let size = self.written();
        match self.upload.clone() {
            None => {
                let body = std::mem::take(&mut self.buf).freeze();
                self.store.put(&self.key, body).await?;
            }
            Some(upload) => {
                if !self.buf.is_empty() {
                    self.send_part().await?;
                }
                while !self.in_flight.is_empty() {
                    if let Err(e) = self.join_one().await {
                        let _ = upload.abort().await;
                        return Err(e);
                    }
                }
                if let Err(e) = upload.complete(self.parts).await {
                    let _ = upload.abort().await;
                    return Err(e);
                }
            }
        }
        Ok(size)
    }

    /// Gives up: nothing becomes visible under the key.
    pub async fn abort(mut self) {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        if let Some(upload) = self.upload.take() {
            let _ = upload.abort().await;
        }
    }
}
