//! AnnData HDF5 (`.h5ad`), written with hdf5-pure (pure Rust: no libhdf5, no cmake, so it
//! builds on a fresh machine and in the Lambda build).
//!
//! The layout is the output Zarr's (docs/FORMAT.md) in HDF5: X as a CSR group, obs and var
//! dataframes, empty `layers`/`obsm`/`obsp`/`varm`/`varp`/`uns`. X never sits in memory
//! whole: the file is built with everything but X's values (obs, var and `X/indptr` are
//! per-cell or per-gene), then `X/indices` and `X/data`, chunked, deflated and
//! extensible, are appended a block of rows at a time on one blocking thread while the
//! next block is read. The finished local file is streamed to the store in parts.

use std::path::Path;

use hdf5_pure::{
    AttrValue, DatasetBuilder, FileAccessProperties, FileBuilder, GroupBuilder, MaxExtent,
    MemoryStrategy, SyncPolicy,
};

use super::encode::{scratch_dir, upload};
use super::source::{MatrixSource, RowBlock};
use crate::bundle::Values;
use crate::error::Error;
use crate::obs::{ColumnKind, ObsValues};
use crate::store::DynStore;

/// Values per chunk of `X/indices` and `X/data`. Below 65,536: hdf5-pure 0.47 encodes
/// the chunk dimension of a larger chunk in a width libhdf5 refuses ("stored chunk
/// dimension encoding length does not match"), found by the reader tests.
const CHUNK: u64 = 1 << 15;
/// deflate level of X (h5py's `compression="gzip"` default is 4).
const DEFLATE: u32 = 4;
/// Values per appended block.
const BLOCK_VALUES: u64 = 1 << 22;
/// Most rows per appended block.
const BLOCK_ROWS: u64 = 1 << 16;

fn h5_error(e: impl std::fmt::Display) -> Error {
    Error::Output {
        format: "h5ad",
        message: e.to_string(),
    }
}

fn vlen(s: &str) -> AttrValue {
    AttrValue::VarLenString(s.to_string())
}

fn encoding(g: &mut GroupBuilder, kind: &str, version: &str) {
    g.set_attr("encoding-type", vlen(kind));
    g.set_attr("encoding-version", vlen(version));
}

fn dataset_encoding(d: &mut DatasetBuilder, kind: &str, version: &str) {
    d.set_attr("encoding-type", vlen(kind));
    d.set_attr("encoding-version", vlen(version));
}

/// Writes `src` as `.h5ad` to `key`; returns its size.
pub async fn write(
    src: &MatrixSource,
    store: &DynStore,
    key: &str,
    scratch: &Path,
) -> Result<u64, Error> {
    let dir = scratch_dir(scratch, "h5ad")?;
    let path = dir.path().join("matrix.h5ad");
    let blocks = src.blocks(BLOCK_VALUES, BLOCK_ROWS);

    // Everything per cell and per gene, read once.
    let names = src.all_names().await?;
    let obs = src.obs(0..src.n_cells).await?;
    let first = match blocks.first() {
        Some(r) => Some(src.rows(r.clone()).await?),
        None => None,
    };
    let skeleton = Skeleton {
        n_cells: src.n_cells,
        n_genes: src.n_genes,
        indptr: src.indptr.clone(),
        names,
        columns: src
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.kind.clone()))
            .collect(),
        obs,
        gene_ids: src.gene_ids.clone(),
        gene_names: src.gene_names.clone(),
        first,
        value_type: src.value_type,
    };
    let p = path.clone();
    tokio::task::spawn_blocking(move || skeleton.write(&p))
        .await
        .map_err(|e| Error::Internal(format!("h5ad task failed: {e}")))??;

    // The other blocks: read here, appended on one blocking thread, one block ahead.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RowBlock>(1);
    let p = path.clone();
    let appender = tokio::task::spawn_blocking(move || -> Result<(), Error> {
        let props = FileAccessProperties::new()
            .with_memory_strategy(MemoryStrategy::Bounded)
            .with_sync_policy(SyncPolicy::OnClose);
        let file = hdf5_pure::File::open_rw_with_options(&p, props).map_err(h5_error)?;
        let mut indices = file.dataset("X/indices").map_err(h5_error)?;
        let mut data = file.dataset("X/data").map_err(h5_error)?;
        while let Some(block) = rx.blocking_recv() {
            indices.append(&block.indices).map_err(h5_error)?;
            match &block.data {
                Values::U32(v) => data.append(v),
                Values::F32(v) => data.append(v),
                Values::F64(v) => data.append(v),
            }
            .map_err(h5_error)?;
        }
        drop((indices, data));
        file.close().map_err(h5_error)
    });
    for range in blocks.iter().skip(1) {
        let block = src.rows(range.clone()).await?;
        if tx.send(block).await.is_err() {
            break; // the appender stopped: its error is reported below
        }
    }
    drop(tx);
    appender
        .await
        .map_err(|e| Error::Internal(format!("h5ad task failed: {e}")))??;

    upload(store, key, &path).await
}

