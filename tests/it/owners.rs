//! Owners and the per-caller quota, through the API's real router on the embedded stack,
//! with two callers (and a third for the quota). The invoker starts nothing, so a
//! request stays Running for as long as the test needs.
//!
//! - A request is seen only by the callers who submitted it: to anyone else its status,
//!   files and DELETE are the 404 of an id never seen, word for word.
//! - A second caller submitting the same request joins its run (same id) and may see it.
//! - A DELETE detaches its caller; the run is cancelled when the last one leaves.
//! - A caller at `caller_max_running` Running requests gets 429 with `Retry-After`.
//! - Without a caller (an unsigned request reaching the Lambda function) the matrix
//!   routes are 403; the metadata ones answer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use cellmatrix::app::App;
use cellmatrix::caller::Caller;
use cellmatrix::config::Config;
use cellmatrix::handlers::driver::{self, handle_as};
use cellmatrix::invoke::{Function, Invoker};
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix_tests::ingest_samples;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Accepts every invocation and runs none.
#[derive(Debug)]
struct Nothing;

#[async_trait::async_trait]
impl Invoker for Nothing {
    async fn invoke(&self, _: Function, _: Value) -> Result<(), cellmatrix::Error> {
        Ok(())
    }
    fn counts(&self) -> HashMap<Function, u64> {
        HashMap::new()
    }
}

async fn app(config: impl FnOnce(&mut Config)) -> (tempfile::TempDir, Arc<App>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    let bundles = ingest_samples(&store).await;
    let mut c = Config::new(dir.path().to_str().unwrap());
    config(&mut c);
    let app = App::with_invoker(c, store, Arc::new(Nothing));
    let fqids = bundles.iter().map(|b| b.fqid.to_string()).collect();
    (dir, app, fqids)
}

