//! The model's parameters, each with where its default comes from, and the calibration
//! of the worker's compute rate by `cellmatrix bench worker`.
//!
//! Distributions are log-normal, given by their median and `sigma` (the standard
//! deviation of the logarithm): p99 is `median · e^(2.33·sigma)`.

use std::path::Path;

use cellmatrix::config::Config;
use cellmatrix::handlers::reducer::ledger::HedgePolicy;
use cellmatrix::plan::Budget;

/// A log-normal distribution by its median (seconds) and the sigma of its logarithm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogNormal {
    /// The median, seconds.
    pub median_s: f64,
    /// Sigma of the logarithm; 0 makes every sample the median.
    pub sigma: f64,
}

impl LogNormal {
    /// A distribution with median `median_s` and log-sigma `sigma`.
    pub const fn new(median_s: f64, sigma: f64) -> Self {
        LogNormal { median_s, sigma }
    }
}

/// AWS Lambda.
#[derive(Debug, Clone, PartialEq)]
pub struct LambdaModel {
    /// Lambda's own start of a new execution environment for a `provided.al2023`
    /// function (code download, runtime bootstrap). Default median 150 ms, sigma 0.3:
    /// Init Durations of 100–250 ms are what small Rust functions on provided.al2023
    /// report in their REPORT lines.
    pub runtime_init: LogNormal,
    /// Our own init (settings read, clients built) on a cold start. Default median
    /// 30 ms, sigma 0.3: the `init_ms` that `coldstart` logs is tens of ms.
    pub our_init: LogNormal,
    /// From an accepted asynchronous `Invoke` (InvocationType Event) to the handler
    /// being called in a ready environment. Default median 40 ms, sigma 1.0 (p99 about
    /// 0.4 s): an assumption; Lambda publishes no figure, and its async queue is known
    /// to deliver in tens of ms with a tail of seconds.
    pub delivery: LogNormal,
    /// The caller's `Invoke` API call (InvocationType Event) until accepted. Default
    /// median 20 ms, sigma 0.5: an assumption, a small authenticated AWS API call
    /// within a region.
    pub invoke_call: LogNormal,
    /// Concurrent executions of the account's region. Default 1,000: Lambda's default
    /// regional quota.
    pub account_concurrency: u32,
    /// Reserved concurrency of the worker, also its cap; `None` reserves nothing (the
    /// worker shares the account's pool). Default 100: `WorkerReservedConcurrency` in
    /// `template.yaml`.
    pub worker_reserved: Option<u32>,
    /// New execution environments a function may start per `scale_window_s`. Default
    /// 1,000: Lambda's scaling rate since November 2023 ("each function scales by 1,000
    /// execution environments every 10 seconds").
    pub scale_per_window: u32,
    /// The window of `scale_per_window`, seconds. Default 10 (same source).
    pub scale_window_s: f64,
    /// Execution environments of each function already warm when the request arrives
    /// (driver, mapper, worker, reducer). Default 0 for all: a service idle for longer
    /// than Lambda keeps environments (minutes), the slow case.
    pub warm_at_start: [u32; 4],
    /// Lambda's retries of an asynchronous event whose handler failed. Default 2:
    /// `AsyncMaxRetryAttempts` in `template.yaml`.
    pub async_retries: u32,
    /// Waits before those retries, seconds. Default 60 then 120: Lambda's documented
    /// "one minute between the first two attempts, two minutes between the second and
    /// third".
    pub async_retry_waits_s: [f64; 2],
    /// First wait before a throttled asynchronous event is tried again; doubled each
    /// time up to `throttle_max_wait_s`. Default 1 s (Lambda: "from 1 second after the
    /// first attempt to a maximum of 5 minutes").
    pub throttle_first_wait_s: f64,
    /// Longest such wait. Default 300 s (same source).
    pub throttle_max_wait_s: f64,
    /// Memory of driver, mapper, worker, reducer, MB. Default 512, 512, 2048, 3008:
    /// `template.yaml`.
    pub memory_mb: [u32; 4],
    /// Memory at which a function gets one full vCPU, MB. Default 1,769: Lambda's
    /// documentation.
    pub mb_per_vcpu: f64,
}

