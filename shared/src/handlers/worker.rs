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
use crate::bundle::zarr_io::{ChunkCodec, encoding, write_array_with};
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
    if crate::state::exists(&app.store, &keys.done(&event.task_id)).await? {
        return Ok(());
    }
    let name = format!("task-{}", event.task_id);
    if !super::begin(app, &keys, &name, event.attempt).await? {
        return Ok(());
    }
    let outcome = run(app, &event, &keys).await;
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

async fn run(app: &App, event: &WorkerEvent, keys: &Keys) -> Result<(), Error> {
    let started = Instant::now();
    let counting = Arc::new(Counting::new(app.store.clone()));
    let store: DynStore = counting.clone();
    // The mapper writes the task before invoking it: missing, it was removed with the
    // request's scratch data, and this is a late copy of a request that ended.
    // The three documents are independent: one round trip, not three.
    let (task_key, genes_key) = (keys.task(&event.task_id), keys.genes());
    let (spec, view, genes) = futures::try_join!(
        get_json::<TaskSpec>(&store, &task_key),
        RequestView::read(&store, keys),
        get_json::<GeneSpace>(&store, &genes_key),
    )?;
    let spec = spec.ok_or_else(|| {
        Error::Cancelled(format!("{}: task {} removed", keys.id(), event.task_id))
    })?;
    let genes = genes.ok_or_else(|| Error::NotFound(format!("genes of request {}", keys.id())))?;

    let mut part = PartBuilder::new(view.stored.value_type, &view.fields);
    let mut sets: Vec<&String> = spec.slices.iter().map(|s| &s.bundle.feature_set).collect();
    sets.sort_unstable();
    sets.dedup();
    // Futures built eagerly for `Send`.
    let reads: Vec<_> = sets.iter().map(|set| feature_set(app, set)).collect();
    let features: Vec<_> = futures::stream::iter(reads)
        .buffered(FEATURE_SETS_IN_FLIGHT)
        .try_collect()
        .await?;
    let remaps: HashMap<String, Vec<Option<u32>>> = sets
        .iter()
        .zip(features)
        .map(|(set, features)| ((*set).clone(), genes.remap(&features)))
        .collect();
    // Slices are read a few at a time (a task of one-cell SmartSeq2 bundles is hundreds
    // of small reads, latency-bound on S3) and added in order, so the part is the same.
    // Futures built eagerly for `Send`; `buffered` polls at most `in_flight`.
    let cancel = CancelCheck::new(started);
    let in_flight = slices_in_flight(spec.slices.iter().map(slice_bytes).max().unwrap_or(0));
    let reads: Vec<_> = spec
        .slices
        .iter()
        .map(|slice| read_slice(&store, keys, slice, &cancel))
        .collect();
    let mut reads = futures::stream::iter(reads).buffered(in_flight);
    let mut cells_in = 0;
    for slice in &spec.slices {
        let rows = reads
            .next()
            .await
            .ok_or_else(|| Error::Conflict("a slice read went missing".into()))??;
        cells_in += rows.cells.len() as u64;
        let b = &slice.bundle;
        part.add(b, &rows, &remaps[&b.feature_set], view.filter.as_ref())?;
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

/// Slices a task reads at once, when its largest slice holds `largest` decoded bytes.
pub fn slices_in_flight(largest: u64) -> usize {
    let n = SLICE_BYTES_IN_FLIGHT / largest.max(1);
    n.clamp(SLICES_IN_FLIGHT as u64, MAX_SLICES_IN_FLIGHT as u64) as usize
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

    fn add(
        &mut self,
        bundle: &BundleInfo,
        rows: &crate::bundle::reader::Rows,
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
        let m = &rows.matrix;
        // Room for every row at once: growing a part of hundreds of MB by doubling
        // copies it and touches fresh pages several times over.
        self.indices.reserve(m.indices.len());
        match &mut self.values {
            Values::U32(v) => v.reserve(m.indices.len()),
            Values::F32(v) => v.reserve(m.indices.len()),
            Values::F64(v) => v.reserve(m.indices.len()),
        }
        // Positions in the bundle's row of the values kept, reused across rows.
        let mut kept: Vec<usize> = Vec::new();
        for r in 0..m.n_rows {
            let cell = CellValues {
                n_genes: u64::from(rows.qc.n_genes[r]),
                total_counts: rows.qc.total_counts[r],
                pct_mito: rows.qc.pct_mito[r],
                barcode: &rows.cells[r],
            };
            if per_cell.is_some_and(|f| !f.eval_cell(&meta, &cell)) {
                continue;
            }
            let range = m.row_range(r);
            let first = self.indices.len();
            kept.clear();
            // Output columns usually come out ascending (a bundle's feature set in the
            // output's order); only a row that does not is sorted.
            let mut ascending = true;
            let mut last = -1i64;
            for i in range.clone() {
                let col = m.indices[i] as usize;
                let Some(&out) = remap.get(col) else {
                    return Err(Error::Corrupt {
                        what: format!("bundle {}", bundle.fqid),
                        message: format!("column {col} outside its feature set"),
                    });
                };
                let Some(out) = out else {
                    continue;
                };
                ascending &= i64::from(out) > last;
                last = i64::from(out);
                self.indices.push(out as i32);
                kept.push(i);
            }
            if !ascending {
                // Bundle columns may map to the output in another order.
                let mut row: Vec<(i32, usize)> = self.indices[first..]
                    .iter()
                    .copied()
                    .zip(kept.iter().copied())
                    .collect();
                row.sort_unstable_by_key(|&(c, _)| c);
                for (k, (c, i)) in row.into_iter().enumerate() {
                    self.indices[first + k] = c;
                    kept[k] = i;
                }
            }
            if ascending && kept.len() == range.len() {
                extend_values_from(&mut self.values, &m.values, range)?;
            } else {
                extend_values(&mut self.values, &m.values, &kept)?;
            }
            self.indptr.push(self.indices.len() as i64);
            self.index.push(format!("{}:{}", bundle.fqid, cell.barcode));
            for (field, col) in &mut self.columns {
                match (field, col) {
                    (Field::Bundle(b), ObsValues::Str(v)) => v.push(meta(*b)),
                    (Field::Cell(_), ObsValues::Str(v)) => v.push(cell.barcode.to_string()),
                    (_, ObsValues::U32(v)) => v.push(rows.qc.n_genes[r]),
                    (Field::Cell(crate::filter::CellField::TotalCounts), ObsValues::F64(v)) => {
                        v.push(cell.total_counts)
                    }
                    (_, ObsValues::F64(v)) => v.push(cell.pct_mito),
                }
            }
        }
        Ok(())
    }

    /// Writes the part; returns its cells and nonzeros.
    async fn write(self, store: &DynStore, prefix: &str) -> Result<(u64, u64), Error> {
        let storage = ZarrStore::new(store.clone(), prefix).into_storage();
        // Parts are scratch: written once, read once by the consolidation, then deleted.
        const PART: ChunkCodec = ChunkCodec::Checked;
        let attrs = || encoding("array", "0.2.0");
        let (rows, nnz) = (PART_ROWS_PER_CHUNK, PART_NNZ_PER_CHUNK);
        let n_cells = self.index.len() as u64;
        let n_nnz = self.indices.len() as u64;
        // The arrays are independent, so written at once: one after another, a part of
        // small arrays cost a round trip or two each.
        type Write<'a> = futures::future::BoxFuture<'a, Result<(), Error>>;
        let storage = &storage;
        let mut writes: Vec<Write<'_>> = vec![
            Box::pin(write_array_with(
                storage,
                "/indptr",
                &self.indptr,
                rows,
                attrs(),
                PART,
            )),
            Box::pin(write_array_with(
                storage,
                "/indices",
                &self.indices,
                nnz,
                attrs(),
                PART,
            )),
            match &self.values {
                Values::U32(v) => {
                    Box::pin(write_array_with(storage, "/data", v, nnz, attrs(), PART))
                }
                Values::F32(v) => {
                    Box::pin(write_array_with(storage, "/data", v, nnz, attrs(), PART))
                }
                Values::F64(v) => {
                    Box::pin(write_array_with(storage, "/data", v, nnz, attrs(), PART))
                }
            },
            Box::pin(write_array_with(
                storage,
                "/obs/_index",
                &self.index,
                rows,
                attrs(),
                PART,
            )),
        ];
        for (field, col) in &self.columns {
            let path = format!("/obs/{}", field.column());
            writes.push(match col {
                ObsValues::Str(v) => Box::pin(async move {
                    write_array_with(storage, &path, v, rows, attrs(), PART).await
                }),
                ObsValues::U32(v) => Box::pin(async move {
                    write_array_with(storage, &path, v, rows, attrs(), PART).await
                }),
                ObsValues::F64(v) => Box::pin(async move {
                    write_array_with(storage, &path, v, rows, attrs(), PART).await
                }),
            });
        }
        futures::future::try_join_all(writes).await?;
        Ok((n_cells, n_nnz))
    }
}

/// Appends the values of `from` at `positions` to `to`, widening as the output type
/// asks. The types are matched once per row, not once per value.
fn extend_values(to: &mut Values, from: &Values, positions: &[usize]) -> Result<(), Error> {
    let at = positions.iter().copied();
    match (to, from) {
        (Values::U32(t), Values::U32(f)) => t.extend(at.map(|i| f[i])),
        (Values::F32(t), Values::U32(f)) => t.extend(at.map(|i| f[i] as f32)),
        (Values::F32(t), Values::F32(f)) => t.extend(at.map(|i| f[i])),
        (Values::F64(t), f) => t.extend(at.map(|i| f.get_f64(i))),
        _ => return Err(wider_than_output()),
    }
    Ok(())
}

/// [`extend_values`] for a whole row kept in order: a copy where the types agree.
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
                let mut part = PartBuilder::new(value_type, &[]);
                part.add(&bundle(), &rows(&dense), remap, None).unwrap();
                assert_eq!(part.indptr.len(), n + 1);
                let width = remap.iter().flatten().max().unwrap() + 1;
                for r in 0..n {
                    let mut want = vec![0.0; width as usize];
                    for (g, out) in remap.iter().enumerate() {
                        if let Some(out) = out {
                            want[*out as usize] = f64::from(dense[r * GENES + g]);
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
