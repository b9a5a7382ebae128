//! The state of a request, all of it in the store under `requests/{id}/`, and the
//! result under `results/{id}/`. Every writer owns its keys, so there are no locks:
//!
//! | key | written by | how |
//! |---|---|---|
//! | `request.json` | driver | put-if-absent: the request exists |
//! | `run.json` | driver | put, again on a re-run after Failed/Cancelled |
//! | `genes.json` | driver | put (same bytes every time) |
//! | `tasks/{task}.json` | mapper | put, before the plan |
//! | `plans/{group}.json` | mapper | put, after its tasks: the group is planned |
//! | `parts/{task}/…` | worker | Zarr arrays, same bytes on every attempt |
//! | `done/{task}.json` | worker | put, after its part: the task is done |
//! | `errors/{name}.json` | any stage | put when an invocation fails |
//! | `progress.json` | collector | put |
//! | `consolidate.json` | collector | put-if-absent: offsets of every part |
//! | `shards/{n}.json` | reducer | put, after its range of the output |
//! | `cancel.json` | driver (DELETE) | put-if-absent |
//! | `failed.json` | collector | put-if-absent |
//! | `result.json` | collector | put-if-absent: the request succeeded |
//! | `launches.json` | collector | put when it starts the shards: its launches, for the run report |
//! | `report.json` | collector | put-if-absent once the request ended, before the cleanup: the run report |
//! | `started/{name}.{attempt}.json` | every invocation but the collector | put at its start, again every beat |
//! | `collector.json` | collector | put, when it hands over to a fresh invocation |
//! | `collectors/{heartbeat}.{period}.json` | whoever revives a silent collector | put-if-absent: the lease |
//! | `callers/{caller}.json` | driver (POST) | put-if-absent by each caller's first POST; deleted by its DELETE |
//!
//! And per caller, outside any request (`{caller}` is [`Caller::key`], a hash of the
//! identity, never its text):
//!
//! | key | written by | how |
//! |---|---|---|
//! | `callers/{caller}/running/{id}.json` | driver (POST) | put when the caller submits or joins a run; deleted by its DELETE, or once the run has ended |

use std::ops::Range;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bundle::{BundleMetadata, ValueType};
use crate::caller::Caller;
use crate::clock::{now_ms, rfc3339};
use crate::error::Error;
use crate::fqid::Fqid;
use crate::messages::{RequestId, TaskId};
use crate::store::{DynStore, PutOutcome};

mod view;
pub use view::RequestView;

/// The keys of one request.
#[derive(Debug, Clone)]
pub struct Keys {
    id: RequestId,
}

impl Keys {
    /// The keys of request `id`.
    pub fn new(id: &RequestId) -> Self {
        Keys { id: id.clone() }
    }

    /// The request id.
    pub fn id(&self) -> &RequestId {
        &self.id
    }

    fn at(&self, rest: &str) -> String {
        format!("requests/{}/{rest}", self.id)
    }

