//! The worker benchmark's parts: a task set up by the real driver and mapper, one run
//! of the real worker handler on it, and this machine's bound for the same bytes.
//!
//! **The bound** is what one thread of this machine does with the task's stored chunk
//! objects when it does nothing else: read each file, zstd-decode it (checking its
//! checksum, as the worker does) and copy the decoded bytes into one output buffer.
//! One thread, because the worker's computing is one thread: its slice reads,
//! decoding, filtering and gene remapping are futures of one tokio task (zarrs decodes
//! inline in the future that reads, with no thread pool on its async path), and only
//! the filesystem store's blocking reads and writes run on tokio's blocking threads.
//! The worker's CPU time is measured too (`cpu_seconds`), so a report shows how many
//! cores it really kept busy.
//!
//! **Peak memory** is the worker's own only in a process that ran nothing else: callers
//! run [`run_task`] in a fresh child process and read its [`TaskRun`] back with
//! [`parse_report`].

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cellmatrix::app::App;
use cellmatrix::bundle::manifest::zarr_prefix;
use cellmatrix::config::Config;
use cellmatrix::error::Error;
use cellmatrix::fqid::Fqid;
use cellmatrix::messages::{MapperEvent, WorkerEvent};
use cellmatrix::plan::Budget;
use cellmatrix::state::{DoneMarker, Keys, StoredRequest, TaskSpec, get_json};
use cellmatrix::store::DynStore;

/// The arrays of a bundle a worker reads (it reads the genes from the shared feature
/// set, not from the bundle's `var`).
pub const WORKER_ARRAYS: [&str; 7] = [
    "X/indptr",
    "X/indices",
    "X/data",
    "obs/_index",
    "obs/n_genes",
    "obs/total_counts",
    "obs/pct_mito",
];

/// A task as the mapper left it in the store, ready for a worker.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreparedTask {
    /// What the mapper sent the worker.
    pub event: WorkerEvent,
    /// Cells in the task's slices.
    pub cells: u64,
    /// Bytes the planner expected the task to read.
    pub planned_bytes: u64,
    /// Whether every slice is a whole bundle (then [`chunk_objects`] is exactly what the
    /// worker decodes).
    pub whole_bundles: bool,
}

/// Submits a zarr request for `bundles` through the real driver and plans it with the
/// real mapper under `budget` (one group), recording instead of running the
/// invocations; returns the tasks in plan order. Submitting the same bundles to the
/// same store again gives the same request and tasks.
pub async fn prepare(
    store: &DynStore,
    bundles: &[Fqid],
    budget: Budget,
) -> Result<Vec<PreparedTask>, Error> {
    let recorder = Arc::new(super::Recorder::default());
    let mut config = Config::new("bench");
    config.bundles_per_mapper = bundles.len().max(1);
    // The mapper runs below, once: the driver only records its invocation.
    config.driver_groups = 0;
    config.cells_per_worker = budget.cells;
    config.bytes_per_worker = budget.bytes;
    // Its requests never run to an end (nothing runs their collector), so they would
    // count against the caller's quota of Running requests until their deadline.
    config.caller_max_running = u64::MAX;
    let app = App::with_invoker(config, store.clone(), recorder.clone());
    let body = serde_json::json!({
        "bundle_fqids": bundles.iter().map(Fqid::as_str).collect::<Vec<_>>(),
        "format": "zarr",
    });
    let response = cellmatrix::handlers::driver::handle(
        &app,
        "POST",
        "/v1/matrix",
        body.to_string().as_bytes(),
    )
    .await;
    let id = response.body["id"]
        .as_str()
        .filter(|_| matches!(response.status, 200 | 202))
        .ok_or_else(|| {
            Error::input(
                "bench request",
                format!("the driver answered {}: {}", response.status, response.body),
            )
        })?;
    let keys = Keys::new(&cellmatrix::messages::RequestId::parse(id)?);
    let stored: StoredRequest = get_json(store, &keys.request())
        .await?
        .ok_or_else(|| Error::NotFound(format!("request {id}")))?;
    // The mapper is invoked here rather than taken from the recording: a request
    // submitted before (a benchmark store reused) is not started again by the driver.
    let event = MapperEvent {
        request_id: stored.id.clone(),
        group: 0,
        bundles: stored.bundles.clone(),
        attempt: 0,
        copies: 1,
    };
    cellmatrix::handlers::mapper::handle(&app, event).await?;
    let plan: cellmatrix::state::Plan = get_json(store, &keys.plan(0))
        .await?
        .ok_or_else(|| Error::NotFound(format!("plan of request {id}")))?;
    let mut tasks = Vec::with_capacity(plan.tasks.len());
    for planned in &plan.tasks {
        let spec: TaskSpec = get_json(store, &keys.task(&planned.id))
            .await?
            .ok_or_else(|| Error::NotFound(format!("task {}", planned.id)))?;
        tasks.push(PreparedTask {
            event: WorkerEvent {
                request_id: stored.id.clone(),
                task_id: planned.id.clone(),
                attempt: 0,
            },
            cells: planned.cells,
            planned_bytes: planned.bytes,
            whole_bundles: spec
                .slices
                .iter()
                .all(|s| s.rows.start == 0 && s.rows.end >= s.bundle.n_cells),
        });
    }
    Ok(tasks)
}

