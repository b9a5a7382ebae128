//! Metadata sidecars: a JSON object, or a TSV file.
//!
//! - JSON: `{"project": "...", "organ": "...", "lab": "...", ...}` for the whole input,
//!   and optionally `"cells": {"<cell id>": {"cell_type": "...", ...}, ...}` per cell.
//! - TSV with a header whose first column is `cell`: one row of values per cell.
//! - TSV of `key<TAB>value` lines: values for the whole input.
//!
//! Every key for the whole input becomes a bundle field (its name normalised by
//! `field::stored_name`; project, organ, species, assay and donor are the built-ins),
//! and every per-cell column a cell field of the cells whose ids the rows name, null
//! for a cell without a row; with one bundle per cell, a cell's row also gives its
//! bundle's fields.
//!
//! Types: a JSON value keeps its JSON type (string, integer, number, boolean; `null`
//! leaves the field unset; an array or object is an error). A TSV value is typed by
//! [`infer`]; a per-cell column takes the one type all its values have, by
//! [`infer_column`]. An empty TSV value is null.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::bundle::BundleMetadata;
use crate::error::Error;
use crate::field::column::Column;
use crate::field::{FieldType, Level, Scalar, stored_names};

/// The largest sidecar read: it is read whole and parsed into a tree several times its
/// size, and a per-cell table of a million cells is a few hundred MB.
const MAX_SIDECAR_BYTES: u64 = 1 << 30;

/// Ids listed as examples when rows and cells do not match.
const EXAMPLES: usize = 5;

/// A parsed sidecar.
#[derive(Debug, Clone, Default)]
pub struct Sidecar {
    /// The file, as messages name it.
    what: String,
    /// The bundle fields for the whole input.
    all: BundleMetadata,
    /// The per-cell rows, if any.
    cells: Option<CellTable>,
    /// What the user should know: renamed keys and columns.
    pub notes: Vec<String>,
}

/// Per-cell rows: one value per column, typed per column.
#[derive(Debug, Clone, Default)]
struct CellTable {
    /// Each column's cell field name.
    cell_names: Vec<String>,
    /// Each column's bundle field name (one bundle per cell).
    bundle_names: Vec<String>,
    /// Each column's type; `None` when every value is null.
    types: Vec<Option<FieldType>>,
    /// Cell ids, in the file's order.
    ids: Vec<String>,
    /// Row of each id.
    index: HashMap<String, usize>,
    /// The rows' values, one per column.
    rows: Vec<Vec<Option<Scalar>>>,
}

/// How a sidecar's per-cell rows met the input's cells.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RowMatch {
    /// Rows in the sidecar.
    pub rows: usize,
    /// Rows whose id is no cell's.
    pub unmatched_rows: usize,
    /// The first few of their ids.
    pub unmatched_row_examples: Vec<String>,
    /// Cells with no row.
    pub cells_without_row: usize,
    /// The first few of their ids.
    pub cells_without_row_examples: Vec<String>,
}

impl RowMatch {
    /// Whether every row met a cell and every cell a row.
    pub fn is_complete(&self) -> bool {
        self.unmatched_rows == 0 && self.cells_without_row == 0
    }

    /// One line per kind of mismatch, for the user.
    pub fn notes(&self) -> Vec<String> {
        self.lines(true)
    }

    /// The mismatches on one line, for an error.
    pub fn summary(&self) -> String {
        self.lines(false).join("; ")
    }

    fn lines(&self, consequence: bool) -> Vec<String> {
        let mut out = Vec::new();
        if self.unmatched_rows > 0 {
            out.push(format!(
                "{} of {} sidecar rows match no cell (e.g. {})",
                self.unmatched_rows,
                self.rows,
                quoted(&self.unmatched_row_examples)
            ));
        }
        if self.cells_without_row > 0 {
            out.push(format!(
                "{} cells have no sidecar row{} (e.g. {})",
                self.cells_without_row,
                if consequence {
                    "; their sidecar fields are null"
                } else {
                    ""
                },
                quoted(&self.cells_without_row_examples)
            ));
        }
        out
    }
}

