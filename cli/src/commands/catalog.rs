//! `cellmatrix catalog`.

use std::io::Write;

use cellmatrix::store::DynStore;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the catalog as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(store: &DynStore, a: Args) -> anyhow::Result<()> {
    let catalog = cellmatrix::catalog::read(store).await?;
    // Written, not printed: `println!` panics when the reader goes away (`| head`); a
    // write error ends the command instead, and `main` takes a broken pipe for done.
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&catalog)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<62} {:>8} {:>7} {:>10} {:<8} {:<12} {:<10} {:<10}",
        "fqid", "cells", "genes", "nnz", "type", "project", "assay", "donor"
    )?;
    let (mut cells, mut nnz) = (0u64, 0u64);
    for (fqid, e) in &catalog.bundles {
        let m = &e.metadata;
        writeln!(
            out,
            "{:<62} {:>8} {:>7} {:>10} {:<8} {:<12} {:<10} {:<10}",
            fqid.as_str(),
            e.n_cells,
            e.n_features,
            e.nnz,
            e.value_type.zarr_name(),
            m.project.as_deref().unwrap_or("-"),
            m.assay.as_deref().unwrap_or("-"),
            m.donor.as_deref().unwrap_or("-"),
        )?;
        cells += e.n_cells;
        nnz += e.nnz;
    }
    writeln!(
        out,
        "{} bundle(s), {cells} cells, {nnz} nonzeros (catalog generation {})",
        catalog.bundles.len(),
        catalog.generation
    )?;
    Ok(())
}
