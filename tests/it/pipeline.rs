//! The whole pipeline (driver → mappers → workers → reducer) on the in-process invoker,
//! on the filesystem store and on moto S3, checked against an independent computation
//! by anndata/scipy (`tests/python/reference.py`).

use std::sync::Arc;
use std::time::Duration;

use cellmatrix::app::App;
use cellmatrix::config::Config;
use cellmatrix::handlers::driver;
use cellmatrix::invoke::Function;
use cellmatrix::state::{Consolidation, Keys, Plan, get_json};
use cellmatrix::store::DynStore;
use cellmatrix::store::counting::Counting;
use cellmatrix::store::fs::FsStore;
use cellmatrix_tests::{
    RefBundle, check_reference, copy_store, download, ingest_real, ingest_samples, moto_store,
    objects, run_request, selected,
};
use serde_json::{Value, json};

fn config(cells_per_worker: u64, shard_nnz: u64) -> Config {
    let mut c = Config::new("test");
    c.poll_interval = Duration::from_millis(10);
    c.cells_per_worker = cells_per_worker;
    c.bundles_per_mapper = 100;
    c.shard_nnz = shard_nnz;
    // These tests look at plans, markers and the consolidation plan afterwards.
    c.keep_scratch = true;
    c
}

fn fs_store(dir: &tempfile::TempDir) -> DynStore {
    Arc::new(FsStore::open(dir.path()).unwrap())
}

/// Three requests that differ in every respect the reference computes: a mixed cell
/// filter over both kinds, a bundle filter with a gene subset by name and id and a few
/// fields, and an `or`/`not` tree mixing bundle and cell fields.
fn real_requests(bundles: &[RefBundle]) -> Vec<Value> {
    let some_chung: Vec<&str> = bundles
        .iter()
        .filter(|b| b.format == "table")
        .take(50)
        .map(|b| b.fqid.as_str())
        .collect();
    vec![
        json!({"filter": {"op": "and", "value": [
            {"op": "in", "field": "bundle.assay", "value": ["10x", "smartseq2"]},
            {"op": ">=", "field": "cell.n_genes", "value": 800},
            {"op": "<", "field": "cell.pct_mito", "value": 5}
        ]}}),
        json!({"filter": {"op": "=", "field": "bundle.project", "value": "pbmc3k"},
               "genes": ["CD3E", "MS4A1", "MT-CO1", "LYZ", "NKG7"],
               "fields": ["cell.barcode", "cell.total_counts", "bundle.donor"]}),
        json!({"filter": {"op": "or", "value": [
            {"op": "in", "field": "bundle.fqid", "value": some_chung},
            {"op": "and", "value": [
                {"op": "=", "field": "bundle.organ", "value": "blood"},
                {"op": "not", "value": [{"op": ">", "field": "cell.total_counts", "value": 2000}]}
            ]}
        ]}}),
    ]
}

