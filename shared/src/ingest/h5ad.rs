//! Reader for AnnData `.h5ad` files.
//!
//! Layouts read:
//! - `X`: a CSR or CSC group (`encoding-type` `csr_matrix` / `csc_matrix` with a `shape`
//!   attribute), the pre-0.7 h5sparse group (`h5sparse_format` `csr` / `csc` with
//!   `h5sparse_shape`), or a dense 2-D dataset (obs × var).
//! - `obs` / `var`: dataframe groups (index named by the `_index` attribute, columns in
//!   `column-order`; string, integer, float and h5py-bool arrays, categoricals as
//!   `categories` + `codes` groups, anndata's `nullable-integer`, `nullable-boolean` and
//!   `nullable-string-array` as `values` + `mask`, anndata 0.7's codes with categories in
//!   `__categories/<column>`), or the pre-0.7 compound datasets of records with an
//!   `index` field, whose integer fields are categorical codes when
//!   `uns/<column>_categories` exists and integers otherwise.
//!
//! Cell ids are the obs names and every other obs column a cell field: strings and
//! categoricals categorical (code -1 or a masked value null), integers `Int`, floats
//! `Num` (f32 widened), booleans `Bool`; a categorical over numbers or booleans becomes
//! a column of them. A column of another type (a nested group) is left out, with a note.
//! Feature ids are the var names, and feature names the first of the var columns
//! [`NAME_COLUMNS`] that exists (a missing value falls back to the feature id), else
//! the var names.

use std::path::Path;

use hdf5_pure::{DType, Datatype, DatatypeByteOrder, File, Group, StringPadding};

use super::tenx_h5::{
    H5Input, attr_string, attr_strings, attr_u64s, check_size, dtype, h5_error, open_dataset,
    open_group, read_index_array, read_strings, read_values, with_hdf5,
};
use crate::bundle::matrix::{Csr, Features, SourceMatrix};
use crate::error::{Error, Result};
use crate::field::Level;
use crate::field::column::Column;

/// The var columns that hold gene symbols, in order of preference.
pub const NAME_COLUMNS: [&str; 4] = ["gene_symbols", "gene_name", "gene_names", "feature_name"];

/// Reads an AnnData `.h5ad` file's `X` with obs names as cell ids, obs columns as
/// cell fields and var names as feature ids; see the module documentation for the
/// layouts understood. The notes say which obs columns were renamed or left out.
pub fn read_h5ad(path: &Path) -> Result<(SourceMatrix, Vec<String>)> {
    with_hdf5(path, read_anndata)
}