impl Default for LambdaModel {
    fn default() -> Self {
        LambdaModel {
            runtime_init: LogNormal::new(0.150, 0.3),
            our_init: LogNormal::new(0.030, 0.3),
            delivery: LogNormal::new(0.040, 1.0),
            invoke_call: LogNormal::new(0.020, 0.5),
            account_concurrency: 1_000,
            worker_reserved: Some(100),
            scale_per_window: 1_000,
            scale_window_s: 10.0,
            warm_at_start: [0; 4],
            async_retries: 2,
            async_retry_waits_s: [60.0, 120.0],
            throttle_first_wait_s: 1.0,
            throttle_max_wait_s: 300.0,
            memory_mb: [512, 512, 2048, 3008],
            mb_per_vcpu: 1_769.0,
        }
    }
}

/// Amazon S3, as one invocation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Model {
    /// Time to first byte of a GET or HEAD. Default median 25 ms, sigma 0.7 (p99
    /// about 130 ms): AWS's S3 performance guidelines say small requests have "median
    /// latencies often in the tens of milliseconds" and advise retrying one still
    /// unanswered after 2 s, so the tail is long.
    pub get: LogNormal,
    /// Time of a PUT of a small object. Default median 35 ms, sigma 0.7: an
    /// assumption, writes being somewhat slower than reads.
    pub put: LogNormal,
    /// Time of one LIST page. Default median 50 ms, sigma 0.7: an assumption, LIST
    /// being slower than GET.
    pub list: LogNormal,
    /// Bytes per second one invocation moves to or from S3, all its connections
    /// together. Default 90 MB/s, the figure commonly quoted for one Lambda invocation.
    pub bytes_per_s: f64,
    /// Requests one invocation's store has in flight at most. Default
    /// `store::s3::DEFAULT_MAX_IN_FLIGHT`.
    pub max_in_flight: usize,
    /// Tries of one request by the SDK's standard retry mode. Default 3:
    /// `DEFAULT_MAX_ATTEMPTS` in `store/s3.rs`.
    pub sdk_attempts: u32,
    /// The SDK's first backoff, doubled per retry (full jitter). Default
    /// `store::s3::SDK_INITIAL_BACKOFF` (50 ms), which the S3 store sets; the SDK's own
    /// default is 1 s (`aws-smithy-types`' standard `RetryConfig`).
    pub sdk_backoff_s: f64,
    /// The SDK's longest backoff. Default 20 s (the standard `RetryConfig`).
    pub sdk_max_backoff_s: f64,
    /// Tries of a store call by the service's `Retrying` wrapper, around the SDK's.
    /// Default 4: `store_attempts` in `config.rs`.
    pub store_attempts: u32,
    /// `Retrying`'s first backoff, doubled per retry (full jitter). Default 20 ms:
    /// `BASE_BACKOFF` in `store/retry.rs`.
    pub store_backoff_s: f64,
    /// A GET or HEAD not answered within this long is sent once more, and the first
    /// answer counts (`store::s3::hedged`, `DEFAULT_HEDGE_AFTER`, 60 ms); `None` never.
    pub hedge_after_s: Option<f64>,
}

impl Default for S3Model {
    fn default() -> Self {
        S3Model {
            get: LogNormal::new(0.025, 0.7),
            put: LogNormal::new(0.035, 0.7),
            list: LogNormal::new(0.050, 0.7),
            bytes_per_s: 90e6,
            max_in_flight: cellmatrix::store::s3::DEFAULT_MAX_IN_FLIGHT,
            sdk_attempts: 3,
            sdk_backoff_s: cellmatrix::store::s3::SDK_INITIAL_BACKOFF.as_secs_f64(),
            sdk_max_backoff_s: 20.0,
            store_attempts: 4,
            store_backoff_s: 0.020,
            hedge_after_s: Some(cellmatrix::store::s3::DEFAULT_HEDGE_AFTER.as_secs_f64()),
        }
    }
}

