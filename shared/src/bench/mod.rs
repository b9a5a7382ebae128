//! Benchmarks: figures measured against a baseline in the same run, so a figure is
//! always a ratio to something this machine did a moment before, not an absolute that
//! depends on the machine.
//!
//! - [`worker`]: one worker task of each bundle kind, through the real handler, against
//!   this machine's bound for the same bytes (read + zstd decode + copy), and the
//!   worker's peak memory measured in a process of its own.
//! - [`e2e`]: the whole service on the embedded stack against a Python (anndata)
//!   baseline doing the same job.
//! - [`requests`]: the invocations, store requests and bytes of one request against the
//!   planner's optimum.
//! - [`run`]: drives one request on an in-process app from POST to its end.

pub mod e2e;
pub mod requests;
pub mod run;
pub mod worker;

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

use crate::error::Error;
use crate::invoke::{Function, Invoker};

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

/// The `Default` of parameter `name` in a CloudFormation/SAM template's text, read
/// without a YAML parser: the line `Default: …` inside the block that `  name:` opens.
pub fn template_default(template: &str, name: &str) -> Option<String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut lines = template.lines();
    let head = lines.find(|l| l.trim_end() == format!("{}{name}:", " ".repeat(indent(l))))?;
    let level = indent(head);
    for line in lines {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if indent(line) <= level {
            return None;
        }
        if let Some(v) = line.trim().strip_prefix("Default:") {
            return Some(v.trim().trim_matches(['"', '\'']).to_string());
        }
    }
    None
}

/// The value of environment variable `name` that the template sets for the functions
/// (the first `name: value` line), such as `MALLOC_ARENA_MAX`: a measurement of a
/// function's memory runs under the same allocator settings.
pub fn template_environment(template: &str, name: &str) -> Option<String> {
    template.lines().find_map(|l| {
        let v = l.trim().strip_prefix(name)?.strip_prefix(':')?;
        Some(v.trim().trim_matches(['"', '\'']).to_string())
    })
}

/// The glibc allocator settings a function may get from the template, which a
/// measurement's child process takes too, so that it allocates as the function does.
pub const ALLOCATOR_ENV: [&str; 3] = [
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
];

/// Those of [`ALLOCATOR_ENV`] that `template` sets, as (name, value): the first
/// `name: value` line of each (the worker's, for those only it has).
pub fn template_allocator_env(template: &str) -> Vec<(String, String)> {
    ALLOCATOR_ENV
        .iter()
        .filter_map(|&name| template_environment(template, name).map(|v| (name.to_string(), v)))
        .collect()
}

/// The memory, in bytes, that `template.yaml` gives the worker (`WorkerMemory`'s
/// default, in MB as Lambda counts them: MiB).
pub fn template_worker_memory(template: &str) -> Option<u64> {
    template_default(template, "WorkerMemory")?
        .parse::<u64>()
        .ok()
        .map(|mb| mb << 20)
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
    fn reads_a_parameter_default_from_the_template() {
        let text = "Parameters:\n  WorkerMemory:\n    Type: Number\n    # MB\n    Default: 2048\n  WorkerTimeout:\n    Default: 300\n";
        assert_eq!(template_worker_memory(text), Some(2048 << 20));
        assert_eq!(
            template_default(text, "WorkerTimeout").as_deref(),
            Some("300")
        );
        assert_eq!(template_default(text, "Missing"), None);
        // A parameter without a default does not take its neighbour's.
        let text = "Parameters:\n  WorkerMemory:\n    Type: Number\n  Other:\n    Default: 1\n";
        assert_eq!(template_worker_memory(text), None);
    }

    #[test]
    fn the_repository_template_gives_the_worker_its_memory() {
        let text = include_str!("../../../template.yaml");
        let bytes = template_worker_memory(text).expect("WorkerMemory has a default");
        assert!(bytes >= 128 << 20, "{bytes}");
        assert_eq!(
            template_environment(text, "MALLOC_ARENA_MAX").as_deref(),
            Some("2")
        );
        let names: Vec<String> = template_allocator_env(text)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            names, ALLOCATOR_ENV,
            "every allocator setting is in the template"
        );
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
