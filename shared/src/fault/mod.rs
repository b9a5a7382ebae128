//! Fault injection, off unless configured (`CELLMATRIX_FAULTS`): the faults Lambda and S3
//! produce, on purpose, so that tests and benchmarks show they change nothing.
//!
//! - [`crate::invoke::FaultyInvoker`] (the caller's side): an invocation dropped,
//!   duplicated or delayed.
//! - [`crate::invoke::InProcess`] (Lambda's side, where handlers run): a handler crashing
//!   before or after its side effects, retried like Lambda retries an async event, and a
//!   straggler running [`FaultPlan::slowdown`] times slower.
//! - [`FaultyStore`]: transient 503 SlowDown errors, timeouts, and a worker's part write
//!   followed by a crash of its invocation.
//!
//! Decisions come from a seeded generator, so a seed gives the same mix of faults (their
//! order still depends on scheduling). Written here rather than with the `fail` crate:
//! its fail points are process-global and unseeded, and the faults needed are per
//! invocation, with a crash that must end one in-process invocation, not the process.

mod kill;
mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub use kill::{KILL_AT_VAR, KillPoint, kill_point};
pub use store::FaultyStore;

use crate::error::{Error, Result};

/// Which faults to inject, and how often (each a probability per invocation or request).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// Seed of the decisions.
    pub seed: u64,
    /// A handler crashes (half of them before any side effect, half after all of them).
    pub crash: f64,
    /// An invocation is delivered twice.
    pub duplicate: f64,
    /// An invocation is accepted and never delivered.
    pub drop: f64,
    /// An invocation is delivered after up to `delay_ms`.
    pub delay: f64,
    /// The longest injected delivery delay.
    pub delay_ms: u64,
    /// A store request fails with a transient 503 SlowDown.
    pub store_error: f64,
    /// A store request times out (after `timeout_ms`) without being applied.
    pub store_timeout: f64,
    /// How long an injected timeout takes.
    pub timeout_ms: u64,
    /// A worker's part write lands, and then its invocation crashes.
    pub partial_write: f64,
    /// A worker is a straggler.
    pub straggler: f64,
    /// How much slower a straggler is.
    pub slowdown: u32,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            seed: 0,
            crash: 0.0,
            duplicate: 0.0,
            drop: 0.0,
            delay: 0.0,
            delay_ms: 200,
            store_error: 0.0,
            store_timeout: 0.0,
            timeout_ms: 100,
            partial_write: 0.0,
            straggler: 0.0,
            slowdown: 10,
        }
    }
}

impl FaultPlan {
    /// Parses `key=value,...` (`CELLMATRIX_FAULTS`), e.g.
    /// `seed=7,crash=0.1,duplicate=0.2,drop=0.05,store_error=0.05,straggler=0.05`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut plan = FaultPlan::default();
        let bad = |m: String| Error::input("environment variable CELLMATRIX_FAULTS", m);
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| bad(format!("{item:?} is not key=value")))?;
            let prob = || -> Result<f64> {
                let p: f64 = value
                    .parse()
                    .map_err(|_| bad(format!("{key}: {value:?} is not a number")))?;
                if (0.0..=1.0).contains(&p) {
                    Ok(p)
                } else {
                    Err(bad(format!("{key}: {p} is not a probability in 0..=1")))
                }
            };
            let int = || -> Result<u64> {
                value
                    .parse()
                    .map_err(|_| bad(format!("{key}: {value:?} is not a whole number")))
            };
            match key {
                "seed" => plan.seed = int()?,
                "crash" => plan.crash = prob()?,
                "duplicate" => plan.duplicate = prob()?,
                "drop" => plan.drop = prob()?,
                "delay" => plan.delay = prob()?,
                "delay_ms" => plan.delay_ms = int()?,
                "store_error" => plan.store_error = prob()?,
                "store_timeout" => plan.store_timeout = prob()?,
                "timeout_ms" => plan.timeout_ms = int()?,
                "partial_write" => plan.partial_write = prob()?,
                "straggler" => plan.straggler = prob()?,
                "slowdown" => plan.slowdown = int()?.clamp(1, 1000) as u32,
                _ => return Err(bad(format!("unknown fault {key:?}"))),
            }
        }
        Ok(plan)
    }
}

/// Seeded, thread-safe coin flips: the n-th flip of a stream is a hash of the seed, the
/// stream and n, so concurrent callers share one sequence without a lock.
#[derive(Debug)]
pub struct Dice {
    seed: u64,
    next: AtomicU64,
}

impl Dice {
    /// A sequence for `seed`, distinct per `stream`.
    pub fn new(seed: u64, stream: &str) -> Self {
        let salt = stream.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Dice {
            seed: seed ^ salt,
            next: AtomicU64::new(0),
        }
    }

