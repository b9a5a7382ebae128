//! Reader for Cell Ranger's HDF5 feature-barcode matrix (`filtered_feature_bc_matrix.h5`,
//! `raw_feature_bc_matrix.h5`, and Cell Ranger 2's `filtered_gene_bc_matrices_h5.h5`).
//!
//! Both layouts store a features × barcodes matrix in CSC: `indptr` has one entry per
//! barcode plus one and `indices` are feature indices. Read with barcodes as rows, the
//! same three arrays are the CSR form of the cells × features matrix, so no transpose
//! is needed.
//!
//! - Cell Ranger 3+: `/matrix/{barcodes,data,indices,indptr,shape}` and
//!   `/matrix/features/{id,name,feature_type,genome}`.
//! - Cell Ranger 2: one group per genome, `/<genome>/{barcodes,data,indices,indptr,shape,
//!   genes,gene_names}`. A multi-genome (barnyard) file is merged the way Cell Ranger
//!   merges it: genomes in name order, features concatenated, barcodes united in order
//!   of first appearance.
//!
//! The HDF5 helpers at the bottom are shared with the h5ad reader.

use std::collections::HashMap;
use std::path::Path;

use hdf5_pure::{AttrValue, DType, Dataset, File, Group, VlenStringReadOptions};

use super::limits::{MAX_ARRAY_BYTES, MAX_H5_EXPANSION, STRING_OVERHEAD};
use crate::bundle::matrix::{Csr, Features, SourceMatrix, Values};
use crate::error::{Error, Result};

/// Reads a Cell Ranger HDF5 matrix (v3 `/matrix` layout or v2 per-genome layout) into
/// cells (barcodes) × features. Feature ids are `features/id` (v3) or `genes` (v2),
/// names `features/name` or `gene_names`.
pub fn read_10x_h5(path: &Path) -> Result<SourceMatrix> {
    with_hdf5(path, read_tenx)
}

fn read_tenx(file: &File, src: &H5Input) -> Result<SourceMatrix> {
    let what = src.what.as_str();
    let root = file.root();
    let groups = root.groups().map_err(|e| h5_error(what, "listing /", e))?;
    let out = if groups.iter().any(|g| g == "matrix") {
        let g = open_group(&root, "matrix", "/matrix", what)?;
        let features = open_group(&g, "features", "/matrix/features", what)?;
        let part = read_csc_part(
            &g,
            "/matrix",
            (&features, "/matrix/features"),
            ("id", "name"),
            src,
        )?;
        part.into_source(what)?
    } else {
        let mut genomes = Vec::new();
        for name in &groups {
            let g = open_group(&root, name, &format!("/{name}"), what)?;
            let members = g
                .datasets()
                .map_err(|e| h5_error(what, &format!("listing /{name}"), e))?;
            if members.iter().any(|m| m == "barcodes") && members.iter().any(|m| m == "genes") {
                genomes.push((name.clone(), g));
            }
        }
        if genomes.is_empty() {
            return Err(Error::input(
                what,
                "not a Cell Ranger matrix: no /matrix group (Cell Ranger 3+) and no \
                 /<genome> group with barcodes and genes (Cell Ranger 2)",
            ));
        }
        // Cell Ranger (through h5py) visits genome groups in name order; keep it so a
        // barnyard file's features come out in the order Cell Ranger reports them.
        genomes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut parts = Vec::with_capacity(genomes.len());
        for (name, g) in &genomes {
            let prefix = format!("/{name}");
            parts.push(read_csc_part(
                g,
                &prefix,
                (g, &prefix),
                ("genes", "gene_names"),
                src,
            )?);
        }
        if parts.len() == 1 {
            parts.pop().expect("one part").into_source(what)?
        } else {
            merge_genomes(parts, what)?
        }
    };
    // Shapes and id uniqueness are checked once for every format, by ingest::read_input.
    out.check_shapes(what)?;
    Ok(out)
}

/// One 10x CSC matrix as stored: features × barcodes, `indptr` over barcodes.
struct CscPart {
    barcodes: Vec<String>,
    ids: Vec<String>,
    names: Vec<String>,
    indptr: Vec<u64>,
    indices: Vec<u64>,
    values: Values,
}

