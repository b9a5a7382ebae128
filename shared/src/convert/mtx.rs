//! The 10x-style matrix directory, as Cell Ranger writes it, packaged as a `.tar.gz`.
//!
//! Why `.tar.gz`: it is what 10x Genomics publishes its matrices as
//! (`…_filtered_feature_bc_matrix.tar.gz`, unpacking to `filtered_feature_bc_matrix/`),
//! so scripts written for Cell Ranger output work on ours after one `tar xzf`. The files
//! inside are already gzipped, so the outer gzip stores them without compressing again
//! (deflate's stored blocks): the archive is a valid `.tar.gz`, and packing costs a copy,
//! not a second compression.
//!
//! `matrix.mtx.gz` is genes × cells in MatrixMarket coordinate form, `integer` when the
//! counts are integers, entries ordered by cell and then gene as Cell Ranger orders them;
//! `features.tsv.gz` has id, name and `Gene Expression`; `barcodes.tsv.gz` one cell id per
//! line; `obs.tsv.gz` (not a Cell Ranger file; readers ignore it) the requested fields.

use std::io::Write;
use std::path::Path;

use flate2::{Compression, GzBuilder};
use tokio::io::AsyncReadExt;

use super::encode::{
    ByteSink, GZIP_LEVEL, LocalFile, encode_in_order, gzip, push_f32, push_f64, push_u32, push_u64,
    scratch_dir,
};
use super::source::{MatrixSource, RowBlock};
use super::tables::{finish, obs_header, push_obs_row, tsv_writer};
use crate::bundle::Values;
use crate::error::Error;
use crate::obs::ObsValues;
use crate::store::DynStore;
use crate::store::writer::ObjectWriter;

/// The directory inside the archive.
pub const DIR: &str = "filtered_feature_bc_matrix";
/// Values per encoded block.
const BLOCK_VALUES: u64 = 1 << 20;
/// Most rows per encoded block.
const BLOCK_ROWS: u64 = 1 << 14;

/// Writes the archive to `key`; returns its size.
pub async fn write(
    src: &MatrixSource,
    store: &DynStore,
    key: &str,
    scratch: &Path,
) -> Result<u64, Error> {
    let dir = scratch_dir(scratch, "mtx")?;
    let files = write_files(src, dir.path()).await?;
    let mut out = ObjectWriter::new(store.clone(), key);
    match pack(&files, &mut out).await {
        Ok(()) => Ok(out.finish().await?),
        Err(e) => {
            out.abort().await;
            Err(e)
        }
    }
}

/// Writes the four gzipped files; returns their names and local paths, in archive order.
async fn write_files(
    src: &MatrixSource,
    dir: &Path,
) -> Result<Vec<(&'static str, std::path::PathBuf)>, Error> {
    let mut matrix = LocalFile::create(&dir.join("matrix.mtx.gz")).await?;
    let mut barcodes = LocalFile::create(&dir.join("barcodes.tsv.gz")).await?;
    let mut obs = LocalFile::create(&dir.join("obs.tsv.gz")).await?;

    let kind = match src.value_type {
        crate::bundle::ValueType::Uint32 => "integer",
        _ => "real",
    };
    let header = format!(
        "%%MatrixMarket matrix coordinate {kind} general\n\
         %metadata_json: {{\"software_version\": \"cellmatrix-{}\", \"format_version\": 2}}\n\
         {} {} {}\n",
        env!("CARGO_PKG_VERSION"),
        src.n_genes,
        src.n_cells,
        src.nnz
    );
    matrix.put(&gzip(header.as_bytes(), GZIP_LEVEL)).await?;
    let columns: Vec<String> = src.columns.iter().map(|c| c.name.clone()).collect();
    let kinds: std::sync::Arc<Vec<crate::obs::ColumnKind>> =
        std::sync::Arc::new(src.columns.iter().map(|c| c.kind.clone()).collect());
    obs.put(&gzip(&obs_header(b'\t', "barcode", &columns)?, GZIP_LEVEL))
        .await?;

    let blocks = src.blocks(BLOCK_VALUES, BLOCK_ROWS);
    encode_in_order(
        &blocks,
        |rows| async move {
            let (block, obs) = futures::try_join!(src.rows(rows.clone()), src.obs(rows))?;
            Ok((block, obs))
        },
        move |(block, obs): (RowBlock, Vec<ObsValues>)| {
            let m = gzip(&entries(&block), GZIP_LEVEL);
            let mut names = tsv_writer();
            for name in &block.names {
                names.write_record([name]).map_err(table_error)?;
            }
            let b = gzip(&finish(names)?, GZIP_LEVEL);
            let mut rows = tsv_writer();
            for (r, name) in block.names.iter().enumerate() {
                push_obs_row(&mut rows, name, &obs, &kinds, r)?;
            }
            let o = gzip(&finish(rows)?, GZIP_LEVEL);
            Ok(vec![m, b, o])
        },
        &mut [&mut matrix, &mut barcodes, &mut obs],
    )
    .await?;

    let mut features = tsv_writer();
    for (id, name) in src.gene_ids.iter().zip(&src.gene_names) {
        features
            .write_record([id.as_str(), name.as_str(), "Gene Expression"])
            .map_err(table_error)?;
    }
    let features_text = finish(features)?;
    let mut feat = LocalFile::create(&dir.join("features.tsv.gz")).await?;
    feat.put(&gzip(&features_text, GZIP_LEVEL)).await?;

    let (m, _) = matrix.close().await?;
    let (b, _) = barcodes.close().await?;
    let (f, _) = feat.close().await?;
    let (o, _) = obs.close().await?;
    Ok(vec![
        ("barcodes.tsv.gz", b),
        ("features.tsv.gz", f),
        ("matrix.mtx.gz", m),
        ("obs.tsv.gz", o),
    ])
}

