//! The collector: it waits for the plans and the done markers, re-invokes what failed
//! with a retryable error or was lost, hedges stragglers, ends the request at its
//! deadline, and then plans the consolidation, starts its shards and commits the result
//! once they are all in. Its state is all in the store, so a fresh invocation goes on
//! where one handed over.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};

use super::consolidate::{consolidation_plan, finish, result_record};
use super::ledger::{HedgePolicy, Ledger, passed_after};
use super::names::{describe, event_for, shard_of, task_of};
use super::phase::{Phase, Refused};
use crate::app::App;
use crate::clock::now_ms;
use crate::convert::Format;
use crate::error::Error;
use crate::handlers::invoke_collector;
use crate::messages::TaskId;
use crate::scratch::{self, Ending};
use crate::state::{
    Consolidation, Converted, DoneMarker, ErrorMarker, Failure, Keys, Plan, Progress, RequestView,
    RunInfo, StoredRequest, get_json, put_json, put_json_if_absent,
};
use crate::store::{ObjectMeta, PutOutcome};

/// What the collector has seen so far; markers are immutable, so each is read once.
pub(super) struct Collector<'a> {
    app: &'a App,
    keys: Keys,
    stored: StoredRequest,
    run: RunInfo,
    plans: BTreeMap<u32, Plan>,
    done: HashMap<TaskId, DoneMarker>,
    progress: Progress,
    /// Start markers seen: their keys, and when each was last written as listed (a
    /// change is a heartbeat).
    starts: HashMap<String, Option<u64>>,
    /// Launches, starts, failures: checkpointed at a hand-over.
    ledger: Ledger,
    /// What it waits for, with the consolidation plan and the request's settings once
    /// it has them.
    phase: Phase,
    /// Whether its first look takes every invocation in flight for dead
    /// ([`Collector::resuming`]).
    resume: bool,
}