impl CscPart {
    fn into_source(self, what: &str) -> Result<SourceMatrix> {
        let matrix = Csr::from_raw(
            what,
            self.barcodes.len(),
            self.ids.len(),
            &self.indptr,
            &self.indices,
            self.values,
        )?;
        Ok(SourceMatrix {
            obs: Vec::new(),
            cells: self.barcodes,
            features: Features {
                ids: self.ids,
                names: self.names,
            },
            matrix,
        })
    }
}

/// Reads the CSC arrays under `g` (at `prefix`) and the feature ids and names, datasets
/// `id_name` and `name_name` under `features` (at `feature_prefix`).
fn read_csc_part(
    g: &Group,
    prefix: &str,
    (features, feature_prefix): (&Group, &str),
    (id_name, name_name): (&str, &str),
    src: &H5Input,
) -> Result<CscPart> {
    let what = src.what.as_str();
    let shape_path = format!("{prefix}/shape");
    let shape = read_index_array(
        &open_dataset(g, "shape", &shape_path, what)?,
        &shape_path,
        src,
    )?;
    let [n_features, n_barcodes] = shape[..] else {
        return Err(Error::input(
            what,
            format!("{shape_path} has {} entries, expected 2", shape.len()),
        ));
    };
    if n_features > u64::from(u32::MAX) {
        return Err(Error::input(
            what,
            format!("{shape_path} says {n_features} features, more than 2^32"),
        ));
    }
    let (n_features, n_barcodes) = (n_features as usize, n_barcodes as usize);

    let path = format!("{prefix}/barcodes");
    let barcodes = read_strings(&open_dataset(g, "barcodes", &path, what)?, &path, src)?;
    if barcodes.len() != n_barcodes {
        return Err(Error::input(
            what,
            format!(
                "{path} has {} entries but {shape_path} says {n_barcodes} barcodes",
                barcodes.len()
            ),
        ));
    }
    let mut feature_strings = Vec::with_capacity(2);
    for name in [id_name, name_name] {
        let path = format!("{feature_prefix}/{name}");
        let v = read_strings(&open_dataset(features, name, &path, what)?, &path, src)?;
        if v.len() != n_features {
            return Err(Error::input(
                what,
                format!(
                    "{path} has {} entries but {shape_path} says {n_features} features",
                    v.len()
                ),
            ));
        }
        feature_strings.push(v);
    }
    let names = feature_strings.pop().expect("two feature arrays");
    let ids = feature_strings.pop().expect("two feature arrays");

    let path = format!("{prefix}/indptr");
    let indptr = read_index_array(&open_dataset(g, "indptr", &path, what)?, &path, src)?;
    if indptr.len() != n_barcodes + 1 {
        return Err(Error::input(
            what,
            format!(
                "{path} has {} entries but there are {n_barcodes} barcodes (expected {})",
                indptr.len(),
                n_barcodes + 1
            ),
        ));
    }
    let path = format!("{prefix}/indices");
    let indices = read_index_array(&open_dataset(g, "indices", &path, what)?, &path, src)?;
    if let Some(&bad) = indices.iter().find(|&&i| i >= n_features as u64) {
        return Err(Error::input(
            what,
            format!("{path} holds feature index {bad}, out of range for {n_features} features"),
        ));
    }
    let path = format!("{prefix}/data");
    let values = read_values(&open_dataset(g, "data", &path, what)?, &path, src)?;
    if values.len() != indices.len() {
        return Err(Error::input(
            what,
            format!(
                "{path} has {} values but {prefix}/indices has {}",
                values.len(),
                indices.len()
            ),
        ));
    }
    Ok(CscPart {
        barcodes,
        ids,
        names,
        indptr,
        indices,
        values,
    })
}

