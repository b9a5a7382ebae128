//! Cancelling a running 100k-cell request, and a corrupt bundle chunk, on the embedded
//! stack and on moto S3.
//!
//! Cancel: the status becomes Cancelled, no worker starts after the cancel is durable
//! (asserted from every start marker written, recorded as they are written, since the
//! cleanup removes them afterwards), and the scratch data and any partial output are gone.
//!
//! Corrupt chunk: the request ends Failed well within its deadline, naming the bundle;
//! no `result.json` and no output are written; and a request over the other bundles
//! still succeeds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cellmatrix::app::App;
use cellmatrix::clock::now_ms;
use cellmatrix::config::Config;
use cellmatrix::handlers::driver;
use cellmatrix::invoke::Function;
use cellmatrix::state::{Keys, StartMarker};
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_tests::{Intercept, ingest_samples, moto_store, run_request};
use serde_json::json;

fn config() -> Config {
    let mut c = Config::new("test");
    c.poll_interval = Duration::from_millis(10);
    c.cells_per_worker = 2_000;
    c.request_timeout = Duration::from_secs(120);
    c
}

async fn cancel_a_running_100k_cell_request(store: DynStore) {
    let spec = cellmatrix_lab::synth::SynthSpec {
        tenx_bundles: 10,
        cells_per_tenx_bundle: 10_000,
        smartseq2_bundles: 0,
        n_genes: 500,
        seed: 11,
        ..Default::default()
    };
    cellmatrix_lab::synth::synth(&store, &spec, &Default::default())
        .await
        .unwrap();
    // Every start marker written, kept here: the cleanup removes them afterwards.
    let starts: Arc<Mutex<Vec<StartMarker>>> = Arc::default();
    let seen = starts.clone();
    let recording = Arc::new(Intercept {
        inner: store.clone(),
        on_write: move |key: &str, body: Option<&Bytes>| {
            if let (true, Some(body)) = (key.contains("/started/"), body) {
                let marker: StartMarker = serde_json::from_slice(body).expect("a start marker");
                seen.lock().unwrap().push(marker);
            }
            Ok(())
        },
    });
    // Two workers at a time over 50 tasks: the request is well under way, not done,
    // when it is cancelled.
    let app = App::in_process(config(), recording.clone(), |f| {
        if f == Function::Worker { 2 } else { 4 }
    });
    let body = json!({"filter": {"op": "=", "field": "bundle.assay", "value": "10x"}});
    let answer = driver::handle(&app, "POST", "/v1/matrix", body.to_string().as_bytes()).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.body["id"].as_str().unwrap().to_string();
    let path = format!("/v1/matrix/{id}");
    let waited = Instant::now();
    loop {
        let status = driver::handle(&app, "GET", &path, b"").await;
        assert_eq!(status.body["status"], "Running", "{}", status.body);
        if status.body["progress"]["tasks_done"].as_u64().unwrap() >= 3 {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "{}",
            status.body
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cancel = driver::handle(&app, "DELETE", &path, b"").await;
    // cancel.json is durable once DELETE answers.
    let durable = now_ms();
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    assert_eq!(cancel.body["status"], "Cancelled");
    app.idle().await;

    // Its only caller detached: to it the request is gone, and the run is cancelled.
    let status = driver::handle(&app, "GET", &path, b"").await;
    assert_eq!(status.status, 404, "{}", status.body);
    let keys = Keys::new(&cellmatrix::messages::RequestId::parse(&id).unwrap());
    assert!(store.exists(&keys.cancel()).await.unwrap());
    let starts = starts.lock().unwrap().clone();
    let tasks: std::collections::BTreeSet<&str> = starts
        .iter()
        .filter(|m| m.name.starts_with("task-"))
        .map(|m| m.name.as_str())
        .collect();
    assert!(!tasks.is_empty());
    assert!(
        tasks.len() < 50,
        "every one of the 50 tasks started: the cancel stopped nothing"
    );
    for m in &starts {
        assert!(
            m.at_ms <= durable,
            "{} attempt {} started {} ms after the cancel was durable",
            m.name,
            m.attempt,
            m.at_ms - durable
        );
    }
    // Scratch data and partial output are gone; what a status needs is kept, and the
    // run report.
    let mut left: Vec<String> = store
        .list(&keys.prefix())
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key[keys.prefix().len()..].to_string())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "cancel.json",
            "genes.json",
            "progress.json",
            "report.json",
            "request.json",
            "run.json"
        ]
    );
    assert!(
        store
            .list(&format!("{}/", keys.results()))
            .await
            .unwrap()
            .is_empty()
    );
    println!("cancelled after {} of 50 tasks had started", tasks.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_100k_cell_request_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    cancel_a_running_100k_cell_request(Arc::new(FsStore::open(dir.path()).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_100k_cell_request_on_moto_s3() {
    cancel_a_running_100k_cell_request(Arc::new(moto_store("cancel", "svc").await.unwrap())).await;
}

async fn a_corrupt_chunk_fails_naming_the_bundle(store: DynStore) {
    let bundles = ingest_samples(&store).await;
    let tenx = &bundles[0].fqid;
    let key = format!("bundles/{tenx}/matrix.zarr/X/data/c/0");
    let mut bytes = store.get(&key).await.unwrap().unwrap().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    store.put(&key, bytes.into()).await.unwrap();

    let mut c = config();
    c.cells_per_worker = 64;
    let deadline = c.request_timeout;
    let app = App::in_process(c, store.clone(), |_| 2);
    let started = Instant::now();
    let (id, status) = run_request(
        &app,
        &json!({"filter": {"op": ">=", "field": "cell.n_genes", "value": 0}, "format": "h5ad"}),
    )
    .await;
    assert!(started.elapsed() < deadline, "{:?}", started.elapsed());
    assert_eq!(status["status"], "Failed", "{status}");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains(tenx.as_str()) && message.contains("corrupt"),
        "{message}"
    );
    let keys = Keys::new(&cellmatrix::messages::RequestId::parse(&id).unwrap());
    assert!(!store.exists(&keys.result()).await.unwrap());
    assert!(
        store
            .list(&format!("{}/", keys.results()))
            .await
            .unwrap()
            .is_empty()
    );
    app.idle().await;
    // Nothing else broke: the other bundles still make a matrix.
    let others: Vec<&str> = bundles[1..].iter().map(|b| b.fqid.as_str()).collect();
    let (_, status) = run_request(&app, &json!({"bundle_fqids": others})).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    assert_eq!(status["result"]["n_cells"], others.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_chunk_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    a_corrupt_chunk_fails_naming_the_bundle(Arc::new(FsStore::open(dir.path()).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_chunk_on_moto_s3() {
    a_corrupt_chunk_fails_naming_the_bundle(Arc::new(moto_store("corrupt", "svc").await.unwrap()))
        .await;
}
