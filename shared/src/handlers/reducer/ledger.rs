//! The collector's ledger of invocations: what was launched, what was seen to start,
//! what finished and what failed. Pure logic, no store: from it the collector decides
//! which invocations were lost and which tasks are stragglers worth a second copy.
//!
//! Names are those of the error markers: `group-{n}`, `task-{id}`, `shard-{n}`, `convert`.
//! Times are the collector's clock in ms; a launch is "seen started" when the
//! invocation's start marker (`started/{name}.{attempt}.json`) shows up in a listing.

use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::report::CopyKind;

/// Everything the collector knows about invocations; its checkpoint, so that a fresh
/// collector after a hand-over goes on counting where the last one stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    /// Per invocation name.
    pub entries: BTreeMap<String, Entry>,
    /// Launches so far, numbering them in order.
    pub seq: u64,
    /// The highest launch number seen started.
    pub last_started_seq: u64,
    /// When every group was first seen planned.
    pub planned_at: Option<u64>,
    /// When every task was first seen done.
    pub collected_at: Option<u64>,
    /// Launches seen started.
    #[serde(default)]
    pub starts_seen: u64,
    /// The longest any launch took from being launched to being seen started: what this
    /// run's deliveries, queue and cold starts take, looks included.
    #[serde(default)]
    pub slowest_start_ms: u64,
    /// The longest time seen between two heartbeats of one invocation: how late this
    /// run's beats come, writes and looks included ([`Ledger::silent`]).
    #[serde(default)]
    pub longest_beat_gap_ms: u64,
}

/// How many launches must be seen starting before the slowest of them sets how long a
/// launch may wait while nothing runs ([`Ledger::lost`]); until then it waits
/// `lost_after`.
pub const STARTS_TO_TRUST: u64 = 8;

/// One invocation name's launches.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// Launches not seen started yet: attempt → (launch number, when).
    pub pending: BTreeMap<u32, (u64, u64)>,
    /// The attempt number the next launch gets.
    pub next_attempt: u32,
    /// Launches so far.
    pub launches: u32,
    /// Error markers seen so far.
    pub failures: u32,
    /// When a copy was first seen started.
    pub started_ms: Option<u64>,
    /// Whether a second copy was launched for being slow.
    pub hedged: bool,
    /// Whether it finished (a plan, a done marker, a shard marker, the conversion).
    pub finished: bool,
    /// When a copy was last seen alive: a start marker seen for the first time, or
    /// written again (a heartbeat).
    #[serde(default)]
    pub beat_ms: Option<u64>,
    /// Every launch, by attempt: when, and why (the run report's launch and copy).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub launched: BTreeMap<u32, (u64, CopyKind)>,
}

/// When a task counts as a straggler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HedgePolicy {
    /// The share of tasks done (in percent) from which every unfinished task that has
    /// been going for longer than the median task gets a second copy.
    pub percent: u32,
    /// A started task going for longer than this many medians gets one at any time.
    pub factor: u32,
}

impl Ledger {
    /// Records a launch of `attempt` of `name` at `now`.
    pub fn launched(&mut self, name: &str, attempt: u32, now: u64) {
        self.seq += 1;
        let e = self.entries.entry(name.to_string()).or_default();
        // Why it was launched, from what the ledger knew when it was: `stragglers`
        // marks a task hedged before its copy goes out, an error marker counts a
        // failure before its retry; any other launch after the first is a relaunch of
        // one lost or silent.
        let kinds = |k: CopyKind| e.launched.values().filter(|(_, c)| *c == k).count() as u32;
        let copy = if e.launched.is_empty() && attempt == 0 {
            CopyKind::First
        } else if e.hedged && kinds(CopyKind::Hedge) == 0 {
            CopyKind::Hedge
        } else if e.failures > kinds(CopyKind::Retry) {
            CopyKind::Retry
        } else {
            CopyKind::Relaunch
        };
        e.launched.entry(attempt).or_insert((now, copy));
        e.pending.insert(attempt, (self.seq, now));
        e.launches += 1;
        e.next_attempt = e.next_attempt.max(attempt + 1);
    }

    /// Every launch recorded, for the run report.
    pub fn launches_log(&self) -> Vec<crate::report::Launch> {
        self.entries
            .iter()
            .flat_map(|(name, e)| {
                e.launched
                    .iter()
                    .map(|(&attempt, &(at_ms, copy))| crate::report::Launch {
                        name: name.clone(),
                        attempt,
                        at_ms,
                        copy,
                    })
            })
            .collect()
    }

