//! The filter tree of a matrix request: which bundles, and which cells in them, go into
//! the result.
//!
//! A filter arrives as JSON (see [`Filter::parse`]), is validated once, and is then
//! evaluated twice: on bundle metadata alone, so that whole bundles can be skipped or
//! taken without reading their cells ([`Filter::eval_bundle`]), and per cell
//! ([`Filter::eval_cell`]). The two evaluations share one comparison function, which is
//! what keeps them consistent.
//!
//! [`Filter::to_json`] gives the canonical form that the request id is hashed from.

use std::fmt;

use serde_json::{Map, Value};

/// Deepest nesting accepted; the root is at depth 1.
const MAX_DEPTH: usize = 32;
/// Most nodes (logic nodes and comparisons) accepted in one tree.
const MAX_NODES: usize = 1000;
/// Most literals accepted in one `in` list.
const MAX_IN_VALUES: usize = 10_000;
/// User text quoted in an error is cut to this many characters, to keep messages short.
const QUOTE_CHARS: usize = 64;

/// A field a filter can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// A field of the bundle metadata, the same for every cell of a bundle.
    Bundle(BundleField),
    /// A per-cell field, from the `obs` table of a bundle.
    Cell(CellField),
}

/// Fields of the bundle metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BundleField {
    /// `bundle.project`.
    Project,
    /// `bundle.organ`.
    Organ,
    /// `bundle.species`.
    Species,
    /// `bundle.assay`.
    Assay,
    /// `bundle.donor`.
    Donor,
    /// `bundle.fqid`, the bundle id.
    Fqid,
}

/// Per-cell fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CellField {
    /// `cell.n_genes`.
    NGenes,
    /// `cell.total_counts`.
    TotalCounts,
    /// `cell.pct_mito`.
    PctMito,
    /// `cell.barcode`.
    Barcode,
}

/// The type of the values of a field, which decides the operators and literals it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// Compared exactly with `=`, `!=` and `in`.
    String,
    /// A whole number; compared as f64 with every operator.
    Integer,
    /// A real number; compared as f64 with every operator.
    Number,
}

impl Field {
    /// Every field, bundle fields first, in the order `GET /v1/fields` lists them.
    pub const ALL: [Field; 10] = [
        Field::Bundle(BundleField::Project),
        Field::Bundle(BundleField::Organ),
        Field::Bundle(BundleField::Species),
        Field::Bundle(BundleField::Assay),
        Field::Bundle(BundleField::Donor),
        Field::Bundle(BundleField::Fqid),
        Field::Cell(CellField::NGenes),
        Field::Cell(CellField::TotalCounts),
        Field::Cell(CellField::PctMito),
        Field::Cell(CellField::Barcode),
    ];

    /// The field named `name` (`"bundle.project"`, `"cell.n_genes"`, ...), if any.
    pub fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The name used in requests, e.g. `"bundle.project"`.
    pub fn name(self) -> &'static str {
        match self {
            Field::Bundle(BundleField::Project) => "bundle.project",
            Field::Bundle(BundleField::Organ) => "bundle.organ",
            Field::Bundle(BundleField::Species) => "bundle.species",
            Field::Bundle(BundleField::Assay) => "bundle.assay",
            Field::Bundle(BundleField::Donor) => "bundle.donor",
            Field::Bundle(BundleField::Fqid) => "bundle.fqid",
            Field::Cell(CellField::NGenes) => "cell.n_genes",
            Field::Cell(CellField::TotalCounts) => "cell.total_counts",
            Field::Cell(CellField::PctMito) => "cell.pct_mito",
            Field::Cell(CellField::Barcode) => "cell.barcode",
        }
    }

    /// The column name in the output `obs` table: the name without its `bundle.` or
    /// `cell.` prefix, e.g. `"project"`, `"n_genes"`.
    pub fn column(self) -> &'static str {
        let name = self.name();
        // Every name has exactly one dot, so the fallback is never taken.
        name.split_once('.').map_or(name, |(_, column)| column)
    }

    /// The type of the field's values.
    pub fn field_type(self) -> FieldType {
        match self {
            Field::Bundle(_) | Field::Cell(CellField::Barcode) => FieldType::String,
            Field::Cell(CellField::NGenes) => FieldType::Integer,
            Field::Cell(CellField::TotalCounts | CellField::PctMito) => FieldType::Number,
        }
    }

    /// One line describing the field, for `GET /v1/fields`.
    pub fn description(self) -> &'static str {
        match self {
            Field::Bundle(BundleField::Project) => {
                "Project (study) name or id of the bundle; \"\" when not recorded"
            }
            Field::Bundle(BundleField::Organ) => {
                "Organ or tissue of the bundle's sample; \"\" when not recorded"
            }
            Field::Bundle(BundleField::Species) => {
                "Species of the bundle's donor; \"\" when not recorded"
            }
            Field::Bundle(BundleField::Assay) => {
                "Assay of the bundle (10x, smartseq2, ...); \"\" when not recorded"
            }
            Field::Bundle(BundleField::Donor) => "Donor id of the bundle; \"\" when not recorded",
            Field::Bundle(BundleField::Fqid) => "Fully qualified bundle id, uuid.version",
            Field::Cell(CellField::NGenes) => "Number of genes with a nonzero count in the cell",
            Field::Cell(CellField::TotalCounts) => "Sum of the cell's counts",
            Field::Cell(CellField::PctMito) => {
                "Percentage (0-100) of the cell's counts in genes named MT-*; 0 for an empty cell"
            }
            Field::Cell(CellField::Barcode) => "Cell barcode (cell id) within its bundle",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `=`.
    Eq,
    /// `!=`, the negation of `=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

impl CmpOp {
    const ALL: [CmpOp; 6] = [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ];

    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A literal a field is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// For string fields.
    Str(String),
    /// For numeric fields; always finite in a parsed filter.
    Num(f64),
}

impl Literal {
    fn to_json(&self) -> Value {
        match self {
            Literal::Str(s) => Value::String(s.clone()),
            // A non-finite number cannot come from `parse`; it becomes null, which
            // `parse` then rejects rather than silently matching something.
            Literal::Num(x) => Value::from(*x),
        }
    }
}

/// A filter tree.
///
/// Trees from [`Filter::parse`] are valid: operators and literals fit their fields, and
/// the limits on depth and size hold. A tree built by hand may break these rules; it is
/// still evaluated (a comparison the parser would reject is false, its `!=` true), but
/// its [`Filter::to_json`] may not parse back.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// True when every child is.
    And(Vec<Filter>),
    /// True when any child is.
    Or(Vec<Filter>),
    /// True when the child is not.
    Not(Box<Filter>),
    /// `field op value`.
    Cmp {
        /// The field tested.
        field: Field,
        /// How it is compared.
        op: CmpOp,
        /// What it is compared with.
        value: Literal,
    },
    /// True when `field` equals any of `values`.
    In {
        /// The field tested.
        field: Field,
        /// The accepted values, as given (order and duplicates kept).
        values: Vec<Literal>,
    },
}

