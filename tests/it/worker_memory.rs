//! The worker's peak memory on the largest real bundle task (10x PBMC3k, one task
//! under the default budget), measured in a process of its own, against the memory
//! the template gives the worker: at most 60% of it, leaving room for a larger task
//! than the test data's and for the allocator.

use std::sync::Arc;

use cellmatrix::ingest::{IngestOptions, ingest};
use cellmatrix::messages::{RequestId, TaskId, WorkerEvent};
use cellmatrix::plan::Budget;
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_lab::bench::worker::{TaskRun, prepare, report_line, run_child, run_task};
use cellmatrix_lab::bench::{template_allocator_env, template_worker_memory};
use cellmatrix_tests::{repo_root, test_data};

/// Set for the child: the store directory, request and task, one per line.
const CHILD: &str = "CELLMATRIX_TEST_WORKER_CHILD";

/// Not a test of its own: the process the test below starts, in which the worker runs
/// alone, so the process's peak RSS is the worker's. Passes at once otherwise.
#[tokio::test(flavor = "multi_thread")]
async fn worker_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let mut lines = spec.lines();
    let (dir, request, task) = (
        lines.next().unwrap(),
        lines.next().unwrap(),
        lines.next().unwrap(),
    );
    let store: DynStore = Arc::new(FsStore::open(dir).unwrap());
    let event = WorkerEvent {
        request_id: RequestId::parse(request).unwrap(),
        task_id: TaskId::parse(task).unwrap(),
        attempt: 0,
    };
    let run = run_task(&store, &event).await.unwrap();
    println!("{}", report_line(&run));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_largest_real_bundle_task_peaks_within_60_percent_of_the_worker_memory() {
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let memory = template_worker_memory(&template).expect("WorkerMemory has a default");

    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    let report = ingest(
        &store,
        &test_data().join("pbmc.h5ad"),
        &IngestOptions::default(),
    )
    .await
    .unwrap();
    let fqids = report.fqids();
    let config = cellmatrix::config::Config::new("");
    let budget = Budget {
        cells: config.cells_per_worker,
        bytes: config.bytes_per_worker,
        slice_bytes: config.slice_bytes,
    };
    let tasks = prepare(&store, &fqids, budget).await.unwrap();
    assert_eq!(
        tasks.len(),
        1,
        "PBMC3k is one task under the default budget"
    );
    let event = &tasks[0].event;

    // The child runs `worker_child` alone, named as the test binary names it: by its
    // module path below the crate (`worker_memory::worker_child`).
    let path = concat!(module_path!(), "::worker_child");
    let name = path
        .split_once("::")
        .map_or(path, |(_, below_crate)| below_crate);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(
            CHILD,
            format!(
                "{}\n{}\n{}",
                dir.path().display(),
                event.request_id.as_str(),
                event.task_id.as_str()
            ),
        );
    // Under the allocator settings the template gives the worker.
    child.envs(template_allocator_env(&template));
    let run: TaskRun = run_child(&mut child).unwrap();
    assert_eq!((run.cells_in, run.cells_out), (2700, 2700));
    assert_eq!(run.nnz, 2_286_884);
    // A zero would pass anything: the child must have measured itself.
    assert!(run.peak_rss_bytes > 0, "no VmHWM in /proc/self/status");
    let limit = memory as f64 * 0.6;
    assert!(
        run.peak_rss_bytes as f64 <= limit,
        "the worker peaked at {} MiB on PBMC3k, over 60% of its {} MiB",
        run.peak_rss_bytes >> 20,
        memory >> 20
    );
    eprintln!(
        "PBMC3k task: peak RSS {} MiB = {:.1}% of the worker's {} MiB, in {:.3} s",
        run.peak_rss_bytes >> 20,
        100.0 * run.peak_rss_bytes as f64 / memory as f64,
        memory >> 20,
        run.seconds
    );
}