impl<'a> Collector<'a> {
    pub(super) async fn new(app: &'a App, keys: Keys) -> Result<Self, Error> {
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
            starts: HashMap::new(),
            ledger,
            phase: Phase::Collecting,
            resume: false,
        })
    }

    /// A collector in place of one that died together with every invocation in flight
    /// (`cellmatrix serve` restarted on the store): its first look launches again
    /// everything that did not finish, rather than waiting for it to go silent.
    pub(super) fn resuming(mut self) -> Self {
        self.resume = true;
        self
    }

    pub(super) async fn run(mut self, stop_at_ms: Option<u64>) -> Result<(), Error> {
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
            if end.result {
                crate::calibration::learn_committed(&store, &keys, &self.plans, &self.done).await;
            }
            self.report().await;
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
        if std::mem::take(&mut self.resume) {
            let dead = self.ledger.presume_dead();
            tracing::info!(request = %self.keys.id(), invocations = dead.len(), "resuming: launching again what was in flight");
            self.launch_all(dead).await?;
        }
        if let Some(message) = self.handle_errors(errors).await? {
            self.fail(message).await?;
            return Ok(true);
        }
        self.relaunch_lost(now).await?;
        self.relaunch_silent(now).await?;
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

    /// Notes the invocations that started since the last look, and the heartbeats of
    /// those that run (`listed`, one LIST).
    fn read_starts(&mut self, now: u64, listed: Vec<ObjectMeta>) {
        for o in listed {
            let parsed = o
                .key
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.rsplit_once('.'))
                .and_then(|(name, attempt)| Some((name.to_string(), attempt.parse().ok()?)));
            match self.starts.get(&o.key) {
                None => {
                    if let Some((name, attempt)) = &parsed {
                        self.ledger.started(name, *attempt, now);
                    }
                }
                Some(seen) if *seen != o.modified => {
                    if let Some((name, _)) = &parsed {
                        self.ledger.beat(name, now);
                    }
                }
                Some(_) => continue,
            }
            self.starts.insert(o.key, o.modified);
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
        let passed_after = passed_after(c.lost_passed_after, self.phase.plan().is_some());
        let mut again = Vec::new();
        for name in self.ledger.lost(now, lost_after, passed_after) {
            if self.ledger.launches(&name) < self.max_launches() {
                tracing::warn!(request = %self.keys.id(), name, "invocation lost; invoking it again");
                again.push(name);
            }
        }
        self.launch_all(again).await
    }

    /// Launches again what started and then stopped beating: it died with its process.
    async fn relaunch_silent(&mut self, now: u64) -> Result<(), Error> {
        let c = &self.app.config;
        let floor = 3 * c.beat_interval.as_millis() as u64 + 2 * c.poll_interval.as_millis() as u64;
        let ceiling = c.silent_after.as_millis() as u64;
        let mut again = Vec::new();
        for name in self.ledger.silent(now, floor, ceiling) {
            if self.ledger.launches(&name) < self.max_launches() {
                tracing::warn!(request = %self.keys.id(), name, "invocation silent; invoking it again");
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
                .phase
                .plan()
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
            if let Some((function, payload)) =
                event_for(&self.stored, self.keys.id(), name, attempt)?
            {
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

    async fn fail(&mut self, message: String) -> Result<(), Error> {
        tracing::warn!(request = %self.keys.id(), %message, "request failed");
        let failure = Failure::now(message);
        put_json_if_absent(&self.app.store, &self.keys.failed(), &failure).await?;
        self.report().await;
        self.advance(Phase::fail)
    }

    /// Moves on to the phase `transition` makes of the current one.
    fn advance(
        &mut self,
        transition: impl FnOnce(Phase) -> Result<Phase, Refused>,
    ) -> Result<(), Error> {
        // A refused transition ends the collector with its error, so what stands in
        // meanwhile is never looked at.
        let phase = std::mem::replace(&mut self.phase, Phase::Failed);
        self.phase = transition(phase)?;
        Ok(())
    }

    /// Plans consolidation (once), starts the shards, and commits the result when they
    /// are all in; true once committed.
    async fn consolidate(&mut self) -> Result<bool, Error> {
        let store = self.app.store.clone();
        if let Phase::Collecting = self.phase {
            // Its parts and layout come from immutable markers, so a duplicate
            // collector that wins the race stores the same layout; its timings are
            // that collector's, so the stored plan is the one used.
            let plan = consolidation_plan(
                &self.plans,
                &self.done,
                self.app.config.shard_nnz,
                self.run.started_ms,
                &self.ledger,
            );
            let key = self.keys.consolidate();
            let created = put_json_if_absent(&store, &key, &plan).await?;
            let plan = match created {
                PutOutcome::Created => plan,
                PutOutcome::AlreadyExists => get_json::<Consolidation>(&store, &key)
                    .await?
                    .ok_or_else(|| Error::Conflict(format!("{key} went missing")))?,
            };
            let shards = plan.shards;
            self.advance(|phase| phase.consolidate(plan))?;
            if created == PutOutcome::Created {
                // A shard starts by reading the plan, so none has run: no need to
                // list their markers before launching them all.
                // Before the shards: the last one may clean up, and write the
                // report, before this collector looks again.
                let launches = self.ledger.launches_log();
                crate::report::note_launches(&store, &self.keys, &launches).await;
                self.launch_shards(shards).await?;
                return Ok(false);
            }
        }
        let Some(shards) = self.phase.plan().map(|plan| plan.shards) else {
            return Err(self.phase.refuse("await the shards").into());
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
        if (shards_done.len() as u32) < shards {
            // Every collector that gets here starts the shards once; a duplicate
            // shard writes the same chunks.
            self.launch_shards(shards).await?;
            return Ok(false);
        }
        if let Phase::Consolidating { .. } = self.phase {
            let view = RequestView::read(&store, &self.keys).await?;
            // Every shard's marker is in, so shard 0 wrote the metadata; the last shard
            // may have written the root group too: the same bytes again.
            finish(&store, &self.keys, view.format).await?;
            self.advance(|phase| phase.finish(view))?;
        }
        let conversion = match self.output_format()? {
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
        let Phase::Finished { plan, view } = &self.phase else {
            return Err(self.phase.refuse("commit").into());
        };
        let record = result_record(&self.keys, view, plan, conversion);
        put_json_if_absent(&store, &self.keys.result(), &record).await?;
        crate::calibration::learn(&store, &self.plans, &self.done, &record).await;
        self.report().await;
        if !self.app.config.keep_scratch {
            scratch::remove(&store, &self.keys, Ending::Succeeded).await?;
        }
        self.advance(Phase::commit)?;
        Ok(true)
    }

    /// Writes the run report of the request, which has ended, before the cleanup
    /// removes what it is made from (best effort: `report::write` logs a failure).
    async fn report(&self) {
        crate::report::write(&self.app.store, &self.keys, self.ledger.launches_log()).await;
    }

    /// The output's format, once finished.
    fn output_format(&self) -> Result<Format, Refused> {
        match &self.phase {
            Phase::Finished { view, .. } => Ok(view.format),
            other => Err(other.refuse("convert")),
        }
    }
}
