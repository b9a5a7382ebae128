//! `cellmatrix bench worker`: one worker task of each bundle kind through the real
//! worker handler, against this machine's bound for the same bytes measured in the same
//! run, and the worker's peak RSS against the memory the template gives it.
//!
//! Every worker run is a fresh child process (`bench worker-task`), so its peak RSS is
//! the worker's own. Every run of the bound is a fresh child too (`bench worker-bound`),
//! on one thread (see `cellmatrix_lab::bench::worker` for why one): both then start from
//! the same state, an empty heap whose pages are faulted in as they are first touched.
//! Measured in this process instead, the bound's speed depended on what the process
//! had done before (it was up to 1.8 times faster after generating the store than
//! when reusing a kept one). Figures are medians over `--reps` runs; peak RSS is the
//! largest.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use cellmatrix::fqid::Fqid;
use cellmatrix::ingest::{IngestOptions, Orientation, ingest};
use cellmatrix::messages::{RequestId, TaskId, WorkerEvent};
use cellmatrix::plan::Budget;
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_lab::bench::worker::{
    BoundRun, PreparedTask, TaskRun, bound, chunk_objects, prepare, report_line, run_child,
};
use cellmatrix_lab::bench::{median, template_allocator_env, template_worker_memory};
use cellmatrix_lab::synth::{BundleKind, SynthOptions, SynthSpec, bundle_fqid, synth};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cells of the 10x-like bundle (one bundle, one task); 0 leaves the kind out.
    #[arg(long, default_value_t = 20_000)]
    tenx_cells: usize,
    /// One-cell SmartSeq2-like bundles in the SmartSeq2 task; 0 leaves the kind out.
    #[arg(long, default_value_t = 1_000)]
    smartseq2_cells: usize,
    /// Genes of the synthetic bundles.
    #[arg(long, default_value_t = 20_000)]
    genes: usize,
    /// Seed of the synthetic bundles.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runs of each task (and of its bound); figures are medians.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Also measure the real bundles: `pbmc.h5ad` (10x PBMC3k) and `chung_counts.tsv`
    /// (SmartSeq2, one bundle per cell) in this directory, where present.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Keep the benchmark's store in this directory (reused by the next run, which then
    /// generates nothing); a temporary directory otherwise.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = ".cache/bench/worker.json")]
    out: PathBuf,
    /// The SAM template whose `WorkerMemory` default is the worker's memory.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))]
    template: PathBuf,
    /// The worker's memory in MB (MiB, as Lambda counts), instead of the template's.
    #[arg(long)]
    worker_memory_mb: Option<u64>,
    /// The planner's byte budget per task (the default of `CELLMATRIX_BYTES_PER_WORKER`):
    /// a 10x task filled to it is run once for its peak RSS.
    #[arg(long, default_value_t = cellmatrix::config::Config::new("").bytes_per_worker)]
    budget_bytes: u64,
    /// Skip the task filled to the byte budget (it needs a bundle of about
    /// `--budget-bytes` / 8 nonzeros, generated once per store).
    #[arg(long)]
    no_budget_task: bool,
}

/// The hidden child: one run of one prepared task.
#[derive(Debug, clap::Args)]
pub struct TaskArgs {
    /// The benchmark's store.
    #[arg(long)]
    dir: PathBuf,
    /// The request.
    #[arg(long)]
    request: String,
    /// The task.
    #[arg(long)]
    task: String,
}

impl TaskArgs {
    fn event(&self) -> anyhow::Result<WorkerEvent> {
        Ok(WorkerEvent {
            request_id: RequestId::parse(&self.request)?,
            task_id: TaskId::parse(&self.task)?,
            attempt: 0,
        })
    }
}

pub async fn run_task(a: TaskArgs) -> anyhow::Result<()> {
    let store: DynStore = Arc::new(FsStore::open(&a.dir)?);
    let run = cellmatrix_lab::bench::worker::run_task(&store, &a.event()?).await?;
    println!("{}", report_line(&run));
    Ok(())
}

