//! Reader for AnnData `.h5ad` files.
//!
//! Layouts read:
//! - `X`: a CSR or CSC group (`encoding-type` `csr_matrix` / `csc_matrix` with a `shape`
//!   attribute), the pre-0.7 h5sparse group (`h5sparse_format` `csr` / `csc` with
//!   `h5sparse_shape`), or a dense 2-D dataset (obs × var).
//! - `obs` / `var`: dataframe groups (index named by the `_index` attribute; string
//!   columns as string arrays, categorical columns as `categories` + `codes` groups,
//!   nullable strings as `values` + `mask`, anndata 0.7's `__categories`), or the pre-0.7
//!   compound datasets of fixed-length string fields with an `index` field and
//!   categorical columns as integer codes whose categories are `uns/<column>_categories`.
//!
//! Cell ids are the obs names, feature ids the var names, and feature names the first of
//! the var columns [`NAME_COLUMNS`] that exists (a missing value falls back to the
//! feature id), else the var names.

use std::path::Path;

use hdf5_pure::{Datatype, DatatypeByteOrder, File, Group, StringPadding};

use super::tenx_h5::{
    H5Input, attr_string, attr_u64s, check_size, h5_error, open_dataset, open_group,
    read_index_array, read_strings, read_values, with_hdf5,
};
use crate::bundle::matrix::{Csr, Features, SourceMatrix};
use crate::error::{Error, Result};

/// The var columns that hold gene symbols, in order of preference.
pub const NAME_COLUMNS: [&str; 4] = ["gene_symbols", "gene_name", "gene_names", "feature_name"];

/// Reads an AnnData `.h5ad` file's `X` with obs names as cell ids and var names as
/// feature ids; see the module documentation for the layouts understood.
pub fn read_h5ad(path: &Path) -> Result<SourceMatrix> {
    with_hdf5(path, read_anndata)
}

fn read_anndata(file: &File, src: &H5Input) -> Result<SourceMatrix> {
    let what = src.what.as_str();
    let root = file.root();
    let top = Members::of(&root, "/", what)?;

    let obs = Frame::open(&root, &top, "obs", src)?;
    let cells = obs.index()?;
    let var = Frame::open(&root, &top, "var", src)?;
    let ids = var.index()?;
    let mut names = None;
    for column in NAME_COLUMNS {
        if let Some(values) = var.column(column)? {
            names = Some(
                values
                    .into_iter()
                    .zip(&ids)
                    .map(|(name, id)| name.unwrap_or_else(|| id.clone()))
                    .collect(),
            );
            break;
        }
    }
    let names = names.unwrap_or_else(|| ids.clone());

    let matrix = read_x(&root, &top, (cells.len(), ids.len()), src)?;
    let out = SourceMatrix {
        obs: Vec::new(),
        cells,
        features: Features { ids, names },
        matrix,
    };
    // Shapes and id uniqueness are checked once for every format, by ingest::read_input.
    out.check_shapes(what)?;
    Ok(out)
}

/// The child datasets and groups of one group, listed once.
struct Members {
    datasets: Vec<String>,
    groups: Vec<String>,
}

impl Members {
    fn of(g: &Group, path: &str, what: &str) -> Result<Members> {
        let err = |e| h5_error(what, &format!("listing {path}"), e);
        Ok(Members {
            datasets: g.datasets().map_err(err)?,
            groups: g.groups().map_err(err)?,
        })
    }

    fn has_dataset(&self, name: &str) -> bool {
        self.datasets.iter().any(|d| d == name)
    }

    fn has_group(&self, name: &str) -> bool {
        self.groups.iter().any(|g| g == name)
    }
}

