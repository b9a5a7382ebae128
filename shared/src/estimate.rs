//! The dry run's estimates, purely: a request's output size per format, its work for the
//! time model ([`crate::calibration`]), and its cost through [`crate::cost::Usage`].
//! Each figure carries the text of what it assumes. The size formulas are the ones the
//! per-request caps check (`handlers::driver::limits`).

use serde::Serialize;

use crate::bundle::ValueType;
use crate::calibration::{Calibration, Seconds, Work};
use crate::convert::Format;
use crate::convert::format::FORMATS;
use crate::cost::{Bill, Deployment, Lambda, Prices, Requests, Usage};
use crate::layout::{OUT_NNZ_PER_CHUNK, OUT_ROWS_PER_CHUNK, shard_layout};
use crate::plan::Task;

/// The uncompressed size of a CSR matrix: each nonzero's value and column index, and a
/// row pointer per cell.
pub fn sparse_bytes(cells: u64, nnz: u64, value_type: ValueType) -> u64 {
    nnz.saturating_mul(value_type.size() as u64 + 4)
        .saturating_add(cells.saturating_add(1).saturating_mul(8))
}

/// The values of a dense matrix, zeros included.
pub fn dense_bytes(cells: u64, genes: u64, value_type: ValueType) -> u64 {
    cells
        .saturating_mul(genes)
        .saturating_mul(value_type.size() as u64)
}

/// One format's estimated size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FormatSize {
    /// The format.
    pub format: &'static str,
    /// Bytes.
    pub bytes: u64,
    /// What the figure assumes.
    pub assumes: String,
}

/// What the output holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Output {
    /// Cells.
    pub cells: u64,
    /// Genes.
    pub genes: u64,
    /// Nonzeros.
    pub nnz: u64,
    /// The values' type.
    pub value_type: ValueType,
}

/// Characters of a value written as text: a count's few digits, a float's shortest
/// round trip.
fn value_chars(value_type: ValueType) -> u64 {
    match value_type {
        ValueType::Uint32 => 2,
        ValueType::Float32 => 9,
        ValueType::Float64 => 17,
    }
}

fn digits(n: u64) -> u64 {
    n.max(1).ilog10() as u64 + 1
}

/// The output's size in every format.
pub fn sizes(o: &Output) -> Vec<FormatSize> {
    let sparse = sparse_bytes(o.cells, o.nnz, o.value_type);
    let dense = dense_bytes(o.cells, o.genes, o.value_type);
    FORMATS
        .iter()
        .map(|f| {
            let (bytes, assumes) = match f.format {
                Format::Zarr | Format::H5ad => (
                    sparse,
                    "uncompressed CSR: each nonzero's value and 4-byte column index, 8 bytes \
                     of row pointer per cell (the size the caps check); compression makes \
                     the files smaller, obs and var add a little"
                        .to_string(),
                ),
                Format::Mtx => {
                    let line = digits(o.genes) + digits(o.cells) + value_chars(o.value_type) + 3;
                    (
                        o.nnz.saturating_mul(line),
                        format!(
                            "one text line of about {line} characters per nonzero (gene, cell, \
                             value), before gzip"
                        ),
                    )
                }
                Format::Loom => (
                    dense,
                    "dense: every cell × gene value, zeros included, uncompressed (the size \
                     the cap checks)"
                        .to_string(),
                ),
                Format::Csv => {
                    let zeros = dense / (o.value_type.size() as u64).max(1);
                    let chars = zeros
                        .saturating_sub(o.nnz)
                        .saturating_mul(2)
                        .saturating_add(o.nnz.saturating_mul(value_chars(o.value_type) + 1));
                    (
                        chars,
                        "dense text: \"0,\" per zero and the value and a comma per nonzero, \
                         before gzip"
                            .to_string(),
                    )
                }
            };
            FormatSize {
                format: f.name,
                bytes,
                assumes,
            }
        })
        .collect()
}

/// The planner's tasks over every group, as the mappers and the driver plan them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tasks {
    /// Worker tasks.
    pub tasks: u64,
    /// Slices (a task's rows of one bundle) in all.
    pub slices: u64,
    /// Bytes the tasks read, as the planner counts them.
    pub bytes: u64,
    /// The largest task's planned bytes.
    pub largest_task_bytes: u64,
    /// The largest task's cells.
    pub largest_task_cells: u64,
}

impl Tasks {
    /// Sums `tasks`.
    pub fn of<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> Tasks {
        let mut out = Tasks {
            tasks: 0,
            slices: 0,
            bytes: 0,
            largest_task_bytes: 0,
            largest_task_cells: 0,
        };
        for t in tasks {
            out.tasks += 1;
            out.slices += t.slices.len() as u64;
            out.bytes += t.bytes;
            if t.bytes >= out.largest_task_bytes {
                out.largest_task_bytes = t.bytes;
                out.largest_task_cells = t.cells;
            }
        }
        out
    }
}

/// What the cost model needs besides the tasks and the output.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// The requested format.
    pub format: Format,
    /// Its estimated size.
    pub format_bytes: u64,
    /// Mapper groups.
    pub groups: u64,
    /// Groups the driver plans itself.
    pub driver_groups: u64,
    /// Copies of each worker event.
    pub copies: u32,
    /// Nonzeros per consolidation shard (`Config::shard_nnz`).
    pub shard_nnz: u64,
    /// The collector's poll, seconds.
    pub poll_seconds: f64,
    /// Obs columns of the output.
    pub columns: u64,
}

