//! Fields: the names a request filters on and selects as obs columns, their types, and
//! the values a bundle or a cell has for them.
//!
//! A field is `bundle.<name>` (one value per bundle: its metadata) or `cell.<name>` (one
//! value per cell: an obs column). Ten are built in and mean the same in every bundle;
//! any other name is whatever the ingested inputs called it, normalised by
//! [`normalise`]. Any value may be missing (null).

pub mod column;
pub mod stats;

use std::collections::BTreeMap;
use std::fmt;

/// Longest field name, after normalisation.
pub const MAX_NAME_CHARS: usize = 64;

/// The prefix a source column gets when its name is that of a built-in field, which it
/// may not overwrite: an h5ad's own `n_genes` is kept as `input_n_genes`.
pub const SHADOWED_PREFIX: &str = "input_";

/// Which level a field is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// One value per bundle.
    Bundle,
    /// One value per cell.
    Cell,
}

impl Level {
    /// `"bundle"` or `"cell"`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Bundle => "bundle",
            Level::Cell => "cell",
        }
    }
}

/// The type of a field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// Text, compared exactly; categorical in outputs when it has few distinct values.
    String,
    /// A whole number.
    Integer,
    /// A real number; NaN is null.
    Number,
    /// True or false.
    Boolean,
}

impl FieldType {
    /// The type's name, as the API writes it.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
        }
    }

    /// The type both `self` and `other` fit: integers widen to numbers; otherwise
    /// `None`, a field whose type differs between bundles.
    pub fn join(self, other: FieldType) -> Option<FieldType> {
        match (self, other) {
            (a, b) if a == b => Some(a),
            (FieldType::Integer, FieldType::Number) | (FieldType::Number, FieldType::Integer) => {
                Some(FieldType::Number)
            }
            _ => None,
        }
    }

    /// The type all of `types` fit ([`FieldType::join`] over them); `None` when there
    /// are none, or when they disagree.
    pub fn join_all(types: &[FieldType]) -> Option<FieldType> {
        let (first, rest) = types.split_first()?;
        rest.iter().try_fold(*first, |acc, &t| acc.join(t))
    }
}

/// A built-in field: its level, name, type and meaning.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Its level.
    pub level: Level,
    /// Its name, without the level.
    pub name: &'static str,
    /// Its type.
    pub field_type: FieldType,
    /// One line for `GET /v1/fields`.
    pub description: &'static str,
}

/// The ten built-in fields, bundle fields first: the default obs columns, in order.
pub const BUILTINS: [Builtin; 10] = [
    b(
        Level::Bundle,
        "project",
        FieldType::String,
        "Project (study) name or id of the bundle",
    ),
    b(
        Level::Bundle,
        "organ",
        FieldType::String,
        "Organ or tissue of the bundle's sample",
    ),
    b(
        Level::Bundle,
        "species",
        FieldType::String,
        "Species of the bundle's donor",
    ),
    b(
        Level::Bundle,
        "assay",
        FieldType::String,
        "Assay of the bundle (10x, smartseq2, ...)",
    ),
    b(
        Level::Bundle,
        "donor",
        FieldType::String,
        "Donor id of the bundle",
    ),
    b(
        Level::Bundle,
        "fqid",
        FieldType::String,
        "Fully qualified bundle id, uuid.version",
    ),
    b(
        Level::Cell,
        "n_genes",
        FieldType::Integer,
        "Number of genes with a nonzero count in the cell",
    ),
    b(
        Level::Cell,
        "total_counts",
        FieldType::Number,
        "Sum of the cell's counts",
    ),
    b(
        Level::Cell,
        "pct_mito",
        FieldType::Number,
        "Percentage (0-100) of the cell's counts in genes named MT-*; 0 for an empty cell",
    ),
    b(
        Level::Cell,
        "barcode",
        FieldType::String,
        "Cell barcode (cell id) within its bundle",
    ),
];