/// The faults of issue #6, at the rates its chaos test uses (`tests/tests/chaos.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// A delivered invocation crashes: half before any side effect, half after all of
    /// them (as `invoke::InProcess` injects it). Default 0.10.
    pub crash: f64,
    /// An invocation is delivered twice. Default 0.20.
    pub duplicate: f64,
    /// An invocation is accepted and never delivered. Default 0.05.
    pub drop: f64,
    /// A store request fails with a 503 SlowDown (and is retried). Default 0.05.
    pub store_error: f64,
    /// A worker invocation is a straggler. Default 0.05.
    pub straggler: f64,
    /// How much slower a straggler reads its slices (`fault::straggle`). Default 10.
    pub slowdown: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            crash: 0.10,
            duplicate: 0.20,
            drop: 0.05,
            store_error: 0.05,
            straggler: 0.05,
            slowdown: 10.0,
        }
    }
}

impl Faults {
    /// No faults at all.
    pub fn none() -> Self {
        Faults {
            crash: 0.0,
            duplicate: 0.0,
            drop: 0.0,
            store_error: 0.0,
            straggler: 0.0,
            slowdown: 1.0,
        }
    }
}

/// Prices: the run report's and the dry run's, one cost model (`cellmatrix::cost`).
pub use cellmatrix::cost::Prices;

/// The service's own settings the simulation runs with: `Config`'s defaults unless
/// changed.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceModel {
    /// The planner's budget: `cells_per_worker`, `bytes_per_worker` and
    /// `slice_bytes` of `Config`.
    pub budget: Budget,
    /// Bundles per mapper (`bundles_per_mapper`).
    pub bundles_per_mapper: usize,
    /// Groups the driver plans itself (`driver_groups`).
    pub driver_groups: usize,
    /// Worker invocations a mapper has in flight (`invoke_concurrency`).
    pub invoke_concurrency: usize,
    /// How often the collector looks (`poll_interval`), seconds.
    pub poll_s: f64,
    /// `lost_after`, seconds.
    pub lost_after_s: f64,
    /// `lost_passed_after`, seconds.
    pub lost_passed_after_s: f64,
    /// `task_attempts`.
    pub task_attempts: u32,
    /// `hedge_percent` and `hedge_factor`.
    pub hedge_policy: HedgePolicy,
    /// `hedge_small`: a request of at most this many tasks has each worker event sent
    /// twice, and a result of at most this many shards each shard event.
    pub hedge_small: usize,
    /// `shard_nnz`.
    pub shard_nnz: u64,
    /// `collector_stale`, seconds: a status request past it starts a new collector.
    pub collector_stale_s: f64,
    /// `collector_first_beat`, seconds: a status request past it, with no heartbeat
    /// yet, starts a new collector.
    pub collector_first_beat_s: f64,
    /// `beat_interval`, seconds: a running invocation writes its start marker again this
    /// often (one PUT each).
    pub beat_s: f64,
    /// `silent_after`, seconds: the ceiling of the wait for a heartbeat before a started
    /// invocation is taken for dead.
    pub silent_after_s: f64,
    /// Done markers the collector reads at once (16 in `handlers/reducer.rs`).
    pub marker_reads: usize,
    /// Part arrays a consolidation shard opens, then reads, at once
    /// (`PART_READS_IN_FLIGHT` in `handlers/reducer.rs`).
    pub part_reads_in_flight: usize,
    /// How often the client polls the status, seconds: `POLL` in
    /// `cli/src/commands/query.rs`, 250 ms.
    pub client_poll_s: f64,
}

impl ServiceModel {
    /// The settings of `config`.
    pub fn from_config(config: &Config) -> Self {
        ServiceModel {
            budget: config.budget(),
            bundles_per_mapper: config.bundles_per_mapper.max(1),
            driver_groups: config.driver_groups,
            invoke_concurrency: config.invoke_concurrency.max(1),
            poll_s: config.poll_interval.as_secs_f64(),
            lost_after_s: config.lost_after.as_secs_f64(),
            lost_passed_after_s: config.lost_passed_after.as_secs_f64(),
            task_attempts: config.task_attempts,
            hedge_small: config.hedge_small,
            hedge_policy: HedgePolicy {
                percent: config.hedge_percent,
                factor: config.hedge_factor,
            },
            shard_nnz: config.shard_nnz.max(1),
            collector_stale_s: config.collector_stale.as_secs_f64(),
            collector_first_beat_s: config.collector_first_beat.as_secs_f64(),
            beat_s: config.beat_interval.as_secs_f64(),
            silent_after_s: config.silent_after.as_secs_f64(),
            marker_reads: 16,
            part_reads_in_flight: cellmatrix::layout::PART_READS_IN_FLIGHT,
            client_poll_s: 0.25,
        }
    }
}

