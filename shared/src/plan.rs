//! The planner: bundles and a per-worker budget in, worker tasks out. Pure and
//! deterministic; the mapper calls it, tests check its bounds.
//!
//! Bundles are cut into units on row-chunk boundaries (a SmartSeq2 bundle is one unit;
//! a chunk larger than the budget is cut further)
//! and units are filled into tasks in order, closing a task when the next unit would
//! take it over either budget. Consecutive units of one bundle in a task form one slice.
//! So small bundles are packed many to a task, large ones are split on chunk boundaries,
//! and every task but the last is full to within one unit: the task count stays within
//! one unit per task of `ceil(total / budget)`.

use std::ops::Range;

use sha2::{Digest, Sha256};

use crate::fqid::Fqid;

/// What the planner needs to know of a bundle (all of it is in the catalog).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanBundle {
    /// The bundle.
    pub fqid: Fqid,
    /// Its cells.
    pub n_cells: u64,
    /// Rows per chunk; slices start and end on multiples of it.
    pub rows_per_chunk: u64,
    /// Nonzeros before each row chunk and at the end (`n_chunks + 1` values).
    pub chunk_offsets: Vec<u64>,
    /// Bytes read per nonzero (index + value).
    pub bytes_per_nnz: u64,
}

/// A worker's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Most cells per task.
    pub cells: u64,
    /// Most bytes of bundle data read per task, with `slice_bytes` charged per slice.
    pub bytes: u64,
    /// Bytes charged against `bytes` for every slice a task opens, on top of what it
    /// reads: a slice costs a few request round trips whatever its size, so a task of
    /// thousands of one-cell bundles is latency-bound long before it is byte-bound.
    /// 0 charges nothing.
    pub slice_bytes: u64,
}

/// Rows of one bundle that a task reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Slice {
    /// The bundle.
    pub fqid: Fqid,
    /// The rows.
    pub rows: Range<u64>,
}

/// One worker task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Task {
    /// Derived from the slices: the same work always has the same id.
    pub id: String,
    /// What to read, in order.
    pub slices: Vec<Slice>,
    /// Cells in the slices.
    pub cells: u64,
    /// Estimated bytes read.
    pub bytes: u64,
}

/// Bytes a worker reads for `rows` rows holding `nnz` nonzeros: the nonzeros and the
/// row pointers.
fn cost_bytes(rows: u64, nnz: u64, bytes_per_nnz: u64) -> u64 {
    nnz * bytes_per_nnz + rows * 8
}

/// A piece of a bundle that is never split across tasks.
struct Unit<'a> {
    fqid: &'a Fqid,
    rows: Range<u64>,
    bytes: u64,
}

fn units(b: &PlanBundle, budget: Budget) -> impl Iterator<Item = Unit<'_>> {
    let rpc = b.rows_per_chunk.max(1);
    let n_chunks = b.n_cells.div_ceil(rpc);
    (0..n_chunks).flat_map(move |c| {
        let rows = c * rpc..((c + 1) * rpc).min(b.n_cells);
        let n = rows.end - rows.start;
        let nnz = match (
            b.chunk_offsets.get(c as usize),
            b.chunk_offsets.get(c as usize + 1),
        ) {
            (Some(a), Some(z)) if z >= a => z - a,
            // Offsets missing or inconsistent: assume the bundle's average density.
            _ => {
                let total = b.chunk_offsets.last().copied().unwrap_or(0);
                total * n / b.n_cells.max(1)
            }
        };
        let bytes = cost_bytes(n, nnz, b.bytes_per_nnz);
        // A chunk over the budget is cut into row ranges that fit (a few more chunk
        // reads, but no task over budget); bytes are shared out by rows.
        let by_cells = n.div_ceil(budget.cells.max(1));
        let by_bytes = bytes.div_ceil(budget.bytes.max(1));
        let pieces = by_cells.max(by_bytes).clamp(1, n.max(1));
        (0..pieces).map(move |i| {
            let start = rows.start + n * i / pieces;
            let end = rows.start + n * (i + 1) / pieces;
            Unit {
                fqid: &b.fqid,
                bytes: bytes * (end - start) / n.max(1),
                rows: start..end,
            }
        })
    })
}

