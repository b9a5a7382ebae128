//! What the catalog records of a cell field in a bundle: its type, its nulls, its range,
//! and for few-valued fields every value with its cell count. Enough to list facets
//! (`GET /v1/fields`) and to skip bundles a filter cannot match without reading them.

use std::collections::BTreeMap;

use super::FieldType;
use super::Value;
use super::column::Column;

/// Distinct values at most for which a string field's values are recorded.
pub const MAX_VALUES: usize = 1000;

/// One cell field's summary over one bundle.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FieldStats {
    /// The values' type.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Cells with no value.
    pub nulls: u64,
    /// The least value (numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The greatest value (numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Every value with its cell count (strings with at most [`MAX_VALUES`] distinct
    /// values; booleans as `"true"`/`"false"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<BTreeMap<String, u64>>,
}

impl FieldStats {
    /// The summary of `column`.
    pub fn of(column: &Column) -> FieldStats {
        let mut stats = FieldStats {
            field_type: column.field_type(),
            nulls: 0,
            min: None,
            max: None,
            values: None,
        };
        match column {
            Column::Categorical { categories, codes } => {
                let mut counts = vec![0u64; categories.len()];
                for &c in codes {
                    match usize::try_from(c).ok().filter(|&c| c < counts.len()) {
                        Some(c) => counts[c] += 1,
                        None => stats.nulls += 1,
                    }
                }
                let used: BTreeMap<String, u64> = categories
                    .iter()
                    .zip(counts)
                    .filter(|(_, n)| *n > 0)
                    .map(|(c, n)| (c.clone(), n))
                    .collect();
                stats.values = (used.len() <= MAX_VALUES).then_some(used);
            }
            Column::Bool { .. } => {
                let mut counts = BTreeMap::new();
                for i in 0..column.len() {
                    match column.get(i) {
                        Value::Bool(b) => *counts.entry(b.to_string()).or_insert(0) += 1,
                        _ => stats.nulls += 1,
                    }
                }
                stats.values = Some(counts);
            }
            Column::Int { .. } | Column::Num(_) => {
                for i in 0..column.len() {
                    match column.get(i) {
                        Value::Num(x) => {
                            stats.min = Some(stats.min.map_or(x, |m| m.min(x)));
                            stats.max = Some(stats.max.map_or(x, |m| m.max(x)));
                        }
                        _ => stats.nulls += 1,
                    }
                }
            }
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let s = FieldStats::of(&Column::from_strings(&[
            Some("b"),
            None,
            Some("a"),
            Some("b"),
        ]));
        assert_eq!(s.nulls, 1);
        assert_eq!(
            s.values,
            Some(BTreeMap::from([("a".into(), 1), ("b".into(), 2)]))
        );
        let many: Vec<Option<String>> = (0..=MAX_VALUES).map(|i| Some(i.to_string())).collect();
        assert_eq!(FieldStats::of(&Column::from_strings(&many)).values, None);
        let n = FieldStats::of(&Column::Num(vec![2.0, f64::NAN, -1.0]));
        assert_eq!((n.min, n.max, n.nulls), (Some(-1.0), Some(2.0), 1));
        let b = FieldStats::of(&Column::bools(&[Some(true), None, Some(true)]));
        assert_eq!(b.values, Some(BTreeMap::from([("true".into(), 2)])));
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            r#"{"type":"number","nulls":1,"min":-1.0,"max":2.0}"#
        );
    }
}