/// Reads X, whose shape must be `names` (the obs and var names): checked before any
/// array is read or sized from the shape.
fn read_x(root: &Group, top: &Members, names: (usize, usize), src: &H5Input) -> Result<Csr> {
    let what = src.what.as_str();
    if top.has_group("X") {
        let g = open_group(root, "X", "/X", what)?;
        let attrs = g
            .attrs()
            .map_err(|e| h5_error(what, "cannot read the attributes of /X", e))?;
        let encoding = attrs
            .get("encoding-type")
            .or_else(|| attrs.get("h5sparse_format"))
            .and_then(attr_string)
            .ok_or_else(|| {
                Error::input(
                    what,
                    "/X is a group without an encoding-type (or h5sparse_format) attribute",
                )
            })?;
        let shape = attrs
            .get("shape")
            .or_else(|| attrs.get("h5sparse_shape"))
            .and_then(attr_u64s)
            .ok_or_else(|| {
                Error::input(
                    what,
                    "/X has no integer shape (or h5sparse_shape) attribute",
                )
            })?;
        let [n_obs, n_var] = shape[..] else {
            return Err(Error::input(
                what,
                format!("/X has shape {shape:?}, expected two dimensions"),
            ));
        };
        let (n_obs, n_var) = checked_shape(n_obs, n_var, names, what)?;
        let csr = match encoding.as_str() {
            "csr_matrix" | "csr" => true,
            "csc_matrix" | "csc" => false,
            other => {
                return Err(Error::input(
                    what,
                    format!("/X has encoding {other:?}; expected csr_matrix or csc_matrix"),
                ));
            }
        };
        let indptr = read_index_array(
            &open_dataset(&g, "indptr", "/X/indptr", what)?,
            "/X/indptr",
            src,
        )?;
        let indices = read_index_array(
            &open_dataset(&g, "indices", "/X/indices", what)?,
            "/X/indices",
            src,
        )?;
        let values = read_values(&open_dataset(&g, "data", "/X/data", what)?, "/X/data", src)?;
        if csr {
            Csr::from_raw(what, n_obs, n_var, &indptr, &indices, values)
        } else {
            Csr::from_csc(what, n_obs, n_var, &indptr, &indices, values)
        }
    } else if top.has_dataset("X") {
        let ds = open_dataset(root, "X", "/X", what)?;
        let shape = ds
            .shape()
            .map_err(|e| h5_error(what, "/X: unreadable shape", e))?;
        let [n_obs, n_var] = shape[..] else {
            return Err(Error::input(
                what,
                format!("dense /X has shape {shape:?}, expected two dimensions"),
            ));
        };
        let (n_obs, n_var) = checked_shape(n_obs, n_var, names, what)?;
        let values = read_values(&ds, "/X", src)?;
        if Some(values.len()) != n_obs.checked_mul(n_var) {
            return Err(Error::input(
                what,
                format!(
                    "dense /X holds {} values, not {n_obs} × {n_var}",
                    values.len()
                ),
            ));
        }
        Ok(Csr::from_dense_rows(n_obs, n_var, &values))
    } else {
        Err(Error::input(what, "no /X matrix"))
    }
}

/// The shape of X, refused unless it is the obs × var names': the matrix is built
/// (and its row pointers sized) from this shape, so it must be one the file holds.
fn checked_shape(
    n_obs: u64,
    n_var: u64,
    (cells, features): (usize, usize),
    what: &str,
) -> Result<(usize, usize)> {
    if n_obs != cells as u64 || n_var != features as u64 {
        return Err(Error::input(
            what,
            format!("X is {n_obs} × {n_var} but obs has {cells} names and var has {features}"),
        ));
    }
    Ok((cells, features))
}

/// An obs or var table in either layout.
struct Frame<'a> {
    root: &'a Group,
    path: String,
    src: &'a H5Input,
    kind: FrameKind,
}

enum FrameKind {
    /// A dataframe group (anndata 0.7+).
    Group { group: Group, members: Members },
    /// A compound dataset of records (anndata before 0.7).
    Compound {
        records: Vec<u8>,
        record_size: usize,
        fields: Vec<hdf5_pure::CompoundMember>,
    },
}