fn read_anndata(file: &File, src: &H5Input) -> Result<(SourceMatrix, Vec<String>)> {
    let what = src.what.as_str();
    let root = file.root();
    let top = Members::of(&root, "/", what)?;

    let obs = Frame::open(&root, &top, "obs", src)?;
    let cells = obs.index()?;
    let mut notes = Vec::new();
    let (sources, columns): (Vec<String>, Vec<Column>) =
        obs.columns(cells.len(), &mut notes)?.into_iter().unzip();
    let stored = super::names::store(what, Level::Cell, "obs column", &sources, &mut notes)?;
    let var = Frame::open(&root, &top, "var", src)?;
    let ids = var.index()?;
    let mut names = None;
    for column in NAME_COLUMNS {
        if let Some(values) = var.strings(column, ids.len())? {
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
        obs: stored.into_iter().zip(columns).collect(),
        cells,
        features: Features { ids, names },
        matrix,
    };
    // Shapes and id uniqueness are checked once for every format, by ingest::read_input.
    out.check_shapes(what)?;
    Ok((out, notes))
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

    /// The name of the dataset holding a dataframe group's row names.
    fn index_name(&self, group: &Group, members: &Members) -> Result<String> {
        let (path, what) = (&self.path, self.src.what.as_str());
        let attrs = group
            .attrs()
            .map_err(|e| h5_error(what, &format!("cannot read the attributes of {path}"), e))?;
        match attrs.get("_index").and_then(attr_string) {
            Some(name) => Ok(name),
            None if members.has_dataset("_index") => Ok("_index".to_string()),
            None => Err(Error::input(
                what,
                format!("{path} has no _index attribute naming its index"),
            )),
        }
    }

    /// The row names.
    fn index(&self) -> Result<Vec<String>> {
        let (path, what, src) = (&self.path, self.src.what.as_str(), self.src);
        match &self.kind {
            FrameKind::Group { group, members } => {
                let name = self.index_name(group, members)?;
                let ipath = format!("{path}/{name}");
                read_strings(&open_dataset(group, &name, &ipath, what)?, &ipath, src)
            }
            FrameKind::Compound {
                records,
                record_size,
                ..
            } => match self.strings(INDEX_FIELD, records.len() / record_size)? {
                Some(v) => Ok(v.into_iter().map(Option::unwrap_or_default).collect()),
                None => Err(Error::input(what, format!("{path} has no index field"))),
            },
        }
    }

    /// The names of every column but the index, in the frame's order (a group's
    /// `column-order` attribute when it has one).
    fn column_names(&self) -> Result<Vec<String>> {
        let (path, what) = (&self.path, self.src.what.as_str());
        match &self.kind {
            FrameKind::Group { group, members } => {
                let index = self.index_name(group, members)?;
                let attrs = group.attrs().map_err(|e| {
                    h5_error(what, &format!("cannot read the attributes of {path}"), e)
                })?;
                let order = attrs
                    .get("column-order")
                    .and_then(|v| attr_strings(v).or_else(|| attr_string(v).map(|s| vec![s])));
                let names: Vec<String> = match order {
                    Some(order) => order,
                    // anndata writes an empty order as an empty float array; a frame
                    // written without one lists its members.
                    None => members
                        .datasets
                        .iter()
                        .chain(&members.groups)
                        .filter(|n| *n != CATEGORIES_GROUP)
                        .cloned()
                        .collect(),
                };
                let names: Vec<String> = names.into_iter().filter(|n| *n != index).collect();
                if let Some(missing) = names
                    .iter()
                    .find(|n| !members.has_dataset(n) && !members.has_group(n))
                {
                    return Err(Error::input(
                        what,
                        format!(
                            "{path}'s column-order names {missing:?} but there is no {path}/{missing}"
                        ),
                    ));
                }
                Ok(names)
            }
            FrameKind::Compound { fields, .. } => Ok(fields
                .iter()
                .map(|f| f.name.clone())
                .filter(|n| n != INDEX_FIELD)
                .collect()),
        }
    }

    /// Every column but the index, as cell fields under their source names; a column
    /// of a type no field has is left out and named in `notes`.
    fn columns(&self, rows: usize, notes: &mut Vec<String>) -> Result<Vec<(String, Column)>> {
        let mut out = Vec::new();
        for name in self.column_names()? {
            match self.read_column(&name, rows)? {
                Some(ReadColumn::Values(c)) => out.push((name, c)),
                Some(ReadColumn::Unsupported(why)) => notes.push(format!(
                    "{}/{name} is left out: {why} is not a field type",
                    self.path
                )),
                None => {}
            }
        }
        Ok(out)
    }

    /// A string column, `None` where a value is missing; `Ok(None)` if there is no
    /// such column.
    fn strings(&self, name: &str, rows: usize) -> Result<Option<Vec<Option<String>>>> {
        let what = self.src.what.as_str();
        match self.read_column(name, rows)? {
            None => Ok(None),
            Some(ReadColumn::Values(Column::Categorical { categories, codes })) => Ok(Some(
                codes
                    .iter()
                    .map(|&c| usize::try_from(c).ok().map(|c| categories[c].clone()))
                    .collect(),
            )),
            Some(ReadColumn::Values(c)) => Err(Error::input(
                what,
                format!(
                    "{}/{name} should hold strings but holds {} values",
                    self.path,
                    c.field_type().name()
                ),
            )),
            Some(ReadColumn::Unsupported(why)) => Err(Error::input(
                what,
                format!("{}/{name} should hold strings but holds {why}", self.path),
            )),
        }
    }

    /// One column, `rows` values long; `Ok(None)` if there is no such column.
    fn read_column(&self, name: &str, rows: usize) -> Result<Option<ReadColumn>> {
        match &self.kind {
            FrameKind::Group { group, members } => self.group_column(group, members, name, rows),
            FrameKind::Compound {
                records,
                record_size,
                fields,
            } => self.compound_column(records, *record_size, fields, name, rows),
        }
    }

    fn group_column(
        &self,
        group: &Group,
        members: &Members,
        name: &str,
        rows: usize,
    ) -> Result<Option<ReadColumn>> {
        let (path, what, src) = (&self.path, self.src.what.as_str(), self.src);
        let cpath = format!("{path}/{name}");
        if members.has_dataset(name) {
            let ds = open_dataset(group, name, &cpath, what)?;
            // anndata 0.7: integer codes here, categories in __categories/<name> (the
            // codes' `categories` attribute is a reference to it; found by name).
            if members.has_group(CATEGORIES_GROUP) && is_integer(&dtype(&ds, &cpath, what)?) {
                let catpath = format!("{path}/{CATEGORIES_GROUP}/{name}");
                let cats = open_group(
                    group,
                    CATEGORIES_GROUP,
                    &format!("{path}/{CATEGORIES_GROUP}"),
                    what,
                )?;
                if Members::of(&cats, &catpath, what)?.has_dataset(name) {
                    let categories = open_dataset(&cats, name, &catpath, what)?;
                    return categorical(&categories, &catpath, &ds, &cpath, rows, src).map(Some);
                }
            }
            return dataset_column(&ds, &cpath, Some(rows), src).map(Some);
        }
        if !members.has_group(name) {
            return Ok(None);
        }
        let g = open_group(group, name, &cpath, what)?;
        let inner = Members::of(&g, &cpath, what)?;
        let encoding = g
            .attrs()
            .map_err(|e| h5_error(what, &format!("cannot read the attributes of {cpath}"), e))?
            .get("encoding-type")
            .and_then(attr_string)
            .unwrap_or_default();
        if inner.has_dataset("categories") && inner.has_dataset("codes") {
            let (catpath, codepath) = (format!("{cpath}/categories"), format!("{cpath}/codes"));
            let categories = open_dataset(&g, "categories", &catpath, what)?;
            let codes = open_dataset(&g, "codes", &codepath, what)?;
            return categorical(&categories, &catpath, &codes, &codepath, rows, src).map(Some);
        }
        // nullable-integer, nullable-boolean, nullable-string-array: values and a mask
        // that is true where a value is missing.
        if inner.has_dataset("values") {
            let vpath = format!("{cpath}/values");
            let values = dataset_column(
                &open_dataset(&g, "values", &vpath, what)?,
                &vpath,
                Some(rows),
                src,
            )?;
            let ReadColumn::Values(values) = values else {
                return Ok(Some(values));
            };
            if !inner.has_dataset("mask") {
                return Ok(Some(ReadColumn::Values(values)));
            }
            let mpath = format!("{cpath}/mask");
            let mask_ds = open_dataset(&g, "mask", &mpath, what)?;
            expect_rows(&mask_ds, &mpath, rows, src)?;
            let mask = read_codes(&mask_ds, &mpath, src)?;
            return Ok(Some(ReadColumn::Values(masked(values, &mask))));
        }
        let encoding = if encoding.is_empty() {
            "no encoding-type".to_string()
        } else {
            format!("encoding {encoding:?}")
        };
        Ok(Some(ReadColumn::Unsupported(format!(
            "a group of {encoding}"
        ))))
    }

    fn compound_column(
        &self,
        records: &[u8],
        record_size: usize,
        fields: &[hdf5_pure::CompoundMember],
        name: &str,
        rows: usize,
    ) -> Result<Option<ReadColumn>> {
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
        if records.len() / record_size != rows {
            return Err(Error::input(
                what,
                format!(
                    "{path} has {} records, expected {rows}",
                    records.len() / record_size
                ),
            ));
        }
        let cells = records
            .chunks_exact(record_size)
            .map(|r| &r[offset..offset + width]);
        let column = match &field.datatype {
            Datatype::String { padding, .. } => {
                let v: Vec<Option<String>> =
                    cells.map(|b| Some(fixed_string(b, padding))).collect();
                Column::from_strings(&v)
            }
            Datatype::FixedPoint {
                size: 1 | 2 | 4 | 8,
                byte_order,
                layout,
            } => {
                let big = matches!(byte_order, DatatypeByteOrder::BigEndian);
                let ints: Vec<i128> = cells.map(|b| int_field(b, big, layout.signed)).collect();
                // Pre-0.7 categorical: codes here, categories in uns/<name>_categories.
                let catname = format!("{name}_categories");
                let uns = self.root.group("uns").ok();
                let has_categories = match &uns {
                    Some(uns) => Members::of(uns, "/uns", what)?.has_dataset(&catname),
                    None => false,
                };
                if let Some(uns) = uns.filter(|_| has_categories) {
                    let catpath = format!("/uns/{catname}");
                    let categories = open_dataset(&uns, &catname, &catpath, what)?;
                    let ReadColumn::Values(categories) =
                        dataset_column(&categories, &catpath, None, src)?
                    else {
                        return Err(Error::input(
                            what,
                            format!("{catpath} holds values of no field type"),
                        ));
                    };
                    let codes: Vec<i64> = ints
                        .iter()
                        .map(|&c| i64::try_from(c).unwrap_or(i64::MAX))
                        .collect();
                    decode_categorical(categories, &codes, &fpath, what)?
                } else {
                    int_column(ints)
                }
            }
            Datatype::FloatingPoint {
                size: size @ (4 | 8),
                byte_order,
                ..
            } => {
                let big = matches!(byte_order, DatatypeByteOrder::BigEndian);
                Column::Num(cells.map(|b| float_field(b, *size, big)).collect())
            }
            Datatype::Enumeration {
                size: 1, members, ..
            } if is_bool_enum(members.iter().map(|m| m.name.as_str())) => {
                let truth = |b: &[u8]| {
                    members
                        .iter()
                        .find(|m| m.value.as_slice() == b)
                        .map(|m| m.name == "TRUE")
                };
                let values: Vec<Option<bool>> = cells.map(truth).collect();
                if values.iter().any(Option::is_none) {
                    return Err(Error::input(
                        what,
                        format!("{fpath} holds a value that is neither TRUE nor FALSE"),
                    ));
                }
                Column::bools(&values)
            }
            other => {
                return Ok(Some(ReadColumn::Unsupported(format!(
                    "HDF5 {} data",
                    datatype_class(other)
                ))));
            }
        };
        Ok(Some(ReadColumn::Values(column)))
    }
}

/// The class of an HDF5 type, as a message names it.
fn datatype_class(dt: &Datatype) -> &'static str {
    match dt {
        Datatype::FixedPoint { .. } => "integer",
        Datatype::FloatingPoint { .. } => "float",
        Datatype::String { .. } => "string",
        Datatype::Time { .. } => "time",
        Datatype::BitField { .. } => "bitfield",
        Datatype::Opaque { .. } => "opaque",
        Datatype::Compound { .. } => "compound",
        Datatype::Reference { .. } => "reference",
        Datatype::Enumeration { .. } => "enum",
        Datatype::VariableLength { .. } => "variable-length",
        Datatype::Array { .. } => "array",
        _ => "unknown",
    }
}

