//! `cellmatrix ingest`.

use std::io::IsTerminal;
use std::path::PathBuf;

use cellmatrix::Fqid;
use cellmatrix::bundle::{BundleMetadata, Layout, WriteOutcome};
use cellmatrix::ingest::{IngestOptions, InputFormat, Orientation};
use cellmatrix::store::DynStore;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Inputs: 10x matrix directories, .h5 (Cell Ranger), .h5ad, .csv/.tsv tables.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The input format, when the name does not tell.
    #[arg(long, value_parser = parse_format)]
    format: Option<InputFormat>,
    /// Bundle id (uuid.version); generated from the content when omitted.
    #[arg(long)]
    fqid: Option<String>,
    /// Project.
    #[arg(long)]
    project: Option<String>,
    /// Organ or tissue.
    #[arg(long)]
    organ: Option<String>,
    /// Species.
    #[arg(long)]
    species: Option<String>,
    /// Assay (10x, smartseq2, ...).
    #[arg(long)]
    assay: Option<String>,
    /// Donor.
    #[arg(long)]
    donor: Option<String>,
    /// Metadata sidecar: JSON object, or TSV (key<TAB>value lines, or a `cell` column per cell).
    #[arg(long)]
    metadata: Option<PathBuf>,
    /// Make one bundle per cell (SmartSeq2-style tables).
    #[arg(long)]
    one_bundle_per_cell: bool,
    /// Orientation of a table: auto, genes-by-cells or cells-by-genes.
    #[arg(long, default_value = "auto")]
    orientation: Orientation,
    /// Rows per chunk of the written arrays.
    #[arg(long, default_value_t = Layout::default().rows_per_chunk)]
    rows_per_chunk: u64,
    /// Print a JSON report instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_format(s: &str) -> Result<InputFormat, String> {
    match s {
        "mtx" | "10x-mtx" => Ok(InputFormat::TenxMtx),
        "h5" | "10x-h5" => Ok(InputFormat::TenxH5),
        "h5ad" => Ok(InputFormat::H5ad),
        "table" | "csv" | "tsv" => Ok(InputFormat::Table),
        _ => Err(format!("{s:?}: expected mtx, h5, h5ad or table")),
    }
}

pub async fn run(store: &DynStore, a: Args) -> anyhow::Result<()> {
    if a.fqid.is_some() && a.inputs.len() > 1 {
        anyhow::bail!("--fqid names one bundle; give one input with it");
    }
    if a.rows_per_chunk == 0 {
        anyhow::bail!("--rows-per-chunk must be at least 1");
    }
    // Parsed here rather than by clap, so a bad id is a one-line error like any other.
    let fqid = a.fqid.as_deref().map(Fqid::parse).transpose()?;
    let opts = IngestOptions {
        format: a.format,
        fqid,
        metadata: BundleMetadata {
            project: a.project,
            organ: a.organ,
            species: a.species,
            assay: a.assay,
            donor: a.donor,
            other: Default::default(),
        },
        sidecar: a.metadata,
        one_bundle_per_cell: a.one_bundle_per_cell,
        orientation: a.orientation,
        layout: Layout {
            rows_per_chunk: a.rows_per_chunk,
            ..Layout::default()
        },
        progress: std::io::stderr().is_terminal() && !a.json,
    };
    let mut reports = Vec::new();
    for input in &a.inputs {
        let r = cellmatrix::ingest::ingest(store, input, &opts).await?;
        let written = r
            .bundles
            .iter()
            .filter(|b| matches!(b, WriteOutcome::Written(_)))
            .count();
        if a.json {
            reports.push(serde_json::json!({
                "input": input.display().to_string(),
                "cells": r.cells,
                "bundles": r.bundles.iter().map(|b| b.manifest().fqid.to_string()).collect::<Vec<_>>(),
                "written": written,
                "read_seconds": r.read_seconds,
                "total_seconds": r.total_seconds,
            }));
        } else {
            let present = r.bundles.len() - written;
            println!(
                "{}: {} cells -> {} bundle(s) ({written} written, {present} already present) in {:.2} s ({:.0} cells/s; parse {:.2} s)",
                input.display(),
                r.cells,
                r.bundles.len(),
                r.total_seconds,
                r.cells as f64 / r.total_seconds.max(1e-9),
                r.read_seconds,
            );
            if r.bundles.len() <= 10 {
                for b in &r.bundles {
                    println!("  {}", b.manifest().fqid);
                }
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}
