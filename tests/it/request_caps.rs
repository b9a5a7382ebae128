//! The per-request caps, through the API's router on the embedded stack: a request that
//! could pass one is 422 naming the cap, its setting and the excess, and nothing is
//! written; one within them runs. And trivial variants (a repeated gene or field) are
//! the same request.

use std::sync::Arc;
use std::time::Duration;

use cellmatrix::app::{App, default_limit};
use cellmatrix::config::Config;
use cellmatrix::handlers::driver;
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_tests::{ingest_samples, run_request};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_request_over_a_cap_is_422_naming_it_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    let bundles = ingest_samples(&store).await;
    // The 300-cell 10x bundle and three one-cell SmartSeq2 bundles.
    let fqids: Vec<String> = bundles[..4].iter().map(|b| b.fqid.to_string()).collect();
    let catalog = cellmatrix::catalog::read(&store).await.unwrap();
    let cells: u64 = catalog
        .bundles
        .iter()
        .filter(|(f, _)| fqids.contains(&f.to_string()))
        .map(|(_, e)| e.n_cells)
        .sum();
    let body = |format: &str| json!({"bundle_fqids": fqids, "format": format});
    for (setting, set, format, needle) in [
        (
            "CELLMATRIX_MAX_CELLS",
            Box::new(|c: &mut Config| c.max_cells = cells - 5) as Box<dyn Fn(&mut Config)>,
            "zarr",
            format!("up to {cells} cells, 5 over"),
        ),
        (
            "CELLMATRIX_MAX_NNZ",
            Box::new(|c: &mut Config| c.max_nnz = 10),
            "zarr",
            "stored nonzeros".into(),
        ),
        (
            "CELLMATRIX_MAX_TASKS",
            Box::new(|c: &mut Config| {
                c.cells_per_worker = 100;
                c.max_tasks = 2
            }),
            "zarr",
            "worker tasks".into(),
        ),
        (
            "CELLMATRIX_ZARR_MAX_BYTES",
            Box::new(|c: &mut Config| c.zarr_max_bytes = 1000),
            "zarr",
            "bytes of a zarr result".into(),
        ),
        (
            "CELLMATRIX_H5AD_MAX_BYTES",
            Box::new(|c: &mut Config| c.h5ad_max_bytes = 1000),
            "h5ad",
            "bytes of a h5ad result".into(),
        ),
        (
            "CELLMATRIX_MTX_MAX_BYTES",
            Box::new(|c: &mut Config| c.mtx_max_bytes = 1000),
            "mtx",
            "bytes of a mtx result".into(),
        ),
    ] {
        let mut config = Config::new("test");
        set(&mut config);
        let app = App::in_process(config, store.clone(), default_limit);
        let answer = driver::handle(
            &app,
            "POST",
            "/v1/matrix",
            body(format).to_string().as_bytes(),
        )
        .await;
        assert_eq!(answer.status, 422, "{setting}: {}", answer.body);
        let message = answer.body["message"].as_str().unwrap();
        assert!(
            message.contains(setting) && message.contains(&needle),
            "{setting}: {message}"
        );
        assert!(
            store.list("requests/").await.unwrap().is_empty(),
            "{setting}"
        );
    }

    // Within every default cap: it runs; and a repeated gene and field change nothing.
    let mut config = Config::new("test");
    config.poll_interval = Duration::from_millis(10);
    let app = App::in_process(config, store.clone(), default_limit);
    let genes = json!(["CD3E", "LYZ"]);
    let (id, status) = run_request(
        &app,
        &json!({"bundle_fqids": fqids, "genes": genes, "fields": ["cell.barcode"]}),
    )
    .await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    let repeated = json!({"bundle_fqids": fqids, "genes": ["CD3E", "LYZ", "CD3E"],
        "fields": ["cell.barcode", "cell.barcode"]});
    let again = driver::handle(&app, "POST", "/v1/matrix", repeated.to_string().as_bytes()).await;
    assert_eq!(
        again.status, 200,
        "the same request, already built: {}",
        again.body
    );
    assert_eq!(again.body["id"], id.as_str());
    app.idle().await;
}
