//! The body of `POST /v1/matrix`: parsed, validated, and reduced to a canonical form whose
//! hash (with the resolved bundles) is the request id.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::convert::Format;
use crate::error::clip;
use crate::field::{Field, Level};
use crate::filter::{Filter, Literal};
use crate::fqid::Fqid;
use crate::messages::RequestId;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most bundles one request may name.
pub const MAX_BUNDLES: usize = 100_000;
/// Most genes one request may name.
pub const MAX_GENES: usize = 100_000;
/// Most names `fields` may list (repeats included; there are ten fields).
pub const MAX_FIELD_NAMES: usize = 100;

/// Where the bundles of a request come from.
#[derive(Debug, Clone, PartialEq)]
pub enum BundleSource {
    /// An explicit list, in the order given.
    List(Vec<Fqid>),
    /// An https URL, or a key in the service's store, of a newline- or tab-separated list.
    Url(String),
    /// Every catalogued bundle the filter may match.
    Filter(Filter),
    /// A filter as `where` text, parsed once the catalog names its fields (see
    /// [`crate::query`]); resolving turns it into [`BundleSource::Filter`].
    Where(String),
}

/// A name in `fields`: one field, or every field of a level (`cell.*`, `bundle.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSel {
    /// One field.
    One(Field),
    /// Every field of the level in the selected bundles.
    All(Level),
}

impl FieldSel {
    /// The name as written.
    pub fn name(&self) -> String {
        match self {
            FieldSel::One(f) => f.name(),
            FieldSel::All(level) => format!("{}.*", level.name()),
        }
    }
}

/// A validated matrix request.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixRequest {
    /// The bundles.
    pub source: BundleSource,
    /// The output format.
    pub format: Format,
    /// The obs columns, in order (wildcards expanded when the request is resolved).
    pub fields: Vec<FieldSel>,
    /// A gene subset (ids or names), in order; `None` for the union of the bundles' genes.
    pub genes: Option<Vec<String>>,
    /// Only estimate (`"dry_run": true`): resolve and check as a real submit, write and
    /// invoke nothing. Not part of the canonical form: it does not change the id.
    pub dry_run: bool,
}

/// A request error: the HTTP status and a message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 4xx status.
    pub status: u16,
    /// What is wrong.
    pub message: String,
}