/// Plans tasks for `bundles` (in the given order) under `budget`. A chunk with more cells
/// or bytes than a task may hold is split within the chunk; only a single row over the
/// byte budget can exceed it (it gets a task of its own).
pub fn plan(bundles: &[PlanBundle], budget: Budget) -> Vec<Task> {
    let mut tasks = Vec::new();
    let mut current: Vec<Slice> = Vec::new();
    // `charged`: the bytes read plus `slice_bytes` per slice, held to the byte budget.
    let (mut cells, mut bytes, mut charged) = (0u64, 0u64, 0u64);
    for unit in bundles.iter().flat_map(|b| units(b, budget)) {
        let n = unit.rows.end - unit.rows.start;
        let extends = current
            .last()
            .is_some_and(|last| &last.fqid == unit.fqid && last.rows.end == unit.rows.start);
        let charge = unit
            .bytes
            .saturating_add(if extends { 0 } else { budget.slice_bytes });
        if !current.is_empty()
            && (cells + n > budget.cells || charged.saturating_add(charge) > budget.bytes)
        {
            tasks.push(finish(std::mem::take(&mut current), cells, bytes));
            (cells, bytes, charged) = (0, 0, 0);
        }
        let charge = unit
            .bytes
            .saturating_add(budget.slice_bytes * u64::from(!extends || current.is_empty()));
        match current.last_mut() {
            Some(last) if &last.fqid == unit.fqid && last.rows.end == unit.rows.start => {
                last.rows.end = unit.rows.end
            }
            _ => current.push(Slice {
                fqid: unit.fqid.clone(),
                rows: unit.rows,
            }),
        }
        cells += n;
        bytes += unit.bytes;
        charged = charged.saturating_add(charge);
    }
    if !current.is_empty() {
        tasks.push(finish(current, cells, bytes));
    }
    tasks
}

