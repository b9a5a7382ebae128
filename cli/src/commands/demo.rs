//! `cellmatrix demo`: ingests the samples shipped in the repository into the store and
//! summarises what is there. No network, no servers.

use std::path::PathBuf;
use std::time::Instant;

use cellmatrix::ingest::{IngestOptions, ingest};
use cellmatrix::store::DynStore;

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
    println!(
        "open it with: python -c \"import anndata; print(anndata.read_zarr('{}/bundles/{}/matrix.zarr'))\"",
        store.describe().trim_start_matches("file://"),
        example.fqid
    );
    println!("the matrix pipeline (driver -> mappers -> workers -> reducer) comes with issue #3");
    Ok(())
}
