//! 10x matrix directories: `matrix.mtx` (features × cells, MatrixMarket coordinate),
//! `barcodes.tsv` and `features.tsv` (v3) or `genes.tsv` (v2), each optionally gzipped.

use std::path::{Path, PathBuf};

use crate::bundle::{Csr, Features, SourceMatrix, Values};
use crate::error::Error;
use crate::ingest::limits::{MAX_ARRAY_BYTES, check_array};
use crate::ingest::text::{next_line, open_text, read_lines};

/// The shortest entry line, `1 1 1\n`: a file of N bytes holds at most N / 6 entries.
const MIN_ENTRY_BYTES: u64 = 6;

/// Finds `stem` or `stem.gz` in `dir`.
fn find(dir: &Path, stems: &[&str]) -> Option<PathBuf> {
    stems
        .iter()
        .flat_map(|s| [dir.join(s), dir.join(format!("{s}.gz"))])
        .find(|p| p.is_file())
}

/// Reads a 10x matrix directory.
pub fn read_10x_mtx(dir: &Path, progress: bool) -> Result<SourceMatrix, Error> {
    let what = dir.display().to_string();
    if !dir.is_dir() {
        return Err(Error::input(
            &what,
            "not a directory (expected a 10x matrix directory)",
        ));
    }
    let matrix_path = find(dir, &["matrix.mtx"])
        .ok_or_else(|| Error::input(&what, "no matrix.mtx or matrix.mtx.gz"))?;
    let barcodes_path = find(dir, &["barcodes.tsv"])
        .ok_or_else(|| Error::input(&what, "no barcodes.tsv or barcodes.tsv.gz"))?;
    let features_path = find(dir, &["features.tsv", "genes.tsv"])
        .ok_or_else(|| Error::input(&what, "no features.tsv(.gz) or genes.tsv(.gz)"))?;

    let barcodes: Vec<String> = read_lines(&barcodes_path)?
        .into_iter()
        .map(|l| l.split('\t').next().unwrap_or_default().to_string())
        .collect();
    let features = read_features(&features_path)?;
    let bar = crate::progress::bytes_bar(progress, 0, "reading matrix.mtx");
    let (n_features, n_cells, rows, cols, values) = read_mtx(&matrix_path, &bar)?;
    bar.finish_and_clear();
    let mtx_name = matrix_path.display().to_string();
    if n_cells != barcodes.len() {
        return Err(Error::input(
            &mtx_name,
            format!(
                "the matrix has {n_cells} columns (cells) but {} lists {} barcodes",
                barcodes_path.display(),
                barcodes.len()
            ),
        ));
    }
    if n_features != features.ids.len() {
        return Err(Error::input(
            &mtx_name,
            format!(
                "the matrix has {n_features} rows (features) but {} lists {} features",
                features_path.display(),
                features.ids.len()
            ),
        ));
    }
    // mtx is features × cells; bundles are cells × features.
    let matrix = Csr::from_triplets(&mtx_name, n_cells, n_features, &cols, &rows, values)?;
    Ok(SourceMatrix {
        obs: Vec::new(),
        cells: barcodes,
        features,
        matrix,
    })
}

fn read_features(path: &Path) -> Result<Features, Error> {
    let mut ids = Vec::new();
    let mut names = Vec::new();
    for (i, line) in read_lines(path)?.into_iter().enumerate() {
        let mut parts = line.split('\t');
        let id = parts.next().unwrap_or_default().trim();
        if id.is_empty() {
            return Err(Error::input(
                path.display().to_string(),
                format!("line {}: empty feature id", i + 1),
            ));
        }
        let name = parts
            .next()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(id);
        ids.push(id.to_string());
        names.push(name.to_string());
    }
    Ok(Features { ids, names })
}

type Triplets = (usize, usize, Vec<u32>, Vec<u32>, Values);