fn finish(slices: Vec<Slice>, cells: u64, bytes: u64) -> Task {
    let mut h = Sha256::new();
    for s in &slices {
        h.update(s.fqid.as_str().as_bytes());
        h.update(s.rows.start.to_le_bytes());
        h.update(s.rows.end.to_le_bytes());
    }
    Task {
        id: hex::encode(&h.finalize()[..12]),
        slices,
        cells,
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bundle(i: u64, n_cells: u64, rpc: u64, nnz_per_cell: u64) -> PlanBundle {
        let fqid = Fqid::new(
            uuid::Uuid::from_u128(u128::from(i) + 1),
            time::macros::datetime!(2020-01-01 00:00 UTC),
        );
        let chunk_offsets = (0..=n_cells.div_ceil(rpc))
            .map(|c| (c * rpc).min(n_cells) * nnz_per_cell)
            .collect();
        PlanBundle {
            fqid,
            n_cells,
            rows_per_chunk: rpc,
            chunk_offsets,
            bytes_per_nnz: 8,
        }
    }

    /// A mix like the real one: many one-cell SmartSeq2 bundles, some 10x bundles of
    /// thousands to hundreds of thousands of cells.
    fn mixed() -> impl Strategy<Value = Vec<PlanBundle>> {
        let ss2 = (1u64..3, 2_000u64..8_000).prop_map(|(n, nnz)| (n, 1024, nnz));
        let tenx = (1_000u64..200_000, 500u64..3_000).prop_map(|(n, nnz)| (n, 1024, nnz));
        prop::collection::vec(prop_oneof![3 => ss2, 1 => tenx], 1..200).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (n, rpc, nnz))| bundle(i as u64, n, rpc, nnz))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn covers_every_cell_once_within_budget_and_near_optimal(bundles in mixed(), cells in 40_000u64..120_000) {
            let budget = Budget { cells, bytes: u64::MAX, slice_bytes: 0 };
            let tasks = plan(&bundles, budget);
            // Every row of every bundle exactly once, slices on chunk boundaries.
            let mut seen: Vec<(Fqid, Range<u64>)> = tasks.iter().flat_map(|t| t.slices.iter().map(|s| (s.fqid.clone(), s.rows.clone()))).collect();
            seen.sort_by(|a, b| (&a.0, a.1.start).cmp(&(&b.0, b.1.start)));
            for b in &bundles {
                let mut next = 0;
                for (_, r) in seen.iter().filter(|(f, _)| f == &b.fqid) {
                    prop_assert_eq!(r.start, next);
                    prop_assert!(r.start % b.rows_per_chunk == 0);
                    prop_assert!(r.end % b.rows_per_chunk == 0 || r.end == b.n_cells);
                    next = r.end;
                }
                prop_assert_eq!(next, b.n_cells);
            }
            for t in &tasks {
                prop_assert!(t.cells <= budget.cells);
                prop_assert_eq!(t.cells, t.slices.iter().map(|s| s.rows.end - s.rows.start).sum::<u64>());
            }
            let total: u64 = bundles.iter().map(|b| b.n_cells).sum();
            let optimum = total.div_ceil(budget.cells);
            prop_assert!(tasks.len() as f64 <= (optimum as f64 * 1.05).max(optimum as f64 + 1.0),
                "{} tasks for optimum {optimum}", tasks.len());
            // Deterministic, ids from content.
            prop_assert_eq!(&plan(&bundles, budget), &tasks);
            let ids: std::collections::BTreeSet<_> = tasks.iter().map(|t| &t.id).collect();
            prop_assert_eq!(ids.len(), tasks.len());
        }

        #[test]
        fn the_byte_budget_holds_too(bundles in mixed(), mb in 100u64..1000) {
            // Budgets of at least four of the largest units (a 1,024-row chunk of the
            // densest bundle), as a real worker's memory is.
            let budget = Budget { cells: u64::MAX, bytes: mb << 20, slice_bytes: 0 };
            let tasks = plan(&bundles, budget);
            let max_unit = 1024 * 3_000 * 8 + 1024 * 8;
            for t in &tasks {
                prop_assert!(t.bytes <= budget.bytes, "{} > {}", t.bytes, budget.bytes);
            }
            // Every task but the last was closed because the next unit did not fit, so
            // it holds more than budget - max_unit bytes.
            let total: u64 = tasks.iter().map(|t| t.bytes).sum();
            let bound = total / (budget.bytes - max_unit) + 1;
            prop_assert!(tasks.len() as u64 <= bound, "{} tasks, bound {bound}", tasks.len());
        }
    }

    #[test]
    fn a_chunk_larger_than_the_budget_is_cut_to_fit() {
        let bundles = vec![bundle(0, 2_500, 1024, 100)];
        let budget = Budget {
            cells: 300,
            bytes: u64::MAX,
            slice_bytes: 0,
        };
        let tasks = plan(&bundles, budget);
        assert!(tasks.iter().all(|t| t.cells <= 300), "{tasks:?}");
        assert_eq!(tasks.iter().map(|t| t.cells).sum::<u64>(), 2_500);
        let rows: Vec<_> = tasks
            .iter()
            .flat_map(|t| t.slices.iter().map(|s| s.rows.clone()))
            .collect();
        assert!(rows.windows(2).all(|w| w[0].end == w[1].start), "{rows:?}");
        let by_bytes = plan(
            &bundles,
            Budget {
                cells: u64::MAX,
                bytes: 100_000,
                slice_bytes: 0,
            },
        );
        assert!(by_bytes.iter().all(|t| t.bytes <= 100_000), "{by_bytes:?}");
    }

    #[test]
    fn a_task_of_dense_cells_closes_on_bytes_before_cells() {
        // The default cell and byte budgets, without the per-slice charge (tested on
        // its own), so that only the bytes of the cells count.
        let budget = Budget {
            cells: 50_000,
            bytes: 512 << 20,
            slice_bytes: 0,
        };
        // One-cell SmartSeq2 bundles detecting 6,000 genes: 48 KB a cell as the worker
        // reads it (an int32 index and a u32 count per nonzero, and a row pointer).
        let cell = 6_000 * 8 + 8;
        let dense: Vec<PlanBundle> = (0..20_000).map(|i| bundle(i, 1, 1024, 6_000)).collect();
        let tasks = plan(&dense, budget);
        assert_eq!(tasks[0].cells, budget.bytes / cell);
        assert!(tasks[0].cells < budget.cells / 4, "{}", tasks[0].cells);
        assert!(tasks[0].bytes > budget.bytes - cell, "{}", tasks[0].bytes);
        // 10x cells of 1,200 nonzeros (9.6 KB a cell) under the same budget: the cells
        // run out first, at 48 row chunks, far below the bytes.
        let sparse = vec![bundle(0, 200_000, 1024, 1_200)];
        let tasks = plan(&sparse, budget);
        assert_eq!(tasks[0].cells, 48 * 1024);
        assert!(tasks[0].bytes < budget.bytes, "{}", tasks[0].bytes);
    }

    #[test]
    fn packs_smartseq2_and_splits_10x() {
        let mut bundles: Vec<PlanBundle> = (0..100).map(|i| bundle(i, 1, 1024, 5_000)).collect();
        bundles.push(bundle(100, 10_000, 1024, 1_000));
        let tasks = plan(
            &bundles,
            Budget {
                cells: 4_096,
                bytes: u64::MAX,
                slice_bytes: 0,
            },
        );
        // 100 one-cell bundles and the first 3 chunks (3,072 rows) of the 10x bundle fill
        // task 0 (3,172 cells; a 4th chunk would exceed 4,096).
        assert_eq!(tasks[0].slices.len(), 101);
        assert_eq!(tasks[0].cells, 100 + 3 * 1024);
        assert_eq!(
            tasks[1].slices,
            vec![Slice {
                fqid: bundles[100].fqid.clone(),
                rows: 3072..7168
            }]
        );
        assert_eq!(tasks[2].slices[0].rows, 7168..10_000);
        assert_eq!(tasks.len(), 3);
    }

    #[test]
    fn a_per_slice_charge_splits_tasks_of_many_small_bundles() {
        // 1,000 one-cell bundles of 40 kB: 249 to a task by bytes alone, but with 1 MB
        // charged per slice each task holds 9 (9 × 1.04 MB ≤ 10 MB < 10 × 1.04 MB).
        let bundles: Vec<PlanBundle> = (0..1000).map(|i| bundle(i, 1, 1024, 5_000)).collect();
        let budget = |slice_bytes| Budget {
            cells: u64::MAX,
            bytes: 10_000_000,
            slice_bytes,
        };
        assert_eq!(plan(&bundles, budget(0)).len(), 5);
        let charged = plan(&bundles, budget(1_000_000));
        assert!(
            charged[..charged.len() - 1]
                .iter()
                .all(|t| t.slices.len() == 9)
        );
        assert_eq!(charged.len(), 1000usize.div_ceil(9));
        // What a task reads is still its bytes, without the charge.
        assert_eq!(charged[0].bytes, 9 * (5_000 * 8 + 8));
        // The rows of one bundle in one task are one slice: charged once.
        let big = vec![bundle(0, 10_000, 1024, 100)];
        let tasks = plan(&big, budget(1_000_000));
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].slices.len(), 1);
        // A charge larger than the budget still makes progress: a slice per task.
        let tiny = plan(&bundles[..5], budget(u64::MAX));
        assert_eq!(tiny.len(), 5);
    }
}