impl Rejection {
    /// A 400 Bad Request.
    pub fn bad(message: impl Into<String>) -> Self {
        Rejection {
            status: 400,
            message: message.into(),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    bundle_fqids: Option<Vec<String>>,
    bundle_fqids_url: Option<String>,
    filter: Option<Value>,
    #[serde(rename = "where")]
    where_: Option<String>,
    format: Option<String>,
    fields: Option<Vec<String>>,
    genes: Option<Vec<String>>,
    dry_run: Option<bool>,
}

impl MatrixRequest {
    /// Parses and validates a request body.
    pub fn parse(body: &[u8]) -> Result<Self, Rejection> {
        if body.len() > MAX_BODY_BYTES {
            return Err(Rejection {
                status: 413,
                message: format!(
                    "the request body is {} bytes; the limit is {MAX_BODY_BYTES}",
                    body.len()
                ),
            });
        }
        let parsed: Body = serde_json::from_slice(body)
            .map_err(|e| Rejection::bad(format!("the request body is not valid: {e}")))?;
        // serde reads a null as an absent field; the API document allows no nulls, and a
        // null `filter` next to a list would otherwise pass as "only one source".
        if let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body)
            && let Some((key, _)) = fields.iter().find(|(_, v)| v.is_null())
        {
            return Err(Rejection::bad(format!(
                "{}: null is not allowed; leave the field out for its default",
                clip(key)
            )));
        }
        let body = parsed;
        let given = [
            body.bundle_fqids.is_some(),
            body.bundle_fqids_url.is_some(),
            body.filter.is_some(),
            body.where_.is_some(),
        ];
        let source = match given.iter().filter(|&&g| g).count() {
            1 => {
                if let Some(list) = body.bundle_fqids {
                    BundleSource::List(parse_fqids(list.iter().map(String::as_str))?)
                } else if let Some(url) = body.bundle_fqids_url {
                    if url.is_empty() || url.len() > 2048 {
                        return Err(Rejection::bad(
                            "bundle_fqids_url must be 1 to 2048 characters",
                        ));
                    }
                    BundleSource::Url(url)
                } else if let Some(text) = body.where_ {
                    if text.trim().is_empty() || text.len() > crate::query::MAX_TEXT_BYTES {
                        return Err(Rejection::bad(format!(
                            "where must be a condition of 1 to {} bytes",
                            crate::query::MAX_TEXT_BYTES
                        )));
                    }
                    BundleSource::Where(text)
                } else {
                    let filter = body.filter.unwrap_or(Value::Null);
                    let filter = Filter::parse(&filter).map_err(Rejection::bad)?;
                    BundleSource::Filter(without_repeated_values(filter))
                }
            }
            0 => {
                return Err(Rejection::bad(
                    "say which bundles: give one of bundle_fqids, bundle_fqids_url, filter or where",
                ));
            }
            _ => {
                return Err(Rejection::bad(
                    "give only one of bundle_fqids, bundle_fqids_url, filter and where: a filter \
                     (or its where text) selects bundles from the catalog, a list names them",
                ));
            }
        };
        let name = body.format.unwrap_or_else(|| "zarr".into());
        let Some(format) = Format::parse(&name) else {
            return Err(Rejection::bad(format!(
                "unknown format {:?} (known: {})",
                clip(&name),
                Format::names().join(", ")
            )));
        };
        let fields = match body.fields {
            None => Field::defaults().into_iter().map(FieldSel::One).collect(),
            Some(names) => {
                if names.len() > MAX_FIELD_NAMES {
                    return Err(Rejection::bad(format!(
                        "fields: give at most {MAX_FIELD_NAMES} names"
                    )));
                }
                let mut fields = Vec::with_capacity(names.len());
                for name in &names {
                    let field = match name.as_str() {
                        "cell.*" => Some(FieldSel::All(Level::Cell)),
                        "bundle.*" => Some(FieldSel::All(Level::Bundle)),
                        _ => Field::parse(name).map(FieldSel::One),
                    };
                    let field = field.ok_or_else(|| {
                        Rejection::bad(format!(
                            "fields: {:?} is not a field name (bundle.<name> or cell.<name>, or \
                             bundle.* or cell.*; GET /v1/fields lists them)",
                            clip(name),
                        ))
                    })?;
                    // A repeat adds nothing: it is dropped, so the request keeps its id.
                    if !fields.contains(&field) {
                        fields.push(field);
                    }
                }
                fields
            }
        };
        if let Some(genes) = &body.genes {
            if genes.is_empty() || genes.len() > MAX_GENES {
                return Err(Rejection::bad(format!(
                    "genes: give 1 to {MAX_GENES} gene ids or names, or leave it out for all genes"
                )));
            }
            if let Some(g) = genes.iter().find(|g| g.is_empty() || g.len() > 256) {
                return Err(Rejection::bad(format!(
                    "genes: {:?} is not a gene id or name (1 to 256 characters)",
                    clip(g)
                )));
            }
        }
        Ok(MatrixRequest {
            source,
            format,
            fields,
            genes: body.genes.map(first_occurrences),
            dry_run: body.dry_run.unwrap_or(false),
        })
    }

    /// The request id: a hash of what determines the output, the resolved bundles
    /// included, so the same request over the same data gets the same id, and a list
    /// and a URL naming the same bundles are the same request.
    pub fn id(&self, bundles: &[Fqid]) -> RequestId {
        let mut h = Sha256::new();
        h.update(self.canonical(bundles).to_string().as_bytes());
        RequestId::parse(&hex::encode(&h.finalize()[..16])).expect("hex is a valid id")
    }

    /// The canonical form hashed into the id.
    pub fn canonical(&self, bundles: &[Fqid]) -> Value {
        json!({
            "bundles": bundles.iter().map(Fqid::as_str).collect::<Vec<_>>(),
            "filter": match &self.source {
                BundleSource::Filter(f) => f.to_json(),
                // Resolving parses it; an unresolved request hashes its text.
                BundleSource::Where(text) => Value::String(text.clone()),
                _ => Value::Null,
            },
            "format": self.format.name(),
            "fields": self.fields.iter().map(|f| f.name()).collect::<Vec<_>>(),
            "genes": self.genes,
        })
    }

    /// The filter, if bundles were selected by one.
    pub fn filter(&self) -> Option<&Filter> {
        match &self.source {
            BundleSource::Filter(f) => Some(f),
            _ => None,
        }
    }
}

/// `items` without repeats, each where it first came: what a repeated gene or field adds
/// to the output is nothing, so the request keeps the id it has without the repeat (and a
/// request with none keeps its id).
fn first_occurrences(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    items
        .into_iter()
        .filter(|g| seen.insert(g.clone()))
        .collect()
}

/// `filter` with each `in` list's repeated values dropped (first occurrences kept, in
/// order): `x in [a, a]` is `x in [a]`, and gets its id.
pub fn without_repeated_values(filter: Filter) -> Filter {
    match filter {
        Filter::And(children) => {
            Filter::And(children.into_iter().map(without_repeated_values).collect())
        }
        Filter::Or(children) => {
            Filter::Or(children.into_iter().map(without_repeated_values).collect())
        }
        Filter::Not(child) => Filter::Not(Box::new(without_repeated_values(*child))),
        Filter::In {
            field,
            values,
            negated,
        } => {
            let mut seen = std::collections::HashSet::with_capacity(values.len());
            let values = values
                .into_iter()
                .filter(|v| {
                    seen.insert(match v {
                        Literal::Str(s) => (0, s.clone()),
                        Literal::Num(x) => (1, x.to_bits().to_string()),
                        Literal::Bool(b) => (2, b.to_string()),
                    })
                })
                .collect();
            Filter::In {
                field,
                values,
                negated,
            }
        }
        leaf @ (Filter::Cmp { .. } | Filter::Null { .. }) => leaf,
    }
}

/// Parses a list of fqids: every one valid, none twice, at most [`MAX_BUNDLES`].
pub fn parse_fqids<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<Fqid>, Rejection> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, s) in items.enumerate() {
        if out.len() == MAX_BUNDLES {
            return Err(Rejection::bad(format!(
                "too many bundles: at most {MAX_BUNDLES} per request"
            )));
        }
        let fqid = Fqid::parse(s).map_err(|e| Rejection::bad(format!("bundle {i}: {e}")))?;
        if !seen.insert(fqid.clone()) {
            return Err(Rejection::bad(format!("bundle {fqid} is listed twice")));
        }
        out.push(fqid);
    }
    if out.is_empty() {
        return Err(Rejection::bad("the bundle list is empty"));
    }
    Ok(out)
}

