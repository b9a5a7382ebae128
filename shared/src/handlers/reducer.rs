//! The reducer. As the collector it waits for the plans and the done markers, re-invokes
//! what failed with a retryable error, ends the request at its deadline, and then starts
//! consolidation; as a consolidation shard it writes one disjoint, chunk-aligned range of
//! the output. The collector commits the result once every shard is in.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::app::App;
use crate::bundle::ValueType;
use crate::bundle::zarr_io::{
    ChunkCodec, Column, ZArray, array_handle, array_handle_with, encoding, read_range,
    store_chunks, write_array, write_group,
};
use crate::convert::Format;
use crate::convert::source::{ColumnKind, MatrixSource};
use crate::error::Error;
use crate::genes::GeneSpace;
use crate::handlers::ledger::{HedgePolicy, Ledger};
use crate::handlers::worker::RequestView;
use crate::invoke::Function;
use crate::messages::{
    MapperEvent, ReducerEvent, ReducerInput, ReducerMode, RequestId, TaskId, WorkerEvent,
};
use crate::part::part_row_chunk;
use crate::scratch::{self, Ending};
use crate::state::{
    Consolidation, Converted, DoneMarker, ErrorMarker, Failure, Keys, PartPlace, Plan, Progress,
    ResultRecord, RunInfo, StoredRequest, get_json, now_ms, put_json, put_json_if_absent,
};
use crate::store::zarr::ZarrStore;
use crate::store::{DynStore, ObjectMeta, PutOutcome};

/// Rows per chunk of the output's row arrays (`X/indptr`, obs).
pub const OUT_ROWS_PER_CHUNK: u64 = 1 << 14;
/// Most values per chunk of the output's `X/indices` and `X/data`.
pub const OUT_NNZ_PER_CHUNK: u64 = 1 << 20;

/// Runs a reducer invocation to completion.
pub async fn handle(app: &App, event: ReducerEvent) -> Result<(), Error> {
    handle_until(app, event, None).await
}

/// Runs whatever the reducer function was invoked with: one of our events, or Lambda's
/// record of an asynchronous invocation it gave up on (see [`super::failures`]).
pub async fn handle_input(
    app: &App,
    input: ReducerInput,
    stop_at_ms: Option<u64>,
) -> Result<(), Error> {
    match input {
        ReducerInput::Event(event) => handle_until(app, event, stop_at_ms).await,
        ReducerInput::Failure(record) => super::failures::handle(app, &record).await,
    }
}

/// Runs a reducer invocation; a collector hands over to a fresh invocation of itself
/// before `stop_at_ms` (the Lambda deadline), since its state is all in the store.
pub async fn handle_until(
    app: &App,
    event: ReducerEvent,
    stop_at_ms: Option<u64>,
) -> Result<(), Error> {
    let keys = Keys::new(&event.request_id);
    // A deadline already past is not a real one: `cargo lambda watch` sends a fixed
    // 600000 (ten minutes after 1970), and a collector taking it at its word would hand
    // over to a new invocation of itself at once, forever.
    let stop_at_ms = stop_at_ms.filter(|&deadline| deadline > now_ms());
    match event.mode {
        ReducerMode::Collect => Collector::new(app, keys).await?.run(stop_at_ms).await,
        ReducerMode::Consolidate { shard } => {
            let name = format!("shard-{shard}");
            let done = keys.shard(shard);
            // The plan and the request are independent: one round trip, not two, made
            // while the start marker is written. Their errors are looked at after.
            let plan_key = keys.consolidate();
            let reads = async {
                Ok(futures::join!(
                    get_json::<Consolidation>(&app.store, &plan_key),
                    RequestView::read(&app.store, &keys)
                ))
            };
            let begun = super::begin_with(app, &keys, &name, event.attempt, Some(&done), reads);
            let outcome = match begun.await {
                Ok(None) => return Ok(()),
                Ok(Some((plan, view))) => consolidate_shard(app, &keys, shard, plan, view).await,
                Err(e) => Err(e),
            };
            if let Err(e) = &outcome {
                super::stopped(app, &keys, &name, event.attempt, e).await;
            }
            outcome
        }
        ReducerMode::Convert => {
            let done = keys.converted();
            if !super::begin(app, &keys, "convert", event.attempt, Some(&done)).await? {
                return Ok(());
            }
            let outcome = convert(app, &keys).await;
            if let Err(e) = &outcome {
                super::stopped(app, &keys, "convert", event.attempt, e).await;
            }
            outcome
        }
    }
}

/// Starts a collector for `request`: at the start of a run, in place of one that handed
/// over, was lost, or went silent.
pub async fn invoke_collector(app: &App, request: &RequestId) -> Result<(), Error> {
    let event = ReducerEvent {
        request_id: request.clone(),
        mode: ReducerMode::Collect,
        attempt: 0,
    };
    let payload = serde_json::to_value(&event)
        .map_err(|e| Error::Internal(format!("collector event: {e}")))?;
    app.invoker.invoke(Function::Reducer, payload).await
}

/// Converts the consolidated Zarr to the requested format and records what it wrote,
/// with the time and this process's peak memory while converting.
async fn convert(app: &App, keys: &Keys) -> Result<(), Error> {
    let store = &app.store;
    let view = RequestView::read(store, keys).await?;
    let started = now_ms();
    crate::state::reset_peak_rss();
    let start_rss_bytes = crate::state::rss_bytes();
    let src = MatrixSource::open(
        store,
        &keys.zarr(view.format),
        view.stored.value_type,
        &view.fields,
    )
    .await?;
    let files = crate::convert::convert(
        &src,
        store,
        view.format,
        &keys.results(),
        &app.config.scratch_dir,
        app.config.dense_limits(),
    )
    .await?;
    let record = Converted {
        format: view.format.name().to_string(),
        files,
        duration_ms: now_ms().saturating_sub(started),
        peak_rss_bytes: crate::state::peak_rss_bytes(),
        start_rss_bytes,
    };
    tracing::info!(
        request = %keys.id(),
        format = view.format.name(),
        ms = record.duration_ms,
        peak_rss = record.peak_rss_bytes,
        "converted"
    );
    put_json(store, &keys.converted(), &record).await?;
    crate::scratch::after_write(store, keys, app.config.keep_scratch).await
}