/// Merges Cell Ranger 2 genome groups: features side by side, barcodes united.
fn merge_genomes(parts: Vec<CscPart>, what: &str) -> Result<SourceMatrix> {
    let mut cells: Vec<String> = Vec::new();
    let mut cell_index: HashMap<String, u32> = HashMap::new();
    let (mut ids, mut names) = (Vec::new(), Vec::new());
    let (mut rows, mut cols) = (Vec::new(), Vec::new());
    let mut values: Option<Values> = None;
    for part in parts {
        let offset = ids.len();
        for (b, barcode) in part.barcodes.iter().enumerate() {
            let next = u32::try_from(cells.len())
                .map_err(|_| Error::input(what, "more than 2^32 barcodes"))?;
            let row = *cell_index.entry(barcode.clone()).or_insert_with(|| {
                cells.push(barcode.clone());
                next
            });
            let (s, e) = (part.indptr[b], part.indptr[b + 1]);
            if s > e || e as usize > part.indices.len() {
                return Err(Error::input(
                    what,
                    "indptr is not a non-decreasing 0..nnz sequence",
                ));
            }
            for &f in &part.indices[s as usize..e as usize] {
                rows.push(row);
                cols.push(
                    u32::try_from(offset as u64 + f)
                        .map_err(|_| Error::input(what, "more than 2^32 features"))?,
                );
            }
        }
        ids.extend(part.ids);
        names.extend(part.names);
        values = Some(match values {
            None => part.values,
            Some(acc) => concat_values(acc, part.values),
        });
    }
    let values = values.unwrap_or(Values::U32(Vec::new()));
    if values.len() != rows.len() {
        return Err(Error::input(
            what,
            "indptr does not cover every stored value",
        ));
    }
    let matrix = Csr::from_triplets(what, cells.len(), ids.len(), &rows, &cols, values)?;
    Ok(SourceMatrix {
        obs: Vec::new(),
        cells,
        features: Features { ids, names },
        matrix,
    })
}

fn concat_values(a: Values, b: Values) -> Values {
    match (a, b) {
        (Values::U32(mut a), Values::U32(b)) => {
            a.extend(b);
            Values::U32(a)
        }
        (Values::F32(mut a), Values::F32(b)) => {
            a.extend(b);
            Values::F32(a)
        }
        (a, b) => {
            // Mixed types: f64 holds every u32 and f32 exactly.
            let mut out: Vec<f64> = (0..a.len()).map(|i| a.get_f64(i)).collect();
            out.extend((0..b.len()).map(|i| b.get_f64(i)));
            Values::F64(out)
        }
    }
}

// ---------------------------------------------------------------------------------------
// HDF5 helpers shared with the h5ad reader.

/// Opens `path` with hdf5-pure and runs `read` on it, turning every failure into an
/// error that names the file.
///
/// hdf5-pure is written to return errors on malformed input, but it parses untrusted
/// bytes through a large amount of code; a panic anywhere in it (an index or an
/// arithmetic overflow on a corrupt file) must not take the caller down, so the whole
/// read runs under `catch_unwind` and a panic becomes an input error. This relies on
/// `panic = "unwind"`, which the workspace's release profile keeps for this reason
/// among others.
pub(super) fn with_hdf5<T>(
    path: &Path,
    read: impl FnOnce(&File, &H5Input) -> Result<T>,
) -> Result<T> {
    let what = path.display().to_string();
    // Tell a missing or unreadable file (I/O) from one that is not HDF5 (bad input).
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() == 0 {
        return Err(Error::input(&what, "empty file, not HDF5"));
    }
    match hdf5_pure::is_hdf5(path) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::input(
                &what,
                "not an HDF5 file (no HDF5 signature found)",
            ));
        }
        Err(e) => {
            return Err(Error::input(
                &what,
                format!("not a readable HDF5 file: {}", one_line(e)),
            ));
        }
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // The streaming backend reads metadata and chunks on demand instead of
        // buffering the whole file, so a multi-gigabyte matrix costs its decoded arrays
        // and not a second in-memory copy of the file.
        let file = File::open_streaming(path)
            .map_err(|e| h5_error(&what, "cannot open as HDF5 (truncated or corrupt?)", e))?;
        // A truncated copy (an interrupted download, say) otherwise fails deep inside
        // some later read with an EOF message that does not say why.
        let sb = file.superblock();
        let expected = sb.base_address.get().saturating_add(sb.eof_address);
        if file.file_size() < expected {
            return Err(Error::input(
                &what,
                format!(
                    "truncated HDF5 file: {} bytes, but its superblock says {expected}",
                    file.file_size()
                ),
            ));
        }
        let src = H5Input::new(what.clone(), file.file_size());
        read(&file, &src)
    }));
    match outcome {
        // Messages quote names from the file (groups, datasets), which may hold line
        // breaks; an error stays on one line.
        Ok(result) => result.map_err(|e| match e {
            Error::Input {
                source_name,
                message,
            } => Error::Input {
                source_name,
                message: one_line(message),
            },
            other => other,
        }),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(Error::input(
                &what,
                format!(
                    "corrupt HDF5 file (the HDF5 reader failed: {})",
                    one_line(msg)
                ),
            ))
        }
    }
}