/// The cell-level values a cell is tested on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellValues<'a> {
    /// `cell.n_genes`.
    pub n_genes: u64,
    /// `cell.total_counts`.
    pub total_counts: f64,
    /// `cell.pct_mito`.
    pub pct_mito: f64,
    /// `cell.barcode`.
    pub barcode: &'a str,
}

/// A field's value, borrowed or owned, ready to compare with a literal.
enum Actual<'a> {
    Str(std::borrow::Cow<'a, str>),
    Num(f64),
}

/// The one comparison both evaluations use, so that they cannot disagree.
fn compare(actual: &Actual<'_>, op: CmpOp, literal: &Literal) -> bool {
    match (actual, literal) {
        (Actual::Str(a), Literal::Str(b)) => match op {
            CmpOp::Eq => a.as_ref() == b.as_str(),
            CmpOp::Ne => a.as_ref() != b.as_str(),
            // Strings have no order in the filter language.
            CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => false,
        },
        (Actual::Num(a), Literal::Num(b)) => match op {
            CmpOp::Eq => a == b,
            // Written as a negation so that NaN, equal to nothing, is unequal to everything.
            CmpOp::Ne => !(a == b),
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        },
        // A type mismatch never holds; `!=` stays the negation of `=`.
        _ => op == CmpOp::Ne,
    }
}

fn in_list(actual: &Actual<'_>, values: &[Literal]) -> bool {
    values.iter().any(|v| compare(actual, CmpOp::Eq, v))
}

fn cell_actual<'a>(field: CellField, cell: &CellValues<'a>) -> Actual<'a> {
    match field {
        // Every u64 count that occurs in practice is exact in f64.
        CellField::NGenes => Actual::Num(cell.n_genes as f64),
        CellField::TotalCounts => Actual::Num(cell.total_counts),
        CellField::PctMito => Actual::Num(cell.pct_mito),
        CellField::Barcode => Actual::Str(std::borrow::Cow::Borrowed(cell.barcode)),
    }
}

/// The operator of a node, as the JSON names it.
#[derive(Clone, Copy)]
enum Op {
    And,
    Or,
    Not,
    Cmp(CmpOp),
    In,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        match s {
            "and" => Some(Op::And),
            "or" => Some(Op::Or),
            "not" => Some(Op::Not),
            "in" => Some(Op::In),
            _ => CmpOp::ALL
                .into_iter()
                .find(|c| c.symbol() == s)
                .map(Op::Cmp),
        }
    }

    fn keys(self) -> &'static [&'static str] {
        match self {
            Op::And | Op::Or | Op::Not => &["op", "value"],
            Op::Cmp(_) | Op::In => &["op", "field", "value"],
        }
    }
}

const OPS_LIST: &str = "and, or, not, =, !=, <, <=, >, >=, in";

/// `s` quoted as a one-line string literal, cut if long; for error messages.
fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE_CHARS) {
        Some((at, _)) => format!("{:?}...", &s[..at]),
        None => format!("{s:?}"),
    }
}

/// What kind of JSON value `v` is, with an article, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn known_fields() -> String {
    Field::ALL.map(Field::name).join(", ")
}

/// Walks the JSON, counting nodes across the whole tree.
struct Parser {
    nodes: usize,
}

