//! Simulated Lambda functions: a warm pool per function, cold starts, the account's
//! concurrency with the worker's reservation, the scaling rate, and the billing.

use cellmatrix::cost::{self, Deployment, Usage};
use rand_xoshiro::Xoshiro256PlusPlus as Rng64;

use super::engine::{Micros, secs};
use super::model::LambdaModel;
use super::s3::sample;

/// The four functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Func {
    /// The HTTP API's handler.
    Driver = 0,
    /// Plans a group of bundles.
    Mapper = 1,
    /// Runs a task.
    Worker = 2,
    /// Collector, consolidation shards, on-failure records.
    Reducer = 3,
}

impl Func {
    /// Every function, in index order.
    pub const ALL: [Func; 4] = [Func::Driver, Func::Mapper, Func::Worker, Func::Reducer];

    /// The function as it is billed.
    pub fn lambda(self) -> cost::Lambda {
        cost::Lambda::ALL[self as usize]
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Func::Driver => "driver",
            Func::Mapper => "mapper",
            Func::Worker => "worker",
            Func::Reducer => "reducer",
        }
    }
}

/// How an arriving invocation is taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// An idle environment runs it at once.
    Warm,
    /// A new environment, ready after this init time (billed).
    Cold(Micros),
    /// No concurrency or no scaling allowance left: the event goes back to the queue.
    Throttled,
}

/// The functions' environments and what they cost.
#[derive(Debug, Clone)]
pub struct Lambda {
    model: LambdaModel,
    idle: [u32; 4],
    busy: [u32; 4],
    created: [u64; 4],
    /// Invocations run (every delivery that got an environment), per function.
    pub runs: [u64; 4],
    /// Invoke API calls made (billed as requests), per function.
    pub invokes: [u64; 4],
    /// New environments started, per function.
    pub cold_starts: [u64; 4],
    /// What the invocations used, as billed (init of cold starts included: billed on
    /// provided runtimes): through `cellmatrix::cost`, as the run report's bill.
    pub usage: Usage,
    /// Every invocation that ended: its function and billed ms, for a bill rebuilt
    /// through the run report's `cellmatrix::report::usage`.
    pub billed: Vec<(cost::Lambda, f64)>,
    deployment: Deployment,
    /// When each new environment was started, per function (for tests of scaling).
    pub started_at: Vec<(Func, Micros)>,
}

impl Lambda {
    /// Functions with `model.warm_at_start` environments idle.
    pub fn new(model: &LambdaModel) -> Self {
        Lambda {
            model: model.clone(),
            idle: model.warm_at_start,
            busy: [0; 4],
            created: [0; 4],
            runs: [0; 4],
            invokes: [0; 4],
            cold_starts: [0; 4],
            usage: Usage::default(),
            billed: Vec::new(),
            deployment: Deployment {
                memory_mb: model.memory_mb,
                ..Deployment::default()
            },
            started_at: Vec::new(),
        }
    }

    fn has_slot(&self, f: Func) -> bool {
        let busy = |g: Func| u64::from(self.busy[g as usize]);
        let account = u64::from(self.model.account_concurrency);
        match (f, self.model.worker_reserved) {
            (Func::Worker, Some(r)) => busy(Func::Worker) < u64::from(r),
            (_, reserved) => {
                let pool = account.saturating_sub(reserved.map_or(0, u64::from));
                let used: u64 = Func::ALL
                    .iter()
                    .filter(|&&g| !(g == Func::Worker && reserved.is_some()))
                    .map(|&g| busy(g))
                    .sum();
                used < pool
            }
        }
    }

    /// New environments `f` may have started by `now`: `scale_per_window` at once,
    /// and as many more at the start of every window.
    pub fn allowance(&self, now: Micros) -> u64 {
        let window = secs(self.model.scale_window_s).max(1);
        u64::from(self.model.scale_per_window) * (1 + now / window)
    }

