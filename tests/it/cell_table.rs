//! The cell table (`GET /v1/matrix/{id}/cells`) of a 50k-cell synthetic request built
//! two workers at a time, on the filesystem (zarr) and on moto S3 (h5ad): while the
//! request runs it streams a partial table, the done tasks' rows, which are rows of the
//! final table in the same order; once it succeeded, the table (CSV and JSON lines)
//! equals the matrix's obs as anndata reads it (`check_cells.py`), a categorical
//! `cell_type` included; to a caller that does not own the request it is a 404.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cellmatrix::app::App;
use cellmatrix::caller::Caller;
use cellmatrix::config::Config;
use cellmatrix::handlers::driver;
use cellmatrix::invoke::Function;
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_tests::{download, moto_store, result_prefix, run_python};
use serde_json::json;

/// One answer of the cells route: status, the coverage headers, the body.
#[derive(Debug)]
struct Table {
    status: u16,
    covered: u64,
    total: Option<u64>,
    complete: bool,
    cells: u64,
    content_type: String,
    body: String,
}

async fn cells(app: &App, caller: &Caller, id: &str, accept: &str) -> Table {
    let request = axum::http::Request::builder()
        .method("GET")
        .uri(format!("/v1/matrix/{id}/cells"))
        .header("accept", accept)
        .extension(caller.clone())
        .body(axum::body::Body::empty())
        .unwrap();
    let response = driver::send(app, request).await;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let number = |name: &str| header(name).map(|v| v.parse::<u64>().unwrap());
    let (covered, total, cells) = (
        number(driver::TASKS_COVERED).unwrap_or(0),
        number(driver::TASKS_TOTAL),
        number(driver::CELLS).unwrap_or(0),
    );
    let complete = header(driver::COMPLETE).as_deref() == Some("true");
    let content_type = header("content-type").unwrap_or_default();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the table streams to its end");
    Table {
        status,
        covered,
        total,
        complete,
        cells,
        content_type,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// Whether `part`'s lines appear in `all` in the same order.
fn subsequence(part: &[&str], all: &[&str]) -> bool {
    let mut it = all.iter();
    part.iter().all(|p| it.any(|a| a == p))
}

async fn the_cell_table_comes_first_and_equals_the_obs(store: DynStore, format: &str) {
    let spec = cellmatrix_lab::synth::SynthSpec {
        tenx_bundles: 10,
        cells_per_tenx_bundle: 5_000,
        smartseq2_bundles: 0,
        n_genes: 300,
        seed: 23,
        rare_every: 4,
        ..Default::default()
    };
    cellmatrix_lab::synth::synth(&store, &spec, &Default::default())
        .await
        .unwrap();
    let mut config = Config::new("test");
    config.poll_interval = Duration::from_millis(10);
    config.cells_per_worker = 2_000;
    config.request_timeout = Duration::from_secs(300);
    let app = App::in_process(config, store.clone(), |f| {
        if f == Function::Worker { 2 } else { 4 }
    });
    let body = json!({
        "filter": {"op": "=", "field": "bundle.assay", "value": "10x"},
        "fields": ["cell.cell_type", "cell.n_genes", "bundle.organ", "cell.total_counts", "cell.barcode"],
        "format": format,
    });
    let answer = driver::handle(&app, "POST", "/v1/matrix", body.to_string().as_bytes()).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.body["id"].as_str().unwrap().to_string();
    let me = Caller::local();

    // A stranger sees no table, as it sees no request.
    let stranger = Caller::new("arn:aws:iam::123456789012:user/stranger").unwrap();
    let theirs = cells(&app, &stranger, &id, "text/csv").await;
    assert_eq!(theirs.status, 404, "{}", theirs.body);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&theirs.body).unwrap()["message"],
        format!("no request {id}")
    );
    let refused = cells(&app, &me, &id, "image/png").await;
    assert_eq!(refused.status, 406, "{}", refused.body);

    // A partial table, non-empty, while the matrix is being built.
    let started = Instant::now();
    let (partial, partial_jsonl) = loop {
        let csv = cells(&app, &me, &id, "text/csv").await;
        assert_eq!(csv.status, 200, "{}", csv.body);
        assert!(
            !csv.complete,
            "the table was complete before a partial one was seen: {csv:?}"
        );
        if csv.cells > 0 {
            let jsonl = cells(&app, &me, &id, "application/x-ndjson").await;
            break (csv, jsonl);
        }
        assert!(started.elapsed() < Duration::from_secs(240));
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let status = driver::handle(&app, "GET", &format!("/v1/matrix/{id}"), b"").await;
    assert_eq!(status.body["status"], "Running", "{}", status.body);
    assert!(partial.covered >= 1);
    assert!(
        partial.total.is_none_or(|t| t > partial.covered),
        "{partial:?}"
    );
    assert_eq!(partial.content_type, "text/csv; charset=utf-8");
    assert_eq!(partial.body.lines().count() as u64, partial.cells + 1);
    assert_eq!(partial_jsonl.content_type, "application/x-ndjson");
    assert!(partial_jsonl.body.lines().count() as u64 >= partial.cells);

    // The end.
    let ended = loop {
        let status = driver::handle(&app, "GET", &format!("/v1/matrix/{id}"), b"").await;
        if status.body["status"] != "Running" {
            break status.body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{}",
            status.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ended["status"], "Succeeded", "{ended}");
    app.idle().await;
    let n_cells = ended["result"]["n_cells"].as_u64().unwrap();
    assert_eq!(n_cells, 50_000);
    let csv = cells(&app, &me, &id, "text/csv").await;
    let jsonl = cells(&app, &me, &id, "application/x-ndjson").await;
    for t in [&csv, &jsonl] {
        assert_eq!(t.status, 200, "{}", t.body);
        assert!(t.complete);
        assert_eq!(t.cells, n_cells);
        assert_eq!(Some(t.covered), t.total);
        assert_eq!(Some(t.covered), ended["progress"]["tasks_total"].as_u64());
    }
    assert!(partial.covered < csv.covered);
    // The partial table's rows are the final one's, in the same order.
    let all: Vec<&str> = csv.body.lines().collect();
    let some: Vec<&str> = partial.body.lines().collect();
    assert_eq!(some[0], all[0], "the header");
    assert!(some.len() < all.len());
    assert!(
        subsequence(&some[1..], &all[1..]),
        "partial rows out of the final order"
    );
    let all_jsonl: Vec<&str> = jsonl.body.lines().collect();
    let some_jsonl: Vec<&str> = partial_jsonl.body.lines().collect();
    assert!(subsequence(&some_jsonl, &all_jsonl));

    // The complete table is the matrix's obs, as anndata reads it.
    let dir = tempfile::tempdir().unwrap();
    let local = download(&store, &result_prefix(&store, &ended), dir.path()).await;
    let output = match format {
        "h5ad" => local.join("matrix.h5ad"),
        _ => local,
    };
    let (csv_path, jsonl_path) = (dir.path().join("cells.csv"), dir.path().join("cells.jsonl"));
    std::fs::write(&csv_path, &csv.body).unwrap();
    std::fs::write(&jsonl_path, &jsonl.body).unwrap();
    let out = run_python(
        "check_cells.py",
        &[
            output.as_os_str(),
            std::ffi::OsStr::new(format),
            csv_path.as_os_str(),
            jsonl_path.as_os_str(),
        ],
    );
    assert!(out.contains(&format!("ok cells {n_cells}")), "{out}");
    println!(
        "{format}: a partial table of {} cells ({} of {:?} tasks), then the whole; {:.2} s in all; {}",
        partial.cells,
        partial.covered,
        partial.total,
        started.elapsed().as_secs_f64(),
        out.trim()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cell_table_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    the_cell_table_comes_first_and_equals_the_obs(store, "zarr").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cell_table_on_moto_s3() {
    let store: DynStore = Arc::new(moto_store("cells", "svc").await.unwrap());
    the_cell_table_comes_first_and_equals_the_obs(store, "h5ad").await;
}
