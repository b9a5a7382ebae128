//! The in-memory form of one bundle's data, as every input reader produces it and the
//! bundle writer consumes it: cells × features counts in canonical CSR (column indices
//! sorted within a row, no duplicates, no explicit zeros).

use crate::error::Error;

/// Count values, kept integer when every input value is a non-negative integer.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Integer counts.
    U32(Vec<u32>),
    /// Single-precision values (non-integral, or negative).
    F32(Vec<f32>),
    /// Double-precision values (non-integral, or negative).
    F64(Vec<f64>),
}

/// The element type of stored counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// `uint32`.
    Uint32,
    /// `float32`.
    Float32,
    /// `float64`.
    Float64,
}

impl ValueType {
    /// The zarr v3 / numpy name.
    pub fn zarr_name(self) -> &'static str {
        match self {
            ValueType::Uint32 => "uint32",
            ValueType::Float32 => "float32",
            ValueType::Float64 => "float64",
        }
    }

    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            ValueType::Uint32 | ValueType::Float32 => 4,
            ValueType::Float64 => 8,
        }
    }
}

/// Takes the first `n` elements of `v`, keeping the rest in `rest` (cleared first, and
/// given room for as many as `v` had): the taken ones keep the buffer, only the rest is
/// copied.
pub fn take_front<T: Copy>(v: &mut Vec<T>, n: usize, mut rest: Vec<T>) -> Vec<T> {
    rest.clear();
    rest.reserve(v.capacity());
    rest.extend_from_slice(&v[n..]);
    v.truncate(n);
    std::mem::replace(v, rest)
}

impl Values {
    /// No values, of type `t`.
    pub fn empty(t: ValueType) -> Values {
        match t {
            ValueType::Uint32 => Values::U32(Vec::new()),
            ValueType::Float32 => Values::F32(Vec::new()),
            ValueType::Float64 => Values::F64(Vec::new()),
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::U32(v) => v.len(),
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the first `len` values.
    pub fn truncate(&mut self, len: usize) {
        match self {
            Values::U32(v) => v.truncate(len),
            Values::F32(v) => v.truncate(len),
            Values::F64(v) => v.truncate(len),
        }
    }

    /// Copies values `src` to start at `dest` (the ranges may overlap).
    pub fn copy_within(&mut self, src: std::ops::Range<usize>, dest: usize) {
        match self {
            Values::U32(v) => v.copy_within(src, dest),
            Values::F32(v) => v.copy_within(src, dest),
            Values::F64(v) => v.copy_within(src, dest),
        }
    }

    /// Takes the first `n` values, keeping the rest in `spare` (cleared first; of this
    /// type, or it is replaced): the taken ones keep the buffer, only the rest is
    /// copied, into a buffer that may already have room and mapped pages.
    pub fn take_front(&mut self, n: usize, spare: Values) -> Values {
        let spare = if spare.value_type() == self.value_type() {
            spare
        } else {
            self.empty_like(0)
        };
        match (self, spare) {
            (Values::U32(v), Values::U32(r)) => Values::U32(take_front(v, n, r)),
            (Values::F32(v), Values::F32(r)) => Values::F32(take_front(v, n, r)),
            (Values::F64(v), Values::F64(r)) => Values::F64(take_front(v, n, r)),
            _ => unreachable!("the spare buffer's type was checked"),
        }
    }

    /// The element type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Values::U32(_) => ValueType::Uint32,
            Values::F32(_) => ValueType::Float32,
            Values::F64(_) => ValueType::Float64,
        }
    }

    /// Value `i` as f64 (exact for every variant).
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            Values::U32(v) => f64::from(v[i]),
            Values::F32(v) => f64::from(v[i]),
            Values::F64(v) => v[i],
        }
    }

    /// Integer counts when every value is a non-negative integer that fits in u32,
    /// otherwise the values unchanged.
    pub fn narrowed(self) -> Values {
        fn all_counts<T: Copy + Into<f64>>(v: &[T]) -> bool {
            v.iter().all(|&x| {
                let x: f64 = x.into();
                x >= 0.0 && x <= f64::from(u32::MAX) && x.fract() == 0.0
            })
        }
        match self {
            Values::F32(v) if all_counts(&v) => Values::U32(v.iter().map(|&x| x as u32).collect()),
            Values::F64(v) if all_counts(&v) => Values::U32(v.iter().map(|&x| x as u32).collect()),
            other => other,
        }
    }

    fn empty_like(&self, cap: usize) -> Values {
        match self {
            Values::U32(_) => Values::U32(Vec::with_capacity(cap)),
            Values::F32(_) => Values::F32(Vec::with_capacity(cap)),
            Values::F64(_) => Values::F64(Vec::with_capacity(cap)),
        }
    }

    fn push_from(&mut self, other: &Values, i: usize) {
        match (self, other) {
            (Values::U32(a), Values::U32(b)) => a.push(b[i]),
            (Values::F32(a), Values::F32(b)) => a.push(b[i]),
            (Values::F64(a), Values::F64(b)) => a.push(b[i]),
            _ => unreachable!("push_from between different value types"),
        }
    }

    fn is_zero(&self, i: usize) -> bool {
        self.get_f64(i) == 0.0
    }
}

