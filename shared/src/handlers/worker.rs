//! The worker: reads its task's bundle slices, filters cells, remaps genes into the
//! output gene space, writes its part and then its done marker.
//!
//! A task's part is a function of the task alone, so a duplicate, retried or hedged
//! copy writes the same bytes, and the first done marker (put-if-absent) stands.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use crate::app::App;
use crate::bundle::reader::{BundleReader, BundleShape};
use crate::bundle::zarr_io::{encoding, write_scratch_array};
use crate::bundle::{ValueType, Values};
use crate::convert::source::{ColumnKind, ObsValues};
use crate::error::Error;
use crate::filter::{BundleField, CellValues, Field, Filter, bundle_value};
use crate::genes::GeneSpace;
use crate::handlers::driver::feature_set;
use crate::messages::WorkerEvent;
use crate::state::{
    BundleInfo, DoneMarker, Keys, StoredRequest, TaskSpec, get_json, peak_rss_bytes,
    put_json_if_absent,
};
use crate::store::DynStore;
use crate::store::counting::Counting;
use crate::store::zarr::ZarrStore;

/// Rows per chunk of a part's row arrays.
pub const PART_ROWS_PER_CHUNK: u64 = 1 << 16;
/// Values per chunk of a part's `indices` and `data`.
pub const PART_NNZ_PER_CHUNK: u64 = 1 << 20;

