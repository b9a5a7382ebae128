//! What each handler does, as time: the S3 requests it makes one after another or at
//! once, its compute, the invocations it makes and when its writes land. Mirrors
//! `handlers::{driver, mapper, worker, reducer}`; the collector's decisions are in
//! `run.rs`, on the real ledger.

use rand_xoshiro::Xoshiro256PlusPlus as Rng64;

use super::engine::{Micros, secs};
use super::lambda::{Func, Lambda};
use super::model::Model;
use super::s3::{Op, S3};

/// An event one function sends another (ids only, as `messages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Plan group `group`.
    Mapper {
        /// The group.
        group: u32,
        /// Its attempt.
        attempt: u32,
    },
    /// Run task `task` (an index into the run's tasks).
    Worker {
        /// The task.
        task: usize,
        /// Its attempt.
        attempt: u32,
    },
    /// Collect (the reducer in `Collect` mode).
    Collect,
    /// Consolidation shard `n`.
    Shard {
        /// The shard.
        n: u32,
        /// Its attempt.
        attempt: u32,
    },
    /// Lambda's on-failure record of an event it gave up on, naming the invocation.
    Failure {
        /// `group-…`, `task-…`, `shard-…` or `collect`.
        name: String,
    },
}

impl Payload {
    /// The function it goes to.
    pub fn func(&self) -> Func {
        match self {
            Payload::Mapper { .. } => Func::Mapper,
            Payload::Worker { .. } => Func::Worker,
            Payload::Collect | Payload::Shard { .. } | Payload::Failure { .. } => Func::Reducer,
        }
    }
}

/// A write that changes what the collector sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// `started/{name}.{attempt}.json`.
    Started {
        /// Invocation name.
        name: String,
        /// Attempt.
        attempt: u32,
    },
    /// `plans/{group}.json`.
    Plan {
        /// The group.
        group: u32,
    },
    /// `done/{task}.json` (put-if-absent: the first stands).
    Done {
        /// The task.
        task: usize,
        /// The worker's measured duration.
        duration_ms: u64,
    },
    /// `errors/{name}.json`, retryable (from an on-failure record).
    Error {
        /// Invocation name.
        name: String,
    },
    /// `shards/{n}.json`.
    Shard {
        /// The shard.
        n: u32,
    },
}

/// A handler's run: when its writes land and its invocations are accepted, relative
/// to its start, and how long it runs.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Writes, at their offsets.
    pub writes: Vec<(Micros, Write)>,
    /// Invocations accepted, at their offsets.
    pub invokes: Vec<(Micros, Payload)>,
    /// The handler's duration.
    pub duration: Micros,
}

/// One slice of a task, as the worker's time sees it.
#[derive(Debug, Clone, Copy)]
pub struct SliceCost {
    /// Stored bytes read.
    pub bytes: f64,
    /// Seconds of one core to process them (bench's rate for the bundle's kind).
    pub compute_s: f64,
    /// Whether it is its whole bundle, whose nonzeros the reader reads with the row
    /// pointers.
    pub whole: bool,
}

/// A task, as the worker's time sees it.
#[derive(Debug, Clone)]
pub struct TaskCost {
    /// The planner's id.
    pub id: String,
    /// Its group.
    pub group: u32,
    /// Its slices in order.
    pub slices: Vec<SliceCost>,
    /// Cells.
    pub cells: u64,
    /// Nonzeros.
    pub nnz: u64,
    /// Slices its worker reads at once (`worker::slices_in_flight` of its largest).
    pub in_flight: usize,
    /// Slices its worker has started and not yet added at most (`worker::slices_window`
    /// of its largest).
    pub window: usize,
}

impl TaskCost {
    /// Stored bytes of its slices (also what its part weighs).
    pub fn bytes(&self) -> f64 {
        self.slices.iter().map(|s| s.bytes).sum()
    }
}

/// Where the parts go in the output, as `Consolidation` places them.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Per part in plan order, its cells and nonzeros.
    pub parts: Vec<(u64, u64)>,
    /// The output's nonzeros per chunk (`layout::shard_layout`).
    pub nnz_per_chunk: u64,
}

/// One output array, as a shard sees it.
#[derive(Debug, Clone, Copy)]
pub struct OutArray {
    /// Elements.
    pub len: u64,
    /// Elements per chunk.
    pub chunk: u64,
    /// Whether parts are placed in it by nonzeros (else by rows).
    pub by_nnz: bool,
    /// Its stored bytes.
    pub bytes: f64,
}