const fn b(
    level: Level,
    name: &'static str,
    field_type: FieldType,
    description: &'static str,
) -> Builtin {
    Builtin {
        level,
        name,
        field_type,
        description,
    }
}

/// A field: a level and a normalised name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Field {
    level: Level,
    name: String,
}

impl Field {
    /// The field `level.name`; `name` must already be normalised (see [`is_normal`]).
    pub fn new(level: Level, name: &str) -> Option<Field> {
        is_normal(name).then(|| Field {
            level,
            name: name.to_string(),
        })
    }

    /// A built-in field.
    pub fn builtin(b: &Builtin) -> Field {
        Field {
            level: b.level,
            name: b.name.to_string(),
        }
    }

    /// The ten built-in fields, in [`BUILTINS`]' order.
    pub fn defaults() -> Vec<Field> {
        BUILTINS.iter().map(Field::builtin).collect()
    }

    /// The field a qualified name (`bundle.organ`, `cell.cell_type`) names; `None` when
    /// the level is missing or the name is not normalised.
    pub fn parse(qualified: &str) -> Option<Field> {
        let (level, name) = qualified.split_once('.')?;
        let level = match level {
            "bundle" => Level::Bundle,
            "cell" => Level::Cell,
            _ => return None,
        };
        Field::new(level, name)
    }

    /// The field's level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The name without its level: the obs column's name.
    pub fn column(&self) -> &str {
        &self.name
    }

    /// `level.name`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.level.name(), self.name)
    }

    /// The built-in field this is, if any.
    pub fn as_builtin(&self) -> Option<&'static Builtin> {
        BUILTINS
            .iter()
            .find(|b| b.level == self.level && b.name == self.name)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.level.name(), self.name)
    }
}

/// Whether `name` is a normalised field name: `[a-z][a-z0-9_]*`, at most
/// [`MAX_NAME_CHARS`] characters.
pub fn is_normal(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= MAX_NAME_CHARS
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

/// The normalised form of a source's column or key name: lower case, every character
/// outside `[a-z0-9_]` made `_`, an `x` in front when it would not start with a letter,
/// cut to [`MAX_NAME_CHARS`] characters. `Cell Type` and `cell_type` both become
/// `cell_type`; the ingest refuses an input where two names meet like that.
pub fn normalise(source: &str) -> String {
    let mut out: String = source
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert(0, 'x');
    }
    out.truncate(MAX_NAME_CHARS);
    out
}

/// The name a source column is stored under at `level`: normalised, and prefixed with
/// [`SHADOWED_PREFIX`] when that would be the name of a field the service computes (the
/// cells' QC and barcode, the bundle's id). The flag says it was. The bundle's five
/// descriptive built-ins (project, organ, ...) are what a sidecar sets, so not shadowed.
pub fn stored_name(level: Level, source: &str) -> (String, bool) {
    let name = normalise(source);
    let builtin = match level {
        Level::Bundle => name == "fqid",
        Level::Cell => BUILTINS.iter().any(|b| b.level == level && b.name == name),
    };
    if builtin {
        let mut prefixed = format!("{SHADOWED_PREFIX}{name}");
        prefixed.truncate(MAX_NAME_CHARS);
        (prefixed, true)
    } else {
        (name, false)
    }
}

/// Maps source names to stored names, refusing two that meet: the error names both.
pub fn stored_names<'a>(
    level: Level,
    sources: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<(String, bool)>, String> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    let mut out = Vec::new();
    for source in sources {
        let (name, shadowed) = stored_name(level, source);
        if let Some(first) = seen.insert(name.clone(), source) {
            return Err(format!(
                "{} fields {first:?} and {source:?} both become {}.{name}; rename one",
                level.name(),
                level.name()
            ));
        }
        out.push((name, shadowed));
    }
    Ok(out)
}

/// A present value of a field.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A real number (never NaN: NaN is null).
    Num(f64),
    /// Text.
    Str(String),
}