/// The compound layout's field of row names.
const INDEX_FIELD: &str = "index";

/// anndata 0.7's group of categories, beside the codes.
const CATEGORIES_GROUP: &str = "__categories";

/// A column as read: its values, or what it holds that no field type holds.
enum ReadColumn {
    Values(Column),
    Unsupported(String),
}

fn is_integer(dt: &DType) -> bool {
    matches!(
        dt,
        DType::I8
            | DType::I16
            | DType::I32
            | DType::I64
            | DType::U8
            | DType::U16
            | DType::U32
            | DType::U64
    )
}

/// How h5py stores numpy bools: an enum of FALSE and TRUE.
fn is_bool_enum<'a>(names: impl Iterator<Item = &'a str>) -> bool {
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    names == ["FALSE", "TRUE"]
}

/// Refuses a dataset that is not one value per row, before it is read: the read is
/// then bounded by the row count as well as by the file.
fn expect_rows(ds: &hdf5_pure::Dataset, path: &str, rows: usize, src: &H5Input) -> Result<()> {
    let what = src.what.as_str();
    let shape = ds
        .shape()
        .map_err(|e| h5_error(what, &format!("{path}: unreadable shape"), e))?;
    if shape != [rows as u64] {
        return Err(Error::input(
            what,
            format!("{path} has shape {shape:?}; expected {rows} values, one per row"),
        ));
    }
    Ok(())
}