/// What the collector has seen so far; markers are immutable, so each is read once.
struct Collector<'a> {
    app: &'a App,
    keys: Keys,
    stored: StoredRequest,
    run: RunInfo,
    plans: BTreeMap<u32, Plan>,
    done: HashMap<TaskId, DoneMarker>,
    progress: Progress,
    /// Start markers seen (their keys).
    starts: HashSet<String>,
    /// Launches, starts, failures: checkpointed at a hand-over.
    ledger: Ledger,
    /// The request's settings, read once consolidation is under way.
    view: Option<RequestView>,
    /// Whether this collector wrote the output's metadata.
    finished: bool,
    /// The consolidation plan, once stored.
    consolidation: Option<Consolidation>,
}

impl<'a> Collector<'a> {
    async fn new(app: &'a App, keys: Keys) -> Result<Self, Error> {
        let store = &app.store;
        let stored: StoredRequest = get_json(store, &keys.request())
            .await?
            .ok_or_else(|| Error::NotFound(format!("request {}", keys.id())))?;
        let run: RunInfo = get_json(store, &keys.run())
            .await?
            .ok_or_else(|| Error::NotFound(format!("run of request {}", keys.id())))?;
        let ledger = match get_json::<Ledger>(store, &keys.checkpoint()).await? {
            Some(ledger) => ledger,
            None => {
                // The driver launched every mapper when the run started.
                let mut ledger = Ledger::default();
                for group in 0..stored.groups {
                    ledger.launched(&format!("group-{group}"), 0, run.started_ms);
                }
                ledger
            }
        };
        Ok(Collector {
            app,
            keys,
            stored,
            run,
            plans: BTreeMap::new(),
            done: HashMap::new(),
            progress: Progress::default(),
            starts: HashSet::new(),
            ledger,
            view: None,
            finished: false,
            consolidation: None,
        })
    }

