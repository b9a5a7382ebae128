//! The run report, `requests/{id}/report.json`: every invocation of a request that
//! ended (driver, collector, mappers, workers, consolidation shards, conversion) with
//! its launch, start, end, copy and figures, and the totals: wall time by phase, the
//! critical path, and the bill through [`crate::cost`].
//!
//! [`build`] is pure, from the request's records ([`Records`]); [`gather`] reads them
//! from the store; [`write`] is what the collector calls once the request has ended,
//! before the cleanup removes the markers (the report itself is kept). Writing it never
//! changes an output byte, and a failure to write it is logged, not fatal.

use std::collections::{BTreeMap, HashMap};

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::cost::{Bill, Deployment, Lambda, Prices, Requests, Usage};
use crate::error::Error;
use crate::messages::RequestId;
use crate::state::{
    Converted, DoneMarker, ErrorMarker, Failure, Keys, Plan, ResultRecord, RunInfo, ShardRecord,
    StartMarker, get_json, put_json_if_absent,
};
use crate::store::DynStore;

/// Why a copy of an invocation was launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyKind {
    /// The first launch.
    First,
    /// Again after a retryable error.
    Retry,
    /// A second copy of a straggler.
    Hedge,
    /// Again after it was lost (never started) or went silent.
    Relaunch,
}

/// A launch the collector's ledger recorded (its clock, ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// The invocation's name (`group-{n}`, `task-{id}`, `shard-{n}`, `convert`).
    pub name: String,
    /// The attempt launched.
    pub attempt: u32,
    /// When.
    pub at_ms: u64,
    /// Why.
    pub copy: CopyKind,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Its result is committed.
    Succeeded,
    /// It failed.
    Failed,
    /// It was cancelled.
    Cancelled,
}

/// What became of one copy of an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fate {
    /// It wrote the invocation's output record.
    Done,
    /// It started, and another copy's record stands (a hedge's race, a duplicate), or
    /// it died: no end of its own is recorded.
    Superseded,
    /// It wrote an error marker.
    Failed,
    /// Launched, never seen started.
    Lost,
}

/// One copy of one invocation. Times are ms since the request's start (the driver's
/// receipt of the POST).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    /// `driver`, `collector`, `group-{n}`, `task-{id}`, `shard-{n}`, `convert`.
    pub name: String,
    /// The function it ran in.
    pub function: Lambda,
    /// Its attempt number.
    pub attempt: u32,
    /// Why it was launched.
    pub copy: CopyKind,
    /// What became of it.
    pub fate: Fate,
    /// When it was launched, as the collector saw it.
    pub launch_ms: Option<u64>,
    /// When it started (its start marker).
    pub start_ms: Option<u64>,
    /// When it wrote its output record.
    pub end_ms: Option<u64>,
    /// What it is billed for, ms: its end less its start; for a copy with no end of its
    /// own, as long as the copy that finished (it did the same work).
    pub billed_ms: f64,
    /// Cells read (workers).
    pub cells_in: Option<u64>,
    /// Cells written (workers).
    pub cells_out: Option<u64>,
    /// Bytes read from the store.
    pub bytes_read: Option<u64>,
    /// Bytes written to the store.
    pub bytes_written: Option<u64>,
    /// Peak resident memory of its process, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Its store requests, where counted (workers, shards, conversion).
    pub requests: Option<Requests>,
    /// Its error, if it failed.
    pub error: Option<String>,
}

/// A phase of the run: from its first invocation's start to its last one's end, ms
/// since the request's start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// `resolve`, `plan`, `workers`, `consolidation`, `conversion`.
    pub name: String,
    /// Its start.
    pub start_ms: u64,
    /// Its end.
    pub end_ms: u64,
}

