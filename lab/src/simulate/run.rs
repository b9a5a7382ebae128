//! One simulated request, from `POST /v1/matrix` to the client seeing its result: the
//! real planner makes the tasks, and each collector decides on the real
//! [`Ledger`](cellmatrix::handlers::reducer::ledger::Ledger) what to launch again and what to
//! hedge, over simulated Lambda functions and S3.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus as Rng64;

use cellmatrix::handlers::reducer::ledger::Ledger;
use cellmatrix::plan::{PlanBundle, plan};

use super::cases::Case;
use super::engine::{Engine, MS, Micros, SEC, secs};
use super::lambda::{Admit, Func, Lambda};
use super::model::{Faults, Model};
use super::s3::{Op, Requests, S3};
use super::work::{Ctx, Layout, Payload, Planning, SliceCost, TaskCost, Timeline, Write};
use cellmatrix::cost::Usage;

/// How long a request may run (`request_timeout`'s default).
const REQUEST_TIMEOUT: Micros = 900 * SEC;

/// A case planned once: what every run of it shares.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The case's name.
    pub name: &'static str,
    /// Bundles in the request.
    pub bundles: usize,
    /// Cells in the request.
    pub cells: u64,
    /// Every task, groups in order, each group's tasks in plan order.
    pub tasks: Vec<TaskCost>,
    /// Per group, its bundle count and its tasks (indices into `tasks`).
    pub groups: Vec<(usize, Vec<usize>)>,
    /// Consolidation shards.
    pub shards: u32,
    /// Stored bytes of the whole output (the parts together).
    pub output_bytes: f64,
    /// Where the parts go in the output.
    pub layout: Layout,
}

impl Prepared {
    /// Cuts the case into groups of `bundles_per_mapper` and plans each with the real
    /// planner, as the mappers do; shards as `consolidation_plan` counts them.
    pub fn new(case: &Case, model: &Model) -> Self {
        let c = &model.calibration;
        let mut tasks = Vec::new();
        let mut groups = Vec::new();
        let per = model.service.bundles_per_mapper.max(1);
        for (g, bundles) in case.bundles.chunks(per).enumerate() {
            let mut ids = Vec::new();
            let by_fqid: HashMap<_, &PlanBundle> = bundles.iter().map(|b| (&b.fqid, b)).collect();
            for t in plan(bundles, model.service.budget) {
                let slices = t
                    .slices
                    .iter()
                    .map(|s| {
                        let rate = case.rate(c, &s.fqid);
                        let rows = (s.rows.end - s.rows.start) as f64;
                        let bytes = rows * rate.stored_per_cell();
                        SliceCost {
                            bytes,
                            compute_s: bytes / rate.bytes_per_s,
                            whole: s.rows.start == 0 && s.rows.end == by_fqid[&s.fqid].n_cells,
                        }
                    })
                    .collect();
                let nnz = t
                    .slices
                    .iter()
                    .map(|s| {
                        let b = by_fqid[&s.fqid];
                        let rows = (s.rows.end - s.rows.start) as f64;
                        let total = b.chunk_offsets.last().copied().unwrap_or(0) as f64;
                        (rows * total / b.n_cells.max(1) as f64) as u64
                    })
                    .sum();
                // As `worker::slice_bytes`, from the catalog's figures.
                let largest = t
                    .slices
                    .iter()
                    .map(|s| {
                        let b = by_fqid[&s.fqid];
                        let rows = s.rows.end - s.rows.start;
                        let total = b.chunk_offsets.last().copied().unwrap_or(0);
                        let nnz = total * rows / b.n_cells.max(1);
                        nnz * b.bytes_per_nnz + rows * 8
                    })
                    .max()
                    .unwrap_or(0);
                ids.push(tasks.len());
                tasks.push(TaskCost {
                    id: t.id,
                    group: g as u32,
                    slices,
                    cells: t.cells,
                    nnz,
                    in_flight: cellmatrix::handlers::worker::slices_in_flight(largest),
                    window: cellmatrix::handlers::worker::slices_window(largest),
                });
            }
            groups.push((bundles.len(), ids));
        }
        // As `Collector::consolidation_plan`: every task's part in plan order.
        let nz: u64 = tasks.iter().map(|t| t.nnz).sum();
        let (nnz_per_chunk, shards) = cellmatrix::layout::shard_layout(nz, model.service.shard_nnz);
        let layout = Layout {
            parts: tasks.iter().map(|t| (t.cells, t.nnz)).collect(),
            nnz_per_chunk,
        };
        let output_bytes = tasks.iter().map(TaskCost::bytes).sum();
        Prepared {
            name: case.name,
            bundles: case.bundles.len(),
            cells: case.cells(),
            tasks,
            groups,
            shards,
            output_bytes,
            layout,
        }
    }
}