/// A cells × features matrix in canonical CSR form.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    /// Number of rows (cells).
    pub n_rows: usize,
    /// Number of columns (features).
    pub n_cols: usize,
    /// Row pointers, `n_rows + 1` of them, starting at 0.
    pub indptr: Vec<u64>,
    /// Column index of each stored value.
    pub indices: Vec<u32>,
    /// The stored values.
    pub values: Values,
}

impl Csr {
    /// Number of stored (nonzero) values.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// The column range of row `r` in `indices`/`values`.
    pub fn row_range(&self, r: usize) -> std::ops::Range<usize> {
        self.indptr[r] as usize..self.indptr[r + 1] as usize
    }

    /// Builds canonical CSR from raw CSR arrays that may have unsorted columns,
    /// duplicate entries (summed) or explicit zeros (dropped). `what` names the source
    /// in error messages.
    pub fn from_raw(
        what: &str,
        n_rows: usize,
        n_cols: usize,
        indptr: &[u64],
        indices: &[u64],
        values: Values,
    ) -> Result<Csr, Error> {
        if indptr.len() != n_rows + 1 {
            return Err(Error::input(
                what,
                format!(
                    "indptr has {} entries but the matrix has {n_rows} rows",
                    indptr.len()
                ),
            ));
        }
        if indices.len() != values.len() {
            return Err(Error::input(
                what,
                format!("{} indices but {} values", indices.len(), values.len()),
            ));
        }
        if indptr[0] != 0
            || indptr[n_rows] as usize != indices.len()
            || indptr.windows(2).any(|w| w[0] > w[1])
        {
            return Err(Error::input(
                what,
                "indptr is not a non-decreasing 0..nnz sequence",
            ));
        }
        let mut out_indptr = Vec::with_capacity(n_rows + 1);
        out_indptr.push(0u64);
        let mut out_indices = Vec::with_capacity(indices.len());
        let mut out_values = values.empty_like(indices.len());
        let mut order: Vec<usize> = Vec::new();
        for r in 0..n_rows {
            let (s, e) = (indptr[r] as usize, indptr[r + 1] as usize);
            order.clear();
            order.extend(s..e);
            for &i in &order {
                if indices[i] as usize >= n_cols {
                    return Err(Error::input(
                        what,
                        format!(
                            "column index {} out of range (the matrix has {n_cols} columns)",
                            indices[i]
                        ),
                    ));
                }
            }
            let sorted = order.windows(2).all(|w| indices[w[0]] < indices[w[1]]);
            if !sorted {
                order.sort_by_key(|&i| indices[i]);
            }
            let mut k = 0;
            while k < order.len() {
                let i = order[k];
                let mut j = k + 1;
                if j < order.len() && indices[order[j]] == indices[i] {
                    // Duplicates: sum them in f64, then store in the original type.
                    let mut sum = values.get_f64(i);
                    while j < order.len() && indices[order[j]] == indices[i] {
                        sum += values.get_f64(order[j]);
                        j += 1;
                    }
                    if sum != 0.0 {
                        out_indices.push(indices[i] as u32);
                        push_f64(&mut out_values, sum);
                    }
                } else if !values.is_zero(i) {
                    out_indices.push(indices[i] as u32);
                    out_values.push_from(&values, i);
                }
                k = j;
            }
            out_indptr.push(out_indices.len() as u64);
        }
        Ok(Csr {
            n_rows,
            n_cols,
            indptr: out_indptr,
            indices: out_indices,
            values: out_values.narrowed(),
        })
    }

