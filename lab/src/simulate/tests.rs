//! Checks of the simulation as a whole, each able to fail.

use super::cases::mix;
use super::model::{Faults, LogNormal, Model};
use super::*;

fn fixed(s: f64) -> LogNormal {
    LogNormal::new(s, 0.0)
}

/// No faults, no tails, no limits: every latency a round figure.
fn plain() -> Model {
    let mut m = Model {
        faults: Faults::none(),
        ..Model::default()
    };
    let l = &mut m.lambda;
    l.runtime_init = fixed(0.100);
    l.our_init = fixed(0.0);
    l.delivery = fixed(0.0);
    l.invoke_call = fixed(0.0);
    l.account_concurrency = u32::MAX;
    l.worker_reserved = None;
    let s = &mut m.s3;
    (s.get, s.put, s.list) = (fixed(0.010), fixed(0.010), fixed(0.010));
    s.bytes_per_s = f64::INFINITY;
    m.sizes.json_bytes_per_s = f64::INFINITY;
    m.sizes.plan_s_per_bundle = 0.0;
    m.calibration.smartseq2.bytes_per_s = f64::INFINITY;
    m.calibration.tenx.bytes_per_s = f64::INFINITY;
    m
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let m = Model::default();
    let case = mix("small", 2, 3_000, 300, &m.calibration, String::new());
    let p = Prepared::new(&case, &m);
    for seed in [1, 7] {
        assert_eq!(run(&m, &p, seed, true, true), run(&m, &p, seed, true, true));
    }
    assert_ne!(run(&m, &p, 1, true, true), run(&m, &p, 2, true, true));
    assert_eq!(
        simulate(&m, &case, false, true, 0..8),
        simulate(&m, &case, false, true, 0..8)
    );
}

#[test]
fn a_run_without_faults_tails_or_limits_takes_the_time_computed_by_hand() {
    // One one-cell bundle: one group, one task of one slice, one shard. Every S3
    // request 10 ms, a cold start 100 ms, everything else free. First with a mapper
    // (`driver_groups` 0). In ms:
    // - driver: cold 100; catalog LIST+GET, feature set GET, the earlier run's GET,
    //   genes and run PUTs at once, the request PUT = 60 → invokes at 160; the client's
    //   first poll at 160 + 250 = 410.
    // - mapper: begins 260; start (HEADs, PUT) 20, catalog 20, task PUTs 10, plan PUT 10
    //   → plan lands at 320; ended checks 10 + 10 → worker invoked at 340.
    // - worker: begins 440 (its clock too); done HEAD with the ended check 10, the start
    //   marker with task, request and genes 10, the slice's round 10 (the feature set
    //   meanwhile), what is left of the part (its 4 arrays' last chunks and metadata)
    //   at once 10, done PUT 10 →
    //   done marker at 490.
    // - collector: begins 260; looks at 260 (ended check and LISTs 10, its first
    //   progress PUT 10: nothing yet), at 380 (10, the plan's GET 10, progress 10), then
    //   at 510: ended check and LISTs 10, the done marker's GET 10, progress PUT 10, the
    //   consolidation plan PUT 10 → shard invoked at 550 (no LIST: it stored the plan).
    // - shard: begins 650; marker HEAD with the ended check 10, start marker with plan,
    //   request and (shard 0) genes 10, its 4 arrays at once (parts' ranges, plan check,
    //   chunks) 30, the metadata beside them (plan check, documents) 20 → marker at 710;
    //   it is the last shard: LIST with the ended check 10, the root group 10 and the
    //   result PUT 10 → result at 740.
    // - client polls at 410, 670 (each 10 ms + 250 ms apart), 930: it sees the result
    //   at 930 + 10.
    // One task and one shard make a small request (`hedge_small`): the mapper sends the
    // worker's event twice at 340 and the collector the shard's twice at 550; each copy
    // does the same work beside the first, in an environment of its own, writing the
    // same bytes. Neither changes a time.
    let mut m = plain();
    m.service.driver_groups = 0;
    let case = mix("one", 0, 0, 1, &m.calibration, String::new());
    let p = Prepared::new(&case, &m);
    assert_eq!((p.tasks.len(), p.groups.len(), p.shards), (1, 1, 1));
    let o = run(&m, &p, 3, true, false);
    assert!(o.succeeded);
    assert_eq!(o.result_s, Some(0.740));
    assert_eq!(o.seconds, 0.940);
    // Driver (POST; its 3 polls are not counted), mapper, worker and its copy,
    // collector, shard and its copy.
    assert_eq!(o.invocations, 7);
    assert_eq!(o.hedges, 2);
    assert_eq!(o.status_polls, 3);
    // Without the copies, the same times.
    m.service.hedge_small = 0;
    let o = run(&m, &p, 3, true, false);
    assert_eq!((o.result_s, o.seconds), (Some(0.740), 0.940));
    assert_eq!((o.invocations, o.hedges), (5, 0));

    // The driver plans the group itself (the default), after invoking the collector:
    // - driver: 60 as above → collector invoked at 160; then what the mapper did after
    //   its start (no start marker): catalog 20, task 10, plan 10 → plan lands at 200,
    //   ended checks 20 → worker invoked at 220, the answer at 220; the client's first
    //   poll at 470.
    // - worker: begins 320, done marker at 370.
    // - collector: begins 260; looks at 260 (10, the plan's GET 10, progress 10), then
    //   at 390: 10, the done marker's GET 10, progress 10, the consolidation plan 10 →
    //   shard invoked at 430.
    // - shard: begins 530, marker at 590, result at 620.
    // - client polls at 470, 730: it sees the result at 730 + 10.
    // The copies as above.
    let m = plain();
    assert!(m.service.driver_groups >= 1);
    let p = Prepared::new(&case, &m);
    let o = run(&m, &p, 3, true, false);
    assert!(o.succeeded);
    assert_eq!(o.planned_s, Some(0.200));
    assert_eq!(o.collected_s, Some(0.370));
    assert_eq!(o.result_s, Some(0.620));
    assert_eq!(o.seconds, 0.740);
    // Driver, worker and its copy, collector, shard and its copy.
    assert_eq!(o.invocations, 6);
    assert_eq!(o.status_polls, 2);
}

