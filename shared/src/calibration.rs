//! The service's calibration: how fast its recent runs went, per byte a task read, per
//! nonzero consolidated and per byte converted, as exponentially weighted means. The
//! collector updates it when a request succeeds ([`learn`]); the dry run's time estimate
//! reads it ([`load`]). It lives at one fixed key, [`KEY`]: nothing of a request goes into
//! the key.
//!
//! Best effort throughout: a calibration that cannot be read is the defaults, one that
//! cannot be written is logged, and two collectors finishing at once may each overwrite
//! the other's update (one run's figures lost, which the mean does not miss).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::messages::TaskId;
use crate::state::{DoneMarker, Plan, ResultRecord, get_json, put_json};
use crate::store::DynStore;

/// Where the calibration is kept: a constant, never built from input.
pub const KEY: &str = "service/calibration.json";

/// The weight of the newest run in each mean: a few runs move it, one odd run does not
/// take it over.
pub const WEIGHT: f64 = 0.3;

/// The calibration: rates the service measured on its own recent runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Successful runs it has seen; 0 for the defaults.
    pub runs: u64,
    /// Bytes a worker task reads per second of its wall time, the bytes as the planner
    /// counts them (nonzeros × (value + index) + 8 per row).
    pub task_bytes_per_second: f64,
    /// Tasks running at once in the workers' phase: the tasks' summed time over the
    /// phase's wall time.
    pub worker_concurrency: f64,
    /// Bytes the workers read per second of the workers' phase with `worker_concurrency`
    /// tasks at once: learnt whole, not as the task rate times the concurrency, since
    /// tasks sharing a machine's cores each go slower.
    #[serde(default = "default_worker_bytes_per_second")]
    pub worker_bytes_per_second: f64,
    /// Output nonzeros the consolidation writes per second of its wall time.
    pub consolidation_nnz_per_second: f64,
    /// Output bytes a conversion writes per second.
    pub conversion_bytes_per_second: f64,
    /// Seconds a run takes besides its tasks, consolidation and conversion as these
    /// rates model them: resolving, planning, invocations, the collector's polls.
    pub fixed_seconds: f64,
    /// When it was last updated, ms since the epoch.
    pub updated_ms: u64,
}

impl Default for Calibration {
    /// Before any run: rates of the embedded stack on a laptop (one 2-core machine, 4
    /// workers at once), documented in `docs/decisions/0056-dry-run-and-calibration.md`.
    fn default() -> Self {
        Calibration {
            runs: 0,
            task_bytes_per_second: 100e6,
            worker_concurrency: 2.0,
            worker_bytes_per_second: default_worker_bytes_per_second(),
            consolidation_nnz_per_second: 50e6,
            conversion_bytes_per_second: 50e6,
            fixed_seconds: 1.0,
            updated_ms: 0,
        }
    }
}

fn default_worker_bytes_per_second() -> f64 {
    200e6
}

/// What a request's work amounts to, as the time model sees it: measured for a run that
/// ended, planned for a dry run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Work {
    /// Worker tasks.
    pub tasks: u64,
    /// Bytes the tasks read, as the planner counts them.
    pub task_bytes: u64,
    /// The largest task's bytes.
    pub largest_task_bytes: u64,
    /// Output nonzeros.
    pub nnz: u64,
    /// Bytes the conversion writes; 0 for zarr (no conversion).
    pub converted_bytes: u64,
}

/// Seconds by phase, as [`Calibration::seconds`] models them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Seconds {
    /// Resolving, planning, invocations, polls.
    pub fixed: f64,
    /// The workers' phase.
    pub workers: f64,
    /// The largest task alone.
    pub largest_task: f64,
    /// The consolidation.
    pub consolidation: f64,
    /// The conversion.
    pub conversion: f64,
    /// All of it.
    pub total: f64,
}

impl Calibration {
    /// The time `work` takes: the fixed part, the tasks' bytes at the workers' rate
    /// (scaled down when there are fewer tasks than run at once; never less than the
    /// largest task at the task rate), the consolidation and the conversion at theirs.
    pub fn seconds(&self, work: &Work) -> Seconds {
        let largest_task = work.largest_task_bytes as f64 / self.task_bytes_per_second.max(1.0);
        let workers = if work.tasks == 0 {
            0.0
        } else {
            (work.task_bytes as f64 / self.workers_rate(work.tasks)).max(largest_task)
        };
        let consolidation = work.nnz as f64 / self.consolidation_nnz_per_second.max(1.0);
        let conversion = work.converted_bytes as f64 / self.conversion_bytes_per_second.max(1.0);
        let fixed = self.fixed_seconds.max(0.0);
        Seconds {
            fixed,
            workers,
            largest_task,
            consolidation,
            conversion,
            total: fixed + workers + consolidation + conversion,
        }
    }