impl<'a> Frame<'a> {
    fn open(root: &'a Group, top: &Members, name: &str, src: &'a H5Input) -> Result<Frame<'a>> {
        let what = src.what.as_str();
        let path = format!("/{name}");
        let kind = if top.has_group(name) {
            let group = open_group(root, name, &path, what)?;
            let members = Members::of(&group, &path, what)?;
            FrameKind::Group { group, members }
        } else if top.has_dataset(name) {
            let ds = open_dataset(root, name, &path, what)?;
            let dt = ds
                .datatype()
                .map_err(|e| h5_error(what, &format!("{path}: unreadable datatype"), e))?;
            let Datatype::Compound { size, members } = dt else {
                return Err(Error::input(
                    what,
                    format!("{path} is a dataset but not a table of records (compound type)"),
                ));
            };
            check_size(&ds, &path, src, 0)?;
            let records = ds
                .read_raw()
                .map_err(|e| h5_error(what, &format!("cannot read {path}"), e))?;
            let record_size = size as usize;
            if record_size == 0 || records.len() % record_size != 0 {
                return Err(Error::input(
                    what,
                    format!(
                        "{path}: {} bytes is not a whole number of records",
                        records.len()
                    ),
                ));
            }
            FrameKind::Compound {
                records,
                record_size,
                fields: members,
            }
        } else {
            return Err(Error::input(what, format!("no {path} table")));
        };
        Ok(Frame {
            root,
            path,
            src,
            kind,
        })
    }

    /// The row names.
    fn index(&self) -> Result<Vec<String>> {
        let (path, what, src) = (&self.path, self.src.what.as_str(), self.src);
        match &self.kind {
            FrameKind::Group { group, members } => {
                let attrs = group.attrs().map_err(|e| {
                    h5_error(what, &format!("cannot read the attributes of {path}"), e)
                })?;
                let name = match attrs.get("_index").and_then(attr_string) {
                    Some(name) => name,
                    None if members.has_dataset("_index") => "_index".to_string(),
                    None => {
                        return Err(Error::input(
                            what,
                            format!("{path} has no _index attribute naming its index"),
                        ));
                    }
                };
                let ipath = format!("{path}/{name}");
                read_strings(&open_dataset(group, &name, &ipath, what)?, &ipath, src)
            }
            FrameKind::Compound { .. } => match self.column("index")? {
                Some(v) => Ok(v.into_iter().map(Option::unwrap_or_default).collect()),
                None => Err(Error::input(what, format!("{path} has no index field"))),
            },
        }
    }

    /// A string column, `None` where a value is missing; `Ok(None)` if there is no
    /// such column.
    fn column(&self, name: &str) -> Result<Option<Vec<Option<String>>>> {
        match &self.kind {
            FrameKind::Group { group, members } => self.group_column(group, members, name),
            FrameKind::Compound {
                records,
                record_size,
                fields,
            } => self.compound_column(records, *record_size, fields, name),
        }
    }

    fn group_column(
        &self,
        group: &Group,
        members: &Members,
        name: &str,
    ) -> Result<Option<Vec<Option<String>>>> {
        let (path, what, src) = (&self.path, self.src.what.as_str(), self.src);
        let cpath = format!("{path}/{name}");
        if members.has_dataset(name) {
            let ds = open_dataset(group, name, &cpath, what)?;
            let dt = ds
                .dtype()
                .map_err(|e| h5_error(what, &format!("{cpath}: unreadable datatype"), e))?;
            if matches!(
                dt,
                hdf5_pure::DType::String | hdf5_pure::DType::VariableLengthString
            ) {
                let v = read_strings(&ds, &cpath, src)?;
                return Ok(Some(v.into_iter().map(Some).collect()));
            }
            // anndata 0.7: integer codes here, categories in __categories/<name>.
            if members.has_group("__categories") {
                let cats =
                    open_group(group, "__categories", &format!("{path}/__categories"), what)?;
                let catpath = format!("{path}/__categories/{name}");
                if let Ok(cds) = cats.dataset(name) {
                    let categories = read_strings(&cds, &catpath, src)?;
                    let codes = read_codes(&ds, &cpath, src)?;
                    return decode_categorical(&categories, &codes, &cpath, what).map(Some);
                }
            }
            return Err(Error::input(
                what,
                format!("{cpath} should hold strings but has type {dt}"),
            ));
        }
        if members.has_group(name) {
            let g = open_group(group, name, &cpath, what)?;
            let inner = Members::of(&g, &cpath, what)?;
            if inner.has_dataset("categories") && inner.has_dataset("codes") {
                let catpath = format!("{cpath}/categories");
                let categories = read_strings(
                    &open_dataset(&g, "categories", &catpath, what)?,
                    &catpath,
                    src,
                )?;
                let codepath = format!("{cpath}/codes");
                let codes =
                    read_codes(&open_dataset(&g, "codes", &codepath, what)?, &codepath, src)?;
                return decode_categorical(&categories, &codes, &cpath, what).map(Some);
            }
            if inner.has_dataset("values") {
                let vpath = format!("{cpath}/values");
                let values = read_strings(&open_dataset(&g, "values", &vpath, what)?, &vpath, src)?;
                let mask = if inner.has_dataset("mask") {
                    let mpath = format!("{cpath}/mask");
                    read_codes(&open_dataset(&g, "mask", &mpath, what)?, &mpath, src)?
                } else {
                    vec![0; values.len()]
                };
                if mask.len() != values.len() {
                    return Err(Error::input(
                        what,
                        format!(
                            "{cpath}: {} values but {} mask entries",
                            values.len(),
                            mask.len()
                        ),
                    ));
                }
                return Ok(Some(
                    values
                        .into_iter()
                        .zip(mask)
                        .map(|(v, m)| (m == 0).then_some(v))
                        .collect(),
                ));
            }
            return Err(Error::input(
                what,
                format!("{cpath} is a group but neither categorical nor a nullable string array"),
            ));
        }
        Ok(None)
    }

    fn compound_column(
        &self,
        records: &[u8],
        record_size: usize,
        fields: &[hdf5_pure::CompoundMember],
        name: &str,
    ) -> Result<Option<Vec<Option<String>>>> {
        let (path, what, src) = (&self.path, self.src.what.as_str(), self.src);
        let Some(field) = fields.iter().find(|f| f.name == name) else {
            return Ok(None);
        };
        let fpath = format!("{path}.{name}");
        let offset = field.byte_offset as usize;
        let width = field.datatype.type_size() as usize;
        if offset
            .checked_add(width)
            .is_none_or(|end| end > record_size)
        {
            return Err(Error::input(
                what,
                format!("{fpath} lies outside its record"),
            ));
        }
        let cells = records
            .chunks_exact(record_size)
            .map(|r| &r[offset..offset + width]);
        match &field.datatype {
            Datatype::String { padding, .. } => Ok(Some(
                cells.map(|b| Some(fixed_string(b, padding))).collect(),
            )),
            Datatype::FixedPoint {
                size: 1 | 2 | 4 | 8,
                byte_order,
                layout,
            } => {
                // Pre-0.7 categorical: codes here, categories in uns/<name>_categories.
                let catname = format!("{name}_categories");
                let catpath = format!("/uns/{catname}");
                let categories = self
                    .root
                    .group("uns")
                    .and_then(|uns| uns.dataset(&catname))
                    .map_err(|e| {
                        h5_error(
                            what,
                            &format!("{fpath} holds integers and there is no {catpath}"),
                            e,
                        )
                    })?;
                let categories = read_strings(&categories, &catpath, src)?;
                let big = matches!(byte_order, DatatypeByteOrder::BigEndian);
                let codes: Vec<i64> = cells.map(|b| int_field(b, big, layout.signed)).collect();
                decode_categorical(&categories, &codes, &fpath, what).map(Some)
            }
            other => Err(Error::input(
                what,
                format!("{fpath} should hold strings but has type {other:?}"),
            )),
        }
    }
}