/// Parses a MatrixMarket coordinate file into 0-based (row, col, value) triplets.
fn read_mtx(path: &Path, bar: &indicatif::ProgressBar) -> Result<Triplets, Error> {
    let what = path.display().to_string();
    let bad = |line_no: usize, msg: String| Error::input(&what, format!("line {line_no}: {msg}"));
    let text = open_text(path, bar)?;
    let (max_bytes, file_bytes) = (text.max_bytes, text.file_bytes);
    let mut reader = text.reader;
    let mut line = String::new();
    let mut line_no = 0usize;
    let mut read_next = |line: &mut String| -> Result<bool, Error> {
        line_no += 1;
        next_line(&mut reader, line, path)
    };

    if !read_next(&mut line)? {
        return Err(Error::input(&what, "empty file"));
    }
    let banner = line.trim().to_ascii_lowercase();
    let fields: Vec<&str> = banner.split_whitespace().collect();
    if fields.len() < 5
        || fields[0] != "%%matrixmarket"
        || fields[1] != "matrix"
        || fields[2] != "coordinate"
    {
        return Err(Error::input(
            &what,
            "not a MatrixMarket coordinate matrix (bad %%MatrixMarket header)",
        ));
    }
    let integer = match fields[3] {
        "integer" => true,
        "real" | "double" => false,
        other => {
            return Err(Error::input(
                &what,
                format!("unsupported MatrixMarket field type {other:?}"),
            ));
        }
    };
    if fields[4] != "general" {
        return Err(Error::input(
            &what,
            format!("unsupported MatrixMarket symmetry {:?}", fields[4]),
        ));
    }
    let mut count = 1usize;
    loop {
        if !read_next(&mut line)? {
            return Err(Error::input(&what, "no size line"));
        }
        count += 1;
        if !line.starts_with('%') && !line.trim().is_empty() {
            break;
        }
    }
    let size: Vec<usize> = line
        .split_whitespace()
        .map(|t| t.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad(count, format!("bad size line {:?}", line.trim())))?;
    let [n_rows, n_cols, nnz] = size[..] else {
        return Err(bad(
            count,
            format!("size line needs 3 numbers, got {:?}", line.trim()),
        ));
    };
    if n_rows > u32::MAX as usize || n_cols > u32::MAX as usize {
        return Err(bad(count, "matrix too large".into()));
    }
    // The header's count is checked against what the file can hold before anything is
    // sized from it, in the widest form an entry takes (the values as f64, and the
    // sort's usize permutation later).
    let max_entries = max_bytes / MIN_ENTRY_BYTES;
    if nnz as u64 > max_entries {
        return Err(bad(
            count,
            format!(
                "the size line declares {nnz} entries, but this file can hold at most \
                 {max_entries} (it holds at most {max_bytes} bytes of text)"
            ),
        ));
    }
    check_array(&what, "the entries", nnz as u64, 8, MAX_ARRAY_BYTES)?;
    // A gzipped file's bound is loose (it may inflate 512-fold): reserve what its size
    // on disk can hold and let the vectors grow past that if the entries are there.
    let reserve = nnz.min(usize::try_from(file_bytes / MIN_ENTRY_BYTES).unwrap_or(usize::MAX));
    let mut rows = Vec::with_capacity(reserve);
    let mut cols = Vec::with_capacity(reserve);
    let mut ints: Vec<u32> = Vec::new();
    let mut reals: Vec<f64> = Vec::new();
    if integer {
        ints.reserve(reserve);
    } else {
        reals.reserve(reserve);
    }
    let mut seen = 0usize;
    while read_next(&mut line)? {
        let t = line.trim();
        if t.is_empty() || t.starts_with('%') {
            continue;
        }
        seen += 1;
        let n = count + seen;
        if seen > nnz {
            return Err(bad(
                n,
                format!("more entries than the {nnz} the size line declares"),
            ));
        }
        let mut it = t.split_ascii_whitespace();
        let (Some(r), Some(c), Some(v), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(bad(n, format!("expected 'row col value', got {t:?}")));
        };
        let r: usize = r
            .parse()
            .map_err(|_| bad(n, format!("bad row index {r:?}")))?;
        let c: usize = c
            .parse()
            .map_err(|_| bad(n, format!("bad column index {c:?}")))?;
        if r == 0 || r > n_rows || c == 0 || c > n_cols {
            return Err(bad(
                n,
                format!("entry ({r}, {c}) outside the {n_rows} x {n_cols} matrix"),
            ));
        }
        rows.push((r - 1) as u32);
        cols.push((c - 1) as u32);
        if integer {
            ints.push(
                v.parse()
                    .map_err(|_| bad(n, format!("{v:?} is not a non-negative integer count")))?,
            );
        } else {
            let x: f64 = v
                .parse()
                .map_err(|_| bad(n, format!("{v:?} is not a number")))?;
            if !x.is_finite() {
                return Err(bad(n, format!("{v:?} is not a finite number")));
            }
            reals.push(x);
        }
    }
    if seen != nnz {
        return Err(Error::input(
            &what,
            format!("the size line declares {nnz} entries but the file has {seen} (truncated?)"),
        ));
    }
    let values = if integer {
        Values::U32(ints)
    } else {
        Values::F64(reals)
    };
    Ok((n_rows, n_cols, rows, cols, values))
}