impl Parser {
    fn node(&mut self, v: &Value, path: &str, depth: usize) -> Result<Filter, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "{path}: filter nested deeper than {MAX_DEPTH} levels"
            ));
        }
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(format!("{path}: filter has more than {MAX_NODES} nodes"));
        }
        let Value::Object(obj) = v else {
            return Err(format!(
                "{path}: expected a filter node (an object with \"op\"), got {}",
                kind(v)
            ));
        };
        let op = match obj.get("op") {
            None => return Err(format!("{path}: missing \"op\"")),
            Some(Value::String(s)) => Op::parse(s).ok_or_else(|| {
                format!(
                    "{path}.op: unknown operator {} (expected one of {OPS_LIST})",
                    quote(s)
                )
            })?,
            Some(other) => {
                return Err(format!(
                    "{path}.op: expected a string (one of {OPS_LIST}), got {}",
                    kind(other)
                ));
            }
        };
        let allowed = op.keys();
        if let Some(key) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "{path}: unknown key {} (a node with this \"op\" takes {})",
                quote(key),
                allowed.join(", ")
            ));
        }
        let value = obj
            .get("value")
            .ok_or_else(|| format!("{path}: missing \"value\""))?;
        match op {
            Op::And | Op::Or => {
                let Value::Array(items) = value else {
                    return Err(format!(
                        "{path}.value: expected an array of filter nodes, got {}",
                        kind(value)
                    ));
                };
                if items.is_empty() {
                    return Err(format!(
                        "{path}.value: empty list; \"and\" and \"or\" need at least one node"
                    ));
                }
                let children = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.node(item, &format!("{path}.value[{i}]"), depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(match op {
                    Op::And => Filter::And(children),
                    _ => Filter::Or(children),
                })
            }
            Op::Not => {
                let child = match value {
                    Value::Array(items) if items.len() == 1 => {
                        self.node(&items[0], &format!("{path}.value[0]"), depth + 1)?
                    }
                    Value::Array(items) => {
                        return Err(format!(
                            "{path}.value: \"not\" takes exactly one node, got {}",
                            items.len()
                        ));
                    }
                    Value::Object(_) => self.node(value, &format!("{path}.value"), depth + 1)?,
                    other => {
                        return Err(format!(
                            "{path}.value: expected a filter node or a list of one, got {}",
                            kind(other)
                        ));
                    }
                };
                Ok(Filter::Not(Box::new(child)))
            }
            Op::Cmp(cmp) => {
                let field = parse_field(obj.get("field"), path)?;
                let ty = field.field_type();
                if ty == FieldType::String && !matches!(cmp, CmpOp::Eq | CmpOp::Ne) {
                    return Err(format!(
                        "{path}.op: operator \"{}\" does not apply to string field {field} (use =, != or in)",
                        cmp.symbol()
                    ));
                }
                let value = literal(value, field, &format!("{path}.value"))?;
                Ok(Filter::Cmp {
                    field,
                    op: cmp,
                    value,
                })
            }
            Op::In => {
                let field = parse_field(obj.get("field"), path)?;
                let Value::Array(items) = value else {
                    return Err(format!(
                        "{path}.value: \"in\" takes a list of literals, got {}",
                        kind(value)
                    ));
                };
                if items.is_empty() {
                    return Err(format!(
                        "{path}.value: empty list; \"in\" needs at least one value"
                    ));
                }
                if items.len() > MAX_IN_VALUES {
                    return Err(format!(
                        "{path}.value: {} values; \"in\" takes at most {MAX_IN_VALUES}",
                        items.len()
                    ));
                }
                let values = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| literal(item, field, &format!("{path}.value[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Filter::In { field, values })
            }
        }
    }
}

fn parse_field(v: Option<&Value>, path: &str) -> Result<Field, String> {
    match v {
        None => Err(format!("{path}: missing \"field\"")),
        Some(Value::String(s)) => Field::parse(s).ok_or_else(|| {
            format!(
                "{path}.field: unknown field {} (known: {})",
                quote(s),
                known_fields()
            )
        }),
        Some(other) => Err(format!(
            "{path}.field: expected a field name (a string), got {}",
            kind(other)
        )),
    }
}

/// A literal for `field`, checked against its type.
fn literal(v: &Value, field: Field, path: &str) -> Result<Literal, String> {
    match (field.field_type(), v) {
        (FieldType::String, Value::String(s)) => Ok(Literal::Str(s.clone())),
        (FieldType::String, other) => Err(format!(
            "{path}: {field} is a string field, so the value must be a string, got {}",
            kind(other)
        )),
        (FieldType::Integer | FieldType::Number, Value::Number(n)) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(Literal::Num(x)),
            _ => Err(format!("{path}: {n} is not a finite number")),
        },
        (FieldType::Integer | FieldType::Number, other) => Err(format!(
            "{path}: {field} is a numeric field, so the value must be a number, got {}",
            kind(other)
        )),
    }
}

/// A JSON object with the given keys in the given order.
fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let mut map = Map::new();
    for (k, v) in entries {
        map.insert(k.to_string(), v);
    }
    Value::Object(map)
}

impl Filter {
    /// Parses and validates; the error is a one-line message that names the path of the bad node,
    /// e.g. `filter.value[1].op: unknown operator "~" (expected one of and, or, not, =, !=, <, <=, >, >=, in)`
    /// or `filter.value[0].field: unknown field "cell.foo" (known: bundle.project, ...)`.
    ///
    /// Paths start at `filter`; the child of a `not` given as a bare object is at
    /// `….value`, given as a list at `….value[0]`. Limits: depth 32 (the root is depth
    /// 1), 1,000 nodes in all, 10,000 values per `in`.
    pub fn parse(v: &Value) -> Result<Filter, String> {
        Parser { nodes: 0 }.node(v, "filter", 1)
    }

