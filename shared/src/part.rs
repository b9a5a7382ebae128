//! A worker's part: the rows a task keeps, remapped into the output's gene space,
//! filtered and compacted where they lie, with `indices` and `data` written chunk by
//! chunk as they fill while the task reads on.
//!
//! A 10x task is hundreds of MB of nonzeros. Built whole, the part cost as much memory
//! again and its write began after the last read. Written as its chunks fill, the part
//! holds about a chunk and a piece, and the store's writes run on other threads (the
//! file store's blocking pool, the S3 client's connections) while this one decodes.
//! The chunks are the same bytes either way: a chunk's encoding does not depend on the
//! array's length, which only the last chunk and the metadata, written at the end, need.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::bundle::reader::{Head, Nonzeros, Rows};
use crate::bundle::zarr_io::{
    ChunkCodec, Column, ZArray, array_handle_with, encoding, store_chunks, write_scratch_array,
    zarr_err,
};
use crate::bundle::{ValueType, Values};
use crate::catalog::bundle_field;
use crate::error::Error;
use crate::field::{Field, Level, Value};
use crate::filter::{BundleFacts, CellFacts, Filter};
use crate::genes::Remap;
use crate::obs::{ArrayValues, ObsColumn, ObsValues, category_index};
use crate::state::BundleInfo;
use crate::store::DynStore;
use crate::store::zarr::ZarrStore;

/// Rows per chunk of a part's row arrays, at most.
pub const PART_ROWS_PER_CHUNK: u64 = 1 << 16;

/// The chunk of a part's row array of `len` entries: [`PART_ROWS_PER_CHUNK`], or the
/// whole array when it is shorter. A regular grid stores its last chunk full size, so
/// a fixed chunk padded a small task's every row array (a 2,700-cell part's cell ids
/// to 65,536 strings) and wrote and read the padding.
pub fn part_row_chunk(len: u64) -> u64 {
    len.clamp(1, PART_ROWS_PER_CHUNK)
}

/// Values per chunk of a part's `indices` and `data`, at most.
pub const PART_NNZ_PER_CHUNK: u64 = 1 << 20;

/// Values per chunk of the `indices` and `data` of a part of at most `nnz` nonzeros
/// (its slices' nonzeros, before the filter): as few chunks as [`PART_NNZ_PER_CHUNK`]
/// allows, of equal size, so that an unfiltered part fills its last chunk. A regular
/// grid stores its last chunk full size: at a fixed 2^20, a PBMC3k part (2.3 million
/// nonzeros) wrote, copied and faulted in 0.86 million values of padding per array,
/// a quarter of its bytes. A function of the task alone, so every copy writes the
/// same bytes; the done marker tells the consolidation.
pub fn part_nnz_chunk(nnz: u64) -> u64 {
    if nnz == 0 {
        return PART_NNZ_PER_CHUNK;
    }
    nnz.div_ceil(nnz.div_ceil(PART_NNZ_PER_CHUNK))
}

/// Writes of full chunks in flight at most, each of at least a chunk: with 1M-value
/// chunks of u32 counts, a few tens of MB waiting for the store.
const FLUSHES_IN_FLIGHT: usize = 4;

/// The length a part's `indices` and `data` are given while their chunks are written
/// and their real length is not yet known: any chunk index a part can reach is inside.
const OPEN_LENGTH: u64 = 1 << 50;

/// The rows a task keeps, in output gene space.
#[derive(Debug)]
pub struct PartBuilder {
    /// Row pointers into the whole part (written nonzeros included).
    indptr: Vec<i64>,
    /// `[..kept]`: kept nonzeros not yet written; after them, the open slice's nonzeros
    /// not yet processed (from `raw`).
    indices: Vec<i32>,
    values: Values,
    kept: usize,
    /// Nonzeros already handed to the writer (they precede `indices[0]`).
    written: u64,
    index: Vec<String>,
    columns: Vec<PartColumn>,
    open: Option<OpenSlice>,
    /// Values per chunk of `indices` and `data`.
    chunk: u64,
    writer: Option<ChunkWriter>,
}

/// One obs column of the part: its field, where it is written, and its values.
#[derive(Debug)]
struct PartColumn {
    field: Field,
    name: String,
    /// A categorical's codes by value.
    index: Option<std::collections::BTreeMap<String, i32>>,
    values: ObsValues,
}

/// The path suffixes of a column's arrays, as its kind stores them.
fn kind_suffixes(values: &ObsValues) -> &'static [&'static str] {
    match values {
        ObsValues::Codes(_) => &["/codes"],
        ObsValues::I64 { mask: Some(_), .. } | ObsValues::Bool { mask: Some(_), .. } => {
            &["/values", "/mask"]
        }
        _ => &[""],
    }
}

/// A bundle as the worker's filter sees it: its metadata, nothing known of its cells.
struct InfoFacts<'a>(&'a BundleInfo);

impl BundleFacts for InfoFacts<'_> {
    fn value(&self, field: &Field) -> Value<'_> {
        bundle_field(&self.0.fqid, &self.0.metadata, field)
    }

    fn n_cells(&self) -> u64 {
        self.0.n_cells
    }

    fn cell(&self, _: &Field) -> CellFacts<'_> {
        CellFacts::Unknown
    }
}