fn quoted(ids: &[String]) -> String {
    ids.iter()
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Sidecar {
    /// Bundle fields for a bundle made of the whole input.
    pub fn for_bundle(&self) -> BundleMetadata {
        self.all.clone()
    }

    /// Bundle fields for the bundle of one cell: its own row over the input's fields.
    pub fn for_cell(&self, cell: &str) -> BundleMetadata {
        let mut meta = self.all.clone();
        if let Some(t) = &self.cells
            && let Some(&r) = t.index.get(cell)
        {
            for (name, value) in t.bundle_names.iter().zip(&t.rows[r]) {
                if let Some(v) = value {
                    meta.set(name, v.clone());
                }
            }
        }
        meta
    }

    /// Whether the sidecar has per-cell rows.
    pub fn has_cell_rows(&self) -> bool {
        self.cells.is_some()
    }

    /// The per-cell columns as cell fields of `cells` (null where a cell has no row),
    /// and how rows and cells met; nothing when there are no per-cell rows.
    pub fn cell_fields(&self, cells: &[String]) -> (Vec<(String, Column)>, RowMatch) {
        let Some(t) = &self.cells else {
            return (Vec::new(), RowMatch::default());
        };
        let rows: Vec<Option<usize>> = cells.iter().map(|c| t.index.get(c).copied()).collect();
        let columns = t
            .cell_names
            .iter()
            .zip(&t.types)
            .enumerate()
            .map(|(j, (name, ty))| {
                // An all-null column is a string column of nulls.
                let ty = ty.unwrap_or(FieldType::String);
                let values: Vec<Option<Scalar>> = rows
                    .iter()
                    .map(|r| r.and_then(|r| t.rows[r][j].clone()))
                    .collect();
                let column = Column::from_scalars(ty, &values)
                    .expect("values were typed when the sidecar was read");
                (name.clone(), column)
            })
            .collect();
        let cell_set: std::collections::HashSet<&str> = cells.iter().map(String::as_str).collect();
        let unmatched: Vec<&String> = t
            .ids
            .iter()
            .filter(|id| !cell_set.contains(id.as_str()))
            .collect();
        let without: Vec<&String> = cells
            .iter()
            .zip(&rows)
            .filter(|(_, r)| r.is_none())
            .map(|(c, _)| c)
            .collect();
        let matched = RowMatch {
            rows: t.ids.len(),
            unmatched_rows: unmatched.len(),
            unmatched_row_examples: unmatched
                .iter()
                .take(EXAMPLES)
                .map(|s| s.to_string())
                .collect(),
            cells_without_row: without.len(),
            cells_without_row_examples: without
                .iter()
                .take(EXAMPLES)
                .map(|s| s.to_string())
                .collect(),
        };
        (columns, matched)
    }

    /// The file, as messages name it.
    pub fn what(&self) -> &str {
        &self.what
    }
}

/// Reads a sidecar file (JSON by `.json` suffix, otherwise TSV).
pub fn read_sidecar(path: &Path) -> Result<Sidecar, Error> {
    let what = path.display().to_string();
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > MAX_SIDECAR_BYTES {
        return Err(Error::input(
            &what,
            format!("{len} bytes; a metadata sidecar may have at most {MAX_SIDECAR_BYTES}"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        parse_json(&what, &text)
    } else {
        parse_tsv(&what, &text)
    }
}

/// The value a TSV cell or a `--meta` value stands for: an integer when it is one
/// (optionally signed, without leading zeros, which mark an id such as `007`), a number
/// when it is a finite decimal (`2.5`, `-1e-3`), a boolean for `true` or `false` in any
/// case, else the text itself; nothing when empty.
pub fn infer(text: &str) -> Option<Scalar> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(match kind(text) {
        Kind::Int(i) => Scalar::Int(i),
        Kind::Num(x) => Scalar::Num(x),
        Kind::Bool(b) => Scalar::Bool(b),
        Kind::Str => Scalar::Str(text.to_string()),
    })
}

/// The type of a column of TSV values: integer when every non-empty value is an
/// integer, number when every one is a number, boolean when every one is `true` or
/// `false`, else string (values kept as written); `None` when all are empty. Each
/// value then reads as [`infer`] reads it, widened to the column's type.
pub fn infer_column<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<FieldType> {
    let mut ty: Option<FieldType> = None;
    for v in values {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        let t = match kind(v) {
            Kind::Int(_) => FieldType::Integer,
            Kind::Num(_) => FieldType::Number,
            Kind::Bool(_) => FieldType::Boolean,
            Kind::Str => return Some(FieldType::String),
        };
        ty = match ty {
            None => Some(t),
            Some(prev) => match prev.join(t) {
                Some(j) => Some(j),
                None => return Some(FieldType::String),
            },
        };
    }
    ty
}

enum Kind {
    Int(i64),
    Num(f64),
    Bool(bool),
    Str,
}

fn kind(text: &str) -> Kind {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let leading_zero = digits.len() > 1
        && digits.starts_with('0')
        && digits[1..].starts_with(|c: char| c.is_ascii_digit());
    if text.eq_ignore_ascii_case("true") {
        return Kind::Bool(true);
    }
    if text.eq_ignore_ascii_case("false") {
        return Kind::Bool(false);
    }
    let numeric = digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if !numeric || leading_zero {
        return Kind::Str;
    }
    if let Ok(i) = text.parse::<i64>() {
        return Kind::Int(i);
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => Kind::Num(x),
        _ => Kind::Str,
    }
}

/// `text` read as a value of `ty`, which [`infer_column`] chose for its column.
fn typed(text: &str, ty: FieldType) -> Option<Scalar> {
    let v = infer(text)?;
    Some(match (ty, v) {
        (FieldType::String, v) => Scalar::Str(match v {
            Scalar::Str(s) => s,
            _ => text.trim().to_string(),
        }),
        (FieldType::Number, Scalar::Int(i)) => Scalar::Num(i as f64),
        (_, v) => v,
    })
}

/// A JSON value as a field value; `null` is none.
fn json_scalar(what: &str, key: &str, v: &serde_json::Value) -> Result<Option<Scalar>, Error> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => None,
        J::Bool(b) => Some(Scalar::Bool(*b)),
        J::String(s) => Some(Scalar::Str(s.clone())),
        J::Number(n) => Some(match n.as_i64() {
            Some(i) => Scalar::Int(i),
            None => Scalar::Num(n.as_f64().unwrap_or(f64::NAN)),
        }),
        J::Array(_) | J::Object(_) => {
            return Err(Error::input(
                what,
                format!("field {key:?} must be a string, number, boolean or null"),
            ));
        }
    })
}

