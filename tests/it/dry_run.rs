//! The dry run through the API's router on the embedded stack, on the filesystem and on
//! moto: its counts are the real run's (a bundle-level and a cell-level filter), the
//! status' `preview` carries them, it writes nothing, a request over a cap gets the same
//! message dry and real, and a run that succeeds calibrates the next estimate.

use std::collections::BTreeSet;
use std::sync::Arc;

use cellmatrix::app::{App, default_limit};
use cellmatrix::config::Config;
use cellmatrix::handlers::driver;
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_tests::{ingest_samples, run_request};
use serde_json::{Value, json};

/// The SmartSeq2 bundles, decided per bundle from the catalog.
fn bundle_level() -> Value {
    json!({
        "filter": {"op": "=", "field": "bundle.assay", "value": "smartseq2"},
        "fields": ["cell.barcode", "cell.n_genes"],
    })
}

/// Cells with at least 900 genes: the 10x bundle's cells differ, so its obs are read.
fn cell_level() -> Value {
    json!({
        "filter": {"op": ">=", "field": "cell.n_genes", "value": 900},
        "fields": ["cell.barcode", "cell.n_genes", "bundle.assay"],
        "format": "h5ad",
    })
}

fn dry(body: &Value) -> Value {
    let mut body = body.clone();
    body["dry_run"] = json!(true);
    body
}

async fn keys(store: &DynStore) -> BTreeSet<String> {
    store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

fn app(store: &DynStore) -> Arc<App> {
    let mut config = Config::new("test");
    config.poll_interval = std::time::Duration::from_millis(10);
    App::in_process(config, store.clone(), default_limit)
}

async fn the_dry_run_counts_what_the_real_run_makes(store: DynStore) {
    ingest_samples(&store).await;
    let app = app(&store);
    for (body, counted_from) in [(bundle_level(), "catalog"), (cell_level(), "obs")] {
        let before = keys(&store).await;
        let answer = driver::handle(
            &app,
            "POST",
            "/v1/matrix",
            dry(&body).to_string().as_bytes(),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.location, None);
        assert_eq!(keys(&store).await, before, "a dry run writes nothing");
        let a = answer.body;
        assert_eq!(a["dry_run"], true);
        assert_eq!(a["matching"]["exact"], true, "{a}");
        assert_eq!(a["matching"]["counted_from"], counted_from, "{a}");
        assert_eq!(a["nonzeros"]["exact"], true, "{a}");
        for part in ["matching", "genes", "nonzeros", "plan", "seconds", "cost"] {
            assert!(
                a[part]["assumes"].as_str().is_some_and(|t| !t.is_empty()),
                "{part}: {a}"
            );
        }
        assert_eq!(a["sizes"].as_array().unwrap().len(), 5, "{a}");
        assert!(a["cost"]["usd"].as_f64().unwrap() > 0.0, "{a}");
        assert!(a["seconds"]["total"].as_f64().unwrap() > 0.0, "{a}");

        let (id, status) = run_request(&app, &body).await;
        // The cleanup and the calibration come just after the result.
        app.idle().await;
        assert_eq!(status["status"], "Succeeded", "{status}");
        let r = &status["result"];
        assert_eq!(
            a["id"],
            id.as_str(),
            "the dry run names the real request's id"
        );
        assert_eq!(a["matching"]["cells"], r["n_cells"], "{a}\n{status}");
        assert_eq!(a["nonzeros"]["count"], r["nnz"], "{a}\n{status}");
        assert_eq!(a["genes"]["count"], r["n_genes"], "{a}\n{status}");
        assert_eq!(a["matching"]["bundles"], status["progress"]["bundles"]);
        assert_eq!(
            a["plan"]["tasks"], status["progress"]["tasks_total"],
            "{a}\n{status}"
        );

        let p = &status["preview"];
        assert_eq!(p["bundles"], a["matching"]["bundles"], "{status}");
        assert_eq!(p["genes"], a["genes"]["count"], "{status}");
        assert_eq!(p["tasks"], a["plan"]["tasks"], "{status}");
        // The preview reads no obs: exact only where the catalog decides.
        if counted_from == "catalog" {
            assert_eq!(p["exact"], true, "{status}");
            assert_eq!(p["cells"], r["n_cells"], "{status}");
            assert_eq!(p["nnz"], r["nnz"], "{status}");
        } else {
            assert_eq!(p["exact"], false, "{status}");
            assert!(p["cells"].as_u64() > r["n_cells"].as_u64(), "{status}");
        }
    }
    // Both runs calibrated the service (once its collectors are done: the calibration
    // is updated just after the result is committed): the next estimate says so.
    app.idle().await;
    let answer = driver::handle(
        &app,
        "POST",
        "/v1/matrix",
        dry(&bundle_level()).to_string().as_bytes(),
    )
    .await;
    assert_eq!(
        answer.body["seconds"]["calibrated_runs"], 2,
        "{}",
        answer.body
    );
    assert!(store.exists(cellmatrix::calibration::KEY).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dry_run_counts_what_the_real_run_makes_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    the_dry_run_counts_what_the_real_run_makes(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dry_run_counts_what_the_real_run_makes_on_moto_s3() {
    let store: DynStore = Arc::new(
        cellmatrix_tests::moto_store("dry-run", "svc")
            .await
            .unwrap(),
    );
    the_dry_run_counts_what_the_real_run_makes(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_over_a_cap_gets_the_same_answer_dry_and_real_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    ingest_samples(&store).await;
    let mut config = Config::new("test");
    config.max_cells = 100;
    let app = App::in_process(config, store.clone(), default_limit);
    let before = keys(&store).await;
    let body = cell_level();
    let real = driver::handle(&app, "POST", "/v1/matrix", body.to_string().as_bytes()).await;
    let dry = driver::handle(
        &app,
        "POST",
        "/v1/matrix",
        dry(&body).to_string().as_bytes(),
    )
    .await;
    assert_eq!(real.status, 422, "{}", real.body);
    assert_eq!((dry.status, &dry.body), (real.status, &real.body));
    assert!(
        dry.body["message"]
            .as_str()
            .unwrap()
            .contains("CELLMATRIX_MAX_CELLS")
    );
    // A malformed dry run is refused as the real one is.
    let bad = json!({"filter": {"op": ">=", "field": "cell.nope", "value": 1}, "dry_run": true});
    let answer = driver::handle(&app, "POST", "/v1/matrix", bad.to_string().as_bytes()).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(
        keys(&store).await,
        before,
        "nothing under requests/, callers/ or results/"
    );
}