/// A slice whose head was added and whose nonzeros are arriving.
#[derive(Debug)]
struct OpenSlice {
    fqid: String,
    /// Row pointers of the slice's rows, from 0.
    indptr: Vec<u64>,
    /// Per row, whether the filter keeps it.
    keep: Vec<bool>,
    next_row: usize,
    /// The slice's nonzeros received so far.
    received: u64,
    /// Buffer position of the slice's nonzero 0: nonzero `p` is at `origin + p`.
    origin: i64,
}

impl PartBuilder {
    /// An empty part of `value_type` with obs columns `columns`; it holds everything
    /// until [`Self::finish`] unless [`Self::streaming_to`] gives it a store.
    pub fn new(value_type: ValueType, columns: &[ObsColumn]) -> Self {
        let columns = columns
            .iter()
            .filter_map(|c| {
                Some(PartColumn {
                    field: c.field()?,
                    name: c.name.clone(),
                    index: category_index(&c.kind),
                    values: c.kind.empty(),
                })
            })
            .collect();
        PartBuilder {
            indptr: vec![0],
            indices: Vec::new(),
            values: Values::empty(value_type),
            kept: 0,
            written: 0,
            index: Vec::new(),
            columns,
            open: None,
            chunk: PART_NNZ_PER_CHUNK,
            writer: None,
        }
    }

    /// Writes full chunks of `indices` and `data` under `prefix` as they fill (each
    /// call to [`Self::flush`]); [`Self::finish`] must then be given the same prefix.
    pub fn streaming_to(mut self, store: &DynStore, prefix: &str) -> Result<Self, Error> {
        self.writer = Some(ChunkWriter::new(
            store,
            prefix,
            self.values.value_type(),
            self.chunk,
        )?);
        Ok(self)
    }

    /// Values per chunk of `indices` and `data` (given before [`Self::streaming_to`]);
    /// [`PART_NNZ_PER_CHUNK`] unless told.
    pub fn with_chunk(mut self, chunk: u64) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// Adds a whole slice: its rows, their cell fields `obs` (by name; a field the
    /// bundle lacks is null) and their nonzeros.
    pub fn add(
        &mut self,
        bundle: &BundleInfo,
        rows: Rows,
        obs: &[(String, crate::field::column::Column)],
        remap: &Remap,
        filter: Option<&Filter>,
    ) -> Result<(), Error> {
        let Rows { cells, matrix, qc } = rows;
        let head = Head {
            cells,
            nonzeros: 0..matrix.indices.len() as u64,
            indptr: matrix.indptr,
            qc,
        };
        if self.open_slice(bundle, head, obs, remap, filter)? {
            self.add_nonzeros(
                Nonzeros {
                    indices: matrix.indices,
                    values: matrix.values,
                },
                remap,
            )?;
        }
        Ok(())
    }