/// Runs one task. Nothing to do if its done marker exists.
pub async fn handle(app: &App, event: WorkerEvent) -> Result<(), Error> {
    let keys = Keys::new(&event.request_id);
    let name = format!("task-{}", event.task_id);
    let done = keys.done(&event.task_id);
    let started = Instant::now();
    let counting = Arc::new(Counting::new(app.store.clone()));
    let store: DynStore = counting.clone();
    let documents = read_documents(&store, &keys, &event);
    let begun = super::begin_with(app, &keys, &name, event.attempt, Some(&done), documents).await;
    let outcome = match begun {
        Ok(None) => return Ok(()),
        Ok(Some(documents)) => run(app, &event, &keys, started, &counting, documents).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &outcome {
        super::stopped(app, &keys, &name, event.attempt, e).await;
    }
    outcome
}

/// The request's settings a worker and the reducer need.
#[derive(Debug)]
pub struct RequestView {
    /// The stored request.
    pub stored: StoredRequest,
    /// The cell filter, if any.
    pub filter: Option<Filter>,
    /// The obs columns.
    pub fields: Vec<Field>,
    /// The output format.
    pub format: crate::convert::Format,
}

impl RequestView {
    /// Reads `request.json`.
    pub async fn read(store: &DynStore, keys: &Keys) -> Result<Self, Error> {
        let stored: StoredRequest = get_json(store, &keys.request())
            .await?
            .ok_or_else(|| Error::NotFound(format!("request {}", keys.id())))?;
        let corrupt = |m: String| Error::Corrupt {
            what: keys.request(),
            message: m,
        };
        let filter = match &stored.canonical["filter"] {
            serde_json::Value::Null => None,
            v => Some(Filter::parse(v).map_err(corrupt)?),
        };
        let fields = stored.canonical["fields"]
            .as_array()
            .ok_or_else(|| corrupt("no fields".into()))?
            .iter()
            .map(|v| {
                v.as_str()
                    .and_then(Field::parse)
                    .ok_or_else(|| corrupt(format!("bad field {v}")))
            })
            .collect::<Result<_, _>>()?;
        let format = stored.canonical["format"]
            .as_str()
            .and_then(crate::convert::Format::parse)
            .ok_or_else(|| corrupt("no format".into()))?;
        Ok(RequestView {
            stored,
            filter,
            fields,
            format,
        })
    }
}

/// The task, the request and the gene space: independent, so one round trip, made
/// while the start marker is written.
async fn read_documents(
    store: &DynStore,
    keys: &Keys,
    event: &WorkerEvent,
) -> Result<(Option<TaskSpec>, RequestView, Option<GeneSpace>), Error> {
    let (task_key, genes_key) = (keys.task(&event.task_id), keys.genes());
    futures::try_join!(
        get_json::<TaskSpec>(store, &task_key),
        RequestView::read(store, keys),
        get_json::<GeneSpace>(store, &genes_key),
    )
}

async fn run(
    app: &App,
    event: &WorkerEvent,
    keys: &Keys,
    started: Instant,
    counting: &Arc<Counting>,
    (spec, view, genes): (Option<TaskSpec>, RequestView, Option<GeneSpace>),
) -> Result<(), Error> {
    let store: DynStore = counting.clone();
    // The mapper writes the task before invoking it: missing, it was removed with the
    // request's scratch data, and this is a late copy of a request that ended.
    let spec = spec.ok_or_else(|| {
        Error::Cancelled(format!("{}: task {} removed", keys.id(), event.task_id))
    })?;
    let genes = genes.ok_or_else(|| Error::NotFound(format!("genes of request {}", keys.id())))?;

    let mut part = PartBuilder::new(view.stored.value_type, &view.fields);
    let mut sets: Vec<&String> = spec.slices.iter().map(|s| &s.bundle.feature_set).collect();
    sets.sort_unstable();
    sets.dedup();
    // The feature sets are needed to add the first slice, not to read it: read while
    // the first slices are. Futures built eagerly for `Send`.
    let feature_reads: Vec<_> = sets.iter().map(|set| feature_set(app, set)).collect();
    let remaps = async {
        let features: Vec<_> = futures::stream::iter(feature_reads)
            .buffered(FEATURE_SETS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok::<HashMap<String, Vec<Option<u32>>>, Error>(
            sets.iter()
                .zip(features)
                .map(|(set, features)| ((*set).clone(), genes.remap(&features)))
                .collect(),
        )
    };
    // Slices are read a few at a time (a task of one-cell SmartSeq2 bundles is hundreds
    // of small reads, latency-bound on S3) and added in order, so the part is the same.
    // `in_flight` of them hold requests open; slices read but not yet added hold only
    // memory, so a slow read holds up the window, not the reads behind it.
    // Futures built eagerly for `Send`; `buffered` polls at most `window`.
    let cancel = CancelCheck::new(started);
    let largest = spec.slices.iter().map(slice_bytes).max().unwrap_or(0);
    let reading = tokio::sync::Semaphore::new(slices_in_flight(largest));
    let reads: Vec<_> = spec
        .slices
        .iter()
        .map(|slice| async {
            let _reading = reading
                .acquire()
                .await
                .map_err(|_| Error::Conflict("the slice reads' semaphore closed".into()))?;
            read_slice(&store, keys, slice, &cancel).await
        })
        .collect();
    let mut reads = futures::stream::iter(reads).buffered(slices_window(largest));
    let (remaps, first) = futures::join!(remaps, reads.next());
    let remaps = remaps?;
    let mut first = Some(first);
    let mut cells_in = 0;
    for slice in &spec.slices {
        let read = match first.take() {
            Some(read) => read,
            None => reads.next().await,
        };
        let rows = read.ok_or_else(|| Error::Conflict("a slice read went missing".into()))??;
        cells_in += rows.cells.len() as u64;
        let b = &slice.bundle;
        part.add(b, rows, &remaps[&b.feature_set], view.filter.as_ref())?;
    }
    crate::fault::straggle(started).await;
    let stats = part.write(&store, &keys.part(&event.task_id)).await?;
    let marker = DoneMarker {
        task: event.task_id.clone(),
        cells_in,
        cells_out: stats.0,
        nnz: stats.1,
        bytes_read: counting.counts().bytes_read,
        bytes_written: counting.counts().bytes_written,
        duration_ms: started.elapsed().as_millis() as u64,
        peak_rss_bytes: peak_rss_bytes(),
        attempt: event.attempt,
    };
    // The first copy to finish says how long the task took; a later one changes nothing.
    put_json_if_absent(&app.store, &keys.done(&event.task_id), &marker).await?;
    crate::scratch::after_write(&app.store, keys, app.config.keep_scratch).await
}

/// Feature sets a worker reads at once (a task of many bundles may name many).
const FEATURE_SETS_IN_FLIGHT: usize = 16;

/// Slices of a task read at once when they are large (10x): each is mostly bytes.
pub const SLICES_IN_FLIGHT: usize = 8;
/// Most slices of a task read at once when they are small: a one-cell SmartSeq2 slice
/// is a few request round trips for tens of kB, so the task is bound by latency and
/// overlaps as many as it may. Each slice has up to seven requests open, so 64 slices
/// stay under 450 connections, within Lambda's 1,024 file descriptors.
pub const MAX_SLICES_IN_FLIGHT: usize = 64;
/// Decoded bytes of slices a task holds in flight at most, between the two bounds:
/// read-ahead for small slices, not memory for large ones.
pub const SLICE_BYTES_IN_FLIGHT: u64 = 64 << 20;

/// Most slices of a task read but not yet added: the window a slow read may hold up.
/// A thousand one-cell slices are a few tens of MB.
pub const MAX_SLICES_WINDOW: usize = 1024;

/// Slices a task reads at once, when its largest slice holds `largest` decoded bytes.
pub fn slices_in_flight(largest: u64) -> usize {
    let n = SLICE_BYTES_IN_FLIGHT / largest.max(1);
    n.clamp(SLICES_IN_FLIGHT as u64, MAX_SLICES_IN_FLIGHT as u64) as usize
}

/// Slices of a task started and not yet added at most (those reading among them), when
/// its largest slice holds `largest` decoded bytes: as many as
/// [`SLICE_BYTES_IN_FLIGHT`] holds, at least [`slices_in_flight`].
pub fn slices_window(largest: u64) -> usize {
    let n = SLICE_BYTES_IN_FLIGHT / largest.max(1);
    n.clamp(SLICES_IN_FLIGHT as u64, MAX_SLICES_WINDOW as u64) as usize
}

/// Decoded bytes of a slice as the planner counts them (an index and a value per
/// nonzero, a row pointer per row), at its bundle's average density.
pub fn slice_bytes(slice: &crate::state::SliceSpec) -> u64 {
    let b = &slice.bundle;
    let rows = slice.rows.end.saturating_sub(slice.rows.start);
    let nnz = u128::from(b.nnz) * u128::from(rows) / u128::from(b.n_cells.max(1));
    let per_nnz = 4 + b.value_type.size() as u64;
    (nnz as u64)
        .saturating_mul(per_nnz)
        .saturating_add(rows.saturating_mul(8))
}

/// How often a running task looks for the cancel marker. Before every slice would be a
/// GET per one-cell SmartSeq2 bundle, as many requests as the reads themselves; a
/// cancel wastes at most this long of a task's work.
pub const CANCEL_CHECK_EVERY: Duration = Duration::from_millis(500);

/// When a task last looked for the cancel marker (its start, where `begin` looked).
struct CancelCheck(std::sync::Mutex<Instant>);

impl CancelCheck {
    fn new(started: Instant) -> Self {
        CancelCheck(std::sync::Mutex::new(started))
    }

    /// Whether it is time to look again; if so, the clock restarts.
    fn due(&self) -> bool {
        let mut last = self.0.lock().expect("cancel check lock");
        if last.elapsed() < CANCEL_CHECK_EVERY {
            return false;
        }
        *last = Instant::now();
        true
    }
}

/// Reads one slice, unless the request was cancelled: the cancel marker is checked
/// between slices, not within one (a slice is the unit of work a cancel may waste),
/// once per [`CANCEL_CHECK_EVERY`].
async fn read_slice(
    store: &DynStore,
    keys: &Keys,
    slice: &crate::state::SliceSpec,
    cancel: &CancelCheck,
) -> Result<crate::bundle::reader::Rows, Error> {
    if cancel.due() && crate::state::exists(store, &keys.cancel()).await? {
        return Err(Error::Cancelled(keys.id().to_string()));
    }
    let b = &slice.bundle;
    let reader = BundleReader::with_shape(
        store,
        BundleShape {
            fqid: b.fqid.clone(),
            n_cells: b.n_cells,
            n_features: b.n_features,
            nnz: b.nnz,
            value_type: b.value_type,
            layout: b.layout,
        },
    )
    .await?;
    reader.read_rows(slice.rows.clone()).await
}

/// The rows a task keeps, in output gene space.
#[derive(Debug)]
struct PartBuilder {
    indptr: Vec<i64>,
    indices: Vec<i32>,
    values: Values,
    index: Vec<String>,
    columns: Vec<(Field, ObsValues)>,
}

impl PartBuilder {
    fn new(value_type: ValueType, fields: &[Field]) -> Self {
        let columns = fields
            .iter()
            .map(|&f| (f, ObsValues::empty(ColumnKind::of(&f))))
            .collect();
        PartBuilder {
            indptr: vec![0],
            indices: Vec::new(),
            values: Values::empty(value_type),
            index: Vec::new(),
            columns,
        }
    }

    /// Adds the rows of one bundle slice. The slice's nonzeros become the part's
    /// (moved when the part is empty and the types agree, appended otherwise) and are
    /// then remapped, filtered and compacted where they lie: a 10x task is one slice of
    /// hundreds of MB, and a second copy of it cost a pass over fresh pages.
    fn add(
        &mut self,
        bundle: &BundleInfo,
        rows: crate::bundle::reader::Rows,
        remap: &[Option<u32>],
        filter: Option<&Filter>,
    ) -> Result<(), Error> {
        let meta = |f: BundleField| bundle_value(&bundle.fqid, &bundle.metadata, f);
        // Decided per bundle when its metadata settles it; per cell otherwise.
        let per_cell = match filter.map(|f| f.eval_bundle(&meta)) {
            None | Some(Some(true)) => None,
            Some(Some(false)) => return Ok(()),
            Some(None) => filter,
        };
        let crate::bundle::reader::Rows { cells, matrix, qc } = rows;
        let base = self.indices.len();
        let (n_rows, indptr) = (matrix.n_rows, matrix.indptr);
        if base == 0 && self.values.value_type() == matrix.values.value_type() {
            self.indices = bytemuck::allocation::cast_vec(matrix.indices);
            self.values = matrix.values;
        } else {
            self.indices
                .extend(matrix.indices.iter().map(|&c| c as i32));
            extend_values_from(&mut self.values, &matrix.values, 0..matrix.values.len())?;
        }
        // Nonzeros kept are written at `w`, never past the one being read.
        let mut w = base;
        for r in 0..n_rows {
            let cell = CellValues {
                n_genes: u64::from(qc.n_genes[r]),
                total_counts: qc.total_counts[r],
                pct_mito: qc.pct_mito[r],
                barcode: &cells[r],
            };
            if per_cell.is_some_and(|f| !f.eval_cell(&meta, &cell)) {
                continue;
            }
            let raw = base + indptr[r] as usize..base + indptr[r + 1] as usize;
            let remapped = match &mut self.values {
                Values::U32(v) => compact_row(&mut self.indices, v, raw, w, remap),
                Values::F32(v) => compact_row(&mut self.indices, v, raw, w, remap),
                Values::F64(v) => compact_row(&mut self.indices, v, raw, w, remap),
            };
            w = remapped.map_err(|col| Error::Corrupt {
                what: format!("bundle {}", bundle.fqid),
                message: format!("column {col} outside its feature set"),
            })?;
            self.indptr.push(w as i64);
            self.index.push(format!("{}:{}", bundle.fqid, cell.barcode));
            for (field, col) in &mut self.columns {
                match (field, col) {
                    (Field::Bundle(b), ObsValues::Str(v)) => v.push(meta(*b)),
                    (Field::Cell(_), ObsValues::Str(v)) => v.push(cell.barcode.to_string()),
                    (_, ObsValues::U32(v)) => v.push(qc.n_genes[r]),
                    (Field::Cell(crate::filter::CellField::TotalCounts), ObsValues::F64(v)) => {
                        v.push(cell.total_counts)
                    }
                    (_, ObsValues::F64(v)) => v.push(cell.pct_mito),
                }
            }
        }
        self.indices.truncate(w);
        match &mut self.values {
            Values::U32(v) => v.truncate(w),
            Values::F32(v) => v.truncate(w),
            Values::F64(v) => v.truncate(w),
        }
        Ok(())
    }

    /// Writes the part; returns its cells and nonzeros.
    async fn write(self, store: &DynStore, prefix: &str) -> Result<(u64, u64), Error> {
        let storage = ZarrStore::new(store.clone(), prefix).into_storage();
        // Parts are scratch: written once, read once by the consolidation, then deleted.
        let attrs = || encoding("array", "0.2.0");
        let (rows, nnz) = (PART_ROWS_PER_CHUNK, PART_NNZ_PER_CHUNK);
        let n_cells = self.index.len() as u64;
        let n_nnz = self.indices.len() as u64;
        // The arrays are independent, so written at once: one after another, a part of
        // small arrays cost a round trip or two each.
        type Write<'a> = futures::future::BoxFuture<'a, Result<(), Error>>;
        let storage = &storage;
        let mut writes: Vec<Write<'_>> = vec![
            Box::pin(write_scratch_array(
                storage,
                "/indptr",
                &self.indptr,
                rows,
                attrs(),
            )),
            Box::pin(write_scratch_array(
                storage,
                "/indices",
                &self.indices,
                nnz,
                attrs(),
            )),
            match &self.values {
                Values::U32(v) => Box::pin(write_scratch_array(storage, "/data", v, nnz, attrs())),
                Values::F32(v) => Box::pin(write_scratch_array(storage, "/data", v, nnz, attrs())),
                Values::F64(v) => Box::pin(write_scratch_array(storage, "/data", v, nnz, attrs())),
            },
            Box::pin(write_scratch_array(
                storage,
                "/obs/_index",
                &self.index,
                rows,
                attrs(),
            )),
        ];
        for (field, col) in &self.columns {
            let path = format!("/obs/{}", field.column());
            writes.push(match col {
                ObsValues::Str(v) => {
                    Box::pin(
                        async move { write_scratch_array(storage, &path, v, rows, attrs()).await },
                    )
                }
                ObsValues::U32(v) => {
                    Box::pin(
                        async move { write_scratch_array(storage, &path, v, rows, attrs()).await },
                    )
                }
                ObsValues::F64(v) => {
                    Box::pin(
                        async move { write_scratch_array(storage, &path, v, rows, attrs()).await },
                    )
                }
            });
        }
        futures::future::try_join_all(writes).await?;
        Ok((n_cells, n_nnz))
    }
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
        let mut row: Vec<(i32, T)> = indices[first..w]
            .iter()
            .copied()
            .zip(values[first..w].iter().copied())
            .collect();
        row.sort_unstable_by_key(|&(c, _)| c);
        for (k, (c, v)) in row.into_iter().enumerate() {
            indices[first + k] = c;
            values[first + k] = v;
        }
    }
    Ok(w)
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
        let remap: Vec<Option<u32>> = vec![Some(0), None, Some(1), Some(2), None, Some(3)];
        let mut part = PartBuilder::new(ValueType::Uint32, &[]);
        for _ in 0..2 {
            let mut s = rows(&dense);
            s.qc.n_genes = slice.qc.n_genes.clone();
            part.add(&bundle(), s, &remap, Some(&filter)).unwrap();
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
            for (g, out) in remap.iter().enumerate() {
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

    /// Each remap path (in order and whole, in order with genes left out, out of order)
    /// and each value path (same type, widened) gives the dense counts moved to their
    /// output columns, each row's columns ascending.
    #[test]
    fn rows_land_in_their_output_columns_in_order() {
        let dense = dense();
        let n = dense.len() / GENES;
        let remaps: Vec<Vec<Option<u32>>> = vec![
            (0..GENES as u32).map(Some).collect(),
            vec![Some(0), None, Some(1), Some(2), None, Some(3)],
            vec![Some(5), Some(3), Some(4), None, Some(0), Some(1)],
        ];
        for remap in &remaps {
            for value_type in [ValueType::Uint32, ValueType::Float64] {
                // The first slice's nonzeros become the part's; the second's are
                // appended after them.
                let mut part = PartBuilder::new(value_type, &[]);
                part.add(&bundle(), rows(&dense), remap, None).unwrap();
                part.add(&bundle(), rows(&dense), remap, None).unwrap();
                assert_eq!(part.indptr.len(), 2 * n + 1);
                assert_eq!(part.indices.len(), part.values.len());
                assert_eq!(*part.indptr.last().unwrap() as usize, part.indices.len());
                let width = remap.iter().flatten().max().unwrap() + 1;
                for r in 0..2 * n {
                    let mut want = vec![0.0; width as usize];
                    for (g, out) in remap.iter().enumerate() {
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
}
