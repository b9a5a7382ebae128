//! End to end on the embedded stack against a peer baseline: a synthetic 10x +
//! SmartSeq2 mix, one filtered query through the whole service, and the same job done
//! by a Python script with anndata ([`BASELINE_PY`]), as a user would without us.
//! Each side runs in a process of its own, so each peak RSS is that side's own.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::synth::SynthSpec;
use cellmatrix::app::{App, default_limit};
use cellmatrix::config::Config;
use cellmatrix::error::Error;
use cellmatrix::process::peak_rss_bytes;
use cellmatrix::store::DynStore;

/// The baseline script; the CLI writes it out and runs it with the given Python.
pub const BASELINE_PY: &str = include_str!("baseline.py");

/// The synthetic data of one size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mix {
    /// Cells in all.
    pub cells: u64,
    /// The share of them in one-cell SmartSeq2-like bundles.
    pub smartseq2_share: f64,
    /// Cells per 10x-like bundle.
    pub cells_per_bundle: u64,
}

impl Mix {
    /// The synth spec: SmartSeq2 bundles for the share, 10x bundles for the rest. 10x
    /// cells detect 0.5–2.5% of 20,000 genes (100–500 genes), sparser than `synth`'s
    /// default, so that the baseline's concatenation of a million cells fits in memory.
    pub fn spec(&self) -> SynthSpec {
        let smartseq2 = (self.cells as f64 * self.smartseq2_share).round() as u64;
        let tenx = (self.cells - smartseq2).div_ceil(self.cells_per_bundle.max(1));
        SynthSpec {
            tenx_bundles: tenx as usize,
            cells_per_tenx_bundle: self.cells_per_bundle as usize,
            smartseq2_bundles: smartseq2 as usize,
            seed: 7,
            tenx_density: 0.005..=0.025,
            ..SynthSpec::default()
        }
    }
}

/// Cells with fewer genes than this are filtered out, by both sides.
pub const MIN_GENES: u64 = 200;

/// The query both sides answer: every cell with at least [`MIN_GENES`] genes, with the
/// three QC fields, as AnnData Zarr.
pub fn request() -> Value {
    json!({
        "filter": {"op": ">=", "field": "cell.n_genes", "value": MIN_GENES},
        "fields": ["cell.n_genes", "cell.total_counts", "cell.pct_mito"],
        "format": "zarr",
    })
}

/// What the service did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ours {
    /// From the POST to Succeeded.
    pub seconds: f64,
    /// The process's peak RSS.
    pub peak_rss_bytes: u64,
    /// Output cells.
    pub n_cells: u64,
    /// Output nonzeros.
    pub nnz: u64,
    /// Worker tasks.
    pub tasks: u64,
    /// The output Zarr, a path under the store.
    pub output: String,
    /// When the cell table came, polled while the request ran.
    #[serde(default)]
    pub cell_table: super::cell_watch::CellTimes,
    /// The dry run's cell count, asked just before the run.
    #[serde(default)]
    pub dry_cells: u64,
    /// The dry run's estimated seconds.
    #[serde(default)]
    pub estimated_seconds: f64,
    /// The runs the estimate's calibration had seen (0: the defaults).
    #[serde(default)]
    pub calibrated_runs: u64,
}

/// Runs [`request`] on the embedded stack over `store` as `cellmatrix serve` would
/// ([`Config::embedded`]: the environment's settings, a 50 ms poll), after removing any
/// earlier request and result, which would otherwise answer it at once.
pub async fn run_ours(store: DynStore, progress: bool) -> Result<Ours, Error> {
    super::run::forget_requests(&store).await?;
    let config = Config::embedded(&store.describe())?;
    let app = App::in_process(config, Arc::clone(&store), default_limit);
    let dry = dry_run(&app).await?;
    let (id, started) = super::run::submit(&app, &request()).await?;
    let every = Duration::from_millis(20);
    let (ended, cell_table) = futures::join!(
        super::run::follow(&app, id.clone(), started, every, progress),
        super::cell_watch::watch(&app, &id, started, every),
    );
    let ended = ended?;
    app.idle().await;
    if !ended.succeeded() {
        return Err(Error::Internal(format!(
            "request {} ended {}: {}",
            ended.id, ended.status["status"], ended.status["message"]
        )));
    }
    let r = &ended.status["result"];
    Ok(Ours {
        seconds: ended.seconds,
        peak_rss_bytes: peak_rss_bytes(),
        n_cells: r["n_cells"].as_u64().unwrap_or(0),
        nnz: r["nnz"].as_u64().unwrap_or(0),
        tasks: ended.status["progress"]["tasks_total"]
            .as_u64()
            .unwrap_or(0),
        output: format!("results/{}/matrix.zarr", ended.id),
        cell_table,
        dry_cells: dry["matching"]["cells"].as_u64().unwrap_or(0),
        estimated_seconds: dry["seconds"]["total"].as_f64().unwrap_or(0.0),
        calibrated_runs: dry["seconds"]["calibrated_runs"].as_u64().unwrap_or(0),
    })
}

/// The dry run of [`request`]: what the service estimates before running it.
async fn dry_run(app: &App) -> Result<Value, Error> {
    let mut body = request();
    body["dry_run"] = json!(true);
    let answer = cellmatrix::handlers::driver::handle(
        app,
        "POST",
        "/v1/matrix",
        body.to_string().as_bytes(),
    )
    .await;
    if answer.status != 200 {
        return Err(Error::Internal(format!(
            "the dry run answered {}: {}",
            answer.status, answer.body
        )));
    }
    Ok(answer.body)
}

/// What the baseline did, as its script prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// From the first read to the written result.
    pub seconds: f64,
    /// Bundles read.
    pub bundles: u64,
    /// The Python process's peak RSS.
    pub peak_rss_bytes: u64,
    /// Output cells.
    pub n_cells: u64,
    /// Output genes.
    pub n_genes: u64,
    /// Output nonzeros.
    pub nnz: u64,
    /// Sum of the output's values.
    pub sum: f64,
    /// Whether our output holds the same cells, genes and values (compared cell by cell
    /// and gene by gene, by name).
    #[serde(default)]
    pub same_matrix: Option<bool>,
}

/// One size's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// The data.
    pub mix: Mix,
    /// Bundles.
    pub bundles: u64,
    /// The service.
    pub ours: Ours,
    /// The baseline, unless skipped.
    pub baseline: Option<Baseline>,
}

impl Figures {
    /// How many times faster the service was than the baseline.
    pub fn speedup(&self) -> Option<f64> {
        self.baseline
            .as_ref()
            .map(|b| b.seconds / self.ours.seconds.max(1e-9))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_splits_cells_between_the_kinds() {
        let mix = Mix {
            cells: 100_000,
            smartseq2_share: 0.002,
            cells_per_bundle: 5_000,
        };
        let spec = mix.spec();
        assert_eq!(spec.smartseq2_bundles, 200);
        // 99,800 10x cells in bundles of 5,000: 20 bundles, the last one fuller.
        assert_eq!(spec.tenx_bundles, 20);
        assert!(spec.validate().is_ok());
    }
}