/// A report's totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// From the POST to the end of the request, ms.
    pub wall_ms: u64,
    /// The phases, in order.
    pub phases: Vec<Phase>,
    /// The invocations the end waited for, in order: the driver, the mapper that
    /// planned the last task, the last task's copy that finished, the last shard, the
    /// conversion.
    pub critical_path: Vec<String>,
    /// Cells read and written by the workers' copies that finished.
    pub cells_in: u64,
    /// See `cells_in`.
    pub cells_out: u64,
    /// Billed GB-seconds.
    pub gb_seconds: f64,
    /// Invocations billed.
    pub invocations: u64,
    /// Store requests counted, by kind.
    pub requests: Requests,
    /// What the run used, as billed.
    pub usage: Usage,
    /// The deployment it is priced at.
    pub deployment: Deployment,
    /// The prices.
    pub prices: Prices,
    /// The bill, USD.
    pub bill: Bill,
    /// What the figures assume.
    pub assumptions: Vec<String>,
}

/// The run report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The request.
    pub id: RequestId,
    /// How it ended.
    pub outcome: Outcome,
    /// When it started (the driver received the POST), ms since the epoch.
    pub started_at_ms: u64,
    /// Every copy of every invocation, in order of start.
    pub invocations: Vec<Invocation>,
    /// The totals.
    pub totals: Totals,
}

impl Report {
    /// One line: time by phase and the cost.
    pub fn summary(&self) -> String {
        let phases: Vec<String> = self
            .totals
            .phases
            .iter()
            .map(|p| format!("{} {}", p.name, seconds(p.end_ms - p.start_ms)))
            .collect();
        format!(
            "{} in {}: {}; {} invocations, {:.1} GB-s, {} S3 requests, ${:.6}",
            match self.outcome {
                Outcome::Succeeded => "succeeded",
                Outcome::Failed => "failed",
                Outcome::Cancelled => "cancelled",
            },
            seconds(self.totals.wall_ms),
            phases.join(", "),
            self.totals.invocations,
            self.totals.gb_seconds,
            self.totals.requests.get
                + self.totals.requests.put
                + self.totals.requests.list
                + self.totals.requests.delete,
            self.totals.bill.total_usd,
        )
    }
}

fn seconds(ms: u64) -> String {
    format!("{:.2} s", ms as f64 / 1e3)
}

/// The usage of invocations billed `(function, ms)` and `requests`: the one way the
/// report, and the simulation, turn what ran into a [`Usage`] to bill.
pub fn usage(
    billed: impl IntoIterator<Item = (Lambda, f64)>,
    requests: Requests,
    deployment: &Deployment,
) -> Usage {
    let mut usage = Usage::default();
    for (f, ms) in billed {
        usage.invocation(f, ms, deployment);
    }
    usage.requests = requests;
    usage
}

/// Everything of a request the report is made from.
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// The run.
    pub run: Option<RunInfo>,
    /// The result, if it succeeded.
    pub result: Option<ResultRecord>,
    /// The failure, if it failed.
    pub failed: Option<Failure>,
    /// The cancel, if cancelled.
    pub cancelled: Option<Failure>,
    /// The start markers.
    pub starts: Vec<StartMarker>,
    /// The plans.
    pub plans: Vec<Plan>,
    /// The done markers.
    pub done: Vec<DoneMarker>,
    /// The shards' records.
    pub shards: Vec<ShardRecord>,
    /// The conversion's record.
    pub converted: Option<Converted>,
    /// The error markers.
    pub errors: Vec<ErrorMarker>,
    /// The collector's launches.
    pub launches: Vec<Launch>,
}

/// What one copy did, from its output record.
struct Finish {
    attempt: u32,
    start: u64,
    end: u64,
    cells: Option<(u64, u64)>,
    bytes: (u64, u64),
    peak_rss: u64,
    requests: Requests,
}