    /// Everything of the request's scratch state.
    pub fn prefix(&self) -> String {
        self.at("")
    }
    /// The stored request.
    pub fn request(&self) -> String {
        self.at("request.json")
    }
    /// The current run.
    pub fn run(&self) -> String {
        self.at("run.json")
    }
    /// The output gene space.
    pub fn genes(&self) -> String {
        self.at("genes.json")
    }
    /// A task's slices.
    pub fn task(&self, task: &TaskId) -> String {
        self.at(&format!("tasks/{task}.json"))
    }
    /// Prefix of the plans.
    pub fn plans(&self) -> String {
        self.at("plans/")
    }
    /// A group's plan.
    pub fn plan(&self, group: u32) -> String {
        self.at(&format!("plans/{group:06}.json"))
    }
    /// Prefix of a task's part (a Zarr group).
    pub fn part(&self, task: &TaskId) -> String {
        self.at(&format!("parts/{task}"))
    }
    /// Prefix of the done markers.
    pub fn dones(&self) -> String {
        self.at("done/")
    }
    /// A task's done marker.
    pub fn done(&self, task: &TaskId) -> String {
        self.at(&format!("done/{task}.json"))
    }
    /// Prefix of the error markers.
    pub fn errors(&self) -> String {
        self.at("errors/")
    }
    /// An invocation's error marker.
    pub fn error(&self, name: &str) -> String {
        self.at(&format!("errors/{name}.json"))
    }
    /// The collector's progress summary.
    pub fn progress(&self) -> String {
        self.at("progress.json")
    }
    /// The consolidation plan.
    pub fn consolidate(&self) -> String {
        self.at("consolidate.json")
    }
    /// Prefix of the shard markers.
    pub fn shards(&self) -> String {
        self.at("shards/")
    }
    /// A consolidation shard's marker.
    pub fn shard(&self, shard: u32) -> String {
        self.at(&format!("shards/{shard:06}.json"))
    }
    /// The cancel marker.
    pub fn cancel(&self) -> String {
        self.at("cancel.json")
    }
    /// The failure record.
    pub fn failed(&self) -> String {
        self.at("failed.json")
    }
    /// The success record.
    pub fn result(&self) -> String {
        self.at("result.json")
    }
    /// Prefix of the output Zarr group of a zarr request (and of [`Keys::zarr`]).
    pub fn output(&self) -> String {
        format!("{}/matrix.zarr", self.results())
    }
    /// Prefix of the result's files.
    pub fn results(&self) -> String {
        format!("results/{}", self.id)
    }
    /// Where the consolidation writes the Zarr group: the result itself for `zarr`, the
    /// request's scratch space for a format converted from it.
    pub fn zarr(&self, format: crate::convert::Format) -> String {
        match format {
            crate::convert::Format::Zarr => self.output(),
            _ => self.at("matrix.zarr"),
        }
    }
    /// The conversion's record.
    pub fn converted(&self) -> String {
        self.at("converted.json")
    }
    /// The collector's launches so far, written when it starts the consolidation: the
    /// run report's launch times when a shard's cleanup comes before the collector's.
    pub fn launches(&self) -> String {
        self.at("launches.json")
    }
    /// The run report, written by the collector once the request ended
    /// (`crate::report`).
    pub fn report(&self) -> String {
        self.at("report.json")
    }
    /// Prefix of the start markers.
    pub fn starts(&self) -> String {
        self.at("started/")
    }
    /// The start marker of attempt `attempt` of invocation `name` (an error marker's name).
    pub fn started(&self, name: &str, attempt: u32) -> String {
        self.at(&format!("started/{name}.{attempt}.json"))
    }
    /// The collector's checkpoint.
    pub fn checkpoint(&self) -> String {
        self.at("collector.json")
    }
    /// The lease of a collector revived after the one whose last heartbeat was
    /// `heartbeat_ms` went silent, in its `period`-th stale period: whoever creates it
    /// starts that collector (`crate::handlers::revive`).
    pub fn lease(&self, heartbeat_ms: u64, period: u64) -> String {
        self.at(&format!("collectors/{heartbeat_ms}.{period}.json"))
    }
    /// Prefix of the callers who submitted the request (its owners).
    pub fn callers(&self) -> String {
        self.at("callers/")
    }
    /// The record that `caller` submitted the request.
    pub fn caller(&self, caller: &Caller) -> String {
        self.at(&format!("callers/{}.json", caller.key()))
    }
}

/// The keys of one caller, outside any request.
#[derive(Debug, Clone)]
pub struct CallerKeys {
    key: String,
}

impl CallerKeys {
    /// The keys of `caller`.
    pub fn new(caller: &Caller) -> Self {
        CallerKeys { key: caller.key() }
    }
    /// Prefix of the runs the caller submitted or joined that may still be running.
    pub fn running(&self) -> String {
        format!("callers/{}/running/", self.key)
    }
    /// The marker that the caller has a part in the run of request `id`.
    pub fn running_request(&self, id: &RequestId) -> String {
        format!("{}{id}.json", self.running())
    }
}