/// A one-dimensional dataset of strings, integers, floats or booleans as a column;
/// with `rows`, it must hold that many values.
fn dataset_column(
    ds: &hdf5_pure::Dataset,
    path: &str,
    rows: Option<usize>,
    src: &H5Input,
) -> Result<ReadColumn> {
    let what = src.what.as_str();
    if let Some(rows) = rows {
        expect_rows(ds, path, rows, src)?;
    }
    let dt = dtype(ds, path, what)?;
    let read_err = |e| h5_error(what, &format!("cannot read {path}"), e);
    Ok(ReadColumn::Values(match dt {
        DType::String | DType::VariableLengthString => {
            let v: Vec<Option<String>> =
                read_strings(ds, path, src)?.into_iter().map(Some).collect();
            Column::from_strings(&v)
        }
        DType::U64 => {
            check_size(ds, path, src, 8)?;
            let v = ds.read_u64().map_err(read_err)?;
            int_column(v.into_iter().map(i128::from).collect())
        }
        dt if is_integer(&dt) => {
            check_size(ds, path, src, 8)?;
            let v = ds.read_i64().map_err(read_err)?;
            Column::Int {
                values: v,
                nulls: None,
            }
        }
        DType::F32 | DType::F64 => {
            check_size(ds, path, src, 8)?;
            Column::Num(ds.read_f64().map_err(read_err)?)
        }
        DType::Enum(names) if is_bool_enum(names.iter().map(String::as_str)) => {
            let v = read_codes(ds, path, src)?;
            if v.iter().any(|&b| b != 0 && b != 1) {
                return Err(Error::input(
                    what,
                    format!("{path} holds a value that is neither TRUE nor FALSE"),
                ));
            }
            Column::Bool {
                values: v.into_iter().map(|b| b == 1).collect(),
                nulls: None,
            }
        }
        other => return Ok(ReadColumn::Unsupported(format!("HDF5 type {other}"))),
    }))
}

/// Integers, as numbers when one does not fit an i64.
fn int_column(values: Vec<i128>) -> Column {
    if values.iter().all(|&v| i64::try_from(v).is_ok()) {
        Column::Int {
            values: values.into_iter().map(|v| v as i64).collect(),
            nulls: None,
        }
    } else {
        Column::Num(values.into_iter().map(|v| v as f64).collect())
    }
}