impl Layout {
    fn totals(&self) -> (u64, u64) {
        self.parts
            .iter()
            .fold((0, 0), |(r, z), &(c, n)| (r + c, z + n))
    }

    /// The output arrays of `output_arrays` without extra fields: indptr, indices,
    /// data, obs index. The nonzeros' arrays share the parts' stored bytes; a row
    /// array weighs `row_bytes` a row.
    pub fn arrays(&self, output_bytes: f64, row_bytes: f64) -> [OutArray; 4] {
        let (rows, nnz) = self.totals();
        let rows_chunk = cellmatrix::layout::OUT_ROWS_PER_CHUNK;
        let by_rows = |len: u64| OutArray {
            len,
            chunk: rows_chunk,
            by_nnz: false,
            bytes: rows as f64 * row_bytes,
        };
        let by_nnz = OutArray {
            len: nnz,
            chunk: self.nnz_per_chunk,
            by_nnz: true,
            bytes: output_bytes / 2.0,
        };
        [by_rows(rows + 1), by_nnz, by_nnz, by_rows(rows)]
    }

    /// For shard `n` of `shards`: the parts its range of `array` overlaps and the
    /// stored bytes of that range; `None` when it writes none of the array.
    pub fn shard_range(&self, array: &OutArray, n: u32, shards: u32) -> Option<(usize, f64)> {
        let chunks =
            cellmatrix::layout::shard_chunks(array.len.div_ceil(array.chunk.max(1)), n, shards);
        if chunks.is_empty() {
            return None;
        }
        let range = chunks.start * array.chunk..(chunks.end * array.chunk).min(array.len);
        let (mut at, mut overlapping) = (0u64, 0usize);
        for &(cells, nnz) in &self.parts {
            let size = if array.by_nnz { nnz } else { cells };
            if size > 0 && at < range.end && range.start < at + size {
                overlapping += 1;
            }
            at += size;
        }
        let share = (range.end - range.start) as f64 / array.len.max(1) as f64;
        Some((overlapping, array.bytes * share))
    }
}

/// A handler's context: the randomness, the model, S3 and Lambda.
pub struct Ctx<'a, 'm> {
    /// The run's generator.
    pub rng: &'a mut Rng64,
    /// The model.
    pub model: &'m Model,
    /// S3, counting requests.
    pub s3: &'a mut S3<'m>,
    /// Lambda, counting invoke calls.
    pub lambda: &'a mut Lambda,
}

impl std::fmt::Debug for Ctx<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").finish_non_exhaustive()
    }
}

/// How a group is planned.
#[derive(Debug, Clone, Copy)]
pub struct Planning {
    /// By the driver, which writes no start marker (`mapper::handle_in_driver`).
    pub in_driver: bool,
    /// How many times each worker event is sent (`StoredRequest::copies`), the copies
    /// after the first of each.
    pub copies: usize,
}

impl Ctx<'_, '_> {
    /// `state::ended`: three HEADs at once.
    pub fn ended_check(&mut self) -> Micros {
        self.s3.round(self.rng, Op::Get, 3, 0.0)
    }

    /// `state::start`: the ended check, then the start marker.
    pub fn start(&mut self) -> Micros {
        self.ended_check() + self.s3.request(self.rng, Op::Put, 0.0)
    }

    /// One small PUT.
    pub fn put(&mut self) -> Micros {
        self.s3.request(self.rng, Op::Put, 0.0)
    }

    fn parse(&self, bytes: f64) -> Micros {
        secs(bytes / self.model.sizes.json_bytes_per_s)
    }

    /// The catalog: one LIST and one GET of `bundles` entries, parsed.
    pub fn catalog(&mut self, bundles: usize) -> Micros {
        let bytes = bundles as f64 * self.model.sizes.catalog_bytes_per_bundle;
        self.s3.request(self.rng, Op::List, 0.0)
            + self.s3.request(self.rng, Op::Get, bytes)
            + self.parse(bytes)
    }

    /// Chunks of a Zarr array written, `chunk_writes` at a time.
    fn chunks(&mut self, chunks: u64) -> Micros {
        let at_once = self.model.sizes.chunk_writes;
        self.s3
            .batches(self.rng, Op::Put, chunks.max(1) as usize, at_once, 0.0)
    }

