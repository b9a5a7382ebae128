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
use crate::bundle::reader::{BundleReader, BundleShape, Head, Rows};
use crate::catalog::feature_set;
use crate::error::Error;
use crate::genes::{GeneIds, Remap};
use crate::messages::WorkerEvent;
use crate::part::{PartBuilder, part_nnz_chunk};
use crate::process::peak_rss_bytes;
use crate::state::RequestView;
use crate::state::{DoneMarker, Keys, StoredRequest, TaskSpec, get_json, put_json_if_absent};
use crate::store::DynStore;
use crate::store::counting::Counting;

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
        Ok(Some(begun)) => {
            let work = run(
                app,
                &event,
                &keys,
                (started, begun.at_ms),
                &counting,
                begun.read,
            );
            super::beat::beating(app, &keys, &name, event.attempt, begun.at_ms, work).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = &outcome {
        super::stopped(app, &keys, &name, event.attempt, e).await;
    }
    outcome
}

/// The task and the request: independent, so one round trip, made while the start
/// marker is written.
async fn read_documents(
    store: &DynStore,
    keys: &Keys,
    event: &WorkerEvent,
) -> Result<(Option<TaskSpec>, RequestView), Error> {
    let task_key = keys.task(&event.task_id);
    futures::try_join!(
        get_json::<TaskSpec>(store, &task_key),
        RequestView::read(store, keys),
    )
}