/// One run of a worker task: its done marker's figures, and the wall and CPU time of
/// the handler call and the process's peak RSS as measured where it ran.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskRun {
    /// Wall seconds of `handlers::worker::handle`.
    pub seconds: f64,
    /// CPU seconds (all threads) the process used meanwhile.
    pub cpu_seconds: f64,
    /// The process's peak RSS (VmHWM) after the task.
    pub peak_rss_bytes: u64,
    /// Cells read.
    pub cells_in: u64,
    /// Cells written.
    pub cells_out: u64,
    /// Nonzeros written.
    pub nnz: u64,
    /// Bytes the worker read from the store (bundles, task, request, gene space and
    /// feature sets).
    pub bytes_read: u64,
    /// Bytes it wrote.
    pub bytes_written: u64,
}

/// Removes what an earlier run of the task left (part, done, start and error markers),
/// so that the worker does the whole task again instead of returning at once.
pub async fn reset_task(store: &DynStore, event: &WorkerEvent) -> Result<(), Error> {
    let keys = Keys::new(&event.request_id);
    let name = format!("task-{}", event.task_id);
    for o in store
        .list(&format!("{}/", keys.part(&event.task_id)))
        .await?
    {
        store.delete(&o.key).await?;
    }
    store.delete(&keys.done(&event.task_id)).await?;
    store.delete(&keys.error(&name)).await?;
    for o in store.list(&keys.starts()).await? {
        if o.key.contains(&format!("/{name}.")) {
            store.delete(&o.key).await?;
        }
    }
    Ok(())
}

/// Runs the real worker handler once on `event` in this process (after
/// [`reset_task`]), and reads its done marker.
pub async fn run_task(store: &DynStore, event: &WorkerEvent) -> Result<TaskRun, Error> {
    reset_task(store, event).await?;
    let app = App::with_invoker(
        Config::new("bench"),
        store.clone(),
        Arc::new(super::Recorder::default()),
    );
    let cpu = super::cpu_seconds();
    let started = Instant::now();
    cellmatrix::handlers::worker::handle(&app, event.clone()).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = super::cpu_seconds() - cpu;
    let keys = Keys::new(&event.request_id);
    let done: DoneMarker = get_json(store, &keys.done(&event.task_id))
        .await?
        .ok_or_else(|| Error::NotFound(format!("done marker of task {}", event.task_id)))?;
    Ok(TaskRun {
        seconds,
        cpu_seconds,
        peak_rss_bytes: cellmatrix::process::peak_rss_bytes(),
        cells_in: done.cells_in,
        cells_out: done.cells_out,
        nnz: done.nnz,
        bytes_read: done.bytes_read,
        bytes_written: done.bytes_written,
    })
}

/// What a benchmark's child process (a [`run_task`] or a [`bound`] run) prints before
/// its figures as JSON, on one line of stdout.
pub const REPORT_PREFIX: &str = "cellmatrix-bench-child: ";

/// The line a child prints for its figures `run` (a [`TaskRun`] or a [`BoundRun`]).
pub fn report_line(run: &impl serde::Serialize) -> String {
    let json = serde_json::to_string(run).expect("a child's figures serialise");
    format!("{REPORT_PREFIX}{json}")
}

/// The figures in a child's stdout. The line may follow other text (a test harness
/// prints the test's name first).
pub fn parse_report<T: serde::de::DeserializeOwned>(stdout: &str) -> Result<T, Error> {
    stdout
        .lines()
        .find_map(|l| {
            l.find(REPORT_PREFIX)
                .map(|at| &l[at + REPORT_PREFIX.len()..])
        })
        .ok_or_else(|| Error::input("benchmark child", "no report line in its output"))
        .and_then(|json| {
            serde_json::from_str(json).map_err(|e| Error::input("benchmark child", e.to_string()))
        })
}

