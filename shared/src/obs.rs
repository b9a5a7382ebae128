//! The output's obs columns: what each requested field becomes, decided once by the
//! driver from the catalog and stored with the request, so that every worker's part,
//! the consolidation and every format write the same column the same way.
//!
//! A string field whose values the catalog lists for every selected bundle becomes an
//! AnnData categorical over the union of those values; integers and booleans with any
//! null become AnnData's nullable arrays; numbers are float64 with NaN for null. The ten
//! built-in fields keep the columns they always had.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value as Json, json};

use crate::catalog::CatalogEntry;
use crate::field::{Field, FieldType, Level, Scalar, Value};
use crate::fqid::Fqid;

/// Most categories an output categorical may have; past it, a string field is plain text.
pub const MAX_CATEGORIES: usize = 10_000;

/// How one output obs column is stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnKind {
    /// Text; a null is `""`.
    Str,
    /// Unsigned 32-bit integers (`cell.n_genes`).
    U32,
    /// 64-bit floats; NaN is null.
    F64,
    /// Text as codes into `categories`; code -1 is null.
    Categorical {
        /// The categories, sorted.
        categories: Vec<String>,
    },
    /// 64-bit integers; nullable ones carry a mask.
    Int {
        /// Whether any value may be null.
        nullable: bool,
    },
    /// Booleans; nullable ones carry a mask.
    Bool {
        /// Whether any value may be null.
        nullable: bool,
    },
}

/// The element type of one stored array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// Strings.
    Str,
    /// i32 (categorical codes).
    I32,
    /// u32.
    U32,
    /// i64.
    I64,
    /// f64.
    F64,
    /// bool.
    Bool,
}

impl ColumnKind {
    /// The arrays a column of this kind is stored as: each one's path below the
    /// column's own (`""` for the column itself) and its element type.
    pub fn arrays(&self) -> &'static [(&'static str, Elem)] {
        match self {
            ColumnKind::Str => &[("", Elem::Str)],
            ColumnKind::U32 => &[("", Elem::U32)],
            ColumnKind::F64 => &[("", Elem::F64)],
            ColumnKind::Categorical { .. } => &[("/codes", Elem::I32)],
            ColumnKind::Int { nullable: false } => &[("", Elem::I64)],
            ColumnKind::Int { nullable: true } => &[("/values", Elem::I64), ("/mask", Elem::Bool)],
            ColumnKind::Bool { nullable: false } => &[("", Elem::Bool)],
            ColumnKind::Bool { nullable: true } => {
                &[("/values", Elem::Bool), ("/mask", Elem::Bool)]
            }
        }
    }

    /// The AnnData attributes of the column's group, when it is one.
    pub fn group_attrs(&self) -> Option<Map<String, Json>> {
        let enc = |kind: &str, version: &str| {
            let mut m = Map::new();
            m.insert("encoding-type".into(), json!(kind));
            m.insert("encoding-version".into(), json!(version));
            m
        };
        match self {
            ColumnKind::Categorical { .. } => {
                let mut m = enc("categorical", "0.2.0");
                m.insert("ordered".into(), json!(false));
                Some(m)
            }
            ColumnKind::Int { nullable: true } => Some(enc("nullable-integer", "0.1.0")),
            ColumnKind::Bool { nullable: true } => Some(enc("nullable-boolean", "0.1.0")),
            _ => None,
        }
    }

    /// An empty column of this kind.
    pub fn empty(&self) -> ObsValues {
        match self {
            ColumnKind::Str => ObsValues::Str(Vec::new()),
            ColumnKind::U32 => ObsValues::U32(Vec::new()),
            ColumnKind::F64 => ObsValues::F64(Vec::new()),
            ColumnKind::Categorical { .. } => ObsValues::Codes(Vec::new()),
            ColumnKind::Int { nullable } => ObsValues::I64 {
                values: Vec::new(),
                mask: nullable.then(Vec::new),
            },
            ColumnKind::Bool { nullable } => ObsValues::Bool {
                values: Vec::new(),
                mask: nullable.then(Vec::new),
            },
        }
    }
}

