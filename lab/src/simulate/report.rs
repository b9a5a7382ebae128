//! Figures over many runs: completion-time percentiles, mean cost and counts, and the
//! table `cellmatrix simulate` prints.

use std::fmt::Write as _;

use super::run::Outcome;

/// Many runs of one case under one setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The case.
    pub case: String,
    /// Whether the collector hedged.
    pub hedge: bool,
    /// Whether faults were injected.
    pub faults: bool,
    /// Runs.
    pub runs: usize,
    /// Runs whose request failed.
    pub failed: usize,
    /// Median completion time (POST → the client sees the result), seconds.
    pub p50: f64,
    /// 99th percentile, seconds.
    pub p99: f64,
    /// Slowest run, seconds.
    pub max: f64,
    /// Mean dollars per request.
    pub mean_cost: f64,
    /// Mean invocations per request (status polls excluded).
    pub mean_invocations: f64,
    /// Mean status polls per request.
    pub mean_polls: f64,
    /// Mean S3 GET, PUT and LIST requests per request.
    pub mean_requests: [f64; 3],
    /// Mean hedged copies per request.
    pub mean_hedges: f64,
    /// Mean launches taken for lost per request.
    pub mean_relaunched: f64,
    /// Mean started invocations taken for dead for going silent per request.
    pub mean_silent: f64,
    /// Mean heartbeats written per request (PUTs, counted in `mean_requests` too).
    pub mean_beats: f64,
    /// The most new execution environments any run started within one second.
    pub peak_new_envs_per_s: u64,
    /// Median time at which every group was planned, and every task done, seconds.
    pub p50_planned: f64,
    /// Median time at which every task was done, seconds.
    pub p50_collected: f64,
    /// Median time at which `result.json` was written, seconds.
    pub p50_result: f64,
}

/// The `q` quantile (0..=1) of `sorted`, by nearest rank; 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises the runs of one case and setting.
pub fn summarize(case: &str, hedge: bool, faults: bool, outcomes: &[Outcome]) -> Summary {
    let n = outcomes.len().max(1) as f64;
    let mut times: Vec<f64> = outcomes.iter().map(|o| o.seconds).collect();
    times.sort_by(f64::total_cmp);
    let mean = |f: &dyn Fn(&Outcome) -> f64| outcomes.iter().map(f).sum::<f64>() / n;
    Summary {
        case: case.to_string(),
        hedge,
        faults,
        runs: outcomes.len(),
        failed: outcomes.iter().filter(|o| !o.succeeded).count(),
        p50: percentile(&times, 0.50),
        p99: percentile(&times, 0.99),
        max: times.last().copied().unwrap_or(0.0),
        mean_cost: mean(&|o| o.cost),
        mean_invocations: mean(&|o| o.invocations as f64),
        mean_polls: mean(&|o| o.status_polls as f64),
        mean_requests: [
            mean(&|o| o.requests.get as f64),
            mean(&|o| o.requests.put as f64),
            mean(&|o| o.requests.list as f64),
        ],
        mean_hedges: mean(&|o| f64::from(o.hedges)),
        mean_relaunched: mean(&|o| f64::from(o.relaunched)),
        mean_silent: mean(&|o| f64::from(o.silent)),
        mean_beats: mean(&|o| o.beats as f64),
        peak_new_envs_per_s: outcomes
            .iter()
            .map(|o| o.peak_new_envs_per_s)
            .max()
            .unwrap_or(0),
        p50_planned: median_of(outcomes, |o| o.planned_s),
        p50_collected: median_of(outcomes, |o| o.collected_s),
        p50_result: median_of(outcomes, |o| o.result_s),
    }
}

fn median_of(outcomes: &[Outcome], f: impl Fn(&Outcome) -> Option<f64>) -> f64 {
    let mut v: Vec<f64> = outcomes.iter().filter_map(f).collect();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// Where the median run spends its time: planned, collected, result, seen.
pub fn phases(summaries: &[Summary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<6} {:<6} {:>12} {:>14} {:>10} {:>10}",
        "case", "faults", "hedge", "planned p50", "collected p50", "result p50", "seen p50"
    );
    for s in summaries {
        let _ = writeln!(
            out,
            "{:<10} {:<6} {:<6} {:>12.2} {:>14.2} {:>10.2} {:>10.2}",
            s.case,
            if s.faults { "on" } else { "off" },
            if s.hedge { "on" } else { "off" },
            s.p50_planned,
            s.p50_collected,
            s.p50_result,
            s.p50
        );
    }
    out
}

/// The table of `summaries`, one line each.
pub fn table(summaries: &[Summary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<6} {:<6} {:>5} {:>8} {:>8} {:>8} {:>10} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9} {:>7} {:>7} {:>7}",
        "case",
        "faults",
        "hedge",
        "runs",
        "p50 s",
        "p99 s",
        "max s",
        "cost $",
        "invocs",
        "hedges",
        "lost",
        "silent",
        "S3 GET",
        "S3 PUT",
        "beats",
        "envs/s",
        "failed"
    );
    for s in summaries {
        let _ = writeln!(
            out,
            "{:<10} {:<6} {:<6} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>10.5} {:>8.1} {:>7.2} {:>7.2} {:>7.2} {:>9.0} {:>9.0} {:>7.0} {:>7} {:>7}",
            s.case,
            if s.faults { "on" } else { "off" },
            if s.hedge { "on" } else { "off" },
            s.runs,
            s.p50,
            s.p99,
            s.max,
            s.mean_cost,
            s.mean_invocations,
            s.mean_hedges,
            s.mean_relaunched,
            s.mean_silent,
            s.mean_requests[0],
            s.mean_requests[1] + s.mean_requests[2],
            s.mean_beats,
            s.peak_new_envs_per_s,
            s.failed
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 100.0);
        assert_eq!(percentile(&v, 0.99), 198.0);
        assert_eq!(percentile(&v, 1.0), 200.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
