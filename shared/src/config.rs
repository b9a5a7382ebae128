//! The settings every function reads from its environment once per cold start.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::invoke::Function;

/// Settings of the service; [`Config::from_env`] reads them, tests build them directly.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where bundles, the catalog, requests and results live: a local path or
    /// `s3://bucket[/prefix]` (see [`crate::store::open`]). From `CELLMATRIX_STORE`.
    pub store: String,
    /// The name of the mapper function, from `CELLMATRIX_MAPPER_FUNCTION`, default `mapper`.
    /// The function-name defaults are the binary names, which is what `cargo lambda watch`
    /// calls the functions; the SAM template sets the deployed names.
    pub mapper_function: String,
    /// The name of the worker function, from `CELLMATRIX_WORKER_FUNCTION`, default `worker`.
    pub worker_function: String,
    /// The name of the reducer function, from `CELLMATRIX_REDUCER_FUNCTION`, default `reducer`.
    pub reducer_function: String,
    /// Bundles planned by one mapper (`CELLMATRIX_BUNDLES_PER_MAPPER`, default 1000).
    pub bundles_per_mapper: usize,
    /// Bundle groups the driver plans itself, before it answers, instead of invoking a
    /// mapper for each (`CELLMATRIX_DRIVER_GROUPS`, default 8): a group mapped in
    /// process saves its mapper's delivery, cold start and catalog read (about 0.3 s of
    /// a small request); the groups past these go to mappers, so the answer to the POST
    /// never waits for a large request's planning.
    pub driver_groups: usize,
    /// Most cells in one worker task (`CELLMATRIX_CELLS_PER_WORKER`, default 50,000).
    pub cells_per_worker: u64,
    /// Most bundle bytes one worker task reads (`CELLMATRIX_BYTES_PER_WORKER`, default 512 MiB).
    pub bytes_per_worker: u64,
    /// Bytes the planner charges against `bytes_per_worker` for every slice a task opens
    /// (`CELLMATRIX_SLICE_BYTES`, default 4 MiB), so that a task of many small bundles,
    /// each a request round trip, is split like one of a few large ones. The default
    /// caps a task at 128 slices, two rounds of the 64 small slices a worker reads at
    /// once: `cellmatrix simulate` finds longer tasks waiting on their round trips, and
    /// shorter ones costing more invocations and parts than they save
    /// (docs/SIMULATION.md).
    pub slice_bytes: u64,
    /// Decoded bytes of a slice above which a worker reads its nonzeros in pieces of
    /// about this size, cut on the bundle's chunks (`CELLMATRIX_PIECE_BYTES`, default
    /// 16 MiB): the part's chunks are then written while the rest is read, and a 10x
    /// task never holds all its nonzeros at once.
    pub piece_bytes: u64,
    /// Worker invocations a mapper has in flight at once (`CELLMATRIX_INVOKE_CONCURRENCY`,
    /// default 16).
    pub invoke_concurrency: usize,
    /// How long a request may run before it is Failed (`CELLMATRIX_REQUEST_TIMEOUT_SECS`,
    /// default 900).
    pub request_timeout: Duration,
    /// How often the collector looks at the markers (`CELLMATRIX_POLL_MS`, default 100:
    /// a look is one round of a few requests, and every step of a request waits half
    /// of it on average to be seen; `cellmatrix simulate` prices both).
    pub poll_interval: Duration,
    /// Retries of a task that failed with a retryable error (`CELLMATRIX_TASK_ATTEMPTS`,
    /// default 3).
    pub task_attempts: u32,
    /// Nonzeros one consolidation shard writes (`CELLMATRIX_SHARD_NNZ`, default 2^24);
    /// a larger result is consolidated by several reducer invocations.
    pub shard_nnz: u64,
    /// Whether `bundle_fqids_url` may name a private or loopback host, any port, or use
    /// plain http. Tests set it in code; no environment variable does, so a deployment
    /// cannot turn the SSRF guard off.
    pub allow_private_urls: bool,
    /// Lifetime of presigned result URLs (`CELLMATRIX_URL_EXPIRY_SECS`, default 3600).
    pub url_expiry: Duration,
    /// Largest dense size (cells × genes × value bytes) of a csv result
    /// (`CELLMATRIX_CSV_MAX_BYTES`, default 2 GiB); a request that could pass it is
    /// refused before it starts.
    pub csv_max_bytes: u64,
    /// Largest dense size of a loom result (`CELLMATRIX_LOOM_MAX_BYTES`, default 512 MiB);
    /// loom is built in memory, so this bounds the reducer's memory too.
    pub loom_max_bytes: u64,
    /// Most cells one request may select (`CELLMATRIX_MAX_CELLS`, default 20,000,000),
    /// counted over its bundles before any cell filter, as every other cap here: a
    /// request that could pass a cap is refused (422) before `request.json` is written.
    pub max_cells: u64,
    /// Most stored nonzeros of the bundles one request selects (`CELLMATRIX_MAX_NNZ`,
    /// default 40,000,000,000).
    pub max_nnz: u64,
    /// Most worker tasks one request plans into (`CELLMATRIX_MAX_TASKS`, default 20,000:
    /// a million one-cell bundles plan into about 8,000).
    pub max_tasks: u64,
    /// Largest sparse size (nonzeros × (value + column index bytes) + row pointers) of a
    /// zarr result (`CELLMATRIX_ZARR_MAX_BYTES`, default 1 TiB).
    pub zarr_max_bytes: u64,
    /// The same for h5ad (`CELLMATRIX_H5AD_MAX_BYTES`, default 1 TiB).
    pub h5ad_max_bytes: u64,
    /// The same for mtx (`CELLMATRIX_MTX_MAX_BYTES`, default 1 TiB).
    pub mtx_max_bytes: u64,
    /// Most Running requests one caller may have (`CELLMATRIX_CALLER_MAX_RUNNING`,
    /// default 4); a POST that would start another is 429.
    pub caller_max_running: u64,
    /// Local directory for the conversions' temporary files (`CELLMATRIX_SCRATCH_DIR`,
    /// default the system's temporary directory; `/tmp` on Lambda).
    pub scratch_dir: std::path::PathBuf,
    /// Tries per store call for transient errors, with backoff and jitter
    /// (`CELLMATRIX_STORE_ATTEMPTS`, default 4).
    pub store_attempts: u32,
    /// How long an invocation may go without starting, while later ones start, before the
    /// collector takes it for lost and invokes it again (`CELLMATRIX_LOST_AFTER_MS`,
    /// default 5,000). An asynchronous delivery and a cold start take about a second at
    /// their tail; a launch taken for lost too early only costs a duplicate, while each
    /// dropped or crashed mapper, task or shard costs the request this long (at 60 s,
    /// the simulation's p50 for a million cells with #6's faults was a minute longer).
    pub lost_after: Duration,
    /// How long an invocation may go without starting once a later one has started,
    /// before the collector takes it for lost (`CELLMATRIX_LOST_PASSED_AFTER_MS`,
    /// default 1,500; never more than `lost_after`). The later start shows the queue
    /// delivers: an asynchronous delivery and a cold start take well under a second
    /// (the simulation's p99 0.4 s and 0.25 s), the collector sees a start marker half
    /// a second after it lands at most, and a duplicate is harmless, while every
    /// dropped or crashed mapper, task or shard costs the request this long.
    pub lost_passed_after: Duration,
    /// Whether the collector hedges stragglers (`CELLMATRIX_HEDGE`, default 1).
    pub hedge: bool,
    /// Once this percentage of the tasks is done, every unfinished task gets a second
    /// copy (`CELLMATRIX_HEDGE_PERCENT`, default 90).
    pub hedge_percent: u32,
    /// A task running longer than this many times the median task gets a second copy
    /// (`CELLMATRIX_HEDGE_FACTOR`, default 3).
    pub hedge_factor: u32,
    /// A request that plans into at most this many tasks has each worker event sent
    /// twice (the driver decides, `StoredRequest::copies`), and a result of at most this
    /// many shards each shard event (`CELLMATRIX_HEDGE_SMALL`, with `hedge` on; default
    /// 48, so that both copies of each stay within the worker's reserved concurrency of
    /// 100; 0 on the embedded stack unless set).
    /// On Lambda a dropped or crashed launch is seen only `lost_passed_after` after a
    /// later one started, and a straggler once most tasks are done: with #6's faults
    /// nearly every run of a few dozen tasks meets one, and for so few a copy of each
    /// costs less than that wait. In-process nothing is lost and a copy only takes the
    /// machine's cores.
    pub hedge_small: usize,
    /// A Running request whose collector has not been heard of for this long gets a new
    /// one from the next status request (`CELLMATRIX_COLLECTOR_STALE_MS`, default 10,000).
    /// The collector writes its heartbeat every quarter of it (one small PUT); a dropped
    /// collector delays its request by this long.
    pub collector_stale: Duration,
    /// A Running request whose collector has never been heard of (no heartbeat since the
    /// run started) gets a new one from the next status request after this long
    /// (`CELLMATRIX_COLLECTOR_FIRST_BEAT_MS`, default 2,000; never more than
    /// `collector_stale`). A collector writes its heartbeat on its first look, an
    /// asynchronous delivery and a cold start after the driver invokes it (under a
    /// second at their tail), so a collector dropped or crashed at its start no
    /// longer holds its request for `collector_stale`; a second collector is harmless.
    pub collector_first_beat: Duration,
    /// How often a running mapper, worker, shard or conversion writes its start marker
    /// again, its heartbeat (`CELLMATRIX_BEAT_MS`, default 2,000): one small PUT, and
    /// only an invocation that runs longer than this writes one.
    pub beat_interval: Duration,
    /// The longest a started invocation may go without a heartbeat before the collector
    /// takes it for dead and invokes it again (`CELLMATRIX_SILENT_AFTER_MS`, default
    /// 30,000): the ceiling of a wait otherwise set by the run's own beats, three times
    /// the longest gap seen between two of them and at least three beat intervals
    /// ([`crate::handlers::reducer::ledger::Ledger::silent`]). A process that dies
    /// with its invocations (a Lambda environment at its timeout, `cellmatrix serve`
    /// killed) costs its request this long, not the request's whole deadline.
    pub silent_after: Duration,
    /// Keep the parts and markers of a finished request (`CELLMATRIX_KEEP_SCRATCH=1`);
    /// by default they are removed after success and after a cancel.
    pub keep_scratch: bool,
    /// Faults to inject (`CELLMATRIX_FAULTS`, see [`crate::fault::FaultPlan::parse`]);
    /// none by default.
    pub faults: Option<crate::fault::FaultPlan>,
}