    /// A number uniform in `[0, 1)`.
    pub fn uniform(&self) -> f64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (splitmix(
            self.seed
                .wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        ) >> 11) as f64
            / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn flip(&self, p: f64) -> bool {
        p > 0.0 && self.uniform() < p
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What the in-process Lambda tells the handler it runs: how to crash it, and how much
/// slower it is than it should be.
#[derive(Debug, Default)]
pub struct Invocation {
    killed: Notify,
    slowdown: u32,
    /// Its store writes under way, which a crash does not stop.
    writes: crate::task_counter::TaskCounter,
}

impl Invocation {
    /// An invocation `slowdown` times slower than normal (1: normal).
    pub fn new(slowdown: u32) -> Arc<Self> {
        Arc::new(Invocation {
            killed: Notify::new(),
            slowdown: slowdown.max(1),
            writes: Default::default(),
        })
    }

    /// Resolves once [`crash`] was called inside this invocation.
    pub async fn killed(&self) {
        self.killed.notified().await
    }

    /// Resolves once no write of this invocation is under way ([`landing`]).
    pub async fn writes_landed(&self) {
        self.writes.idle().await
    }
}

/// Runs `future` in the current invocation, if there is one: for a task a handler
/// spawns, which would otherwise run outside it (not crashed by its faults, nor waited
/// for when it crashes).
pub fn carried<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let invocation = INVOCATION.try_with(Arc::clone).ok();
    async move {
        match invocation {
            Some(invocation) => INVOCATION.scope(invocation, future).await,
            None => future.await,
        }
    }
}

/// Runs a store write to its end even if its caller stops waiting, counted as under way
/// in the current invocation until then. A crashed handler's future is dropped, but a
/// write it sent still lands (S3 completes a PUT it holds; the file store's blocking
/// write runs on): the in-process Lambda waits for these before it retries the event,
/// as Lambda's minute-long pause always does.
pub(crate) async fn landing<T: Send + 'static>(
    write: impl Future<Output = T> + Send + 'static,
) -> T {
    let Ok(guard) = INVOCATION.try_with(|i| i.writes.enter()) else {
        return write.await;
    };
    let task = tokio::spawn(async move {
        let _guard = guard;
        write.await
    });
    match task.await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a store write's task was cancelled: {e}"),
    }
}

tokio::task_local! {
    /// The invocation the current task runs in, when the in-process invoker injects faults.
    pub static INVOCATION: Arc<Invocation>;
}

/// Ends the current invocation as a crash would: no error is returned and nothing more
/// is written. In-process, the invoker drops the handler's future; outside an injected
/// invocation there is nothing to kill, so the caller gets a transient error instead.
pub async fn crash(what: &str) -> Error {
    match INVOCATION.try_with(Arc::clone) {
        Ok(invocation) => {
            tracing::warn!(what, "crashing the invocation (injected)");
            invocation.killed.notify_one();
            std::future::pending::<()>().await;
            unreachable!("a pending future never resolves")
        }
        Err(_) => Error::Store(crate::store::StoreError::Transient {
            op: "crash",
            key: what.to_string(),
            message: "crashed (injected)".into(),
        }),
    }
}

/// Makes a straggler as slow as it was told to be: called where work is committed, it
/// sleeps `slowdown − 1` times the time since `started`. Free when no fault is injected.
pub async fn straggle(started: Instant) {
    let slowdown = INVOCATION.try_with(|i| i.slowdown).unwrap_or(1);
    if slowdown > 1 {
        let extra = started.elapsed() * (slowdown - 1);
        tracing::info!(ms = extra.as_millis() as u64, "straggling (injected)");
        tokio::time::sleep(extra.min(Duration::from_secs(600))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_and_refuse_unknown_or_bad_values() {
        let plan = FaultPlan::parse("seed=7, crash=0.1,duplicate=0.2,slowdown=10").unwrap();
        assert_eq!(plan.seed, 7);
        assert_eq!(plan.crash, 0.1);
        assert_eq!(plan.duplicate, 0.2);
        assert_eq!(plan.drop, 0.0);
        for bad in ["crash=2", "crash", "explode=0.1", "seed=x"] {
            let err = FaultPlan::parse(bad).unwrap_err().to_string();
            assert!(err.contains("CELLMATRIX_FAULTS"), "{bad}: {err}");
        }
    }

    #[test]
    fn dice_are_seeded_and_roughly_fair() {
        let a = Dice::new(1, "x");
        let b = Dice::new(1, "x");
        let c = Dice::new(1, "y");
        let va: Vec<f64> = (0..100).map(|_| a.uniform()).collect();
        let vb: Vec<f64> = (0..100).map(|_| b.uniform()).collect();
        let vc: Vec<f64> = (0..100).map(|_| c.uniform()).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
        let d = Dice::new(3, "z");
        let hits = (0..10_000).filter(|_| d.flip(0.1)).count();
        assert!((800..1200).contains(&hits), "{hits}");
        assert!(!d.flip(0.0));
    }

    #[tokio::test]
    async fn a_crash_outside_an_invocation_is_a_transient_error() {
        assert!(crash("k").await.is_retryable());
    }

    #[tokio::test]
    async fn a_crash_inside_an_invocation_never_returns() {
        let invocation = Invocation::new(1);
        let work = INVOCATION.scope(invocation.clone(), async {
            let _ = crash("k").await;
            "returned"
        });
        tokio::select! {
            _ = work => panic!("the crash returned"),
            _ = invocation.killed() => {}
        }
    }
}