/// Reads categorical codes (or a mask) as signed integers; -1 marks a missing value.
fn read_codes(ds: &hdf5_pure::Dataset, path: &str, src: &H5Input) -> Result<Vec<i64>> {
    use hdf5_pure::DType;
    check_size(ds, path, src, 8)?;
    let what = src.what.as_str();
    match ds
        .dtype()
        .map_err(|e| h5_error(what, &format!("{path}: unreadable datatype"), e))?
    {
        DType::I8 | DType::I16 | DType::I32 | DType::I64 | DType::U8 | DType::U16 | DType::U32 => {
            ds.read_i64()
                .map_err(|e| h5_error(what, &format!("cannot read {path}"), e))
        }
        // h5py stores numpy bools as an enum over u8.
        DType::Enum(_) => ds
            .read_u8()
            .map(|v| v.into_iter().map(i64::from).collect())
            .map_err(|e| h5_error(what, &format!("cannot read {path}"), e)),
        other => Err(Error::input(
            what,
            format!("{path} should hold integer codes but has type {other}"),
        )),
    }
}

fn decode_categorical(
    categories: &[String],
    codes: &[i64],
    path: &str,
    what: &str,
) -> Result<Vec<Option<String>>> {
    codes
        .iter()
        .map(|&c| match c {
            -1 => Ok(None),
            c if c >= 0 && (c as usize) < categories.len() => {
                Ok(Some(categories[c as usize].clone()))
            }
            c => Err(Error::input(
                what,
                format!(
                    "{path} has category code {c}, out of range for {} categories",
                    categories.len()
                ),
            )),
        })
        .collect()
}