    /// Whether `name` was ever launched (as the ledger knows).
    pub fn knows(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The attempt number for the next launch of `name`.
    pub fn next_attempt(&self, name: &str) -> u32 {
        self.entries.get(name).map_or(0, |e| e.next_attempt)
    }

    /// Launches of `name` so far.
    pub fn launches(&self, name: &str) -> u32 {
        self.entries.get(name).map_or(0, |e| e.launches)
    }

    /// A start marker of `attempt` of `name` was seen at `now`.
    pub fn started(&mut self, name: &str, attempt: u32, now: u64) {
        let e = self.entries.entry(name.to_string()).or_default();
        e.next_attempt = e.next_attempt.max(attempt + 1);
        e.started_ms.get_or_insert(now);
        e.beat_ms = Some(now);
        if let Some((seq, at)) = e.pending.remove(&attempt) {
            self.last_started_seq = self.last_started_seq.max(seq);
            self.starts_seen += 1;
            self.slowest_start_ms = self.slowest_start_ms.max(now.saturating_sub(at));
        }
    }

    /// A start marker of `name` seen before was written again at `now`: a heartbeat.
    pub fn beat(&mut self, name: &str, now: u64) {
        let Some(e) = self.entries.get_mut(name) else {
            return;
        };
        if let Some(last) = e.beat_ms {
            self.longest_beat_gap_ms = self.longest_beat_gap_ms.max(now.saturating_sub(last));
        }
        e.beat_ms = Some(now);
    }

    /// Invocations that started and then went silent: unfinished, with no launch waiting
    /// to start (the lost rule watches those), and no heartbeat of any copy for longer
    /// than three times the longest gap this run's beats have shown, at least `floor`
    /// (three beat intervals) and at most `ceiling`. A running invocation beats, so one
    /// that stopped beating died with its process: a Lambda environment at its timeout,
    /// a killed `cellmatrix serve`. Reported once per silence: the caller launches them
    /// again.
    pub fn silent(&mut self, now: u64, floor: u64, ceiling: u64) -> Vec<String> {
        let bound = self
            .longest_beat_gap_ms
            .saturating_mul(3)
            .max(floor)
            .min(ceiling);
        let mut silent = Vec::new();
        for (name, e) in &mut self.entries {
            if e.finished || !e.pending.is_empty() {
                continue;
            }
            if let Some(beat) = e.beat_ms
                && now.saturating_sub(beat) > bound
            {
                e.beat_ms = Some(now);
                silent.push(name.clone());
            }
        }
        silent
    }

    /// Every invocation not finished, taken for dead: the process that ran them, and the
    /// queue that held their launches, are gone (`cellmatrix serve` restarted). Their
    /// launches and starts are forgotten, so that each is launched again at once and
    /// then watched like a fresh launch.
    pub fn presume_dead(&mut self) -> Vec<String> {
        let mut dead = Vec::new();
        for (name, e) in &mut self.entries {
            if e.finished {
                continue;
            }
            e.pending.clear();
            e.started_ms = None;
            e.beat_ms = None;
            e.hedged = false;
            dead.push(name.clone());
        }
        dead
    }

    /// `name` finished: nothing of it is pending any more.
    pub fn finished(&mut self, name: &str) {
        let e = self.entries.entry(name.to_string()).or_default();
        e.finished = true;
        e.pending.clear();
    }

    /// Whether `name` finished.
    pub fn is_finished(&self, name: &str) -> bool {
        self.entries.get(name).is_some_and(|e| e.finished)
    }

    /// One more failure of `name`; the failures so far.
    pub fn failed(&mut self, name: &str) -> u32 {
        let e = self.entries.entry(name.to_string()).or_default();
        e.failures += 1;
        e.failures
    }

    /// Invocations that have not started although they should have: launched more than
    /// `passed_after` ago while a later launch has started, or, while nothing launched
    /// before them is still waiting and nothing is running (so no queue holds them
    /// back), more than `lost_after` ago, or twice the run's slowest start once
    /// [`STARTS_TO_TRUST`] launches have started, whichever is shorter but never less
    /// than `passed_after`. A later launch that started is evidence that the queue
    /// delivers, and so are the starts seen: a lone relaunch (the last shard's, say) need
    /// not wait `lost_after` when every launch so far started within a second.
    /// `passed_after` is held to at most `lost_after`. Those launches are forgotten; the
    /// caller launches the names again.
    pub fn lost(&mut self, now: u64, lost_after: u64, passed_after: u64) -> Vec<String> {
        let passed_after = passed_after.min(lost_after);
        let idle_after = if self.starts_seen >= STARTS_TO_TRUST {
            self.slowest_start_ms
                .saturating_mul(2)
                .clamp(passed_after, lost_after)
        } else {
            lost_after
        };
        // Started and not over: an entry relaunched after a failure waits again, unless
        // its pending launch is a hedge beside a copy that still runs.
        let running = self
            .entries
            .values()
            .filter(|e| !e.finished && e.started_ms.is_some() && (e.pending.is_empty() || e.hedged))
            .count();
        let waiting: Vec<u64> = self
            .entries
            .values()
            .filter(|e| !e.finished)
            .flat_map(|e| e.pending.values().map(|&(seq, _)| seq))
            .collect();
        let oldest_waiting = waiting.iter().copied().min().unwrap_or(u64::MAX);
        let last_started = self.last_started_seq;
        let mut lost = Vec::new();
        for (name, e) in &mut self.entries {
            if e.finished {
                continue;
            }
            let before = e.pending.len();
            e.pending.retain(|_, &mut (seq, at)| {
                let age = now.saturating_sub(at);
                let passed = last_started > seq && age > passed_after;
                let head_of_idle_queue = seq == oldest_waiting && running == 0 && age > idle_after;
                !(passed || head_of_idle_queue)
            });
            if e.pending.len() < before {
                lost.push(name.clone());
            }
        }
        lost
    }

    /// Tasks worth a second copy: unfinished, not hedged yet, and going for longer than
    /// the median task once `policy.percent` of the tasks are done, or for longer than
    /// `policy.factor` medians since they started. Marked hedged.
    pub fn stragglers(
        &mut self,
        now: u64,
        done: usize,
        total: usize,
        median_ms: Option<u64>,
        policy: HedgePolicy,
    ) -> Vec<String> {
        let Some(median) = median_ms else {
            return Vec::new();
        };
        let most_done = total > 0 && done * 100 >= total * policy.percent as usize;
        let mut slow = Vec::new();
        for (name, e) in &mut self.entries {
            if !name.starts_with("task-") || e.finished || e.hedged {
                continue;
            }
            let since_start = e.started_ms.map(|s| now.saturating_sub(s));
            let since_launch = e
                .pending
                .values()
                .map(|&(_, at)| now.saturating_sub(at))
                .max();
            let going = since_start.or(since_launch).unwrap_or(0);
            let straggling = since_start.is_some_and(|t| t > median * u64::from(policy.factor));
            if (most_done && going > median) || straggling {
                e.hedged = true;
                slow.push(name.clone());
            }
        }
        slow
    }
}

/// How long a launch passed by a later one that started waits before it is taken for
/// lost (ms): [`Ledger::lost`]'s `passed_after`. `lost_passed_after` allows for workers
/// queued behind the worker's concurrency, which start out of order; once the
/// consolidation is planned every task is done, so no such queue is left and a shard
/// that a later shard passed is waited for half as long: one delivery in a few thousand
/// takes over a second, and the result waits for the last shard.
pub fn passed_after(lost_passed_after: Duration, consolidating: bool) -> u64 {
    let ms = lost_passed_after.as_millis() as u64;
    if consolidating { ms / 2 } else { ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: HedgePolicy = HedgePolicy {
        percent: 90,
        factor: 3,
    };

    #[test]
    fn a_launch_passed_by_later_ones_is_lost_after_the_wait() {
        let mut l = Ledger::default();
        for t in ["task-a", "task-b", "task-c"] {
            l.launched(t, 0, 0);
        }
        l.started("task-b", 0, 10);
        assert!(l.lost(50, 100, 100).is_empty(), "not overdue yet");
        // a was launched before b, which started: a is lost; c is behind b, not passed.
        assert_eq!(l.lost(200, 100, 100), ["task-a"]);
        assert!(l.lost(300, 100, 100).is_empty(), "forgotten once reported");
    }

    #[test]
    fn a_passed_launch_is_lost_sooner_than_one_nothing_passed() {
        let mut l = Ledger::default();
        l.launched("task-a", 0, 0);
        l.launched("task-b", 0, 0);
        l.launched("task-c", 0, 0);
        l.started("task-c", 0, 10);
        // b was passed by c: lost after the short wait; a is too, c not being a queue.
        assert!(l.lost(20, 100, 20).is_empty(), "not overdue yet");
        assert_eq!(l.lost(30, 100, 20), ["task-a", "task-b"]);
        let mut l = Ledger::default();
        l.launched("task-a", 0, 0);
        // Nothing passed a: it waits the long rule.
        assert!(l.lost(50, 100, 20).is_empty());
        assert_eq!(l.lost(150, 100, 20), ["task-a"]);
        // The short wait is never longer than the long one.
        let mut l = Ledger::default();
        l.launched("task-a", 0, 0);
        l.launched("task-b", 0, 0);
        l.started("task-b", 0, 1);
        assert_eq!(l.lost(150, 100, 1_000), ["task-a"]);
    }

    #[test]
    fn a_lone_launch_waits_twice_the_slowest_start_once_enough_have_started() {
        let mut l = Ledger::default();
        for i in 0..STARTS_TO_TRUST {
            let name = format!("task-{i}");
            l.launched(&name, 0, 0);
            // The slowest takes 300 ms from launch to being seen started.
            l.started(&name, 0, 100 + 200 * i / (STARTS_TO_TRUST - 1));
            l.finished(&name);
        }
        assert_eq!(l.slowest_start_ms, 300);
        l.launched("shard-0", 1, 1_000);
        // Nothing passed it and nothing runs: lost after 2 × 300 ms, not `lost_after`
        // (5 s), nor less than `passed_after`.
        assert!(l.lost(1_600, 5_000, 500).is_empty());
        assert_eq!(l.lost(1_601, 5_000, 500), ["shard-0"]);
        l.launched("shard-0", 2, 2_000);
        assert!(
            l.lost(2_900, 5_000, 900).is_empty(),
            "at least passed_after"
        );
        assert_eq!(l.lost(2_901, 5_000, 900), ["shard-0"]);
        // One start short of trusting them: `lost_after`.
        let mut l = Ledger::default();
        for i in 0..STARTS_TO_TRUST - 1 {
            let name = format!("task-{i}");
            l.launched(&name, 0, 0);
            l.started(&name, 0, 100);
            l.finished(&name);
        }
        l.launched("shard-0", 0, 1_000);
        assert!(l.lost(5_999, 5_000, 500).is_empty());
        assert_eq!(l.lost(6_001, 5_000, 500), ["shard-0"]);
    }

    #[test]
    fn a_queued_launch_behind_running_work_is_not_lost() {
        let mut l = Ledger::default();
        l.launched("task-a", 0, 0);
        l.launched("task-b", 0, 0);
        l.started("task-a", 0, 1);
        assert!(
            l.lost(10_000, 100, 100).is_empty(),
            "a runs, b waits for its slot"
        );
        l.finished("task-a");
        // Nothing runs and b is first in line: it should have started.
        assert_eq!(l.lost(10_000, 100, 100), ["task-b"]);
    }

    #[test]
    fn a_relaunch_after_a_failure_is_not_held_back_by_the_failed_copy() {
        let mut l = Ledger::default();
        l.launched("shard-0", 0, 0);
        l.started("shard-0", 0, 1);
        // The copy failed; its relaunch was dropped.
        l.launched("shard-0", 1, 10);
        assert_eq!(l.lost(10_000, 100, 100), ["shard-0"]);
    }

    #[test]
    fn finished_work_is_never_lost() {
        let mut l = Ledger::default();
        l.launched("group-0", 0, 0);
        l.finished("group-0");
        assert!(l.lost(10_000, 100, 100).is_empty());
        assert!(l.is_finished("group-0"));
    }

    #[test]
    fn attempts_count_up_from_every_launch_and_start() {
        let mut l = Ledger::default();
        assert_eq!(l.next_attempt("task-a"), 0);
        l.launched("task-a", 0, 0);
        l.started("task-a", 4, 1);
        assert_eq!(l.next_attempt("task-a"), 5);
        assert_eq!(l.launches("task-a"), 1);
        assert_eq!(l.failed("task-a"), 1);
        assert_eq!(l.failed("task-a"), 2);
    }

    #[test]
    fn each_launch_says_why_it_was_made() {
        let mut l = Ledger::default();
        l.launched("task-a", 0, 5);
        l.started("task-a", 0, 6);
        // A failure's retry, a hedge, then a relaunch of a lost copy.
        l.failed("task-a");
        l.launched("task-a", 1, 10);
        l.entries.get_mut("task-a").unwrap().hedged = true;
        l.launched("task-a", 2, 20);
        l.launched("task-a", 3, 30);
        let log: Vec<(u32, u64, CopyKind)> = l
            .launches_log()
            .into_iter()
            .map(|x| (x.attempt, x.at_ms, x.copy))
            .collect();
        assert_eq!(
            log,
            [
                (0, 5, CopyKind::First),
                (1, 10, CopyKind::Retry),
                (2, 20, CopyKind::Hedge),
                (3, 30, CopyKind::Relaunch)
            ]
        );
    }

    #[test]
    fn stragglers_are_hedged_once_by_either_rule() {
        let mut l = Ledger::default();
        for t in 0..10 {
            l.launched(&format!("task-{t}"), 0, 0);
            l.started(&format!("task-{t}"), 0, 0);
        }
        // Nothing done, no median: nothing to compare with.
        assert!(l.stragglers(1_000, 0, 10, None, POLICY).is_empty());
        // task-0 runs 4 medians: slow by the factor rule, whatever else is done.
        l.entries.get_mut("task-0").unwrap().started_ms = Some(600);
        for t in 1..10 {
            l.entries.get_mut(&format!("task-{t}")).unwrap().started_ms = Some(990);
        }
        assert_eq!(l.stragglers(1_000, 5, 10, Some(100), POLICY), ["task-0"]);
        assert!(
            l.stragglers(1_000, 5, 10, Some(100), POLICY).is_empty(),
            "once"
        );
        // 90% done: every unfinished task going longer than the median gets a copy.
        for t in 1..9 {
            l.finished(&format!("task-{t}"));
        }
        assert!(
            l.stragglers(1_050, 9, 10, Some(100), POLICY).is_empty(),
            "too fresh"
        );
        assert_eq!(l.stragglers(1_200, 9, 10, Some(100), POLICY), ["task-9"]);
    }

    #[test]
    fn a_started_invocation_that_stops_beating_is_silent_after_the_runs_own_bound() {
        let mut l = Ledger::default();
        l.launched("task-a", 0, 0);
        l.launched("task-b", 0, 0);
        l.started("task-a", 0, 100);
        l.started("task-b", 0, 100);
        // No beat seen yet: the floor (three beat intervals of 100 ms) holds.
        assert!(l.silent(400, 300, 10_000).is_empty());
        // a beats every 250 ms: the bound grows to 750 ms; b went quiet at 100.
        for at in [350, 600, 850] {
            l.beat("task-a", at);
        }
        assert_eq!(l.longest_beat_gap_ms, 250);
        assert!(
            l.silent(850, 300, 10_000).is_empty(),
            "b: 750 ms is not over 750"
        );
        assert_eq!(l.silent(851, 300, 10_000), ["task-b"]);
        assert!(l.silent(900, 300, 10_000).is_empty(), "reported once");
        // The ceiling caps a bound that long gaps would stretch.
        l.beat("task-a", 5_850);
        assert_eq!(l.silent(7_000, 300, 1_000), ["task-a", "task-b"]);
        // A relaunch waiting to start is the lost rule's, and a finished one is over.
        l.launched("task-a", 1, 7_000);
        l.finished("task-b");
        assert!(l.silent(60_000, 300, 1_000).is_empty());
    }

    #[test]
    fn a_restart_presumes_every_unfinished_invocation_dead() {
        let mut l = Ledger::default();
        l.launched("group-0", 0, 0);
        l.launched("task-a", 0, 0);
        l.launched("task-b", 0, 0);
        l.started("task-a", 0, 10);
        l.started("task-b", 0, 10);
        l.finished("task-b");
        l.finished("group-0");
        l.launched("task-c", 0, 20);
        assert_eq!(l.presume_dead(), ["task-a", "task-c"]);
        // Forgotten, so neither the lost nor the silent rule reports them again before
        // their relaunch is due.
        assert!(l.lost(1_000_000, 100, 100).is_empty());
        assert!(l.silent(1_000_000, 100, 100).is_empty());
        assert_eq!(l.next_attempt("task-a"), 1, "the relaunch is a new attempt");
    }

    #[test]
    fn the_ledger_survives_a_checkpoint() {
        let mut l = Ledger::default();
        l.launched("task-a", 0, 5);
        l.failed("task-a");
        let back: Ledger = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
    }

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