impl Default for ServiceModel {
    fn default() -> Self {
        ServiceModel::from_config(&Config::new("simulate"))
    }
}

/// What a request's objects weigh, for the requests that read them.
#[derive(Debug, Clone, PartialEq)]
pub struct Sizes {
    /// Bytes of the catalog per bundle (entry with chunk offsets and metadata). Default
    /// 400: an assumption from the JSON of a catalog entry.
    pub catalog_bytes_per_bundle: f64,
    /// Bytes of a feature set and of `genes.json` (a gene space of ~20,000 ids and
    /// names). Default 600 kB: an assumption, about 30 bytes a gene.
    pub feature_set_bytes: f64,
    /// JSON parsed per second (catalog, feature sets, plans). Default 200 MB/s: an
    /// assumption for serde_json on one core.
    pub json_bytes_per_s: f64,
    /// Fixed CPU time of planning, per bundle, seconds. Default 2 µs: an assumption
    /// (the planner is a linear pass).
    pub plan_s_per_bundle: f64,
    /// Arrays of a part and of the output written one after another (indptr, indices,
    /// data, obs index). Default 4: `PartBuilder::finish` and `output_arrays` with no
    /// extra fields.
    pub arrays: u32,
    /// Zarr chunks written at once (`store_chunks` batches of 16).
    pub chunk_writes: usize,
    /// Stored bytes per row of an output row array (`X/indptr`, `obs/_index`).
    /// Default 64: an assumption, an 8-byte row pointer or an index of `fqid:barcode`
    /// (about 60 characters) before compression.
    pub row_bytes: f64,
    /// Metadata documents of the output: shard 0 writes all but the root at once
    /// (`write_metadata`), the commit the root (`finish`). Default 16: 4 arrays, `X`,
    /// `obs`, `var` and its 2 arrays, 6 empty groups, and the root.
    pub finish_writes: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            catalog_bytes_per_bundle: 400.0,
            feature_set_bytes: 600e3,
            json_bytes_per_s: 200e6,
            plan_s_per_bundle: 2e-6,
            arrays: 4,
            chunk_writes: 16,
            row_bytes: 64.0,
            finish_writes: 16,
        }
    }
}

/// One bundle kind as `cellmatrix bench worker` measured it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct KindRate {
    /// `10x` or `smartseq2`.
    pub kind: String,
    /// Cells in the measured task.
    pub cells: u64,
    /// Nonzeros in it.
    pub nnz: u64,
    /// Stored (compressed) bytes of its bundles.
    pub stored_bytes: u64,
    /// Stored bytes a worker processed per second, end to end on a local store, one core.
    pub bytes_per_s: f64,
}

impl KindRate {
    /// Nonzeros per cell.
    pub fn nnz_per_cell(&self) -> f64 {
        self.nnz as f64 / self.cells.max(1) as f64
    }

    /// Stored bytes per cell.
    pub fn stored_per_cell(&self) -> f64 {
        self.stored_bytes as f64 / self.cells.max(1) as f64
    }
}

/// The worker throughput per bundle kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// 10x-like bundles.
    pub tenx: KindRate,
    /// SmartSeq2-like bundles.
    pub smartseq2: KindRate,
    /// Where the figures come from, for the report.
    pub source: String,
}

/// Where `cellmatrix bench worker` writes its figures.
pub const DEFAULT_CALIBRATION: &str = ".cache/bench/worker.json";

impl Default for Calibration {
    /// Used when no bench figures exist. Shapes from `synth`'s defaults: 10x cells
    /// detect 2–10% of 20,000 genes (1,200 nonzeros on average), SmartSeq2 cells 20–40%
    /// (6,000). Stored bytes: about 4 bytes a nonzero after zstd for 10x counts
    /// (assumed), and 30 kB of counts per SmartSeq2 cell (`docs/decisions/0007-per-bundle-var.md`,
    /// "Per-bundle var"). Rates: 40 MB/s for 10x, the example figure of the bench's
    /// output contract in issue #7's brief; 10 MB/s for SmartSeq2, assumed lower for
    /// the per-bundle work of one-cell bundles. Replace them with a measurement.
    fn default() -> Self {
        Calibration {
            tenx: KindRate {
                kind: "10x".into(),
                cells: 5_000,
                nnz: 6_000_000,
                stored_bytes: 24_000_000,
                bytes_per_s: 40e6,
            },
            smartseq2: KindRate {
                kind: "smartseq2".into(),
                cells: 500,
                nnz: 3_000_000,
                stored_bytes: 15_000_000,
                bytes_per_s: 10e6,
            },
            source: "built-in defaults (no bench figures)".into(),
        }
    }
}