fn table_error(e: impl std::fmt::Display) -> Error {
    Error::Output {
        format: "mtx",
        message: e.to_string(),
    }
}

/// The MatrixMarket lines of a block: `gene cell value`, 1-based.
fn entries(block: &RowBlock) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.indices.len() * 16);
    for r in 0..block.rows() {
        let mut cell = Vec::with_capacity(12);
        push_u64(&mut cell, block.first + r as u64 + 1);
        for k in block.row(r) {
            push_u32(&mut out, block.indices[k] as u32 + 1);
            out.push(b' ');
            out.extend_from_slice(&cell);
            out.push(b' ');
            match &block.data {
                Values::U32(v) => push_u32(&mut out, v[k]),
                Values::F32(v) => push_f32(&mut out, v[k]),
                Values::F64(v) => push_f64(&mut out, v[k]),
            }
            out.push(b'\n');
        }
    }
    out
}

/// Streams the tarball of `files` (under [`DIR`]) through a storing gzip into `out`.
async fn pack(
    files: &[(&'static str, std::path::PathBuf)],
    out: &mut ObjectWriter,
) -> Result<(), Error> {
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::with_capacity(1 << 20), Compression::none());
    let io = |e: std::io::Error| Error::Output {
        format: "mtx",
        message: e.to_string(),
    };
    gz.write_all(&tar_header(&format!("{DIR}/"), 0, true)?)
        .map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    for (name, path) in files {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| Error::io(path, e))?
            .len();
        gz.write_all(&tar_header(&format!("{DIR}/{name}"), size, false)?)
            .map_err(io)?;
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::io(path, e))?;
        loop {
            let n = file.read(&mut buf).await.map_err(|e| Error::io(path, e))?;
            if n == 0 {
                break;
            }
            gz.write_all(&buf[..n]).map_err(io)?;
            out.write(&std::mem::take(gz.get_mut())).await?;
        }
        let pad = (512 - size % 512) % 512;
        gz.write_all(&vec![0u8; pad as usize]).map_err(io)?;
    }
    // Two zero records end the archive.
    gz.write_all(&[0u8; 1024]).map_err(io)?;
    let rest = gz.finish().map_err(io)?;
    out.write(&rest).await?;
    Ok(())
}

/// A ustar header with fixed owner and time, so the same files give the same archive.
fn tar_header(path: &str, size: u64, dir: bool) -> Result<[u8; 512], Error> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).map_err(|e| Error::Output {
        format: "mtx",
        message: e.to_string(),
    })?;
    h.set_size(size);
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_one_based_and_cell_major() {
        let block = RowBlock {
            first: 10,
            indptr: vec![0, 2, 2, 3],
            indices: vec![0, 4, 1],
            data: Values::F32(vec![1.0, 0.5, 7.0]),
            names: vec!["a".into(), "b".into(), "c".into()],
        };
        assert_eq!(
            String::from_utf8(entries(&block)).unwrap(),
            "1 11 1\n5 11 0.5\n2 13 7\n"
        );
    }

    #[test]
    fn tar_headers_are_fixed() {
        let h = tar_header("filtered_feature_bc_matrix/matrix.mtx.gz", 1234, false).unwrap();
        assert_eq!(
            h,
            tar_header("filtered_feature_bc_matrix/matrix.mtx.gz", 1234, false).unwrap()
        );
        let parsed = tar::Header::from_byte_slice(&h);
        assert_eq!(parsed.size().unwrap(), 1234);
        assert_eq!(parsed.mtime().unwrap(), 0);
    }
}