/// `column` with the rows where `mask` is nonzero made null.
fn masked(column: Column, mask: &[i64]) -> Column {
    let null = |i: usize| mask[i] != 0;
    if !mask.iter().any(|&m| m != 0) {
        return column;
    }
    match column {
        // Rebuilt, so that a value only masked rows had (the "" a nullable string
        // array stores under its mask) is no category.
        Column::Categorical { categories, codes } => {
            let values: Vec<Option<&str>> = codes
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    let c = usize::try_from(c).ok().filter(|_| !null(i))?;
                    Some(categories[c].as_str())
                })
                .collect();
            Column::from_strings(&values)
        }
        Column::Int { values, nulls } => Column::Int {
            nulls: Some(
                (0..values.len())
                    .map(|i| null(i) || nulls.as_ref().is_some_and(|n| n[i]))
                    .collect(),
            ),
            values,
        },
        Column::Num(mut v) => {
            for (i, x) in v.iter_mut().enumerate() {
                if null(i) {
                    *x = f64::NAN;
                }
            }
            Column::Num(v)
        }
        Column::Bool { values, nulls } => Column::Bool {
            nulls: Some(
                (0..values.len())
                    .map(|i| null(i) || nulls.as_ref().is_some_and(|n| n[i]))
                    .collect(),
            ),
            values,
        },
    }
}

/// A categorical column from its categories and codes datasets.
fn categorical(
    categories: &hdf5_pure::Dataset,
    catpath: &str,
    codes: &hdf5_pure::Dataset,
    codepath: &str,
    rows: usize,
    src: &H5Input,
) -> Result<ReadColumn> {
    let cats = match dataset_column(categories, catpath, None, src)? {
        ReadColumn::Values(c) => c,
        unsupported => return Ok(unsupported),
    };
    expect_rows(codes, codepath, rows, src)?;
    let codes = read_codes(codes, codepath, src)?;
    decode_categorical(cats, &codes, codepath, &src.what).map(ReadColumn::Values)
}

/// Reads categorical codes (or a mask) as signed integers; -1 marks a missing value.
fn read_codes(ds: &hdf5_pure::Dataset, path: &str, src: &H5Input) -> Result<Vec<i64>> {
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

/// The values `codes` (-1 for missing) pick from `categories`, in the categories' type:
/// strings stay categorical (over sorted categories), numbers and booleans become
/// plain columns.
fn decode_categorical(categories: Column, codes: &[i64], path: &str, what: &str) -> Result<Column> {
    let n = categories.len();
    if let Some(bad) = codes
        .iter()
        .find(|&&c| c != -1 && !(0..n as i64).contains(&c))
    {
        return Err(Error::input(
            what,
            format!("{path} has category code {bad}, out of range for {n} categories"),
        ));
    }
    Ok(match categories {
        // Sorted and deduplicated; `sorted[i]` is where category i went.
        Column::Categorical {
            categories,
            codes: sorted,
        } => Column::Categorical {
            categories,
            codes: codes
                .iter()
                .map(|&c| if c < 0 { -1 } else { sorted[c as usize] })
                .collect(),
        },
        other => {
            let values: Vec<Option<crate::field::Scalar>> = codes
                .iter()
                .map(|&c| usize::try_from(c).ok().and_then(|c| other.scalar(c)))
                .collect();
            Column::from_scalars(other.field_type(), &values)
                .map_err(|e| Error::input(what, format!("{path}: {e}")))?
        }
    })
}

fn fixed_string(bytes: &[u8], padding: &StringPadding) -> String {
    let end = match padding {
        StringPadding::NullTerminate => bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()),
        StringPadding::NullPad => bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1),
        StringPadding::SpacePad => bytes.iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1),
    };
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A compound field's integer of 1, 2, 4 or 8 bytes.
fn int_field(bytes: &[u8], big_endian: bool, signed: bool) -> i128 {
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
        i128::from(((raw << shift) as i64) >> shift)
    } else if signed {
        i128::from(raw as i64)
    } else {
        i128::from(raw)
    }
}

