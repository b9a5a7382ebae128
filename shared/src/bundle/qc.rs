//! Per-cell QC metrics computed at ingest, as `docs/FORMAT.md` defines them.

use crate::bundle::{Csr, Features};

/// QC metrics of every cell of a matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Qc {
    /// Features with a nonzero count.
    pub n_genes: Vec<u32>,
    /// Sum of counts.
    pub total_counts: Vec<f64>,
    /// 100 × counts in features whose name starts with `MT-` (any case) / total, or 0.
    pub pct_mito: Vec<f64>,
}

/// Whether a feature name marks a mitochondrial gene.
pub fn is_mito(name: &str) -> bool {
    name.len() >= 3 && name.as_bytes()[..3].eq_ignore_ascii_case(b"mt-")
}

/// Computes the metrics. Sums run in column order in f64, which is exact for integer counts.
pub fn compute(m: &Csr, features: &Features) -> Qc {
    let mito: Vec<bool> = features.names.iter().map(|n| is_mito(n)).collect();
    let mut qc = Qc {
        n_genes: Vec::with_capacity(m.n_rows),
        total_counts: Vec::with_capacity(m.n_rows),
        pct_mito: Vec::with_capacity(m.n_rows),
    };
    for r in 0..m.n_rows {
        let range = m.row_range(r);
        let (mut total, mut mt) = (0.0f64, 0.0f64);
        for i in range.clone() {
            let v = m.values.get_f64(i);
            total += v;
            if mito[m.indices[i] as usize] {
                mt += v;
            }
        }
        qc.n_genes.push(range.len() as u32);
        qc.total_counts.push(total);
        qc.pct_mito.push(if total == 0.0 {
            0.0
        } else {
            100.0 * mt / total
        });
    }
    qc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Values;

    #[test]
    fn metrics() {
        let m = Csr::from_dense_rows(2, 3, &Values::U32(vec![1, 3, 0, 0, 0, 0]));
        let f = Features {
            ids: vec!["a".into(), "b".into(), "c".into()],
            names: vec!["ACTB".into(), "mt-Co1".into(), "MT-ND1".into()],
        };
        let qc = compute(&m, &f);
        assert_eq!(qc.n_genes, vec![2, 0]);
        assert_eq!(qc.total_counts, vec![4.0, 0.0]);
        assert_eq!(qc.pct_mito, vec![75.0, 0.0]);
        assert!(!is_mito("MTOR"));
    }
}
