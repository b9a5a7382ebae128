//! A cell field's values for a run of cells, in the shapes AnnData stores them:
//! categorical strings, nullable integers and booleans, floats with NaN for null.

use std::collections::BTreeMap;

use super::{FieldType, Scalar, Value};

/// One cell field's values, in cell order.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Strings, as codes into `categories`; code -1 is null.
    Categorical {
        /// The distinct values, sorted.
        categories: Vec<String>,
        /// One per cell.
        codes: Vec<i32>,
    },
    /// Whole numbers; `nulls[i]` says cell `i` has none (AnnData's mask).
    Int {
        /// One per cell (0 where null).
        values: Vec<i64>,
        /// Present when any value is null.
        nulls: Option<Vec<bool>>,
    },
    /// Real numbers; NaN is null.
    Num(Vec<f64>),
    /// Booleans; `nulls[i]` says cell `i` has none.
    Bool {
        /// One per cell (false where null).
        values: Vec<bool>,
        /// Present when any value is null.
        nulls: Option<Vec<bool>>,
    },
}

impl Column {
    /// Strings, categorical over their sorted distinct values.
    pub fn from_strings<S: AsRef<str>>(values: &[Option<S>]) -> Column {
        let distinct: std::collections::BTreeSet<&str> =
            values.iter().flatten().map(AsRef::as_ref).collect();
        let categories: Vec<String> = distinct.into_iter().map(str::to_string).collect();
        let index: BTreeMap<&str, i32> = categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i as i32))
            .collect();
        let codes = values
            .iter()
            .map(|v| v.as_ref().map_or(-1, |s| index[s.as_ref()]))
            .collect();
        Column::Categorical { categories, codes }
    }

    /// Values of one type (`Int`s widen to `Num` for a number column); a value of
    /// another type is an error naming it.
    pub fn from_scalars(ty: FieldType, values: &[Option<Scalar>]) -> Result<Column, String> {
        let wrong = |v: &Scalar| format!("{v:?} is not a {} value", ty.name());
        Ok(match ty {
            FieldType::String => {
                let strs = values
                    .iter()
                    .map(|v| match v {
                        None => Ok(None),
                        Some(Scalar::Str(s)) => Ok(Some(s.as_str())),
                        Some(other) => Err(wrong(other)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Column::from_strings(&strs)
            }
            FieldType::Integer => {
                let ints = values
                    .iter()
                    .map(|v| match v {
                        None => Ok(None),
                        Some(Scalar::Int(i)) => Ok(Some(*i)),
                        Some(other) => Err(wrong(other)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Column::ints(&ints)
            }
            FieldType::Number => Column::Num(
                values
                    .iter()
                    .map(|v| match v {
                        None => Ok(f64::NAN),
                        Some(Scalar::Num(x)) => Ok(*x),
                        Some(Scalar::Int(i)) => Ok(*i as f64),
                        Some(other) => Err(wrong(other)),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            FieldType::Boolean => {
                let bools = values
                    .iter()
                    .map(|v| match v {
                        None => Ok(None),
                        Some(Scalar::Bool(b)) => Ok(Some(*b)),
                        Some(other) => Err(wrong(other)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Column::bools(&bools)
            }
        })
    }

    /// Nullable integers.
    pub fn ints(values: &[Option<i64>]) -> Column {
        let nulls = values
            .iter()
            .any(Option::is_none)
            .then(|| values.iter().map(Option::is_none).collect());
        Column::Int {
            values: values.iter().map(|v| v.unwrap_or(0)).collect(),
            nulls,
        }
    }

    /// Nullable booleans.
    pub fn bools(values: &[Option<bool>]) -> Column {
        let nulls = values
            .iter()
            .any(Option::is_none)
            .then(|| values.iter().map(Option::is_none).collect());
        Column::Bool {
            values: values.iter().map(|v| v.unwrap_or(false)).collect(),
            nulls,
        }
    }

    /// A column of `len` nulls of type `ty`.
    pub fn nulls(ty: FieldType, len: usize) -> Column {
        match ty {
            FieldType::String => Column::Categorical {
                categories: Vec::new(),
                codes: vec![-1; len],
            },
            FieldType::Integer => Column::Int {
                values: vec![0; len],
                nulls: Some(vec![true; len]),
            },
            FieldType::Number => Column::Num(vec![f64::NAN; len]),
            FieldType::Boolean => Column::Bool {
                values: vec![false; len],
                nulls: Some(vec![true; len]),
            },
        }
    }

    /// The values' type.
    pub fn field_type(&self) -> FieldType {
        match self {
            Column::Categorical { .. } => FieldType::String,
            Column::Int { .. } => FieldType::Integer,
            Column::Num(_) => FieldType::Number,
            Column::Bool { .. } => FieldType::Boolean,
        }
    }

    /// Cells in the column.
    pub fn len(&self) -> usize {
        match self {
            Column::Categorical { codes, .. } => codes.len(),
            Column::Int { values, .. } => values.len(),
            Column::Num(v) => v.len(),
            Column::Bool { values, .. } => values.len(),
        }
    }

    /// Whether it has no cells.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cell `i`'s value.
    pub fn get(&self, i: usize) -> Value<'_> {
        let null = |nulls: &Option<Vec<bool>>| nulls.as_ref().is_some_and(|n| n[i]);
        match self {
            Column::Categorical { categories, codes } => usize::try_from(codes[i])
                .ok()
                .and_then(|c| categories.get(c))
                .map_or(Value::Null, |s| Value::Str(s)),
            Column::Int { values, nulls } if !null(nulls) => Value::Num(values[i] as f64),
            Column::Num(v) => Value::num(v[i]),
            Column::Bool { values, nulls } if !null(nulls) => Value::Bool(values[i]),
            Column::Int { .. } | Column::Bool { .. } => Value::Null,
        }
    }

    /// Cell `i`'s value, owned; `None` when null.
    pub fn scalar(&self, i: usize) -> Option<Scalar> {
        match (self, self.get(i)) {
            (_, Value::Null) => None,
            (Column::Int { values, .. }, _) => Some(Scalar::Int(values[i])),
            (_, Value::Num(x)) => Some(Scalar::Num(x)),
            (_, Value::Str(s)) => Some(Scalar::Str(s.to_string())),
            (_, Value::Bool(b)) => Some(Scalar::Bool(b)),
        }
    }

    /// The cells at `rows`, in that order.
    pub fn select(&self, rows: &[usize]) -> Column {
        let pick_nulls =
            |n: &Option<Vec<bool>>| n.as_ref().map(|n| rows.iter().map(|&r| n[r]).collect());
        match self {
            Column::Categorical { categories, codes } => Column::Categorical {
                categories: categories.clone(),
                codes: rows.iter().map(|&r| codes[r]).collect(),
            },
            Column::Int { values, nulls } => Column::Int {
                values: rows.iter().map(|&r| values[r]).collect(),
                nulls: pick_nulls(nulls),
            },
            Column::Num(v) => Column::Num(rows.iter().map(|&r| v[r]).collect()),
            Column::Bool { values, nulls } => Column::Bool {
                values: rows.iter().map(|&r| values[r]).collect(),
                nulls: pick_nulls(nulls),
            },
        }
    }

    /// How many cells have no value.
    pub fn null_count(&self) -> u64 {
        (0..self.len())
            .filter(|&i| self.get(i) == Value::Null)
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_categorical_over_sorted_values() {
        let c = Column::from_strings(&[Some("b"), None, Some("a"), Some("b")]);
        assert_eq!(
            c,
            Column::Categorical {
                categories: vec!["a".into(), "b".into()],
                codes: vec![1, -1, 0, 1]
            }
        );
        assert_eq!(c.get(1), Value::Null);
        assert_eq!(c.get(2), Value::Str("a"));
        assert_eq!(c.null_count(), 1);
        assert_eq!(c.select(&[3, 1]).scalar(0), Some(Scalar::Str("b".into())));
    }

    #[test]
    fn nullable_values() {
        let i = Column::ints(&[Some(3), None]);
        assert_eq!((i.get(0), i.get(1)), (Value::Num(3.0), Value::Null));
        assert_eq!(i.scalar(0), Some(Scalar::Int(3)));
        assert_eq!(
            Column::ints(&[Some(1)]),
            Column::Int {
                values: vec![1],
                nulls: None
            }
        );
        let n = Column::Num(vec![1.5, f64::NAN]);
        assert_eq!((n.get(0), n.get(1)), (Value::Num(1.5), Value::Null));
        let b = Column::bools(&[None, Some(true)]);
        assert_eq!((b.get(0), b.get(1)), (Value::Null, Value::Bool(true)));
        assert_eq!(Column::nulls(FieldType::Boolean, 2).null_count(), 2);
        assert!(
            Column::from_scalars(FieldType::Integer, &[Some(Scalar::Str("x".into()))]).is_err()
        );
        let n = Column::from_scalars(FieldType::Number, &[Some(Scalar::Int(2)), None]).unwrap();
        assert_eq!((n.get(0), n.get(1)), (Value::Num(2.0), Value::Null));
    }
}