    /// Takes an arriving invocation of `f` in, if it can run now.
    pub fn admit(&mut self, rng: &mut Rng64, f: Func, now: Micros) -> Admit {
        let i = f as usize;
        if !self.has_slot(f) {
            return Admit::Throttled;
        }
        if self.idle[i] > 0 {
            self.idle[i] -= 1;
            self.busy[i] += 1;
            self.runs[i] += 1;
            return Admit::Warm;
        }
        if self.created[i] >= self.allowance(now) {
            return Admit::Throttled;
        }
        self.created[i] += 1;
        self.busy[i] += 1;
        self.runs[i] += 1;
        self.cold_starts[i] += 1;
        self.started_at.push((f, now));
        let init = sample(rng, self.model.runtime_init) + sample(rng, self.model.our_init);
        Admit::Cold(secs(init))
    }

    /// An invocation of `f` ended after `billed` (init included): its environment is
    /// idle again, and kept warm for the rest of the run.
    pub fn release(&mut self, f: Func, billed: Micros) {
        let i = f as usize;
        self.busy[i] = self.busy[i].saturating_sub(1);
        self.idle[i] += 1;
        let ms = billed as f64 / 1e3;
        self.usage.invocation(f.lambda(), ms, &self.deployment);
        self.billed.push((f.lambda(), ms));
    }

    /// Environments of `f` running now.
    pub fn busy(&self, f: Func) -> u32 {
        self.busy[f as usize]
    }

    /// The delay from an accepted invoke to the handler being called.
    pub fn delivery(&self, rng: &mut Rng64) -> Micros {
        secs(sample(rng, self.model.delivery))
    }

    /// The caller's Invoke call, until accepted.
    pub fn invoke_call(&mut self, rng: &mut Rng64, f: Func) -> Micros {
        self.invokes[f as usize] += 1;
        secs(sample(rng, self.model.invoke_call))
    }

    /// The wait before the `k`-th retry (from 0) of a throttled event.
    pub fn throttle_wait(&self, k: u32) -> Micros {
        let s = self.model.throttle_first_wait_s * f64::from(1u32 << k.min(20));
        secs(s.min(self.model.throttle_max_wait_s))
    }

    /// The wait before Lambda delivers a failed event again, after its `failed`-th
    /// failed delivery (from 1); `None` once it gives up.
    pub fn retry_wait(&self, failed: u32) -> Option<Micros> {
        if failed > self.model.async_retries {
            return None;
        }
        let waits = self.model.async_retry_waits_s;
        Some(secs(waits[(failed as usize - 1).min(waits.len() - 1)]))
    }

    /// vCPUs of `f`, from its memory.
    pub fn vcpus(&self, f: Func) -> f64 {
        f64::from(self.model.memory_mb[f as usize]) / self.model.mb_per_vcpu
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::simulate::engine::SEC;

    #[test]
    fn the_scaling_rate_bounds_new_environments_per_window() {
        let model = LambdaModel {
            account_concurrency: u32::MAX,
            worker_reserved: None,
            ..LambdaModel::default()
        };
        let mut l = Lambda::new(&model);
        let mut rng = Rng64::seed_from_u64(1);
        let admitted = (0..5_000)
            .filter(|_| l.admit(&mut rng, Func::Worker, 0) != Admit::Throttled)
            .count();
        assert_eq!(admitted, 1_000);
        assert_eq!(l.admit(&mut rng, Func::Worker, 9 * SEC), Admit::Throttled);
        assert!(matches!(
            l.admit(&mut rng, Func::Worker, 10 * SEC),
            Admit::Cold(_)
        ));
        // Per function: the mapper has its own allowance.
        assert!(matches!(l.admit(&mut rng, Func::Mapper, 0), Admit::Cold(_)));
        l.release(Func::Worker, SEC);
        assert_eq!(l.admit(&mut rng, Func::Worker, 11 * SEC), Admit::Warm);
    }

    #[test]
    fn reserved_concurrency_caps_the_worker_and_leaves_the_rest_to_others() {
        let model = LambdaModel {
            account_concurrency: 10,
            worker_reserved: Some(4),
            ..LambdaModel::default()
        };
        let mut l = Lambda::new(&model);
        let mut rng = Rng64::seed_from_u64(1);
        let workers = (0..10)
            .filter(|_| l.admit(&mut rng, Func::Worker, 0) != Admit::Throttled)
            .count();
        let reducers = (0..10)
            .filter(|_| l.admit(&mut rng, Func::Reducer, 0) != Admit::Throttled)
            .count();
        assert_eq!((workers, reducers), (4, 6));
    }
}