/// Seconds assumed for a driver's or a mapper's invocation (the calibration does not
/// time them one by one).
pub const PLANNING_SECONDS: f64 = 0.5;
/// Store requests a worker makes per slice (indptr, indices, data, cell ids and the
/// three QC columns, about one each).
pub const GETS_PER_SLICE: u64 = 7;
/// Lists a collector's look makes (plans, done markers, starts, errors).
pub const LISTS_PER_LOOK: u64 = 4;

/// The estimated time and cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// Consolidation shards.
    pub shards: u32,
    /// Seconds by phase.
    pub seconds: Seconds,
    /// What the run would use.
    pub usage: Usage,
    /// Its price.
    pub bill: Bill,
}

/// The time on `calibration` and the cost at `prices` of `tasks` making `out`.
pub fn estimate(
    out: &Output,
    tasks: &Tasks,
    s: &Setting,
    calibration: &Calibration,
    deployment: &Deployment,
    prices: &Prices,
) -> Estimate {
    let (_, shards) = shard_layout(out.nnz, s.shard_nnz);
    let converted_bytes = if s.format == Format::Zarr {
        0
    } else {
        s.format_bytes
    };
    let work = Work {
        tasks: tasks.tasks,
        task_bytes: tasks.bytes,
        largest_task_bytes: tasks.largest_task_bytes,
        nnz: out.nnz,
        converted_bytes,
    };
    let seconds = calibration.seconds(&work);
    let mut u = Usage::default();
    let ms = |s: f64| s * 1e3;
    u.invocation(Lambda::Driver, ms(PLANNING_SECONDS), deployment);
    for _ in s.driver_groups.min(s.groups)..s.groups {
        u.invocation(Lambda::Mapper, ms(PLANNING_SECONDS), deployment);
    }
    let rate = calibration.task_bytes_per_second.max(1.0);
    // Every task at its own bytes' share; the copies of a small request bill twice.
    let per_task = ms(tasks.bytes as f64 / rate / tasks.tasks.max(1) as f64);
    for _ in 0..tasks.tasks * u64::from(s.copies.max(1)) {
        u.invocation(Lambda::Worker, per_task, deployment);
    }
    // The collector runs the whole request; the shards share the consolidation.
    u.invocation(Lambda::Reducer, ms(seconds.total), deployment);
    let per_shard = ms(seconds.consolidation);
    for _ in 0..shards {
        u.invocation(Lambda::Reducer, per_shard, deployment);
    }
    if s.format != Format::Zarr {
        u.invocation(Lambda::Reducer, ms(seconds.conversion), deployment);
    }
    let looks = (seconds.total / s.poll_seconds.max(0.01)).ceil() as u64;
    let out_chunks = out.nnz.div_ceil(OUT_NNZ_PER_CHUNK) * 2
        + out.cells.div_ceil(OUT_ROWS_PER_CHUNK) * (2 + s.columns);
    let groups_puts = 2 * s.groups;
    u.requests = Requests {
        get: tasks.slices * GETS_PER_SLICE + tasks.tasks * 8 + looks,
        // Per task: a start marker, its part's arrays, a done marker.
        put: tasks.tasks * 12 + out_chunks + groups_puts + u64::from(shards) * 2 + 6,
        list: looks * LISTS_PER_LOOK,
        delete: tasks.tasks * 12,
    };
    let bill = u.bill(prices);
    Estimate {
        shards,
        seconds,
        usage: u,
        bill,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out() -> Output {
        Output {
            cells: 1_000,
            genes: 2_000,
            nnz: 100_000,
            value_type: ValueType::Uint32,
        }
    }

    #[test]
    fn the_sizes_follow_the_caps_formulas() {
        let s = sizes(&out());
        let of = |name: &str| s.iter().find(|f| f.format == name).unwrap().bytes;
        assert_eq!(of("zarr"), sparse_bytes(1_000, 100_000, ValueType::Uint32));
        assert_eq!(of("h5ad"), 100_000 * 8 + 1_001 * 8);
        assert_eq!(of("loom"), 1_000 * 2_000 * 4);
        // 1.9 M zeros of 2 characters and 100 k values of 3.
        assert_eq!(of("csv"), 1_900_000 * 2 + 100_000 * 3);
        // gene (4 digits) + cell (4) + value (2) + 3.
        assert_eq!(of("mtx"), 100_000 * 13);
        assert!(s.iter().all(|f| !f.assumes.is_empty()));
        assert_eq!(s.len(), FORMATS.len());
    }

    #[test]
    fn the_cost_is_the_bill_of_the_modeled_invocations() {
        let tasks = Tasks {
            tasks: 4,
            slices: 10,
            bytes: 400_000_000,
            largest_task_bytes: 100_000_000,
            largest_task_cells: 5_000,
        };
        let setting = Setting {
            format: Format::H5ad,
            format_bytes: 100_000_000,
            groups: 10,
            driver_groups: 8,
            copies: 2,
            shard_nnz: 1 << 24,
            poll_seconds: 0.1,
            columns: 3,
        };
        let d = Deployment::default();
        let p = Prices::default();
        let e = estimate(&out(), &tasks, &setting, &Calibration::default(), &d, &p);
        // Driver, two mappers, 8 worker copies, the collector, one shard, the conversion.
        assert_eq!(e.usage.invocations, [1, 2, 8, 3]);
        assert_eq!(e.shards, 1);
        assert_eq!(e.bill, e.usage.bill(&p));
        assert!(e.bill.total_usd > 0.0);
        // 400 MB at 100 MB/s: 1 s a task, each billed twice at 2 GB.
        assert!((e.usage.gb_seconds[2] - 16.0).abs() < 1e-9, "{:?}", e.usage);
        assert!(e.seconds.conversion > 0.0);
    }
}
