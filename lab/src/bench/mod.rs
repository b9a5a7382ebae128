//! Benchmarks: figures measured against a baseline in the same run, so a figure is
//! always a ratio to something this machine did a moment before, not an absolute that
//! depends on the machine.
//!
//! - [`worker`]: one worker task of each bundle kind, through the real handler, against
//!   this machine's bound for the same bytes (read + zstd decode + copy), and the
//!   worker's peak memory measured in a process of its own.
//! - [`e2e`]: the whole service on the embedded stack against a Python (anndata)
//!   baseline doing the same job.
//! - [`catalog`]: reading a catalog of many bundles and fields and resolving a request
//!   over it, against an untyped parse of the same bytes.
//! - [`requests`]: the invocations, store requests and bytes of one request against the
//!   planner's optimum.
//! - [`cell_watch`]: times the first (partial) and the complete cell table of a
//!   running request.
//! - [`run`]: drives one request on an in-process app from POST to its end.
//! - [`template`]: the worker's memory and allocator settings, read from `template.yaml`.

pub mod catalog;
pub mod cell_watch;
pub mod e2e;
pub mod requests;
pub mod run;
pub mod template;
pub mod worker;

pub use template::{ALLOCATOR_ENV, template_allocator_env, template_worker_memory};

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

use cellmatrix::error::Error;
use cellmatrix::invoke::{Function, Invoker};

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// An invoker that records invocations instead of running them, so a benchmark can
/// drive the driver and the mapper and then run each worker task itself, under its own
/// clock and in its own process.
#[derive(Debug, Default)]
pub struct Recorder {
    calls: Mutex<Vec<(Function, Value)>>,
}

impl Recorder {
    /// Removes and returns the payloads recorded for `function`, in invocation order.
    pub fn take(&self, function: Function) -> Vec<Value> {
        let mut calls = self.calls.lock().expect("recorder lock");
        let (taken, kept) = std::mem::take(&mut *calls)
            .into_iter()
            .partition(|(f, _)| *f == function);
        *calls = kept;
        taken.into_iter().map(|(_, v)| v).collect()
    }
}

#[async_trait::async_trait]
impl Invoker for Recorder {
    async fn invoke(&self, function: Function, payload: Value) -> Result<(), Error> {
        self.calls
            .lock()
            .expect("recorder lock")
            .push((function, payload));
        Ok(())
    }

    fn counts(&self) -> HashMap<Function, u64> {
        let mut counts = HashMap::new();
        for (f, _) in self.calls.lock().expect("recorder lock").iter() {
            *counts.entry(*f).or_insert(0) += 1;
        }
        counts
    }
}

/// CPU seconds (user + system, all threads) this process has used; 0 where
/// `/proc/self/stat` is missing. Set against wall time it says how many cores a
/// measured phase kept busy.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name (field 2) is in parentheses and may hold spaces: count fields
    // from the last ')'. utime and stime are fields 14 and 15, in clock ticks, which
    // Linux reports to user space at 100 per second (USER_HZ) on every architecture.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (tick(11) + tick(12)) as f64 / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_none() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn counts_this_process_cpu_time() {
        let before = cpu_seconds();
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds() >= before);
    }
}