    /// The driver's `POST /v1/matrix` until it answers 202: catalog, gene space, the
    /// look for an earlier run (`request.json`), `genes.json` and `run.json` at once,
    /// `request.json`, then the collector and the mappers of `groups` invoked
    /// `invoke_concurrency` at a time (the groups the driver plans itself are the
    /// caller's).
    pub fn driver(&mut self, bundles: usize, groups: std::ops::Range<u32>) -> Timeline {
        let mut t = self.catalog(bundles);
        let fs = self.model.sizes.feature_set_bytes;
        t += self.s3.request(self.rng, Op::Get, fs) + self.parse(fs);
        t += self.s3.request(self.rng, Op::Get, 0.0);
        t += self
            .s3
            .request(self.rng, Op::Put, fs)
            .max(self.s3.request(self.rng, Op::Put, 0.0));
        t += self.s3.request(self.rng, Op::Put, 0.0);
        let mut tl = Timeline::default();
        let payloads: Vec<Payload> = std::iter::once(Payload::Collect)
            .chain(groups.map(|group| Payload::Mapper { group, attempt: 0 }))
            .collect();
        for batch in payloads.chunks(self.model.service.invoke_concurrency.max(1)) {
            let mut slowest = 0;
            for p in batch {
                let f = match p {
                    Payload::Collect => Func::Reducer,
                    _ => Func::Mapper,
                };
                let call = self.lambda.invoke_call(self.rng, f);
                slowest = slowest.max(call);
                tl.invokes.push((t + call, p.clone()));
            }
            t += slowest;
        }
        tl.duration = t;
        tl
    }

    /// A status request: five objects read at once.
    pub fn status(&mut self) -> Micros {
        self.s3.round(self.rng, Op::Get, 5, 0.0)
    }

    /// A mapper: start, catalog, plan, task documents, the plan, then the workers
    /// `invoke_concurrency` at a time, each batch after an ended check, as `how` says.
    pub fn mapper(
        &mut self,
        group: u32,
        attempt: u32,
        catalog_bundles: usize,
        group_bundles: usize,
        tasks: &[usize],
        how: Planning,
    ) -> Timeline {
        let mut tl = Timeline::default();
        let name = format!("group-{group}");
        let mut t = 0;
        if !how.in_driver {
            t = self.start();
            tl.writes.push((t, Write::Started { name, attempt }));
        }
        t += self.catalog(catalog_bundles);
        t += secs(group_bundles as f64 * self.model.sizes.plan_s_per_bundle);
        let at_once = self.model.service.invoke_concurrency;
        t += self
            .s3
            .batches(self.rng, Op::Put, tasks.len(), at_once, 0.0);
        t += self.s3.request(self.rng, Op::Put, 0.0);
        tl.writes.push((t, Write::Plan { group }));
        t += self.ended_check();
        let sends: Vec<usize> = tasks
            .iter()
            .copied()
            .cycle()
            .take(tasks.len() * how.copies)
            .collect();
        for batch in sends.chunks(at_once) {
            t += self.ended_check();
            let mut slowest = 0;
            for &task in batch {
                let call = self.lambda.invoke_call(self.rng, Func::Worker);
                slowest = slowest.max(call);
                tl.invokes
                    .push((t + call, Payload::Worker { task, attempt: 0 }));
            }
            t += slowest;
        }
        tl.duration = t;
        tl
    }

    /// A worker that found its done marker: its HEAD with the ended check.
    pub fn worker_already_done(&mut self) -> Timeline {
        Timeline {
            duration: self.s3.round(self.rng, Op::Get, 4, 0.0),
            ..Timeline::default()
        }
    }