/// What one run came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Whether the request succeeded.
    pub succeeded: bool,
    /// From the POST to the client seeing the request end, seconds.
    pub seconds: f64,
    /// When the last plan landed (every group planned), seconds.
    pub planned_s: Option<f64>,
    /// When the last task's done marker landed, seconds.
    pub collected_s: Option<f64>,
    /// When `result.json` was written, seconds.
    pub result_s: Option<f64>,
    /// New worker environments started in the first scaling window.
    pub first_window_workers: u64,
    /// Invocations run: the POST's driver, mappers, workers, reducers.
    pub invocations: u64,
    /// Status requests the client made (each a driver invocation, costed too).
    pub status_polls: u64,
    /// S3 requests billed.
    pub requests: Requests,
    /// Lambda GB-seconds billed.
    pub gb_seconds: f64,
    /// Dollars: `usage.bill(prices)`.
    pub cost: f64,
    /// Every invocation that ended, function and billed ms: what `cost` billed.
    pub billed: Vec<(cellmatrix::cost::Lambda, f64)>,
    /// Hedged copies launched.
    pub hedges: u32,
    /// Launches taken for lost and launched again.
    pub relaunched: u32,
    /// New execution environments.
    pub cold_starts: u64,
    /// The most new execution environments started within one second: each creates a
    /// log stream, and CreateLogStream has an account-wide quota (50 per second by
    /// default).
    pub peak_new_envs_per_s: u64,
    /// Heartbeats written (PUTs of start markers again, counted in `requests`).
    pub beats: u64,
    /// Started invocations taken for dead for going silent, and launched again.
    pub silent: u32,
}

#[derive(Debug)]
enum Ev {
    /// An invoke accepted by Lambda: its deliveries are scheduled.
    Invoke(Payload),
    /// A delivery reaches Lambda's queue poller.
    Arrive {
        p: Payload,
        failed: u32,
        throttled: u32,
    },
    /// The handler starts in its environment (after a cold start's init).
    Begin {
        p: Payload,
        failed: u32,
        init: Micros,
        crash_after: bool,
        slowdown: f64,
    },
    /// A write lands.
    Land(Write),
    /// An invocation ends; a crashed one is retried by Lambda.
    End {
        f: Func,
        billed: Micros,
        crashed: Option<(Payload, u32)>,
    },
    /// Collector `c` looks again.
    Step(usize),
    /// The client asks for the status.
    Poll,
}

/// One collector invocation's memory: what it has read, and its ledger.
#[derive(Debug, Default)]
struct Collector {
    begun: Micros,
    init: Micros,
    failed: u32,
    crash_after: bool,
    ledger: Ledger,
    plans: BTreeSet<u32>,
    done: HashMap<usize, u64>,
    starts_seen: usize,
    /// The last heartbeat seen of each started invocation (name, attempt).
    beats_seen: HashMap<(String, u32), Micros>,
    progress: (usize, usize, usize),
    heartbeat: Option<Micros>,
    finished: bool,
    /// Whether it has put (or read) the consolidation plan.
    plan_known: bool,
}

#[derive(Debug, Default)]
struct Store {
    plans: BTreeSet<u32>,
    done: BTreeMap<usize, u64>,
    started: Vec<(String, u32)>,
    /// Invocations that wrote a start marker: (name, attempt, when it landed, when the
    /// invocation ended). It beats every `beat_s` in between.
    beating: Vec<(String, u32, Micros, Micros)>,
    errors: BTreeSet<String>,
    consolidation: bool,
    shards: BTreeSet<u32>,
    result_at: Option<Micros>,
    failed_at: Option<Micros>,
    heartbeat: Micros,
    planned_at: Option<Micros>,
    collected_at: Option<Micros>,
}

impl Store {
    fn ended(&self, now: Micros) -> bool {
        self.result_at.is_some_and(|t| t <= now) || self.failed_at.is_some_and(|t| t <= now)
    }
}