fn fixed_string(bytes: &[u8], padding: &StringPadding) -> String {
    let end = match padding {
        StringPadding::NullTerminate => bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()),
        StringPadding::NullPad => bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1),
        StringPadding::SpacePad => bytes.iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1),
    };
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn int_field(bytes: &[u8], big_endian: bool, signed: bool) -> i64 {
    let mut buf = [0u8; 8];
    let n = bytes.len();
    if big_endian {
        buf[8 - n..].copy_from_slice(bytes);
        buf.reverse();
    } else {
        buf[..n].copy_from_slice(bytes);
    }
    let raw = u64::from_le_bytes(buf);
    if signed && n < 8 {
        let shift = 64 - 8 * n as u32;
        ((raw << shift) as i64) >> shift
    } else {
        raw as i64
    }
}

#[cfg(test)]
mod tests {
    use super::super::tenx_h5::tests::{
        CELLS, COUNTS, GENE_IDS, GENE_NAMES, INDICES, INDPTR, assert_small_matrix, built, fixture,
        input_message,
    };
    use super::*;
    use crate::bundle::matrix::Values;
    use hdf5_pure::AttrValue;

    fn vlen(s: &str) -> AttrValue {
        AttrValue::VarLenString(s.to_string())
    }

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_anndata_csr() {
        let (_d, path) = fixture("csr.h5ad");
        let m = read_h5ad(&path).unwrap();
        // float32 integral counts come back as integers.
        assert_small_matrix(&m);
        assert_eq!(m.features.ids, strings(&GENE_IDS));
        assert_eq!(m.features.names, strings(&GENE_NAMES));
    }

    #[test]
    fn reads_anndata_csc_with_categorical_symbols() {
        let (_d, path) = fixture("csc.h5ad");
        let m = read_h5ad(&path).unwrap();
        assert_small_matrix(&m);
        assert_eq!(m.features.ids, strings(&GENE_IDS));
        assert_eq!(
            m.features.names,
            strings(&["MIR1302-2HG", "FAM138A", "OR4F5", "OR4F5", "AL627309.3"])
        );
    }

    #[test]
    fn reads_anndata_dense() {
        let (_d, path) = fixture("dense.h5ad");
        let m = read_h5ad(&path).unwrap();
        assert_eq!(m.cells, strings(&CELLS));
        assert_eq!(m.matrix.indptr, INDPTR);
        assert_eq!(m.matrix.indices, INDICES);
        // Halved counts: fractional, so they stay f64; no name column, so names = ids.
        let halves: Vec<f64> = COUNTS.iter().map(|&c| f64::from(c) / 2.0).collect();
        assert_eq!(m.matrix.values, Values::F64(halves));
        assert_eq!(m.features.ids, strings(&GENE_IDS));
        assert_eq!(m.features.names, strings(&GENE_IDS));
    }

    #[test]
    fn reads_legacy_compound_layout() {
        let (_d, path) = fixture("legacy.h5ad");
        let m = read_h5ad(&path).unwrap();
        assert_small_matrix(&m);
        assert_eq!(m.features.ids, strings(&GENE_IDS));
        assert_eq!(
            m.features.names,
            strings(&["MIR1302-2HG", "FAM138A", "OR4F5", "OR4F5", "AL627309.3"])
        );
    }

    #[test]
    fn refuses_truncated_and_foreign_files() {
        let (_d, path) = fixture("truncated.h5ad");
        let msg = input_message(read_h5ad(&path));
        assert!(msg.contains("truncated.h5ad: truncated HDF5 file"), "{msg}");

        // A 10x file is HDF5 but not AnnData.
        let (_d, path) = fixture("tenx_v3.h5");
        let msg = input_message(read_h5ad(&path));
        assert!(msg.contains("no /obs table"), "{msg}");
    }

    fn frame(b: &mut hdf5_pure::FileBuilder, name: &str, index: &[&str]) {
        let mut g = b.create_group(name);
        g.set_attr("encoding-type", vlen("dataframe"));
        g.set_attr("_index", vlen("_index"));
        g.create_dataset("_index").with_vlen_strings(index);
        b.add_group(g.finish());
    }