/// The report of request `id` from its records, at `deployment` and `prices`; `now_ms`
/// stands for the end of a request whose records say none.
pub fn build(
    id: &RequestId,
    r: &Records,
    deployment: &Deployment,
    prices: &Prices,
    now_ms: u64,
) -> Report {
    let run = r.run.clone().unwrap_or(RunInfo {
        started_ms: now_ms,
        deadline_ms: now_ms,
        received_ms: now_ms,
    });
    let t0 = if run.received_ms > 0 {
        run.received_ms.min(run.started_ms)
    } else {
        run.started_ms
    };
    let rel = |ms: u64| ms.saturating_sub(t0);
    let (outcome, end) = match (&r.result, &r.failed, &r.cancelled) {
        (Some(res), _, _) => (Outcome::Succeeded, res.finished_ms),
        (None, Some(f), _) => (Outcome::Failed, f.at_ms),
        (None, None, Some(c)) => (Outcome::Cancelled, c.at_ms),
        (None, None, None) => (Outcome::Failed, now_ms),
    };
    let end = end.max(run.started_ms);

    // What finished, by name.
    let mut finished: HashMap<String, Finish> = HashMap::new();
    for d in &r.done {
        finished.insert(
            format!("task-{}", d.task),
            Finish {
                attempt: d.attempt,
                start: d.started_ms,
                end: d.finished_ms.max(d.started_ms),
                cells: Some((d.cells_in, d.cells_out)),
                bytes: (d.bytes_read, d.bytes_written),
                peak_rss: d.peak_rss_bytes,
                requests: d.requests,
            },
        );
    }
    for s in &r.shards {
        finished.insert(
            format!("shard-{}", s.shard),
            Finish {
                attempt: s.attempt,
                start: s.started_ms,
                end: s.finished_ms.max(s.started_ms),
                cells: None,
                bytes: (s.bytes_read, s.bytes_written),
                peak_rss: s.peak_rss_bytes,
                requests: s.requests,
            },
        );
    }
    if let Some(c) = &r.converted {
        finished.insert(
            "convert".into(),
            Finish {
                attempt: 0,
                start: c.started_ms,
                end: c.finished_ms.max(c.started_ms),
                cells: None,
                bytes: (c.bytes_read, c.bytes_written),
                peak_rss: c.peak_rss_bytes,
                requests: c.requests,
            },
        );
    }
    let plans: HashMap<String, &Plan> = r
        .plans
        .iter()
        .map(|p| (format!("group-{}", p.group), p))
        .collect();
    let launches: HashMap<(&str, u32), &Launch> = r
        .launches
        .iter()
        .map(|l| ((l.name.as_str(), l.attempt), l))
        .collect();
    let errors: HashMap<(&str, u32), &ErrorMarker> = r
        .errors
        .iter()
        .map(|e| ((e.name.as_str(), e.attempt), e))
        .collect();
    let function = |name: &str| {
        if name.starts_with("task-") {
            Lambda::Worker
        } else if name.starts_with("group-") {
            Lambda::Mapper
        } else {
            Lambda::Reducer
        }
    };

    // Every copy seen started, and every launch never seen started.
    let mut copies: BTreeMap<(String, u32), Option<u64>> = BTreeMap::new();
    for s in &r.starts {
        copies.insert((s.name.clone(), s.attempt), Some(s.at_ms));
    }
    for (name, f) in &finished {
        copies
            .entry((name.clone(), f.attempt))
            .or_insert(Some(f.start));
    }
    for l in &r.launches {
        copies.entry((l.name.clone(), l.attempt)).or_insert(None);
    }
    let mut rows = Vec::new();
    for ((name, attempt), start) in copies {
        // Groups the driver planned in its own answer have a plan but no start marker:
        // they are the driver's time, not a mapper's.
        if name.starts_with("group-") && start.is_none() && plans.contains_key(&name) {
            continue;
        }
        let launch = launches.get(&(name.as_str(), attempt));
        let copy = launch.map_or(
            if attempt == 0 {
                CopyKind::First
            } else {
                CopyKind::Relaunch
            },
            |l| l.copy,
        );
        let winner = finished.get(&name).filter(|f| f.attempt == attempt);
        // Copies of one attempt (a small request's events go twice) share a start
        // marker, which the later one rewrites: the finishing copy's own start stands.
        let start = winner.map(|f| f.start).or(start);
        let plan = plans.get(&name).filter(|p| p.finished_ms > 0);
        let error = errors.get(&(name.as_str(), attempt));
        let (fate, end) = match (winner, plan, error, start) {
            (Some(f), _, _, _) => (Fate::Done, Some(f.end)),
            (None, Some(p), _, Some(s)) if p.finished_ms >= s => (Fate::Done, Some(p.finished_ms)),
            (None, _, Some(_), _) => (Fate::Failed, None),
            (None, _, None, Some(_)) => (Fate::Superseded, None),
            (None, _, None, None) => (Fate::Lost, None),
        };
        let billed_ms = match (start, end) {
            (Some(s), Some(e)) => e.saturating_sub(s) as f64,
            (Some(_), None) => finished
                .get(&name)
                .map_or(0.0, |f| f.end.saturating_sub(f.start) as f64),
            _ => 0.0,
        };
        rows.push(Invocation {
            function: function(&name),
            attempt,
            copy,
            fate,
            // The collector counts a task launched when it sees its plan, which may
            // be after the mapper's launch started it.
            launch_ms: launch.map(|l| rel(l.at_ms.min(start.unwrap_or(u64::MAX)))),
            start_ms: start.map(rel),
            end_ms: end.map(rel),
            billed_ms,
            cells_in: winner.and_then(|f| f.cells).map(|c| c.0),
            cells_out: winner.and_then(|f| f.cells).map(|c| c.1),
            bytes_read: winner.map(|f| f.bytes.0),
            bytes_written: winner.map(|f| f.bytes.1),
            peak_rss_bytes: winner.map(|f| f.peak_rss),
            requests: winner.map(|f| f.requests),
            error: error.map(|e| e.message.clone()),
            name,
        });
    }
    rows.sort_by_key(|row| {
        (
            row.start_ms.or(row.launch_ms).unwrap_or(u64::MAX),
            rank(&row.name),
        )
    });

    // The driver: from the POST until it had planned its groups and started the run.
    let driver_end = r
        .plans
        .iter()
        .filter(|p| {
            !r.starts
                .iter()
                .any(|s| s.name == format!("group-{}", p.group))
        })
        .map(|p| p.finished_ms)
        .max()
        .unwrap_or(0)
        .max(run.started_ms);
    let mut all = vec![
        Invocation {
            name: "driver".into(),
            function: Lambda::Driver,
            attempt: 0,
            copy: CopyKind::First,
            fate: Fate::Done,
            launch_ms: Some(0),
            start_ms: Some(0),
            end_ms: Some(rel(driver_end)),
            billed_ms: rel(driver_end) as f64,
            cells_in: None,
            cells_out: None,
            bytes_read: None,
            bytes_written: None,
            peak_rss_bytes: None,
            requests: None,
            error: None,
        },
        // The collector polls from the start of the run to its end (hand-overs and
        // revivals in between are one row).
        Invocation {
            name: "collector".into(),
            function: Lambda::Reducer,
            attempt: 0,
            copy: CopyKind::First,
            fate: Fate::Done,
            launch_ms: Some(rel(run.started_ms)),
            start_ms: Some(rel(run.started_ms)),
            end_ms: Some(rel(end)),
            billed_ms: end.saturating_sub(run.started_ms) as f64,
            cells_in: None,
            cells_out: None,
            bytes_read: None,
            bytes_written: None,
            peak_rss_bytes: None,
            requests: None,
            error: None,
        },
    ];
    all.extend(rows);

    let span = |prefix: &str| {
        let done: Vec<&Invocation> = all
            .iter()
            .filter(|i| i.name.starts_with(prefix) && i.fate == Fate::Done)
            .collect();
        let start = done.iter().filter_map(|i| i.start_ms).min()?;
        let end = done.iter().filter_map(|i| i.end_ms).max()?;
        Some((start, end))
    };
    let mut phases = vec![Phase {
        name: "resolve".into(),
        start_ms: 0,
        end_ms: rel(run.started_ms),
    }];
    let planned = r.plans.iter().map(|p| p.finished_ms).max().unwrap_or(0);
    if planned > 0 {
        phases.push(Phase {
            name: "plan".into(),
            start_ms: rel(run.started_ms),
            end_ms: rel(planned).max(rel(run.started_ms)),
        });
    }
    for (name, prefix) in [
        ("workers", "task-"),
        ("consolidation", "shard-"),
        ("conversion", "convert"),
    ] {
        if let Some((start_ms, end_ms)) = span(prefix) {
            phases.push(Phase {
                name: name.into(),
                start_ms,
                end_ms,
            });
        }
    }

    let last = |prefix: &str| {
        all.iter()
            .filter(|i| i.name.starts_with(prefix) && i.fate == Fate::Done)
            .max_by_key(|i| i.end_ms)
    };
    let mut critical_path = vec!["driver".to_string()];
    if let Some(task) = last("task-") {
        let id = &task.name["task-".len()..];
        if let Some(p) = r
            .plans
            .iter()
            .find(|p| p.tasks.iter().any(|t| t.id.to_string() == id))
        {
            let group = format!("group-{}", p.group);
            if all.iter().any(|i| i.name == group) {
                critical_path.push(group);
            }
        }
        critical_path.push(format!("{}.{}", task.name, task.attempt));
    }
    if let Some(shard) = last("shard-") {
        critical_path.push(format!("{}.{}", shard.name, shard.attempt));
    }
    if let Some(c) = last("convert") {
        critical_path.push(format!("{}.{}", c.name, c.attempt));
    }

    let mut requests = Requests::default();
    for i in &all {
        if let Some(q) = &i.requests {
            requests.add(q);
        }
    }
    let usage = usage(
        all.iter()
            .filter(|i| i.start_ms.is_some())
            .map(|i| (i.function, i.billed_ms)),
        requests,
        deployment,
    );
    let bill = usage.bill(prices);
    let workers = all
        .iter()
        .filter(|i| i.fate == Fate::Done && i.cells_in.is_some());
    let (cells_in, cells_out) = workers.fold((0, 0), |(a, b), i| {
        (a + i.cells_in.unwrap_or(0), b + i.cells_out.unwrap_or(0))
    });
    Report {
        id: id.clone(),
        outcome,
        started_at_ms: t0,
        totals: Totals {
            wall_ms: rel(end),
            phases,
            critical_path,
            cells_in,
            cells_out,
            gb_seconds: usage.total_gb_seconds(),
            invocations: usage.total_invocations(),
            requests,
            bill,
            usage,
            deployment: deployment.clone(),
            prices: *prices,
            assumptions: vec![
                format!(
                    "Lambda at the template's memory sizes ({} MB driver, mapper, worker, reducer), {}; prices of us-east-1, free tiers ignored",
                    deployment
                        .memory_mb
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join("/"),
                    deployment.architecture
                ),
                "S3 requests counted for workers, shards and the conversion; the driver's, mappers' and collector's are not".into(),
                "the collector is billed from the run's start to its end; a copy with no end of its own as long as the copy that finished".into(),
                "times are the invocations' own clocks".into(),
            ],
        },
        invocations: all,
    }
}