/// Everything of the file but X's values after the first block.
struct Skeleton {
    n_cells: u64,
    n_genes: u64,
    indptr: Vec<i64>,
    names: Vec<String>,
    columns: Vec<(String, ColumnKind)>,
    obs: Vec<ObsValues>,
    gene_ids: Vec<String>,
    gene_names: Vec<String>,
    first: Option<RowBlock>,
    value_type: crate::bundle::ValueType,
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

impl Skeleton {
    fn write(self, path: &Path) -> Result<(), Error> {
        let mut b = FileBuilder::new();
        b.set_attr("encoding-type", vlen("anndata"));
        b.set_attr("encoding-version", vlen("0.1.0"));

        let mut x = b.create_group("X");
        encoding(&mut x, "csr_matrix", "0.1.0");
        x.set_attr(
            "shape",
            AttrValue::I64Array(vec![self.n_cells as i64, self.n_genes as i64]),
        );
        x.create_dataset("indptr").with_i64_data(&self.indptr);
        let (indices, data) = match &self.first {
            Some(block) => (block.indices.clone(), block.data.clone()),
            None => (Vec::new(), Values::empty(self.value_type)),
        };
        extensible(x.create_dataset("indices").with_i32_data(&indices));
        let d = x.create_dataset("data");
        match &data {
            Values::U32(v) => d.with_u32_data(v),
            Values::F32(v) => d.with_f32_data(v),
            Values::F64(v) => d.with_f64_data(v),
        };
        extensible(d);
        b.add_group(x.finish());

        let obs: Vec<(&str, &ObsValues, &ColumnKind)> = self
            .columns
            .iter()
            .zip(&self.obs)
            .map(|((name, kind), values)| (name.as_str(), values, kind))
            .collect();
        dataframe(&mut b, "obs", &self.names, &obs)?;
        let names = ObsValues::Str(self.gene_names);
        dataframe(
            &mut b,
            "var",
            &self.gene_ids,
            &[("feature_name", &names, &ColumnKind::Str)],
        )?;

        for empty in ["layers", "obsm", "obsp", "varm", "varp", "uns"] {
            let mut g = b.create_group(empty);
            encoding(&mut g, "dict", "0.1.0");
            b.add_group(g.finish());
        }
        b.write(path).map_err(h5_error)
    }
}

/// An AnnData dataframe group: the index and the columns, in order; categoricals and
/// nullable columns as AnnData's groups.
fn dataframe(
    b: &mut FileBuilder,
    name: &str,
    index: &[String],
    columns: &[(&str, &ObsValues, &ColumnKind)],
) -> Result<(), Error> {
    let mut g = b.create_group(name);
    encoding(&mut g, "dataframe", "0.2.0");
    g.set_attr("_index", vlen("_index"));
    g.set_attr(
        "column-order",
        AttrValue::VarLenStringArray(columns.iter().map(|c| c.0.to_string()).collect()),
    );
    dataset_encoding(
        g.create_dataset("_index").with_vlen_strings(&strs(index)),
        "string-array",
        "0.2.0",
    );
    for (column, values, kind) in columns {
        if let Some(attrs) = kind.group_attrs() {
            let mut sub = g.create_group(column);
            for (k, v) in attrs {
                match v {
                    serde_json::Value::String(text) => sub.set_attr(&k, vlen(&text)),
                    // h5py's `ordered` is a numpy bool; anndata reads it through `bool()`.
                    serde_json::Value::Bool(flag) => {
                        sub.set_attr(&k, AttrValue::I8(i8::from(flag)))
                    }
                    _ => {}
                }
            }
            match (values, kind) {
                (ObsValues::Codes(codes), ColumnKind::Categorical { categories }) => {
                    dataset_encoding(
                        sub.create_dataset("categories")
                            .with_vlen_strings(&strs(categories)),
                        "string-array",
                        "0.2.0",
                    );
                    dataset_encoding(
                        sub.create_dataset("codes").with_i32_data(codes),
                        "array",
                        "0.2.0",
                    );
                }
                (ObsValues::I64 { values, mask }, _) => {
                    dataset_encoding(
                        sub.create_dataset("values").with_i64_data(values),
                        "array",
                        "0.2.0",
                    );
                    let m = sub.create_dataset("mask");
                    bools(m, mask.as_deref().unwrap_or(&[]))?;
                    dataset_encoding(m, "array", "0.2.0");
                }
                (ObsValues::Bool { values, mask }, _) => {
                    let v = sub.create_dataset("values");
                    bools(v, values)?;
                    dataset_encoding(v, "array", "0.2.0");
                    let m = sub.create_dataset("mask");
                    bools(m, mask.as_deref().unwrap_or(&[]))?;
                    dataset_encoding(m, "array", "0.2.0");
                }
                _ => {}
            }
            g.add_group(sub.finish());
            continue;
        }
        let d = g.create_dataset(column);
        match values {
            ObsValues::Str(v) => {
                dataset_encoding(d.with_vlen_strings(&strs(v)), "string-array", "0.2.0")
            }
            ObsValues::U32(v) => dataset_encoding(d.with_u32_data(v), "array", "0.2.0"),
            ObsValues::F64(v) => dataset_encoding(d.with_f64_data(v), "array", "0.2.0"),
            ObsValues::I64 { values, .. } => {
                dataset_encoding(d.with_i64_data(values), "array", "0.2.0")
            }
            ObsValues::Bool { values, .. } => {
                bools(d, values)?;
                dataset_encoding(d, "array", "0.2.0")
            }
            ObsValues::Codes(v) => dataset_encoding(d.with_i32_data(v), "array", "0.2.0"),
        }
    }
    b.add_group(g.finish());
    Ok(())
}

/// Booleans as h5py writes them: an 8-bit enum of FALSE and TRUE, which h5py (and so
/// anndata) reads as a numpy bool array.
fn bools(d: &mut DatasetBuilder, values: &[bool]) -> Result<(), Error> {
    let dt = hdf5_pure::EnumTypeBuilder::with_base(hdf5_pure::make_i8_type())
        .value("FALSE", 0)
        .value("TRUE", 1)
        .build()
        .map_err(h5_error)?;
    let bytes: Vec<u8> = values.iter().map(|&b| u8::from(b)).collect();
    d.with_enum_u8_data(dt, &bytes);
    Ok(())
}

/// Chunked, deflated, and growable along its one dimension.
fn extensible(d: &mut DatasetBuilder) {
    d.with_maxshape(&[MaxExtent::Unlimited])
        .with_chunks(&[CHUNK])
        .with_deflate(DEFLATE);
}
