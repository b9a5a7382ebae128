//! The status of a Succeeded request stays small however many objects its result holds:
//! it counts them, and `GET /v1/matrix/{id}/files` lists them a page of at most 1,000 at
//! a time. Shown on a real result with 10,000 objects added to it, through the API's
//! router on the embedded stack (a memory store, so the 10,000 writes are quick).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cellmatrix::app::{App, default_limit};
use cellmatrix::caller::Caller;
use cellmatrix::config::Config;
use cellmatrix::handlers::driver::{self, MAX_PAGE};
use cellmatrix::store::DynStore;
use cellmatrix::store::memory::MemoryStore;
use cellmatrix_tests::{ingest_samples, run_request};
use serde_json::{Value, json};

/// The most a status may take.
const STATUS_LIMIT: usize = 64 << 10;
/// Objects added to the result.
const ADDED: usize = 10_000;

#[tokio::test(flavor = "multi_thread")]
async fn the_status_of_a_10000_object_result_is_small_and_its_files_come_in_pages() {
    let store: DynStore = Arc::new(MemoryStore::new());
    let bundles = ingest_samples(&store).await;
    let mut config = Config::new("memory");
    config.poll_interval = Duration::from_millis(10);
    let app = App::in_process(config, store.clone(), default_limit);
    let fqids: Vec<String> = bundles.iter().map(|b| b.fqid.to_string()).collect();
    let (id, status) = run_request(
        &app,
        &json!({"bundle_fqids": &fqids[..4], "fields": ["cell.barcode"]}),
    )
    .await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    let before = status["result"]["n_files"].as_u64().unwrap() as usize;
    let bytes_before = status["result"]["total_bytes"].as_u64().unwrap();
    let prefix = format!("results/{id}/matrix.zarr/extra");
    let writes: Vec<_> = (0..ADDED)
        .map(|n| {
            let store = store.clone();
            let key = format!("{prefix}/{n:05}");
            async move { store.put(&key, Bytes::from_static(b"xy")).await }
        })
        .collect();
    futures::future::try_join_all(writes).await.unwrap();

    let path = format!("/v1/matrix/{id}");
    let answer = driver::handle(&app, "GET", &path, b"").await;
    assert_eq!(answer.status, 200);
    let size = answer.body.to_string().len();
    let result = &answer.body["result"];
    assert_eq!(result["n_files"], before + ADDED, "{result}");
    assert_eq!(result["total_bytes"], bytes_before + 2 * ADDED as u64);
    assert_eq!(result["files_url"], format!("{path}/files"));
    println!(
        "status of a result of {} objects: {size} bytes",
        before + ADDED
    );
    assert!(size < STATUS_LIMIT, "the status is {size} bytes");

    // Every file once, in key order, a page of at most MAX_PAGE at a time.
    let mut paths: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = cursor
            .as_ref()
            .map(|c| format!("?cursor={}", c.replace('/', "%2F")))
            .unwrap_or_default();
        let page = driver::handle(&app, "GET", &format!("{path}/files{query}"), b"").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let files = page.body["files"].as_array().unwrap();
        assert!(files.len() <= MAX_PAGE);
        paths.extend(
            files
                .iter()
                .map(|f| f["path"].as_str().unwrap().to_string()),
        );
        pages += 1;
        match &page.body["next_cursor"] {
            Value::Null => break,
            Value::String(next) => cursor = Some(next.clone()),
            other => panic!("next_cursor {other}"),
        }
    }
    assert_eq!(paths.len(), before + ADDED);
    assert_eq!(pages, (before + ADDED).div_ceil(MAX_PAGE));
    assert!(
        paths.windows(2).all(|w| w[0] < w[1]),
        "in key order, once each"
    );

    // A smaller page, and what is refused.
    let small = driver::handle(&app, "GET", &format!("{path}/files?limit=7"), b"").await;
    assert_eq!(small.body["files"].as_array().unwrap().len(), 7);
    assert_eq!(small.body["next_cursor"], paths[6].as_str());
    for bad in ["?limit=0", "?limit=1001", "?limit=x", "?colour=red"] {
        let refused = driver::handle(&app, "GET", &format!("{path}/files{bad}"), b"").await;
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
        assert!(
            refused.body["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // Another caller sees none of it.
    let other = Caller::new("someone-else").unwrap();
    let theirs = driver::handle_as(&app, &other, "GET", &format!("{path}/files"), b"").await;
    assert_eq!(theirs.status, 404);
    app.idle().await;
}
