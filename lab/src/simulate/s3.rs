//! S3 requests as one invocation makes them: heavy-tailed latency, 503 SlowDown
//! retried by the SDK and then by the service's `Retrying` wrapper, bytes moved at the
//! invocation's throughput, and a count of billed requests.

use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus as Rng64;

use super::engine::{Micros, secs};
use super::model::{LogNormal, S3Model};

/// Draws from a log-normal given by its median; the median itself when sigma is 0.
pub fn sample(rng: &mut Rng64, d: LogNormal) -> f64 {
    if d.sigma <= 0.0 {
        return d.median_s;
    }
    let z: f64 = rand_distr::Distribution::sample(&rand_distr::StandardNormal, rng);
    d.median_s * (d.sigma * z).exp()
}

/// Billed S3 requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// GET and HEAD.
    pub get: u64,
    /// PUT (and the parts of multipart uploads).
    pub put: u64,
    /// LIST pages.
    pub list: u64,
}

impl Requests {
    /// As `cellmatrix::cost` prices them (the simulation makes no DELETE).
    pub fn billed(self) -> cellmatrix::cost::Requests {
        cellmatrix::cost::Requests {
            get: self.get,
            put: self.put,
            list: self.list,
            delete: 0,
        }
    }
}

impl std::ops::AddAssign for Requests {
    fn add_assign(&mut self, o: Self) {
        self.get += o.get;
        self.put += o.put;
        self.list += o.list;
    }
}

/// The kind of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// GET or HEAD.
    Get,
    /// PUT.
    Put,
    /// LIST.
    List,
    /// DELETE (free).
    Delete,
}

/// One invocation's S3 client.
pub struct S3<'a> {
    model: &'a S3Model,
    store_error: f64,
    /// Requests made so far (every try is billed).
    pub requests: Requests,
}

impl std::fmt::Debug for S3<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3")
            .field("requests", &self.requests)
            .finish()
    }
}

impl<'a> S3<'a> {
    /// A client of `model` whose requests fail with a 503 with probability `store_error`.
    pub fn new(model: &'a S3Model, store_error: f64) -> Self {
        S3 {
            model,
            store_error,
            requests: Requests::default(),
        }
    }

    fn count(&mut self, op: Op) {
        match op {
            Op::Get => self.requests.get += 1,
            Op::Put => self.requests.put += 1,
            Op::List => self.requests.list += 1,
            Op::Delete => {}
        }
    }

    fn latency(&self, rng: &mut Rng64, op: Op) -> f64 {
        let d = match op {
            Op::Get => self.model.get,
            Op::Put | Op::Delete => self.model.put,
            Op::List => self.model.list,
        };
        sample(rng, d)
    }

    /// Seconds one request takes, its 503s and their backoffs included, not counting
    /// its bytes.
    fn one(&mut self, rng: &mut Rng64, op: Op) -> f64 {
        let mut t = 0.0;
        let sdk = self.model.sdk_attempts.max(1);
        let total = sdk * self.model.store_attempts.max(1);
        for tried in 1..=total {
            self.count(op);
            let mut latency = self.latency(rng, op);
            if let Some(after) = self.model.hedge_after_s.filter(|_| op == Op::Get)
                && latency > after
            {
                // Sent once more (`store::s3::hedged`): the first answer counts.
                self.count(op);
                latency = latency.min(after + self.latency(rng, op));
            }
            t += latency;
            if !(self.store_error > 0.0 && rng.random::<f64>() < self.store_error) || tried == total
            {
                return t;
            }
            // Full jitter: the SDK's backoff between its own tries, `Retrying`'s after
            // the SDK gave up.
            let cap = if tried % sdk != 0 {
                let k = (tried % sdk) - 1;
                (self.model.sdk_backoff_s * f64::from(1u32 << k.min(16)))
                    .min(self.model.sdk_max_backoff_s)
            } else {
                let k = tried / sdk - 1;
                (self.model.store_backoff_s * f64::from(1u32 << k.min(16))).min(2.0)
            };
            t += rng.random::<f64>() * cap;
        }
        t
    }

    /// `n` requests at once, moving `bytes` in all: the slowest request, then the
    /// bytes at the invocation's throughput.
    pub fn round(&mut self, rng: &mut Rng64, op: Op, n: usize, bytes: f64) -> Micros {
        let slowest = (0..n).map(|_| self.one(rng, op)).fold(0.0, f64::max);
        secs(slowest + self.transfer(bytes))
    }

    /// `n` requests, `at_once` at a time, each batch a round; `bytes` spread over them.
    pub fn batches(
        &mut self,
        rng: &mut Rng64,
        op: Op,
        n: usize,
        at_once: usize,
        bytes: f64,
    ) -> Micros {
        let at_once = at_once.max(1);
        let rounds = n.div_ceil(at_once);
        (0..rounds)
            .map(|r| {
                let k = at_once.min(n - r * at_once);
                self.round(rng, op, k, bytes * k as f64 / n.max(1) as f64)
            })
            .sum()
    }

    /// One request.
    pub fn request(&mut self, rng: &mut Rng64, op: Op, bytes: f64) -> Micros {
        self.round(rng, op, 1, bytes)
    }

    /// Seconds `bytes` take at the invocation's throughput.
    pub fn transfer(&self, bytes: f64) -> f64 {
        bytes.max(0.0) / self.model.bytes_per_s
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_round_is_its_slowest_request_and_every_try_is_billed() {
        let model = S3Model {
            get: LogNormal::new(0.010, 0.0),
            bytes_per_s: 1e6,
            ..S3Model::default()
        };
        let mut rng = Rng64::seed_from_u64(1);
        let mut s3 = S3::new(&model, 0.0);
        // 10 ms latency + 0.5 MB at 1 MB/s.
        assert_eq!(s3.round(&mut rng, Op::Get, 7, 500_000.0), 510_000);
        assert_eq!(s3.requests.get, 7);
        let mut failing = S3::new(&model, 1.0);
        failing.request(&mut rng, Op::Put, 0.0);
        assert_eq!(failing.requests.put, 12, "3 SDK tries × 4 store attempts");
    }
}