    /// Builds canonical CSR from `(row, col, value)` triplets in any order.
    pub fn from_triplets(
        what: &str,
        n_rows: usize,
        n_cols: usize,
        rows: &[u32],
        cols: &[u32],
        values: Values,
    ) -> Result<Csr, Error> {
        if rows.len() != cols.len() || rows.len() != values.len() {
            return Err(Error::input(what, "triplet arrays differ in length"));
        }
        let mut counts = vec![0u64; n_rows + 1];
        for &r in rows {
            if r as usize >= n_rows {
                return Err(Error::input(
                    what,
                    format!("row index {r} out of range (the matrix has {n_rows} rows)"),
                ));
            }
            counts[r as usize + 1] += 1;
        }
        for i in 0..n_rows {
            counts[i + 1] += counts[i];
        }
        // Counting sort by row; columns are sorted per row by from_raw.
        let mut next = counts.clone();
        let mut perm = vec![0usize; rows.len()];
        for (i, &r) in rows.iter().enumerate() {
            perm[next[r as usize] as usize] = i;
            next[r as usize] += 1;
        }
        let indices: Vec<u64> = perm.iter().map(|&i| u64::from(cols[i])).collect();
        let mut sorted_values = values.empty_like(values.len());
        for &i in &perm {
            sorted_values.push_from(&values, i);
        }
        Csr::from_raw(what, n_rows, n_cols, &counts, &indices, sorted_values)
    }

    /// The transpose of a CSR matrix given as CSC: `indptr` runs over columns.
    pub fn from_csc(
        what: &str,
        n_rows: usize,
        n_cols: usize,
        col_indptr: &[u64],
        row_indices: &[u64],
        values: Values,
    ) -> Result<Csr, Error> {
        if col_indptr.len() != n_cols + 1 {
            return Err(Error::input(
                what,
                format!(
                    "CSC indptr has {} entries but the matrix has {n_cols} columns",
                    col_indptr.len()
                ),
            ));
        }
        if col_indptr[0] != 0
            || col_indptr[n_cols] as usize != row_indices.len()
            || col_indptr.windows(2).any(|w| w[0] > w[1])
        {
            return Err(Error::input(
                what,
                "CSC indptr is not a non-decreasing 0..nnz sequence",
            ));
        }
        let mut rows = Vec::with_capacity(row_indices.len());
        let mut cols = Vec::with_capacity(row_indices.len());
        for c in 0..n_cols {
            for &r in &row_indices[col_indptr[c] as usize..col_indptr[c + 1] as usize] {
                rows.push(u32::try_from(r).map_err(|_| Error::input(what, "row index too large"))?);
                cols.push(c as u32);
            }
        }
        Csr::from_triplets(what, n_rows, n_cols, &rows, &cols, values)
    }

    /// Builds canonical CSR from a dense row-major `n_rows × n_cols` array.
    pub fn from_dense_rows(n_rows: usize, n_cols: usize, dense: &Values) -> Csr {
        let mut indptr = Vec::with_capacity(n_rows + 1);
        indptr.push(0u64);
        let mut indices = Vec::new();
        let mut values = dense.empty_like(0);
        for r in 0..n_rows {
            for c in 0..n_cols {
                let i = r * n_cols + c;
                if !dense.is_zero(i) {
                    indices.push(c as u32);
                    values.push_from(dense, i);
                }
            }
            indptr.push(indices.len() as u64);
        }
        Csr {
            n_rows,
            n_cols,
            indptr,
            indices,
            values: values.narrowed(),
        }
    }
}

fn push_f64(v: &mut Values, x: f64) {
    match v {
        Values::U32(a) => a.push(x as u32),
        Values::F32(a) => a.push(x as f32),
        Values::F64(a) => a.push(x),
    }
}

/// A bundle's features: ids (Ensembl ids where the input has them) and names (gene symbols).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Features {
    /// Feature ids, unique within a bundle.
    pub ids: Vec<String>,
    /// Feature names (gene symbols).
    pub names: Vec<String>,
}

/// Everything a reader extracts from one input: cell ids, features, counts, and the
/// cells' annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceMatrix {
    /// Cell ids (barcodes, column labels, obs names), one per row, unique.
    pub cells: Vec<String>,
    /// The features, one per column.
    pub features: Features,
    /// The counts.
    pub matrix: Csr,
    /// The cell fields the input brings, by stored name (normalised, never a
    /// built-in's: see `field::stored_names`), one value per row.
    pub obs: Vec<(String, crate::field::column::Column)>,
}