/// The bundle fields of whole-input `(key, value)` pairs.
fn bundle_fields(
    what: &str,
    pairs: Vec<(String, Option<Scalar>)>,
    notes: &mut Vec<String>,
) -> Result<BundleMetadata, Error> {
    let keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    let names = super::names::store(what, Level::Bundle, "sidecar key", &keys, notes)?;
    let mut meta = BundleMetadata::default();
    for (name, (_, value)) in names.iter().zip(pairs) {
        if let Some(v) = value {
            meta.set(name, v);
        }
    }
    Ok(meta)
}

/// A table of per-cell rows from source column names and typed rows.
fn cell_table(
    what: &str,
    columns: Vec<String>,
    types: Vec<Option<FieldType>>,
    rows: Vec<(String, Vec<Option<Scalar>>)>,
    notes: &mut Vec<String>,
) -> Result<CellTable, Error> {
    let cell_names = super::names::store(what, Level::Cell, "sidecar column", &columns, notes)?;
    let bundle_names = stored_names(Level::Bundle, columns.iter().map(String::as_str))
        .map_err(|e| Error::input(what, e))?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut table = CellTable {
        cell_names,
        bundle_names,
        types,
        ..CellTable::default()
    };
    for (id, values) in rows {
        if table.index.insert(id.clone(), table.ids.len()).is_some() {
            return Err(Error::input(
                what,
                format!("cell {id:?} has more than one row"),
            ));
        }
        table.ids.push(id);
        table.rows.push(values);
    }
    Ok(table)
}

