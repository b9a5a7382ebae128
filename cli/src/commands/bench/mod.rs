//! `cellmatrix bench`: figures measured against a baseline in the same run.
//!
//! Each subcommand prints its figures as ratios to something this machine did in the
//! same run, and writes them as JSON under `.cache/bench/`. The measuring logic is in
//! `cellmatrix_lab::bench`, where tests use it too.

mod catalog;
mod e2e;
mod requests;
mod worker;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// One worker task of each bundle kind against this machine's bound for the same
    /// bytes (read + zstd decode + copy), and the worker's peak memory.
    Worker(worker::Args),
    /// Runs one prepared worker task and prints its figures: `bench worker` measures
    /// each run in a fresh process of this command, so its peak RSS is the worker's own.
    #[command(hide = true)]
    WorkerTask(worker::TaskArgs),
    /// Runs the bound over one prepared task's chunks and prints its figures, in a
    /// fresh process as the worker runs.
    #[command(hide = true)]
    WorkerBound(worker::BoundArgs),
    /// Reading a catalog of many bundles with many fields and resolving a `where`
    /// request over it, against reading and parsing the same bytes as untyped JSON.
    Catalog(catalog::Args),
    /// Invocations, store requests (GET, PUT, LIST) and bytes of one request, against
    /// the planner's optimum.
    Requests(requests::Args),
    /// The whole service on the embedded stack against a Python (anndata) baseline
    /// doing the same job, on synthetic 10x + SmartSeq2 mixes.
    E2e(e2e::Args),
    /// Runs the service's side of `bench e2e` in a process of its own.
    #[command(hide = true)]
    E2eRun(e2e::RunArgs),
}

/// Runs a benchmark. They generate their data in a store of their own (a temporary
/// directory unless told otherwise), never in `_store`, the user's.
pub async fn run(_store: &str, args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Worker(a) => worker::run(a).await,
        What::WorkerTask(a) => worker::run_task(a).await,
        What::WorkerBound(a) => worker::run_bound(a).await,
        What::Catalog(a) => catalog::run(a).await,
        What::Requests(a) => requests::run(a).await,
        What::E2e(a) => e2e::run(a).await,
        What::E2eRun(a) => e2e::run_child(a).await,
    }
}

/// Writes a benchmark's figures as pretty JSON to `path`, creating its directory.
fn write_json(path: &std::path::Path, figures: &impl serde::Serialize) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, serde_json::to_string_pretty(figures)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("figures written to {}", path.display());
    Ok(())
}
