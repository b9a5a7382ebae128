//! `cellmatrix demo`: ingests the samples shipped in the repository into the store, then
//! runs a mixed 10x + SmartSeq2 query with a cell filter through the whole pipeline
//! (driver, mappers, workers, collector, consolidation) in this process. No network, no
//! servers.

use std::path::PathBuf;
use std::time::Instant;

use std::time::Duration;

use anyhow::{Context, bail};
use cellmatrix::app::{App, default_limit};
use cellmatrix::config::Config;
use cellmatrix::handlers::driver;
use cellmatrix::ingest::{IngestOptions, ingest};
use cellmatrix::store::DynStore;
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The samples directory (the repository's `samples/` by default).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples"))]
    samples: PathBuf,
}

pub async fn run(store: &DynStore, a: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let pbmc = ingest(
        store,
        &a.samples.join("pbmc3k_300"),
        &IngestOptions {
            sidecar: Some(a.samples.join("pbmc3k_300.json")),
            ..IngestOptions::default()
        },
    )
    .await?;
    let chung = ingest(
        store,
        &a.samples.join("chung_smartseq2_40.tsv.gz"),
        &IngestOptions {
            sidecar: Some(a.samples.join("chung_smartseq2_40.json")),
            one_bundle_per_cell: true,
            ..IngestOptions::default()
        },
    )
    .await?;
    let catalog = cellmatrix::catalog::read(store).await?;
    let cells: u64 = catalog.bundles.values().map(|e| e.n_cells).sum();
    println!(
        "ingested {} 10x cells (1 bundle) and {} SmartSeq2 cells ({} bundles) in {:.2} s",
        pbmc.cells,
        chung.cells,
        chung.bundles.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "store {}: {} bundles, {cells} cells (catalog generation {})",
        store.describe(),
        catalog.bundles.len(),
        catalog.generation
    );
    let example = pbmc.bundles[0].manifest();
    println!(
        "10x bundle {}: {} cells x {} genes, {} nonzeros ({})",
        example.fqid,
        example.n_cells,
        example.n_features,
        example.nnz,
        example.value_type.zarr_name()
    );
    query(store).await
}

/// The demo's query: every cell of either assay with at least 500 genes and under 10%
/// mitochondrial counts, with a few obs fields.
async fn query(store: &DynStore) -> anyhow::Result<()> {
    let request = json!({
        "filter": {"op": "and", "value": [
            {"op": "in", "field": "bundle.assay", "value": ["10x", "smartseq2"]},
            {"op": ">=", "field": "cell.n_genes", "value": 500},
            {"op": "<", "field": "cell.pct_mito", "value": 10}
        ]},
        "format": "zarr",
        "fields": ["bundle.project", "bundle.assay", "cell.barcode", "cell.n_genes", "cell.total_counts", "cell.pct_mito"]
    });
    let mut config = Config::new(store.describe());
    config.poll_interval = Duration::from_millis(20);
    // In one process no launch is lost: a copy of each task would only share its cores.
    config.hedge_small = 0;
    let app = App::in_process(config, store.clone(), default_limit);
    println!("query: {request}");
    let started = Instant::now();
    let answer = driver::handle(&app, "POST", "/v1/matrix", request.to_string().as_bytes()).await;
    if answer.status >= 400 {
        bail!(
            "the driver refused the demo query ({}): {}",
            answer.status,
            answer.body["message"]
        );
    }
    let id = answer.body["id"]
        .as_str()
        .context("no request id")?
        .to_string();
    let bar = cellmatrix::progress::bar(true, 0, "tasks");
    let status = loop {
        let status = driver::handle(&app, "GET", &format!("/v1/matrix/{id}"), b"")
            .await
            .body;
        if let Some(total) = status["progress"]["tasks_total"].as_u64() {
            bar.set_length(total);
            bar.set_position(status["progress"]["tasks_done"].as_u64().unwrap_or(0));
        }
        if status["status"] != "Running" {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    bar.finish_and_clear();
    app.idle().await;
    let seconds = started.elapsed().as_secs_f64();
    if status["status"] != "Succeeded" {
        bail!(
            "request {id} ended {}: {}",
            status["status"],
            status["message"]
        );
    }
    let r = &status["result"];
    let tasks = status["progress"]["tasks_total"].as_u64().unwrap_or(0);
    println!(
        "request {id}: {} cells x {} genes, {} nonzeros from {} bundles in {tasks} tasks, in {seconds:.2} s",
        r["n_cells"], r["n_genes"], r["nnz"], status["progress"]["bundles"]
    );
    let location = r["location"].as_str().unwrap_or_default();
    println!("matrix (AnnData Zarr v3): {location}");
    println!("open it with: python -c \"import anndata; print(anndata.read_zarr('{location}'))\"");
    Ok(())
}