fn parse_json(what: &str, text: &str) -> Result<Sidecar, Error> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::input(what, format!("invalid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Error::input(what, "expected a JSON object"))?;
    let mut notes = Vec::new();
    let mut pairs = Vec::new();
    let mut cells = None;
    for (k, v) in obj {
        if k != "cells" {
            pairs.push((k.clone(), json_scalar(what, k, v)?));
            continue;
        }
        let rows = v
            .as_object()
            .ok_or_else(|| Error::input(what, "\"cells\" must be an object of objects"))?;
        // Columns in order of first appearance, typed by the join of their values.
        let mut columns: Vec<String> = Vec::new();
        let mut column_of: BTreeMap<String, usize> = BTreeMap::new();
        let mut types: Vec<Option<FieldType>> = Vec::new();
        let mut parsed = Vec::with_capacity(rows.len());
        for (cell, fields) in rows {
            let fields = fields
                .as_object()
                .ok_or_else(|| Error::input(what, format!("cells.{cell} must be an object")))?;
            let mut row: Vec<(usize, Scalar)> = Vec::new();
            for (fk, fv) in fields {
                let j = *column_of.entry(fk.clone()).or_insert_with(|| {
                    columns.push(fk.clone());
                    types.push(None);
                    columns.len() - 1
                });
                let Some(value) = json_scalar(what, &format!("cells.{cell}.{fk}"), fv)? else {
                    continue;
                };
                let t = value.field_type();
                types[j] = match types[j] {
                    None => Some(t),
                    Some(prev) => Some(prev.join(t).ok_or_else(|| {
                        Error::input(
                            what,
                            format!(
                                "per-cell field {fk:?} has both {} and {} values",
                                prev.name(),
                                t.name()
                            ),
                        )
                    })?),
                };
                row.push((j, value));
            }
            parsed.push((cell.clone(), row));
        }
        let n = columns.len();
        let rows = parsed
            .into_iter()
            .map(|(cell, row)| {
                let mut values = vec![None; n];
                for (j, v) in row {
                    values[j] = Some(v);
                }
                (cell, values)
            })
            .collect();
        cells = Some(cell_table(what, columns, types, rows, &mut notes)?);
    }
    Ok(Sidecar {
        what: what.to_string(),
        all: bundle_fields(what, pairs, &mut notes)?,
        cells,
        notes,
    })
}

fn parse_tsv(what: &str, text: &str) -> Result<Sidecar, Error> {
    let mut lines = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let mut sc = Sidecar {
        what: what.to_string(),
        ..Sidecar::default()
    };
    let Some((_, first)) = lines.next() else {
        return Ok(sc);
    };
    let header: Vec<&str> = first.split('\t').map(str::trim).collect();
    if header[0].eq_ignore_ascii_case("cell") {
        let mut rows: Vec<(String, Vec<&str>)> = Vec::new();
        for (i, line) in lines {
            let cols: Vec<&str> = line.split('\t').collect();
            if cols.len() != header.len() {
                return Err(Error::input(
                    what,
                    format!(
                        "line {}: {} columns but the header has {}",
                        i + 1,
                        cols.len(),
                        header.len()
                    ),
                ));
            }
            rows.push((cols[0].trim().to_string(), cols[1..].to_vec()));
        }
        let types: Vec<Option<FieldType>> = (0..header.len() - 1)
            .map(|j| infer_column(rows.iter().map(|(_, r)| r[j])))
            .collect();
        let rows = rows
            .into_iter()
            .map(|(id, r)| {
                let values = r
                    .iter()
                    .zip(&types)
                    .map(|(v, t)| t.and_then(|t| typed(v, t)))
                    .collect();
                (id, values)
            })
            .collect();
        let columns = header[1..].iter().map(|s| s.to_string()).collect();
        sc.cells = Some(cell_table(what, columns, types, rows, &mut sc.notes)?);
    } else {
        let mut pairs = Vec::new();
        for (i, line) in std::iter::once((0, first)).chain(lines) {
            let Some((k, v)) = line.split_once('\t') else {
                return Err(Error::input(
                    what,
                    format!("line {}: expected key<TAB>value", i + 1),
                ));
            };
            pairs.push((k.trim().to_string(), infer(v)));
        }
        sc.all = bundle_fields(what, pairs, &mut sc.notes)?;
    }
    Ok(sc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::Value;

    fn cells(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn json_and_tsv() {
        let sc = parse_json(
            "x",
            r#"{"project":"P","lab":"L","cells":{"c1":{"donor":"D1"}}}"#,
        )
        .unwrap();
        let m = sc.for_cell("c1");
        assert_eq!(m.project.as_deref(), Some("P"));
        assert_eq!(m.donor.as_deref(), Some("D1"));
        assert_eq!(m.get("lab"), Value::Str("L"));
        assert_eq!(sc.for_cell("c2").donor, None);

        let sc = parse_tsv("x", "cell\tdonor\torgan\nc1\tD1\tblood\nc2\tD2\t\n").unwrap();
        assert_eq!(sc.for_cell("c2").donor.as_deref(), Some("D2"));
        assert_eq!(sc.for_cell("c2").organ, None);
        let sc = parse_tsv("x", "project\tP\nspecies\thuman\n").unwrap();
        assert_eq!(sc.for_bundle().species.as_deref(), Some("human"));
        assert!(parse_tsv("x", "cell\tdonor\nc1\n").is_err());
        assert!(parse_json("x", "[1]").is_err());
    }

    #[test]
    fn json_values_keep_their_type() {
        let sc = parse_json(
            "x",
            r#"{"Lab Name":"L","age":42,"weight":61.5,"healthy":true,"gone":null,"fqid":"f","donor":7}"#,
        )
        .unwrap();
        let m = sc.for_bundle();
        assert_eq!(m.scalar("lab_name"), Some(Scalar::Str("L".into())));
        assert_eq!(m.scalar("age"), Some(Scalar::Int(42)));
        assert_eq!(m.scalar("weight"), Some(Scalar::Num(61.5)));
        assert_eq!(m.scalar("healthy"), Some(Scalar::Bool(true)));
        assert_eq!(m.scalar("gone"), None);
        // A named built-in takes the value as text; fqid is the service's.
        assert_eq!(m.donor.as_deref(), Some("7"));
        assert_eq!(m.scalar("input_fqid"), Some(Scalar::Str("f".into())));
        assert!(
            sc.notes.iter().any(|n| n.contains("bundle.input_fqid")),
            "{:?}",
            sc.notes
        );
        assert!(
            sc.notes
                .iter()
                .any(|n| n.contains("\"Lab Name\" as bundle.lab_name"))
        );

        let err = parse_json("x", r#"{"tags":["a"]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"tags\""), "{err}");
        let err = parse_json("x", r#"{"cells":{"c1":{"o":{"a":1}}}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cells.c1.o"), "{err}");
        let err = parse_json("x", r#"{"cells":{"c1":{"k":1},"c2":{"k":"a"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"k\" has both integer and string"), "{err}");
        let err = parse_json("x", r#"{"Lab":1,"lab":2}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"Lab\"") && err.contains("\"lab\""), "{err}");
    }

    #[test]
    fn tsv_values_are_typed_by_inference() {
        assert_eq!(infer("42"), Some(Scalar::Int(42)));
        assert_eq!(infer("-3"), Some(Scalar::Int(-3)));
        assert_eq!(infer("2.5"), Some(Scalar::Num(2.5)));
        assert_eq!(infer("1e-3"), Some(Scalar::Num(0.001)));
        assert_eq!(infer("TRUE"), Some(Scalar::Bool(true)));
        assert_eq!(infer("false"), Some(Scalar::Bool(false)));
        assert_eq!(infer("007"), Some(Scalar::Str("007".into())));
        assert_eq!(infer("nan"), Some(Scalar::Str("nan".into())));
        assert_eq!(infer("inf"), Some(Scalar::Str("inf".into())));
        assert_eq!(infer("1-2"), Some(Scalar::Str("1-2".into())));
        assert_eq!(infer(" lung "), Some(Scalar::Str("lung".into())));
        assert_eq!(infer(""), None);
        assert_eq!(infer_column(["1", "", "2"]), Some(FieldType::Integer));
        assert_eq!(infer_column(["1", "2.5"]), Some(FieldType::Number));
        assert_eq!(infer_column(["true", "False"]), Some(FieldType::Boolean));
        assert_eq!(infer_column(["1", "true"]), Some(FieldType::String));
        assert_eq!(infer_column(["", " "]), None);

        let sc = parse_tsv(
            "x",
            "cell\tn\tscore\tdoublet\tlabel\tempty\n\
             a\t1\t0.5\ttrue\tT cell\t\n\
             b\t\t2\tfalse\t3\t\n",
        )
        .unwrap();
        let (cols, matched) = sc.cell_fields(&cells(&["b", "a", "z"]));
        let col = |n: &str| &cols.iter().find(|(c, _)| c == n).unwrap().1;
        assert_eq!(col("n"), &Column::ints(&[None, Some(1), None]));
        assert_eq!(col("score").scalar(0), Some(Scalar::Num(2.0)));
        assert_eq!(col("score").scalar(2), None);
        assert_eq!(
            col("doublet"),
            &Column::bools(&[Some(false), Some(true), None])
        );
        assert_eq!(
            col("label"),
            &Column::from_strings(&[Some("3"), Some("T cell"), None])
        );
        assert_eq!(col("empty").null_count(), 3);
        assert_eq!(matched.cells_without_row, 1);
        assert_eq!(matched.cells_without_row_examples, ["z"]);
        assert_eq!(matched.unmatched_rows, 0);

        let sc = parse_tsv("x", "Age\t42\nlab\tL\nph\t7.5\nnothing\t\n").unwrap();
        let m = sc.for_bundle();
        assert_eq!(m.scalar("age"), Some(Scalar::Int(42)));
        assert_eq!(m.scalar("ph"), Some(Scalar::Num(7.5)));
        assert_eq!(m.scalar("nothing"), None);
        let err = parse_tsv("x", "cell\tk\nc1\t1\nc1\t2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"c1\" has more than one row"), "{err}");
    }

    #[test]
    fn unmatched_rows_and_cells_are_counted_with_examples() {
        let rows: String = (0..8).map(|i| format!("x{i}\tv\n")).collect();
        let sc = parse_tsv("x", &format!("cell\tk\na\tv\n{rows}")).unwrap();
        let (cols, m) = sc.cell_fields(&cells(&["a", "b", "c"]));
        assert_eq!(cols.len(), 1);
        assert_eq!(m.rows, 9);
        assert_eq!(m.unmatched_rows, 8);
        assert_eq!(m.unmatched_row_examples, ["x0", "x1", "x2", "x3", "x4"]);
        assert_eq!(m.cells_without_row, 2);
        assert_eq!(m.cells_without_row_examples, ["b", "c"]);
        assert!(!m.is_complete());
        assert_eq!(
            m.notes(),
            [
                "8 of 9 sidecar rows match no cell (e.g. \"x0\", \"x1\", \"x2\", \"x3\", \"x4\")",
                "2 cells have no sidecar row; their sidecar fields are null (e.g. \"b\", \"c\")",
            ]
        );
        let sc = parse_json("x", r#"{"cells":{"a":{"t":"B"},"b":{"t":null}}}"#).unwrap();
        let (cols, m) = sc.cell_fields(&cells(&["a", "b"]));
        assert!(m.is_complete() && m.notes().is_empty());
        assert_eq!(cols[0].1, Column::from_strings(&[Some("B"), None]));
        // A sidecar without rows gives no cell fields and nothing to report.
        let sc = parse_json("x", r#"{"project":"p"}"#).unwrap();
        assert!(!sc.has_cell_rows());
        assert_eq!(sc.cell_fields(&cells(&["a"])).0.len(), 0);
    }
}