    /// Bytes per second of the workers' phase for `tasks` tasks.
    fn workers_rate(&self, tasks: u64) -> f64 {
        let concurrency = self.worker_concurrency.max(1.0);
        let at_once = concurrency.min(tasks as f64).max(1.0);
        (self.worker_bytes_per_second * at_once / concurrency).max(1.0)
    }

    /// The calibration after a run that did `work` in these measured times: each rate
    /// the run measured moved [`WEIGHT`] of the way towards it (taken whole on the first
    /// run), and the fixed part the rest of the run's time under the new rates.
    pub fn updated(&self, work: &Work, measured: &Measured, now_ms: u64) -> Calibration {
        let first = self.runs == 0;
        let mean = |old: f64, new: Option<f64>| match new {
            Some(x) if x.is_finite() && x > 0.0 => {
                if first {
                    x
                } else {
                    old + WEIGHT * (x - old)
                }
            }
            _ => old,
        };
        let per_s = |n: u64, ms: u64| (ms > 0 && n > 0).then(|| n as f64 * 1e3 / ms as f64);
        // A run of fewer tasks than the workers take at once shows only its task count:
        // it says something of the concurrency only when it had more, or reached more.
        let concurrency = (measured.workers_ms > 0 && measured.task_ms > 0)
            .then(|| {
                (measured.task_ms as f64 / measured.workers_ms as f64)
                    .clamp(1.0, work.tasks.max(1) as f64)
            })
            .filter(|&c| {
                work.tasks as f64 > self.worker_concurrency || c > self.worker_concurrency
            });
        let mut next = Calibration {
            runs: self.runs + 1,
            task_bytes_per_second: mean(
                self.task_bytes_per_second,
                per_s(work.task_bytes, measured.task_ms),
            ),
            worker_concurrency: mean(self.worker_concurrency, concurrency),
            worker_bytes_per_second: self.worker_bytes_per_second,
            consolidation_nnz_per_second: mean(
                self.consolidation_nnz_per_second,
                per_s(work.nnz, measured.consolidation_ms),
            ),
            conversion_bytes_per_second: mean(
                self.conversion_bytes_per_second,
                per_s(work.converted_bytes, measured.conversion_ms),
            ),
            fixed_seconds: self.fixed_seconds,
            updated_ms: now_ms,
        };
        // The phase's rate at full concurrency: as measured, scaled up for a run with
        // fewer tasks than run at once.
        let full = (measured.workers_ms > 0 && work.task_bytes > 0).then(|| {
            let c = next.worker_concurrency.max(1.0);
            work.task_bytes as f64 * 1e3 / measured.workers_ms as f64 * c
                / c.min(work.tasks as f64).max(1.0)
        });
        next.worker_bytes_per_second = mean(self.worker_bytes_per_second, full);
        let modeled = next.seconds(work);
        let rest = (measured.total_ms as f64 / 1e3 - (modeled.total - modeled.fixed)).max(0.0);
        next.fixed_seconds = mean(self.fixed_seconds, Some(rest.max(1e-3)));
        next
    }
}

/// A run's times, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    /// The tasks' wall times summed.
    pub task_ms: u64,
    /// The workers' phase: from the run's start to every task done (planning
    /// overlaps the first tasks).
    pub workers_ms: u64,
    /// The consolidation: from every task done to the result, less the conversion.
    pub consolidation_ms: u64,
    /// The conversion.
    pub conversion_ms: u64,
    /// From the run's start to its result.
    pub total_ms: u64,
}

/// The work and times of a run that succeeded, from its plans, done markers and result.
pub fn measure(
    plans: &BTreeMap<u32, Plan>,
    done: &HashMap<TaskId, DoneMarker>,
    result: &ResultRecord,
) -> (Work, Measured) {
    let tasks = plans.values().flat_map(|p| &p.tasks);
    let (mut n, mut bytes, mut largest) = (0u64, 0u64, 0u64);
    for t in tasks {
        n += 1;
        bytes += t.bytes;
        largest = largest.max(t.bytes);
    }
    let conversion = result.conversion.as_ref();
    let converted_bytes = conversion.map_or(0, |c| c.files.iter().map(|(_, size)| size).sum());
    let conversion_ms = conversion.map_or(0, |c| c.duration_ms);
    let total_ms = result.finished_ms.saturating_sub(result.started_ms);
    let work = Work {
        tasks: n,
        task_bytes: bytes,
        largest_task_bytes: largest,
        nnz: result.nnz,
        converted_bytes,
    };
    let measured = Measured {
        task_ms: done.values().map(|d| d.duration_ms).sum(),
        workers_ms: result.collected_after_ms,
        consolidation_ms: total_ms
            .saturating_sub(result.collected_after_ms)
            .saturating_sub(conversion_ms),
        conversion_ms,
        total_ms,
    };
    (work, measured)
}

