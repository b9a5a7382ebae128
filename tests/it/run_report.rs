//! The run report (`GET /v1/matrix/{id}/report`) of requests on the embedded stack, on
//! the filesystem and on moto S3: every task's worker invocation is listed with cells
//! that add up to the status's counts, the phases come in order, and the cost is
//! `Usage::bill` of the listed invocations. The report outlives the cleanup.

use std::sync::Arc;
use std::time::Duration;

use cellmatrix::app::App;
use cellmatrix::config::Config;
use cellmatrix::cost::{Deployment, Prices, Requests, Usage};
use cellmatrix::handlers::driver;
use cellmatrix::report::{Fate, Report};
use cellmatrix::state::Keys;
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_tests::{ingest_samples, moto_store, run_request};
use serde_json::json;

fn config() -> Config {
    let mut c = Config::new("test");
    c.poll_interval = Duration::from_millis(10);
    // Several tasks, groups and shards: 340 cells in tasks of at most 64.
    c.cells_per_worker = 64;
    c.bundles_per_mapper = 8;
    c.driver_groups = 1;
    c.shard_nnz = 20_000;
    c
}

async fn report_of(store: DynStore, format: &str) {
    ingest_samples(&store).await;
    let app = App::in_process(config(), store.clone(), |_| 4);
    let request = json!({
        "filter": {"op": ">=", "field": "cell.n_genes", "value": 300},
        "format": format,
    });
    let (id, status) = run_request(&app, &request).await;
    assert_eq!(status["status"], "Succeeded", "{status}");

    // The collector writes the report once the request ended; with zarr the last shard
    // commits, and the collector's next look writes it.
    let path = format!("/v1/matrix/{id}/report");
    let mut answer = driver::handle(&app, "GET", &path, b"").await;
    for _ in 0..200 {
        if answer.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        answer = driver::handle(&app, "GET", &path, b"").await;
    }
    assert_eq!(answer.status, 200, "{}", answer.body);
    let report: Report = serde_json::from_value(answer.body.clone()).expect("a report");

    // Every task's worker invocation that finished, with the status's counts.
    let progress = &status["progress"];
    let workers: Vec<_> = report
        .invocations
        .iter()
        .filter(|i| i.name.starts_with("task-") && i.fate == Fate::Done)
        .collect();
    assert_eq!(
        workers.len() as u64,
        progress["tasks_total"].as_u64().unwrap(),
        "{}",
        answer.body
    );
    assert!(workers.len() > 1, "several tasks: {}", answer.body);
    let cells_out: u64 = workers.iter().map(|w| w.cells_out.unwrap()).sum();
    assert_eq!(cells_out, status["result"]["n_cells"].as_u64().unwrap());
    assert_eq!(cells_out, report.totals.cells_out);
    let cells_in: u64 = workers.iter().map(|w| w.cells_in.unwrap()).sum();
    assert!(cells_in >= cells_out && cells_in > 0);
    for w in &workers {
        let (s, e) = (w.start_ms.unwrap(), w.end_ms.unwrap());
        assert!(s <= e && e <= report.totals.wall_ms, "{w:?}");
        assert!(w.requests.is_some_and(|r| r.get > 0 && r.put > 0), "{w:?}");
        assert!(w.peak_rss_bytes.unwrap() > 0);
    }
    let shards = report
        .invocations
        .iter()
        .filter(|i| i.name.starts_with("shard-") && i.fate == Fate::Done)
        .count();
    assert!(shards >= 1, "{}", answer.body);
    assert_eq!(
        report.invocations.iter().any(|i| i.name == "convert"),
        format != "zarr"
    );

    // The phases, in order, each within the run.
    let names: Vec<&str> = report
        .totals
        .phases
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let mut expected = vec!["resolve", "plan", "workers", "consolidation"];
    if format != "zarr" {
        expected.push("conversion");
    }
    assert_eq!(names, expected);
    for pair in report.totals.phases.windows(2) {
        assert!(pair[0].start_ms <= pair[1].start_ms, "{pair:?}");
        assert!(pair[0].end_ms <= pair[1].end_ms, "{pair:?}");
    }
    for p in &report.totals.phases {
        assert!(
            p.start_ms <= p.end_ms && p.end_ms <= report.totals.wall_ms,
            "{p:?}"
        );
    }
    assert_eq!(report.totals.critical_path[0], "driver");

    // The cost: Usage::bill of the invocations listed, rebuilt here by hand.
    let d = Deployment::default();
    let mut usage = Usage::default();
    let mut requests = Requests::default();
    for i in &report.invocations {
        if i.start_ms.is_some() {
            usage.invocation(i.function, i.billed_ms, &d);
        }
        if let Some(r) = &i.requests {
            requests.add(r);
        }
    }
    usage.requests = requests;
    let bill = usage.bill(&Prices::default());
    assert!(report.totals.bill.total_usd > 0.0);
    assert!(
        (bill.total_usd - report.totals.bill.total_usd).abs() < 1e-15,
        "{bill:?} vs {:?}",
        report.totals.bill
    );
    assert_eq!(report.totals.requests, requests);
    assert_eq!(report.totals.invocations, usage.total_invocations());

    // The cleanup runs after the report, and keeps it.
    let keys = Keys::new(&cellmatrix::messages::RequestId::parse(&id).unwrap());
    for _ in 0..200 {
        if store.list(&keys.dones()).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        store.list(&keys.dones()).await.unwrap().is_empty(),
        "cleaned up"
    );
    assert!(store.exists(&keys.report()).await.unwrap());
    assert!(
        report.summary().contains("succeeded"),
        "{}",
        report.summary()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_on_the_filesystem_lists_every_invocation_and_its_bill() {
    let dir = tempfile::tempdir().unwrap();
    report_of(Arc::new(FsStore::open(dir.path()).unwrap()), "h5ad").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_on_moto_s3_lists_every_invocation_and_its_bill() {
    let store: DynStore = Arc::new(moto_store("report", "").await.unwrap());
    report_of(store, "zarr").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_report_for_an_unknown_request() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::in_process(
        config(),
        Arc::new(FsStore::open(dir.path()).unwrap()),
        |_| 1,
    );
    let answer = driver::handle(
        &app,
        "GET",
        "/v1/matrix/0123456789abcdef0123456789abcdef/report",
        b"",
    )
    .await;
    assert_eq!(answer.status, 404, "{}", answer.body);
}