/// The file being read: its name for error messages and a bound on what a dataset in
/// it can decode to.
#[derive(Debug)]
pub(super) struct H5Input {
    /// The path, as error messages name it.
    pub(super) what: String,
    /// The file's size in bytes.
    pub(super) file_bytes: u64,
    /// The most bytes a dataset in this file can take once read and widened: what the
    /// file can hold ([`MAX_H5_EXPANSION`] times its size), or [`MAX_ARRAY_BYTES`] if
    /// less; see [`check_size`].
    pub(super) max_bytes: u64,
}

impl H5Input {
    pub(super) fn new(what: String, file_bytes: u64) -> H5Input {
        H5Input {
            what,
            file_bytes,
            max_bytes: file_bytes
                .saturating_mul(MAX_H5_EXPANSION)
                .min(MAX_ARRAY_BYTES),
        }
    }
}

/// Refuses a dataset whose declared size its file could not hold, counted as
/// `out_bytes` per element (what the reader widens an element to, when that is more
/// than its stored size) so the bound is on the memory the read takes.
///
/// hdf5-pure sizes its output buffer from the dataset's declared shape before reading,
/// and a corrupt shape (a flipped byte), or a chunked dataset whose chunks were never
/// written, can declare terabytes; that allocation then aborts the process, which no
/// `catch_unwind` can turn into an error. Checking the declared size against the file
/// first keeps such a file an input error.
pub(super) fn check_size(ds: &Dataset, path: &str, src: &H5Input, out_bytes: u64) -> Result<()> {
    let what = src.what.as_str();
    let shape = ds
        .shape()
        .map_err(|e| h5_error(what, &format!("{path}: unreadable shape"), e))?;
    let element = ds
        .element_size()
        .map_err(|e| h5_error(what, &format!("{path}: unreadable datatype"), e))?;
    let count = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .unwrap_or(u64::MAX);
    let bytes = count.saturating_mul(element.max(out_bytes));
    if bytes > src.max_bytes {
        return Err(Error::input(
            what,
            format!(
                "corrupt HDF5 file: {path} declares shape {shape:?} ({bytes} bytes in memory), \
                 more than this {}-byte file can hold (at most {})",
                src.file_bytes, src.max_bytes
            ),
        ));
    }
    check_storage(ds, path, src, element)
}

