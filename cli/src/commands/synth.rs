//! `cellmatrix synth`.

use std::io::IsTerminal;

use cellmatrix::bundle::WriteOutcome;
use cellmatrix::store::DynStore;
use cellmatrix_lab::synth::{SynthOptions, SynthSpec};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of 10x-like bundles (many sparse cells of UMI counts each).
    #[arg(long, default_value_t = SynthSpec::default().tenx_bundles)]
    tenx_bundles: usize,
    /// Cells in each 10x-like bundle.
    #[arg(long, default_value_t = SynthSpec::default().cells_per_tenx_bundle)]
    cells_per_bundle: usize,
    /// Number of SmartSeq2-like bundles (one deep cell of read counts each).
    #[arg(long, default_value_t = SynthSpec::default().smartseq2_bundles)]
    smartseq2_bundles: usize,
    /// Genes in the shared feature list (13 of them mitochondrial).
    #[arg(long, default_value_t = SynthSpec::default().n_genes)]
    genes: usize,
    /// Seed; the same seed and sizes give the same bundles, ids included.
    #[arg(long, default_value_t = SynthSpec::default().seed)]
    seed: u64,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(store: &DynStore, a: Args) -> anyhow::Result<()> {
    let spec = SynthSpec {
        tenx_bundles: a.tenx_bundles,
        cells_per_tenx_bundle: a.cells_per_bundle,
        smartseq2_bundles: a.smartseq2_bundles,
        n_genes: a.genes,
        seed: a.seed,
        ..SynthSpec::default()
    };
    let opts = SynthOptions {
        progress: std::io::stderr().is_terminal() && !a.json,
        ..SynthOptions::default()
    };
    let r = cellmatrix_lab::synth::synth(store, &spec, &opts).await?;
    let written = r
        .bundles
        .iter()
        .filter(|b| matches!(b, WriteOutcome::Written(_)))
        .count();
    let present = r.bundles.len() - written;
    let seconds = r.total_seconds.max(1e-9);
    let stored_bytes: u64 = r.bundles.iter().map(|b| b.manifest().stored_bytes).sum();
    if a.json {
        let report = serde_json::json!({
            "store": store.describe(),
            "seed": spec.seed,
            "genes": spec.n_genes,
            "tenx_bundles": spec.tenx_bundles,
            "cells_per_bundle": spec.cells_per_tenx_bundle,
            "smartseq2_bundles": spec.smartseq2_bundles,
            "bundles": r.bundles.len(),
            "written": written,
            "already_present": present,
            "cells": r.cells,
            "nnz": r.nnz,
            "stored_bytes": stored_bytes,
            "generate_seconds": r.generate_seconds,
            "total_seconds": r.total_seconds,
            "cells_per_second": r.cells as f64 / seconds,
            "nnz_per_second": r.nnz as f64 / seconds,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} bundle(s) ({written} written, {present} already present): {} cells, {} nonzeros, {:.1} MiB stored",
            r.bundles.len(),
            r.cells,
            r.nnz,
            stored_bytes as f64 / (1024.0 * 1024.0),
        );
        println!(
            "{:.2} s ({:.0} cells/s, {:.1} M nonzeros/s); generation {:.2} s summed over bundles, which overlap",
            r.total_seconds,
            r.cells as f64 / seconds,
            r.nnz as f64 / seconds / 1e6,
            r.generate_seconds,
        );
    }
    Ok(())
}