struct World<'m> {
    m: &'m Model,
    p: &'m Prepared,
    hedge: bool,
    faults: Faults,
    q: Engine<Ev>,
    rng: Rng64,
    s3: S3<'m>,
    lambda: Lambda,
    store: Store,
    collectors: Vec<Collector>,
    task_names: HashMap<String, usize>,
    client_done: Option<Micros>,
    hedges: u32,
    relaunched: u32,
    silent: u32,
    beats: u64,
    status_polls: u64,
}

/// Runs `prepared` once under `model`, with or without hedging and faults.
pub fn run(model: &Model, prepared: &Prepared, seed: u64, hedge: bool, faults: bool) -> Outcome {
    let faults = if faults {
        model.faults.clone()
    } else {
        Faults::none()
    };
    let mut w = World {
        m: model,
        p: prepared,
        hedge,
        s3: S3::new(&model.s3, faults.store_error),
        faults,
        q: Engine::default(),
        rng: Rng64::seed_from_u64(seed),
        lambda: Lambda::new(&model.lambda),
        store: Store::default(),
        collectors: Vec::new(),
        task_names: prepared
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("task-{}", t.id), i))
            .collect(),
        client_done: None,
        hedges: 0,
        relaunched: 0,
        silent: 0,
        beats: 0,
        status_polls: 0,
    };
    w.post();
    let limit = REQUEST_TIMEOUT * 3;
    while let Some(ev) = w.q.pop() {
        if w.q.now() > limit {
            break;
        }
        w.handle(ev);
    }
    w.outcome(seed)
}

impl<'m> World<'m> {
    fn ctx(&mut self) -> Ctx<'_, 'm> {
        Ctx {
            rng: &mut self.rng,
            model: self.m,
            s3: &mut self.s3,
            lambda: &mut self.lambda,
        }
    }

    /// As `driver::worker_copies`: each worker event twice for a request of at most
    /// `hedge_small` tasks, with hedging on.
    fn worker_copies(&self) -> usize {
        if self.hedge && self.p.tasks.len() <= self.m.service.hedge_small {
            2
        } else {
            1
        }
    }