/// Each feature set's remap into the output genes. A set the request records as
/// identity is not read (nor the gene space, if none needs it): its remap keeps every
/// column, as many as its bundles' features.
async fn remaps(
    app: &App,
    store: &DynStore,
    keys: &Keys,
    stored: &StoredRequest,
    spec: &TaskSpec,
) -> Result<HashMap<String, Remap>, Error> {
    let mut remaps = HashMap::new();
    let mut sets: Vec<&String> = Vec::new();
    for slice in &spec.slices {
        let b = &slice.bundle;
        if stored.identity_sets.contains(&b.feature_set) {
            remaps
                .entry(b.feature_set.clone())
                .or_insert_with(|| Remap::identity(b.n_features));
        } else if !sets.contains(&&b.feature_set) {
            sets.push(&b.feature_set);
        }
    }
    if sets.is_empty() {
        return Ok(remaps);
    }
    // Futures built eagerly for `Send`.
    let reads: Vec<_> = sets
        .iter()
        .map(|set| feature_set::<GeneIds>(&app.store, set))
        .collect();
    let genes_key = keys.genes();
    let (genes, features) = futures::try_join!(get_json::<GeneIds>(store, &genes_key), async {
        futures::stream::iter(reads)
            .buffered(FEATURE_SETS_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await
    })?;
    let genes = genes.ok_or_else(|| Error::NotFound(format!("genes of request {}", keys.id())))?;
    for (set, features) in sets.into_iter().zip(features) {
        remaps.insert(set.clone(), Remap::between(&genes.ids, &features.ids));
    }
    Ok(remaps)
}

async fn run(
    app: &App,
    event: &WorkerEvent,
    keys: &Keys,
    (started, started_ms): (Instant, u64),
    counting: &Arc<Counting>,
    (spec, view): (Option<TaskSpec>, RequestView),
) -> Result<(), Error> {
    let store: DynStore = counting.clone();
    // The mapper writes the task before invoking it: missing, it was removed with the
    // request's scratch data, and this is a late copy of a request that ended.
    let spec = spec.ok_or_else(|| {
        Error::Cancelled(format!("{}: task {} removed", keys.id(), event.task_id))
    })?;

    let prefix = keys.part(&event.task_id);
    let obs_names = open_cell_fields(&view);
    let obs_names = &obs_names;
    let nnz_per_chunk = part_nnz_chunk(spec.slices.iter().map(slice_nnz).sum());
    let mut part = PartBuilder::new(view.stored.value_type, &view.columns)
        .with_chunk(nnz_per_chunk)
        .streaming_to(&store, &prefix)?;
    // The feature sets are needed to add the first slice, not to read it: read while
    // the first slices are.
    let remaps = remaps(app, &store, keys, &view.stored, &spec);
    // Slices are read a few at a time (a task of one-cell SmartSeq2 bundles is hundreds
    // of small reads, latency-bound on S3) and added in order, so the part is the same.
    // `in_flight` of them hold requests open; slices read but not yet added hold only
    // memory (a permit of `window` each, given back once added), so a slow read holds up
    // the window, not the reads behind it. The reads are driven on their own, beside
    // the adding: while a large slice's pieces are added, or the part waits for its
    // writes, the slices behind it still finish and give back their store requests,
    // which those pieces and writes may be waiting for. One task either way, so one
    // core decodes and adds.
    // Futures built eagerly for `Send`; `buffered` polls at most `window`.
    let cancel = CancelCheck::new(started);
    let largest = spec.slices.iter().map(slice_bytes).max().unwrap_or(0);
    let reading = tokio::sync::Semaphore::new(slices_in_flight(largest));
    let window = tokio::sync::Semaphore::new(slices_window(largest));
    let closed = |_| Error::Conflict("the slice reads' semaphore closed".into());
    let reads: Vec<_> = spec
        .slices
        .iter()
        .map(|slice| async {
            let held = window.acquire().await.map_err(closed)?;
            let _reading = reading.acquire().await.map_err(closed)?;
            let read = read_slice(
                &store,
                keys,
                slice,
                obs_names,
                app.config.piece_bytes,
                &cancel,
            )
            .await?;
            Ok::<_, Error>((read, held))
        })
        .collect();
    let (sender, mut received) = futures::channel::mpsc::unbounded();
    let produce = async move {
        let mut reads = futures::stream::iter(reads).buffered(slices_window(largest));
        while let Some(read) = reads.next().await {
            // The adding side stopped (it returned an error): nothing more to read.
            if sender.unbounded_send(read).is_err() {
                break;
            }
        }
        Ok::<(), Error>(())
    };
    let add = async {
        let remaps = remaps.await?;
        let mut cells_in = 0;
        for slice in &spec.slices {
            let (read, _held) = received
                .next()
                .await
                .ok_or_else(|| Error::Conflict("a slice read went missing".into()))??;
            let b = &slice.bundle;
            let remap = &remaps[&b.feature_set];
            match read {
                SliceRead::Whole(rows, obs) => {
                    cells_in += rows.cells.len() as u64;
                    part.add(b, rows, &obs, remap, view.filter.as_ref())?;
                }
                SliceRead::Head(reader, head, obs) => {
                    cells_in += head.cells.len() as u64;
                    let target = app.config.piece_bytes / (4 + b.value_type.size() as u64);
                    let pieces = reader.pieces(head.nonzeros.clone(), target);
                    if part.open_slice(b, head, &obs, remap, view.filter.as_ref())? {
                        // Futures built eagerly for `Send`.
                        let reads: Vec<_> = pieces
                            .into_iter()
                            .map(|p| reader.read_nonzeros(p))
                            .collect();
                        let mut pieces = futures::stream::iter(reads).buffered(PIECES_IN_FLIGHT);
                        while let Some(nonzeros) = pieces.next().await {
                            part.add_nonzeros(nonzeros?, remap)?;
                            part.flush().await?;
                        }
                    }
                }
            }
            part.flush().await?;
        }
        Ok::<u64, Error>(cells_in)
    };
    // `add` ends first or fails; a failure drops the reads still in flight.
    let cells_in = match futures::try_join!(produce, add) {
        Ok(((), cells_in)) => cells_in,
        Err(e) => {
            part.settle().await;
            return Err(e);
        }
    };
    crate::fault::straggle(started).await;
    let stats = part.finish(&store, &prefix).await?;
    let counts = counting.counts();
    let marker = DoneMarker {
        task: event.task_id.clone(),
        cells_in,
        cells_out: stats.0,
        nnz: stats.1,
        bytes_read: counts.bytes_read,
        bytes_written: counts.bytes_written,
        duration_ms: started.elapsed().as_millis() as u64,
        peak_rss_bytes: peak_rss_bytes(),
        attempt: event.attempt,
        started_ms,
        finished_ms: crate::clock::now_ms(),
        // The marker's own PUT, too.
        requests: crate::cost::Requests {
            put: counts.puts + 1,
            ..counts.requests()
        },
        nnz_per_chunk,
    };
    // The first copy to finish says how long the task took; a later one changes nothing.
    put_json_if_absent(&app.store, &keys.done(&event.task_id), &marker).await?;
    crate::fault::kill_point(crate::fault::KillPoint::Workers);
    crate::scratch::after_write(&app.store, keys, app.config.keep_scratch).await
}

/// Feature sets a worker reads at once (a task of many bundles may name many).
const FEATURE_SETS_IN_FLIGHT: usize = 16;

/// Slices of a task read at once when they are large (10x): each is mostly bytes.
pub(crate) const SLICES_IN_FLIGHT: usize = 8;
/// Most slices of a task read at once when they are small: a one-cell SmartSeq2 slice
/// is a few request round trips for tens of kB, so the task is bound by latency and
/// overlaps as many as it may. Each slice has up to seven requests open, so 64 slices
/// stay under 450 connections, within Lambda's 1,024 file descriptors.
pub(crate) const MAX_SLICES_IN_FLIGHT: usize = 64;
/// Decoded bytes of slices a task holds in flight at most, between the two bounds:
/// read-ahead for small slices, not memory for large ones.
pub(crate) const SLICE_BYTES_IN_FLIGHT: u64 = 64 << 20;

/// Most slices of a task read but not yet added: the window a slow read may hold up.
/// A thousand one-cell slices are a few tens of MB.
pub(crate) const MAX_SLICES_WINDOW: usize = 1024;

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

/// Nonzeros of a slice as the planner counts them: at its bundle's average density,
/// so exactly the bundle's for a whole bundle (every SmartSeq2 slice, a 10x bundle
/// within the budget).
pub(crate) fn slice_nnz(slice: &crate::state::SliceSpec) -> u64 {
    let b = &slice.bundle;
    let rows = slice.rows.end.saturating_sub(slice.rows.start);
    (u128::from(b.nnz) * u128::from(rows) / u128::from(b.n_cells.max(1))) as u64
}

/// Decoded bytes of a slice as the planner counts them (an index and a value per
/// nonzero, a row pointer per row), at its bundle's average density.
pub fn slice_bytes(slice: &crate::state::SliceSpec) -> u64 {
    let rows = slice.rows.end.saturating_sub(slice.rows.start);
    let per_nnz = 4 + slice.bundle.value_type.size() as u64;
    slice_nnz(slice)
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

/// A slice read: whole, or its rows only when its nonzeros are many (they follow in
/// pieces, added as they come, so the part's chunks are written while the rest is
/// read and a 10x task never holds all its nonzeros at once).
enum SliceRead {
    Whole(Rows, SliceObs),
    Head(Box<BundleReader>, Head, SliceObs),
}

/// A slice's values of the cell fields the task needs that are not built in, by name;
/// a field the bundle lacks is left out (its cells are null).
type SliceObs = Vec<(String, crate::field::column::Column)>;

/// The cell fields that are not built in and that the filter tests or the output
/// carries: what a task reads of each slice's obs besides the built-ins.
fn open_cell_fields(view: &RequestView) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let filter_fields = view.filter.iter().flat_map(|f| f.fields());
    for f in filter_fields.chain(view.fields.iter()) {
        if f.level() == crate::field::Level::Cell
            && f.as_builtin().is_none()
            && !out.iter().any(|n| n == f.column())
        {
            out.push(f.column().to_string());
        }
    }
    out
}

/// Rows `rows` of the fields `names`, those the bundle has.
async fn read_obs(
    reader: &BundleReader,
    names: &[String],
    rows: std::ops::Range<u64>,
) -> Result<SliceObs, Error> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let columns = reader.read_obs(names, rows).await?;
    Ok(names
        .iter()
        .zip(columns)
        .filter_map(|(n, c)| c.map(|c| (n.clone(), c)))
        .collect())
}

/// Pieces of a slice read at once (each about `Config::piece_bytes`).
pub(crate) const PIECES_IN_FLIGHT: usize = 4;

/// Reads one slice, unless the request was cancelled: the cancel marker is checked
/// between slices, not within one (a slice is the unit of work a cancel may waste),
/// once per [`CANCEL_CHECK_EVERY`].
async fn read_slice(
    store: &DynStore,
    keys: &Keys,
    slice: &crate::state::SliceSpec,
    obs_names: &[String],
    piece_bytes: u64,
    cancel: &CancelCheck,
) -> Result<SliceRead, Error> {
    if cancel.due() && store.exists(&keys.cancel()).await? {
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
    let rows = slice.rows.clone();
    if slice_bytes(slice) > piece_bytes {
        let (head, obs) = futures::try_join!(
            reader.read_head(rows.clone()),
            read_obs(&reader, obs_names, rows)
        )?;
        return Ok(SliceRead::Head(Box::new(reader), head, obs));
    }
    let (whole, obs) = futures::try_join!(
        reader.read_rows(rows.clone()),
        read_obs(&reader, obs_names, rows)
    )?;
    Ok(SliceRead::Whole(whole, obs))
}