    async fn run(mut self, stop_at_ms: Option<u64>) -> Result<(), Error> {
        let poll = self.app.config.poll_interval;
        loop {
            if self.step().await? {
                return Ok(());
            }
            if let Some(stop) = stop_at_ms
                && now_ms() + 2 * poll.as_millis() as u64 + 5_000 > stop
            {
                // The next collector goes on from this one's ledger.
                put_json(&self.app.store, &self.keys.checkpoint(), &self.ledger).await?;
                return invoke_collector(self.app, self.keys.id()).await;
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// One look at the state; true when the request has ended.
    async fn step(&mut self) -> Result<bool, Error> {
        let store = self.app.store.clone();
        let keys = self.keys.clone();
        // What the look reads first is independent: one round trip for it all. (A done
        // marker may then be seen before its plan; the ledger takes either order.)
        let list = |prefix: String| {
            let store = &store;
            async move { Ok::<_, Error>(store.list(&prefix).await?) }
        };
        let all_planned = self.plans.len() as u32 == self.stored.groups;
        let (end, plans, dones, starts, errors) = futures::try_join!(
            crate::state::end(&store, &keys),
            async {
                match all_planned {
                    true => Ok(Vec::new()),
                    false => list(keys.plans()).await,
                }
            },
            list(keys.dones()),
            list(keys.starts()),
            list(keys.errors()),
        )?;
        if end.any() {
            // A collector that sees the end (a duplicate, or the one after a cancel)
            // cleans up, also what it may itself have written meanwhile.
            if !self.app.config.keep_scratch {
                if end.result {
                    scratch::remove(&store, &keys, Ending::Succeeded).await?;
                } else if end.cancelled {
                    scratch::remove(&store, &keys, Ending::Cancelled).await?;
                }
            }
            return Ok(true);
        }
        let now = now_ms();
        self.read_plans(now, plans).await?;
        self.read_markers(dones).await?;
        self.read_starts(now, starts);
        if let Some(message) = self.handle_errors(errors).await? {
            self.fail(message).await?;
            return Ok(true);
        }
        self.relaunch_lost(now).await?;
        let all_planned = self.plans.len() as u32 == self.stored.groups;
        if all_planned && self.app.config.hedge {
            self.hedge(now).await?;
        }
        let total = self.plans.values().map(|p| p.tasks.len() as u64).sum();
        let progress = Progress {
            heartbeat_ms: self.progress.heartbeat_ms,
            groups_planned: self.plans.len() as u32,
            tasks_total: total,
            tasks_done: self.done.len() as u64,
            cells_written: self.done.values().map(|d| d.cells_out).sum(),
        };
        // Also the heartbeat a status request looks at, so written now and then even
        // when nothing changed.
        let beat = self.app.config.collector_stale.as_millis() as u64 / 4;
        if progress != self.progress || now.saturating_sub(self.progress.heartbeat_ms) >= beat {
            let progress = Progress {
                heartbeat_ms: now,
                ..progress
            };
            put_json(&store, &keys.progress(), &progress).await?;
            self.progress = progress;
        }
        if all_planned && self.ledger.planned_at.is_none() {
            self.ledger.planned_at = Some(now);
        }
        if all_planned && self.done.len() as u64 == total {
            self.ledger.collected_at.get_or_insert(now);
            if self.consolidate().await? {
                return Ok(true);
            }
        }
        if now > self.run.deadline_ms {
            let message = self.missing();
            self.fail(format!("the request passed its deadline; {message}"))
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads new plans; their tasks count as launched when the plan is first seen, since
    /// the mapper invokes them right after writing it.
    async fn read_plans(&mut self, now: u64, listed: Vec<ObjectMeta>) -> Result<(), Error> {
        for o in listed {
            let Some(group) = o
                .key
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if !self.plans.contains_key(&group)
                && let Some(plan) = get_json::<Plan>(&self.app.store, &o.key).await?
            {
                self.ledger.finished(&format!("group-{group}"));
                for t in &plan.tasks {
                    let name = format!("task-{}", t.id);
                    if !self.ledger.knows(&name) {
                        self.ledger.launched(&name, 0, now);
                    }
                }
                self.plans.insert(group, plan);
            }
        }
        Ok(())
    }

    async fn read_markers(&mut self, listed: Vec<ObjectMeta>) -> Result<(), Error> {
        let new: Vec<String> = listed
            .into_iter()
            .filter(|o| task_of(&o.key).is_none_or(|t| !self.done.contains_key(&t)))
            .map(|o| o.key)
            .collect();
        let store = &self.app.store;
        let reads: Vec<_> = new
            .iter()
            .map(|key| get_json::<DoneMarker>(store, key))
            .collect();
        let markers: Vec<Option<DoneMarker>> = futures::stream::iter(reads)
            .buffer_unordered(16)
            .try_collect()
            .await?;
        for m in markers.into_iter().flatten() {
            self.ledger.finished(&format!("task-{}", m.task));
            self.done.insert(m.task.clone(), m);
        }
        Ok(())
    }

    /// Notes the invocations that started since the last look (`listed`, one LIST).
    fn read_starts(&mut self, now: u64, listed: Vec<ObjectMeta>) {
        for o in listed {
            if self.starts.contains(&o.key) {
                continue;
            }
            let parsed = o
                .key
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.rsplit_once('.'))
                .and_then(|(name, attempt)| Some((name.to_string(), attempt.parse().ok()?)));
            if let Some((name, attempt)) = parsed {
                self.ledger.started(&name, attempt, now);
            }
            self.starts.insert(o.key);
        }
    }

    /// Re-invokes what failed with a retryable error; the message of a failure that
    /// ends the request.
    async fn handle_errors(&mut self, listed: Vec<ObjectMeta>) -> Result<Option<String>, Error> {
        let store = self.app.store.clone();
        for o in listed {
            let Some(marker) = get_json::<ErrorMarker>(&store, &o.key).await? else {
                continue;
            };
            if self.ledger.is_finished(&marker.name) {
                // Another copy finished: the failure no longer matters.
                store.delete(&o.key).await?;
                continue;
            }
            if !marker.retryable {
                return Ok(Some(format!(
                    "{} failed: {}",
                    describe(&marker.name),
                    marker.message
                )));
            }
            let failures = self.ledger.failed(&marker.name);
            if failures >= self.app.config.task_attempts {
                return Ok(Some(format!(
                    "{} failed {} times; last error: {}",
                    describe(&marker.name),
                    failures,
                    marker.message
                )));
            }
            store.delete(&o.key).await?;
            self.launch(&marker.name).await?;
        }
        Ok(None)
    }

    /// Launches again what was invoked but never started (an event Lambda dropped),
    /// up to a bound; past it the request's deadline ends the wait.
    async fn relaunch_lost(&mut self, now: u64) -> Result<(), Error> {
        let c = &self.app.config;
        let lost_after = c.lost_after.as_millis() as u64;
        let passed_after = passed_after(c.lost_passed_after, self.consolidation.is_some());
        let mut again = Vec::new();
        for name in self.ledger.lost(now, lost_after, passed_after) {
            if self.ledger.launches(&name) < self.max_launches() {
                tracing::warn!(request = %self.keys.id(), name, "invocation lost; invoking it again");
                again.push(name);
            }
        }
        self.launch_all(again).await
    }

    /// A second copy of each straggler; the first copy to finish wins, the other writes
    /// the same bytes.
    async fn hedge(&mut self, now: u64) -> Result<(), Error> {
        let mut durations: Vec<u64> = self.done.values().map(|d| d.duration_ms).collect();
        durations.sort_unstable();
        let median = durations.get(durations.len() / 2).copied();
        let total = self.plans.values().map(|p| p.tasks.len()).sum();
        let policy = HedgePolicy {
            percent: self.app.config.hedge_percent,
            factor: self.app.config.hedge_factor,
        };
        let mut copies = Vec::new();
        for name in self
            .ledger
            .stragglers(now, self.done.len(), total, median, policy)
        {
            if self.ledger.launches(&name) < self.max_launches() {
                tracing::info!(request = %self.keys.id(), name, "hedging a task");
                copies.push(name);
            }
        }
        self.launch_all(copies).await
    }

    /// Launches beyond which lost or slow work is not invoked again: the first, the
    /// retries, a hedge and one more.
    fn max_launches(&self) -> u32 {
        self.app.config.task_attempts.saturating_add(2)
    }

    /// Invokes `name` again, as its next attempt.
    async fn launch(&mut self, name: &str) -> Result<(), Error> {
        self.launch_all(vec![name.to_string()]).await
    }

    /// How many times each launch of `name` is sent: twice for a small request's task
    /// (`StoredRequest::copies`) and a small result's shard (`Config::hedge_small`),
    /// so that a relaunch or hedge, too, costs nothing when one copy is lost or slow.
    fn copies_of(&self, name: &str) -> usize {
        let c = &self.app.config;
        if name.starts_with("task-") {
            self.stored.copies.clamp(1, 2) as usize
        } else if name.starts_with("shard-")
            && c.hedge
            && self
                .consolidation
                .as_ref()
                .is_some_and(|plan| plan.shards as usize <= c.hedge_small)
        {
            2
        } else {
            1
        }
    }

    /// Invokes each of `names` again, as its next attempt, [`Self::copies_of`] times
    /// (the copies after the first of each), `invoke_concurrency` calls at a time: a
    /// request's relaunches or shards are dozens of `Invoke` calls of tens of ms. A
    /// launch is recorded once, when one of its calls was accepted; one whose calls all
    /// failed is not, so a later look launches it. The first error is returned once the
    /// others are out.
    async fn launch_all(&mut self, names: Vec<String>) -> Result<(), Error> {
        let mut calls = Vec::with_capacity(names.len());
        let mut copies = Vec::new();
        for name in &names {
            let attempt = self.ledger.next_attempt(name);
            if let Some((function, payload)) = self.event_for(name, attempt)? {
                let call = (name.clone(), attempt, function, payload);
                for _ in 1..self.copies_of(name) {
                    copies.push(call.clone());
                }
                calls.push(call);
            }
        }
        calls.extend(copies);
        let invoker = self.app.invoker.clone();
        let called: Vec<_> =
            futures::stream::iter(calls.into_iter().map(|(name, attempt, function, payload)| {
                let invoker = invoker.clone();
                async move { (name, attempt, invoker.invoke(function, payload).await) }
            }))
            .buffered(self.app.config.invoke_concurrency.max(1))
            .collect()
            .await;
        let mut first_error = None;
        let mut recorded = HashSet::new();
        for (name, attempt, outcome) in called {
            match outcome {
                Ok(()) => {
                    if recorded.insert(name.clone()) {
                        self.ledger.launched(&name, attempt, now_ms());
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The function and event that run `attempt` of `name`; `None` for a name that is
    /// none of ours.
    fn event_for(&self, name: &str, attempt: u32) -> Result<Option<(Function, Value)>, Error> {
        let request_id = self.keys.id().clone();
        let to_json = |event: Result<Value, serde_json::Error>| {
            event.map_err(|e| Error::input("event", e.to_string()))
        };
        let (function, payload) = if let Some(task) = name.strip_prefix("task-") {
            let event = WorkerEvent {
                request_id,
                task_id: TaskId::parse(task)?,
                attempt,
            };
            (Function::Worker, to_json(serde_json::to_value(&event))?)
        } else if let Some(group) = name
            .strip_prefix("group-")
            .and_then(|g| g.parse::<u32>().ok())
        {
            let per = self.stored.bundles_per_mapper;
            let bundles = self
                .stored
                .bundles
                .chunks(per)
                .nth(group as usize)
                .map(<[_]>::to_vec)
                .unwrap_or_default();
            let event = MapperEvent {
                request_id,
                group,
                bundles,
                attempt,
                copies: self.stored.copies,
            };
            (Function::Mapper, to_json(serde_json::to_value(&event))?)
        } else if name == "convert" {
            let event = ReducerEvent {
                request_id,
                mode: ReducerMode::Convert,
                attempt,
            };
            (Function::Reducer, to_json(serde_json::to_value(&event))?)
        } else if let Some(shard) = name
            .strip_prefix("shard-")
            .and_then(|s| s.parse::<u32>().ok())
        {
            let event = ReducerEvent {
                request_id,
                mode: ReducerMode::Consolidate { shard },
                attempt,
            };
            (Function::Reducer, to_json(serde_json::to_value(&event))?)
        } else {
            return Ok(None);
        };
        Ok(Some((function, payload)))
    }

    /// Launches the shards not launched yet; with `hedge` on, a result of at most
    /// `hedge_small` shards gets each event sent twice, as a small request's tasks do
    /// ([`Self::copies_of`]).
    async fn launch_shards(&mut self, shards: u32) -> Result<(), Error> {
        let fresh: Vec<String> = (0..shards)
            .map(|n| format!("shard-{n}"))
            .filter(|name| !self.ledger.knows(name))
            .collect();
        self.launch_all(fresh).await
    }

    /// What the request still waits for, for the deadline's message.
    fn missing(&self) -> String {
        let groups: Vec<String> = (0..self.stored.groups)
            .filter(|g| !self.plans.contains_key(g))
            .map(|g| g.to_string())
            .collect();
        let tasks: Vec<String> = self
            .plans
            .values()
            .flat_map(|p| &p.tasks)
            .filter(|t| !self.done.contains_key(&t.id))
            .map(|t| t.id.to_string())
            .collect();
        let list = |v: &[String]| {
            let shown: Vec<&str> = v.iter().take(5).map(String::as_str).collect();
            format!(
                "{}{}",
                shown.join(", "),
                if v.len() > 5 { ", ..." } else { "" }
            )
        };
        if !groups.is_empty() {
            format!(
                "{} bundle group(s) never planned: {}",
                groups.len(),
                list(&groups)
            )
        } else if !tasks.is_empty() {
            format!("{} task(s) never finished: {}", tasks.len(), list(&tasks))
        } else if self.ledger.knows("convert") {
            "the conversion to the requested format never finished".into()
        } else {
            "the consolidation never finished".into()
        }
    }

    async fn fail(&self, message: String) -> Result<(), Error> {
        tracing::warn!(request = %self.keys.id(), %message, "request failed");
        let failure = Failure::now(message);
        put_json_if_absent(&self.app.store, &self.keys.failed(), &failure).await?;
        Ok(())
    }

    /// Plans consolidation (once), starts the shards, and commits the result when they
    /// are all in; true once committed.
    async fn consolidate(&mut self) -> Result<bool, Error> {
        let store = self.app.store.clone();
        let plan = match self.consolidation.clone() {
            Some(plan) => plan,
            None => {
                // Its parts and layout come from immutable markers, so a duplicate
                // collector that wins the race stores the same layout; its timings are
                // that collector's, so the stored plan is the one used.
                let plan = self.consolidation_plan();
                let key = self.keys.consolidate();
                let created = put_json_if_absent(&store, &key, &plan).await?;
                let plan = match created {
                    PutOutcome::Created => plan,
                    PutOutcome::AlreadyExists => get_json::<Consolidation>(&store, &key)
                        .await?
                        .ok_or_else(|| Error::Conflict(format!("{key} went missing")))?,
                };
                self.consolidation = Some(plan.clone());
                if created == PutOutcome::Created {
                    // A shard starts by reading the plan, so none has run: no need to
                    // list their markers before launching them all.
                    self.launch_shards(plan.shards).await?;
                    return Ok(false);
                }
                plan
            }
        };
        let shards_done: HashSet<String> = store
            .list(&self.keys.shards())
            .await?
            .iter()
            .filter_map(|o| shard_of(&o.key))
            .map(|n| format!("shard-{n}"))
            .collect();
        for name in &shards_done {
            self.ledger.finished(name);
        }
        if (shards_done.len() as u32) < plan.shards {
            // Every collector that gets here starts the shards once; a duplicate
            // shard writes the same chunks.
            self.launch_shards(plan.shards).await?;
            return Ok(false);
        }
        if self.view.is_none() {
            self.view = Some(RequestView::read(&store, &self.keys).await?);
        }
        let view = self.view.as_ref().expect("read above");
        if !self.finished {
            // Every shard's marker is in, so shard 0 wrote the metadata; the last shard
            // may have written the root group too: the same bytes again.
            finish(&store, &self.keys, view.format).await?;
            self.finished = true;
        }
        let format = view.format;
        let conversion = match format {
            Format::Zarr => None,
            _ => match get_json::<Converted>(&store, &self.keys.converted()).await? {
                Some(c) => {
                    self.ledger.finished("convert");
                    Some(c)
                }
                None => {
                    if !self.ledger.knows("convert") {
                        self.launch("convert").await?;
                    }
                    return Ok(false);
                }
            },
        };
        let view = self.view.as_ref().expect("read above");
        put_json_if_absent(
            &store,
            &self.keys.result(),
            &result_record(&self.keys, view, &plan, conversion),
        )
        .await?;
        if !self.app.config.keep_scratch {
            scratch::remove(&store, &self.keys, Ending::Succeeded).await?;
        }
        Ok(true)
    }
    fn consolidation_plan(&self) -> Consolidation {
        let mut parts = Vec::new();
        let (mut row, mut nz) = (0, 0);
        for plan in self.plans.values() {
            for t in &plan.tasks {
                let m = &self.done[&t.id];
                if m.cells_out > 0 {
                    parts.push(PartPlace {
                        task: t.id.clone(),
                        row,
                        cells: m.cells_out,
                        nz,
                        nnz: m.nnz,
                        nnz_per_chunk: m.nnz_per_chunk,
                    });
                }
                row += m.cells_out;
                nz += m.nnz;
            }
        }
        let (nnz_per_chunk, shards) = shard_layout(nz, self.app.config.shard_nnz);
        let started = self.run.started_ms;
        let after = |at: Option<u64>| at.unwrap_or(started).saturating_sub(started);
        Consolidation {
            parts,
            n_cells: row,
            nnz: nz,
            rows_per_chunk: OUT_ROWS_PER_CHUNK,
            nnz_per_chunk,
            shards,
            started_ms: started,
            planned_after_ms: after(self.ledger.planned_at),
            collected_after_ms: after(self.ledger.collected_at),
        }
    }
}

/// How long a launch passed by a later one that started waits before it is taken for
/// lost (ms). `lost_passed_after` allows for workers queued behind the worker's
/// concurrency, which start out of order; once the consolidation is planned every task
/// is done, so no such queue is left and a shard that a later shard passed is waited
/// for half as long: one delivery in a few thousand takes over a second, and the
/// result waits for the last shard.
pub fn passed_after(lost_passed_after: std::time::Duration, consolidating: bool) -> u64 {
    let ms = lost_passed_after.as_millis() as u64;
    if consolidating { ms / 2 } else { ms }
}

fn shard_of(key: &str) -> Option<u32> {
    key.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()
}

fn task_of(key: &str) -> Option<TaskId> {
    key.rsplit('/')
        .next()
        .and_then(|n| n.strip_suffix(".json"))
        .and_then(|n| TaskId::parse(n).ok())
}

fn describe(name: &str) -> String {
    if let Some(t) = name.strip_prefix("task-") {
        format!("task {t}")
    } else if let Some(g) = name.strip_prefix("group-") {
        format!("planning of bundle group {g}")
    } else if let Some(s) = name.strip_prefix("shard-") {
        format!("consolidation shard {s}")
    } else if name == "convert" {
        "the conversion to the requested format".to_string()
    } else {
        name.to_string()
    }
}

/// The output arrays: path, length and chunk of each, in a fixed order.
fn output_arrays(view: &RequestView, plan: &Consolidation) -> Vec<(String, Kind, u64, u64)> {
    let (n, r, z) = (plan.n_cells, plan.rows_per_chunk, plan.nnz_per_chunk);
    let mut arrays = vec![
        ("/X/indptr".to_string(), Kind::Indptr, n + 1, r),
        ("/X/indices".to_string(), Kind::Indices, plan.nnz, z),
        ("/X/data".to_string(), Kind::Data, plan.nnz, z),
        (
            "/obs/_index".to_string(),
            Kind::Obs("_index".into(), ColumnKind::Str),
            n,
            r,
        ),
    ];
    for f in &view.fields {
        let ty = ColumnKind::of(f);
        arrays.push((
            format!("/obs/{}", f.column()),
            Kind::Obs(f.column().to_string(), ty),
            n,
            r,
        ));
    }
    arrays
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Indptr,
    Indices,
    Data,
    Obs(String, ColumnKind),
}

/// Shards a consolidation has at least, when the output has that many nonzero chunks:
/// a result of a few `shard_nnz` would otherwise be one or two shards each copying
/// tens of MB one after another, while the shards all run at once.
pub const MIN_SHARDS: u64 = 16;

/// The output's nonzeros per chunk and the consolidation's shard count, for `nz`
/// nonzeros and `shard_nnz` (`Config::shard_nnz`) nonzeros per shard, but at least
/// [`MIN_SHARDS`] (never more than a chunk each). The chunk depends on `shard_nnz` only
/// below `OUT_NNZ_PER_CHUNK`, so the output's bytes do not depend on how many shards
/// write them.
pub fn shard_layout(nz: u64, shard_nnz: u64) -> (u64, u32) {
    let shard_nnz = shard_nnz.max(1);
    let nnz_per_chunk = OUT_NNZ_PER_CHUNK.min(shard_nnz).min(nz).max(1);
    let nnz_chunks = nz.div_ceil(nnz_per_chunk).max(1);
    let shards = nz.div_ceil(shard_nnz).max(MIN_SHARDS).clamp(1, nnz_chunks);
    (nnz_per_chunk, shards as u32)
}

/// The chunks of an array of `n_chunks` that shard `shard` of `shards` writes.
pub fn shard_chunks(n_chunks: u64, shard: u32, shards: u32) -> Range<u64> {
    let s = u64::from(shards.max(1));
    let i = u64::from(shard);
    (n_chunks * i / s)..(n_chunks * (i + 1) / s)
}

fn attrs() -> serde_json::Map<String, serde_json::Value> {
    encoding("array", "0.2.0")
}

fn string_attrs() -> serde_json::Map<String, serde_json::Value> {
    encoding("string-array", "0.2.0")
}

/// Writes shard `shard`'s chunks of every output array, then its marker.
async fn consolidate_shard(
    app: &App,
    keys: &Keys,
    shard: u32,
    plan: Result<Option<Consolidation>, Error>,
    view: Result<RequestView, Error>,
) -> Result<(), Error> {
    let store = &app.store;
    // No plan: the request ended and its scratch data went; nothing to do.
    let plan = plan?
        .ok_or_else(|| Error::Cancelled(format!("{}: consolidation plan removed", keys.id())))?;
    let view = view?;
    if shard >= plan.shards {
        return Err(Error::input(
            "consolidate event",
            format!("no shard {shard}"),
        ));
    }
    let out = ZarrStore::new(store.clone(), &keys.zarr(view.format)).into_storage();
    // The arrays' ranges are independent: copied at once, a shard is as slow as its
    // largest range, not the sum of every array's round trips.
    let arrays = output_arrays(&view, &plan);
    let copies: Vec<_> = arrays
        .iter()
        .filter_map(|(path, kind, len, chunk)| {
            let chunks = shard_chunks(len.div_ceil(*chunk), shard, plan.shards);
            if chunks.is_empty() {
                return None;
            }
            let w = ShardRange {
                store,
                plan_key: keys.consolidate(),
                out: &out,
                path,
                len: *len,
                chunk: *chunk,
                first_chunk: chunks.start,
                range: chunks.start * chunk..(chunks.end * chunk).min(*len),
            };
            Some(w.write(kind, &plan, view.stored.value_type, keys))
        })
        .collect();
    // Shard 0 also writes the output's metadata, with its chunks rather than after every
    // shard: its marker then says the metadata is in, and the commit is the root group.
    let metadata = async {
        if shard == METADATA_SHARD {
            write_metadata(store, keys, &view, &plan).await
        } else {
            Ok(())
        }
    };
    futures::future::try_join(futures::future::try_join_all(copies), metadata).await?;
    put_json(store, &keys.shard(shard), &json!({ "shard": shard })).await?;
    commit_if_last(store, keys, &view, &plan).await?;
    crate::scratch::after_write(store, keys, app.config.keep_scratch).await
}

/// The shard that writes the output's metadata (every array's, the groups', `var`'s)
/// beside its chunks. Shard 0 exists whatever the shard count.
const METADATA_SHARD: u32 = 0;

/// After a shard's marker: if every shard's marker is there, this shard finished last
/// (or with the last), so it writes the root group and, for Zarr, the result, instead
/// of waiting for the collector's next look. Each shard writes its marker before it
/// lists, so at least one sees them all; the root group is the same bytes whoever
/// writes it, and the result is put if absent.
async fn commit_if_last(
    store: &DynStore,
    keys: &Keys,
    view: &RequestView,
    plan: &Consolidation,
) -> Result<(), Error> {
    let (listed, ended) = futures::try_join!(
        async { Ok::<_, Error>(store.list(&keys.shards()).await?) },
        crate::state::ended(store, keys)
    )?;
    let done = listed
        .iter()
        .filter_map(|o| shard_of(&o.key))
        .filter(|&n| n < plan.shards)
        .collect::<HashSet<u32>>()
        .len();
    if (done as u32) < plan.shards || ended {
        return Ok(());
    }
    finish(store, keys, view.format).await?;
    if view.format == Format::Zarr {
        let record = result_record(keys, view, plan, None);
        put_json_if_absent(store, &keys.result(), &record).await?;
    }
    Ok(())
}

/// The result record of a consolidated request.
fn result_record(
    keys: &Keys,
    view: &RequestView,
    plan: &Consolidation,
    conversion: Option<Converted>,
) -> ResultRecord {
    ResultRecord {
        format: view.format.name().to_string(),
        key: match view.format {
            Format::Zarr => keys.output(),
            _ => keys.results(),
        },
        n_cells: plan.n_cells,
        n_genes: view.stored.n_genes,
        nnz: plan.nnz,
        started_ms: plan.started_ms,
        finished_ms: now_ms(),
        planned_after_ms: plan.planned_after_ms,
        collected_after_ms: plan.collected_after_ms,
        conversion,
    }
}

/// The output rows a part holds.
fn rows(p: &PartPlace) -> Range<u64> {
    p.row..p.row + p.cells
}

/// The output nonzeros a part holds.
fn nonzeros(p: &PartPlace) -> Range<u64> {
    p.nz..p.nz + p.nnz
}

/// One shard's chunk-aligned range of one output array.
struct ShardRange<'a> {
    store: &'a DynStore,
    plan_key: String,
    out: &'a zarrs::storage::AsyncReadableWritableListableStorage,
    path: &'a str,
    len: u64,
    chunk: u64,
    first_chunk: u64,
    range: Range<u64>,
}

impl ShardRange<'_> {
    /// Copies this range of an output array of `kind` from the parts.
    async fn write(
        self,
        kind: &Kind,
        plan: &Consolidation,
        value_type: ValueType,
        keys: &Keys,
    ) -> Result<(), Error> {
        let mut parts = PartReaders::new(self.store.clone(), keys.clone());
        let parts = &mut parts;
        match kind {
            Kind::Indptr => {
                let values = parts.indptr(plan, self.range.clone()).await?;
                self.store::<i64>(&values, attrs()).await
            }
            Kind::Indices => {
                self.copy::<i32>(parts, plan, "/indices", nonzeros, attrs())
                    .await
            }
            Kind::Data => match value_type {
                ValueType::Uint32 => {
                    self.copy::<u32>(parts, plan, "/data", nonzeros, attrs())
                        .await
                }
                ValueType::Float32 => {
                    self.copy::<f32>(parts, plan, "/data", nonzeros, attrs())
                        .await
                }
                ValueType::Float64 => {
                    self.copy::<f64>(parts, plan, "/data", nonzeros, attrs())
                        .await
                }
            },
            Kind::Obs(name, ty) => {
                let from = format!("/obs/{name}");
                match ty {
                    ColumnKind::Str => {
                        self.copy::<String>(parts, plan, &from, rows, string_attrs())
                            .await
                    }
                    ColumnKind::U32 => self.copy::<u32>(parts, plan, &from, rows, attrs()).await,
                    ColumnKind::F64 => self.copy::<f64>(parts, plan, &from, rows, attrs()).await,
                }
            }
        }
    }

    async fn store<T: Column>(
        &self,
        values: &[T],
        attrs: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), Error> {
        // The plan goes first when scratch data is removed: if it is still there, every
        // part read before this point was whole (a late duplicate of this shard, after the
        // result was committed and the parts removed, stops here).
        if !crate::state::exists(self.store, &self.plan_key).await? {
            return Err(Error::Cancelled(format!(
                "{}: consolidation plan removed",
                self.path
            )));
        }
        let array = array_handle::<T>(self.out, self.path, self.len, self.chunk, attrs)?;
        store_chunks(&array, self.chunk, self.first_chunk, values).await
    }

    /// Copies the range from the parts' array `from`, located by `span`.
    async fn copy<T: Column + zarrs::array::ElementOwned>(
        &self,
        parts: &mut PartReaders,
        plan: &Consolidation,
        from: &str,
        span: fn(&PartPlace) -> Range<u64>,
        attrs: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), Error> {
        let values: Vec<T> = parts.gather(plan, from, self.range.clone(), span).await?;
        self.store(&values, attrs).await
    }
}

/// Part reads a consolidation shard has in flight per array: a shard reads a piece of
/// every part it overlaps, each a read latency-bound on S3. Its arrays are read at
/// once: 7 of them stay within the store's bound on requests
/// (`store::s3::DEFAULT_MAX_IN_FLIGHT`).
pub const PART_READS_IN_FLIGHT: usize = 32;

/// Opens the parts' arrays on demand, each once.
struct PartReaders {
    store: DynStore,
    keys: Keys,
    open: HashMap<(TaskId, String), ZArray>,
}

impl PartReaders {
    fn new(store: DynStore, keys: Keys) -> Self {
        PartReaders {
            store,
            keys,
            open: HashMap::new(),
        }
    }

    /// Opens array `path` of every part in `parts` not yet open. The worker wrote it
    /// (`part::PartBuilder`) with a length the plan gives and a chunk set by it, so
    /// its handle is built rather than its metadata read: a round trip less per part.
    /// A chunk that does not decode as such fails its checksum or its size.
    fn open_all<T: Column>(&mut self, parts: &[&PartPlace], path: &str) -> Result<(), Error> {
        for p in parts {
            let key = (p.task.clone(), path.to_string());
            if self.open.contains_key(&key) {
                continue;
            }
            let (len, chunk) = match path {
                "/indptr" => (p.cells + 1, part_row_chunk(p.cells + 1)),
                "/indices" | "/data" => (p.nnz, p.nnz_per_chunk),
                _ => (p.cells, part_row_chunk(p.cells)),
            };
            let storage =
                ZarrStore::new(self.store.clone(), &self.keys.part(&p.task)).into_storage();
            let array = array_handle_with::<T>(
                &storage,
                path,
                len,
                chunk,
                serde_json::Map::new(),
                ChunkCodec::Checked,
            )?;
            self.open.insert(key, array);
        }
        Ok(())
    }

    /// Reads `(part, local range)` pieces of array `path` concurrently, in order.
    async fn read_pieces<T: Column + zarrs::array::ElementOwned + Send + Sync>(
        &mut self,
        path: &str,
        pieces: Vec<(&PartPlace, Range<u64>)>,
    ) -> Result<Vec<Vec<T>>, Error> {
        let parts: Vec<&PartPlace> = pieces.iter().map(|(p, _)| *p).collect();
        self.open_all::<T>(&parts, path)?;
        let open = &self.open;
        let reads: Vec<_> = pieces
            .into_iter()
            .map(|(p, range)| read_range::<T>(&open[&(p.task.clone(), path.to_string())], range))
            .collect();
        futures::stream::iter(reads)
            .buffered(PART_READS_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Output elements `range` of the parts' array `path`, from the parts whose `span`
    /// (their rows, or their nonzeros) overlaps it.
    async fn gather<T: Column + zarrs::array::ElementOwned + Send + Sync>(
        &mut self,
        plan: &Consolidation,
        path: &str,
        range: Range<u64>,
        span: fn(&PartPlace) -> Range<u64>,
    ) -> Result<Vec<T>, Error> {
        let pieces = overlapping(&plan.parts, &range, span)
            .into_iter()
            .map(|p| {
                let own = span(p);
                let (a, b) = (range.start.max(own.start), range.end.min(own.end));
                (p, a - own.start..b - own.start)
            })
            .collect();
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        for piece in self.read_pieces::<T>(path, pieces).await? {
            out.extend(piece);
        }
        Ok(out)
    }

    /// Elements `range` of the output indptr (`n_cells + 1` long): each part's local
    /// row pointers shifted by the nonzeros before it.
    async fn indptr(&mut self, plan: &Consolidation, range: Range<u64>) -> Result<Vec<i64>, Error> {
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        let rows = range.start..range.end.min(plan.n_cells);
        let parts = overlapping(&plan.parts, &rows, self::rows);
        let pieces = parts
            .iter()
            .map(|&p| {
                let (a, b) = (rows.start.max(p.row), rows.end.min(p.row + p.cells));
                (p, a - p.row..b - p.row)
            })
            .collect();
        let read = self.read_pieces::<i64>("/indptr", pieces).await?;
        for (p, local) in parts.iter().zip(read) {
            out.extend(local.into_iter().map(|x| x + p.nz as i64));
        }
        if range.end > plan.n_cells {
            out.push(plan.nnz as i64);
        }
        Ok(out)
    }
}

/// The parts whose span (by `span`) overlaps `range`, in order.
fn overlapping<'p>(
    parts: &'p [PartPlace],
    range: &Range<u64>,
    span: fn(&PartPlace) -> Range<u64>,
) -> Vec<&'p PartPlace> {
    let first = parts.partition_point(|p| span(p).end <= range.start);
    parts[first..]
        .iter()
        .take_while(|p| span(p).start < range.end)
        .filter(|p| !span(p).is_empty())
        .collect()
}

/// Writes the metadata of every output array, `var` with its arrays, and the groups,
/// all but the root group ([`finish`]), which is written once every shard is in. The
/// documents are independent of each other, so written at once after one round of
/// reads: the gene space, and the plan, which goes first when scratch data is removed
/// (a late duplicate of shard 0 stops there, as [`ShardRange::store`] does).
async fn write_metadata(
    store: &DynStore,
    keys: &Keys,
    view: &RequestView,
    plan: &Consolidation,
) -> Result<(), Error> {
    let out = ZarrStore::new(store.clone(), &keys.zarr(view.format)).into_storage();
    let out = &out;
    let genes_key = keys.genes();
    let plan_key = keys.consolidate();
    let (genes, planned) = futures::try_join!(
        get_json::<GeneSpace>(store, &genes_key),
        crate::state::exists(store, &plan_key),
    )?;
    if !planned {
        return Err(Error::Cancelled(format!(
            "{}: consolidation plan removed",
            keys.id()
        )));
    }
    let genes = genes.ok_or_else(|| Error::NotFound(format!("genes of request {}", keys.id())))?;
    type Write<'a> = futures::future::BoxFuture<'a, Result<(), Error>>;
    let mut writes: Vec<Write<'_>> = output_arrays(view, plan)
        .into_iter()
        .map(|(path, kind, len, chunk)| -> Write<'_> {
            Box::pin(async move {
                let array = match (&kind, view.stored.value_type) {
                    (Kind::Indptr, _) => array_handle::<i64>(out, &path, len, chunk, attrs())?,
                    (Kind::Indices, _) => array_handle::<i32>(out, &path, len, chunk, attrs())?,
                    (Kind::Data, ValueType::Uint32) => {
                        array_handle::<u32>(out, &path, len, chunk, attrs())?
                    }
                    (Kind::Data, ValueType::Float32) => {
                        array_handle::<f32>(out, &path, len, chunk, attrs())?
                    }
                    (Kind::Data, ValueType::Float64) => {
                        array_handle::<f64>(out, &path, len, chunk, attrs())?
                    }
                    (Kind::Obs(_, ColumnKind::Str), _) => {
                        array_handle::<String>(out, &path, len, chunk, string_attrs())?
                    }
                    (Kind::Obs(_, ColumnKind::U32), _) => {
                        array_handle::<u32>(out, &path, len, chunk, attrs())?
                    }
                    (Kind::Obs(_, ColumnKind::F64), _) => {
                        array_handle::<f64>(out, &path, len, chunk, attrs())?
                    }
                };
                array
                    .async_store_metadata()
                    .await
                    .map_err(|e| crate::bundle::zarr_io::zarr_err(&path, e))
            })
        })
        .collect();
    let mut x_attrs = encoding("csr_matrix", "0.1.0");
    x_attrs.insert("shape".into(), json!([plan.n_cells, genes.len()]));
    let mut obs_attrs = encoding("dataframe", "0.2.0");
    obs_attrs.insert("_index".into(), json!("_index"));
    obs_attrs.insert(
        "column-order".into(),
        json!(view.fields.iter().map(|f| f.column()).collect::<Vec<_>>()),
    );
    let var_chunk = (genes.len() as u64).clamp(1, OUT_ROWS_PER_CHUNK * 4);
    let mut var_attrs = encoding("dataframe", "0.2.0");
    var_attrs.insert("_index".into(), json!("_index"));
    var_attrs.insert("column-order".into(), json!(["feature_name"]));
    writes.extend([
        Box::pin(write_group(out, "/X", x_attrs)),
        Box::pin(write_group(out, "/obs", obs_attrs)),
        Box::pin(write_group(out, "/var", var_attrs)),
        Box::pin(write_array(
            out,
            "/var/_index",
            &genes.ids,
            var_chunk,
            string_attrs(),
        )),
        Box::pin(write_array(
            out,
            "/var/feature_name",
            &genes.names,
            var_chunk,
            string_attrs(),
        )),
    ] as [Write<'_>; 5]);
    for empty in ["/layers", "/obsm", "/obsp", "/varm", "/varp", "/uns"] {
        writes.push(Box::pin(write_group(out, empty, encoding("dict", "0.1.0"))));
    }
    futures::future::try_join_all(writes).await?;
    Ok(())
}

/// The root group, written once every shard is in (so after [`write_metadata`]): the
/// output is an AnnData object only once complete. The same bytes whoever writes it.
async fn finish(store: &DynStore, keys: &Keys, format: Format) -> Result<(), Error> {
    let out = ZarrStore::new(store.clone(), &keys.zarr(format)).into_storage();
    write_group(&out, "/", encoding("anndata", "0.1.0")).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::passed_after;
    use crate::handlers::ledger::Ledger;

    #[test]
    fn a_shard_passed_by_another_is_lost_sooner_than_a_task() {
        let rule = Duration::from_millis(1_500);
        for (prefix, consolidating) in [("task-", false), ("shard-", true)] {
            let mut ledger = Ledger::default();
            for n in 0..2 {
                ledger.launched(&format!("{prefix}{n}"), 0, 1_000);
            }
            ledger.started(&format!("{prefix}1"), 0, 1_100);
            let wait = passed_after(rule, consolidating);
            let lost = |ledger: &mut Ledger, at| ledger.lost(at, 5_000, wait);
            assert!(lost(&mut ledger, 1_000 + 750).is_empty(), "{prefix}");
            let at_800 = lost(&mut ledger, 1_000 + 800);
            if consolidating {
                assert_eq!(at_800, vec![format!("{prefix}0")]);
            } else {
                assert!(at_800.is_empty(), "a task waits the whole rule");
                assert_eq!(lost(&mut ledger, 1_000 + 1_501), vec![format!("{prefix}0")]);
            }
        }
    }
}