    /// Adds a slice's rows, whose nonzeros follow in order through
    /// [`Self::add_nonzeros`]. Returns whether they are wanted: not when the filter
    /// keeps none of its rows (or the slice has no nonzeros).
    pub fn open_slice(
        &mut self,
        bundle: &BundleInfo,
        head: Head,
        obs: &[(String, crate::field::column::Column)],
        remap: &Remap,
        filter: Option<&Filter>,
    ) -> Result<bool, Error> {
        if self.open.is_some() {
            return Err(Error::Internal(
                "a slice was added before the last one's nonzeros were all in".into(),
            ));
        }
        let facts = InfoFacts(bundle);
        // Decided per bundle when its metadata settles it; per cell otherwise.
        let per_cell = match filter.map(|f| f.eval_bundle(&facts)) {
            None | Some(Some(true)) => None,
            Some(Some(false)) => return Ok(false),
            Some(None) => filter,
        };
        let Head {
            cells, indptr, qc, ..
        } = head;
        let n_rows = indptr.len().saturating_sub(1);
        let mut keep = vec![true; n_rows];
        for (r, keep) in keep.iter_mut().enumerate() {
            let value = |f: &Field| -> Value<'_> {
                match (f.level(), f.column()) {
                    (Level::Bundle, _) => facts.value(f),
                    (Level::Cell, "n_genes") => Value::Num(f64::from(qc.n_genes[r])),
                    (Level::Cell, "total_counts") => Value::num(qc.total_counts[r]),
                    (Level::Cell, "pct_mito") => Value::num(qc.pct_mito[r]),
                    (Level::Cell, "barcode") => Value::Str(&cells[r]),
                    (Level::Cell, name) => obs
                        .iter()
                        .find(|(n, _)| n == name)
                        .map_or(Value::Null, |(_, c)| c.get(r)),
                }
            };
            if per_cell.is_some_and(|f| !f.eval_cell(&value)) {
                *keep = false;
                continue;
            }
            self.index.push(format!("{}:{}", bundle.fqid, cells[r]));
            for c in &mut self.columns {
                c.values.push(value(&c.field), c.index.as_ref());
            }
        }
        if !keep.contains(&true) {
            return Ok(false);
        }
        self.close_gap();
        self.open = Some(OpenSlice {
            fqid: bundle.fqid.to_string(),
            origin: self.indices.len() as i64,
            indptr,
            keep,
            next_row: 0,
            received: 0,
        });
        // Rows without nonzeros are done already.
        self.process(remap)?;
        Ok(self.open.is_some())
    }

    /// Adds the open slice's next nonzeros (they continue where the last ended).
    pub fn add_nonzeros(&mut self, nonzeros: Nonzeros, remap: &Remap) -> Result<(), Error> {
        let Some(open) = &self.open else {
            return Err(Error::Internal("nonzeros without an open slice".into()));
        };
        let total = open.indptr.last().copied().unwrap_or(0);
        let n = nonzeros.indices.len() as u64;
        if open.received + n > total {
            return Err(Error::Internal(format!(
                "{} nonzeros past the slice's {total}",
                open.received + n - total
            )));
        }
        // The kept nonzeros, then the open slice's not yet processed, then these.
        self.close_gap();
        let at = self.indices.len();
        let open = self.open.as_mut().expect("checked above");
        open.origin = at as i64 - open.received as i64;
        open.received += n;
        if at == 0 && self.values.value_type() == nonzeros.values.value_type() {
            // The first nonzeros of an empty buffer become it (a 10x piece is MBs).
            self.indices = bytemuck::allocation::cast_vec(nonzeros.indices);
            self.values = nonzeros.values;
        } else {
            // The same bits: a copy, not a conversion per value.
            self.indices
                .extend_from_slice(bytemuck::cast_slice(&nonzeros.indices));
            let len = nonzeros.values.len();
            extend_values_from(&mut self.values, &nonzeros.values, 0..len)?;
        }
        self.process(remap)
    }

    /// Remaps, filters and compacts the open slice's rows whose nonzeros are all in;
    /// closes the slice when none is left.
    fn process(&mut self, remap: &Remap) -> Result<(), Error> {
        let Some(open) = &mut self.open else {
            return Ok(());
        };
        let n_rows = open.keep.len();
        // Nonzeros kept are written at `w`, never past the one being read.
        let mut w = self.kept;
        while open.next_row < n_rows && open.indptr[open.next_row + 1] <= open.received {
            let r = open.next_row;
            open.next_row += 1;
            if !open.keep[r] {
                continue;
            }
            let at = |p: u64| (open.origin + p as i64) as usize;
            let raw = at(open.indptr[r])..at(open.indptr[r + 1]);
            let remapped = match &mut self.values {
                Values::U32(v) => move_row(&mut self.indices, v, raw, w, remap),
                Values::F32(v) => move_row(&mut self.indices, v, raw, w, remap),
                Values::F64(v) => move_row(&mut self.indices, v, raw, w, remap),
            };
            w = remapped.map_err(|col| Error::Corrupt {
                what: format!("bundle {}", open.fqid),
                message: format!("column {col} outside its feature set"),
            })?;
            self.indptr.push((self.written + w as u64) as i64);
        }
        self.kept = w;
        if open.next_row == n_rows {
            self.open = None;
            self.close_gap();
        }
        Ok(())
    }

    /// Moves the open slice's unprocessed nonzeros (if any) to just after the kept
    /// ones, and drops whatever lay between.
    fn close_gap(&mut self) {
        let from = match &mut self.open {
            Some(open) => {
                let from = (open.origin + open.indptr[open.next_row] as i64) as usize;
                open.origin -= (from - self.kept) as i64;
                from
            }
            None => self.indices.len(),
        };
        if from > self.kept {
            let len = self.indices.len();
            self.indices.copy_within(from..len, self.kept);
            self.values.copy_within(from..len, self.kept);
            let end = len - (from - self.kept);
            self.indices.truncate(end);
            self.values.truncate(end);
        }
    }

    /// Hands the full chunks of kept nonzeros to the writer, if streaming; waits while
    /// [`FLUSHES_IN_FLIGHT`] writes are pending.
    pub async fn flush(&mut self) -> Result<(), Error> {
        let chunk = self.chunk as usize;
        let n = self.kept / chunk * chunk;
        if self.writer.is_none() || n == 0 {
            return Ok(());
        }
        // Kept nonzeros and the open slice's unprocessed tail, contiguous: the split
        // copies the tail only.
        self.close_gap();
        // The rest goes to a buffer a finished write gave back, sized as this one: a
        // fresh one would grow by doubling, each time copied and its pages faulted in.
        let (rest, spare) = match &mut self.writer {
            Some(writer) => writer.spare(),
            None => (Vec::new(), Values::empty(self.values.value_type())),
        };
        let indices = crate::bundle::matrix::take_front(&mut self.indices, n, rest);
        let values = self.values.take_front(n, spare);
        let first_chunk = self.written / self.chunk;
        self.written += n as u64;
        self.kept -= n;
        if let Some(open) = &mut self.open {
            open.origin -= n as i64;
        }
        match &mut self.writer {
            Some(writer) => writer.write(first_chunk, indices, values).await,
            None => Ok(()),
        }
    }

    /// Writes what is left of the part under `prefix` (all of it, if it was not
    /// streaming) and waits for every write; returns its cells and nonzeros.
    pub async fn finish(mut self, store: &DynStore, prefix: &str) -> Result<(u64, u64), Error> {
        if self.open.is_some() {
            return Err(Error::Internal(
                "the part was finished before a slice's nonzeros were all in".into(),
            ));
        }
        if self.writer.is_none() {
            self = self.streaming_to(store, prefix)?;
        }
        let mut writer = self.writer.take().expect("a writer was just made");
        let chunk = self.chunk;
        let n_cells = self.index.len() as u64;
        let rows = part_row_chunk(n_cells);
        let n_nnz = self.written + self.kept as u64;
        let first_chunk = self.written / chunk;
        let indices = std::mem::take(&mut self.indices);
        let values = std::mem::replace(&mut self.values, Values::empty(ValueType::Uint32));
        if let Err(e) = writer.write(first_chunk, indices, values).await {
            // The writes in flight settle first (see `settle`).
            let _ = writer.finish().await;
            return Err(e);
        }
        let storage = ZarrStore::new(store.clone(), prefix).into_storage();
        // Parts are scratch: written once, read once by the consolidation, then deleted.
        let attrs = || encoding("array", "0.2.0");
        let value_type = writer.value_type;
        let metadata = |array: Result<ZArray, Error>| async move {
            let array = array?;
            array
                .async_store_metadata()
                .await
                .map_err(|e| zarr_err(array.path().as_str(), e))
        };
        // The arrays are independent, so written at once: one after another, a part of
        // small arrays cost a round trip or two each.
        type Write<'a> = futures::future::BoxFuture<'a, Result<(), Error>>;
        let storage = &storage;
        let mut writes: Vec<Write<'_>> = vec![
            Box::pin(metadata(part_array::<i32>(
                storage, "/indices", n_nnz, chunk,
            ))),
            Box::pin(metadata(data_array(storage, value_type, n_nnz, chunk))),
            Box::pin(write_scratch_array(
                storage,
                "/indptr",
                &self.indptr,
                part_row_chunk(self.indptr.len() as u64),
                attrs(),
            )),
            Box::pin(write_scratch_array(
                storage,
                "/obs/_index",
                &self.index,
                rows,
                attrs(),
            )),
            Box::pin(writer.finish()),
        ];
        for c in &self.columns {
            let suffixes = kind_suffixes(&c.values);
            for (array, suffix) in c.values.arrays().into_iter().zip(suffixes) {
                let path = format!("/obs/{}{suffix}", c.name);
                writes.push(match array {
                    ArrayValues::Str(v) => Box::pin(async move {
                        write_scratch_array(storage, &path, v, rows, attrs()).await
                    }),
                    ArrayValues::I32(v) => Box::pin(async move {
                        write_scratch_array(storage, &path, v, rows, attrs()).await
                    }),
                    ArrayValues::U32(v) => Box::pin(async move {
                        write_scratch_array(storage, &path, v, rows, attrs()).await
                    }),
                    ArrayValues::I64(v) => Box::pin(async move {
                        write_scratch_array(storage, &path, v, rows, attrs()).await
                    }),
                    ArrayValues::F64(v) => Box::pin(async move {
                        write_scratch_array(storage, &path, v, rows, attrs()).await
                    }),
                    ArrayValues::Bool(v) => Box::pin(async move {
                        write_scratch_array(storage, &path, v, rows, attrs()).await
                    }),
                });
            }
        }
        // Every write settles before this returns, error or not (see `settle`).
        for outcome in futures::future::join_all(writes).await {
            outcome?;
        }
        Ok((n_cells, n_nnz))
    }

    /// Waits for the part's writes in flight, after the task failed: the caller then
    /// cleans up if the request has ended, which must see everything this copy wrote.
    /// Dropped instead, a write would go on without it (the file store's blocking
    /// writes, a request S3 already has) and could land after that cleanup.
    pub async fn settle(&mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = writer.finish().await;
        }
    }
}

