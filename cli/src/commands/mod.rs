//! The subcommands; each file holds one.

mod catalog;
mod demo;
mod ingest;
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
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        let store = cellmatrix::store::open(&self.store).await?;
        match self.command {
            Command::Ingest(a) => ingest::run(&store, *a).await,
            Command::Catalog(a) => catalog::run(&store, a).await,
            Command::Synth(a) => synth::run(&store, a).await,
            Command::Demo(a) => demo::run(&store, a).await,
        }
    }
}
