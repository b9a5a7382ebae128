//! The subcommands; each file holds one.

mod bench;
mod cancel;
mod catalog;
mod cells;
mod client;
mod demo;
mod dry_run;
mod fields;
mod ingest;
mod local_guard;
mod query;
mod report;
mod serve;
mod sigv4;
mod simulate;
mod status;
mod synth;

use clap::{Parser, Subcommand};

/// Builds single-cell gene-expression matrices on demand.
#[derive(Debug, Parser)]
#[command(name = "cellmatrix", version, about)]
pub struct Cli {
    /// Where bundles live: a directory, or s3://bucket[/prefix].
    #[arg(
        long,
        global = true,
        env = "CELLMATRIX_STORE",
        default_value = ".cellmatrix/store"
    )]
    store: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load 10x, h5ad or table inputs as bundles.
    Ingest(Box<ingest::Args>),
    /// List the bundles in the catalog.
    Catalog(catalog::Args),
    /// Generate synthetic bundles for benchmarks.
    Synth(synth::Args),
    /// Ingest the sample data shipped in the repository and summarise it.
    Demo(demo::Args),
    /// Serve the HTTP API with the whole pipeline in this process, on the store.
    Serve(serve::Args),
    /// Request a matrix from a server, follow it and optionally download it.
    Query(Box<query::Args>),
    /// List the fields of a server's catalog, with their values and cell counts.
    Fields(fields::Args),
    /// Show the status of a request on a server.
    Status(status::Args),
    /// Cancel a request on a server.
    Cancel(cancel::Args),
    /// Print a request's cell table (CSV or JSON lines), partial while it runs.
    Cells(cells::Args),
    /// The run report of a request that has ended: a table, the timeline as SVG or HTML.
    Report(report::Args),
    /// Benchmarks, each measured against a baseline in the same run.
    Bench(bench::Args),
    /// Simulate requests on Lambda at scale: the real planner and collector over a
    /// modelled Lambda and S3, p50/p99 completion time and cost.
    Simulate(simulate::Args),
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        // Only the commands that use the store open it (a local one is created): the
        // client commands talk to a server.
        let open = || cellmatrix::store::open(&self.store);
        match self.command {
            Command::Ingest(a) => ingest::run(&open().await?, *a).await,
            Command::Catalog(a) => catalog::run(&open().await?, a).await,
            Command::Synth(a) => synth::run(&open().await?, a).await,
            Command::Demo(a) => demo::run(&open().await?, a).await,
            Command::Serve(a) => serve::run(&self.store, a).await,
            Command::Query(a) => query::run(*a).await,
            Command::Fields(a) => fields::run(a).await,
            Command::Status(a) => status::run(a).await,
            Command::Cancel(a) => cancel::run(a).await,
            Command::Cells(a) => cells::run(a).await,
            Command::Report(a) => report::run(a).await,
            Command::Bench(a) => bench::run(&self.store, a).await,
            Command::Simulate(a) => simulate::run(a),
        }
    }
}