/// A part's `data` array of `len` values of `value_type`.
fn data_array(
    storage: &zarrs::storage::AsyncReadableWritableListableStorage,
    value_type: ValueType,
    len: u64,
    chunk: u64,
) -> Result<ZArray, Error> {
    match value_type {
        ValueType::Uint32 => part_array::<u32>(storage, "/data", len, chunk),
        ValueType::Float32 => part_array::<f32>(storage, "/data", len, chunk),
        ValueType::Float64 => part_array::<f64>(storage, "/data", len, chunk),
    }
}

/// A part's `indices` or `data` array of `len` values, as the consolidation reads it.
fn part_array<T: Column>(
    storage: &zarrs::storage::AsyncReadableWritableListableStorage,
    path: &str,
    len: u64,
    chunk: u64,
) -> Result<ZArray, Error> {
    array_handle_with::<T>(
        storage,
        path,
        len,
        chunk,
        encoding("array", "0.2.0"),
        ChunkCodec::Checked,
    )
}

/// A part's `indices` and `data` buffers.
type Buffers = (Vec<i32>, Values);

/// Writes runs of whole chunks of a part's `indices` and `data` on tasks of their
/// own, at most [`FLUSHES_IN_FLIGHT`] runs at once.
struct ChunkWriter {
    indices: Arc<ZArray>,
    data: Arc<ZArray>,
    value_type: ValueType,
    chunk: u64,
    permits: Arc<Semaphore>,
    tasks: JoinSet<Result<(), Error>>,
    /// Buffers whose writes finished, for the builder to fill again.
    spares: Arc<std::sync::Mutex<Vec<Buffers>>>,
}