/// Orders rows that start together: the driver's, the collector's, then by kind.
fn rank(name: &str) -> u8 {
    match name.split('-').next() {
        Some("group") => 0,
        Some("task") => 1,
        Some("shard") => 2,
        _ => 3,
    }
}

/// Reads every record of request `keys` the report is made from; `launches` are the
/// collector's.
pub async fn gather(
    store: &DynStore,
    keys: &Keys,
    launches: Vec<Launch>,
) -> Result<Records, Error> {
    let list = |prefix: String| async move { Ok::<_, Error>(store.list(&prefix).await?) };
    let (k_run, k_result, k_failed, k_cancel, k_converted) = (
        keys.run(),
        keys.result(),
        keys.failed(),
        keys.cancel(),
        keys.converted(),
    );
    let (run, result, failed, cancelled, converted) = futures::try_join!(
        get_json::<RunInfo>(store, &k_run),
        get_json::<ResultRecord>(store, &k_result),
        get_json::<Failure>(store, &k_failed),
        get_json::<Failure>(store, &k_cancel),
        get_json::<Converted>(store, &k_converted),
    )?;
    let (starts, plans, done, shards, errors) = futures::try_join!(
        list(keys.starts()),
        list(keys.plans()),
        list(keys.dones()),
        list(keys.shards()),
        list(keys.errors()),
    )?;
    async fn read_all<T: serde::de::DeserializeOwned>(
        store: &DynStore,
        listed: Vec<crate::store::ObjectMeta>,
    ) -> Result<Vec<T>, Error> {
        // Futures built eagerly for `Send`.
        let reads: Vec<_> = listed
            .iter()
            .map(|o| get_json::<T>(store, &o.key))
            .collect();
        let read: Vec<Option<T>> = futures::stream::iter(reads)
            .buffered(READS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(read.into_iter().flatten().collect())
    }
    let (starts, plans, done, shards, errors) = futures::try_join!(
        read_all::<StartMarker>(store, starts),
        read_all::<Plan>(store, plans),
        read_all::<DoneMarker>(store, done),
        read_all::<ShardRecord>(store, shards),
        read_all::<ErrorMarker>(store, errors),
    )?;
    Ok(Records {
        run,
        result,
        failed,
        cancelled,
        starts,
        plans,
        done,
        shards,
        converted,
        errors,
        launches,
    })
}

/// Records read at once.
const READS_IN_FLIGHT: usize = 32;

/// Writes the report of request `keys`, which has ended, unless one is there (a
/// re-run's driver deletes the last one); without `launches`, those [`note_launches`]
/// recorded. Logged, never an error: the report is not part of the result.
pub async fn write(store: &DynStore, keys: &Keys, launches: Vec<Launch>) {
    let made = async {
        if store.exists(&keys.report()).await? {
            return Ok(None);
        }
        let launches = match launches.is_empty() {
            true => get_json::<Vec<Launch>>(store, &keys.launches())
                .await?
                .unwrap_or_default(),
            false => launches,
        };
        let records = gather(store, keys, launches).await?;
        let report = build(
            keys.id(),
            &records,
            &Deployment::default(),
            &Prices::default(),
            now_ms(),
        );
        put_json_if_absent(store, &keys.report(), &report).await?;
        Ok::<_, Error>(Some(report))
    };
    match made.await {
        Ok(Some(report)) => {
            tracing::info!(request = %keys.id(), summary = %report.summary(), "run report")
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(request = %keys.id(), error = %e, "cannot write the run report"),
    }
}

/// Records the collector's `launches` so far (best effort, logged), for a report that
/// an invocation other than the collector writes: the shard that commits a zarr result
/// cleans up before the collector looks again.
pub async fn note_launches(store: &DynStore, keys: &Keys, launches: &[Launch]) {
    if let Err(e) = crate::state::put_json(store, &keys.launches(), &launches).await {
        tracing::warn!(request = %keys.id(), error = %e, "cannot record the launches");
    }
}

/// Reads the report of request `keys`, if written.
pub async fn read(store: &DynStore, keys: &Keys) -> Result<Option<Report>, Error> {
    get_json(store, &keys.report()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::TaskId;
    use crate::state::PlannedTask;

    fn done(task: &str, attempt: u32, start: u64, end: u64, cells: u64) -> DoneMarker {
        DoneMarker {
            task: TaskId::parse(task).unwrap(),
            cells_in: cells,
            cells_out: cells / 2,
            nnz: 0,
            bytes_read: 1,
            bytes_written: 1,
            duration_ms: end - start,
            peak_rss_bytes: 1 << 20,
            attempt,
            started_ms: start,
            finished_ms: end,
            requests: Requests {
                get: 10,
                put: 2,
                list: 0,
                delete: 0,
            },
            nnz_per_chunk: 1,
        }
    }

    #[test]
    fn a_report_lists_each_copy_its_phases_and_bills_what_ran() {
        let (a, b) = ("a".repeat(32), "b".repeat(32));
        let id = RequestId::parse(&"0".repeat(32)).unwrap();
        let start = |name: &str, attempt, at_ms| StartMarker {
            name: name.into(),
            attempt,
            at_ms,
            beat: 0,
        };
        let launch = |name: &str, attempt, at_ms, copy| Launch {
            name: name.into(),
            attempt,
            at_ms,
            copy,
        };
        let records = Records {
            run: Some(RunInfo {
                received_ms: 1_000,
                started_ms: 1_100,
                deadline_ms: 99_000,
            }),
            result: Some(ResultRecord {
                format: "zarr".into(),
                key: String::new(),
                n_cells: 150,
                n_genes: 1,
                nnz: 1,
                started_ms: 1_100,
                finished_ms: 5_000,
                planned_after_ms: 100,
                collected_after_ms: 3_000,
                conversion: None,
            }),
            plans: vec![Plan {
                group: 0,
                tasks: [&a, &b]
                    .iter()
                    .map(|t| PlannedTask {
                        id: TaskId::parse(t).unwrap(),
                        cells: 1,
                        bytes: 1,
                    })
                    .collect(),
                manifest_reads: 0,
                started_ms: 1_110,
                finished_ms: 1_200,
            }],
            starts: vec![
                start(&format!("task-{a}"), 0, 1_300),
                start(&format!("task-{b}"), 0, 1_300),
                start(&format!("task-{b}"), 1, 2_500),
                start("shard-0", 0, 4_200),
            ],
            done: vec![
                done(&a, 0, 1_300, 2_000, 100),
                done(&b, 1, 2_500, 4_000, 200),
            ],
            shards: vec![ShardRecord {
                shard: 0,
                started_ms: 4_200,
                finished_ms: 4_900,
                peak_rss_bytes: 1 << 21,
                ..Default::default()
            }],
            launches: vec![
                launch(&format!("task-{a}"), 0, 1_250, CopyKind::First),
                launch(&format!("task-{b}"), 0, 1_250, CopyKind::First),
                launch(&format!("task-{b}"), 1, 2_400, CopyKind::Hedge),
                launch("shard-0", 0, 4_100, CopyKind::First),
            ],
            ..Records::default()
        };
        let d = Deployment::default();
        let r = build(&id, &records, &d, &Prices::default(), 0);
        assert_eq!(r.outcome, Outcome::Succeeded);
        assert_eq!(r.totals.wall_ms, 4_000);
        let names: Vec<(&str, u32, Fate)> = r
            .invocations
            .iter()
            .map(|i| (i.name.as_str(), i.attempt, i.fate))
            .collect();
        let (ta, tb) = (format!("task-{a}"), format!("task-{b}"));
        assert_eq!(
            names,
            [
                ("driver", 0, Fate::Done),
                ("collector", 0, Fate::Done),
                (ta.as_str(), 0, Fate::Done),
                (tb.as_str(), 0, Fate::Superseded),
                (tb.as_str(), 1, Fate::Done),
                ("shard-0", 0, Fate::Done),
            ]
        );
        let hedge = &r.invocations[4];
        assert_eq!(hedge.copy, CopyKind::Hedge);
        assert_eq!(
            (hedge.launch_ms, hedge.start_ms, hedge.end_ms),
            (Some(1_400), Some(1_500), Some(3_000))
        );
        // The copy that lost is billed as long as the one that finished.
        assert_eq!(r.invocations[3].billed_ms, 1_500.0);
        // The driver planned group 0 itself (no start marker): its end is the plan's.
        assert_eq!(r.invocations[0].end_ms, Some(200));
        let phases: Vec<(&str, u64, u64)> = r
            .totals
            .phases
            .iter()
            .map(|p| (p.name.as_str(), p.start_ms, p.end_ms))
            .collect();
        assert_eq!(
            phases,
            [
                ("resolve", 0, 100),
                ("plan", 100, 200),
                ("workers", 300, 3_000),
                ("consolidation", 3_200, 3_900)
            ]
        );
        assert_eq!(
            r.totals.critical_path,
            [
                "driver".to_string(),
                format!("{tb}.1"),
                "shard-0.0".to_string()
            ]
        );
        assert_eq!((r.totals.cells_in, r.totals.cells_out), (300, 150));
        // Billed: driver 200, collector 3,900, workers 700 + 1,500 + 1,500, shard 700.
        let expected = usage(
            [
                (Lambda::Driver, 200.0),
                (Lambda::Reducer, 3_900.0),
                (Lambda::Worker, 700.0),
                (Lambda::Worker, 1_500.0),
                (Lambda::Worker, 1_500.0),
                (Lambda::Reducer, 700.0),
            ],
            Requests {
                get: 20,
                put: 4,
                list: 0,
                delete: 0,
            },
            &d,
        );
        assert_eq!(r.totals.usage, expected);
        assert_eq!(r.totals.bill, expected.bill(&Prices::default()));
        assert!(
            r.summary()
                .starts_with("succeeded in 4.00 s: resolve 0.10 s"),
            "{}",
            r.summary()
        );
    }
}