/// Runs the real requests on `store` and checks each with the reference.
async fn real_data_matches_the_reference(store: DynStore) {
    let bundles = ingest_real(&store).await;
    assert_eq!(bundles.len(), 564);
    // Budgets that make several tasks and several consolidation shards; PBMC3k's
    // slices (1,024 cells, MBs) read in pieces, Chung's one-cell bundles whole.
    let mut c = config(1024, 1 << 19);
    c.piece_bytes = 64 << 10;
    let app = App::in_process(c, store.clone(), |_| 4);
    let mut sharded = false;
    for request in real_requests(&bundles) {
        let (id, status) = run_request(&app, &request).await;
        assert_eq!(status["status"], "Succeeded", "{status}");
        let keys = Keys::new(&cellmatrix::messages::RequestId::parse(&id).unwrap());
        let plan: Consolidation = get_json(&store, &keys.consolidate())
            .await
            .unwrap()
            .unwrap();
        sharded |= plan.shards > 1;
        let out = tempfile::tempdir().unwrap();
        let local = download(&store, &keys.output(), out.path()).await;
        let said = check_reference(&local, &selected(&store, &id, &bundles).await, &request);
        assert!(said.contains("ok reference"), "{said}");
        assert_eq!(
            said.split_whitespace().nth(2),
            Some(status["result"]["n_cells"].to_string().as_str()),
            "{said} vs {status}"
        );
    }
    assert!(
        sharded,
        "no request was consolidated in more than one shard"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn real_data_on_the_filesystem_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    real_data_matches_the_reference(fs_store(&dir)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn real_data_on_moto_s3_matches_the_reference() {
    let store: DynStore = Arc::new(moto_store("pipeline", "svc").await.unwrap());
    real_data_matches_the_reference(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn samples_match_the_reference_and_repeats_answer_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = fs_store(&dir);
    let mut bundles = ingest_samples(&store).await;
    bundles.sort_by(|a, b| a.fqid.cmp(&b.fqid));
    let app = App::in_process(config(1024, 60_000), store.clone(), |_| 4);
    let request = json!({"filter": {"op": "and", "value": [
        {"op": "in", "field": "bundle.assay", "value": ["10x", "smartseq2"]},
        {"op": ">=", "field": "cell.n_genes", "value": 500}
    ]}});
    let (id, status) = run_request(&app, &request).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    let location = status["result"]["location"].as_str().unwrap();
    let said = check_reference(std::path::Path::new(location), &bundles, &request);
    assert!(said.contains("ok reference"), "{said}");

    // The same request again: the finished result, at once, with no new invocation.
    let before = app.invoker.counts();
    let again = driver::handle(&app, "POST", "/v1/matrix", request.to_string().as_bytes()).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["id"], id.as_str());
    assert_eq!(again.body["status"], "Succeeded");
    assert_eq!(app.invoker.counts(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_request_in_fresh_stores_gives_byte_identical_zarr() {
    let request = json!({"filter": {"op": ">=", "field": "cell.total_counts", "value": 1500},
                         "fields": ["bundle.project", "cell.barcode", "cell.pct_mito"]});
    // Bundle versions are ingest times: ingest once, then copy the bundles into each
    // fresh store, as two deployments serving the same data would hold them.
    let source_dir = tempfile::tempdir().unwrap();
    let source = fs_store(&source_dir);
    ingest_samples(&source).await;
    let mut results = Vec::new();
    // Different task sizes, worker concurrency, planning by a mapper or by the driver,
    // and each worker and shard event sent once or twice (`hedge_small`): the output
    // must not depend on them.
    for (cells_per_worker, workers, driver_groups, hedge_small) in
        [(1024, 1, 0, 0), (2048, 4, 8, 48)]
    {
        let dir = tempfile::tempdir().unwrap();
        let store = fs_store(&dir);
        copy_store(&source, &store).await;
        let mut c = config(cells_per_worker, 60_000);
        c.driver_groups = driver_groups;
        c.hedge_small = hedge_small;
        // No straggler's copy, so the copies below are counted exactly.
        (c.hedge_percent, c.hedge_factor) = (100, 1_000);
        let app = App::in_process(c, store.clone(), move |f| {
            if f == Function::Worker { workers } else { 4 }
        });
        let (id, status) = run_request(&app, &request).await;
        assert_eq!(status["status"], "Succeeded", "{status}");
        let keys = Keys::new(&cellmatrix::messages::RequestId::parse(&id).unwrap());
        let stored: cellmatrix::state::StoredRequest =
            get_json(&store, &keys.request()).await.unwrap().unwrap();
        if hedge_small > 0 {
            // A request this small: every worker and shard event went out twice.
            assert_eq!(stored.copies, 2);
            let mut tasks = 0;
            for g in 0..stored.groups {
                let plan: Plan = get_json(&store, &keys.plan(g)).await.unwrap().unwrap();
                tasks += plan.tasks.len() as u64;
            }
            let shards = get_json::<Consolidation>(&store, &keys.consolidate())
                .await
                .unwrap()
                .unwrap()
                .shards as u64;
            let counts = app.invoker.counts();
            assert!(tasks <= 48, "{tasks} tasks");
            assert_eq!(counts[&Function::Worker], 2 * tasks);
            assert!(counts[&Function::Reducer] > 2 * shards, "{counts:?}");
        } else {
            assert_eq!(stored.copies, 1);
        }
        app.idle().await;
        let key = format!("results/{id}/matrix.zarr");
        results.push((id, objects(&store, &key).await));
        drop(dir);
    }
    assert_eq!(results[0].0, results[1].0, "the request id differs");
    let (a, b) = (&results[0].1, &results[1].1);
    assert!(a.len() > 10, "{} objects", a.len());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (key, bytes) in a {
        assert!(bytes == &b[key], "{key} differs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invocations_follow_the_plan_and_a_warm_request_reads_no_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let inner = fs_store(&dir);
    let spec = cellmatrix_lab::synth::SynthSpec {
        tenx_bundles: 6,
        cells_per_tenx_bundle: 7_000,
        smartseq2_bundles: 300,
        n_genes: 2_000,
        seed: 7,
        ..Default::default()
    };
    // Row chunks well below the task budget, as real bundles have (1,024 rows against
    // 50,000 cells per task): a task can be filled to within a chunk.
    let opts = cellmatrix_lab::synth::SynthOptions {
        layout: cellmatrix::bundle::Layout {
            rows_per_chunk: 256,
            ..Default::default()
        },
        ..Default::default()
    };
    let report = cellmatrix_lab::synth::synth(&inner, &spec, &opts)
        .await
        .unwrap();
    // Forget the catalog: the first request must learn the bundles from manifests.
    for o in inner.list("catalog/").await.unwrap() {
        inner.delete(&o.key).await.unwrap();
    }
    let counting = Arc::new(Counting::watching(inner.clone(), |k| {
        k.ends_with("/manifest.json")
    }));
    let store: DynStore = counting.clone();
    let mut c = config(4096, 1 << 22);
    c.bundles_per_mapper = 1000;
    // Exactly the planned invocations: no second copies of slow tasks.
    c.hedge = false;
    // The optimum below counts cells: a slice charge small enough that the 300 one-cell
    // bundles do not fill byte budgets of their own (at the default 4 MiB, 128 of them
    // fill a task's 512 MiB).
    c.slice_bytes = 1 << 20;
    let app = App::in_process(c, store.clone(), |_| 4);
    let fqids: Vec<String> = report
        .bundles
        .iter()
        .map(|b| b.manifest().fqid.to_string())
        .collect();

    let (id, status) = run_request(&app, &json!({"bundle_fqids": fqids})).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    assert!(
        !counting.take_watched().is_empty(),
        "the cold request read no manifest"
    );
    let keys = Keys::new(&cellmatrix::messages::RequestId::parse(&id).unwrap());
    let mut planned = 0;
    let groups = fqids.len().div_ceil(1000);
    for g in 0..groups {
        let plan: Plan = get_json(&store, &keys.plan(g as u32))
            .await
            .unwrap()
            .unwrap();
        planned += plan.tasks.len() as u64;
    }
    let counts = app.invoker.counts();
    // The driver plans the first `driver_groups` groups itself.
    let mapped_elsewhere = groups.saturating_sub(app.config.driver_groups) as u64;
    assert_eq!(
        counts.get(&Function::Mapper).copied().unwrap_or(0),
        mapped_elsewhere
    );
    assert_eq!(counts[&Function::Worker], planned);
    let optimum = report.cells.div_ceil(4096);
    assert!(
        planned as f64 <= (optimum as f64 * 1.05).max(optimum as f64 + 1.0),
        "{planned} tasks for an optimum of {optimum}"
    );

    // A warm request (other fields, the same bundles): no manifest is read at all.
    let body = json!({"bundle_fqids": fqids, "fields": ["cell.n_genes"]});
    let (_, status) = run_request(&app, &body).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    assert_eq!(counting.take_watched(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_a_4xx_and_start_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = fs_store(&dir);
    let bundles = ingest_samples(&store).await;
    let app = App::in_process(config(1024, 1 << 20), store.clone(), |_| 2);
    let known = &bundles[0].fqid;
    let unknown = "0a1b2c3d-0000-4000-8000-00000000beef.2019-02-02T065454.662896Z";
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", b"{\"bundle_fqids\": [".to_vec(), 400, "not valid"),
        ("unknown field", json!({"bundle_fqids": [known], "colour": "red"}).to_string().into_bytes(), 400, "colour"),
        ("bad operator", json!({"filter": {"op": "~", "field": "bundle.organ", "value": "x"}}).to_string().into_bytes(), 400, "operator"),
        ("unknown fqid", json!({"bundle_fqids": [known, unknown]}).to_string().into_bytes(), 404, unknown),
        ("list and filter", json!({"bundle_fqids": [known], "filter": {"op": "=", "field": "bundle.organ", "value": "x"}}).to_string().into_bytes(), 400, "only one"),
        ("matches nothing", json!({"filter": {"op": "=", "field": "bundle.organ", "value": "moon"}}).to_string().into_bytes(), 422, "matches none"),
        ("oversized body", format!("{{\"bundle_fqids\": [\"{}\"]}}", "a".repeat(2 << 20)).into_bytes(), 413, "limit"),
        ("unknown gene", json!({"bundle_fqids": [known], "genes": ["NOT-A-GENE"]}).to_string().into_bytes(), 400, "NOT-A-GENE"),
        ("key injection", json!({"bundle_fqids": ["../../etc/passwd"]}).to_string().into_bytes(), 400, "bundle 0"),
        ("bad list key", json!({"bundle_fqids_url": "../x"}).to_string().into_bytes(), 400, "bundle_fqids_url"),
        ("not a list", json!({"bundle_fqids_url": "catalog/gen/000000000001.json"}).to_string().into_bytes(), 400, "under lists/"),
        ("plain http", json!({"bundle_fqids_url": "http://127.0.0.1:9/list"}).to_string().into_bytes(), 400, "scheme"),
        ("loopback https", json!({"bundle_fqids_url": "https://127.0.0.1/list"}).to_string().into_bytes(), 400, "private or special-purpose"),
        ("other port", json!({"bundle_fqids_url": "https://127.0.0.1:9/list"}).to_string().into_bytes(), 400, "port 9"),
        ("NAT64 of a private address", json!({"bundle_fqids_url": "https://[64:ff9b::a00:1]/list"}).to_string().into_bytes(), 400, "NAT64 of 10.0.0.1"),
    ];
    for (what, body, status, needle) in cases {
        let answer = driver::handle(&app, "POST", "/v1/matrix", &body).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        let message = answer.body["message"].as_str().unwrap_or("");
        assert!(message.contains(needle), "{what}: {message}");
    }
    app.idle().await;
    assert!(
        store.list("requests/").await.unwrap().is_empty(),
        "a bad request left state behind"
    );
    let wrong = driver::handle(&app, "PUT", "/v1/matrix", b"{}").await;
    assert_eq!(wrong.status, 405, "{}", wrong.body);
    assert!(wrong.body["message"].as_str().unwrap().contains("POST"));
    for (path, status) in [
        ("/v1/matrix/zzz", 400),
        (&*format!("/v1/matrix/{}", "0".repeat(32)), 404),
    ] {
        assert_eq!(
            driver::handle(&app, "GET", path, b"").await.status,
            status,
            "{path}"
        );
        assert_eq!(
            driver::handle(&app, "DELETE", path, b"").await.status,
            status,
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_from_the_store_or_a_loopback_url_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let store = fs_store(&dir);
    let bundles = ingest_samples(&store).await;
    let list: String = bundles
        .iter()
        .take(5)
        .map(|b| format!("{}\tx\n", b.fqid))
        .collect();
    store
        .put("lists/five.tsv", list.clone().into())
        .await
        .unwrap();
    let mut c = config(1024, 1 << 20);
    c.allow_private_urls = true;
    let app = App::in_process(c, store.clone(), |_| 2);
    let (id_key, status) = run_request(&app, &json!({"bundle_fqids_url": "lists/five.tsv"})).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    assert_eq!(status["progress"]["bundles"], 5);

    // The same list over http on loopback (allowed here by configuration) is the same
    // request: same bundles, same id.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0; 4096];
        let _ = socket.read(&mut buf).await.unwrap();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{list}",
            list.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
    });
    let url = format!("http://{addr}/five.tsv");
    let (id_url, status) = run_request(&app, &json!({"bundle_fqids_url": url})).await;
    server.await.unwrap();
    assert_eq!(status["status"], "Succeeded", "{status}");
    assert_eq!(id_key, id_url);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_request_stops_and_runs_again_when_resubmitted() {
    let dir = tempfile::tempdir().unwrap();
    let store = fs_store(&dir);
    let spec = cellmatrix_lab::synth::SynthSpec {
        tenx_bundles: 4,
        cells_per_tenx_bundle: 5_000,
        smartseq2_bundles: 0,
        n_genes: 3_000,
        seed: 3,
        ..Default::default()
    };
    cellmatrix_lab::synth::synth(&store, &spec, &Default::default())
        .await
        .unwrap();
    // One worker at a time, small tasks: the request is still running when cancelled.
    let app = App::in_process(config(1024, 1 << 20), store.clone(), |f| {
        if f == Function::Worker { 1 } else { 4 }
    });
    let body = json!({"filter": {"op": "=", "field": "bundle.assay", "value": "10x"}});
    let answer = driver::handle(&app, "POST", "/v1/matrix", body.to_string().as_bytes()).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.body["id"].as_str().unwrap().to_string();
    let cancel = driver::handle(&app, "DELETE", &format!("/v1/matrix/{id}"), b"").await;
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    assert_eq!(cancel.body["status"], "Cancelled");
    app.idle().await;
    // Its only caller detached: to it the request is gone, and the run is cancelled.
    let status = driver::handle(&app, "GET", &format!("/v1/matrix/{id}"), b"").await;
    assert_eq!(status.status, 404, "{}", status.body);
    let keys = Keys::new(&cellmatrix::messages::RequestId::parse(&id).unwrap());
    assert!(store.exists(&keys.cancel()).await.unwrap());
    assert!(!store.exists(&keys.result()).await.unwrap());
    let done = store.list(&keys.dones()).await.unwrap().len();
    assert!(done < 20, "{done} of 20 tasks ran after the cancel");

    // Submitted again, it runs to the end.
    let (again, status) = run_request(&app, &body).await;
    assert_eq!(again, id);
    assert_eq!(status["status"], "Succeeded", "{status}");
    assert_eq!(status["result"]["n_cells"], 20_000);
}