/// Runs `command` (a child that prints a [`report_line`]) and returns its figures; a
/// failed child is an error carrying its stderr.
pub fn run_child<T: serde::de::DeserializeOwned>(
    command: &mut std::process::Command,
) -> Result<T, Error> {
    let out = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::io("benchmark child", e))?;
    if !out.status.success() {
        return Err(Error::input(
            "benchmark child",
            format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    parse_report(&String::from_utf8_lossy(&out.stdout))
}

/// The stored chunk objects (key, size) of the arrays a worker reads, for every bundle
/// of the task: exactly what it decodes when the task holds whole bundles.
pub async fn chunk_objects(
    store: &DynStore,
    event: &WorkerEvent,
) -> Result<Vec<cellmatrix::store::ObjectMeta>, Error> {
    let keys = Keys::new(&event.request_id);
    let spec: TaskSpec = get_json(store, &keys.task(&event.task_id))
        .await?
        .ok_or_else(|| Error::NotFound(format!("task {}", event.task_id)))?;
    let mut objects = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for slice in &spec.slices {
        if !seen.insert(slice.bundle.fqid.clone()) {
            continue;
        }
        let prefix = zarr_prefix(&slice.bundle.fqid);
        for array in WORKER_ARRAYS {
            let mut chunks = store.list(&format!("{prefix}/{array}/c/")).await?;
            chunks.sort_by(|a, b| a.key.cmp(&b.key));
            objects.extend(chunks);
        }
    }
    Ok(objects)
}

/// One pass of the bound over a task's chunk objects.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BoundRun {
    /// Wall seconds, on one thread.
    pub seconds: f64,
    /// Bytes read (the stored, compressed chunks).
    pub stored_bytes: u64,
    /// Bytes decoded and copied.
    pub decoded_bytes: u64,
}

/// The bound: reads each of `paths` (local files), zstd-decodes it into a reused buffer
/// and appends the decoded bytes to one output buffer, on this thread.
/// `decoded_hint` sizes the output buffer up front (a previous pass's
/// `decoded_bytes`), so that growing it costs no extra copies.
pub fn bound(paths: &[impl AsRef<Path>], decoded_hint: u64) -> Result<BoundRun, Error> {
    let started = Instant::now();
    let mut decoder = zstd::bulk::Decompressor::new().map_err(|e| Error::io("zstd", e))?;
    let mut scratch: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::with_capacity(decoded_hint as usize);
    let mut stored_bytes = 0u64;
    for path in paths {
        let path = path.as_ref();
        let compressed = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        stored_bytes += compressed.len() as u64;
        let size = zstd::zstd_safe::get_frame_content_size(&compressed)
            .ok()
            .flatten()
            .ok_or_else(|| Error::zarr(path.display().to_string(), "no content size"))?;
        scratch.clear();
        scratch.reserve(size as usize);
        decoder
            .decompress_to_buffer(&compressed, &mut scratch)
            .map_err(|e| Error::zarr(path.display().to_string(), e))?;
        out.extend_from_slice(&scratch);
    }
    let decoded_bytes = std::hint::black_box(&out).len() as u64;
    Ok(BoundRun {
        seconds: started.elapsed().as_secs_f64(),
        stored_bytes,
        decoded_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SynthOptions, SynthSpec, synth};
    use cellmatrix::store::fs::FsStore;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_task_runs_through_the_real_handlers_and_its_bound_reads_the_same_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Arc::new(FsStore::open(dir.path()).unwrap());
        let store: DynStore = fs.clone();
        let spec = SynthSpec {
            tenx_bundles: 1,
            cells_per_tenx_bundle: 300,
            smartseq2_bundles: 3,
            n_genes: 500,
            ..SynthSpec::default()
        };
        let report = synth(&store, &spec, &SynthOptions::default())
            .await
            .unwrap();
        let fqids: Vec<Fqid> = report
            .bundles
            .iter()
            .map(|b| b.manifest().fqid.clone())
            .collect();
        let budget = Budget {
            cells: 1 << 40,
            bytes: 1 << 40,
            slice_bytes: 0,
        };
        let tasks = prepare(&store, &fqids, budget).await.unwrap();
        assert_eq!(tasks.len(), 1);
        assert!(tasks[0].whole_bundles);
        assert_eq!(tasks[0].cells, 303);
        // Prepared again: the same request and task.
        assert_eq!(prepare(&store, &fqids, budget).await.unwrap(), tasks);

        let event = &tasks[0].event;
        let first = run_task(&store, event).await.unwrap();
        assert_eq!((first.cells_in, first.cells_out), (303, 303));
        assert_eq!(first.nnz, report.nnz);
        let again = run_task(&store, event).await.unwrap();
        assert_eq!(again.nnz, first.nnz);

        let objects = chunk_objects(&store, event).await.unwrap();
        // 7 arrays of 4 bundles, each of at least one chunk.
        assert!(objects.len() >= 28, "{}", objects.len());
        let paths: Vec<_> = objects
            .iter()
            .map(|o| fs.path_of(&o.key).unwrap())
            .collect();
        let b = bound(&paths, 0).unwrap();
        assert_eq!(b.stored_bytes, objects.iter().map(|o| o.size).sum::<u64>());
        assert!(b.stored_bytes <= first.bytes_read);
        // The decoded X holds each nonzero's index and value.
        assert!(b.decoded_bytes >= report.nnz * 8, "{b:?}");

        let line = report_line(&first);
        let parsed: TaskRun = parse_report(&format!("noise\n{line}\n")).unwrap();
        assert_eq!(parsed, first);
        let parsed: TaskRun = parse_report(&format!("test x ... {line}\nok")).unwrap();
        assert_eq!(parsed, first);
        let parsed: BoundRun = parse_report(&report_line(&b)).unwrap();
        assert_eq!(parsed, b);
    }
}