    /// A worker running task `index`, `slowdown` times slower in its reads when a
    /// straggler. Slices go through three stages: request latency (the task's
    /// `in_flight` at once, within the store's bound of requests and `window` slices
    /// past the last one added: a cancel check once per `CANCEL_CHECK_EVERY`, then
    /// `indptr` and the 4 obs GETs at once (the arrays built from the catalog's layout,
    /// with no metadata GETs), with the
    /// 2 nonzero GETs when the slice is its whole bundle, after them otherwise), the
    /// invocation's S3 bandwidth (one slice's bytes after another), and one core (the
    /// bench's rate for the slice's kind, which includes decoding, filtering, remapping
    /// and writing on a local store), then the upload of its part's chunks. Each stage
    /// overlaps the others, as the worker's semaphore of `in_flight` permits inside
    /// `buffered(window)` and its part's streamed writes do.
    pub fn worker(
        &mut self,
        index: usize,
        task: &TaskCost,
        attempt: u32,
        slowdown: f64,
    ) -> Timeline {
        let mut tl = Timeline::default();
        // The task's clock starts before its checks.
        let run_start = 0;
        let mut t = self.s3.round(self.rng, Op::Get, 4, 0.0);
        // The start marker with the task, the request and `genes.json` (`begin_with`);
        // then the feature set, while the first slices are read (the first is added
        // once it is in).
        let fs = self.model.sizes.feature_set_bytes;
        let marker = self.s3.request(self.rng, Op::Put, 0.0);
        tl.writes.push((
            t + marker,
            Write::Started {
                name: format!("task-{}", task.id),
                attempt,
            },
        ));
        let task_doc = self.s3.request(self.rng, Op::Get, 0.0);
        let request_doc = self.s3.request(self.rng, Op::Get, 0.0);
        let genes = self.s3.request(self.rng, Op::Get, fs) + self.parse(fs);
        t += marker.max(task_doc).max(request_doc).max(genes);
        let remaps = t + self.s3.request(self.rng, Op::Get, fs) + self.parse(fs);
        let cores = self.lambda.vcpus(Func::Worker).min(1.0);
        // A slice holds up to 7 requests open, within the store's bound on requests.
        let lanes = task.in_flight.min(self.model.s3.max_in_flight / 7).max(1);
        let window = task.window.max(lanes);
        // When each reading lane (a permit of the worker's semaphore) is free again.
        let mut free: std::collections::BinaryHeap<std::cmp::Reverse<Micros>> =
            (0..lanes).map(|_| std::cmp::Reverse(t)).collect();
        let n = task.slices.len();
        let every = secs(cellmatrix::handlers::worker::CANCEL_CHECK_EVERY.as_secs_f64());
        // Cancel checks count from the task's start, where `begin` looked.
        let mut checked = run_start;
        // yielded[i]: when slice i left the window (was added to the part).
        let mut yielded: Vec<Micros> = Vec::with_capacity(n);
        let (mut net_free, mut core_free, mut up_free) = (t, remaps, t);
        for (i, s) in task.slices.iter().enumerate() {
            let std::cmp::Reverse(lane) = free.pop().expect("at least one lane");
            let mut begin = lane.max(t);
            if i >= window {
                begin = begin.max(yielded[i - window]);
            }
            let mut latency = 0;
            if begin.saturating_sub(checked) >= every {
                checked = begin;
                latency += self.s3.request(self.rng, Op::Get, 0.0);
            }
            // The arrays are built from the catalog's layout: no metadata round.
            if s.whole {
                latency += self.s3.round(self.rng, Op::Get, 7, 0.0);
            } else {
                latency += self.s3.round(self.rng, Op::Get, 5, 0.0)
                    + self.s3.round(self.rng, Op::Get, 2, 0.0);
            }
            let fetched = (begin + latency).max(net_free) + secs(self.s3.transfer(s.bytes));
            net_free = fetched;
            free.push(std::cmp::Reverse(fetched));
            let consumed = fetched.max(core_free);
            yielded.push(consumed);
            core_free = consumed + secs(s.compute_s / cores);
            // Its nonzeros leave as the part's chunks fill (`PartBuilder::flush`), on
            // the invocation's upload (full duplex), while the next slices are read.
            up_free = up_free.max(core_free) + secs(self.s3.transfer(s.bytes));
        }
        let read_end = core_free.max(t);
        let read = read_end - run_start;
        t = read_end + secs(read as f64 / 1e6 * (slowdown - 1.0).max(0.0));
        // What is left of the part at the end, written at once: indptr and obs by rows
        // (up to 65,536 a chunk, the metadata with the chunks), and the last chunk and the
        // metadata of indices and data; the slowest array's round trips after the
        // streamed chunks have landed.
        let arrays = self.model.sizes.arrays.max(1);
        let row_chunks = task.cells.div_ceil(cellmatrix::part::PART_ROWS_PER_CHUNK);
        // The streamed chunks of indices and data, before the last: counted and
        // priced, their time inside the upload above.
        let streamed = task
            .nnz
            .div_ceil(cellmatrix::part::part_nnz_chunk(task.nnz));
        if streamed > 1 {
            for _ in 0..2 {
                self.chunks(streamed - 1);
            }
        }
        let mut slowest = 0;
        for a in 0..arrays {
            let chunks = if a == 1 || a == 2 { 1 } else { row_chunks };
            let written = self
                .chunks(chunks)
                .max(self.s3.request(self.rng, Op::Put, 0.0));
            slowest = slowest.max(written);
        }
        t = t.max(up_free) + slowest;
        let duration_ms = (t - run_start) / 1_000;
        t += self.s3.request(self.rng, Op::Put, 0.0);
        tl.writes.push((
            t,
            Write::Done {
                task: index,
                duration_ms,
            },
        ));
        t += self.ended_check();
        tl.duration = t;
        tl
    }