/// Refuses a dataset whose stored bytes lie outside the file, or whose chunks are
/// larger than the file can hold: hdf5-pure allocates a chunk's (or a run of chunks')
/// buffer from these numbers before it reads, so a corrupt chunk index could otherwise
/// ask for gigabytes.
fn check_storage(ds: &Dataset, path: &str, src: &H5Input, element: u64) -> Result<()> {
    let what = src.what.as_str();
    let corrupt = |detail: String| {
        Error::input(
            what,
            format!(
                "corrupt HDF5 file: {path} {detail}, past the end of this {}-byte file",
                src.file_bytes
            ),
        )
    };
    let layout = ds
        .layout()
        .map_err(|e| h5_error(what, &format!("{path}: unreadable layout"), e))?;
    match layout {
        hdf5_pure::Layout::Contiguous {
            address: Some(address),
            size,
        } if address.saturating_add(size) > src.file_bytes => {
            return Err(corrupt(format!("stores {size} bytes at {address}")));
        }
        hdf5_pure::Layout::Chunked { chunk_shape, .. } => {
            let chunk_bytes = chunk_shape
                .iter()
                .fold(element, |acc, &d| acc.saturating_mul(d));
            if chunk_bytes > src.max_bytes {
                return Err(Error::input(
                    what,
                    format!(
                        "corrupt HDF5 file: {path} declares chunks of {chunk_shape:?} ({chunk_bytes} \
                         bytes), more than this {}-byte file can hold (at most {})",
                        src.file_bytes, src.max_bytes
                    ),
                ));
            }
            let chunks = ds
                .chunks()
                .map_err(|e| h5_error(what, &format!("{path}: unreadable chunk index"), e))?;
            for c in chunks {
                if c.address.saturating_add(c.storage_size) > src.file_bytes {
                    return Err(corrupt(format!(
                        "has a chunk of {} bytes at {}",
                        c.storage_size, c.address
                    )));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// An error of hdf5-pure as an input error, on one line (some of its messages span
/// several).
pub(super) fn h5_error(what: &str, context: &str, e: hdf5_pure::Error) -> Error {
    Error::input(what, format!("{context}: {}", one_line(e)))
}

/// A message with its line breaks (and runs of spaces) made single spaces.
fn one_line(message: impl std::fmt::Display) -> String {
    message
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn open_group(parent: &Group, name: &str, path: &str, what: &str) -> Result<Group> {
    parent
        .group(name)
        .map_err(|e| h5_error(what, &format!("missing or unreadable group {path}"), e))
}

pub(super) fn open_dataset(parent: &Group, name: &str, path: &str, what: &str) -> Result<Dataset> {
    parent
        .dataset(name)
        .map_err(|e| h5_error(what, &format!("missing or unreadable dataset {path}"), e))
}

pub(super) fn dtype(ds: &Dataset, path: &str, what: &str) -> Result<DType> {
    ds.dtype()
        .map_err(|e| h5_error(what, &format!("{path}: unreadable datatype"), e))
}

/// Checks `ds` is one-dimensional and not larger than the file can hold, read as
/// `out_bytes` per element.
fn rank1(ds: &Dataset, path: &str, src: &H5Input, out_bytes: u64) -> Result<()> {
    check_size(ds, path, src, out_bytes)?;
    let what = src.what.as_str();
    let shape = ds
        .shape()
        .map_err(|e| h5_error(what, &format!("{path}: unreadable shape"), e))?;
    if shape.len() > 1 {
        return Err(Error::input(
            what,
            format!("{path} should be one-dimensional but has shape {shape:?}"),
        ));
    }
    Ok(())
}

/// Reads a one-dimensional integer array of indices or sizes; negatives are refused.
pub(super) fn read_index_array(ds: &Dataset, path: &str, src: &H5Input) -> Result<Vec<u64>> {
    rank1(ds, path, src, 8)?;
    let what = src.what.as_str();
    let read_err = |e| h5_error(what, &format!("cannot read {path}"), e);
    match dtype(ds, path, what)? {
        DType::U8 | DType::U16 | DType::U32 | DType::U64 => ds.read_u64().map_err(read_err),
        DType::I8 | DType::I16 | DType::I32 | DType::I64 => {
            let v = ds.read_i64().map_err(read_err)?;
            if let Some(bad) = v.iter().find(|&&x| x < 0) {
                return Err(Error::input(
                    what,
                    format!("{path} holds a negative index or size ({bad})"),
                ));
            }
            Ok(v.into_iter().map(|x| x as u64).collect())
        }
        other => Err(Error::input(
            what,
            format!("{path} should hold integers but has type {other}"),
        )),
    }
}

/// Reads stored counts: integers become `U32` when every value fits (`F64` otherwise,
/// which holds them exactly below 2^53), floats keep their width.
pub(super) fn read_values(ds: &Dataset, path: &str, src: &H5Input) -> Result<Values> {
    // 8: the widest form the values take (u64 and i64 reads, f64 results).
    check_size(ds, path, src, 8)?;
    let what = src.what.as_str();
    let read_err = |e| h5_error(what, &format!("cannot read {path}"), e);
    Ok(match dtype(ds, path, what)? {
        DType::U8 | DType::U16 | DType::U32 => Values::U32(ds.read_u32().map_err(read_err)?),
        DType::U64 => {
            let v = ds.read_u64().map_err(read_err)?;
            if v.iter().all(|&x| x <= u64::from(u32::MAX)) {
                Values::U32(v.into_iter().map(|x| x as u32).collect())
            } else {
                Values::F64(v.into_iter().map(|x| x as f64).collect())
            }
        }
        DType::I8 | DType::I16 | DType::I32 | DType::I64 => {
            let v = ds.read_i64().map_err(read_err)?;
            if v.iter().all(|&x| (0..=i64::from(u32::MAX)).contains(&x)) {
                Values::U32(v.into_iter().map(|x| x as u32).collect())
            } else {
                Values::F64(v.into_iter().map(|x| x as f64).collect())
            }
        }
        DType::F32 => Values::F32(ds.read_f32().map_err(read_err)?),
        DType::F64 => Values::F64(ds.read_f64().map_err(read_err)?),
        other => {
            return Err(Error::input(
                what,
                format!("{path} should hold numbers but has type {other}"),
            ));
        }
    })
}

/// Reads a one-dimensional string array, fixed-length (`S`, padding stripped) or
/// variable-length.
pub(super) fn read_strings(ds: &Dataset, path: &str, src: &H5Input) -> Result<Vec<String>> {
    // A fixed-length string becomes a String: its bytes and the String itself.
    let element = ds.element_size().unwrap_or(0);
    rank1(ds, path, src, element.saturating_add(STRING_OVERHEAD))?;
    let what = src.what.as_str();
    let read_err = |e| h5_error(what, &format!("cannot read {path}"), e);
    match dtype(ds, path, what)? {
        DType::String => ds.read_string().map_err(read_err),
        // The strings live in the file's global heap, uncompressed, so their total
        // cannot exceed the file; a corrupt length must not become a huge allocation.
        DType::VariableLengthString => ds
            .read_vlen_strings(
                VlenStringReadOptions::default()
                    .with_max_payload_bytes(usize::try_from(src.file_bytes).unwrap_or(usize::MAX)),
            )
            .map_err(read_err),
        other => Err(Error::input(
            what,
            format!("{path} should hold strings but has type {other}"),
        )),
    }
}

/// A string attribute value, however it is encoded (fixed or variable length, a
/// one-element array).
pub(super) fn attr_string(v: &AttrValue) -> Option<String> {
    match v {
        AttrValue::String(s)
        | AttrValue::AsciiString(s)
        | AttrValue::VarLenString(s)
        | AttrValue::VarLenAsciiString(s)
        | AttrValue::StringSized { value: s, .. }
        | AttrValue::AsciiStringSized { value: s, .. } => Some(s.clone()),
        _ => match attr_strings(v)?.as_slice() {
            [s] => Some(s.clone()),
            _ => None,
        },
    }
}

/// A string-array attribute value.
pub(super) fn attr_strings(v: &AttrValue) -> Option<Vec<String>> {
    match v {
        AttrValue::StringArray(a)
        | AttrValue::AsciiStringArray(a)
        | AttrValue::VarLenStringArray(a)
        | AttrValue::VarLenAsciiStringArray(a)
        | AttrValue::VarLenAsciiCharArray(a)
        | AttrValue::StringArraySized { values: a, .. }
        | AttrValue::AsciiStringArraySized { values: a, .. } => Some(a.clone()),
        _ => None,
    }
}

/// A non-negative integer (array) attribute value, such as a matrix shape.
pub(super) fn attr_u64s(v: &AttrValue) -> Option<Vec<u64>> {
    fn conv<T: Copy + TryInto<u64>>(a: &[T]) -> Option<Vec<u64>> {
        a.iter().map(|&x| x.try_into().ok()).collect()
    }
    match v {
        AttrValue::I8Array(a) => conv(a),
        AttrValue::I16Array(a) => conv(a),
        AttrValue::I32Array(a) => conv(a),
        AttrValue::I64Array(a) => conv(a),
        AttrValue::U8Array(a) => conv(a),
        AttrValue::U16Array(a) => conv(a),
        AttrValue::U32Array(a) => conv(a),
        AttrValue::U64Array(a) => conv(a),
        AttrValue::I32(x) => conv(&[*x]),
        AttrValue::I64(x) => conv(&[*x]),
        AttrValue::U32(x) => conv(&[*x]),
        AttrValue::U64(x) => conv(&[*x]),
        _ => None,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Inflates a committed fixture (`tests/fixtures/NAME.gz`) into a temporary
    /// directory; the fixtures are gzipped because h5py's default layout is mostly
    /// zero padding.
    pub(crate) fn fixture(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        use std::io::Read;
        let gz = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(format!("{name}.gz"));
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&gz).expect("fixture exists"))
            .read_to_end(&mut bytes)
            .expect("fixture inflates");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write fixture");
        (dir, path)
    }

    /// Writes an HDF5 file built with hdf5-pure's own writer, for malformed layouts the
    /// Python generator would refuse to produce.
    pub(crate) fn built(
        build: impl FnOnce(&mut hdf5_pure::FileBuilder),
    ) -> (tempfile::TempDir, std::path::PathBuf) {
        let mut b = hdf5_pure::FileBuilder::new();
        build(&mut b);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("built.h5");
        b.write(&path).expect("write built file");
        (dir, path)
    }

    pub(crate) fn input_message(r: Result<SourceMatrix>) -> String {
        match r {
            Err(e @ Error::Input { .. }) => e.to_string(),
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    /// The matrix every small fixture carries (see make_fixtures.py), as CSR.
    pub(crate) const CELLS: [&str; 4] = [
        "AAACCTGAGAAACCAT-1",
        "AAACCTGAGAAACCGC-1",
        "AAACCTGAGAAACCTA-1",
        "AAACCTGAGAAACGAG-1",
    ];
    pub(crate) const GENE_IDS: [&str; 5] = [
        "ENSG00000243485",
        "ENSG00000237613",
        "ENSG00000186092",
        "ENSG00000238009",
        "ENSG00000239945",
    ];
    pub(crate) const GENE_NAMES: [&str; 5] = [
        "MIR1302-2HG",
        "FAM138A",
        "OR4F5",
        "AL627309.1",
        "AL627309.3",
    ];
    // [[0,3,0,1,0],[2,0,0,0,7],[0,0,0,0,0],[1,1,5,0,2]]
    pub(crate) const INDPTR: [u64; 5] = [0, 2, 4, 4, 8];
    pub(crate) const INDICES: [u32; 8] = [1, 3, 0, 4, 0, 1, 2, 4];
    pub(crate) const COUNTS: [u32; 8] = [3, 1, 2, 7, 1, 1, 5, 2];

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    pub(crate) fn assert_small_matrix(m: &SourceMatrix) {
        assert_eq!(m.cells, strings(&CELLS));
        assert_eq!(m.matrix.n_rows, 4);
        assert_eq!(m.matrix.n_cols, 5);
        assert_eq!(m.matrix.indptr, INDPTR);
        assert_eq!(m.matrix.indices, INDICES);
        assert_eq!(m.matrix.values, Values::U32(COUNTS.to_vec()));
    }

    #[test]
    fn reads_cell_ranger_v3() {
        let (_d, path) = fixture("tenx_v3.h5");
        let m = read_10x_h5(&path).unwrap();
        assert_small_matrix(&m);
        assert_eq!(m.features.ids, strings(&GENE_IDS));
        assert_eq!(m.features.names, strings(&GENE_NAMES));
    }

    #[test]
    fn reads_multi_chunk_vlen_v3() {
        // 300 cells × 40 genes, chunks of 256 values (9 for data), vlen strings.
        let (_d, path) = fixture("tenx_v3_vlen_multichunk.h5");
        let m = read_10x_h5(&path).unwrap();
        assert_eq!(m.cells.len(), 300);
        assert_eq!(m.cells[0], "CELL0000-1");
        assert_eq!(m.cells[299], "CELL0299-1");
        assert_eq!(m.features.ids[39], "GENE039");
        assert_eq!(m.features.names[39], "GENE039");
        assert_eq!(m.matrix.nnz(), 2052);
        let Values::U32(v) = &m.matrix.values else {
            panic!(
                "integer counts expected, got {:?}",
                m.matrix.values.value_type()
            )
        };
        assert_eq!(v.iter().map(|&x| u64::from(x)).sum::<u64>(), 2469);
        let r = m.matrix.row_range(299);
        assert_eq!(m.matrix.indices[r.clone()], [8, 9, 17, 32]);
        assert_eq!(v[r], [2, 1, 1, 1]);
    }

    #[test]
    fn reads_cell_ranger_v2() {
        let (_d, path) = fixture("tenx_v2.h5");
        let m = read_10x_h5(&path).unwrap();
        assert_small_matrix(&m);
        assert_eq!(m.features.ids, strings(&GENE_IDS));
        assert_eq!(m.features.names, strings(&GENE_NAMES));
    }

    #[test]
    fn merges_v2_genomes() {
        // GRCh38 has genes 0..3 of the small matrix, mm10 the other two, same barcodes.
        let (_d, path) = fixture("tenx_v2_two_genomes.h5");
        let m = read_10x_h5(&path).unwrap();
        assert_small_matrix(&m);
        let mut ids = strings(&GENE_IDS[..3]);
        ids.extend(strings(&["ENSMUSG00000051951", "ENSMUSG00000089699"]));
        assert_eq!(m.features.ids, ids);
        let mut names = strings(&GENE_NAMES[..3]);
        names.extend(strings(&["Xkr4", "Gm1992"]));
        assert_eq!(m.features.names, names);
    }

    #[test]
    fn refuses_non_hdf5_and_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("matrix.h5");
        std::fs::write(&text, "barcode,gene\n").unwrap();
        let msg = input_message(read_10x_h5(&text));
        assert!(
            msg.contains("matrix.h5") && msg.contains("not an HDF5 file"),
            "{msg}"
        );

        let (_d, path) = fixture("tenx_v3.h5");
        let bytes = std::fs::read(&path).unwrap();
        for cut in [bytes.len() / 2, bytes.len() - 100, 600, 100] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let msg = input_message(read_10x_h5(&path));
            assert!(msg.contains("tenx_v3.h5"), "{msg}");
            if cut >= 600 {
                assert!(msg.contains("truncated HDF5 file"), "{msg}");
            }
        }

        let missing = dir.path().join("absent.h5");
        assert!(matches!(read_10x_h5(&missing), Err(Error::Io { .. })));
    }

    #[test]
    fn corrupt_bytes_give_input_errors_not_crashes() {
        // Random byte changes in a Cell Ranger-style file. Before `check_size`, change
        // number 334 of this sequence made hdf5-pure allocate 755 GB and abort.
        let (_d, path) = fixture("tenx_v3.h5");
        let orig = std::fs::read(&path).unwrap();
        let mut seed: u64 = 0x1234_5678_9abc_def0;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..500 {
            let mut bytes = orig.clone();
            for _ in 0..1 + next() % 4 {
                let i = next() as usize % bytes.len();
                bytes[i] = next() as u8;
            }
            std::fs::write(&path, &bytes).unwrap();
            match read_10x_h5(&path) {
                Ok(_) => {}
                Err(e @ Error::Input { .. }) => {
                    let msg = e.to_string();
                    assert!(!msg.contains("the HDF5 reader failed"), "{msg}");
                }
                Err(e) => panic!("expected an input error, got {e:?}"),
            }
        }
    }

    fn small_v3(
        b: &mut hdf5_pure::FileBuilder,
        barcodes: &[&str],
        indices: &[i64],
        drop: Option<&str>,
    ) {
        let mut g = b.create_group("matrix");
        let indptr: Vec<i64> = INDPTR.iter().map(|&x| x as i64).collect();
        let data: Vec<i32> = COUNTS.iter().map(|&x| x as i32).collect();
        if drop != Some("barcodes") {
            g.create_dataset("barcodes").with_vlen_strings(barcodes);
        }
        if drop != Some("data") {
            g.create_dataset("data").with_data(&data);
        }
        g.create_dataset("indices").with_data(indices);
        g.create_dataset("indptr").with_data(&indptr);
        g.create_dataset("shape").with_data(&[5i32, 4]);
        let mut f = g.create_group("features");
        f.create_dataset("id").with_vlen_strings(&GENE_IDS);
        f.create_dataset("name").with_vlen_strings(&GENE_NAMES);
        g.add_group(f.finish());
        b.add_group(g.finish());
    }

    #[test]
    fn reads_hdf5_pure_written_v3() {
        let (_d, path) = built(|b| small_v3(b, &CELLS, &[1, 3, 0, 4, 0, 1, 2, 4], None));
        assert_small_matrix(&read_10x_h5(&path).unwrap());
    }

    #[test]
    fn refuses_malformed_layouts() {
        let (_d, path) = built(|b| small_v3(b, &CELLS[..3], &[1, 3, 0, 4, 0, 1, 2, 4], None));
        let msg = input_message(read_10x_h5(&path));
        assert!(
            msg.contains("/matrix/barcodes has 3 entries but /matrix/shape says 4 barcodes"),
            "{msg}"
        );

        let (_d, path) = built(|b| small_v3(b, &CELLS, &[1, 3, 0, 9, 0, 1, 2, 4], None));
        let msg = input_message(read_10x_h5(&path));
        assert!(
            msg.contains("feature index 9, out of range for 5 features"),
            "{msg}"
        );

        let (_d, path) = built(|b| small_v3(b, &CELLS, &[1, 3, 0, 4, 0, 1, 2, 4], Some("data")));
        let msg = input_message(read_10x_h5(&path));
        assert!(
            msg.contains("missing or unreadable dataset /matrix/data"),
            "{msg}"
        );

        let (_d, path) = built(|b| small_v3(b, &CELLS, &[1, 3, 0, 4, 0, 1, 2, -1], None));
        let msg = input_message(read_10x_h5(&path));
        assert!(msg.contains("negative"), "{msg}");

        let (_d, path) = built(|b| {
            b.create_dataset("counts").with_data(&[1i32, 2]);
        });
        let msg = input_message(read_10x_h5(&path));
        assert!(msg.contains("not a Cell Ranger matrix"), "{msg}");
    }
}
