//! Loom 3.0 (`.loom`), written with hdf5-pure: `/matrix` genes × cells, chunked 64 × 64
//! and deflated as loompy writes it; row attributes `Accession` (gene id) and `Gene`
//! (name); column attributes `CellID` and the requested fields; the empty `layers`,
//! `row_graphs` and `col_graphs` groups; `/attrs/LOOM_SPEC_VERSION`.
//!
//! Loom is dense, and hdf5-pure grows only one-dimensional datasets in place, so the
//! matrix is built in memory, genes × cells, and handed to the writer whole. That is why
//! the driver refuses a loom request whose dense size could pass `loom_max_bytes`
//! (default 512 MiB) before any work starts, suggesting h5ad or mtx, which stream.

use std::path::Path;

use hdf5_pure::{AttrValue, FileBuilder};

use super::encode::{scratch_dir, upload};
use super::source::MatrixSource;
use crate::bundle::Values;
use crate::error::Error;
use crate::obs::{ColumnKind, ObsValues};
use crate::store::DynStore;

/// Chunk of `/matrix`, as loompy chooses.
const CHUNK: u64 = 64;
/// deflate level (h5py's `compression="gzip"` default).
const DEFLATE: u32 = 4;
/// Rows read at a time.
const BLOCK_ROWS: u64 = 1 << 14;

fn loom_error(e: impl std::fmt::Display) -> Error {
    Error::Output {
        format: "loom",
        message: e.to_string(),
    }
}

/// The dense matrix, genes × cells, row-major.
enum Dense {
    U32(Vec<u32>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Writes `src` as `.loom` to `key`; returns its size.
pub async fn write(
    src: &MatrixSource,
    store: &DynStore,
    key: &str,
    scratch: &Path,
    max_bytes: u64,
) -> Result<u64, Error> {
    let (cells, genes) = (src.n_cells as usize, src.n_genes as usize);
    let bytes = (cells as u64) * (genes as u64) * src.value_type.size() as u64;
    if bytes > max_bytes {
        // The driver checks the bound before starting; a cell filter cannot make the
        // result larger, so this only fires if the limit changed in between.
        return Err(loom_error(format!(
            "{cells} cells x {genes} genes is {bytes} bytes dense, over the limit of \
             {max_bytes}; ask for h5ad or mtx"
        )));
    }
    let n = cells * genes;
    let mut dense = match src.value_type {
        crate::bundle::ValueType::Uint32 => Dense::U32(vec![0; n]),
        crate::bundle::ValueType::Float32 => Dense::F32(vec![0.0; n]),
        crate::bundle::ValueType::Float64 => Dense::F64(vec![0.0; n]),
    };
    for range in src.blocks(u64::MAX / 2, BLOCK_ROWS) {
        let block = src.rows(range).await?;
        for r in 0..block.rows() {
            let cell = block.first as usize + r;
            for k in block.row(r) {
                let at = block.indices[k] as usize * cells + cell;
                match (&mut dense, &block.data) {
                    (Dense::U32(d), Values::U32(v)) => d[at] = v[k],
                    (Dense::F32(d), Values::F32(v)) => d[at] = v[k],
                    (Dense::F64(d), Values::F64(v)) => d[at] = v[k],
                    _ => return Err(loom_error("value type changed while reading")),
                }
            }
        }
    }
    let names = src.all_names().await?;
    let obs = src.obs(0..src.n_cells).await?;
    let columns: Vec<(String, ColumnKind)> = src
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.kind.clone()))
        .collect();
    let (ids, gene_names) = (src.gene_ids.clone(), src.gene_names.clone());

