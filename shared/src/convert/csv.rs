//! Dense CSV: `matrix.csv.gz` (a header of gene ids, then one line per cell: its id and a
//! value per gene, `0` for zeros), `obs.csv.gz` (the requested fields) and `var.csv.gz`
//! (gene ids and names). Rows are written in order, a gzip member per block of rows, each
//! file streamed to the store in parts. The driver refuses a request whose dense size
//! could pass the configured limit before any work is done.

use super::encode::{GZIP_LEVEL, encode_in_order, gzip, push_f32, push_f64, push_u32};
use super::source::{MatrixSource, RowBlock};
use super::tables::{csv_writer, finish, obs_header, push_field, push_obs_row};
use crate::bundle::Values;
use crate::error::Error;
use crate::obs::ObsValues;
use crate::store::DynStore;
use crate::store::writer::ObjectWriter;

/// Dense values per encoded block.
const BLOCK_CELLS: u64 = 1 << 22;

/// Writes the three files under `prefix`; returns their keys and sizes.
pub async fn write(
    src: &MatrixSource,
    store: &DynStore,
    prefix: &str,
) -> Result<Vec<(String, u64)>, Error> {
    let keys = [
        format!("{prefix}/matrix.csv.gz"),
        format!("{prefix}/obs.csv.gz"),
        format!("{prefix}/var.csv.gz"),
    ];
    let mut matrix = ObjectWriter::new(store.clone(), &keys[0]);
    let mut obs = ObjectWriter::new(store.clone(), &keys[1]);
    let mut var = ObjectWriter::new(store.clone(), &keys[2]);
    let written = write_into(src, &mut matrix, &mut obs, &mut var).await;
    if let Err(e) = written {
        for w in [matrix, obs, var] {
            w.abort().await;
        }
        return Err(e);
    }
    let mut out = Vec::new();
    for (key, w) in keys.into_iter().zip([matrix, obs, var]) {
        let size = w.finish().await?;
        out.push((key, size));
    }
    Ok(out)
}

async fn write_into(
    src: &MatrixSource,
    matrix: &mut ObjectWriter,
    obs: &mut ObjectWriter,
    var: &mut ObjectWriter,
) -> Result<(), Error> {
    let mut header = csv_writer();
    header.write_field("cell").map_err(output_error)?;
    for id in &src.gene_ids {
        header.write_field(id).map_err(output_error)?;
    }
    header.write_record(None::<&[u8]>).map_err(output_error)?;
    matrix.write(&gzip(&finish(header)?, GZIP_LEVEL)).await?;
    let columns: Vec<String> = src.columns.iter().map(|c| c.name.clone()).collect();
    let kinds: std::sync::Arc<Vec<crate::obs::ColumnKind>> =
        std::sync::Arc::new(src.columns.iter().map(|c| c.kind.clone()).collect());
    obs.write(&gzip(&obs_header(b',', "cell", &columns)?, GZIP_LEVEL))
        .await?;

    let n_genes = src.n_genes as usize;
    // Rows per block, so that a block has about BLOCK_CELLS dense values.
    let rows = (BLOCK_CELLS / src.n_genes.max(1)).max(1);
    let blocks = src.blocks(u64::MAX / 2, rows);
    encode_in_order(
        &blocks,
        |rows| async move {
            let (block, obs) = futures::try_join!(src.rows(rows.clone()), src.obs(rows))?;
            Ok((block, obs))
        },
        move |(block, obs): (RowBlock, Vec<ObsValues>)| {
            let m = gzip(&dense_rows(&block, n_genes), GZIP_LEVEL);
            let mut w = csv_writer();
            for (r, name) in block.names.iter().enumerate() {
                push_obs_row(&mut w, name, &obs, &kinds, r)?;
            }
            Ok(vec![m, gzip(&finish(w)?, GZIP_LEVEL)])
        },
        &mut [matrix, obs],
    )
    .await?;

    let mut w = csv_writer();
    w.write_record(["gene_id", "feature_name"])
        .map_err(output_error)?;
    for (id, name) in src.gene_ids.iter().zip(&src.gene_names) {
        w.write_record([id, name]).map_err(output_error)?;
    }
    var.write(&gzip(&finish(w)?, GZIP_LEVEL)).await?;
    Ok(())
}

fn output_error(e: impl std::fmt::Display) -> Error {
    Error::Output {
        format: "csv",
        message: e.to_string(),
    }
}

/// The dense lines of a block: the quoted cell id, then a value per gene.
fn dense_rows(block: &RowBlock, n_genes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.rows() * (n_genes * 2 + 32));
    for r in 0..block.rows() {
        push_field(&mut out, &block.names[r], b',');
        let mut next = 0usize;
        for k in block.row(r) {
            let g = block.indices[k] as usize;
            for _ in next..g {
                out.extend_from_slice(b",0");
            }
            out.push(b',');
            match &block.data {
                Values::U32(v) => push_u32(&mut out, v[k]),
                Values::F32(v) => push_f32(&mut out, v[k]),
                Values::F64(v) => push_f64(&mut out, v[k]),
            }
            next = g + 1;
        }
        for _ in next..n_genes {
            out.extend_from_slice(b",0");
        }
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_dense() {
        let block = RowBlock {
            first: 0,
            indptr: vec![0, 2, 2],
            indices: vec![1, 3],
            data: Values::U32(vec![5, 9]),
            names: vec!["x:a,b".into(), "y".into()],
        };
        assert_eq!(
            String::from_utf8(dense_rows(&block, 4)).unwrap(),
            "\"x:a,b\",0,5,0,9\ny,0,0,0,0\n"
        );
    }
}
