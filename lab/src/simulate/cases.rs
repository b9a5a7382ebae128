//! The requests simulated: their bundles, as the catalog describes them to the planner.

use std::collections::HashMap;

use cellmatrix::fqid::Fqid;
use cellmatrix::plan::PlanBundle;

use super::model::{Calibration, KindRate};

/// Rows per chunk of an ingested bundle (`Layout`'s default).
const ROWS_PER_CHUNK: u64 = 1024;
/// Bytes read per nonzero: a u32 index and a u32 count (`CatalogEntry::plan_bundle`).
const BYTES_PER_NNZ: u64 = 8;

/// A bundle's kind: which calibration figures apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 10x-like: many sparse cells.
    Tenx,
    /// SmartSeq2-like: one deep cell.
    SmartSeq2,
}

/// One simulated request.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its short name (`million`, `smartseq2`).
    pub name: &'static str,
    /// What it holds, for the report.
    pub description: String,
    /// The bundles in request order, as the planner sees them.
    pub bundles: Vec<PlanBundle>,
    /// Each bundle's kind.
    pub kinds: HashMap<Fqid, Kind>,
}

impl Case {
    /// Cells in the request.
    pub fn cells(&self) -> u64 {
        self.bundles.iter().map(|b| b.n_cells).sum()
    }

    /// The figures of a bundle's kind.
    pub fn rate<'c>(&self, c: &'c Calibration, fqid: &Fqid) -> &'c KindRate {
        match self.kinds.get(fqid) {
            Some(Kind::Tenx) => &c.tenx,
            _ => &c.smartseq2,
        }
    }
}

fn bundle(i: u64, n_cells: u64, nnz_per_cell: f64) -> PlanBundle {
    let fqid = Fqid::new(
        uuid::Uuid::from_u128(u128::from(i) + 1),
        time::macros::datetime!(2020-01-01 00:00 UTC),
    );
    let chunk_offsets = (0..=n_cells.div_ceil(ROWS_PER_CHUNK))
        .map(|c| ((c * ROWS_PER_CHUNK).min(n_cells) as f64 * nnz_per_cell).round() as u64)
        .collect();
    PlanBundle {
        fqid,
        n_cells,
        rows_per_chunk: ROWS_PER_CHUNK,
        chunk_offsets,
        bytes_per_nnz: BYTES_PER_NNZ,
    }
}

/// `tenx` bundles of `tenx_cells` cells spread evenly among `ss2` one-cell bundles.
pub fn mix(
    name: &'static str,
    tenx: u64,
    tenx_cells: u64,
    ss2: u64,
    c: &Calibration,
    description: String,
) -> Case {
    let total = tenx + ss2;
    let every = total.checked_div(tenx).unwrap_or(u64::MAX);
    let mut bundles = Vec::with_capacity(total as usize);
    let mut kinds = HashMap::with_capacity(total as usize);
    let mut placed = 0;
    for i in 0..total {
        let is_tenx = placed < tenx && i % every == 0;
        let b = if is_tenx {
            placed += 1;
            bundle(i, tenx_cells, c.tenx.nnz_per_cell())
        } else {
            bundle(i, 1, c.smartseq2.nnz_per_cell())
        };
        kinds.insert(
            b.fqid.clone(),
            if is_tenx { Kind::Tenx } else { Kind::SmartSeq2 },
        );
        bundles.push(b);
    }
    Case {
        name,
        description,
        bundles,
        kinds,
    }
}

/// 10,000 bundles, 1,000,000 cells: 400 10x bundles of 2,476 cells (990,400 cells)
/// spread evenly among 9,600 one-cell SmartSeq2 bundles.
pub fn million(c: &Calibration) -> Case {
    mix(
        "million",
        400,
        2_476,
        9_600,
        c,
        "10,000 bundles / 1,000,000 cells: 400 10x bundles × 2,476 cells + 9,600 one-cell SmartSeq2"
            .into(),
    )
}

/// The old system's case: 4,500 one-cell SmartSeq2 bundles.
pub fn smartseq2(c: &Calibration) -> Case {
    mix(
        "smartseq2",
        0,
        0,
        4_500,
        c,
        "4,500 one-cell SmartSeq2 bundles".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cases_hold_what_they_say() {
        let c = Calibration::default();
        let m = million(&c);
        assert_eq!(m.bundles.len(), 10_000);
        assert_eq!(m.cells(), 1_000_000);
        let tenx = m.kinds.values().filter(|&&k| k == Kind::Tenx).count();
        assert_eq!(tenx, 400);
        let s = smartseq2(&c);
        assert_eq!((s.bundles.len(), s.cells()), (4_500, 4_500));
    }
}