fn request(fqids: &[String], fields: &[&str]) -> Vec<u8> {
    json!({"bundle_fqids": fqids, "fields": fields})
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_callers_who_submitted_a_request_see_it_and_the_last_to_leave_cancels_it() {
    let (_dir, app, fqids) = app(|_| {}).await;
    let (alice, bob) = (
        Caller::new("arn:aws:iam::111111111111:user/alice").unwrap(),
        Caller::new("arn:aws:iam::111111111111:user/bob").unwrap(),
    );
    let body = request(&fqids[..3], &["cell.barcode"]);
    let posted = handle_as(&app, &alice, "POST", "/v1/matrix", &body).await;
    assert_eq!(posted.status, 202, "{}", posted.body);
    let id = posted.body["id"].as_str().unwrap().to_string();
    let path = format!("/v1/matrix/{id}");
    let files = format!("{path}/files");

    // To bob the request does not exist: the same answer as an id never seen.
    let unknown = format!("/v1/matrix/{}", "0".repeat(32));
    let never = handle_as(&app, &bob, "GET", &unknown, b"").await;
    assert_eq!(never.status, 404);
    for (method, p) in [("GET", &path), ("GET", &files), ("DELETE", &path)] {
        let answer = handle_as(&app, &bob, method, p, b"").await;
        assert_eq!(answer.status, 404, "{method} {p}: {}", answer.body);
        assert_eq!(
            answer.body["message"].as_str().unwrap(),
            never.body["message"]
                .as_str()
                .unwrap()
                .replace(&"0".repeat(32), &id),
            "{method} {p}"
        );
    }
    let mine = handle_as(&app, &alice, "GET", &path, b"").await;
    assert_eq!(
        (mine.status, &mine.body["status"]),
        (200, &json!("Running"))
    );

    // Bob submits the same request: he joins its run.
    let joined = handle_as(&app, &bob, "POST", "/v1/matrix", &body).await;
    assert_eq!(joined.status, 202, "{}", joined.body);
    assert_eq!(joined.body["id"], id.as_str());
    assert_eq!(handle_as(&app, &bob, "GET", &path, b"").await.status, 200);
    // No result yet: its files are a conflict, not a secret.
    assert_eq!(handle_as(&app, &bob, "GET", &files, b"").await.status, 409);

    // Alice leaves: the run goes on for bob, and alice no longer sees it.
    let left = handle_as(&app, &alice, "DELETE", &path, b"").await;
    assert_eq!(left.status, 202, "{}", left.body);
    assert_eq!(left.body["status"], "Running");
    assert_eq!(handle_as(&app, &alice, "GET", &path, b"").await.status, 404);
    assert_eq!(
        handle_as(&app, &bob, "GET", &path, b"").await.body["status"],
        "Running"
    );
    // Bob leaves last: the run is cancelled.
    let last = handle_as(&app, &bob, "DELETE", &path, b"").await;
    assert_eq!(last.status, 202, "{}", last.body);
    assert_eq!(last.body["status"], "Cancelled");
    assert_eq!(handle_as(&app, &bob, "GET", &path, b"").await.status, 404);

    // Submitted again, it runs again, for whoever submits it.
    let again = handle_as(&app, &alice, "POST", "/v1/matrix", &body).await;
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(again.body["status"], "Running");
    assert_eq!(handle_as(&app, &alice, "GET", &path, b"").await.status, 200);
    assert_eq!(handle_as(&app, &bob, "GET", &path, b"").await.status, 404);

    // The store's keys carry no caller's text.
    let keys: Vec<String> = app
        .store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(keys.iter().any(|k| k.contains("/callers/")), "{keys:?}");
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("alice") || k.contains("arn:"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_at_the_quota_gets_429_with_retry_after_until_one_ends() {
    let (_dir, app, fqids) = app(|c| c.caller_max_running = 2).await;
    let carol = Caller::new("arn:aws:iam::111111111111:user/carol").unwrap();
    let dave = Caller::new("arn:aws:iam::111111111111:user/dave").unwrap();
    let bodies: Vec<Vec<u8>> = [
        "cell.barcode",
        "cell.n_genes",
        "cell.total_counts",
        "cell.pct_mito",
    ]
    .iter()
    .map(|field| request(&fqids[..2], &[field]))
    .collect();
    let post = |caller: &Caller, n: usize| {
        let (app, caller, body) = (app.clone(), caller.clone(), bodies[n].clone());
        async move { handle_as(&app, &caller, "POST", "/v1/matrix", &body).await }
    };
    let mut ids = Vec::new();
    for n in 0..2 {
        let answer = post(&carol, n).await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        ids.push(answer.body["id"].as_str().unwrap().to_string());
    }
    let refused = post(&carol, 2).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.retry_after, Some(30));
    assert!(
        refused.body["message"].as_str().unwrap().contains("(2)"),
        "{}",
        refused.body
    );
    // Nothing of the refused request was written.
    let requests = |app: Arc<App>| async move {
        let mut ids: Vec<String> = app
            .store
            .list("requests/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key.split('/').nth(1).unwrap().to_string())
            .collect();
        ids.dedup();
        ids.len()
    };
    assert_eq!(requests(app.clone()).await, 2);
    // Another caller has room; carol joining that run starts nothing, so it passes at
    // her quota, and counts.
    let theirs = post(&dave, 2).await;
    assert_eq!(theirs.status, 202, "{}", theirs.body);
    let joined = post(&carol, 2).await;
    assert_eq!(joined.status, 202, "{}", joined.body);
    assert_eq!(post(&carol, 3).await.status, 429);
    // Two of carol's runs end for her: one cancelled (hers alone), one left to dave.
    let path = |id: &Value| format!("/v1/matrix/{}", id.as_str().unwrap());
    let cancelled = handle_as(&app, &carol, "DELETE", &path(&json!(ids[0])), b"").await;
    assert_eq!(cancelled.body["status"], "Cancelled", "{}", cancelled.body);
    let left = handle_as(&app, &carol, "DELETE", &path(&theirs.body["id"]), b"").await;
    assert_eq!(left.body["status"], "Running", "{}", left.body);
    let admitted = post(&carol, 3).await;
    assert_eq!(admitted.status, 202, "{}", admitted.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_without_a_caller_is_403_on_the_matrix_routes_only() {
    let (_dir, app, fqids) = app(|_| {}).await;
    let send = |method: &str, path: &str, body: Vec<u8>| {
        axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body))
            .unwrap()
    };
    let id = "0".repeat(32);
    for (method, path, body, want) in [
        (
            "POST",
            "/v1/matrix".to_string(),
            request(&fqids[..1], &[]),
            403,
        ),
        ("GET", format!("/v1/matrix/{id}"), vec![], 403),
        ("GET", format!("/v1/matrix/{id}/files"), vec![], 403),
        ("DELETE", format!("/v1/matrix/{id}"), vec![], 403),
        ("GET", "/v1/formats".to_string(), vec![], 200),
        ("GET", "/v1/fields".to_string(), vec![], 200),
    ] {
        let response = driver::router(app.clone())
            .oneshot(send(method, &path, body))
            .await
            .unwrap();
        assert_eq!(response.status(), want, "{method} {path}");
    }
    // Nothing was written for the refused POST.
    assert!(app.store.list("requests/").await.unwrap().is_empty());
}