/// The hidden child: one run of the bound over one prepared task's chunk files.
#[derive(Debug, clap::Args)]
pub struct BoundArgs {
    #[command(flatten)]
    task: TaskArgs,
    /// Bytes the chunks decode to (an earlier pass's), to size the output buffer.
    #[arg(long)]
    decoded_hint: u64,
}

pub async fn run_bound(a: BoundArgs) -> anyhow::Result<()> {
    let fs = Arc::new(FsStore::open(&a.task.dir)?);
    let paths = chunk_paths(&fs, &a.task.event()?).await?;
    let run = bound(&paths, a.decoded_hint)?;
    println!("{}", report_line(&run));
    Ok(())
}

/// The files of the chunks the task's worker decodes.
async fn chunk_paths(fs: &Arc<FsStore>, event: &WorkerEvent) -> anyhow::Result<Vec<PathBuf>> {
    let store: DynStore = fs.clone();
    let objects = chunk_objects(&store, event).await?;
    Ok(objects
        .iter()
        .map(|o| fs.path_of(&o.key))
        .collect::<Result<Vec<_>, _>>()?)
}

/// The figures of one kind, in the shape the simulator reads (extra fields are ignored
/// there).
#[derive(Debug, Serialize)]
struct KindFigures {
    kind: String,
    cells: u64,
    nnz: u64,
    /// Stored (compressed) bytes of the chunks the worker decodes.
    stored_bytes: u64,
    /// Median wall seconds of the worker handler.
    seconds: f64,
    cells_per_s: f64,
    bytes_per_s: f64,
    bound_bytes_per_s: f64,
    /// Worker bytes/s over bound bytes/s.
    ratio: f64,
    /// Largest peak RSS of the worker's processes.
    peak_rss_bytes: u64,
    /// Peak RSS over the worker's memory in the template.
    rss_ratio: f64,
    bound_seconds: f64,
    decoded_bytes: u64,
    /// Median CPU seconds (all threads) of the worker: over `seconds`, the cores it used.
    cpu_seconds: f64,
    /// Bytes the worker read in all (with the task, request, genes and feature sets).
    worker_bytes_read: u64,
    reps: usize,
}

#[derive(Debug, Serialize)]
struct BudgetFigures {
    budget_bytes: u64,
    planned_bytes: u64,
    cells: u64,
    nnz: u64,
    seconds: f64,
    peak_rss_bytes: u64,
    rss_ratio: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    kinds: Vec<KindFigures>,
    real: Vec<KindFigures>,
    budget: Option<BudgetFigures>,
    worker_memory_bytes: u64,
    worker_memory_from: String,
    /// The allocator settings the runs took from the template.
    allocator_env: std::collections::BTreeMap<String, String>,
    cores: usize,
    bound: &'static str,
}

/// Measures one case: a prepared task of whole bundles.
struct Case {
    kind: String,
    task: PreparedTask,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    if a.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let template = std::fs::read_to_string(&a.template).ok();
    let (memory, memory_from) = match (a.worker_memory_mb, &template) {
        (Some(mb), _) => (mb << 20, "--worker-memory-mb".to_string()),
        (None, Some(t)) => (
            template_worker_memory(t)
                .with_context(|| format!("no WorkerMemory default in {}", a.template.display()))?,
            a.template.display().to_string(),
        ),
        (None, None) => bail!(
            "{} not found: give the worker's memory with --worker-memory-mb",
            a.template.display()
        ),
    };
    let env = template
        .as_deref()
        .map(template_allocator_env)
        .unwrap_or_default();

    let tmp;
    let root = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let fs = Arc::new(FsStore::open(&root)?);
    let store: DynStore = fs.clone();
    let progress = std::io::stderr().is_terminal();