    /// A consolidation shard: its marker's HEAD with the ended check, then its start
    /// marker with the plan and the request (shard 0 also the gene space); then per
    /// output array, its chunk-aligned range (`layout::shard_chunks`): the parts'
    /// ranges overlapping it, a batch at a time, and its chunks written, every array at
    /// once and, on shard 0, the output's metadata beside them; then its marker.
    pub fn shard(
        &mut self,
        n: u32,
        attempt: u32,
        prepared: &super::run::Prepared,
        already_done: bool,
    ) -> Timeline {
        let mut tl = Timeline::default();
        // The HEAD of its marker with the ended check: done already, it starts nothing.
        if already_done {
            tl.duration = self.s3.round(self.rng, Op::Get, 4, 0.0);
            return tl;
        }
        let mut t = self.s3.round(self.rng, Op::Get, 4, 0.0);
        // The start marker with the plan and the request (`begin_with`).
        let marker = self.s3.request(self.rng, Op::Put, 0.0);
        tl.writes.push((
            t + marker,
            Write::Started {
                name: format!("shard-{n}"),
                attempt,
            },
        ));
        let metadata_shard = n == 0;
        let fs = self.model.sizes.feature_set_bytes;
        let mut reads = self.s3.round(self.rng, Op::Get, 2, 0.0);
        if metadata_shard {
            // Shard 0 reads the gene space too, for the output's metadata.
            reads = reads.max(self.s3.request(self.rng, Op::Get, fs) + self.parse(fs));
        }
        t += marker.max(reads);
        let layout = &prepared.layout;
        let at_once = self.model.service.part_reads_in_flight;
        // Every array's range at once (`ShardRange::write`): the slowest array's round
        // trips, then every byte read and written on the invocation's bandwidth.
        let (mut bytes, mut slowest) = (0.0, 0);
        for array in layout.arrays(prepared.output_bytes, self.model.sizes.row_bytes) {
            let Some((overlapping, share)) = layout.shard_range(&array, n, prepared.shards) else {
                continue;
            };
            // The overlapping parts' ranges, `at_once` at a time (their arrays are built
            // from the plan, not opened).
            let mut a = self
                .s3
                .batches(self.rng, Op::Get, overlapping, at_once, 0.0);
            a += self.s3.request(self.rng, Op::Get, 0.0);
            let chunks = (share / 4e6).ceil().max(1.0) as u64;
            a += self.chunks(chunks);
            slowest = slowest.max(a);
            bytes += share;
        }
        if metadata_shard {
            // `write_metadata`, beside the chunks: the plan's existence check, then every
            // document but the root at once.
            let others = (self.model.sizes.finish_writes as usize).saturating_sub(1);
            let written = self.s3.request(self.rng, Op::Get, 0.0)
                + self.s3.round(self.rng, Op::Put, others, 0.0);
            slowest = slowest.max(written);
        }
        t += slowest + secs(2.0 * self.s3.transfer(bytes));
        // Decoding and re-encoding: at the 10x worker rate per core, which also
        // filters and remaps, so an upper bound.
        let rate = self.model.calibration.tenx.bytes_per_s * self.lambda.vcpus(Func::Reducer);
        t += secs(bytes / rate);
        t += self.s3.request(self.rng, Op::Put, 0.0);
        tl.writes.push((t, Write::Shard { n }));
        // `commit_if_last`: the shard markers listed; the shard that finds them all
        // commits (`World::land` models that part), then `after_write`.
        t += self.s3.request(self.rng, Op::List, 0.0);
        t += self.ended_check();
        tl.duration = t;
        tl
    }

    /// `finish` and the result: the root group, then `result.json` (shard 0 wrote the
    /// other metadata with its chunks).
    pub fn finish(&mut self) -> Micros {
        self.s3.request(self.rng, Op::Put, 0.0) + self.s3.request(self.rng, Op::Put, 0.0)
    }

    /// `scratch::remove` after success: a LIST per prefix, then deletes 16 at a time.
    pub fn cleanup(&mut self, objects: usize) -> Micros {
        let lists = self.s3.round(self.rng, Op::List, 6, 0.0);
        lists + self.s3.batches(self.rng, Op::Delete, objects, 16, 0.0)
    }
}