/// `requests/{id}/callers/{caller}.json` and `callers/{caller}/running/{id}.json`: who,
/// and since when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallerRecord {
    /// The caller's identity (an IAM ARN, or `local`).
    pub caller: String,
    /// The request.
    pub request: RequestId,
    /// When it was written, ms since the Unix epoch.
    pub at_ms: u64,
}

/// An invocation's start marker: it began work at `at_ms`, after finding the request
/// neither ended nor cancelled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StartMarker {
    /// `task-{id}`, `group-{n}`, `shard-{n}` or `convert`.
    pub name: String,
    /// Which attempt.
    pub attempt: u32,
    /// When it checked for a cancel, just before writing this marker.
    pub at_ms: u64,
    /// Heartbeats so far: the marker is written again while the invocation runs
    /// ([`beat`]), so a listing shows it alive.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub beat: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Writes the start marker of a running invocation again, as heartbeat number `beat`.
pub async fn beat(
    store: &DynStore,
    keys: &Keys,
    name: &str,
    attempt: u32,
    at_ms: u64,
    beat: u32,
) -> Result<(), Error> {
    let marker = StartMarker {
        name: name.to_string(),
        attempt,
        at_ms,
        beat,
    };
    put_json(store, &keys.started(name, attempt), &marker).await
}

/// Writes the start marker of `name` unless the request has ended, or `done` (the key of
/// its output's marker, if it has one) exists; the invocation must do nothing then. Both
/// checks are one round trip. The invocation's first `reads` run with the marker's
/// write, only once the checks let it start. The cancel check comes first, so a
/// marker's `at_ms` is never later than the moment its invocation last saw no cancel.
pub async fn start<T>(
    store: &DynStore,
    keys: &Keys,
    name: &str,
    attempt: u32,
    done: Option<&str>,
    reads: impl Future<Output = Result<T, Error>>,
) -> Result<Started<T>, Error> {
    let at_ms = now_ms();
    let (done, end) = futures::try_join!(
        async {
            match done {
                Some(key) => Ok(store.exists(key).await?),
                None => Ok(false),
            }
        },
        end(store, keys),
    )?;
    if done {
        return Ok(Started::AlreadyDone);
    }
    if end.any() {
        return Ok(Started::Ended);
    }
    let marker = StartMarker {
        name: name.to_string(),
        attempt,
        at_ms,
        beat: 0,
    };
    let key = keys.started(name, attempt);
    let ((), read) = futures::try_join!(put_json(store, &key, &marker), reads)?;
    Ok(Started::Started { at_ms, read })
}

/// What [`start`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started<T> {
    /// The start marker is written, saying the invocation started at `at_ms`, and the
    /// first reads gave `read`: go on.
    Started {
        /// The marker's start time, which its heartbeats repeat.
        at_ms: u64,
        /// The first reads.
        read: T,
    },
    /// Its output's marker exists: a copy did the work.
    AlreadyDone,
    /// The request has ended.
    Ended,
}

/// What the driver stored of a request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredRequest {
    /// The id.
    pub id: RequestId,
    /// The canonical request (see [`crate::request::MatrixRequest::canonical`]).
    pub canonical: serde_json::Value,
    /// The resolved bundles, in output order.
    pub bundles: Vec<Fqid>,
    /// Number of mapper groups.
    pub groups: u32,
    /// Bundles per group (the setting when the request was first submitted, so a re-run
    /// or a re-invoked mapper groups the bundles the same way).
    pub bundles_per_mapper: usize,
    /// Element type of the output counts.
    pub value_type: ValueType,
    /// Number of output genes.
    pub n_genes: u64,
    /// When it was first submitted (RFC 3339).
    pub submitted_at: String,
    /// The feature sets whose every feature keeps its column in the output genes (they
    /// are the output's first genes, in order): a worker remaps their bundles without
    /// reading the set or the gene space, hundreds of kB of ids each. Empty in a
    /// request stored before it was recorded, whose workers read both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_sets: Vec<String>,
    /// The output's obs columns: each requested field's name and kind, decided from the
    /// catalog when the request was first submitted. Empty in a request stored before
    /// they were recorded, whose fields are all built-in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<crate::obs::ObsColumn>,
    /// How many times each worker event is sent: 2 when the whole request plans into at
    /// most `hedge_small` tasks, with `hedge` on (`Config::hedge_small`), so that a
    /// dropped, crashed or slow copy costs it nothing; 1 otherwise, and in a request
    /// stored before it was recorded. Both copies are the same event: a duplicate
    /// delivery, which every handler takes in its stride.
    #[serde(
        default = "crate::messages::one",
        skip_serializing_if = "crate::messages::is_one"
    )]
    pub copies: u32,
    /// The dry run's counts, as the driver had them once it resolved the request (status
    /// `preview`). Absent from a request stored before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
}

