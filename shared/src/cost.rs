//! What a run costs on AWS, by one formula: the run report's bill, the dry run's
//! estimate and the simulation's cost all add their invocations and store requests to a
//! [`Usage`] and price it with [`Usage::bill`].

use serde::{Deserialize, Serialize};

/// Prices, us-east-1, as listed on aws.amazon.com/lambda/pricing and
/// aws.amazon.com/s3/pricing in 2025 (unchanged since arm64 Lambda launched in 2021).
/// Free tiers are ignored: a bill is what the run would add past them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prices {
    /// Lambda on arm64, per GB-second (first 7.5 billion GB-s a month): $0.0000133334.
    pub gb_second: f64,
    /// Lambda, per request (invocation): $0.20 per million.
    pub invocation: f64,
    /// S3 Standard GET (and HEAD), per request: $0.0004 per 1,000.
    pub get: f64,
    /// S3 Standard PUT, COPY, POST, LIST, per request: $0.005 per 1,000. DELETE is free.
    pub put_list: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            gb_second: 0.000_013_333_4,
            invocation: 0.20e-6,
            get: 0.0004e-3,
            put_list: 0.005e-3,
        }
    }
}

/// A function, as it is deployed and billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lambda {
    /// The HTTP API.
    Driver,
    /// Plans a group.
    Mapper,
    /// Runs a task.
    Worker,
    /// Collector, consolidation shards, conversion, failure records.
    Reducer,
}

impl Lambda {
    /// Every function, in the order of [`Deployment::memory_mb`].
    pub const ALL: [Lambda; 4] = [
        Lambda::Driver,
        Lambda::Mapper,
        Lambda::Worker,
        Lambda::Reducer,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Lambda::Driver => "driver",
            Lambda::Mapper => "mapper",
            Lambda::Worker => "worker",
            Lambda::Reducer => "reducer",
        }
    }
}

/// How the functions are deployed: `template.yaml`'s defaults (its parameters
/// `DriverMemory`, `MapperMemory`, `WorkerMemory`, `ReducerMemory` and its
/// `Architectures`; a test in the lab checks that they agree).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Memory per function, MB, in [`Lambda::ALL`]'s order.
    pub memory_mb: [u32; 4],
    /// The architecture the prices are for.
    pub architecture: String,
}

impl Default for Deployment {
    fn default() -> Self {
        Deployment {
            memory_mb: [512, 512, 2048, 3008],
            architecture: "arm64".to_string(),
        }
    }
}

impl Deployment {
    /// The memory of `f`, MB.
    pub fn memory(&self, f: Lambda) -> u32 {
        self.memory_mb[f as usize]
    }
}

/// Store requests, by how S3 prices them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    /// GET, ranged GET and HEAD.
    pub get: u64,
    /// PUT (every part of a multipart upload, and its start and completion).
    pub put: u64,
    /// LIST (each page).
    pub list: u64,
    /// DELETE (free).
    pub delete: u64,
}

impl Requests {
    /// Both added.
    pub fn add(&mut self, other: &Requests) {
        self.get += other.get;
        self.put += other.put;
        self.list += other.list;
        self.delete += other.delete;
    }
}

/// What a run used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Billed GB-seconds, per function in [`Lambda::ALL`]'s order.
    pub gb_seconds: [f64; 4],
    /// Invocations, per function in [`Lambda::ALL`]'s order.
    pub invocations: [u64; 4],
    /// Store requests.
    pub requests: Requests,
}

impl Usage {
    /// One invocation of `f` that ran `ms` milliseconds (init included: billed on
    /// provided runtimes). Lambda bills whole milliseconds, rounded up.
    pub fn invocation(&mut self, f: Lambda, ms: f64, deployment: &Deployment) {
        let billed_s = ms.max(0.0).ceil() / 1e3;
        self.gb_seconds[f as usize] += billed_s * f64::from(deployment.memory(f)) / 1024.0;
        self.invocations[f as usize] += 1;
    }

    /// Billed GB-seconds of every function.
    pub fn total_gb_seconds(&self) -> f64 {
        self.gb_seconds.iter().sum()
    }

    /// Invocations of every function.
    pub fn total_invocations(&self) -> u64 {
        self.invocations.iter().sum()
    }

    /// The bill at `prices`.
    pub fn bill(&self, prices: &Prices) -> Bill {
        let compute = self.total_gb_seconds() * prices.gb_second;
        let invocations = self.total_invocations() as f64 * prices.invocation;
        let gets = self.requests.get as f64 * prices.get;
        let puts = (self.requests.put + self.requests.list) as f64 * prices.put_list;
        Bill {
            compute_usd: compute,
            invocations_usd: invocations,
            s3_usd: gets + puts,
            total_usd: compute + invocations + gets + puts,
        }
    }
}

/// A [`Usage`] priced.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bill {
    /// Lambda GB-seconds.
    pub compute_usd: f64,
    /// Lambda requests.
    pub invocations_usd: f64,
    /// S3 requests.
    pub s3_usd: f64,
    /// All of it.
    pub total_usd: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bill_adds_compute_requests_and_store_requests_at_their_prices() {
        let d = Deployment::default();
        let mut u = Usage::default();
        // 1,000.2 ms of a 2,048 MB worker: 1,001 ms billed, 2.002 GB-s.
        u.invocation(Lambda::Worker, 1_000.2, &d);
        u.invocation(Lambda::Driver, 10.0, &d);
        u.requests = Requests {
            get: 1_000,
            put: 100,
            list: 100,
            delete: 50,
        };
        assert!((u.gb_seconds[2] - 2.002).abs() < 1e-12);
        assert!((u.gb_seconds[0] - 0.005).abs() < 1e-12);
        let b = u.bill(&Prices::default());
        assert!((b.compute_usd - 2.007 * 0.000_013_333_4).abs() < 1e-15);
        assert!((b.invocations_usd - 0.4e-6).abs() < 1e-15);
        assert!((b.s3_usd - (0.0004 + 0.001)).abs() < 1e-12);
        assert!((b.total_usd - (b.compute_usd + b.invocations_usd + b.s3_usd)).abs() < 1e-15);
    }
}