    fn csr_x(b: &mut hdf5_pure::FileBuilder, shape: &[i64], indices: &[i32]) {
        let mut g = b.create_group("X");
        g.set_attr("encoding-type", vlen("csr_matrix"));
        g.set_attr("shape", AttrValue::I64Array(shape.to_vec()));
        let indptr: Vec<i32> = INDPTR.iter().map(|&x| x as i32).collect();
        let data: Vec<f32> = COUNTS.iter().map(|&x| x as f32).collect();
        g.create_dataset("indptr").with_data(&indptr);
        g.create_dataset("indices").with_data(indices);
        g.create_dataset("data").with_data(&data);
        b.add_group(g.finish());
    }

    #[test]
    fn reads_hdf5_pure_written_h5ad() {
        let (_d, path) = built(|b| {
            frame(b, "obs", &CELLS);
            frame(b, "var", &GENE_IDS);
            csr_x(b, &[4, 5], &[1, 3, 0, 4, 0, 1, 2, 4]);
        });
        let m = read_h5ad(&path).unwrap();
        assert_small_matrix(&m);
        assert_eq!(m.features.names, strings(&GENE_IDS));
    }

    #[test]
    fn missing_names_fall_back_to_ids() {
        // gene_symbols as a nullable string array with one masked value, and a
        // categorical obs column with a missing (-1) code that is never used as a name.
        let (_d, path) = built(|b| {
            frame(b, "obs", &CELLS);
            let mut g = b.create_group("var");
            g.set_attr("encoding-type", vlen("dataframe"));
            g.set_attr("_index", vlen("_index"));
            g.create_dataset("_index").with_vlen_strings(&GENE_IDS);
            let mut col = g.create_group("gene_symbols");
            col.set_attr("encoding-type", vlen("nullable-string-array"));
            col.create_dataset("values")
                .with_vlen_strings(&["A", "", "C", "D", "E"]);
            col.create_dataset("mask").with_data(&[0u8, 1, 0, 0, 0]);
            g.add_group(col.finish());
            b.add_group(g.finish());
            csr_x(b, &[4, 5], &[1, 3, 0, 4, 0, 1, 2, 4]);
        });
        let m = read_h5ad(&path).unwrap();
        assert_eq!(
            m.features.names,
            strings(&["A", GENE_IDS[1], "C", "D", "E"])
        );
    }

    #[test]
    fn reads_h5py_bools_as_codes() {
        // h5py writes numpy bools as an HDF5 enum over u8.
        let (_d, path) = fixture("csc.h5ad");
        let file = File::open(&path).unwrap();
        let ds = file.dataset("var/highly_variable").unwrap();
        let src = H5Input::new("t".to_string(), 1 << 20);
        assert_eq!(read_codes(&ds, "hv", &src).unwrap(), vec![1; 5]);
    }

    #[test]
    fn refuses_malformed_layouts() {
        let (_d, path) = built(|b| {
            frame(b, "obs", &CELLS);
            frame(b, "var", &GENE_IDS);
            csr_x(b, &[4, 5], &[1, 3, 0, 7, 0, 1, 2, 4]);
        });
        let msg = input_message(read_h5ad(&path));
        assert!(msg.contains("column index 7 out of range"), "{msg}");

        let (_d, path) = built(|b| {
            frame(b, "obs", &CELLS[..3]);
            frame(b, "var", &GENE_IDS);
            csr_x(b, &[4, 5], &[1, 3, 0, 4, 0, 1, 2, 4]);
        });
        let msg = input_message(read_h5ad(&path));
        assert!(msg.contains("X is 4 × 5 but obs has 3 names"), "{msg}");

        let (_d, path) = built(|b| {
            frame(b, "obs", &CELLS);
            frame(b, "var", &GENE_IDS);
        });
        let msg = input_message(read_h5ad(&path));
        assert!(msg.contains("no /X matrix"), "{msg}");

        let (_d, path) = built(|b| {
            frame(b, "obs", &CELLS);
            frame(b, "var", &GENE_IDS);
            csr_x(b, &[4, 5], &[1, 3, 0, 4, 0, 1, 2, 4]);
            let mut g = b.create_group("bogus");
            g.create_dataset("x").with_data(&[1i32]);
            b.add_group(g.finish());
        });
        assert!(read_h5ad(&path).is_ok());
    }
}