    let spec = SynthSpec {
        tenx_bundles: usize::from(a.tenx_cells > 0),
        cells_per_tenx_bundle: a.tenx_cells.max(1),
        smartseq2_bundles: a.smartseq2_cells,
        n_genes: a.genes,
        seed: a.seed,
        ..SynthSpec::default()
    };
    eprintln!(
        "generating {} 10x-like cells and {} SmartSeq2-like bundles ({} genes) in {}",
        a.tenx_cells,
        a.smartseq2_cells,
        a.genes,
        root.display()
    );
    let opts = SynthOptions {
        progress,
        ..SynthOptions::default()
    };
    synth(&store, &spec, &opts).await?;
    let one_task = Budget {
        cells: 1 << 40,
        bytes: 1 << 40,
        slice_bytes: 0,
    };
    let mut cases = Vec::new();
    let mut synthetic = Vec::new();
    if a.tenx_cells > 0 {
        synthetic.push(("10x", vec![bundle_fqid(&spec, BundleKind::Tenx, 0)]));
    }
    if a.smartseq2_cells > 0 {
        let fqids = (0..a.smartseq2_cells)
            .map(|i| bundle_fqid(&spec, BundleKind::SmartSeq2, i))
            .collect();
        synthetic.push(("smartseq2", fqids));
    }
    for (kind, fqids) in synthetic {
        cases.push(Case {
            kind: kind.to_string(),
            task: single_task(&store, &fqids, one_task).await?,
        });
    }
    let n_synthetic = cases.len();
    if let Some(dir) = &a.data {
        for (kind, fqids) in ingest_real(&store, dir).await? {
            cases.push(Case {
                kind,
                task: single_task(&store, &fqids, one_task).await?,
            });
        }
    }

    let bar = cellmatrix::progress::bar(progress, (cases.len() * a.reps) as u64, "runs");
    let mut figures = Vec::new();
    for case in &cases {
        bar.set_message(case.kind.clone());
        figures.push(measure(&fs, &root, case, a.reps, memory, &env, &bar).await?);
    }
    bar.finish_and_clear();
    let real = figures.split_off(n_synthetic);

    let budget = if a.no_budget_task || a.tenx_cells == 0 {
        None
    } else {
        Some(
            budget_task(
                &store,
                &root,
                &spec,
                &figures[0],
                a.budget_bytes,
                memory,
                &env,
                &opts,
            )
            .await?,
        )
    };