#[test]
fn the_scaling_rate_holds_back_a_wide_request() {
    // 3,000 one-cell tasks at once, no concurrency limit: 1,000 environments start in
    // the first 10 s; the other invocations are throttled and retried (after 1 s, then
    // 2 s) until environments the first ones leave warm take them.
    let mut m = plain();
    m.service.budget.cells = 1;
    m.service.bundles_per_mapper = 3_000;
    m.service.invoke_concurrency = 3_000;
    let case = mix("wide", 0, 0, 3_000, &m.calibration, String::new());
    let p = Prepared::new(&case, &m);
    assert_eq!(p.tasks.len(), 3_000);
    let o = run(&m, &p, 1, false, false);
    assert!(o.succeeded);
    assert_eq!(o.first_window_workers, 1_000);
    m.lambda.scale_per_window = 100_000;
    let free = run(&m, &p, 1, false, false);
    assert_eq!(free.first_window_workers, 3_000);
    let (held, free) = (o.collected_s.unwrap(), free.collected_s.unwrap());
    assert!(
        held > free + 2.5,
        "1 s + 2 s of throttling: {held} vs {free}"
    );
}

#[test]
fn hedging_lowers_the_tail_when_stragglers_are_on() {
    let mut m = Model {
        faults: Faults {
            straggler: 0.05,
            slowdown: 10.0,
            ..Faults::none()
        },
        ..Model::default()
    };
    m.service.budget.cells = 20;
    // Slow compute, so a task's read phase (what a straggler stretches) is ~1 s: its
    // 20 one-cell slices' requests overlap and take a tenth of that.
    m.calibration.smartseq2.bytes_per_s = 0.5e6;
    let case = mix("hedge", 0, 0, 400, &m.calibration, String::new());
    let off = simulate(&m, &case, false, true, 0..40);
    let on = simulate(&m, &case, true, true, 0..40);
    assert!(on.mean_hedges > 0.0);
    // A straggler reads for ~10 s instead of ~1 s; its copy, started after three
    // medians, saves seconds of it. Most runs (1 - 0.95^20) have a straggler, so the
    // median run shows it; the p99 of 40 runs is one run, which another fault may hold.
    assert!(on.p50_collected <= off.p50_collected);
    assert!(
        on.p50 < off.p50 - 3.0,
        "hedged p50 {} vs {}",
        on.p50,
        off.p50
    );
    assert!(on.p99 <= off.p99, "hedged p99 {} vs {}", on.p99, off.p99);
}

#[test]
fn dropped_invocations_are_recovered_through_the_lost_rule() {
    let mut m = Model {
        faults: Faults {
            // Not much more: a name whose `task_attempts + 2` launches are all dropped
            // (0.1^5 a name) is lost for good, as it would be on Lambda.
            drop: 0.1,
            ..Faults::none()
        },
        ..Model::default()
    };
    m.service.budget.cells = 50;
    let case = mix("drops", 0, 0, 500, &m.calibration, String::new());
    let p = Prepared::new(&case, &m);
    let outcomes: Vec<Outcome> = (0..20).map(|s| run(&m, &p, s, false, true)).collect();
    assert!(outcomes.iter().all(|o| o.succeeded));
    let recovered: Vec<&Outcome> = outcomes.iter().filter(|o| o.relaunched > 0).collect();
    assert!(!recovered.is_empty());
    // A lost launch is taken for lost only after `lost_passed_after` at the least.
    for o in recovered {
        assert!(o.seconds > m.service.lost_passed_after_s, "{o:?}");
    }
}

#[test]
fn the_simulations_cost_is_the_run_reports_formula_on_the_same_invocations() {
    let m = Model::default();
    let case = mix("small", 2, 3_000, 300, &m.calibration, String::new());
    let p = Prepared::new(&case, &m);
    let o = run(&m, &p, 3, true, true);
    assert!(o.cost > 0.0 && !o.billed.is_empty(), "{o:?}");
    // The invocations the simulation emitted, billed through the report's function.
    let deployment = cellmatrix::cost::Deployment {
        memory_mb: m.lambda.memory_mb,
        ..Default::default()
    };
    let rebuilt =
        cellmatrix::report::usage(o.billed.iter().copied(), o.requests.billed(), &deployment);
    let bill = rebuilt.bill(&m.prices);
    assert_eq!(bill.total_usd, o.cost, "one formula, the same events");
    assert_eq!(rebuilt.total_gb_seconds(), o.gb_seconds);
    assert_eq!(
        rebuilt.total_invocations(),
        o.billed.len() as u64,
        "one invocation per billed event"
    );
    // The simulation prices at the report's prices and the template's deployment.
    assert_eq!(m.prices, cellmatrix::cost::Prices::default());
    assert_eq!(deployment, cellmatrix::cost::Deployment::default());
}
