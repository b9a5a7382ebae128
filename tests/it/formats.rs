//! The output formats (h5ad, loom, mtx, csv), each opened by its real reader — anndata
//! and scanpy, loompy, scipy.io.mmread with pandas, scanpy.read_10x_mtx and Seurat's
//! Read10X, pandas.read_csv — and compared with the independent reference computation
//! (`tests/python/reference.py`).

use std::sync::Arc;
use std::time::Duration;

use cellmatrix::app::App;
use cellmatrix::config::Config;
use cellmatrix::handlers::driver;
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_tests::{
    RefBundle, check_reference, copy_store, download, ingest_real, ingest_samples, moto_store,
    objects, result_prefix, run_request, selected,
};
use serde_json::{Value, json};

fn config() -> Config {
    let mut c = Config::new("test");
    c.poll_interval = Duration::from_millis(10);
    c.cells_per_worker = 1024;
    c.bundles_per_mapper = 100;
    c.shard_nnz = 1 << 19;
    c
}

fn fs_store(dir: &tempfile::TempDir) -> DynStore {
    Arc::new(FsStore::open(dir.path()).unwrap())
}

/// Runs `request` and checks its result, as downloaded, with the reference.
async fn check(app: &App, store: &DynStore, bundles: &[RefBundle], request: &Value) {
    let (id, status) = run_request(app, request).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    let result = &status["result"];
    let format = request["format"].as_str().unwrap();
    let conversion = &result["conversion"];
    assert!(
        conversion["peak_rss_bytes"].as_u64().unwrap() > 0,
        "{status}"
    );
    let listed = driver::handle(app, "GET", &format!("/v1/matrix/{id}/files"), b"").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["next_cursor"], Value::Null);
    let files: Vec<&str> = listed.body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(result["n_files"], files.len(), "{status}");
    let sizes: u64 = listed.body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["size"].as_u64().unwrap())
        .sum();
    assert_eq!(result["total_bytes"], sizes, "{status}");
    let want = cellmatrix::convert::Format::parse(format)
        .unwrap()
        .info()
        .files;
    assert_eq!(files, want, "{status}");
    let prefix = result_prefix(store, &status);
    let out = tempfile::tempdir().unwrap();
    let local = download(store, &prefix, out.path()).await;
    // The genes are the union over the bundles the driver selected: those the catalog
    // could not rule out, which for an empty result need not be all of them.
    let said = check_reference(&local, &selected(store, &id, bundles).await, request);
    assert!(said.contains("ok reference"), "{said}");
    assert_eq!(
        said.split_whitespace().nth(2),
        Some(result["n_cells"].to_string().as_str()),
        "{said} vs {status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn real_data_in_every_format_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let store = fs_store(&dir);
    let bundles = ingest_real(&store).await;
    let app = App::in_process(config(), store.clone(), |_| 4);
    let mixed = json!({"op": "and", "value": [
        {"op": "in", "field": "bundle.assay", "value": ["10x", "smartseq2"]},
        {"op": ">=", "field": "cell.n_genes", "value": 800},
        {"op": "<", "field": "cell.pct_mito", "value": 5}
    ]});
    let chung = json!({"op": "and", "value": [
        {"op": "=", "field": "bundle.project", "value": "chung-park-2017"},
        {"op": ">=", "field": "cell.n_genes", "value": 3000}
    ]});
    let subset = json!({"filter": {"op": "=", "field": "bundle.project", "value": "pbmc3k"},
        "genes": ["CD3E", "MS4A1", "MT-CO1", "LYZ", "NKG7"],
        "fields": ["cell.barcode", "cell.total_counts", "bundle.donor"]});
    let mut requests = Vec::new();
    for format in ["h5ad", "mtx", "csv"] {
        requests.push(json!({"filter": mixed, "format": format}));
    }
    // Loom is dense and bounded: the SmartSeq2 cells over every gene, and a gene subset.
    requests.push(json!({"filter": chung, "format": "loom"}));
    for format in ["h5ad", "loom", "mtx", "csv"] {
        let mut r = subset.clone();
        r["format"] = json!(format);
        requests.push(r);
    }
    for request in &requests {
        check(&app, &store, &bundles, request).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn formats_through_moto_s3_match_the_reference() {
    let store: DynStore = Arc::new(moto_store("formats", "svc").await.unwrap());
    let mut bundles = ingest_samples(&store).await;
    bundles.sort_by(|a, b| a.fqid.cmp(&b.fqid));
    let app = App::in_process(config(), store.clone(), |_| 4);
    for format in ["h5ad", "mtx"] {
        let request = json!({"filter": {"op": ">=", "field": "cell.n_genes", "value": 300},
                             "format": format});
        check(&app, &store, &bundles, &request).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_with_no_cells_converts_to_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let store = fs_store(&dir);
    let mut bundles = ingest_samples(&store).await;
    bundles.sort_by(|a, b| a.fqid.cmp(&b.fqid));
    let app = App::in_process(config(), store.clone(), |_| 4);
    for format in ["h5ad", "loom", "mtx", "csv"] {
        // Inside the range of some bundles' counts (so the catalog cannot rule them out
        // and they are read), and no cell's: counts are whole.
        let request = json!({"filter": {"op": "=", "field": "cell.total_counts", "value": 1500.5},
                             "format": format, "genes": ["CD3E", "LYZ"]});
        check(&app, &store, &bundles, &request).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_format_is_byte_identical_across_runs() {
    let source_dir = tempfile::tempdir().unwrap();
    let source = fs_store(&source_dir);
    ingest_samples(&source).await;
    for format in ["h5ad", "loom", "mtx", "csv"] {
        let request = json!({"filter": {"op": ">=", "field": "cell.total_counts", "value": 1500},
                             "fields": ["bundle.project", "cell.barcode", "cell.pct_mito"],
                             "format": format});
        let mut results = Vec::new();
        for (cells_per_worker, workers) in [(1024, 1), (2048, 4)] {
            let dir = tempfile::tempdir().unwrap();
            let store = fs_store(&dir);
            copy_store(&source, &store).await;
            let mut c = config();
            c.cells_per_worker = cells_per_worker;
            let app = App::in_process(c, store.clone(), move |_| workers);
            let (id, status) = run_request(&app, &request).await;
            assert_eq!(status["status"], "Succeeded", "{status}");
            results.push((id.clone(), objects(&store, &format!("results/{id}")).await));
        }
        assert_eq!(results[0].0, results[1].0);
        let (a, b) = (&results[0].1, &results[1].1);
        assert!(!a.is_empty(), "{format}: no files");
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (key, bytes) in a {
            assert!(bytes == &b[key], "{format}: {key} differs between runs");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dense_formats_over_the_limit_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = fs_store(&dir);
    ingest_samples(&store).await;
    let mut c = config();
    c.csv_max_bytes = 1 << 20;
    c.loom_max_bytes = 1 << 20;
    let app = App::in_process(c, store.clone(), |_| 4);
    for format in ["csv", "loom"] {
        let body = json!({"filter": {"op": ">=", "field": "cell.n_genes", "value": 1},
                          "format": format});
        let answer = driver::handle(&app, "POST", "/v1/matrix", body.to_string().as_bytes()).await;
        assert_eq!(answer.status, 422, "{}", answer.body);
        let message = answer.body["message"].as_str().unwrap();
        for needle in ["h5ad", "mtx", "limit", format] {
            assert!(message.contains(needle), "{message}");
        }
    }
    assert!(store.list("requests/").await.unwrap().is_empty());
    assert_eq!(app.invoker.counts().values().sum::<u64>(), 0);
    // The same request in a sparse format runs.
    let body = json!({"filter": {"op": ">=", "field": "cell.n_genes", "value": 1},
                      "format": "h5ad"});
    let (_, status) = run_request(&app, &body).await;
    assert_eq!(status["status"], "Succeeded", "{status}");

    // GET /v1/formats describes every format.
    let formats = driver::handle(&app, "GET", "/v1/formats", b"").await;
    assert_eq!(formats.status, 200);
    let names: Vec<&str> = formats.body["formats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["zarr", "h5ad", "loom", "mtx", "csv"]);
}
