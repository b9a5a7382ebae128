//! Dense count tables (CSV/TSV, optionally gzipped), in either orientation. The first row
//! holds column labels and the first column row labels; a table has no separate feature
//! ids, so a feature's id and name are both its label.

use std::path::Path;

use crate::bundle::{Csr, Features, SourceMatrix, Values};
use crate::error::Error;
use crate::ingest::limits::{MAX_ARRAY_BYTES, STRING_OVERHEAD};
use crate::ingest::text::{next_line, open_text};

/// Bytes in memory per stored nonzero: its row and column (u32) and value (f64), and
/// the sort's usize permutation when the matrix is built.
const NONZERO_BYTES: u64 = 4 + 4 + 8 + 8;

/// Which way round a table is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Orientation {
    /// Decide from the header's first cell (`gene`, `Geneid`, ... → genes by cells;
    /// `cell`, `barcode`, ... → cells by genes).
    #[default]
    Auto,
    /// One row per gene, one column per cell (the SmartSeq2 convention).
    GenesByCells,
    /// One row per cell, one column per gene.
    CellsByGenes,
}

impl std::str::FromStr for Orientation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Orientation::Auto),
            "genes-by-cells" => Ok(Orientation::GenesByCells),
            "cells-by-genes" => Ok(Orientation::CellsByGenes),
            _ => Err(format!(
                "{s:?}: expected auto, genes-by-cells or cells-by-genes"
            )),
        }
    }
}

fn guess(corner: &str) -> Option<Orientation> {
    let c = corner.trim().trim_matches('"').to_ascii_lowercase();
    const GENE: &[&str] = &[
        "gene",
        "genes",
        "geneid",
        "gene_id",
        "gene_ids",
        "gene_name",
        "gene_symbol",
        "symbol",
        "feature",
        "features",
        "feature_id",
        "ensembl_id",
    ];
    const CELL: &[&str] = &[
        "cell",
        "cells",
        "cell_id",
        "cellid",
        "barcode",
        "barcodes",
        "sample",
        "sample_id",
    ];
    if GENE.contains(&c.as_str()) {
        Some(Orientation::GenesByCells)
    } else if CELL.contains(&c.as_str()) {
        Some(Orientation::CellsByGenes)
    } else {
        None
    }
}

/// Reads a dense table.
pub fn read_table(
    path: &Path,
    orientation: Orientation,
    progress: bool,
) -> Result<SourceMatrix, Error> {
    let what = path.display().to_string();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let delim = if name.ends_with(".csv") { ',' } else { '\t' };
    let bar = crate::progress::bytes_bar(progress, 0, "reading table");
    let mut reader = open_text(path, &bar)?.reader;
    let mut line = String::new();
    if !next_line(&mut reader, &mut line, path)? {
        return Err(Error::input(&what, "empty file"));
    }
    let header: Vec<String> = split(&line, delim).map(str::to_string).collect();
    if header.len() < 2 {
        return Err(Error::input(
            &what,
            "the header has no data columns (wrong delimiter?)",
        ));
    }
    let orientation = match orientation {
        Orientation::Auto => guess(&header[0]).ok_or_else(|| {
            Error::input(
                &what,
                format!(
                    "cannot tell the orientation from the first header cell {:?}; pass --orientation genes-by-cells or cells-by-genes",
                    header[0]
                ),
            )
        })?,
        o => o,
    };
    let col_labels: Vec<String> = header[1..]
        .iter()
        .map(|s| s.trim_matches('"').to_string())
        .collect();
    let n_cols = col_labels.len();
    if u32::try_from(n_cols).is_err() {
        return Err(Error::input(&what, "more than 2^32 columns"));
    }
    // What the rows and nonzeros read so far hold in memory; checked as they grow, so a
    // table of many short lines cannot take more than the cap.
    let mut held = 0u64;
    let mut row_labels = Vec::new();
    // Nonzeros as (row, col, value), table coordinates.
    let mut rows: Vec<u32> = Vec::new();
    let mut cols: Vec<u32> = Vec::new();
    let mut values: Vec<f64> = Vec::new();
    let mut line_no = 1usize;
    loop {
        if !next_line(&mut reader, &mut line, path)? {
            break;
        }
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = split(&line, delim);
        let label = fields
            .next()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string();
        let r = u32::try_from(row_labels.len())
            .map_err(|_| Error::input(&what, "more than 2^32 rows"))?;
        held += STRING_OVERHEAD + label.len() as u64;
        let mut c = 0usize;
        for field in fields {
            if c >= n_cols {
                return Err(Error::input(
                    &what,
                    format!(
                        "line {line_no}: more than the header's {} columns",
                        n_cols + 1
                    ),
                ));
            }
            let t = field.trim();
            let x: f64 = t
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite())
                .ok_or_else(|| {
                    Error::input(
                        &what,
                        format!(
                            "line {line_no}, column {} ({:?}): {t:?} is not a number",
                            c + 2,
                            col_labels[c]
                        ),
                    )
                })?;
            if x != 0.0 {
                held += NONZERO_BYTES;
                rows.push(r);
                cols.push(c as u32);
                values.push(x);
            }
            c += 1;
        }
        if c != n_cols {
            return Err(Error::input(
                &what,
                format!(
                    "line {line_no}: {} columns but the header has {}",
                    c + 1,
                    n_cols + 1
                ),
            ));
        }
        if held > MAX_ARRAY_BYTES {
            return Err(Error::input(
                &what,
                format!(
                    "line {line_no}: the table so far takes more than {MAX_ARRAY_BYTES} bytes in memory"
                ),
            ));
        }
        row_labels.push(label);
    }
    bar.finish_and_clear();
    let (cells, genes, cell_idx, gene_idx) = match orientation {
        Orientation::CellsByGenes => (row_labels, col_labels, rows, cols),
        _ => (col_labels, row_labels, cols, rows),
    };
    let matrix = Csr::from_triplets(
        &what,
        cells.len(),
        genes.len(),
        &cell_idx,
        &gene_idx,
        Values::F64(values),
    )?;
    Ok(SourceMatrix {
        obs: Vec::new(),
        cells,
        features: Features {
            ids: genes.clone(),
            names: genes,
        },
        matrix,
    })
}

fn split(line: &str, delim: char) -> impl Iterator<Item = &str> {
    line.trim_end_matches(['\n', '\r']).split(delim)
}