impl SourceMatrix {
    /// Checks the shapes agree and the ids are unique; `what` names the source in errors.
    pub fn validate(&self, what: &str) -> Result<(), Error> {
        self.check_shapes(what)?;
        if let Some(d) = first_duplicate(&self.cells) {
            return Err(Error::input(
                what,
                format!("cell id {d:?} appears more than once"),
            ));
        }
        if let Some(d) = first_duplicate(&self.features.ids) {
            return Err(Error::input(
                what,
                format!("feature id {d:?} appears more than once"),
            ));
        }
        Ok(())
    }

    /// The cheap part of [`validate`](Self::validate): ids and matrix agree in shape.
    pub fn check_shapes(&self, what: &str) -> Result<(), Error> {
        let m = &self.matrix;
        if self.cells.len() != m.n_rows {
            return Err(Error::input(
                what,
                format!(
                    "{} cell ids (barcodes) but the matrix has {} cells",
                    self.cells.len(),
                    m.n_rows
                ),
            ));
        }
        if let Some((name, c)) = self.obs.iter().find(|(_, c)| c.len() != m.n_rows) {
            return Err(Error::input(
                what,
                format!(
                    "obs column {name} has {} values for {} cells",
                    c.len(),
                    m.n_rows
                ),
            ));
        }
        if self.features.ids.len() != m.n_cols || self.features.names.len() != m.n_cols {
            return Err(Error::input(
                what,
                format!(
                    "{} feature ids and {} names but the matrix has {} features",
                    self.features.ids.len(),
                    self.features.names.len(),
                    m.n_cols
                ),
            ));
        }
        Ok(())
    }

    /// Rows `range` as a matrix of their own (for one-bundle-per-cell splitting).
    pub fn slice_rows(&self, range: std::ops::Range<usize>) -> SourceMatrix {
        let m = &self.matrix;
        let (s, e) = (m.indptr[range.start] as usize, m.indptr[range.end] as usize);
        let values = match &m.values {
            Values::U32(v) => Values::U32(v[s..e].to_vec()),
            Values::F32(v) => Values::F32(v[s..e].to_vec()),
            Values::F64(v) => Values::F64(v[s..e].to_vec()),
        };
        let rows: Vec<usize> = range.clone().collect();
        SourceMatrix {
            cells: self.cells[range.clone()].to_vec(),
            obs: self
                .obs
                .iter()
                .map(|(n, c)| (n.clone(), c.select(&rows)))
                .collect(),
            features: self.features.clone(),
            matrix: Csr {
                n_rows: range.len(),
                n_cols: m.n_cols,
                indptr: m.indptr[range.start..=range.end]
                    .iter()
                    .map(|p| p - s as u64)
                    .collect(),
                indices: m.indices[s..e].to_vec(),
                values,
            },
        }
    }
}

fn first_duplicate(ids: &[String]) -> Option<&str> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.iter()
        .find(|id| !seen.insert(id.as_str()))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalises_raw_csr() {
        // Row 0: unsorted with a duplicate and an explicit zero; row 1 empty.
        let m = Csr::from_raw(
            "t",
            2,
            4,
            &[0, 4, 4],
            &[3, 1, 3, 0],
            Values::F32(vec![1.0, 2.0, 2.0, 0.0]),
        )
        .unwrap();
        assert_eq!(m.indptr, vec![0, 2, 2]);
        assert_eq!(m.indices, vec![1, 3]);
        assert_eq!(m.values, Values::U32(vec![2, 3]));
    }

    #[test]
    fn keeps_fractional_values() {
        let m = Csr::from_raw("t", 1, 2, &[0, 1], &[1], Values::F64(vec![0.5])).unwrap();
        assert_eq!(m.values, Values::F64(vec![0.5]));
    }

    #[test]
    fn triplets_and_csc_agree() {
        // 2x3: [[1,0,2],[0,3,0]]
        let a = Csr::from_triplets(
            "t",
            2,
            3,
            &[1, 0, 0],
            &[1, 2, 0],
            Values::U32(vec![3, 2, 1]),
        )
        .unwrap();
        let b = Csr::from_csc(
            "t",
            2,
            3,
            &[0, 1, 2, 3],
            &[0, 1, 0],
            Values::U32(vec![1, 3, 2]),
        )
        .unwrap();
        let c = Csr::from_dense_rows(2, 3, &Values::U32(vec![1, 0, 2, 0, 3, 0]));
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn rejects_out_of_range() {
        assert!(Csr::from_raw("t", 1, 2, &[0, 1], &[2], Values::U32(vec![1])).is_err());
        assert!(Csr::from_triplets("t", 1, 2, &[1], &[0], Values::U32(vec![1])).is_err());
    }
}
