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
    /// Give every bundle a `cell_type` field, `rare` in one bundle in this many (0: no
    /// field).
    #[arg(long, default_value_t = 0)]
    rare_every: usize,
    /// The request's condition as `where` text (default: n_genes >= 200); with
    /// `--rare-every`, e.g. "cell_type == 'rare'". The bytes read are then also set
    /// against the stored bytes of the bundles that hold a matching cell.
    #[arg(long = "where", value_name = "TEXT")]
    where_: Option<String>,
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
        rare_every: a.rare_every,
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
    let mut request = json!({
        "filter": {"op": ">=", "field": "cell.n_genes", "value": 200},
        "fields": ["bundle.assay", "cell.n_genes", "cell.total_counts"],
        "format": a.format,
    });
    if let Some(text) = &a.where_ {
        request =
            json!({"where": text, "fields": ["bundle.assay", "cell.n_genes"], "format": a.format});
    }
    let matching = match &a.where_ {
        Some(text) => Some(matching_bytes(&store, text).await?),
        None => None,
    };
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
    if let Some((bundles, bytes)) = matching {
        let read = report
            .categories
            .get("bundle data")
            .map_or(0, |c| c.bytes_read);
        println!(
            "bundle data read: {:.2} MB; stored bytes of the {bundles} bundles with a matching cell: {:.2} MB; ratio {:.3}x",
            read as f64 / 1e6,
            bytes as f64 / 1e6,
            read as f64 / (bytes as f64).max(1.0)
        );
    }
    super::write_json(&a.out, &report)?;
    Ok(())
}

/// The bundles holding a cell that `where_text` keeps, and their stored bytes: each
/// bundle's cells are read through the reader and tested one by one (`eval_cell`),
/// not through the catalog's summaries, so pruning is measured against what it should
/// keep.
async fn matching_bytes(store: &DynStore, where_text: &str) -> anyhow::Result<(usize, u64)> {
    use cellmatrix::bundle::reader::BundleReader;
    use cellmatrix::field::{Level, Value};
    let catalog = cellmatrix::catalog::read(store).await?;
    let facets = cellmatrix::facets::Facets::of(catalog.bundles.iter());
    let tree = cellmatrix::query::parse_where(where_text, &|n| facets.resolve(n))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let filter = cellmatrix::filter::Filter::parse(&tree).map_err(|e| anyhow::anyhow!(e))?;
    let names: Vec<String> = filter
        .fields()
        .iter()
        .filter(|f| f.level() == Level::Cell)
        .map(|f| f.column().to_string())
        .collect();
    let (mut bundles, mut bytes) = (0, 0);
    for (fqid, entry) in &catalog.bundles {
        let reader = BundleReader::open(store, fqid).await?;
        let columns = reader.read_obs(&names, 0..entry.n_cells).await?;
        let keeps = (0..entry.n_cells as usize).any(|r| {
            filter.eval_cell(&|f| match f.level() {
                Level::Bundle => cellmatrix::catalog::bundle_field(fqid, &entry.metadata, f),
                Level::Cell => names
                    .iter()
                    .position(|n| n == f.column())
                    .and_then(|i| columns[i].as_ref())
                    .map_or(Value::Null, |c| c.get(r)),
            })
        });
        if keeps {
            bundles += 1;
            bytes += entry.stored_bytes;
        }
    }
    Ok((bundles, bytes))
}
