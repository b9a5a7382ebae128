//! The catalog's fields, summed over its bundles: which bundles have each field, its
//! type, how many cells have a value, and for few-valued fields every value with its
//! cell count. What `GET /v1/fields` lists, what a `where` text's bare names and a
//! filter's types are checked against, and what `cell.*` expands to.

use std::collections::BTreeMap;

use crate::catalog::CatalogEntry;
use crate::field::stats::MAX_VALUES;
use crate::field::{BUILTINS, Field, FieldType, Level, Scalar};
use crate::filter::Known;
use crate::fqid::Fqid;

/// One field over the bundles summed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facet {
    /// The types its values have (several when bundles disagree).
    pub types: Vec<FieldType>,
    /// Bundles that have it.
    pub bundles: u64,
    /// Cells with a value.
    pub cells: u64,
    /// Each value with its cell count, while every bundle lists them and there are at
    /// most [`MAX_VALUES`] in all (strings and booleans).
    pub values: Option<BTreeMap<String, u64>>,
}

impl Facet {
    fn add_type(&mut self, t: FieldType) {
        if !self.types.contains(&t) {
            self.types.push(t);
        }
    }

    fn add_values<'a>(&mut self, values: Option<impl Iterator<Item = (&'a String, u64)>>) {
        match (values, &mut self.values) {
            (Some(values), Some(mine)) => {
                for (v, n) in values {
                    *mine.entry(v.clone()).or_insert(0) += n;
                }
                if mine.len() > MAX_VALUES {
                    self.values = None;
                }
            }
            _ => self.values = None,
        }
    }

    /// The type a filter checks literals against.
    pub fn known(&self) -> Known {
        match (FieldType::join_all(&self.types), self.types.is_empty()) {
            (Some(t), _) => Known::Typed(t),
            (None, true) => Known::Absent,
            (None, false) => Known::Mixed,
        }
    }
}

/// Every field of some bundles.
#[derive(Debug, Clone, Default)]
pub struct Facets {
    /// By field, bundle fields first.
    pub fields: BTreeMap<Field, Facet>,
}

