//! What one request costs in invocations and store requests, against the planner's
//! optimum.
//!
//! The request runs on the embedded stack over a [`Counting::logging`] store, which
//! records every request the service makes (retries included). Each is put in a
//! category by its key, and set against:
//! - **invocations**: one collector, one mapper per group, one worker per planned task,
//!   one reducer per consolidation shard and one for a conversion — what the plans say
//!   must run, with no retry and no hedge;
//! - **GETs and bytes read**: every distinct object read once (a re-read of the same
//!   object is waste), and for bundle data also the planner's own estimate of the
//!   bytes its tasks read, which is what its byte budget charges;
//! - **PUTs**: every distinct object written once.
//!
//! LISTs have no such optimum: they are how the collector watches progress, so they
//! are reported per poll.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use cellmatrix::app::App;
use cellmatrix::config::Config;
use cellmatrix::error::Error;
use cellmatrix::invoke::Function;
use cellmatrix::messages::RequestId;
use cellmatrix::state::{Consolidation, Keys, Plan, get_json};
use cellmatrix::store::DynStore;
use cellmatrix::store::counting::{Counting, Logged, Op};

/// Where a key belongs.
fn category(key: &str, request: &str, results: &str) -> &'static str {
    if key.starts_with("bundles/") {
        "bundle data"
    } else if key.starts_with("catalog/") {
        "catalog"
    } else if key.starts_with(results) {
        "output"
    } else if let Some(rest) = key.strip_prefix(request) {
        match rest.split('/').next().unwrap_or_default() {
            "parts" => "parts",
            "matrix.zarr" => "consolidated",
            _ => "coordination",
        }
    } else {
        "other"
    }
}

/// The requests of one category.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Category {
    /// GETs and size lookups.
    pub gets: u64,
    /// Distinct objects read.
    pub distinct_reads: u64,
    /// Bytes returned.
    pub bytes_read: u64,
    /// Bytes of the distinct objects read, each counted once.
    pub distinct_bytes_read: u64,
    /// PUTs.
    pub puts: u64,
    /// Distinct objects written.
    pub distinct_writes: u64,
    /// Bytes sent.
    pub bytes_written: u64,
    /// LISTs.
    pub lists: u64,
    /// DELETEs.
    pub deletes: u64,
}

/// Invocations made and planned, for one function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Invocations {
    /// Made.
    pub made: u64,
    /// What the plans need.
    pub optimum: u64,
}

/// What a request cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Seconds from POST to the end.
    pub seconds: f64,
    /// Output cells.
    pub cells: u64,
    /// Per category of key.
    pub categories: BTreeMap<String, Category>,
    /// Per function (`mapper`, `worker`, `reducer`).
    pub invocations: BTreeMap<String, Invocations>,
    /// The planner's estimate of the bundle bytes its tasks read.
    pub planned_bytes: u64,
    /// The collector's poll interval, ms, to read the LIST count against.
    pub poll_ms: u64,
    /// The key patterns read most often beyond once per object: (pattern, GETs,
    /// distinct objects, bytes read), worst first.
    pub rereads: Vec<(String, u64, u64, u64)>,
}

impl Report {
    fn total(&self) -> Category {
        let mut t = Category::default();
        for c in self.categories.values() {
            t.gets += c.gets;
            t.distinct_reads += c.distinct_reads;
            t.bytes_read += c.bytes_read;
            t.distinct_bytes_read += c.distinct_bytes_read;
            t.puts += c.puts;
            t.distinct_writes += c.distinct_writes;
            t.bytes_written += c.bytes_written;
            t.lists += c.lists;
            t.deletes += c.deletes;
        }
        t
    }
}

/// Sorts the logged requests into categories.
pub fn tally(log: &[Logged], keys: &Keys) -> BTreeMap<String, Category> {
    let request = keys.prefix();
    let results = format!("{}/", keys.results());
    let mut out: BTreeMap<String, Category> = BTreeMap::new();
    // Per distinct object: the largest body seen (a ranged GET returns less).
    let mut read: HashMap<&str, u64> = HashMap::new();
    let mut written: HashSet<&str> = HashSet::new();
    for r in log {
        let c = out
            .entry(category(&r.key, &request, &results).to_string())
            .or_default();
        match r.op {
            Op::Get => {
                c.gets += 1;
                c.bytes_read += r.bytes;
                let seen = read.entry(&r.key).or_insert(0);
                *seen = (*seen).max(r.bytes);
            }
            Op::Put => {
                c.puts += 1;
                c.bytes_written += r.bytes;
                written.insert(&r.key);
            }
            Op::List => c.lists += 1,
            Op::Delete => c.deletes += 1,
        }
    }
    for (key, bytes) in read {
        let c = out
            .get_mut(category(key, &request, &results))
            .expect("a category of a logged key");
        c.distinct_reads += 1;
        c.distinct_bytes_read += bytes;
    }
    for key in written {
        out.get_mut(category(key, &request, &results))
            .expect("a category of a logged key")
            .distinct_writes += 1;
    }
    out
}