    let dir = scratch_dir(scratch, "loom")?;
    let path = dir.path().join("matrix.loom");
    let p = path.clone();
    tokio::task::spawn_blocking(move || -> Result<(), Error> {
        let strs = escaped;
        let mut b = FileBuilder::new();
        b.set_attr("LOOM_SPEC_VERSION", AttrValue::VarLenString("3.0.0".into()));
        let shape = [genes as u64, cells as u64];
        // Chunks never larger than the matrix; an empty dimension still needs a chunk of 1.
        let chunk = [
            CHUNK.min(genes as u64).max(1),
            CHUNK.min(cells as u64).max(1),
        ];
        let d = b.create_dataset("matrix");
        match &dense {
            Dense::U32(v) => d.with_u32_data(v),
            Dense::F32(v) => d.with_f32_data(v),
            Dense::F64(v) => d.with_f64_data(v),
        };
        d.with_shape(&shape)
            .with_chunks(&chunk)
            .with_deflate(DEFLATE);
        drop(dense);

        let mut attrs = b.create_group("attrs");
        attrs
            .create_dataset("LOOM_SPEC_VERSION")
            .with_vlen_strings(&["3.0.0"]);
        b.add_group(attrs.finish());
        for empty in ["layers", "row_graphs", "col_graphs"] {
            let g = b.create_group(empty);
            b.add_group(g.finish());
        }
        let mut rows = b.create_group("row_attrs");
        rows.create_dataset("Accession")
            .with_vlen_strings(&refs(&strs(&ids)));
        rows.create_dataset("Gene")
            .with_vlen_strings(&refs(&strs(&gene_names)));
        b.add_group(rows.finish());
        let mut cols = b.create_group("col_attrs");
        cols.create_dataset("CellID")
            .with_vlen_strings(&refs(&escaped(&names)));
        // Loom has no categoricals and no nulls: a categorical is its values (null
        // ""), a nullable integer or boolean a float with NaN for null.
        let with_nan = |values: &[f64], mask: &[bool]| -> Vec<f64> {
            values
                .iter()
                .zip(mask)
                .map(|(&v, &null)| if null { f64::NAN } else { v })
                .collect()
        };
        for ((name, kind), values) in columns.iter().zip(&obs) {
            let d = cols.create_dataset(name);
            match values {
                ObsValues::Str(v) => d.with_vlen_strings(&refs(&escaped(v))),
                ObsValues::U32(v) => d.with_u32_data(v),
                ObsValues::F64(v) => d.with_f64_data(v),
                ObsValues::Codes(codes) => {
                    let categories = match kind {
                        ColumnKind::Categorical { categories } => categories.as_slice(),
                        _ => &[],
                    };
                    let text: Vec<String> = codes
                        .iter()
                        .map(|&c| {
                            usize::try_from(c)
                                .ok()
                                .and_then(|c| categories.get(c))
                                .cloned()
                                .unwrap_or_default()
                        })
                        .collect();
                    d.with_vlen_strings(&refs(&escaped(&text)))
                }
                ObsValues::I64 { values, mask: None } => d.with_i64_data(values),
                ObsValues::I64 {
                    values,
                    mask: Some(mask),
                } => {
                    let floats: Vec<f64> = values.iter().map(|&v| v as f64).collect();
                    d.with_f64_data(&with_nan(&floats, mask))
                }
                ObsValues::Bool { values, mask } => {
                    let floats: Vec<f64> = values.iter().map(|&v| f64::from(u8::from(v))).collect();
                    match mask {
                        Some(mask) => d.with_f64_data(&with_nan(&floats, mask)),
                        None => {
                            d.with_u8_data(&values.iter().map(|&v| u8::from(v)).collect::<Vec<_>>())
                        }
                    }
                }
            };
        }
        b.add_group(cols.finish());
        b.write(&p).map_err(loom_error)
    })
    .await
    .map_err(|e| Error::Internal(format!("loom task failed: {e}")))??;
    upload(store, key, &path).await
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A string as loompy stores it: ASCII, `&` and every non-ASCII character written as an
/// XML character reference, since loompy reads strings back through `html.unescape`
/// (and drops non-ASCII bytes that are not escaped).
fn loom_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            c if c.is_ascii() => out.push(c),
            c => {
                out.push_str("&#");
                out.push_str(itoa::Buffer::new().format(c as u32));
                out.push(';');
            }
        }
    }
    out
}

fn escaped(v: &[String]) -> Vec<String> {
    v.iter().map(|s| loom_string(s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_loompy_reads_them() {
        assert_eq!(loom_string("plain-1"), "plain-1");
        assert_eq!(loom_string("a&b"), "a&amp;b");
        assert_eq!(loom_string("cä1"), "c&#228;1");
        assert_eq!(loom_string("&amp;"), "&amp;amp;");
    }
}