impl Facets {
    /// The facets of `bundles`.
    pub fn of<'a>(bundles: impl IntoIterator<Item = (&'a Fqid, &'a CatalogEntry)>) -> Facets {
        let mut fields: BTreeMap<Field, Facet> = BTreeMap::new();
        // The built-ins are there even in an empty catalog.
        for b in &BUILTINS {
            let facet = fields.entry(Field::builtin(b)).or_default();
            facet.add_type(b.field_type);
            facet.values = (b.field_type == FieldType::String).then(BTreeMap::new);
        }
        let fqid = Field::new(Level::Bundle, "fqid").expect("a valid name");
        for (id, entry) in bundles {
            let facet = fields.get_mut(&fqid).expect("a built-in");
            facet.bundles += 1;
            facet.cells += entry.n_cells;
            facet.add_values(Some(std::iter::once((&id.to_string(), entry.n_cells))));
            for (name, value) in entry.metadata.fields() {
                let Some(field) = Field::new(Level::Bundle, &name) else {
                    continue;
                };
                let facet = fields.entry(field).or_insert_with(|| Facet {
                    values: Some(BTreeMap::new()),
                    ..Facet::default()
                });
                facet.add_type(value.field_type());
                facet.bundles += 1;
                facet.cells += entry.n_cells;
                let text = match &value {
                    Scalar::Str(s) => Some(s.clone()),
                    Scalar::Bool(b) => Some(b.to_string()),
                    _ => None,
                };
                match text {
                    Some(t) => facet.add_values(Some(std::iter::once((&t, entry.n_cells)))),
                    None => facet.values = None,
                }
            }
            let Some(cells) = &entry.cell_fields else {
                continue;
            };
            for (name, stats) in cells {
                let Some(field) = Field::new(Level::Cell, name) else {
                    continue;
                };
                let builtin = field.as_builtin().is_some();
                let facet = fields.entry(field).or_insert_with(|| Facet {
                    values: Some(BTreeMap::new()),
                    ..Facet::default()
                });
                if !builtin {
                    facet.add_type(stats.field_type);
                }
                facet.bundles += 1;
                facet.cells += entry.n_cells.saturating_sub(stats.nulls);
                match stats.field_type {
                    FieldType::String | FieldType::Boolean => facet.add_values(
                        stats
                            .values
                            .as_ref()
                            .map(|v| v.iter().map(|(k, n)| (k, *n))),
                    ),
                    _ => facet.values = None,
                }
            }
        }
        Facets { fields }
    }

    /// The type `field` has, for a filter's check.
    pub fn known(&self, field: &Field) -> Known {
        self.fields.get(field).map_or(Known::Absent, Facet::known)
    }

    /// The qualified name of a bare `name`: the field of that name at the one level
    /// that has it.
    pub fn resolve(&self, name: &str) -> Result<String, String> {
        let at = |level| Field::new(level, name).filter(|f| self.fields.contains_key(f));
        match (at(Level::Bundle), at(Level::Cell)) {
            (Some(b), Some(c)) => Err(format!("{name} is both {b} and {c}; write one of them")),
            (Some(f), None) | (None, Some(f)) => Ok(f.to_string()),
            (None, None) => Err(format!(
                "unknown field {name}: no bundle in the catalog has it (GET /v1/fields lists them)"
            )),
        }
    }

    /// Every field at `level`: the built-ins in their order, then the others by name.
    pub fn at_level(&self, level: Level) -> Vec<Field> {
        let mut out: Vec<Field> = BUILTINS
            .iter()
            .filter(|b| b.level == level)
            .map(Field::builtin)
            .collect();
        out.extend(
            self.fields
                .keys()
                .filter(|f| f.level() == level && f.as_builtin().is_none())
                .cloned(),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::stats::FieldStats;
    use serde_json::json;

    #[test]
    fn sums_over_bundles() {
        let mut e: CatalogEntry = serde_json::from_value(json!({
            "n_cells": 3, "n_features": 1, "nnz": 0, "value_type": "uint32",
            "rows_per_chunk": 1024, "chunk_offsets": [0, 0], "feature_set": "f",
            "stored_bytes": 0, "content_digest": "d",
            "metadata": {"organ": "lung", "age": 4}
        }))
        .unwrap();
        e.cell_fields = Some(BTreeMap::from([(
            "cell_type".to_string(),
            FieldStats {
                field_type: FieldType::String,
                nulls: 1,
                min: None,
                max: None,
                values: Some(BTreeMap::from([("B".into(), 2)])),
            },
        )]));
        let a =
            Fqid::parse("0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z").unwrap();
        let b =
            Fqid::parse("0a1b2c3d-0000-4000-8000-000000000001.2019-02-02T065454.662896Z").unwrap();
        let facets = Facets::of([(&a, &e), (&b, &e)]);
        let f = |n: &str| Field::parse(n).unwrap();
        let ct = &facets.fields[&f("cell.cell_type")];
        assert_eq!((ct.bundles, ct.cells), (2, 4));
        assert_eq!(ct.values, Some(BTreeMap::from([("B".into(), 4)])));
        let organ = &facets.fields[&f("bundle.organ")];
        assert_eq!(organ.values, Some(BTreeMap::from([("lung".into(), 6)])));
        assert_eq!(
            facets.known(&f("bundle.age")),
            Known::Typed(FieldType::Integer)
        );
        assert_eq!(facets.known(&f("cell.nope")), Known::Absent);
        assert_eq!(facets.resolve("cell_type"), Ok("cell.cell_type".into()));
        assert!(
            facets
                .resolve("nope")
                .unwrap_err()
                .starts_with("unknown field nope")
        );
        let at_cell = facets.at_level(Level::Cell);
        assert_eq!(at_cell.last(), Some(&f("cell.cell_type")));
        assert_eq!(at_cell[0], f("cell.n_genes"));
    }
}