/// `key` with its ids replaced by `*`: the bundle, the request, and the task or
/// invocation name under a request's directories.
fn pattern(key: &str) -> String {
    let mut out = Vec::new();
    let mut star_next = false;
    for (i, seg) in key.split('/').enumerate() {
        if star_next {
            out.push("*");
            star_next = false;
            continue;
        }
        out.push(seg);
        star_next = i == 0 && matches!(seg, "bundles" | "requests" | "results")
            || matches!(
                seg,
                "parts" | "tasks" | "done" | "started" | "errors" | "plans"
            );
    }
    out.join("/")
}

/// The key patterns read more often than once per object, worst first.
pub fn rereads(log: &[Logged], top: usize) -> Vec<(String, u64, u64, u64)> {
    let mut per: HashMap<String, (u64, HashSet<&str>, u64)> = HashMap::new();
    for r in log.iter().filter(|r| r.op == Op::Get) {
        let e = per.entry(pattern(&r.key)).or_default();
        e.0 += 1;
        e.1.insert(&r.key);
        e.2 += r.bytes;
    }
    let mut v: Vec<(String, u64, u64, u64)> = per
        .into_iter()
        .map(|(p, (gets, keys, bytes))| (p, gets, keys.len() as u64, bytes))
        .filter(|(_, gets, distinct, _)| gets > distinct)
        .collect();
    v.sort_by(|a, b| (b.1 - b.2).cmp(&(a.1 - a.2)).then(a.0.cmp(&b.0)));
    v.truncate(top);
    v
}

/// Runs `request` on the embedded stack over `store` with `config` (its scratch data is
/// kept, to read the plans from) and reports what it cost.
pub async fn measure(
    store: DynStore,
    mut config: Config,
    request: &Value,
) -> Result<Report, Error> {
    config.keep_scratch = true;
    let poll = config.poll_interval;
    let counting = Arc::new(Counting::logging(store.clone()));
    let app = App::in_process(config, counting.clone(), cellmatrix::app::default_limit);
    let ended = super::run::run_to_end(&app, request, poll, false).await?;
    app.idle().await;
    if !ended.succeeded() {
        return Err(Error::Internal(format!(
            "request {} ended {}: {}",
            ended.id, ended.status["status"], ended.status["message"]
        )));
    }
    let log = counting.take_log();
    let keys = Keys::new(
        &RequestId::parse(&ended.id).map_err(|e| Error::Internal(format!("request id: {e}")))?,
    );
    let mut plans = Vec::new();
    for object in store.list(&keys.plans()).await? {
        plans.extend(get_json::<Plan>(&store, &object.key).await?);
    }
    let consolidation: Consolidation = get_json(&store, &keys.consolidate())
        .await?
        .ok_or_else(|| Error::Internal("no consolidation plan".into()))?;
    let converts = u64::from(request["format"].as_str().is_some_and(|f| f != "zarr"));
    let tasks: u64 = plans.iter().map(|p| p.tasks.len() as u64).sum();
    let made = app.invoker.counts();
    let made = |f: Function| made.get(&f).copied().unwrap_or(0);
    let invocations = BTreeMap::from([
        (
            "mapper".to_string(),
            Invocations {
                made: made(Function::Mapper),
                // The driver plans the first `driver_groups` groups itself.
                optimum: plans.len().saturating_sub(app.config.driver_groups) as u64,
            },
        ),
        (
            "worker".to_string(),
            Invocations {
                made: made(Function::Worker),
                optimum: tasks,
            },
        ),
        (
            "reducer".to_string(),
            Invocations {
                made: made(Function::Reducer),
                // The collector, the shards and a conversion.
                optimum: 1 + u64::from(consolidation.shards) + converts,
            },
        ),
    ]);
    Ok(Report {
        seconds: ended.seconds,
        cells: ended.status["result"]["n_cells"].as_u64().unwrap_or(0),
        categories: tally(&log, &keys),
        invocations,
        planned_bytes: plans.iter().flat_map(|p| &p.tasks).map(|t| t.bytes).sum(),
        poll_ms: poll.as_millis() as u64,
        rereads: rereads(&log, 8),
    })
}

fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.2}x", a as f64 / b as f64)
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<13} {:>7} {:>8} {:>7} {:>10} {:>7} {:>7} {:>8} {:>7} {:>10} {:>6} {:>7}",
            "category",
            "GET",
            "distinct",
            "ratio",
            "MB read",
            "ratio",
            "PUT",
            "distinct",
            "ratio",
            "MB written",
            "LIST",
            "DELETE"
        )?;
        let mut rows: Vec<(&str, Category)> = self
            .categories
            .iter()
            .map(|(k, c)| (k.as_str(), c.clone()))
            .collect();
        rows.push(("total", self.total()));
        for (name, c) in rows {
            writeln!(
                f,
                "{:<13} {:>7} {:>8} {:>7} {:>10.2} {:>7} {:>7} {:>8} {:>7} {:>10.2} {:>6} {:>7}",
                name,
                c.gets,
                c.distinct_reads,
                ratio(c.gets, c.distinct_reads),
                mb(c.bytes_read),
                ratio(c.bytes_read, c.distinct_bytes_read),
                c.puts,
                c.distinct_writes,
                ratio(c.puts, c.distinct_writes),
                mb(c.bytes_written),
                c.lists,
                c.deletes
            )?;
        }
        let bundle = self
            .categories
            .get("bundle data")
            .cloned()
            .unwrap_or_default();
        writeln!(
            f,
            "bundle bytes read {:.2} MB, planner's estimate {:.2} MB ({} of it; the estimate is of decoded bytes)",
            mb(bundle.bytes_read),
            mb(self.planned_bytes),
            ratio(bundle.bytes_read, self.planned_bytes)
        )?;
        let total = self.total();
        let polls = (self.seconds * 1000.0 / self.poll_ms.max(1) as f64).max(1.0);
        writeln!(
            f,
            "LISTs {} over {:.2} s at a {} ms poll: {:.1} per poll",
            total.lists,
            self.seconds,
            self.poll_ms,
            total.lists as f64 / polls
        )?;
        for (pattern, gets, distinct, bytes) in &self.rereads {
            writeln!(
                f,
                "re-read {pattern}: {gets} GETs of {distinct} objects, {:.2} MB",
                mb(*bytes)
            )?;
        }
        for (name, i) in &self.invocations {
            writeln!(
                f,
                "invocations {name:<8} {:>5} made, {:>5} planned ({})",
                i.made,
                i.optimum,
                ratio(i.made, i.optimum)
            )?;
        }
        let per_cell = |n: u64| n as f64 / self.cells.max(1) as f64;
        write!(
            f,
            "per request: {} GET, {} PUT, {} LIST, {:.1} MB read for {} cells ({:.3} GET/cell, {:.0} B read/cell)",
            total.gets,
            total.puts,
            total.lists,
            mb(total.bytes_read),
            self.cells,
            per_cell(total.gets),
            per_cell(total.bytes_read)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(op: Op, key: &str, bytes: u64) -> Logged {
        Logged {
            op,
            key: key.into(),
            bytes,
        }
    }

    #[test]
    fn tally_counts_repeats_against_distinct_objects() {
        let id = RequestId::parse("0123456789abcdef01234567").unwrap();
        let keys = Keys::new(&id);
        let p = keys.prefix();
        let log = vec![
            logged(Op::Get, "bundles/a/matrix.zarr/X/data/c/0", 100),
            logged(Op::Get, "bundles/a/matrix.zarr/X/data/c/0", 100),
            logged(Op::Get, "bundles/a/matrix.zarr/X/data/zarr.json", 10),
            logged(Op::Put, &format!("{p}parts/t1/X/data/c/0"), 50),
            logged(Op::Get, &format!("{p}parts/t1/X/data/c/0"), 50),
            logged(Op::List, &format!("{p}done/"), 0),
            logged(Op::Put, &format!("{p}done/t1.json"), 5),
            logged(Op::Put, &format!("{p}done/t1.json"), 5),
            logged(Op::Put, &format!("results/{id}/matrix.zarr/zarr.json"), 7),
            logged(Op::Delete, &format!("{p}parts/t1/X/data/c/0"), 0),
        ];
        let t = tally(&log, &keys);
        let bundle = &t["bundle data"];
        assert_eq!((bundle.gets, bundle.distinct_reads), (3, 2));
        assert_eq!((bundle.bytes_read, bundle.distinct_bytes_read), (210, 110));
        let parts = &t["parts"];
        assert_eq!((parts.puts, parts.gets, parts.deletes), (1, 1, 1));
        let coordination = &t["coordination"];
        assert_eq!(
            (
                coordination.puts,
                coordination.distinct_writes,
                coordination.lists
            ),
            (2, 1, 1)
        );
        assert_eq!(t["output"].bytes_written, 7);
        assert!(!t.contains_key("other"));
        let worst = rereads(&log, 8);
        assert_eq!(
            worst,
            vec![("bundles/*/matrix.zarr/X/data/c/0".to_string(), 2, 1, 200)]
        );
        assert_eq!(pattern(&format!("{p}done/t1.json")), "requests/*/done/*");
    }
}