impl std::fmt::Debug for ChunkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkWriter")
            .field("path", &self.indices.path().as_str())
            .field("pending", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl ChunkWriter {
    fn new(
        store: &DynStore,
        prefix: &str,
        value_type: ValueType,
        chunk: u64,
    ) -> Result<Self, Error> {
        let storage = ZarrStore::new(store.clone(), prefix).into_storage();
        let data = data_array(&storage, value_type, OPEN_LENGTH, chunk)?;
        Ok(ChunkWriter {
            indices: Arc::new(part_array::<i32>(&storage, "/indices", OPEN_LENGTH, chunk)?),
            data: Arc::new(data),
            value_type,
            chunk,
            permits: Arc::new(Semaphore::new(FLUSHES_IN_FLIGHT)),
            tasks: JoinSet::new(),
            spares: Arc::default(),
        })
    }

    /// A buffer pair a finished write gave back, or two empty ones.
    fn spare(&mut self) -> Buffers {
        let spare = self.spares.lock().ok().and_then(|mut s| s.pop());
        spare.unwrap_or_else(|| (Vec::new(), Values::empty(self.value_type)))
    }

    /// Starts writing `indices` and `values` from chunk `first_chunk` on (the last
    /// chunk padded if short); an earlier write's error is returned here already.
    async fn write(
        &mut self,
        first_chunk: u64,
        indices: Vec<i32>,
        values: Values,
    ) -> Result<(), Error> {
        if indices.is_empty() {
            return Ok(());
        }
        while let Some(done) = self.tasks.try_join_next() {
            joined(done)?;
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("the part writer's semaphore closed".into()))?;
        let (ia, da, chunk) = (self.indices.clone(), self.data.clone(), self.chunk);
        let spares = self.spares.clone();
        self.tasks.spawn(crate::fault::carried(async move {
            let _permit = permit;
            let data = async {
                match &values {
                    Values::U32(v) => store_chunks(&da, chunk, first_chunk, v).await,
                    Values::F32(v) => store_chunks(&da, chunk, first_chunk, v).await,
                    Values::F64(v) => store_chunks(&da, chunk, first_chunk, v).await,
                }
            };
            // Both settle before the task ends, error or not: a write left running past
            // its invocation's end could land after the request's cleanup.
            let (written, data) =
                futures::join!(store_chunks(&ia, chunk, first_chunk, &indices), data);
            written.and(data)?;
            // A flush takes one, and about one write finishes per flush.
            if let Ok(mut spares) = spares.lock()
                && spares.len() < 2
            {
                spares.push((indices, values));
            }
            Ok(())
        }));
        Ok(())
    }

    /// Waits for every write, also after one failed; returns the first error.
    async fn finish(mut self) -> Result<(), Error> {
        let mut first = Ok(());
        while let Some(done) = self.tasks.join_next().await {
            first = first.and(joined(done));
        }
        first
    }
}

fn joined(done: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    done.map_err(|e| Error::Internal(format!("a part write stopped: {e}")))?
}

/// Moves the kept nonzeros of the row at `raw` to `w..` (`w <= raw.start`) in their
/// output columns, ascending; returns the end of the kept ones, or the first column
/// outside the feature set.
fn move_row<T: Copy>(
    indices: &mut [i32],
    values: &mut [T],
    raw: std::ops::Range<usize>,
    w: usize,
    remap: &Remap,
) -> Result<usize, usize> {
    if remap.is_identity() {
        keep_row(indices, values, raw, w, remap.columns().len())
    } else {
        compact_row(indices, values, raw, w, remap.columns())
    }
}

/// [`compact_row`] for an identity remap: each column stays, so the row is only
/// checked and, when rows before it were dropped, moved.
fn keep_row<T: Copy>(
    indices: &mut [i32],
    values: &mut [T],
    raw: std::ops::Range<usize>,
    w: usize,
    n_columns: usize,
) -> Result<usize, usize> {
    let (mut inside, mut ascending, mut last) = (true, true, -1i64);
    for &c in &indices[raw.clone()] {
        inside &= (c as u32 as usize) < n_columns;
        ascending &= i64::from(c) > last;
        last = i64::from(c);
    }
    if !inside {
        let bad = indices[raw]
            .iter()
            .find(|&&c| c as u32 as usize >= n_columns);
        return Err(bad.map_or(n_columns, |&c| c as u32 as usize));
    }
    let end = w + raw.len();
    if w != raw.start {
        indices.copy_within(raw.clone(), w);
        values.copy_within(raw, w);
    }
    if !ascending {
        sort_row(indices, values, w..end);
    }
    Ok(end)
}

/// Remaps the bundle columns of the nonzeros at `raw` to output columns, moving those
/// kept (with their values) to `w..` (`w <= raw.start`) with columns ascending; returns
/// the end of the kept ones, or the first column outside `remap`.
fn compact_row<T: Copy>(
    indices: &mut [i32],
    values: &mut [T],
    raw: std::ops::Range<usize>,
    w: usize,
    remap: &[Option<u32>],
) -> Result<usize, usize> {
    let first = w;
    let mut w = w;
    // Output columns usually come out ascending (a bundle's feature set in the
    // output's order); only a row that does not is sorted.
    let mut ascending = true;
    let mut last = -1i64;
    for i in raw {
        let col = indices[i] as u32 as usize;
        let Some(&out) = remap.get(col) else {
            return Err(col);
        };
        let Some(out) = out else {
            continue;
        };
        ascending &= i64::from(out) > last;
        last = i64::from(out);
        indices[w] = out as i32;
        values[w] = values[i];
        w += 1;
    }
    if !ascending {
        // Bundle columns may map to the output in another order.
        sort_row(indices, values, first..w);
    }
    Ok(w)
}

/// Sorts the nonzeros at `row` by column.
fn sort_row<T: Copy>(indices: &mut [i32], values: &mut [T], row: std::ops::Range<usize>) {
    let mut pairs: Vec<(i32, T)> = indices[row.clone()]
        .iter()
        .copied()
        .zip(values[row.clone()].iter().copied())
        .collect();
    pairs.sort_unstable_by_key(|&(c, _)| c);
    for (k, (c, v)) in pairs.into_iter().enumerate() {
        indices[row.start + k] = c;
        values[row.start + k] = v;
    }
}

/// Appends `from[range]` to `to`, widening as the output type asks: a copy where the
/// types agree.
fn extend_values_from(
    to: &mut Values,
    from: &Values,
    range: std::ops::Range<usize>,
) -> Result<(), Error> {
    match (to, from) {
        (Values::U32(t), Values::U32(f)) => t.extend_from_slice(&f[range]),
        (Values::F32(t), Values::F32(f)) => t.extend_from_slice(&f[range]),
        (Values::F64(t), Values::F64(f)) => t.extend_from_slice(&f[range]),
        (Values::F32(t), Values::U32(f)) => t.extend(f[range].iter().map(|&v| v as f32)),
        (Values::F64(t), Values::U32(f)) => t.extend(f[range].iter().map(|&v| f64::from(v))),
        (Values::F64(t), Values::F32(f)) => t.extend(f[range].iter().map(|&v| f64::from(v))),
        _ => return Err(wider_than_output()),
    }
    Ok(())
}

fn wider_than_output() -> Error {
    Error::Corrupt {
        what: "request".into(),
        message: "a bundle's counts are wider than the output type".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Csr;
    use crate::bundle::qc::Qc;
    use crate::bundle::reader::Rows;

    const GENES: usize = 6;

    fn bundle() -> BundleInfo {
        BundleInfo {
            fqid: crate::fqid::Fqid::parse(
                "0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z",
            )
            .unwrap(),
            n_cells: 40,
            n_features: GENES as u64,
            nnz: 0,
            value_type: ValueType::Uint32,
            feature_set: "fs".into(),
            metadata: Default::default(),
            layout: None,
        }
    }

    /// 40 cells over 6 genes, about half of the counts zero.
    fn dense() -> Vec<u32> {
        (0..40 * GENES as u32)
            .map(|i| (i * 7 + 3) % 5 / 2)
            .collect()
    }

    fn rows(dense: &[u32]) -> Rows {
        let n = dense.len() / GENES;
        Rows {
            cells: (0..n).map(|i| format!("c{i}")).collect(),
            matrix: Csr::from_dense_rows(n, GENES, &Values::U32(dense.to_vec())),
            qc: Qc {
                n_genes: vec![1; n],
                total_counts: vec![1.0; n],
                pct_mito: vec![0.0; n],
            },
        }
    }

    #[test]
    fn a_small_parts_row_arrays_are_one_unpadded_chunk() {
        assert_eq!(part_row_chunk(0), 1);
        assert_eq!(part_row_chunk(2_701), 2_701);
        assert_eq!(part_row_chunk(PART_ROWS_PER_CHUNK), PART_ROWS_PER_CHUNK);
        assert_eq!(part_row_chunk(1 << 20), PART_ROWS_PER_CHUNK);
    }

    /// A part's nonzero chunks: as few as 2^20 a chunk allows, and an unfiltered part
    /// pads its last chunk by fewer values than it has chunks.
    #[test]
    fn a_parts_nonzero_chunks_are_as_few_as_allowed_and_barely_padded() {
        assert_eq!(part_nnz_chunk(0), PART_NNZ_PER_CHUNK);
        for nnz in [
            1,
            7,
            2_286_884,
            PART_NNZ_PER_CHUNK,
            PART_NNZ_PER_CHUNK + 1,
            3 << 20,
            10_000_019,
        ] {
            let chunk = part_nnz_chunk(nnz);
            let n = nnz.div_ceil(chunk);
            assert!((1..=PART_NNZ_PER_CHUNK).contains(&chunk), "{nnz}: {chunk}");
            assert_eq!(n, nnz.div_ceil(PART_NNZ_PER_CHUNK), "{nnz}");
            assert!(n * chunk - nnz < n, "{nnz}: {n} chunks of {chunk}");
        }
        assert_eq!(part_nnz_chunk(2_286_884), 762_295);
    }

    /// An identity remap's shortcut gives what the general remapping gives with the
    /// same columns: rows moved down or in place, unsorted or repeated columns sorted,
    /// and the same error for a column outside the feature set.
    #[test]
    fn an_identity_remap_keeps_rows_as_the_general_path_does() {
        const N: usize = 6;
        let identity: Vec<Option<u32>> = (0..N as u32).map(Some).collect();
        let rows: [&[i32]; 6] = [&[0, 2, 5], &[4, 1, 3], &[2, 2, 0], &[], &[1, 6], &[-1, 0]];
        for row in rows {
            for gap in [0, 2] {
                let mut indices = vec![9; gap];
                indices.extend_from_slice(row);
                let mut values: Vec<u32> = (0..indices.len() as u32).collect();
                let raw = gap..indices.len();
                let (mut ki, mut kv) = (indices.clone(), values.clone());
                let kept = keep_row(&mut ki, &mut kv, raw.clone(), 0, N);
                let general = compact_row(&mut indices, &mut values, raw, 0, &identity);
                assert_eq!(kept, general, "row {row:?}, gap {gap}");
                if let Ok(end) = kept {
                    assert_eq!(ki[..end], indices[..end], "row {row:?}, gap {gap}");
                    assert_eq!(kv[..end], values[..end], "row {row:?}, gap {gap}");
                }
            }
        }
    }

    /// Cells the filter drops leave no nonzeros behind, whether the slice's nonzeros
    /// became the part's (first slice) or were appended (second), and the rows kept are
    /// the ones the filter names, in order.
    #[test]
    fn filtered_rows_are_compacted_out_of_the_part() {
        let dense = dense();
        let n = dense.len() / GENES;
        let mut slice = rows(&dense);
        slice.qc.n_genes = (0..n as u32).map(|r| r % 3).collect();
        let filter =
            Filter::parse(&serde_json::json!({"op": "=", "field": "cell.n_genes", "value": 1}))
                .unwrap();
        // A remap that drops and moves columns, and one that keeps them all in place.
        let remaps = [
            Remap::new(vec![Some(0), None, Some(1), Some(2), None, Some(3)]),
            Remap::new((0..GENES as u32).map(Some).collect()),
        ];
        assert!(remaps[1].is_identity());
        for remap in &remaps {
            let mut part = PartBuilder::new(ValueType::Uint32, &[]);
            for _ in 0..2 {
                let mut s = rows(&dense);
                s.qc.n_genes = slice.qc.n_genes.clone();
                part.add(&bundle(), s, &[], remap, Some(&filter)).unwrap();
            }
            let kept: Vec<usize> = (0..n).filter(|r| r % 3 == 1).collect();
            let want_index: Vec<String> = kept
                .iter()
                .chain(kept.iter())
                .map(|r| format!("{}:c{r}", bundle().fqid))
                .collect();
            assert_eq!(part.index, want_index);
            assert_eq!(*part.indptr.last().unwrap() as usize, part.indices.len());
            assert_eq!(part.indices.len(), part.values.len());
            for (k, &r) in kept.iter().chain(kept.iter()).enumerate() {
                let span = part.indptr[k] as usize..part.indptr[k + 1] as usize;
                let mut want = Vec::new();
                for (g, out) in remap.columns().iter().enumerate() {
                    let v = dense[r * GENES + g];
                    if let Some(out) = out
                        && v != 0
                    {
                        want.push((*out as i32, f64::from(v)));
                    }
                }
                let got: Vec<(i32, f64)> = span
                    .map(|i| (part.indices[i], part.values.get_f64(i)))
                    .collect();
                assert_eq!(got, want, "kept row {k} (bundle row {r})");
            }
        }
    }

    /// Each remap path (in order and whole, in order with genes left out, out of order)
    /// and each value path (same type, widened) gives the dense counts moved to their
    /// output columns, each row's columns ascending.
    #[test]
    fn rows_land_in_their_output_columns_in_order() {
        let dense = dense();
        let n = dense.len() / GENES;
        let remaps: Vec<Remap> = [
            (0..GENES as u32).map(Some).collect(),
            vec![Some(0), None, Some(1), Some(2), None, Some(3)],
            vec![Some(5), Some(3), Some(4), None, Some(0), Some(1)],
        ]
        .into_iter()
        .map(Remap::new)
        .collect();
        for remap in &remaps {
            for value_type in [ValueType::Uint32, ValueType::Float64] {
                // The first slice's nonzeros become the part's; the second's are
                // appended after them.
                let mut part = PartBuilder::new(value_type, &[]);
                part.add(&bundle(), rows(&dense), &[], remap, None).unwrap();
                part.add(&bundle(), rows(&dense), &[], remap, None).unwrap();
                assert_eq!(part.indptr.len(), 2 * n + 1);
                assert_eq!(part.indices.len(), part.values.len());
                assert_eq!(*part.indptr.last().unwrap() as usize, part.indices.len());
                let width = remap.columns().iter().flatten().max().unwrap() + 1;
                for r in 0..2 * n {
                    let mut want = vec![0.0; width as usize];
                    for (g, out) in remap.columns().iter().enumerate() {
                        if let Some(out) = out {
                            want[*out as usize] = f64::from(dense[(r % n) * GENES + g]);
                        }
                    }
                    let mut got = vec![0.0; width as usize];
                    let span = part.indptr[r] as usize..part.indptr[r + 1] as usize;
                    let cols = &part.indices[span.clone()];
                    assert!(cols.windows(2).all(|w| w[0] < w[1]), "{remap:?} row {r}");
                    for i in span {
                        got[part.indices[i] as usize] = part.values.get_f64(i);
                    }
                    assert_eq!(got, want, "{remap:?} {value_type:?} row {r}");
                }
            }
        }
    }

    /// Every object of `store` under `prefix`, with its bytes.
    async fn objects(store: &DynStore, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let mut keys: Vec<String> = store
            .list(prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        let mut out = Vec::new();
        for k in keys {
            let body = store.get(&k).await.unwrap().unwrap().to_vec();
            out.push((k[prefix.len()..].to_string(), body));
        }
        out
    }

    fn fs_store() -> (tempfile::TempDir, DynStore) {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(crate::store::fs::FsStore::open(dir.path()).unwrap());
        (dir, store)
    }

    /// A part streamed to the store chunk by chunk, its slices' nonzeros arriving in
    /// uneven pieces, is the same objects, byte for byte, as the part built whole and
    /// written at the end; and its `indices` are the bytes `write_scratch_array`
    /// writes for the kept nonzeros (what parts were before streaming).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_streamed_part_is_the_same_bytes_as_one_written_whole() {
        let dense = dense();
        let n = dense.len() / GENES;
        let n_genes: Vec<u32> = (0..n as u32).map(|r| r % 3).collect();
        let filter =
            Filter::parse(&serde_json::json!({"op": "!=", "field": "cell.n_genes", "value": 0}))
                .unwrap();
        let remap = Remap::new(vec![Some(5), Some(3), None, Some(0), Some(1), Some(2)]);
        let slice = || {
            let mut s = rows(&dense);
            s.qc.n_genes = n_genes.clone();
            s
        };
        let fields = crate::obs::builtin_columns(&[Field::parse("cell.n_genes").unwrap()]);
        const CHUNK: u64 = 7;

        let (_a, whole_store) = fs_store();
        let mut whole = PartBuilder::new(ValueType::Float32, &fields).with_chunk(CHUNK);
        for _ in 0..3 {
            whole
                .add(&bundle(), slice(), &[], &remap, Some(&filter))
                .unwrap();
        }
        let kept_indices = whole.indices.clone();
        let stats = whole.finish(&whole_store, "p").await.unwrap();

        let (_b, streamed_store) = fs_store();
        let mut streamed = PartBuilder::new(ValueType::Float32, &fields)
            .with_chunk(CHUNK)
            .streaming_to(&streamed_store, "p")
            .unwrap();
        for cut in [1usize, 5, 13] {
            let Rows { cells, matrix, qc } = slice();
            let head = Head {
                cells,
                nonzeros: 0..matrix.indices.len() as u64,
                indptr: matrix.indptr,
                qc,
            };
            assert!(
                streamed
                    .open_slice(&bundle(), head, &[], &remap, Some(&filter))
                    .unwrap()
            );
            let Values::U32(values) = matrix.values else {
                unreachable!()
            };
            let mut at = 0;
            while at < values.len() {
                let end = (at + cut).min(values.len());
                let piece = Nonzeros {
                    indices: matrix.indices[at..end].to_vec(),
                    values: Values::U32(values[at..end].to_vec()),
                };
                streamed.add_nonzeros(piece, &remap).unwrap();
                streamed.flush().await.unwrap();
                at = end;
            }
        }
        assert_eq!(streamed.finish(&streamed_store, "p").await.unwrap(), stats);
        assert_eq!(stats.1, kept_indices.len() as u64);
        // Several chunks, the last one short.
        assert!(stats.1 > 3 * CHUNK && stats.1 % CHUNK != 0, "{stats:?}");

        let whole_objects = objects(&whole_store, "p/").await;
        assert_eq!(objects(&streamed_store, "p/").await, whole_objects);

        let (_c, direct_store) = fs_store();
        let storage = ZarrStore::new(direct_store.clone(), "p").into_storage();
        write_scratch_array(
            &storage,
            "/indices",
            &kept_indices,
            CHUNK,
            encoding("array", "0.2.0"),
        )
        .await
        .unwrap();
        let indices: Vec<_> = whole_objects
            .into_iter()
            .filter(|(k, _)| k.starts_with("indices/"))
            .collect();
        assert_eq!(indices.len() as u64, stats.1.div_ceil(CHUNK) + 1);
        assert_eq!(objects(&direct_store, "p/").await, indices);
    }
}
