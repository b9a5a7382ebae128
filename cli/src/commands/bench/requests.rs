//! `cellmatrix bench requests`: the invocations, store requests and bytes of one request
//! on the embedded stack, against the planner's optimum (see
//! `cellmatrix_lab::bench::requests` for what the optimum is).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use cellmatrix::config::Config;
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_lab::bench::requests::measure;
use cellmatrix_lab::synth::{SynthOptions, SynthSpec, synth};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// 10x-like bundles.
    #[arg(long, default_value_t = 4)]
    tenx_bundles: usize,
    /// Cells per 10x-like bundle.
    #[arg(long, default_value_t = 5_000)]
    cells_per_bundle: usize,
    /// One-cell SmartSeq2-like bundles.
    #[arg(long, default_value_t = 200)]
    smartseq2_bundles: usize,
    /// Most cells per worker task.
    #[arg(long, default_value_t = 5_000)]
    cells_per_worker: u64,
    /// Output format.
    #[arg(long, default_value = "zarr")]
    format: String,
    /// Keep the benchmark's store in this directory (reused by the next run); a
    /// temporary directory otherwise.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = ".cache/bench/requests.json")]
    out: PathBuf,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = a.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let store: DynStore = Arc::new(FsStore::open(&dir)?);
    let spec = SynthSpec {
        tenx_bundles: a.tenx_bundles,
        cells_per_tenx_bundle: a.cells_per_bundle,
        smartseq2_bundles: a.smartseq2_bundles,
        ..SynthSpec::default()
    };
    let opts = SynthOptions {
        progress: std::io::stderr().is_terminal(),
        ..SynthOptions::default()
    };
    synth(&store, &spec, &opts).await?;
    // A reused store still holds the last run's request.
    cellmatrix_lab::bench::run::forget_requests(&store).await?;
    let mut config = Config::embedded(&store.describe())?;
    config.cells_per_worker = a.cells_per_worker;
    let request = json!({
        "filter": {"op": ">=", "field": "cell.n_genes", "value": 200},
        "fields": ["bundle.assay", "cell.n_genes", "cell.total_counts"],
        "format": a.format,
    });
    let report = measure(store, config, &request).await?;
    println!(
        "one request over {} 10x bundles of {} cells and {} SmartSeq2 bundles, {} cells out, {:.2} s, {} cells per task:",
        a.tenx_bundles,
        a.cells_per_bundle,
        a.smartseq2_bundles,
        report.cells,
        report.seconds,
        a.cells_per_worker
    );
    println!("{report}");
    super::write_json(&a.out, &report)?;
    Ok(())
}