/// A request's counts before it runs: the status' `preview`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Preview {
    /// Selected bundles.
    pub bundles: u64,
    /// Cells the filter takes (an upper bound unless `exact`).
    pub cells: u64,
    /// Whether `cells` and `nnz` are exact.
    pub exact: bool,
    /// Output genes.
    pub genes: u64,
    /// Nonzeros of the cells taken.
    pub nnz: u64,
    /// Worker tasks.
    pub tasks: u64,
    /// `catalog`, or `obs` when cells' fields were read.
    pub counted_from: String,
}

/// One run of a request (a re-run after Failed or Cancelled gets a new one).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    /// When the run started, ms since the Unix epoch.
    pub started_ms: u64,
    /// When it must have finished.
    pub deadline_ms: u64,
    /// When the driver received the POST that started the run, ms since the epoch: the
    /// resolve phase is from then to `started_ms` (0 in a run recorded before it was).
    #[serde(default)]
    pub received_ms: u64,
}

/// What a worker needs of a bundle (from the catalog, so no manifest is read).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BundleInfo {
    /// The bundle.
    pub fqid: Fqid,
    /// Cells.
    pub n_cells: u64,
    /// Features.
    pub n_features: u64,
    /// Stored nonzeros.
    pub nnz: u64,
    /// Element type of its counts.
    pub value_type: ValueType,
    /// Its feature set.
    pub feature_set: String,
    /// Its metadata (for the filter and the bundle fields).
    pub metadata: BundleMetadata,
    /// How its arrays are chunked, when its catalog entry says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<crate::bundle::manifest::Layout>,
}

/// Rows of one bundle in a task.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SliceSpec {
    /// The bundle.
    pub bundle: BundleInfo,
    /// The rows.
    pub rows: Range<u64>,
}

/// A worker task, `tasks/{task}.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskSpec {
    /// The task.
    pub id: TaskId,
    /// Its group.
    pub group: u32,
    /// What it reads, in output order.
    pub slices: Vec<SliceSpec>,
}

/// A task in a plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlannedTask {
    /// The task.
    pub id: TaskId,
    /// Cells it reads.
    pub cells: u64,
    /// Bytes it reads (estimated from the catalog).
    pub bytes: u64,
}

/// A mapper's plan, `plans/{group}.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// The group.
    pub group: u32,
    /// Its tasks, in output order.
    pub tasks: Vec<PlannedTask>,
    /// Manifests read because the catalog lacked a bundle.
    pub manifest_reads: u64,
    /// When the planning started and when the plan was written, ms since the epoch (0
    /// in a plan written before they were recorded): the run report's mapper row.
    #[serde(default)]
    pub started_ms: u64,
    /// See `started_ms`.
    #[serde(default)]
    pub finished_ms: u64,
}

/// A worker's done marker and stats, `done/{task}.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DoneMarker {
    /// The task.
    pub task: TaskId,
    /// Cells read.
    pub cells_in: u64,
    /// Cells that passed the filter.
    pub cells_out: u64,
    /// Nonzeros written.
    pub nnz: u64,
    /// Bytes read from the store.
    pub bytes_read: u64,
    /// Bytes written to the store.
    pub bytes_written: u64,
    /// Wall time of the task.
    pub duration_ms: u64,
    /// Peak resident memory of the process.
    pub peak_rss_bytes: u64,
    /// The attempt that wrote it.
    pub attempt: u32,
    /// When that attempt started (its start marker's time), ms since the epoch; 0 in a
    /// marker written before it was recorded.
    #[serde(default)]
    pub started_ms: u64,
    /// When it wrote this marker, ms since the epoch; 0 in an older marker.
    #[serde(default)]
    pub finished_ms: u64,
    /// Its store requests, by kind (none in an older marker).
    #[serde(default)]
    pub requests: crate::cost::Requests,
    /// Values per chunk of the part's `indices` and `data` (see
    /// `part::part_nnz_chunk`; a marker written before it was recorded: 2^20).
    #[serde(default = "default_part_nnz_chunk")]
    pub nnz_per_chunk: u64,
}