    let report = Report {
        kinds: figures,
        real,
        budget,
        worker_memory_bytes: memory,
        worker_memory_from: memory_from,
        allocator_env: env.iter().cloned().collect(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        bound: "one thread: read each stored chunk file, zstd-decode it, copy the decoded bytes into one buffer",
    };
    print_table(&report);
    super::write_json(&a.out, &report)
}

/// Plans `fqids` as one task, which must hold them whole.
async fn single_task(
    store: &DynStore,
    fqids: &[Fqid],
    budget: Budget,
) -> anyhow::Result<PreparedTask> {
    let mut tasks = prepare(store, fqids, budget).await?;
    match (tasks.len(), tasks.first()) {
        (1, Some(t)) if t.whole_bundles => Ok(tasks.remove(0)),
        (n, _) => bail!("expected one task of whole bundles, the planner made {n}"),
    }
}

/// Ingests the real datasets found in `dir`, as the tests do.
async fn ingest_real(store: &DynStore, dir: &Path) -> anyhow::Result<Vec<(String, Vec<Fqid>)>> {
    let mut out = Vec::new();
    let pbmc = dir.join("pbmc.h5ad");
    if pbmc.exists() {
        eprintln!("ingesting {}", pbmc.display());
        let r = ingest(store, &pbmc, &IngestOptions::default()).await?;
        out.push(("10x-real".to_string(), r.fqids()));
    }
    let chung = dir.join("chung_counts.tsv");
    if chung.exists() {
        eprintln!("ingesting {} (one bundle per cell)", chung.display());
        let opts = IngestOptions {
            one_bundle_per_cell: true,
            orientation: Orientation::GenesByCells,
            ..IngestOptions::default()
        };
        let r = ingest(store, &chung, &opts).await?;
        out.push(("smartseq2-real".to_string(), r.fqids()));
    }
    if out.is_empty() {
        bail!(
            "neither pbmc.h5ad nor chung_counts.tsv in {}",
            dir.display()
        );
    }
    Ok(out)
}

/// A command running `bench <sub>` on the task in a fresh child process of this
/// program, with the worker's environment.
fn child_command(
    sub: &str,
    root: &Path,
    event: &WorkerEvent,
    env: &[(String, String)],
) -> anyhow::Result<std::process::Command> {
    let exe = std::env::current_exe().context("finding this program to run the worker")?;
    let mut command = std::process::Command::new(exe);
    command.args(["bench", sub, "--dir"]);
    command.arg(root);
    command.args(["--request", event.request_id.as_str()]);
    command.args(["--task", event.task_id.as_str()]);
    command.envs(env.iter().map(|(name, value)| (name, value)));
    Ok(command)
}

/// Runs the task in a fresh child process.
fn child(root: &Path, event: &WorkerEvent, env: &[(String, String)]) -> anyhow::Result<TaskRun> {
    Ok(run_child(&mut child_command(
        "worker-task",
        root,
        event,
        env,
    )?)?)
}

/// Runs the bound over the task's chunks in a fresh child process.
fn bound_child(
    root: &Path,
    event: &WorkerEvent,
    env: &[(String, String)],
    decoded_hint: u64,
) -> anyhow::Result<BoundRun> {
    let mut command = child_command("worker-bound", root, event, env)?;
    command.args(["--decoded-hint", &decoded_hint.to_string()]);
    Ok(run_child(&mut command)?)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    fs: &Arc<FsStore>,
    root: &Path,
    case: &Case,
    reps: usize,
    memory: u64,
    env: &[(String, String)],
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<KindFigures> {
    let event = &case.task.event;
    let paths = chunk_paths(fs, event).await?;
    // A first pass fills the page cache for both sides and sizes the bound's buffer.
    let warm = bound(&paths, 0)?;
    let (mut runs, mut bounds) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        // Alternated, so that both see the machine in the same state.
        runs.push(child(root, event, env)?);
        bounds.push(bound_child(root, event, env, warm.decoded_bytes)?);
        bar.inc(1);
    }
    let seconds = median(&runs.iter().map(|r| r.seconds).collect::<Vec<_>>());
    let bound_seconds = median(&bounds.iter().map(|b| b.seconds).collect::<Vec<_>>());
    let stored = warm.stored_bytes;
    let peak = runs.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0);
    let last = &runs[runs.len() - 1];
    let per_s = |x: u64, s: f64| x as f64 / s.max(1e-9);
    Ok(KindFigures {
        kind: case.kind.clone(),
        cells: last.cells_in,
        nnz: last.nnz,
        stored_bytes: stored,
        seconds,
        cells_per_s: per_s(last.cells_in, seconds),
        bytes_per_s: per_s(stored, seconds),
        bound_bytes_per_s: per_s(stored, bound_seconds),
        ratio: bound_seconds / seconds.max(1e-9),
        peak_rss_bytes: peak,
        rss_ratio: peak as f64 / memory as f64,
        bound_seconds,
        decoded_bytes: warm.decoded_bytes,
        cpu_seconds: median(&runs.iter().map(|r| r.cpu_seconds).collect::<Vec<_>>()),
        worker_bytes_read: last.bytes_read,
        reps,
    })
}