    /// Canonical JSON: same shape as the input, keys in a fixed order, numbers as given (f64), so two
    /// requests that mean the same tree in the same order hash the same. (Do not reorder children.)
    ///
    /// Keys are written in alphabetical order (`field`, `op`, `value`), so the serialized
    /// text is the same whether or not serde_json keeps insertion order. A `not` always
    /// gets the list form `[child]`; numbers are always floats (`5` becomes `5.0`).
    pub fn to_json(&self) -> Value {
        let logic = |op: &str, children: &[Filter]| {
            object([
                ("op", Value::from(op)),
                (
                    "value",
                    Value::Array(children.iter().map(Filter::to_json).collect()),
                ),
            ])
        };
        match self {
            Filter::And(children) => logic("and", children),
            Filter::Or(children) => logic("or", children),
            Filter::Not(child) => logic("not", std::slice::from_ref(child.as_ref())),
            Filter::Cmp { field, op, value } => object([
                ("field", Value::from(field.name())),
                ("op", Value::from(op.symbol())),
                ("value", value.to_json()),
            ]),
            Filter::In { field, values } => object([
                ("field", Value::from(field.name())),
                ("op", Value::from("in")),
                (
                    "value",
                    Value::Array(values.iter().map(Literal::to_json).collect()),
                ),
            ]),
        }
    }

    /// Three-valued evaluation on bundle metadata only: Some(true)/Some(false) when the bundle-level
    /// fields decide it whatever the cells hold, None when it depends on cell fields. Kleene logic:
    /// and = false if any child false, true if all true, else None; or dual; not(None)=None.
    ///
    /// `None` is conservative: a tree like `x < 5 or not x < 5` gets `None` although it
    /// holds for every cell. Every child is looked at (no early exit on `None`), since a
    /// later `false` still decides an `and`.
    pub fn eval_bundle(&self, bundle: &dyn Fn(BundleField) -> String) -> Option<bool> {
        match self {
            Filter::And(children) => {
                let mut all_true = true;
                for c in children {
                    match c.eval_bundle(bundle) {
                        Some(false) => return Some(false),
                        Some(true) => {}
                        None => all_true = false,
                    }
                }
                all_true.then_some(true)
            }
            Filter::Or(children) => {
                let mut all_false = true;
                for c in children {
                    match c.eval_bundle(bundle) {
                        Some(true) => return Some(true),
                        Some(false) => {}
                        None => all_false = false,
                    }
                }
                all_false.then_some(false)
            }
            Filter::Not(child) => child.eval_bundle(bundle).map(|b| !b),
            Filter::Cmp { field, op, value } => match field {
                Field::Bundle(f) => Some(compare(&bundle_actual(*f, bundle), *op, value)),
                Field::Cell(_) => None,
            },
            Filter::In { field, values } => match field {
                Field::Bundle(f) => Some(in_list(&bundle_actual(*f, bundle), values)),
                Field::Cell(_) => None,
            },
        }
    }

    /// Whether a cell passes: every field known.
    ///
    /// `bundle` is called once per bundle-field comparison reached, for every cell; a
    /// caller filtering many cells should first settle the bundle with
    /// [`Filter::eval_bundle`] and call this only when that gives `None`.
    pub fn eval_cell(&self, bundle: &dyn Fn(BundleField) -> String, cell: &CellValues<'_>) -> bool {
        match self {
            Filter::And(children) => children.iter().all(|c| c.eval_cell(bundle, cell)),
            Filter::Or(children) => children.iter().any(|c| c.eval_cell(bundle, cell)),
            Filter::Not(child) => !child.eval_cell(bundle, cell),
            Filter::Cmp { field, op, value } => {
                compare(&field_actual(*field, bundle, cell), *op, value)
            }
            Filter::In { field, values } => in_list(&field_actual(*field, bundle, cell), values),
        }
    }

    /// Whether any cell-level field occurs in the tree.
    pub fn uses_cell_fields(&self) -> bool {
        match self {
            Filter::And(children) | Filter::Or(children) => {
                children.iter().any(Filter::uses_cell_fields)
            }
            Filter::Not(child) => child.uses_cell_fields(),
            Filter::Cmp { field, .. } | Filter::In { field, .. } => {
                matches!(field, Field::Cell(_))
            }
        }
    }
}

fn bundle_actual(field: BundleField, bundle: &dyn Fn(BundleField) -> String) -> Actual<'static> {
    Actual::Str(std::borrow::Cow::Owned(bundle(field)))
}

fn field_actual<'a>(
    field: Field,
    bundle: &dyn Fn(BundleField) -> String,
    cell: &CellValues<'a>,
) -> Actual<'a> {
    match field {
        Field::Bundle(f) => bundle_actual(f, bundle),
        Field::Cell(f) => cell_actual(f, cell),
    }
}