/// A marker written before the chunk was recorded: every part then had chunks of 2^20
/// values. A fixed value, not the part writer's constant, which may change after them.
fn default_part_nnz_chunk() -> u64 {
    1 << 20
}

/// An invocation that failed, `errors/{name}.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorMarker {
    /// What failed: `task-{id}`, `group-{n}` or `shard-{n}`.
    pub name: String,
    /// Whether a retry may succeed.
    pub retryable: bool,
    /// The error.
    pub message: String,
    /// The attempt that failed.
    pub attempt: u32,
}

/// The collector's summary for status requests, `progress.json`; also its heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// When a collector last wrote it: a status request finding it stale starts a new one.
    #[serde(default)]
    pub heartbeat_ms: u64,
    /// Groups planned.
    pub groups_planned: u32,
    /// Tasks in the plans seen so far (all of them once every group is planned).
    pub tasks_total: u64,
    /// Tasks done.
    pub tasks_done: u64,
    /// Cells written by the tasks done.
    pub cells_written: u64,
}

/// A part's place in the output, from its done marker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartPlace {
    /// The task that wrote it.
    pub task: TaskId,
    /// Its first output row.
    pub row: u64,
    /// Its rows.
    pub cells: u64,
    /// Its first output nonzero.
    pub nz: u64,
    /// Its nonzeros.
    pub nnz: u64,
    /// Values per chunk of its `indices` and `data`, as its done marker says.
    #[serde(default = "default_part_nnz_chunk")]
    pub nnz_per_chunk: u64,
}

/// The consolidation plan, `consolidate.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Consolidation {
    /// Every non-empty part, in output order.
    pub parts: Vec<PartPlace>,
    /// Output cells.
    pub n_cells: u64,
    /// Output nonzeros.
    pub nnz: u64,
    /// Rows per chunk of the row arrays.
    pub rows_per_chunk: u64,
    /// Values per chunk of `X/data` and `X/indices`.
    pub nnz_per_chunk: u64,
    /// Number of shards.
    pub shards: u32,
    /// When the run started, ms since the epoch (for the result record, which the last
    /// shard to finish may write).
    #[serde(default)]
    pub started_ms: u64,
    /// When the collector saw every group planned, ms after start.
    #[serde(default)]
    pub planned_after_ms: u64,
    /// When the collector saw every task done, ms after start.
    #[serde(default)]
    pub collected_after_ms: u64,
}

/// Why and when a request ended without a result: `failed.json`, and `cancel.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// Why.
    pub message: String,
    /// When (RFC 3339).
    pub at: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

impl Failure {
    /// A failure now.
    pub fn now(message: impl Into<String>) -> Self {
        let ms = now_ms();
        Failure {
            message: message.into(),
            at: rfc3339(ms),
            at_ms: ms,
        }
    }
}

/// The committed result, `result.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResultRecord {
    /// The output format.
    pub format: String,
    /// Key prefix of the output in the store.
    pub key: String,
    /// Output cells.
    pub n_cells: u64,
    /// Output genes.
    pub n_genes: u64,
    /// Output nonzeros.
    pub nnz: u64,
    /// When the run started, ms since the epoch.
    pub started_ms: u64,
    /// When the result was committed, ms since the epoch.
    pub finished_ms: u64,
    /// When every group was planned, ms after start.
    pub planned_after_ms: u64,
    /// When every task was done, ms after start.
    pub collected_after_ms: u64,
    /// The conversion, for a format other than zarr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<Converted>,
}