/// Parses the text of a bundle list: one fqid per line, the first tab-separated column;
/// blank lines, `#` comments and a header line (`fqid`, `bundle_fqid`, ...) are skipped.
pub fn parse_fqid_list(text: &str) -> Result<Vec<Fqid>, Rejection> {
    let mut cells = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let first = line.split('\t').next().unwrap_or("").trim();
        if first.is_empty() || first.starts_with('#') {
            continue;
        }
        if n == 0 && !first.contains('.') && first.to_ascii_lowercase().contains("fqid") {
            continue;
        }
        cells.push((n + 1, first));
    }
    for &(line, value) in &cells {
        Fqid::parse(value).map_err(|e| Rejection::bad(format!("bundle list line {line}: {e}")))?;
    }
    parse_fqids(cells.iter().map(|&(_, v)| v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z";
    const B: &str = "0a1b2c3d-0000-4000-8000-000000000001.2019-02-02T065454.662896Z";

    fn parse(v: Value) -> Result<MatrixRequest, Rejection> {
        MatrixRequest::parse(v.to_string().as_bytes())
    }

    #[test]
    fn a_list_request_with_defaults() {
        let r = parse(json!({"bundle_fqids": [A, B]})).unwrap();
        assert_eq!(r.format, Format::Zarr);
        assert_eq!(
            r.fields,
            Field::defaults()
                .into_iter()
                .map(FieldSel::One)
                .collect::<Vec<_>>()
        );
        assert!(matches!(r.source, BundleSource::List(ref l) if l.len() == 2));
    }

    #[test]
    fn a_dry_run_keeps_the_requests_id() {
        let real = parse(json!({"bundle_fqids": [A, B]})).unwrap();
        let dry = parse(json!({"bundle_fqids": [A, B], "dry_run": true})).unwrap();
        let off = parse(json!({"bundle_fqids": [A, B], "dry_run": false})).unwrap();
        assert!(dry.dry_run && !real.dry_run && !off.dry_run);
        let bundles = [Fqid::parse(A).unwrap()];
        assert_eq!(dry.canonical(&bundles), real.canonical(&bundles));
        assert_eq!(dry.id(&bundles), real.id(&bundles));
        assert!(parse(json!({"bundle_fqids": [A], "dry_run": "yes"})).is_err());
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        for (body, status, needle) in [
            (b"{".to_vec(), 400, "not valid"),
            (br#"{"bundle_fqids": ["x"]}"#.to_vec(), 400, "bundle 0"),
            (
                json!({"bundle_fqids": [A], "colour": 1}).to_string().into_bytes(),
                400,
                "unknown field `colour`",
            ),
            (
                json!({"bundle_fqids": [A], "filter": {"op": "=", "field": "bundle.organ", "value": "x"}})
                    .to_string()
                    .into_bytes(),
                400,
                "only one of",
            ),
            (json!({}).to_string().into_bytes(), 400, "say which bundles"),
            (
                json!({"bundle_fqids": [A], "genes": null})
                    .to_string()
                    .into_bytes(),
                400,
                "genes: null",
            ),
            (
                json!({"bundle_fqids": [A], "filter": null})
                    .to_string()
                    .into_bytes(),
                400,
                "filter: null",
            ),
            (
                json!({"bundle_fqids": [A, A]}).to_string().into_bytes(),
                400,
                "twice",
            ),
            (
                json!({"bundle_fqids": [A], "format": "xls"}).to_string().into_bytes(),
                400,
                "unknown format",
            ),
            (
                json!({"bundle_fqids": [A], "fields": ["cell.Colour"]})
                    .to_string()
                    .into_bytes(),
                400,
                "is not a field name",
            ),
            (
                json!({"filter": {"op": "~", "field": "bundle.organ", "value": "x"}})
                    .to_string()
                    .into_bytes(),
                400,
                "operator",
            ),
            (vec![b' '; MAX_BODY_BYTES + 1], 413, "limit"),
        ] {
            let err = MatrixRequest::parse(&body).unwrap_err();
            assert_eq!(err.status, status, "{}", err.message);
            assert!(err.message.contains(needle), "{needle}: {}", err.message);
        }
    }

    #[test]
    fn the_id_depends_on_what_determines_the_output() {
        let a: Fqid = A.parse().unwrap();
        let b: Fqid = B.parse().unwrap();
        let r = parse(json!({"bundle_fqids": [A, B]})).unwrap();
        let same = parse(json!({"bundle_fqids": [A, B], "format": "zarr"})).unwrap();
        assert_eq!(
            r.id(&[a.clone(), b.clone()]),
            same.id(&[a.clone(), b.clone()])
        );
        assert_ne!(r.id(&[a.clone(), b.clone()]), r.id(&[b.clone(), a.clone()]));
        let fewer = parse(json!({"bundle_fqids": [A, B], "fields": ["cell.barcode"]})).unwrap();
        assert_ne!(r.id(&[a.clone(), b.clone()]), fewer.id(&[a, b]));
    }

    #[test]
    fn repeated_genes_fields_and_values_are_dropped_so_the_id_stays() {
        let a: Fqid = A.parse().unwrap();
        let one = std::slice::from_ref(&a);
        let plain = parse(json!({"bundle_fqids": [A], "genes": ["CD3E", "LYZ"],
            "fields": ["cell.barcode", "bundle.project"]}))
        .unwrap();
        let repeated = parse(
            json!({"bundle_fqids": [A], "genes": ["CD3E", "LYZ", "CD3E"],
            "fields": ["cell.barcode", "bundle.project", "cell.barcode"]}),
        )
        .unwrap();
        assert_eq!(repeated, plain);
        assert_eq!(repeated.id(one), plain.id(one));
        let filter = |values: Value| {
            parse(json!({"filter": {"op": "in", "field": "bundle.organ", "value": values}}))
                .unwrap()
        };
        let (once, twice) = (
            filter(json!(["blood", "lung"])),
            filter(json!(["blood", "lung", "blood"])),
        );
        assert_eq!(once.id(one), twice.id(one));
        // Order still matters: it is the output's.
        let swapped = parse(json!({"bundle_fqids": [A], "genes": ["LYZ", "CD3E"],
            "fields": ["cell.barcode", "bundle.project"]}))
        .unwrap();
        assert_ne!(swapped.id(one), plain.id(one));
        let many =
            json!({"bundle_fqids": [A], "fields": vec!["cell.barcode"; MAX_FIELD_NAMES + 1]});
        assert_eq!(parse(many).unwrap_err().status, 400);
    }

    #[test]
    fn bundle_lists_as_text() {
        let text = format!("fqid\tproject\n{A}\tp\n\n# note\n{B}\n");
        assert_eq!(parse_fqid_list(&text).unwrap().len(), 2);
        let err = parse_fqid_list(&format!("{A}\nnot-an-id\n")).unwrap_err();
        assert!(err.message.contains("line 2"), "{}", err.message);
        assert!(parse_fqid_list("\n\n").is_err());
    }
}