impl Scalar {
    /// The type of the value.
    pub fn field_type(&self) -> FieldType {
        match self {
            Scalar::Bool(_) => FieldType::Boolean,
            Scalar::Int(_) => FieldType::Integer,
            Scalar::Num(_) => FieldType::Number,
            Scalar::Str(_) => FieldType::String,
        }
    }

    /// The value, borrowed.
    pub fn as_value(&self) -> Value<'_> {
        match self {
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Int(i) => Value::Num(*i as f64),
            Scalar::Num(x) => Value::num(*x),
            Scalar::Str(s) => Value::Str(s),
        }
    }

    /// The value as text, as the text formats write it.
    pub fn to_text(&self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Num(x) => x.to_string(),
            Scalar::Str(s) => s.clone(),
        }
    }
}

/// A value as the filter compares it: numbers of either kind as f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// Missing.
    Null,
    /// Text.
    Str(&'a str),
    /// A number (never NaN).
    Num(f64),
    /// A boolean.
    Bool(bool),
}

impl Value<'_> {
    /// A number, null when NaN.
    pub fn num(x: f64) -> Value<'static> {
        if x.is_nan() {
            Value::Null
        } else {
            Value::Num(x)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise_and_parse() {
        assert_eq!(normalise("Cell Type"), "cell_type");
        assert_eq!(normalise("cell-type"), "cell_type");
        assert_eq!(normalise("_index"), "x_index");
        assert_eq!(normalise("1st"), "x1st");
        assert_eq!(normalise(""), "x");
        assert_eq!(normalise("Größe"), "gr__e");
        assert_eq!(normalise(&"a".repeat(100)).len(), MAX_NAME_CHARS);
        for s in ["Cell Type", "_", "9", "ÄÖ", "a.b"] {
            assert!(is_normal(&normalise(s)), "{s}");
        }
        assert_eq!(
            Field::parse("cell.cell_type").map(|f| f.to_string()),
            Some("cell.cell_type".into())
        );
        assert_eq!(Field::parse("cell.Cell"), None);
        assert_eq!(Field::parse("obs.x"), None);
        assert_eq!(Field::parse("cell_type"), None);
        assert!(
            Field::parse("cell.n_genes").and_then(|f| f.as_builtin().map(|b| b.field_type))
                == Some(FieldType::Integer)
        );
        assert_eq!(Field::defaults().len(), 10);
    }

    #[test]
    fn builtins_are_not_overwritten_and_collisions_are_named() {
        assert_eq!(
            stored_name(Level::Cell, "n_genes"),
            ("input_n_genes".into(), true)
        );
        assert_eq!(
            stored_name(Level::Bundle, "n_genes"),
            ("n_genes".into(), false)
        );
        assert_eq!(stored_name(Level::Bundle, "Organ"), ("organ".into(), false));
        assert_eq!(
            stored_name(Level::Bundle, "fqid"),
            ("input_fqid".into(), true)
        );
        let err = stored_names(Level::Cell, ["Cell Type", "x", "cell_type"]).unwrap_err();
        assert!(
            err.contains("\"Cell Type\"") && err.contains("\"cell_type\""),
            "{err}"
        );
    }

    #[test]
    fn scalars_keep_their_json_type() {
        let v: Vec<Scalar> = serde_json::from_str(r#"[true, 3, 2.5, "x", 4.0]"#).unwrap();
        assert_eq!(
            v,
            vec![
                Scalar::Bool(true),
                Scalar::Int(3),
                Scalar::Num(2.5),
                Scalar::Str("x".into()),
                Scalar::Num(4.0)
            ]
        );
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"[true,3,2.5,"x",4.0]"#
        );
        assert_eq!(
            FieldType::Integer.join(FieldType::Number),
            Some(FieldType::Number)
        );
        assert_eq!(FieldType::Integer.join(FieldType::String), None);
    }
}