/// What the conversion to the requested format wrote: `converted.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Converted {
    /// The format.
    pub format: String,
    /// The files: key and size.
    pub files: Vec<(String, u64)>,
    /// How long the conversion took, ms.
    pub duration_ms: u64,
    /// The reducer's peak resident memory during the conversion, bytes.
    pub peak_rss_bytes: u64,
    /// Its resident memory when the conversion started (what a warm process already
    /// held), bytes.
    #[serde(default)]
    pub start_rss_bytes: u64,
    /// When it started and finished, ms since the epoch (0 in an older record).
    #[serde(default)]
    pub started_ms: u64,
    /// See `started_ms`.
    #[serde(default)]
    pub finished_ms: u64,
    /// Its store requests, by kind, and bytes (none in an older record).
    #[serde(default)]
    pub requests: crate::cost::Requests,
    /// Bytes it read from the store.
    #[serde(default)]
    pub bytes_read: u64,
    /// Bytes it wrote to the store.
    #[serde(default)]
    pub bytes_written: u64,
}

/// A consolidation shard's record, `shards/{n}.json`: that it is in, and its figures
/// for the run report (all but `shard` absent from a record written before them).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardRecord {
    /// The shard.
    pub shard: u32,
    /// The attempt that wrote it.
    #[serde(default)]
    pub attempt: u32,
    /// When that attempt started, ms since the epoch.
    #[serde(default)]
    pub started_ms: u64,
    /// When it wrote this record, ms since the epoch.
    #[serde(default)]
    pub finished_ms: u64,
    /// Its store requests, by kind.
    #[serde(default)]
    pub requests: crate::cost::Requests,
    /// Bytes it read from the store.
    #[serde(default)]
    pub bytes_read: u64,
    /// Bytes it wrote to the store.
    #[serde(default)]
    pub bytes_written: u64,
    /// Peak resident memory of its process, bytes.
    #[serde(default)]
    pub peak_rss_bytes: u64,
}

/// Reads a JSON object; `None` if absent.
pub async fn get_json<T: DeserializeOwned>(
    store: &DynStore,
    key: &str,
) -> Result<Option<T>, Error> {
    match store.get(key).await? {
        None => Ok(None),
        Some(body) => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                what: key.to_string(),
                message: e.to_string(),
            }),
    }
}

fn encode<T: Serialize>(key: &str, value: &T) -> Result<Bytes, Error> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Error::Corrupt {
            what: key.to_string(),
            message: e.to_string(),
        })
}

/// Writes a JSON object.
pub async fn put_json<T: Serialize>(store: &DynStore, key: &str, value: &T) -> Result<(), Error> {
    Ok(store.put(key, encode(key, value)?).await?)
}

/// Writes a JSON object unless the key exists.
pub async fn put_json_if_absent<T: Serialize>(
    store: &DynStore,
    key: &str,
    value: &T,
) -> Result<PutOutcome, Error> {
    Ok(store.put_if_absent(key, encode(key, value)?).await?)
}

/// Which of the records that end a request exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct End {
    /// `result.json`: it succeeded.
    pub result: bool,
    /// `failed.json`.
    pub failed: bool,
    /// `cancel.json`.
    pub cancelled: bool,
}

impl End {
    /// Whether the request has ended at all.
    pub fn any(self) -> bool {
        self.result || self.failed || self.cancelled
    }
}

/// Looks for the records that end a request, all at once.
pub async fn end(store: &DynStore, keys: &Keys) -> Result<End, Error> {
    let (k_result, k_failed, k_cancel) = (keys.result(), keys.failed(), keys.cancel());
    let (result, failed, cancelled) = futures::try_join!(
        store.exists(&k_result),
        store.exists(&k_failed),
        store.exists(&k_cancel),
    )?;
    Ok(End {
        result,
        failed,
        cancelled,
    })
}

/// Whether the request has ended: its result is committed, or it failed or was cancelled.
pub async fn ended(store: &DynStore, keys: &Keys) -> Result<bool, Error> {
    Ok(end(store, keys).await?.any())
}