    fn flip(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    /// The POST: a synchronous driver invocation (API Gateway; faults are injected on
    /// asynchronous invocations only, as in #6), then the client's polling.
    fn post(&mut self) {
        let init = match self.lambda.admit(&mut self.rng, Func::Driver, 0) {
            Admit::Cold(init) => init,
            _ => 0,
        };
        let groups = self.p.groups.len() as u32;
        let here = (self.m.service.driver_groups as u32).min(groups);
        let bundles = self.p.bundles;
        let tl = self.ctx().driver(bundles, here..groups);
        self.schedule(init, &tl);
        let mut end = init + tl.duration;
        // The groups the driver plans itself, each as a mapper would but with no start
        // marker (`mapper::handle_in_driver`), all at once once the invocations are out,
        // as `driver::start` runs them beside the invocations; the answer waits for
        // them. No faults: they are no asynchronous invocation.
        let at = end;
        for g in 0..here {
            let (size, tasks) = self.p.groups[g as usize].clone();
            let copies = self.worker_copies();
            self.hedges += (copies as u32 - 1) * tasks.len() as u32;
            let mapped = self.ctx().mapper(
                g,
                0,
                bundles,
                size,
                &tasks,
                Planning {
                    in_driver: true,
                    copies,
                },
            );
            self.schedule(at, &mapped);
            end = end.max(at + mapped.duration);
        }
        self.q.at(
            end,
            Ev::End {
                f: Func::Driver,
                billed: end,
                crashed: None,
            },
        );
        self.q
            .at(end + secs(self.m.service.client_poll_s), Ev::Poll);
    }

    fn schedule(&mut self, at: Micros, tl: &Timeline) {
        for (off, w) in &tl.writes {
            self.q.at(at + off, Ev::Land(w.clone()));
        }
        for (off, p) in &tl.invokes {
            self.q.at(at + off, Ev::Invoke(p.clone()));
        }
    }

    fn handle(&mut self, ev: Ev) {
        let now = self.q.now();
        match ev {
            Ev::Invoke(p) => {
                if self.flip(self.faults.drop) {
                    return;
                }
                let copies = 1 + usize::from(self.flip(self.faults.duplicate));
                for _ in 0..copies {
                    let d = self.lambda.delivery(&mut self.rng);
                    self.q.after(
                        d,
                        Ev::Arrive {
                            p: p.clone(),
                            failed: 0,
                            throttled: 0,
                        },
                    );
                }
            }
            Ev::Arrive {
                p,
                failed,
                throttled,
            } => {
                let f = p.func();
                let init = match self.lambda.admit(&mut self.rng, f, now) {
                    Admit::Throttled => {
                        let wait = self.lambda.throttle_wait(throttled);
                        self.q.after(
                            wait,
                            Ev::Arrive {
                                p,
                                failed,
                                throttled: throttled + 1,
                            },
                        );
                        return;
                    }
                    Admit::Warm => 0,
                    Admit::Cold(init) => init,
                };
                let roll: f64 = self.rng.random();
                let crash = self.faults.crash;
                if roll < crash / 2.0 {
                    // Dies before any side effect.
                    self.q.after(
                        init + MS,
                        Ev::End {
                            f,
                            billed: init + MS,
                            crashed: Some((p, failed + 1)),
                        },
                    );
                    return;
                }
                let slowdown = if f == Func::Worker && self.flip(self.faults.straggler) {
                    self.faults.slowdown
                } else {
                    1.0
                };
                self.q.after(
                    init,
                    Ev::Begin {
                        p,
                        failed,
                        init,
                        crash_after: roll < crash,
                        slowdown,
                    },
                );
            }
            Ev::Begin {
                p,
                failed,
                init,
                crash_after,
                slowdown,
            } => self.begin(p, failed, init, crash_after, slowdown),
            Ev::Land(w) => self.land(w),
            Ev::End { f, billed, crashed } => {
                self.lambda.release(f, billed);
                if let Some((p, failed)) = crashed {
                    match self.lambda.retry_wait(failed) {
                        Some(wait) => self.q.after(
                            wait,
                            Ev::Arrive {
                                p,
                                failed,
                                throttled: 0,
                            },
                        ),
                        None => {
                            let name = name_of(&p, self.p);
                            self.q.at(now, Ev::Invoke(Payload::Failure { name }));
                        }
                    }
                }
            }
            Ev::Step(c) => self.step(c),
            Ev::Poll => self.poll(),
        }
    }

    fn land(&mut self, w: Write) {
        let now = self.q.now();
        let (groups, tasks) = (self.p.groups.len(), self.p.tasks.len());
        let s = &mut self.store;
        match w {
            Write::Started { name, attempt } => s.started.push((name, attempt)),
            Write::Plan { group } => {
                s.plans.insert(group);
                if s.plans.len() == groups {
                    s.planned_at.get_or_insert(now);
                }
            }
            Write::Done { task, duration_ms } => {
                s.done.entry(task).or_insert(duration_ms);
                if s.done.len() == tasks {
                    s.collected_at.get_or_insert(now);
                }
            }
            Write::Error { name } => {
                s.errors.insert(name);
            }
            Write::Shard { n } => {
                s.shards.insert(n);
                // `commit_if_last`: the shard that finds every marker (listed with the
                // ended check) commits the result.
                if s.shards.len() as u32 == self.p.shards && !s.ended(now) {
                    let mut ctx = self.ctx();
                    let look = ctx
                        .s3
                        .request(ctx.rng, Op::List, 0.0)
                        .max(ctx.ended_check());
                    let at = now + look + ctx.finish();
                    let r = self.store.result_at.get_or_insert(at);
                    *r = (*r).min(at);
                }
            }
        }
    }

    fn begin(&mut self, p: Payload, failed: u32, init: Micros, crash_after: bool, slowdown: f64) {
        let now = self.q.now();
        let f = p.func();
        if let Payload::Collect = p {
            self.collectors.push(Collector {
                begun: now,
                init,
                failed,
                crash_after,
                ..Collector::default()
            });
            let c = self.collectors.len() - 1;
            self.q.at(now, Ev::Step(c));
            return;
        }
        let tl = if self.store.ended(now) {
            // `state::start` finds the request ended and does nothing.
            Timeline {
                duration: self.ctx().ended_check(),
                ..Timeline::default()
            }
        } else {
            match &p {
                Payload::Mapper { group, attempt } => {
                    let (size, tasks) = self.p.groups[*group as usize].clone();
                    let bundles = self.p.bundles;
                    let copies = self.worker_copies();
                    self.hedges += (copies as u32 - 1) * tasks.len() as u32;
                    self.ctx().mapper(
                        *group,
                        *attempt,
                        bundles,
                        size,
                        &tasks,
                        Planning {
                            in_driver: false,
                            copies,
                        },
                    )
                }
                Payload::Worker { task, attempt } => {
                    if self.store.done.contains_key(task) {
                        self.ctx().worker_already_done()
                    } else {
                        let prepared = self.p;
                        self.ctx()
                            .worker(*task, &prepared.tasks[*task], *attempt, slowdown)
                    }
                }
                Payload::Shard { n, attempt } => {
                    let done = self.store.shards.contains(n);
                    let prepared = self.p;
                    self.ctx().shard(*n, *attempt, prepared, done)
                }
                Payload::Failure { name } => {
                    // `handlers::reducer::failures`: an error marker unless one is there; a
                    // lost collector fails the request.
                    let mut ctx = self.ctx();
                    let d = ctx.ended_check() + ctx.put();
                    let mut tl = Timeline {
                        duration: d,
                        ..Timeline::default()
                    };
                    if name == "collect" {
                        self.store.failed_at.get_or_insert(now + d);
                    } else if !self.store.errors.contains(name) {
                        tl.writes.push((d, Write::Error { name: name.clone() }));
                    }
                    tl
                }
                Payload::Collect => unreachable!("handled above"),
            }
        };
        self.schedule(now, &tl);
        self.beat(now, &tl);
        self.q.at(
            now + tl.duration,
            Ev::End {
                f,
                billed: init + tl.duration,
                crashed: crash_after.then_some((p, failed + 1)),
            },
        );
    }

    /// An invocation that writes its start marker beats from then until it ends
    /// (`handlers::beat`): one PUT every `beat_s`, in the background of its work.
    fn beat(&mut self, now: Micros, tl: &Timeline) {
        let Some((at, name, attempt)) = tl.writes.iter().find_map(|(off, w)| match w {
            Write::Started { name, attempt } => Some((now + off, name.clone(), *attempt)),
            _ => None,
        }) else {
            return;
        };
        let end = now + tl.duration;
        let interval = secs(self.m.service.beat_s).max(1);
        let beats = end.saturating_sub(at) / interval;
        for _ in 0..beats {
            self.s3.request(&mut self.rng, Op::Put, 0.0);
        }
        self.beats += beats;
        self.store.beating.push((name, attempt, at, end));
    }

    /// As `Collector::read_starts` for heartbeats: a start marker seen before and
    /// written again since is a beat.
    fn read_beats(&self, c: &mut Collector, now: Micros) {
        let interval = secs(self.m.service.beat_s).max(1);
        for (name, attempt, at, end) in &self.store.beating {
            if *at > now {
                continue;
            }
            let last = at + (now.min(*end) - at) / interval * interval;
            match c.beats_seen.insert((name.clone(), *attempt), last) {
                Some(seen) if seen < last => c.ledger.beat(name, now / MS),
                _ => {}
            }
        }
    }

    fn poll(&mut self) {
        let now = self.q.now();
        if self.client_done.is_some() {
            return;
        }
        self.status_polls += 1;
        let init = match self.lambda.admit(&mut self.rng, Func::Driver, now) {
            Admit::Cold(init) => init,
            _ => 0,
        };
        let d = self.ctx().status();
        let read_at = now + init;
        let end = read_at + d;
        self.q.at(
            end,
            Ev::End {
                f: Func::Driver,
                billed: init + d,
                crashed: None,
            },
        );
        if self.store.ended(read_at) {
            self.client_done = Some(end);
            return;
        }
        // `revive_if_silent`: a collector never heard of for `collector_first_beat`, or
        // not heard of for `collector_stale` since its last heartbeat.
        let svc = &self.m.service;
        let stale = if self.store.heartbeat == 0 {
            secs(svc.collector_first_beat_s.min(svc.collector_stale_s))
        } else {
            secs(svc.collector_stale_s)
        };
        if read_at.saturating_sub(self.store.heartbeat) > stale {
            // Every such poll starts one, until one writes its heartbeat.
            let call = self.lambda.invoke_call(&mut self.rng, Func::Reducer);
            self.q.at(end + call, Ev::Invoke(Payload::Collect));
        }
        self.q
            .at(end + secs(self.m.service.client_poll_s), Ev::Poll);
    }

    /// As `Collector::copies_of`: a small request's tasks and a small result's shards
    /// twice, with hedging on.
    fn copies_of(&self, name: &str) -> usize {
        let shards = self.p.shards as usize;
        if self.task_names.contains_key(name) {
            self.worker_copies()
        } else if name.starts_with("shard-") && self.hedge && shards <= self.m.service.hedge_small {
            2
        } else {
            1
        }
    }

    /// As `Collector::launch_all`: each of `names` [`Self::copies_of`] times (the
    /// copies after the first of each, counted as hedges), `invoke_concurrency` calls
    /// at a time, each batch its slowest call, the launches recorded once all are out.
    fn launch_all(&mut self, c: &mut Collector, names: &[String], t: &mut Micros) {
        let mut launched = Vec::with_capacity(names.len());
        let mut calls: Vec<&String> = names.iter().collect();
        for name in names {
            let copies = self.copies_of(name);
            self.hedges += copies as u32 - 1;
            calls.extend(std::iter::repeat_n(name, copies - 1));
        }
        for batch in calls.chunks(self.m.service.invoke_concurrency.max(1)) {
            let mut slowest = 0;
            for &name in batch {
                let attempt = c.ledger.next_attempt(name);
                let p = if let Some(&task) = self.task_names.get(name) {
                    Payload::Worker { task, attempt }
                } else if let Some(group) = name.strip_prefix("group-").and_then(|g| g.parse().ok())
                {
                    Payload::Mapper { group, attempt }
                } else if let Some(n) = name.strip_prefix("shard-").and_then(|g| g.parse().ok()) {
                    Payload::Shard { n, attempt }
                } else {
                    continue;
                };
                let call = self.lambda.invoke_call(&mut self.rng, p.func());
                slowest = slowest.max(call);
                self.q.at(*t + call, Ev::Invoke(p));
                if !launched.contains(&(name, attempt)) {
                    launched.push((name, attempt));
                }
            }
            *t += slowest;
        }
        for (name, attempt) in launched {
            c.ledger.launched(name, attempt, *t / MS);
        }
    }

    /// One look of collector `c`, as `Collector::step`.
    fn step(&mut self, c: usize) {
        let mut coll = std::mem::take(&mut self.collectors[c]);
        let done = self.step_with(c, &mut coll);
        if let Some(end) = done {
            let billed = coll.init + end.saturating_sub(coll.begun);
            let crashed = coll
                .crash_after
                .then_some((Payload::Collect, coll.failed + 1));
            self.q.at(
                end,
                Ev::End {
                    f: Func::Reducer,
                    billed,
                    crashed,
                },
            );
        }
        self.collectors[c] = coll;
    }

    /// The look itself; `Some(end)` when the collector returns at `end`.
    fn step_with(&mut self, index: usize, c: &mut Collector) -> Option<Micros> {
        let now = self.q.now();
        let now_ms = now / MS;
        let (m, p) = (self.m, self.p);
        let svc = &m.service;
        let groups = p.groups.len();
        let pages = |n: usize| n.div_ceil(1000).max(1);
        // The end check and the LISTs (plans until all are in, done markers, start
        // markers, error markers) in one round.
        let mut first = self.ctx().ended_check();
        if c.plans.len() < groups {
            first = first.max(self.s3.request(&mut self.rng, Op::List, 0.0));
        }
        for listed in [self.store.done.len(), self.store.started.len(), 0] {
            first = first.max(self.s3.round(&mut self.rng, Op::List, pages(listed), 0.0));
        }
        let mut t = now + first;
        if self.store.ended(now) {
            return Some(t);
        }
        if c.ledger.entries.is_empty() {
            // The driver launched every mapper when the run started.
            for g in 0..p.groups.len() {
                c.ledger.launched(&format!("group-{g}"), 0, 0);
            }
        }
        if c.plans.len() < groups {
            let new: Vec<u32> = self.store.plans.difference(&c.plans).copied().collect();
            for g in new {
                let tasks = &p.groups[g as usize].1;
                t += self
                    .s3
                    .request(&mut self.rng, Op::Get, 200.0 * tasks.len() as f64);
                c.ledger.finished(&format!("group-{g}"));
                for &i in tasks {
                    let name = format!("task-{}", p.tasks[i].id);
                    if !c.ledger.knows(&name) {
                        c.ledger.launched(&name, 0, now_ms);
                    }
                }
                c.plans.insert(g);
            }
        }
        let new: Vec<(usize, u64)> = self
            .store
            .done
            .iter()
            .filter(|(k, _)| !c.done.contains_key(k))
            .map(|(&k, &v)| (k, v))
            .collect();
        t += self
            .s3
            .batches(&mut self.rng, Op::Get, new.len(), svc.marker_reads, 0.0);
        for (task, d) in new {
            c.ledger.finished(&format!("task-{}", p.tasks[task].id));
            c.done.insert(task, d);
        }
        for (name, attempt) in &self.store.started[c.starts_seen..] {
            c.ledger.started(name, *attempt, now_ms);
        }
        c.starts_seen = self.store.started.len();
        self.read_beats(c, now);
        let max_launches = svc.task_attempts.saturating_add(2);
        for name in self.store.errors.clone() {
            t += self.s3.request(&mut self.rng, Op::Get, 0.0);
            if !c.ledger.is_finished(&name) {
                let failures = c.ledger.failed(&name);
                if failures >= svc.task_attempts {
                    self.store.failed_at.get_or_insert(t);
                    return Some(t);
                }
            }
            self.store.errors.remove(&name);
            t += self.s3.request(&mut self.rng, Op::Delete, 0.0);
            if !c.ledger.is_finished(&name) {
                self.launch_all(c, &[name], &mut t);
            }
        }
        let lost_after = secs(svc.lost_after_s) / MS;
        let passed_after = cellmatrix::handlers::reducer::ledger::passed_after(
            std::time::Duration::from_secs_f64(svc.lost_passed_after_s),
            c.plan_known,
        );
        let lost: Vec<String> = c
            .ledger
            .lost(now_ms, lost_after, passed_after)
            .into_iter()
            .filter(|name| c.ledger.launches(name) < max_launches)
            .collect();
        self.relaunched += lost.len() as u32;
        self.launch_all(c, &lost, &mut t);
        // As `Collector::relaunch_silent`.
        let floor = (3.0 * svc.beat_s + 2.0 * svc.poll_s) * 1e3;
        let silent: Vec<String> = c
            .ledger
            .silent(now_ms, floor as u64, (svc.silent_after_s * 1e3) as u64)
            .into_iter()
            .filter(|name| c.ledger.launches(name) < max_launches)
            .collect();
        self.silent += silent.len() as u32;
        self.launch_all(c, &silent, &mut t);
        let total = p.tasks.len();
        let all_planned = c.plans.len() == groups;
        let total_planned: usize = c.plans.iter().map(|&g| p.groups[g as usize].1.len()).sum();
        if all_planned && self.hedge {
            let mut durations: Vec<u64> = c.done.values().copied().collect();
            durations.sort_unstable();
            let median = durations.get(durations.len() / 2).copied();
            let policy = svc.hedge_policy;
            let copies: Vec<String> = c
                .ledger
                .stragglers(now_ms, c.done.len(), total, median, policy)
                .into_iter()
                .filter(|name| c.ledger.launches(name) < max_launches)
                .collect();
            self.hedges += copies.len() as u32;
            self.launch_all(c, &copies, &mut t);
        }
        let progress = (c.plans.len(), total_planned, c.done.len());
        let beat = secs(svc.collector_stale_s) / 4;
        // Also the heartbeat, so written on the first look too.
        if progress != c.progress || c.heartbeat.is_none_or(|h| now.saturating_sub(h) >= beat) {
            t += self.s3.request(&mut self.rng, Op::Put, 0.0);
            c.progress = progress;
            c.heartbeat = Some(now);
            self.store.heartbeat = self.store.heartbeat.max(t);
        }
        if all_planned && c.ledger.planned_at.is_none() {
            c.ledger.planned_at = Some(now_ms);
        }
        if all_planned && c.done.len() == total {
            c.ledger.collected_at.get_or_insert(now_ms);
            if self.consolidate(c, &mut t) {
                let objects = total * 12 + groups * 2 + p.shards as usize * 2;
                t += self.ctx().cleanup(objects);
                return Some(t);
            }
        }
        if now > REQUEST_TIMEOUT {
            self.store.failed_at.get_or_insert(t);
            return Some(t);
        }
        let poll = secs(svc.poll_s);
        self.q.at(t + poll, Ev::Step(index));
        None
    }

    /// As `Collector::consolidate`; true once the result is committed.
    fn consolidate(&mut self, c: &mut Collector, t: &mut Micros) -> bool {
        // The plan put if absent once per collector (read back when another's stands);
        // the collector that stored it launches every shard without listing markers.
        let mut fresh_plan = false;
        if !c.plan_known {
            *t += self.s3.request(&mut self.rng, Op::Put, 0.0);
            if self.store.consolidation {
                *t += self.s3.request(&mut self.rng, Op::Get, 0.0);
            } else {
                fresh_plan = true;
            }
            self.store.consolidation = true;
            c.plan_known = true;
        }
        if !fresh_plan {
            *t += self.s3.request(&mut self.rng, Op::List, 0.0);
        }
        let shards = self.p.shards;
        for n in self.store.shards.clone() {
            c.ledger.finished(&format!("shard-{n}"));
        }
        if (self.store.shards.len() as u32) < shards {
            // As `launch_shards`: the fresh ones, then a small result's copies.
            let fresh: Vec<String> = (0..shards)
                .map(|n| format!("shard-{n}"))
                .filter(|name| !c.ledger.knows(name))
                .collect();
            self.launch_all(c, &fresh, t);
            return false;
        }
        if !c.finished {
            *t += self.ctx().finish();
            c.finished = true;
        }
        let at = *t;
        let r = self.store.result_at.get_or_insert(at);
        *r = (*r).min(at);
        true
    }

    fn outcome(&self, seed: u64) -> Outcome {
        let prices = &self.m.prices;
        let l = &self.lambda;
        let runs: u64 = l.runs.iter().sum();
        let requests = self.s3.requests;
        // One cost model with the run report: the invocations that ended, as billed,
        // and every S3 request, priced by `Usage::bill`.
        let usage = Usage {
            requests: requests.billed(),
            ..l.usage.clone()
        };
        let cost = usage.bill(prices).total_usd;
        let end = self.client_done;
        Outcome {
            seed,
            succeeded: self.store.result_at.is_some()
                && self
                    .store
                    .failed_at
                    .is_none_or(|f| self.store.result_at.is_some_and(|r| r <= f)),
            seconds: end.unwrap_or(self.q.now()) as f64 / 1e6,
            planned_s: self.store.planned_at.map(|r| r as f64 / 1e6),
            collected_s: self.store.collected_at.map(|r| r as f64 / 1e6),
            result_s: self.store.result_at.map(|r| r as f64 / 1e6),
            first_window_workers: {
                let window = secs(self.m.lambda.scale_window_s);
                l.started_at
                    .iter()
                    .filter(|&&(f, at)| f == Func::Worker && at < window)
                    .count() as u64
            },
            invocations: runs - self.status_polls,
            status_polls: self.status_polls,
            requests,
            gb_seconds: usage.total_gb_seconds(),
            cost,
            billed: l.billed.clone(),
            hedges: self.hedges,
            relaunched: self.relaunched,
            cold_starts: l.cold_starts.iter().sum(),
            peak_new_envs_per_s: peak_per_second(l.started_at.iter().map(|&(_, at)| at)),
            beats: self.beats,
            silent: self.silent,
        }
    }
}

/// The most of `times` within any one second.
fn peak_per_second(times: impl Iterator<Item = Micros>) -> u64 {
    let mut times: Vec<Micros> = times.collect();
    times.sort_unstable();
    let mut peak = 0;
    let mut first = 0;
    for (i, &t) in times.iter().enumerate() {
        while t - times[first] >= secs(1.0) {
            first += 1;
        }
        peak = peak.max(i + 1 - first);
    }
    peak as u64
}

/// The invocation name of a payload, as error markers and the ledger name it.
fn name_of(p: &Payload, prepared: &Prepared) -> String {
    match p {
        Payload::Mapper { group, .. } => format!("group-{group}"),
        Payload::Worker { task, .. } => format!("task-{}", prepared.tasks[*task].id),
        Payload::Shard { n, .. } => format!("shard-{n}"),
        Payload::Collect => "collect".into(),
        Payload::Failure { name } => name.clone(),
    }
}