/// A bundle-level field's value for the filter and the obs columns; missing metadata is
/// the empty string.
pub fn bundle_value(
    fqid: &crate::fqid::Fqid,
    metadata: &crate::bundle::BundleMetadata,
    field: BundleField,
) -> String {
    match field {
        BundleField::Fqid => fqid.to_string(),
        BundleField::Project => metadata.project.clone().unwrap_or_default(),
        BundleField::Organ => metadata.organ.clone().unwrap_or_default(),
        BundleField::Species => metadata.species.clone().unwrap_or_default(),
        BundleField::Assay => metadata.assay.clone().unwrap_or_default(),
        BundleField::Donor => metadata.donor.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        match Filter::parse(&v) {
            Ok(f) => panic!("expected an error for {v}, got {f:?}"),
            Err(e) => e,
        }
    }

    fn no_bundle(_: BundleField) -> String {
        String::new()
    }

    fn cell(n_genes: u64, total_counts: f64, pct_mito: f64, barcode: &str) -> CellValues<'_> {
        CellValues {
            n_genes,
            total_counts,
            pct_mito,
            barcode,
        }
    }

    #[test]
    fn fields_names_columns_types() {
        for f in Field::ALL {
            assert_eq!(Field::parse(f.name()), Some(f));
            assert!(f.name().ends_with(&format!(".{}", f.column())));
            assert!(!f.description().is_empty() && !f.description().contains('\n'));
        }
        assert_eq!(Field::parse("bundle.foo"), None);
        assert_eq!(Field::parse("project"), None);
        assert_eq!(Field::Cell(CellField::NGenes).column(), "n_genes");
        assert_eq!(Field::Bundle(BundleField::Fqid).column(), "fqid");
        assert_eq!(
            Field::Cell(CellField::NGenes).field_type(),
            FieldType::Integer
        );
        assert_eq!(
            Field::Cell(CellField::Barcode).field_type(),
            FieldType::String
        );
        assert_eq!(
            serde_json::to_value(FieldType::Number).ok(),
            Some(json!("number"))
        );
    }

    #[test]
    fn parses_a_full_tree() {
        let v = json!({"op": "and", "value": [
            {"op": "in", "field": "bundle.organ", "value": ["liver", "lung"]},
            {"op": "not", "value": {"op": "=", "field": "bundle.species", "value": "mouse"}},
            {"op": "or", "value": [
                {"op": ">=", "field": "cell.n_genes", "value": 200},
                {"op": "<", "field": "cell.pct_mito", "value": 5.5},
            ]},
        ]});
        let f = Filter::parse(&v).expect("valid");
        assert_eq!(
            f,
            Filter::And(vec![
                Filter::In {
                    field: Field::Bundle(BundleField::Organ),
                    values: vec![Literal::Str("liver".into()), Literal::Str("lung".into())],
                },
                Filter::Not(Box::new(Filter::Cmp {
                    field: Field::Bundle(BundleField::Species),
                    op: CmpOp::Eq,
                    value: Literal::Str("mouse".into()),
                })),
                Filter::Or(vec![
                    Filter::Cmp {
                        field: Field::Cell(CellField::NGenes),
                        op: CmpOp::Ge,
                        value: Literal::Num(200.0),
                    },
                    Filter::Cmp {
                        field: Field::Cell(CellField::PctMito),
                        op: CmpOp::Lt,
                        value: Literal::Num(5.5),
                    },
                ]),
            ])
        );
        assert!(f.uses_cell_fields());
        // The bare-object and list forms of `not` are the same tree.
        let listed = json!({"op": "not", "value": [{"op": "=", "field": "bundle.species", "value": "mouse"}]});
        assert_eq!(
            Filter::parse(&listed).ok(),
            Some(match &f {
                Filter::And(c) => c[1].clone(),
                _ => unreachable!(),
            })
        );
    }

    #[test]
    fn error_messages_name_the_path_and_the_problem() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"op": "and", "value": [
                    {"op": "=", "field": "bundle.organ", "value": "x"},
                    {"op": "~", "field": "bundle.organ", "value": "x"},
                ]}),
                "filter.value[1].op: unknown operator \"~\" (expected one of and, or, not, =, !=, <, <=, >, >=, in)",
            ),
            (
                json!({"op": "or", "value": [{"op": "=", "field": "cell.foo", "value": 1}]}),
                "filter.value[0].field: unknown field \"cell.foo\" (known: bundle.project, bundle.organ, bundle.species, bundle.assay, bundle.donor, bundle.fqid, cell.n_genes, cell.total_counts, cell.pct_mito, cell.barcode)",
            ),
            (json!([1]), "filter: expected a filter node"),
            (json!({"value": []}), "filter: missing \"op\""),
            (
                json!({"op": 3, "value": []}),
                "filter.op: expected a string",
            ),
            (json!({"op": "and"}), "filter: missing \"value\""),
            (
                json!({"op": "and", "value": []}),
                "filter.value: empty list",
            ),
            (
                json!({"op": "or", "value": {"op": "=", "field": "bundle.organ", "value": "x"}}),
                "filter.value: expected an array of filter nodes, got an object",
            ),
            (
                json!({"op": "and", "value": [3]}),
                "filter.value[0]: expected a filter node (an object with \"op\"), got a number",
            ),
            (
                json!({"op": "and", "field": "bundle.organ", "value": [{"op": "=", "field": "bundle.organ", "value": "x"}]}),
                "filter: unknown key \"field\" (a node with this \"op\" takes op, value)",
            ),
            (
                json!({"op": "=", "field": "bundle.organ", "value": "x", "extra": 1}),
                "filter: unknown key \"extra\" (a node with this \"op\" takes op, field, value)",
            ),
            (
                json!({"op": "not", "value": []}),
                "filter.value: \"not\" takes exactly one node, got 0",
            ),
            (
                json!({"op": "not", "value": [{"op": "=", "field": "bundle.organ", "value": "x"}, {"op": "=", "field": "bundle.organ", "value": "y"}]}),
                "filter.value: \"not\" takes exactly one node, got 2",
            ),
            (
                json!({"op": "not", "value": "x"}),
                "filter.value: expected a filter node or a list of one, got a string",
            ),
            (
                json!({"op": "not", "value": {"op": "=", "field": "bundle.organ"}}),
                "filter.value: missing \"value\"",
            ),
            (
                json!({"op": "not", "value": [{"op": "=", "value": 1}]}),
                "filter.value[0]: missing \"field\"",
            ),
            (
                json!({"op": "=", "field": 7, "value": 1}),
                "filter.field: expected a field name (a string), got a number",
            ),
            (
                json!({"op": "<", "field": "bundle.organ", "value": "x"}),
                "filter.op: operator \"<\" does not apply to string field bundle.organ (use =, != or in)",
            ),
            (
                json!({"op": "=", "field": "bundle.organ", "value": 3}),
                "filter.value: bundle.organ is a string field, so the value must be a string, got a number",
            ),
            (
                json!({"op": "=", "field": "cell.n_genes", "value": "3"}),
                "filter.value: cell.n_genes is a numeric field, so the value must be a number, got a string",
            ),
            (
                json!({"op": ">", "field": "cell.pct_mito", "value": null}),
                "filter.value: cell.pct_mito is a numeric field, so the value must be a number, got null",
            ),
            (
                json!({"op": "in", "field": "bundle.donor", "value": "d1"}),
                "filter.value: \"in\" takes a list of literals, got a string",
            ),
            (
                json!({"op": "in", "field": "bundle.donor", "value": []}),
                "filter.value: empty list; \"in\" needs at least one value",
            ),
            (
                json!({"op": "in", "field": "bundle.donor", "value": ["a", "b", true]}),
                "filter.value[2]: bundle.donor is a string field, so the value must be a string, got a boolean",
            ),
            (
                json!({"op": "in", "field": "cell.total_counts", "value": [1, "2"]}),
                "filter.value[1]: cell.total_counts is a numeric field, so the value must be a number, got a string",
            ),
        ];
        for (v, want) in cases {
            let got = err(v.clone());
            assert!(got.starts_with(want), "for {v}\n got: {got}\nwant: {want}");
            assert!(!got.contains('\n'), "multi-line message: {got}");
        }
    }

    #[test]
    fn quoted_user_text_is_escaped_and_cut() {
        let long = "x".repeat(500) + "\n";
        let got = err(json!({"op": long}));
        assert!(!got.contains('\n'));
        assert!(got.len() < 250, "{got}");
        assert!(got.starts_with("filter.op: unknown operator \"xxx"));
        let got = err(json!({"op": "=", "field": "a\"b\nc", "value": 1}));
        assert!(
            got.starts_with(r#"filter.field: unknown field "a\"b\nc""#),
            "{got}"
        );
    }

    #[test]
    fn in_list_size_limit() {
        let ok: Vec<Value> = (0..MAX_IN_VALUES).map(|i| json!(i)).collect();
        assert!(Filter::parse(&json!({"op": "in", "field": "cell.n_genes", "value": ok})).is_ok());
        let too_many: Vec<Value> = (0..=MAX_IN_VALUES).map(|i| json!(i)).collect();
        assert_eq!(
            err(json!({"op": "in", "field": "cell.n_genes", "value": too_many})),
            "filter.value: 10001 values; \"in\" takes at most 10000"
        );
    }

    fn leaf() -> Value {
        json!({"op": "=", "field": "bundle.organ", "value": "x"})
    }

    /// `levels` nodes deep: `levels - 1` nots around a comparison.
    fn nested(levels: usize) -> Value {
        let mut v = leaf();
        for _ in 1..levels {
            v = json!({"op": "not", "value": [v]});
        }
        v
    }

    #[test]
    fn depth_limit() {
        assert!(Filter::parse(&nested(MAX_DEPTH)).is_ok());
        let got = err(nested(MAX_DEPTH + 1));
        let path = format!("filter{}", ".value[0]".repeat(MAX_DEPTH));
        assert_eq!(got, format!("{path}: filter nested deeper than 32 levels"));
        // Much deeper input is refused the same way, without deep recursion.
        assert!(err(nested(120)).ends_with("filter nested deeper than 32 levels"));
    }

    #[test]
    fn node_limit() {
        // The root counts: an `and` with 999 children is 1,000 nodes.
        let children = |n: usize| (0..n).map(|_| leaf()).collect::<Vec<_>>();
        assert!(Filter::parse(&json!({"op": "and", "value": children(MAX_NODES - 1)})).is_ok());
        assert_eq!(
            err(json!({"op": "and", "value": children(MAX_NODES)})),
            "filter.value[999]: filter has more than 1000 nodes"
        );
        // Counted across branches, not per list.
        let half = json!({"op": "or", "value": children(600)});
        let got = err(json!({"op": "and", "value": [half.clone(), half]}));
        assert!(got.ends_with("filter has more than 1000 nodes"), "{got}");
        assert!(got.starts_with("filter.value[1].value["), "{got}");
    }

    #[test]
    fn canonical_json() {
        let a = json!({"value": {"value": 5, "field": "cell.n_genes", "op": ">"}, "op": "not"});
        let b = json!({"op": "not", "value": [{"op": ">", "field": "cell.n_genes", "value": 5.0}]});
        let fa = Filter::parse(&a).expect("valid");
        let fb = Filter::parse(&b).expect("valid");
        assert_eq!(fa, fb);
        let text = serde_json::to_string(&fa.to_json()).expect("serializes");
        assert_eq!(
            text,
            serde_json::to_string(&fb.to_json()).expect("serializes")
        );
        assert_eq!(
            text,
            r#"{"op":"not","value":[{"field":"cell.n_genes","op":">","value":5.0}]}"#
        );
        // Children keep their order: a different order is a different request.
        let x = json!({"op": "and", "value": [leaf(), nested(2)]});
        let y = json!({"op": "and", "value": [nested(2), leaf()]});
        assert_ne!(
            Filter::parse(&x).expect("valid").to_json(),
            Filter::parse(&y).expect("valid").to_json()
        );
    }

    #[test]
    fn evaluation_semantics() {
        let meta = |f: BundleField| match f {
            BundleField::Organ => "liver".to_string(),
            BundleField::Species => "Homo sapiens".to_string(),
            _ => String::new(),
        };
        let p = |v: Value| Filter::parse(&v).expect("valid");
        let c = cell(200, 1000.0, 4.0, "AAAC-1");

        // Exact, case-sensitive strings; a missing value is "".
        assert_eq!(
            p(json!({"op": "=", "field": "bundle.organ", "value": "liver"})).eval_bundle(&meta),
            Some(true)
        );
        assert_eq!(
            p(json!({"op": "=", "field": "bundle.organ", "value": "Liver"})).eval_bundle(&meta),
            Some(false)
        );
        assert_eq!(
            p(json!({"op": "=", "field": "bundle.donor", "value": ""})).eval_bundle(&meta),
            Some(true)
        );
        assert_eq!(
            p(json!({"op": "!=", "field": "bundle.donor", "value": ""})).eval_bundle(&meta),
            Some(false)
        );
        assert_eq!(
            p(json!({"op": "in", "field": "bundle.species", "value": ["Mus musculus", "Homo sapiens"]}))
                .eval_bundle(&meta),
            Some(true)
        );

        // Kleene logic.
        let cellcmp = json!({"op": ">=", "field": "cell.n_genes", "value": 200});
        let t = json!({"op": "=", "field": "bundle.organ", "value": "liver"});
        let f = json!({"op": "=", "field": "bundle.organ", "value": "lung"});
        assert_eq!(p(cellcmp.clone()).eval_bundle(&meta), None);
        assert_eq!(
            p(json!({"op": "and", "value": [cellcmp, f]})).eval_bundle(&meta),
            Some(false)
        );
        assert_eq!(
            p(json!({"op": "and", "value": [cellcmp, t]})).eval_bundle(&meta),
            None
        );
        assert_eq!(
            p(json!({"op": "or", "value": [cellcmp, t]})).eval_bundle(&meta),
            Some(true)
        );
        assert_eq!(
            p(json!({"op": "or", "value": [cellcmp, f]})).eval_bundle(&meta),
            None
        );
        assert_eq!(
            p(json!({"op": "not", "value": cellcmp})).eval_bundle(&meta),
            None
        );

        // Cells: numbers compare as f64, integers included.
        assert!(p(json!({"op": ">=", "field": "cell.n_genes", "value": 200})).eval_cell(&meta, &c));
        assert!(!p(json!({"op": ">", "field": "cell.n_genes", "value": 200})).eval_cell(&meta, &c));
        assert!(
            p(json!({"op": ">", "field": "cell.n_genes", "value": 199.5})).eval_cell(&meta, &c)
        );
        assert!(p(json!({"op": "<=", "field": "cell.pct_mito", "value": 4})).eval_cell(&meta, &c));
        assert!(
            p(json!({"op": "in", "field": "cell.total_counts", "value": [1, 1000]}))
                .eval_cell(&meta, &c)
        );
        assert!(
            p(json!({"op": "=", "field": "cell.barcode", "value": "AAAC-1"})).eval_cell(&meta, &c)
        );
        assert!(
            !p(json!({"op": "=", "field": "cell.barcode", "value": "aaac-1"})).eval_cell(&meta, &c)
        );

        // NaN fails everything but `!=`.
        let nan = cell(0, f64::NAN, f64::NAN, "");
        for op in ["=", "<", "<=", ">", ">="] {
            assert!(
                !p(json!({"op": op, "field": "cell.pct_mito", "value": 1}))
                    .eval_cell(&no_bundle, &nan)
            );
        }
        assert!(
            p(json!({"op": "!=", "field": "cell.pct_mito", "value": 1}))
                .eval_cell(&no_bundle, &nan)
        );
    }

    #[test]
    fn hand_built_invalid_comparisons_are_false() {
        let bad = Filter::Cmp {
            field: Field::Bundle(BundleField::Organ),
            op: CmpOp::Lt,
            value: Literal::Str("z".into()),
        };
        assert_eq!(bad.eval_bundle(&no_bundle), Some(false));
        let mismatch = |op| Filter::Cmp {
            field: Field::Cell(CellField::NGenes),
            op,
            value: Literal::Str("1".into()),
        };
        let c = cell(1, 1.0, 1.0, "b");
        assert!(!mismatch(CmpOp::Eq).eval_cell(&no_bundle, &c));
        assert!(mismatch(CmpOp::Ne).eval_cell(&no_bundle, &c));
        // Non-finite literals serialize as null, which does not parse back.
        let inf = Filter::Cmp {
            field: Field::Cell(CellField::PctMito),
            op: CmpOp::Lt,
            value: Literal::Num(f64::INFINITY),
        };
        assert!(Filter::parse(&inf.to_json()).is_err());
    }

    // --- Property tests -------------------------------------------------------------

    const ALPHABET: [&str; 3] = ["", "a", "b"];
    const NUMBERS: [f64; 8] = [-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 1e300];

    fn any_field() -> impl Strategy<Value = Field> {
        prop::sample::select(Field::ALL.to_vec())
    }

    fn any_op() -> impl Strategy<Value = CmpOp> {
        prop::sample::select(CmpOp::ALL.to_vec())
    }

    /// Numbers for valid literals. `wide` takes any finite f64; otherwise decimals of at
    /// most 13 significant digits, which serde_json reads back from text exactly even
    /// without its `float_roundtrip` feature.
    fn number(wide: bool) -> BoxedStrategy<f64> {
        let short = prop_oneof![
            prop::sample::select(NUMBERS.to_vec()),
            (-1_000_000_000i64..1_000_000_000).prop_map(|n| n as f64 / 1000.0),
        ];
        if wide {
            prop_oneof![short, any::<f64>().prop_filter("finite", |x| x.is_finite())].boxed()
        } else {
            short.boxed()
        }
    }

    fn literal_for(field: Field, wide: bool) -> BoxedStrategy<Literal> {
        match field.field_type() {
            FieldType::String => prop::sample::select(ALPHABET.to_vec())
                .prop_map(|s| Literal::Str(s.to_string()))
                .boxed(),
            FieldType::Integer | FieldType::Number => number(wide).prop_map(Literal::Num).boxed(),
        }
    }

    fn any_literal() -> impl Strategy<Value = Literal> {
        prop_oneof![
            prop::sample::select(ALPHABET.to_vec()).prop_map(|s| Literal::Str(s.to_string())),
            prop::sample::select(NUMBERS.to_vec()).prop_map(Literal::Num),
        ]
    }

    /// A comparison the parser accepts.
    fn valid_leaf(wide: bool) -> impl Strategy<Value = Filter> {
        any_field().prop_flat_map(move |field| {
            let op = if field.field_type() == FieldType::String {
                prop::sample::select(vec![CmpOp::Eq, CmpOp::Ne]).boxed()
            } else {
                any_op().boxed()
            };
            prop_oneof![
                (op, literal_for(field, wide)).prop_map(move |(op, value)| Filter::Cmp {
                    field,
                    op,
                    value
                }),
                prop::collection::vec(literal_for(field, wide), 1..4)
                    .prop_map(move |values| Filter::In { field, values }),
            ]
        })
    }

    /// Any comparison, including ones only code can build.
    fn any_leaf() -> impl Strategy<Value = Filter> {
        prop_oneof![
            3 => valid_leaf(true),
            1 => (any_field(), any_op(), any_literal())
                .prop_map(|(field, op, value)| Filter::Cmp { field, op, value }),
            1 => (any_field(), prop::collection::vec(any_literal(), 1..4))
                .prop_map(|(field, values)| Filter::In { field, values }),
        ]
    }

    fn tree(leaf: BoxedStrategy<Filter>) -> impl Strategy<Value = Filter> {
        leaf.prop_recursive(5, 40, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..4).prop_map(Filter::And),
                prop::collection::vec(inner.clone(), 1..4).prop_map(Filter::Or),
                inner.prop_map(|c| Filter::Not(Box::new(c))),
            ]
        })
    }

    fn any_cell() -> impl Strategy<Value = (u64, f64, f64, &'static str)> {
        (
            0u64..4,
            prop_oneof![prop::sample::select(NUMBERS.to_vec()), Just(f64::NAN)],
            prop::sample::select(NUMBERS.to_vec()),
            prop::sample::select(ALPHABET.to_vec()),
        )
    }

    fn any_bundle() -> impl Strategy<Value = [&'static str; 6]> {
        prop::array::uniform6(prop::sample::select(ALPHABET.to_vec()))
    }

    fn lookup(meta: [&'static str; 6]) -> impl Fn(BundleField) -> String {
        move |f| {
            let i = match f {
                BundleField::Project => 0,
                BundleField::Organ => 1,
                BundleField::Species => 2,
                BundleField::Assay => 3,
                BundleField::Donor => 4,
                BundleField::Fqid => 5,
            };
            meta[i].to_string()
        }
    }

    proptest! {
        #[test]
        fn eval_bundle_agrees_with_eval_cell(
            f in tree(any_leaf().boxed()),
            meta in any_bundle(),
            cells in prop::collection::vec(any_cell(), 1..12),
        ) {
            let bundle = lookup(meta);
            let decided = f.eval_bundle(&bundle);
            if !f.uses_cell_fields() {
                prop_assert!(decided.is_some(), "no cell fields, yet undecided: {:?}", f);
            }
            if let Some(b) = decided {
                for (n, tc, pm, bc) in cells {
                    let c = cell(n, tc, pm, bc);
                    prop_assert_eq!(f.eval_cell(&bundle, &c), b, "cell {:?}", c);
                }
            }
        }

        #[test]
        fn canonical_json_round_trips(f in tree(valid_leaf(true).boxed())) {
            prop_assert_eq!(Filter::parse(&f.to_json()), Ok(f.clone()));
        }

        #[test]
        fn canonical_text_round_trips(f in tree(valid_leaf(false).boxed())) {
            // Through text, as a request travels; exact for short decimals (see
            // `number`).
            let text = serde_json::to_string(&f.to_json()).expect("serializes");
            let back: Value = serde_json::from_str(&text).expect("parses");
            let parsed = Filter::parse(&back);
            prop_assert_eq!(parsed.as_ref().ok(), Some(&f));
            // Canonical: re-encoding the parsed tree gives the same text.
            let reparsed = parsed.expect("valid").to_json();
            let again = serde_json::to_string(&reparsed).expect("serializes");
            prop_assert_eq!(again, text);
        }
    }
}