impl Config {
    /// Defaults for a store location.
    pub fn new(store: impl Into<String>) -> Self {
        Config {
            store: store.into(),
            mapper_function: "mapper".into(),
            worker_function: "worker".into(),
            reducer_function: "reducer".into(),
            bundles_per_mapper: 1000,
            driver_groups: 8,
            cells_per_worker: 50_000,
            bytes_per_worker: 512 << 20,
            slice_bytes: 4 << 20,
            piece_bytes: 16 << 20,
            invoke_concurrency: 16,
            request_timeout: Duration::from_secs(900),
            poll_interval: Duration::from_millis(100),
            task_attempts: 3,
            shard_nnz: 1 << 24,
            allow_private_urls: false,
            url_expiry: Duration::from_secs(3600),
            csv_max_bytes: 2 << 30,
            loom_max_bytes: 512 << 20,
            max_cells: 20_000_000,
            max_nnz: 40_000_000_000,
            max_tasks: 20_000,
            zarr_max_bytes: 1 << 40,
            h5ad_max_bytes: 1 << 40,
            mtx_max_bytes: 1 << 40,
            caller_max_running: 4,
            scratch_dir: std::env::temp_dir(),
            store_attempts: 4,
            lost_after: Duration::from_secs(5),
            lost_passed_after: Duration::from_millis(1_500),
            hedge: true,
            hedge_percent: 90,
            hedge_factor: 3,
            hedge_small: 48,
            collector_stale: Duration::from_secs(10),
            collector_first_beat: Duration::from_secs(2),
            beat_interval: Duration::from_secs(2),
            silent_after: Duration::from_secs(30),
            keep_scratch: false,
            faults: None,
        }
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The settings of the embedded stack (`cellmatrix serve`, the benchmarks): every
    /// `CELLMATRIX_*` setting from the environment except the store, which is given. In
    /// one process the collector's look at the store is cheap, and a request should not
    /// wait half a second for it: it polls every 50 ms unless told otherwise. Nor does
    /// the in-process invoker lose invocations, while tasks may queue for long behind its
    /// concurrency limit: a launch counts as lost after 60 s unless told otherwise (at
    /// Lambda's 5 s, a million-cell run re-invoked 76 queued tasks and shards), and so
    /// does a collector not yet heard of (`collector_stale` still applies). For the same
    /// reason it copies no small request's tasks (`hedge_small` 0): a copy would only
    /// take the machine's cores from the first.
    pub fn embedded(store: &str) -> Result<Self> {
        Self::from_lookup(|name| match name {
            "CELLMATRIX_STORE" => Some(store.to_string()),
            "CELLMATRIX_POLL_MS" => std::env::var(name).ok().or_else(|| Some("50".into())),
            "CELLMATRIX_HEDGE_SMALL" => std::env::var(name).ok().or_else(|| Some("0".into())),
            "CELLMATRIX_LOST_AFTER_MS"
            | "CELLMATRIX_LOST_PASSED_AFTER_MS"
            | "CELLMATRIX_COLLECTOR_FIRST_BEAT_MS" => {
                std::env::var(name).ok().or_else(|| Some("60000".into()))
            }
            _ => std::env::var(name).ok(),
        })
    }

    /// Reads the settings through `lookup`, so tests need not mutate the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let store = get("CELLMATRIX_STORE").ok_or_else(|| {
            Error::input(
                "environment variable CELLMATRIX_STORE",
                "not set; set it to a directory or to s3://bucket[/prefix]",
            )
        })?;
        let mut c = Config::new(store);
        let function = |name: &str, default: &str| get(name).unwrap_or_else(|| default.into());
        c.mapper_function = function("CELLMATRIX_MAPPER_FUNCTION", "mapper");
        c.worker_function = function("CELLMATRIX_WORKER_FUNCTION", "worker");
        c.reducer_function = function("CELLMATRIX_REDUCER_FUNCTION", "reducer");
        fn num<T: std::str::FromStr>(
            get: &impl Fn(&str) -> Option<String>,
            name: &str,
            default: T,
        ) -> Result<T> {
            match get(name) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| {
                    Error::input(
                        format!("environment variable {name}"),
                        format!("{v:?} is not a valid number"),
                    )
                }),
            }
        }
        // A setting that divides, chunks, bounds concurrency or counts attempts: zero
        // would divide by zero, `chunks(0)`, wait forever or never try.
        fn positive<T: std::str::FromStr + PartialEq + Default>(
            get: &impl Fn(&str) -> Option<String>,
            name: &str,
            default: T,
        ) -> Result<T> {
            let v = num(get, name, default)?;
            if v == T::default() {
                return Err(Error::input(
                    format!("environment variable {name}"),
                    "must be at least 1, not 0",
                ));
            }
            Ok(v)
        }
        c.bundles_per_mapper =
            positive(&get, "CELLMATRIX_BUNDLES_PER_MAPPER", c.bundles_per_mapper)?;
        c.driver_groups = num(&get, "CELLMATRIX_DRIVER_GROUPS", c.driver_groups)?;
        c.cells_per_worker = positive(&get, "CELLMATRIX_CELLS_PER_WORKER", c.cells_per_worker)?;
        c.bytes_per_worker = positive(&get, "CELLMATRIX_BYTES_PER_WORKER", c.bytes_per_worker)?;
        c.slice_bytes = num(&get, "CELLMATRIX_SLICE_BYTES", c.slice_bytes)?;
        c.piece_bytes = positive(&get, "CELLMATRIX_PIECE_BYTES", c.piece_bytes)?;
        c.invoke_concurrency =
            positive(&get, "CELLMATRIX_INVOKE_CONCURRENCY", c.invoke_concurrency)?;
        c.request_timeout = Duration::from_secs(num(
            &get,
            "CELLMATRIX_REQUEST_TIMEOUT_SECS",
            c.request_timeout.as_secs(),
        )?);
        let ms = |name: &str, default: Duration| -> Result<Duration> {
            Ok(Duration::from_millis(num(
                &get,
                name,
                default.as_millis() as u64,
            )?))
        };
        c.poll_interval = ms("CELLMATRIX_POLL_MS", c.poll_interval)?;
        c.task_attempts = positive(&get, "CELLMATRIX_TASK_ATTEMPTS", c.task_attempts)?;
        c.shard_nnz = positive(&get, "CELLMATRIX_SHARD_NNZ", c.shard_nnz)?;
        c.url_expiry = Duration::from_secs(num(
            &get,
            "CELLMATRIX_URL_EXPIRY_SECS",
            c.url_expiry.as_secs(),
        )?);
        c.csv_max_bytes = num(&get, "CELLMATRIX_CSV_MAX_BYTES", c.csv_max_bytes)?;
        c.loom_max_bytes = num(&get, "CELLMATRIX_LOOM_MAX_BYTES", c.loom_max_bytes)?;
        c.max_cells = num(&get, "CELLMATRIX_MAX_CELLS", c.max_cells)?;
        c.max_nnz = num(&get, "CELLMATRIX_MAX_NNZ", c.max_nnz)?;
        c.max_tasks = num(&get, "CELLMATRIX_MAX_TASKS", c.max_tasks)?;
        c.zarr_max_bytes = num(&get, "CELLMATRIX_ZARR_MAX_BYTES", c.zarr_max_bytes)?;
        c.h5ad_max_bytes = num(&get, "CELLMATRIX_H5AD_MAX_BYTES", c.h5ad_max_bytes)?;
        c.mtx_max_bytes = num(&get, "CELLMATRIX_MTX_MAX_BYTES", c.mtx_max_bytes)?;
        c.caller_max_running =
            positive(&get, "CELLMATRIX_CALLER_MAX_RUNNING", c.caller_max_running)?;
        c.store_attempts = positive(&get, "CELLMATRIX_STORE_ATTEMPTS", c.store_attempts)?;
        c.lost_after = ms("CELLMATRIX_LOST_AFTER_MS", c.lost_after)?;
        c.lost_passed_after = ms("CELLMATRIX_LOST_PASSED_AFTER_MS", c.lost_passed_after)?;
        c.hedge = get("CELLMATRIX_HEDGE").is_none_or(|v| v.trim() != "0");
        c.hedge_percent = num(&get, "CELLMATRIX_HEDGE_PERCENT", c.hedge_percent)?.min(100);
        c.hedge_factor = positive(&get, "CELLMATRIX_HEDGE_FACTOR", c.hedge_factor)?;
        c.hedge_small = num(&get, "CELLMATRIX_HEDGE_SMALL", c.hedge_small)?;
        c.collector_stale = ms("CELLMATRIX_COLLECTOR_STALE_MS", c.collector_stale)?;
        c.collector_first_beat = ms("CELLMATRIX_COLLECTOR_FIRST_BEAT_MS", c.collector_first_beat)?;
        c.beat_interval = ms("CELLMATRIX_BEAT_MS", c.beat_interval)?;
        if c.beat_interval.is_zero() {
            return Err(Error::input(
                "environment variable CELLMATRIX_BEAT_MS",
                "must be at least 1, not 0",
            ));
        }
        c.silent_after = ms("CELLMATRIX_SILENT_AFTER_MS", c.silent_after)?;
        c.keep_scratch = get("CELLMATRIX_KEEP_SCRATCH").is_some_and(|v| v.trim() == "1");
        if let Some(faults) = get("CELLMATRIX_FAULTS") {
            c.faults = Some(crate::fault::FaultPlan::parse(&faults)?);
        }
        if let Some(dir) = get("CELLMATRIX_SCRATCH_DIR") {
            c.scratch_dir = dir.into();
        }
        Ok(c)
    }

    /// The dense-format limits.
    pub fn dense_limits(&self) -> crate::convert::DenseLimits {
        crate::convert::DenseLimits {
            csv_max_bytes: self.csv_max_bytes,
            loom_max_bytes: self.loom_max_bytes,
        }
    }

    /// What one worker task may hold: the planner's budget.
    pub fn budget(&self) -> crate::plan::Budget {
        crate::plan::Budget {
            cells: self.cells_per_worker,
            bytes: self.bytes_per_worker,
            slice_bytes: self.slice_bytes,
        }
    }

    /// The deployed name of `function`.
    pub fn function_name(&self, function: Function) -> &str {
        match function {
            Function::Mapper => &self.mapper_function,
            Function::Worker => &self.worker_function,
            Function::Reducer => &self.reducer_function,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_stack_polls_often_and_waits_long_for_a_queued_launch() {
        if std::env::var_os("CELLMATRIX_POLL_MS").is_some()
            || std::env::var_os("CELLMATRIX_LOST_AFTER_MS").is_some()
            || std::env::var_os("CELLMATRIX_LOST_PASSED_AFTER_MS").is_some()
        {
            return;
        }
        let c = Config::embedded("somewhere").unwrap();
        assert_eq!(c.store, "somewhere");
        assert_eq!(c.poll_interval, Duration::from_millis(50));
        assert_eq!(c.lost_after, Duration::from_secs(60));
        assert_eq!(c.lost_passed_after, Duration::from_secs(60));
        if std::env::var_os("CELLMATRIX_HEDGE_SMALL").is_none() {
            assert_eq!(c.hedge_small, 0);
            assert_eq!(Config::new("x").hedge_small, 48);
        }
        // Lambda's default stays short.
        assert_eq!(Config::new("x").lost_after, Duration::from_secs(5));
        assert_eq!(
            Config::new("x").lost_passed_after,
            Duration::from_millis(1_500)
        );
    }

    #[test]
    fn config_requires_a_store_and_defaults_function_names() {
        let err = Config::from_lookup(|_| None).unwrap_err();
        assert!(err.to_string().contains("CELLMATRIX_STORE"), "{err}");
        assert!(Config::from_lookup(|_| Some(" ".into())).is_err());

        let config = Config::from_lookup(|name| match name {
            "CELLMATRIX_STORE" => Some("s3://bucket".into()),
            "CELLMATRIX_WORKER_FUNCTION" => Some("stack-worker".into()),
            "CELLMATRIX_CELLS_PER_WORKER" => Some("1000".into()),
            _ => None,
        })
        .unwrap();
        let mut expected = Config::new("s3://bucket");
        expected.worker_function = "stack-worker".into();
        expected.cells_per_worker = 1000;
        assert_eq!(config, expected);
        assert_eq!(config.function_name(Function::Worker), "stack-worker");
    }

    #[test]
    fn bad_numbers_are_refused_by_name() {
        let err = Config::from_lookup(|name| match name {
            "CELLMATRIX_STORE" => Some("x".into()),
            "CELLMATRIX_POLL_MS" => Some("soon".into()),
            _ => None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("CELLMATRIX_POLL_MS"), "{err}");
    }

    #[test]
    fn a_zero_that_would_divide_or_chunk_is_refused_by_name() {
        for name in [
            "CELLMATRIX_BUNDLES_PER_MAPPER",
            "CELLMATRIX_CELLS_PER_WORKER",
            "CELLMATRIX_BYTES_PER_WORKER",
            "CELLMATRIX_PIECE_BYTES",
            "CELLMATRIX_INVOKE_CONCURRENCY",
            "CELLMATRIX_TASK_ATTEMPTS",
            "CELLMATRIX_SHARD_NNZ",
            "CELLMATRIX_STORE_ATTEMPTS",
            "CELLMATRIX_HEDGE_FACTOR",
        ] {
            let err = Config::from_lookup(|n| match n {
                "CELLMATRIX_STORE" => Some("x".into()),
                n if n == name => Some(" 0 ".into()),
                _ => None,
            })
            .unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
            assert!(!err.is_retryable());
        }
        // Zero stays meaningful where it means "none": the driver plans no group itself.
        let c = Config::from_lookup(|n| match n {
            "CELLMATRIX_STORE" => Some("x".into()),
            "CELLMATRIX_DRIVER_GROUPS" => Some("0".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.driver_groups, 0);
    }
}