#[derive(serde::Deserialize)]
struct BenchFile {
    #[serde(default)]
    kinds: Vec<serde_json::Value>,
}

impl Calibration {
    /// Reads `cellmatrix bench worker`'s JSON; fields other than the ones used are
    /// ignored, and a kind that is missing or unreadable keeps its default.
    pub fn from_json(text: &str, source: &str) -> Result<Self, String> {
        let file: BenchFile = serde_json::from_str(text).map_err(|e| format!("{source}: {e}"))?;
        let mut c = Calibration::default();
        let mut found = Vec::new();
        for v in file.kinds {
            let Ok(k) = serde_json::from_value::<KindRate>(v) else {
                continue;
            };
            if k.cells == 0 || k.stored_bytes == 0 || k.bytes_per_s.is_nan() || k.bytes_per_s <= 0.0
            {
                continue;
            }
            match k.kind.to_ascii_lowercase().as_str() {
                "10x" | "tenx" => {
                    found.push("10x");
                    c.tenx = k;
                }
                "smartseq2" | "ss2" => {
                    found.push("smartseq2");
                    c.smartseq2 = k;
                }
                _ => {}
            }
        }
        if found.is_empty() {
            return Err(format!("{source}: no usable 10x or smartseq2 kind"));
        }
        c.source = format!("{source} ({})", found.join(", "));
        Ok(c)
    }

    /// Reads `path` if it exists; the defaults otherwise, saying so in `source`.
    pub fn load_or_default(path: &Path) -> Self {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                Calibration::from_json(&text, &path.display().to_string()).unwrap_or_else(|e| {
                    Calibration {
                        source: format!("built-in defaults ({e})"),
                        ..Calibration::default()
                    }
                })
            }
            Err(_) => Calibration {
                source: format!("built-in defaults ({} not found)", path.display()),
                ..Calibration::default()
            },
        }
    }
}

/// Everything a run depends on besides its case and seed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Model {
    /// Lambda.
    pub lambda: LambdaModel,
    /// S3.
    pub s3: S3Model,
    /// Injected faults.
    pub faults: Faults,
    /// Prices.
    pub prices: Prices,
    /// The service's settings.
    pub service: ServiceModel,
    /// Object sizes and fixed CPU costs.
    pub sizes: Sizes,
    /// Worker throughput per bundle kind.
    pub calibration: Calibration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_reads_the_bench_file_leniently() {
        let text = r#"{"machine": "x", "kinds": [
            {"kind": "10x", "cells": 5000, "nnz": 4000000, "stored_bytes": 20000000,
             "seconds": 0.5, "cells_per_s": 10000.0, "bytes_per_s": 40000000.0,
             "bound_bytes_per_s": 60000000.0, "ratio": 0.66, "peak_rss_bytes": 1},
            {"kind": "smartseq2", "cells": 100, "nnz": 600000, "stored_bytes": 3000000,
             "bytes_per_s": 5000000.0, "extra": [1, 2]},
            {"kind": "other", "cells": 1}
        ]}"#;
        let c = Calibration::from_json(text, "f.json").unwrap();
        assert_eq!(c.tenx.nnz_per_cell(), 800.0);
        assert_eq!(c.smartseq2.bytes_per_s, 5e6);
        assert!(c.source.contains("f.json"), "{}", c.source);
        assert!(Calibration::from_json(r#"{"kinds": []}"#, "e").is_err());
        let missing = Calibration::load_or_default(Path::new("/nonexistent/worker.json"));
        assert!(missing.source.contains("not found"), "{}", missing.source);
        assert_eq!(missing.tenx, Calibration::default().tenx);
    }
}