/// A compound field's IEEE float of 4 or 8 bytes, widened.
fn float_field(bytes: &[u8], size: u32, big_endian: bool) -> f64 {
    match (size, big_endian) {
        (4, false) => f64::from(f32::from_le_bytes(bytes.try_into().expect("4 bytes"))),
        (4, true) => f64::from(f32::from_be_bytes(bytes.try_into().expect("4 bytes"))),
        (_, false) => f64::from_le_bytes(bytes.try_into().expect("8 bytes")),
        (_, true) => f64::from_be_bytes(bytes.try_into().expect("8 bytes")),
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
        let m = read_h5ad(&path).unwrap().0;
        // float32 integral counts come back as integers.
        assert_small_matrix(&m);
        assert_eq!(m.features.ids, strings(&GENE_IDS));
        assert_eq!(m.features.names, strings(&GENE_NAMES));
    }

    #[test]
    fn reads_anndata_csc_with_categorical_symbols() {
        let (_d, path) = fixture("csc.h5ad");
        let m = read_h5ad(&path).unwrap().0;
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
        let m = read_h5ad(&path).unwrap().0;
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
        let m = read_h5ad(&path).unwrap().0;
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
        let msg = input_message(read_h5ad(&path).map(|(m, _)| m));
        assert!(msg.contains("truncated.h5ad: truncated HDF5 file"), "{msg}");

        // A 10x file is HDF5 but not AnnData.
        let (_d, path) = fixture("tenx_v3.h5");
        let msg = input_message(read_h5ad(&path).map(|(m, _)| m));
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
        let m = read_h5ad(&path).unwrap().0;
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
        let m = read_h5ad(&path).unwrap().0;
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

    fn bool_enum() -> Datatype {
        hdf5_pure::EnumTypeBuilder::with_base(hdf5_pure::make_i8_type())
            .value("FALSE", 0)
            .value("TRUE", 1)
            .build()
            .unwrap()
    }

    fn obs_of(m: &SourceMatrix) -> std::collections::BTreeMap<&str, &Column> {
        m.obs.iter().map(|(n, c)| (n.as_str(), c)).collect()
    }

    #[test]
    fn reads_every_obs_column_of_the_current_layout() {
        // What anndata 0.12 writes (checked with its writer): categorical groups,
        // string and numeric arrays, h5py's bool enum, and the nullable groups.
        let (_d, path) = built(|b| {
            let mut g = b.create_group("obs");
            g.set_attr("encoding-type", vlen("dataframe"));
            g.set_attr("_index", vlen("_index"));
            g.set_attr(
                "column-order",
                AttrValue::VarLenStringArray(strings(&[
                    "cell type",
                    "s",
                    "i",
                    "f",
                    "b",
                    "ni",
                    "nb",
                    "ns",
                    "n_genes",
                    "k",
                    "weird",
                ])),
            );
            g.create_dataset("_index").with_vlen_strings(&CELLS);
            let mut cat = g.create_group("cell type");
            cat.set_attr("encoding-type", vlen("categorical"));
            // Unsorted categories, and a missing value.
            cat.create_dataset("categories")
                .with_vlen_strings(&["T", "B"]);
            cat.create_dataset("codes").with_data(&[0i8, 1, -1, 0]);
            g.add_group(cat.finish());
            g.create_dataset("s")
                .with_vlen_strings(&["w", "x", "y", "z"]);
            g.create_dataset("i").with_data(&[1i32, -2, 3, 4]);
            g.create_dataset("f")
                .with_data(&[1.5f32, f32::NAN, 2.0, 3.0]);
            g.create_dataset("b")
                .with_enum_u8_data(bool_enum(), &[1, 0, 1, 1]);
            let mut ni = g.create_group("ni");
            ni.set_attr("encoding-type", vlen("nullable-integer"));
            ni.create_dataset("values").with_data(&[1i64, 0, 3, 4]);
            ni.create_dataset("mask")
                .with_enum_u8_data(bool_enum(), &[0, 1, 0, 0]);
            g.add_group(ni.finish());
            let mut nb = g.create_group("nb");
            nb.set_attr("encoding-type", vlen("nullable-boolean"));
            nb.create_dataset("values")
                .with_enum_u8_data(bool_enum(), &[1, 0, 0, 1]);
            nb.create_dataset("mask")
                .with_enum_u8_data(bool_enum(), &[0, 1, 0, 0]);
            g.add_group(nb.finish());
            let mut ns = g.create_group("ns");
            ns.set_attr("encoding-type", vlen("nullable-string-array"));
            ns.create_dataset("values")
                .with_vlen_strings(&["p", "", "q", "r"]);
            ns.create_dataset("mask")
                .with_enum_u8_data(bool_enum(), &[0, 1, 0, 0]);
            g.add_group(ns.finish());
            g.create_dataset("n_genes").with_data(&[5i64, 6, 7, 8]);
            // A categorical over integers stays integers.
            let mut k = g.create_group("k");
            k.set_attr("encoding-type", vlen("categorical"));
            k.create_dataset("categories").with_data(&[10i64, 20]);
            k.create_dataset("codes").with_data(&[1i8, 0, -1, 1]);
            g.add_group(k.finish());
            let mut w = g.create_group("weird");
            w.set_attr("encoding-type", vlen("awkward-array"));
            w.create_dataset("x").with_data(&[1i32]);
            g.add_group(w.finish());
            b.add_group(g.finish());
            frame(b, "var", &GENE_IDS);
            csr_x(b, &[4, 5], &[1, 3, 0, 4, 0, 1, 2, 4]);
        });
        let (m, notes) = read_h5ad(&path).unwrap();
        let names: Vec<&str> = m.obs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "cell_type",
                "s",
                "i",
                "f",
                "b",
                "ni",
                "nb",
                "ns",
                "input_n_genes",
                "k"
            ]
        );
        let obs = obs_of(&m);
        assert_eq!(
            obs["cell_type"],
            &Column::Categorical {
                categories: strings(&["B", "T"]),
                codes: vec![1, 0, -1, 1]
            }
        );
        assert_eq!(
            obs["s"],
            &Column::from_strings(&[Some("w"), Some("x"), Some("y"), Some("z")])
        );
        assert_eq!(
            obs["i"],
            &Column::ints(&[Some(1), Some(-2), Some(3), Some(4)])
        );
        assert_eq!(obs["f"].scalar(0), Some(crate::field::Scalar::Num(1.5)));
        assert_eq!(obs["f"].null_count(), 1);
        assert_eq!(
            obs["b"],
            &Column::bools(&[Some(true), Some(false), Some(true), Some(true)])
        );
        assert_eq!(obs["ni"], &Column::ints(&[Some(1), None, Some(3), Some(4)]));
        assert_eq!(
            obs["nb"],
            &Column::bools(&[Some(true), None, Some(false), Some(true)])
        );
        assert_eq!(
            obs["ns"],
            &Column::from_strings(&[Some("p"), None, Some("q"), Some("r")])
        );
        assert_eq!(
            obs["input_n_genes"],
            &Column::ints(&[Some(5), Some(6), Some(7), Some(8)])
        );
        assert_eq!(
            obs["k"],
            &Column::ints(&[Some(20), Some(10), None, Some(20)])
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("\"n_genes\" is kept as cell.input_n_genes")),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("\"cell type\" as cell.cell_type")),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.contains("/obs/weird is left out")),
            "{notes:?}"
        );
    }

    #[test]
    fn reads_anndata_07_categories_by_name() {
        let (_d, path) = built(|b| {
            let mut g = b.create_group("obs");
            g.set_attr("encoding-type", vlen("dataframe"));
            g.set_attr("_index", vlen("_index"));
            g.create_dataset("_index").with_vlen_strings(&CELLS);
            g.create_dataset("louvain").with_data(&[2i8, 0, 1, -1]);
            g.create_dataset("depth").with_data(&[7u8, 8, 9, 10]);
            let mut cats = g.create_group("__categories");
            cats.create_dataset("louvain")
                .with_vlen_strings(&["0", "1", "10"]);
            g.add_group(cats.finish());
            b.add_group(g.finish());
            frame(b, "var", &GENE_IDS);
            csr_x(b, &[4, 5], &[1, 3, 0, 4, 0, 1, 2, 4]);
        });
        let (m, _) = read_h5ad(&path).unwrap();
        let obs = obs_of(&m);
        assert_eq!(obs.len(), 2, "{:?}", m.obs);
        assert_eq!(
            obs["louvain"],
            &Column::from_strings(&[Some("10"), Some("0"), Some("1"), None])
        );
        assert_eq!(
            obs["depth"],
            &Column::ints(&[Some(7), Some(8), Some(9), Some(10)])
        );
    }

    #[test]
    fn reads_every_field_of_the_compound_layout() {
        // anndata < 0.7, as scanpy's pbmc68k_reduced: integer codes with categories in
        // uns, plain integers, f32 floats, h5py's bool enum and fixed strings.
        let text = |n: u32| Datatype::String {
            size: n,
            padding: StringPadding::NullPad,
            charset: hdf5_pure::CharacterSet::Ascii,
        };
        let dt = hdf5_pure::CompoundTypeBuilder::new()
            .field("index", text(18))
            .i8_field("bulk_labels")
            .i64_field("n_genes")
            .f32_field("percent_mito")
            .field("flag", bool_enum())
            .field("barcode", text(18))
            .u64_field("big")
            .build()
            .unwrap();
        let mut raw = Vec::new();
        for (r, cell) in CELLS.iter().enumerate() {
            let mut name = cell.as_bytes().to_vec();
            name.resize(18, 0);
            raw.extend(&name);
            raw.push([1u8, 0, 1, 0xff][r]);
            raw.extend((100 + r as i64).to_le_bytes());
            raw.extend((0.5f32 * r as f32).to_le_bytes());
            raw.push(u8::from(r % 2 == 0));
            raw.extend(&name);
            raw.extend(if r == 3 { u64::MAX } else { r as u64 }.to_le_bytes());
        }
        let (_d, path) = built(|b| {
            b.create_dataset("obs").with_compound_data(dt, raw, 4);
            let mut uns = b.create_group("uns");
            uns.create_dataset("bulk_labels_categories")
                .with_vlen_strings(&["CD14+ Monocyte", "Dendritic"]);
            b.add_group(uns.finish());
            frame(b, "var", &GENE_IDS);
            csr_x(b, &[4, 5], &[1, 3, 0, 4, 0, 1, 2, 4]);
        });
        let (m, notes) = read_h5ad(&path).unwrap();
        assert_eq!(m.cells, strings(&CELLS));
        let names: Vec<&str> = m.obs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "bulk_labels",
                "input_n_genes",
                "percent_mito",
                "flag",
                "input_barcode",
                "big"
            ]
        );
        let obs = obs_of(&m);
        assert_eq!(
            obs["bulk_labels"],
            &Column::from_strings(&[
                Some("Dendritic"),
                Some("CD14+ Monocyte"),
                Some("Dendritic"),
                None
            ])
        );
        assert_eq!(
            obs["input_n_genes"],
            &Column::ints(&[Some(100), Some(101), Some(102), Some(103)])
        );
        assert_eq!(obs["percent_mito"], &Column::Num(vec![0.0, 0.5, 1.0, 1.5]));
        assert_eq!(
            obs["flag"],
            &Column::bools(&[Some(true), Some(false), Some(true), Some(false)])
        );
        assert_eq!(
            obs["input_barcode"],
            &Column::from_strings(&CELLS.map(Some))
        );
        // A u64 past i64 makes the column numbers.
        assert_eq!(obs["big"].field_type(), crate::field::FieldType::Number);
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn fixtures_keep_their_obs_columns() {
        let (_d, path) = fixture("csr.h5ad");
        let (m, _) = read_h5ad(&path).unwrap();
        let obs = obs_of(&m);
        assert_eq!(
            obs["sample"],
            &Column::from_strings(&[Some("s1"), Some("s2"), Some("s1"), Some("s2")])
        );
        assert_eq!(obs["n_counts"], &Column::Num(vec![4.0, 9.0, 0.0, 9.0]));
        let (_d, path) = fixture("legacy.h5ad");
        let (m, notes) = read_h5ad(&path).unwrap();
        let obs = obs_of(&m);
        assert_eq!(
            obs["input_barcode"],
            &Column::from_strings(&CELLS.map(Some))
        );
        assert_eq!(
            obs["sample"],
            &Column::from_strings(&[Some("s1"), Some("s2"), Some("s1"), Some("s2")])
        );
        assert!(
            notes[0].contains("\"barcode\" is kept as cell.input_barcode"),
            "{notes:?}"
        );
    }

    #[test]
    fn refuses_malformed_obs_columns() {
        let obs_with = |build: &dyn Fn(&mut hdf5_pure::GroupBuilder)| {
            built(|b| {
                let mut g = b.create_group("obs");
                g.set_attr("encoding-type", vlen("dataframe"));
                g.set_attr("_index", vlen("_index"));
                g.create_dataset("_index").with_vlen_strings(&CELLS);
                build(&mut g);
                b.add_group(g.finish());
                frame(b, "var", &GENE_IDS);
                csr_x(b, &[4, 5], &[1, 3, 0, 4, 0, 1, 2, 4]);
            })
        };
        let (_d, path) = obs_with(&|g| {
            g.create_dataset("short").with_data(&[1i32, 2, 3]);
        });
        let msg = input_message(read_h5ad(&path).map(|(m, _)| m));
        assert!(
            msg.contains("/obs/short has shape [3]; expected 4 values"),
            "{msg}"
        );
        let (_d, path) = obs_with(&|g| {
            let mut c = g.create_group("c");
            c.create_dataset("categories").with_vlen_strings(&["a"]);
            c.create_dataset("codes").with_data(&[0i8, 1, 0, 0]);
            g.add_group(c.finish());
        });
        let msg = input_message(read_h5ad(&path).map(|(m, _)| m));
        assert!(
            msg.contains("/obs/c/codes has category code 1, out of range for 1"),
            "{msg}"
        );
        let (_d, path) = obs_with(&|g| {
            g.create_dataset("Cell Type").with_data(&[1i32, 2, 3, 4]);
            g.create_dataset("cell_type").with_data(&[1i32, 2, 3, 4]);
        });
        let msg = input_message(read_h5ad(&path).map(|(m, _)| m));
        assert!(
            msg.contains("\"Cell Type\"") && msg.contains("\"cell_type\""),
            "{msg}"
        );
    }

    #[test]
    fn refuses_malformed_layouts() {
        let (_d, path) = built(|b| {
            frame(b, "obs", &CELLS);
            frame(b, "var", &GENE_IDS);
            csr_x(b, &[4, 5], &[1, 3, 0, 7, 0, 1, 2, 4]);
        });
        let msg = input_message(read_h5ad(&path).map(|(m, _)| m));
        assert!(msg.contains("column index 7 out of range"), "{msg}");

        let (_d, path) = built(|b| {
            frame(b, "obs", &CELLS[..3]);
            frame(b, "var", &GENE_IDS);
            csr_x(b, &[4, 5], &[1, 3, 0, 4, 0, 1, 2, 4]);
        });
        let msg = input_message(read_h5ad(&path).map(|(m, _)| m));
        assert!(msg.contains("X is 4 × 5 but obs has 3 names"), "{msg}");

        let (_d, path) = built(|b| {
            frame(b, "obs", &CELLS);
            frame(b, "var", &GENE_IDS);
        });
        let msg = input_message(read_h5ad(&path).map(|(m, _)| m));
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