/// The service's calibration; the defaults when there is none yet or it cannot be read
/// (logged).
pub async fn load(store: &DynStore) -> Calibration {
    match get_json::<Calibration>(store, KEY).await {
        Ok(Some(c)) => c,
        Ok(None) => Calibration::default(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the calibration; using the defaults");
            Calibration::default()
        }
    }
}

/// Updates the calibration with a run that succeeded. Best effort: a failure is logged,
/// never the request's.
pub async fn learn(
    store: &DynStore,
    plans: &BTreeMap<u32, Plan>,
    done: &HashMap<TaskId, DoneMarker>,
    result: &ResultRecord,
) {
    let (work, measured) = measure(plans, done, result);
    let next = load(store)
        .await
        .updated(&work, &measured, crate::clock::now_ms());
    if let Err(e) = put_json(store, KEY, &next).await {
        tracing::warn!(error = %e, "cannot update the calibration");
    }
}

/// [`learn`] from a run whose result another invocation committed (the last
/// consolidation shard): its record read back. Nothing when this collector saw no task
/// finish (a duplicate that came at the end), nor when the record cannot be read.
pub async fn learn_committed(
    store: &DynStore,
    keys: &crate::state::Keys,
    plans: &BTreeMap<u32, Plan>,
    done: &HashMap<TaskId, DoneMarker>,
) {
    if done.is_empty() {
        return;
    }
    match get_json::<ResultRecord>(store, &keys.result()).await {
        Ok(Some(result)) => learn(store, plans, done, &result).await,
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the result to calibrate"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work() -> Work {
        Work {
            tasks: 4,
            task_bytes: 400_000_000,
            largest_task_bytes: 100_000_000,
            nnz: 50_000_000,
            converted_bytes: 0,
        }
    }

    #[test]
    fn the_model_shares_the_tasks_among_the_workers_at_once() {
        let c = Calibration::default();
        let s = c.seconds(&work());
        // 400 MB at 100 MB/s, 2 at once; 50 M nonzeros at 50 M/s; 1 s fixed.
        assert!((s.workers - 2.0).abs() < 1e-9, "{s:?}");
        assert!((s.consolidation - 1.0).abs() < 1e-9);
        assert!((s.total - 4.0).abs() < 1e-9);
        // One task cannot be shared: its own time.
        let one = c.seconds(&Work {
            tasks: 1,
            task_bytes: 100_000_000,
            largest_task_bytes: 100_000_000,
            ..work()
        });
        assert!((one.workers - 1.0).abs() < 1e-9);
        assert_eq!(c.seconds(&Work::default()).workers, 0.0);
    }

    #[test]
    fn the_first_run_is_taken_whole_and_reproduces_itself() {
        let measured = Measured {
            task_ms: 8_000,
            workers_ms: 2_500,
            consolidation_ms: 500,
            conversion_ms: 0,
            total_ms: 3_600,
        };
        let c = Calibration::default().updated(&work(), &measured, 7);
        assert_eq!(c.runs, 1);
        assert_eq!(c.updated_ms, 7);
        assert!((c.task_bytes_per_second - 50e6).abs() < 1e-3);
        assert!((c.worker_concurrency - 3.2).abs() < 1e-9);
        assert!((c.consolidation_nnz_per_second - 100e6).abs() < 1e-3);
        // No conversion measured: its rate stays.
        assert_eq!(c.conversion_bytes_per_second, 50e6);
        // The same work again is estimated at the time it took.
        assert!((c.seconds(&work()).total - 3.6).abs() < 1e-9);
    }

    #[test]
    fn later_runs_move_the_means_by_the_weight() {
        let measured = Measured {
            task_ms: 8_000,
            workers_ms: 2_000,
            consolidation_ms: 1_000,
            conversion_ms: 0,
            total_ms: 4_000,
        };
        let once = Calibration::default().updated(&work(), &measured, 1);
        let slower = Measured {
            task_ms: 16_000,
            ..measured
        };
        let twice = once.updated(&work(), &slower, 2);
        assert_eq!(twice.runs, 2);
        // 50 MB/s, then 25 MB/s measured: 30% of the way.
        assert!((twice.task_bytes_per_second - (50e6 - 0.3 * 25e6)).abs() < 1e-3);
        // A run that measured nothing of a phase leaves its rate.
        let idle = twice.updated(&Work::default(), &Measured::default(), 3);
        assert_eq!(idle.task_bytes_per_second, twice.task_bytes_per_second);
        assert!(idle.fixed_seconds >= 0.0);
    }
}