/// Runs once a 10x task filled to the planner's byte budget, for its peak RSS. The
/// bundle is sized from the measured 10x bundle's density to hold a little more than
/// the budget, so the planner's first task is full to within one row chunk.
#[allow(clippy::too_many_arguments)]
async fn budget_task(
    store: &DynStore,
    root: &Path,
    spec: &SynthSpec,
    tenx: &KindFigures,
    budget_bytes: u64,
    memory: u64,
    env: &[(String, String)],
    opts: &SynthOptions,
) -> anyhow::Result<BudgetFigures> {
    // The planner's cost of a cell: its nonzeros at 8 bytes (index and u32 count) and
    // its row pointer.
    let per_cell = 8 * tenx.nnz / tenx.cells.max(1) + 8;
    let cells = (budget_bytes / per_cell.max(1)) * 11 / 10 + 1024;
    let spec = SynthSpec {
        tenx_bundles: 1,
        cells_per_tenx_bundle: cells as usize,
        smartseq2_bundles: 0,
        ..spec.clone()
    };
    eprintln!(
        "generating a 10x-like bundle of {cells} cells to fill a task to the {} MiB byte budget",
        budget_bytes >> 20
    );
    synth(store, &spec, opts).await?;
    let tasks = prepare(
        store,
        &[bundle_fqid(&spec, BundleKind::Tenx, 0)],
        Budget {
            cells: 1 << 40,
            bytes: budget_bytes,
            slice_bytes: 0,
        },
    )
    .await?;
    let task = tasks.first().context("the planner made no task")?;
    eprintln!(
        "running its first task ({} cells, {} MiB planned)",
        task.cells,
        task.planned_bytes >> 20
    );
    let run = child(root, &task.event, env)?;
    Ok(BudgetFigures {
        budget_bytes,
        planned_bytes: task.planned_bytes,
        cells: run.cells_in,
        nnz: run.nnz,
        seconds: run.seconds,
        peak_rss_bytes: run.peak_rss_bytes,
        rss_ratio: run.peak_rss_bytes as f64 / memory as f64,
    })
}

fn print_table(r: &Report) {
    const MB: f64 = 1e6;
    const MIB: f64 = (1u64 << 20) as f64;
    println!(
        "{:<15} {:>8} {:>10} {:>9} {:>11} {:>8} {:>10} {:>6} {:>9} {:>6}",
        "kind",
        "cells",
        "stored MB",
        "worker s",
        "cells/s",
        "MB/s",
        "bound MB/s",
        "ratio",
        "peak MiB",
        "/mem"
    );
    for k in r.kinds.iter().chain(&r.real) {
        println!(
            "{:<15} {:>8} {:>10.1} {:>9.3} {:>11.0} {:>8.1} {:>10.1} {:>6.2} {:>9.0} {:>6.2}",
            k.kind,
            k.cells,
            k.stored_bytes as f64 / MB,
            k.seconds,
            k.cells_per_s,
            k.bytes_per_s / MB,
            k.bound_bytes_per_s / MB,
            k.ratio,
            k.peak_rss_bytes as f64 / MIB,
            k.rss_ratio
        );
    }
    if let Some(b) = &r.budget {
        println!(
            "task filled to the {} MiB byte budget: {} cells, {} MiB planned, {:.2} s, peak RSS {:.0} MiB = {:.2} of the worker's memory",
            b.budget_bytes >> 20,
            b.cells,
            b.planned_bytes >> 20,
            b.seconds,
            b.peak_rss_bytes as f64 / MIB,
            b.rss_ratio
        );
    }
    println!(
        "worker memory {} MiB (from {}); ratio = worker MB/s / bound MB/s, median of {} runs; \
         bound = {}; the worker's CPU: {}",
        r.worker_memory_bytes >> 20,
        r.worker_memory_from,
        r.kinds.iter().chain(&r.real).next().map_or(0, |k| k.reps),
        r.bound,
        r.kinds
            .iter()
            .chain(&r.real)
            .map(|k| format!(
                "{} {:.2} cores",
                k.kind,
                k.cpu_seconds / k.seconds.max(1e-9)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