/// One output obs column.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObsColumn {
    /// Its name in the output.
    pub name: String,
    /// The field it holds (`bundle.organ`, `cell.cell_type`).
    pub field: String,
    /// How it is stored.
    #[serde(flatten)]
    pub kind: ColumnKind,
}

impl ObsColumn {
    /// The field it holds.
    pub fn field(&self) -> Option<Field> {
        Field::parse(&self.field)
    }
}

/// One obs column's values for a run of rows.
#[derive(Debug, Clone, PartialEq)]
pub enum ObsValues {
    /// Text.
    Str(Vec<String>),
    /// u32.
    U32(Vec<u32>),
    /// f64 (NaN null).
    F64(Vec<f64>),
    /// Categorical codes (-1 null).
    Codes(Vec<i32>),
    /// i64, with the nulls' mask when nullable.
    I64 {
        /// The values (0 where null).
        values: Vec<i64>,
        /// True where null.
        mask: Option<Vec<bool>>,
    },
    /// Booleans, with the nulls' mask when nullable.
    Bool {
        /// The values (false where null).
        values: Vec<bool>,
        /// True where null.
        mask: Option<Vec<bool>>,
    },
}

/// One stored array's values.
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayValues<'a> {
    /// Strings.
    Str(&'a [String]),
    /// i32.
    I32(&'a [i32]),
    /// u32.
    U32(&'a [u32]),
    /// i64.
    I64(&'a [i64]),
    /// f64.
    F64(&'a [f64]),
    /// bool.
    Bool(&'a [bool]),
}

impl ObsValues {
    /// Rows.
    pub fn len(&self) -> usize {
        match self {
            ObsValues::Str(v) => v.len(),
            ObsValues::U32(v) => v.len(),
            ObsValues::F64(v) => v.len(),
            ObsValues::Codes(v) => v.len(),
            ObsValues::I64 { values, .. } => values.len(),
            ObsValues::Bool { values, .. } => values.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The arrays, in [`ColumnKind::arrays`]' order.
    pub fn arrays(&self) -> Vec<ArrayValues<'_>> {
        match self {
            ObsValues::Str(v) => vec![ArrayValues::Str(v)],
            ObsValues::U32(v) => vec![ArrayValues::U32(v)],
            ObsValues::F64(v) => vec![ArrayValues::F64(v)],
            ObsValues::Codes(v) => vec![ArrayValues::I32(v)],
            ObsValues::I64 { values, mask } => {
                let mut out = vec![ArrayValues::I64(values)];
                out.extend(mask.as_deref().map(ArrayValues::Bool));
                out
            }
            ObsValues::Bool { values, mask } => {
                let mut out = vec![ArrayValues::Bool(values)];
                out.extend(mask.as_deref().map(ArrayValues::Bool));
                out
            }
        }
    }

    /// Appends a value (a null as the kind stores one); `index` maps a categorical's
    /// values to their codes.
    pub fn push(&mut self, value: Value<'_>, index: Option<&BTreeMap<String, i32>>) {
        match self {
            ObsValues::Str(v) => v.push(match value {
                Value::Str(s) => s.to_string(),
                Value::Null => String::new(),
                Value::Num(x) => x.to_string(),
                Value::Bool(b) => b.to_string(),
            }),
            ObsValues::U32(v) => v.push(match value {
                Value::Num(x) => x as u32,
                _ => 0,
            }),
            ObsValues::F64(v) => v.push(match value {
                Value::Num(x) => x,
                _ => f64::NAN,
            }),
            ObsValues::Codes(v) => v.push(match value {
                Value::Str(s) => index.and_then(|i| i.get(s).copied()).unwrap_or(-1),
                _ => -1,
            }),
            ObsValues::I64 { values, mask } => {
                let x = match value {
                    Value::Num(x) => Some(x as i64),
                    _ => None,
                };
                values.push(x.unwrap_or(0));
                if let Some(m) = mask {
                    m.push(x.is_none());
                }
            }
            ObsValues::Bool { values, mask } => {
                let b = match value {
                    Value::Bool(b) => Some(b),
                    _ => None,
                };
                values.push(b.unwrap_or(false));
                if let Some(m) = mask {
                    m.push(b.is_none());
                }
            }
        }
    }
}

/// The value codes of a categorical kind, to [`ObsValues::push`] with.
pub fn category_index(kind: &ColumnKind) -> Option<BTreeMap<String, i32>> {
    match kind {
        ColumnKind::Categorical { categories } => Some(
            categories
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), i as i32))
                .collect(),
        ),
        _ => None,
    }
}

/// The kind of a built-in field's column: what it always was.
fn builtin_kind(field: &Field) -> Option<ColumnKind> {
    let b = field.as_builtin()?;
    Some(match (b.level, b.name) {
        (Level::Cell, "n_genes") => ColumnKind::U32,
        (Level::Cell, "total_counts" | "pct_mito") => ColumnKind::F64,
        _ => ColumnKind::Str,
    })
}

/// What the selected bundles hold of one field, gathered from their catalog entries.
#[derive(Default)]
struct Seen {
    types: Vec<FieldType>,
    nulls: bool,
    values: BTreeSet<String>,
    /// Some bundle's string values are not all listed.
    unlisted: bool,
}

impl Seen {
    fn add_type(&mut self, t: FieldType) {
        if !self.types.contains(&t) {
            self.types.push(t);
        }
    }
}

fn gather(field: &Field, bundles: &[(&Fqid, &CatalogEntry)]) -> Seen {
    let mut seen = Seen::default();
    for (fqid, entry) in bundles {
        match field.level() {
            Level::Bundle => match crate::catalog::bundle_field(fqid, &entry.metadata, field) {
                Value::Null => seen.nulls = true,
                _ => {
                    let scalar = entry.metadata.scalar(field.column());
                    if let Some(s) = scalar {
                        seen.add_type(s.field_type());
                        if let Scalar::Str(s) = s {
                            seen.values.insert(s);
                        }
                    }
                }
            },
            Level::Cell => match entry
                .cell_fields
                .as_ref()
                .and_then(|f| f.get(field.column()))
            {
                None => seen.nulls = seen.nulls || entry.n_cells > 0,
                Some(stats) => {
                    seen.add_type(stats.field_type);
                    seen.nulls |= stats.nulls > 0;
                    if stats.field_type == FieldType::String {
                        match &stats.values {
                            Some(v) => seen.values.extend(v.keys().cloned()),
                            None => seen.unlisted = true,
                        }
                    }
                }
            },
        }
        if seen.values.len() > MAX_CATEGORIES {
            seen.unlisted = true;
        }
    }
    seen
}

/// The kind of an open field's column over `bundles`.
pub fn kind_of(field: &Field, bundles: &[(&Fqid, &CatalogEntry)]) -> ColumnKind {
    if let Some(kind) = builtin_kind(field) {
        return kind;
    }
    let seen = gather(field, bundles);
    let joined = FieldType::join_all(&seen.types);
    let types = &seen.types;
    match joined {
        // Present nowhere: a column of nulls.
        None if types.is_empty() => ColumnKind::Categorical {
            categories: Vec::new(),
        },
        None => ColumnKind::Str,
        Some(FieldType::String) if !seen.unlisted => ColumnKind::Categorical {
            categories: seen.values.into_iter().collect(),
        },
        Some(FieldType::String) => ColumnKind::Str,
        Some(FieldType::Integer) => ColumnKind::Int {
            nullable: seen.nulls,
        },
        Some(FieldType::Number) => ColumnKind::F64,
        Some(FieldType::Boolean) => ColumnKind::Bool {
            nullable: seen.nulls,
        },
    }
}

/// The output columns of `fields` over `bundles`, named by their column name; a name
/// both levels use is given to the cell field, the bundle's becoming `bundle_<name>`.
pub fn columns(fields: &[Field], bundles: &[(&Fqid, &CatalogEntry)]) -> Vec<ObsColumn> {
    fields
        .iter()
        .map(|f| {
            let clash = f.level() == Level::Bundle
                && fields
                    .iter()
                    .any(|g| g.level() == Level::Cell && g.column() == f.column());
            ObsColumn {
                name: if clash {
                    format!("bundle_{}", f.column())
                } else {
                    f.column().to_string()
                },
                field: f.name(),
                kind: kind_of(f, bundles),
            }
        })
        .collect()
}

/// The columns of the built-in `fields`, for a request stored before columns were.
pub fn builtin_columns(fields: &[Field]) -> Vec<ObsColumn> {
    columns(fields, &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::stats::FieldStats;

    fn entry(meta: &[(&str, Scalar)], cells: &[(&str, FieldStats)]) -> CatalogEntry {
        let mut e: CatalogEntry = serde_json::from_value(json!({
            "n_cells": 3, "n_features": 1, "nnz": 0, "value_type": "uint32",
            "rows_per_chunk": 1024, "chunk_offsets": [0, 0], "feature_set": "f",
            "stored_bytes": 0, "content_digest": "d", "metadata": {}
        }))
        .unwrap();
        for (k, v) in meta {
            e.metadata.set(k, v.clone());
        }
        e.cell_fields = Some(
            cells
                .iter()
                .map(|(k, s)| (k.to_string(), s.clone()))
                .collect(),
        );
        e
    }

    fn strings(values: &[&str], nulls: u64) -> FieldStats {
        FieldStats {
            field_type: FieldType::String,
            nulls,
            min: None,
            max: None,
            values: Some(values.iter().map(|v| (v.to_string(), 1)).collect()),
        }
    }

    #[test]
    fn kinds_over_bundles() {
        let a =
            Fqid::parse("0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z").unwrap();
        let e1 = entry(
            &[("age", Scalar::Int(3)), ("ok", Scalar::Bool(true))],
            &[("cell_type", strings(&["T", "B"], 0))],
        );
        let e2 = entry(
            &[("age", Scalar::Num(2.5))],
            &[("cell_type", strings(&["NK"], 1))],
        );
        let both = [(&a, &e1), (&a, &e2)];
        let f = |n: &str| Field::parse(n).unwrap();
        assert_eq!(
            kind_of(&f("cell.cell_type"), &both),
            ColumnKind::Categorical {
                categories: vec!["B".into(), "NK".into(), "T".into()]
            }
        );
        assert_eq!(kind_of(&f("bundle.age"), &both), ColumnKind::F64);
        assert_eq!(
            kind_of(&f("bundle.age"), &both[..1]),
            ColumnKind::Int { nullable: false }
        );
        assert_eq!(
            kind_of(&f("bundle.ok"), &both),
            ColumnKind::Bool { nullable: true }
        );
        assert_eq!(kind_of(&f("cell.n_genes"), &both), ColumnKind::U32);
        assert_eq!(kind_of(&f("bundle.organ"), &both), ColumnKind::Str);
        let cols = columns(&[f("bundle.age"), f("cell.age")], &both);
        assert_eq!(cols[0].name, "bundle_age");
        assert_eq!(cols[1].name, "age");
        let text = serde_json::to_string(&cols[0]).unwrap();
        assert_eq!(
            text,
            r#"{"name":"bundle_age","field":"bundle.age","kind":"f64"}"#
        );
        assert_eq!(serde_json::from_str::<ObsColumn>(&text).unwrap(), cols[0]);
    }

    #[test]
    fn values_push_and_print() {
        let kind = ColumnKind::Categorical {
            categories: vec!["a".into(), "b".into()],
        };
        let index = category_index(&kind);
        let mut v = kind.empty();
        v.push(Value::Str("b"), index.as_ref());
        v.push(Value::Null, index.as_ref());
        assert_eq!(v, ObsValues::Codes(vec![1, -1]));
        let kind = ColumnKind::Int { nullable: true };
        let mut i = kind.empty();
        i.push(Value::Num(4.0), None);
        i.push(Value::Null, None);
        assert_eq!(i.arrays().len(), 2);
        assert_eq!(
            i,
            ObsValues::I64 {
                values: vec![4, 0],
                mask: Some(vec![false, true])
            }
        );
    }
}
