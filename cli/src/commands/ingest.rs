//! `cellmatrix ingest`.

use std::io::IsTerminal;
use std::path::PathBuf;

use cellmatrix::Fqid;
use cellmatrix::bundle::{BundleMetadata, Layout, WriteOutcome};
use cellmatrix::field::{Level, Scalar, stored_name};
use cellmatrix::ingest::sidecar::infer;
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
    /// Any bundle field, as KEY=VALUE (repeatable); VALUE is typed like a TSV value
    /// (integer, number, true/false, else string). Flags win over the sidecar.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    meta: Vec<(String, Scalar)>,
    /// Metadata sidecar: JSON object, or TSV (key<TAB>value lines, or a `cell` column per
    /// cell). Per-cell rows become cell fields, matched by cell id.
    #[arg(long)]
    metadata: Option<PathBuf>,
    /// Refuse a sidecar whose per-cell rows name a cell the input lacks, or that lacks
    /// a row for some cell.
    #[arg(long)]
    strict_metadata: bool,
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

/// `KEY=VALUE` of `--meta`: the key normalised to a bundle field name, the value
/// typed as a TSV value is.
fn parse_meta(s: &str) -> Result<(String, Scalar), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!("{s:?}: expected KEY=VALUE"));
    };
    if key.trim().is_empty() {
        return Err(format!("{s:?}: the key before '=' is empty"));
    }
    let Some(value) = infer(value) else {
        return Err(format!(
            "{s:?}: the value after '=' is empty; omit --meta to leave a field unset"
        ));
    };
    Ok((stored_name(Level::Bundle, key.trim()).0, value))
}

/// The bundle fields the flags set; a field set twice is an error.
fn flag_metadata(
    named: [(&str, Option<String>); 5],
    meta: Vec<(String, Scalar)>,
) -> anyhow::Result<BundleMetadata> {
    let mut out = BundleMetadata::default();
    for (name, value) in named {
        if let Some(v) = value {
            out.set(name, Scalar::Str(v));
        }
    }
    for (name, value) in meta {
        if out.scalar(&name).is_some() {
            anyhow::bail!("bundle field {name} is given twice (by --{name} or --meta)");
        }
        out.set(&name, value);
    }
    Ok(out)
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
        metadata: flag_metadata(
            [
                ("project", a.project),
                ("organ", a.organ),
                ("species", a.species),
                ("assay", a.assay),
                ("donor", a.donor),
            ],
            a.meta,
        )?,
        sidecar: a.metadata,
        strict_metadata: a.strict_metadata,
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
                "sidecar_rows": r.sidecar_rows,
                "notes": r.notes,
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
            for note in &r.notes {
                println!("  note: {note}");
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_flags_are_typed_and_checked() {
        assert_eq!(parse_meta("age=42"), Ok(("age".into(), Scalar::Int(42))));
        assert_eq!(
            parse_meta("Cell Line=HeLa S3"),
            Ok(("cell_line".into(), Scalar::Str("HeLa S3".into())))
        );
        assert_eq!(parse_meta("ph=7.5"), Ok(("ph".into(), Scalar::Num(7.5))));
        assert_eq!(
            parse_meta("healthy=true"),
            Ok(("healthy".into(), Scalar::Bool(true)))
        );
        assert_eq!(
            parse_meta("eq=a=b"),
            Ok(("eq".into(), Scalar::Str("a=b".into())))
        );
        assert_eq!(parse_meta("fqid=x").unwrap().0, "input_fqid");
        assert!(
            parse_meta("noequals")
                .unwrap_err()
                .contains("expected KEY=VALUE")
        );
        assert!(
            parse_meta("=v")
                .unwrap_err()
                .contains("key before '=' is empty")
        );
        assert!(
            parse_meta("k=")
                .unwrap_err()
                .contains("value after '=' is empty")
        );

        let m = flag_metadata(
            [
                ("project", Some("P".into())),
                ("organ", None),
                ("species", None),
                ("assay", None),
                ("donor", None),
            ],
            vec![
                ("organ".into(), Scalar::Str("lung".into())),
                ("age".into(), Scalar::Int(3)),
            ],
        )
        .unwrap();
        assert_eq!(m.organ.as_deref(), Some("lung"));
        assert_eq!(m.scalar("age"), Some(Scalar::Int(3)));
        let err = flag_metadata(
            [
                ("project", Some("P".into())),
                ("organ", None),
                ("species", None),
                ("assay", None),
                ("donor", None),
            ],
            vec![("project".into(), Scalar::Str("Q".into()))],
        )
        .unwrap_err();
        assert!(err.to_string().contains("project is given twice"), "{err}");
    }
}
