//! The collector's handling of failed invocations: a retryable store error is retried,
//! and the deadline ends a request that cannot finish, naming what is missing (a
//! corrupt bundle: `cancel_and_corrupt.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cellmatrix::app::App;
use cellmatrix::config::Config;
use cellmatrix::store::fs::FsStore;
use cellmatrix::store::{DynStore, StoreError};
use cellmatrix_tests::{Intercept, ingest_samples, run_request};
use serde_json::json;

/// Fails the first `failures` writes of worker parts with a transient error (503-like).
fn flaky_parts(inner: DynStore, failures: u64) -> DynStore {
    failing_writes(inner, vec![("/parts/", failures)])
}

/// Fails, for each `(infix, n)`, the first `n` writes of keys containing `infix` with a
/// transient error (503-like).
fn failing_writes(inner: DynStore, rules: Vec<(&'static str, u64)>) -> DynStore {
    let rules: Vec<(&str, AtomicU64)> = rules
        .into_iter()
        .map(|(infix, n)| (infix, AtomicU64::new(n)))
        .collect();
    Arc::new(Intercept {
        inner,
        on_write: move |key: &str, _: Option<&bytes::Bytes>| {
            let fails = rules.iter().any(|(infix, left)| {
                key.contains(infix)
                    && left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
            });
            if fails {
                return Err(StoreError::Transient {
                    op: "put",
                    key: key.into(),
                    message: "SlowDown (injected)".into(),
                });
            }
            Ok(())
        },
    })
}

fn config() -> Config {
    let mut c = Config::new("test");
    c.poll_interval = Duration::from_millis(10);
    c.cells_per_worker = 1024;
    c
}

const REQUEST: &str = r#"{"filter": {"op": ">=", "field": "cell.n_genes", "value": 300}}"#;

/// The samples ingested into a file store in `dir` and [`REQUEST`] run on it without
/// faults; then the request and its result forgotten, the bundles kept, for a second run
/// to compare with: the store, the clean run's app, the request and its id and status.
async fn a_clean_run_forgotten(
    dir: &tempfile::TempDir,
) -> (
    DynStore,
    Arc<App>,
    serde_json::Value,
    String,
    serde_json::Value,
) {
    let inner: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    ingest_samples(&inner).await;
    let request: serde_json::Value = serde_json::from_str(REQUEST).unwrap();
    let clean = App::in_process(config(), inner.clone(), |_| 2);
    let (id, status) = run_request(&clean, &request).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    clean.idle().await;
    for prefix in ["requests/", "results/"] {
        for o in inner.list(prefix).await.unwrap() {
            inner.delete(&o.key).await.unwrap();
        }
    }
    (inner, clean, request, id, status)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retryable_failure_is_retried_and_the_result_is_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, _, request, id, status) = a_clean_run_forgotten(&dir).await;
    let want = status["result"]["nnz"].clone();
    // Run again with two failing part writes.
    let flaky = flaky_parts(inner.clone(), 2);
    // One try per store call: the failures reach the worker, and the collector retries.
    let mut c = config();
    c.store_attempts = 1;
    let app = App::in_process(c, flaky, |_| 2);
    let (again, status) = run_request(&app, &request).await;
    assert_eq!(again, id);
    assert_eq!(status["status"], "Succeeded", "{status}");
    assert_eq!(status["result"]["nnz"], want);
    let workers = app.invoker.counts()[&cellmatrix::invoke::Function::Worker];
    let tasks = status["progress"]["tasks_total"].as_u64().unwrap();
    assert!(
        workers > tasks,
        "{workers} worker invocations for {tasks} tasks: no retry"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deadline_fails_a_request_that_cannot_finish() {
    let dir = tempfile::tempdir().unwrap();
    let inner: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    ingest_samples(&inner).await;
    let flaky = flaky_parts(inner, u64::MAX);
    let mut c = config();
    c.task_attempts = u32::MAX;
    c.request_timeout = Duration::from_secs(1);
    let app = App::in_process(c, flaky, |_| 2);
    let (_, status) = run_request(
        &app,
        &json!({"filter": {"op": "=", "field": "bundle.assay", "value": "10x"}}),
    )
    .await;
    assert_eq!(status["status"], "Failed", "{status}");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("deadline") && message.contains("never finished"),
        "{message}"
    );
}

/// Refuses every invocation, as a throttled or misconfigured Lambda would.
#[derive(Debug)]
struct Refusing;

#[async_trait::async_trait]
impl cellmatrix::invoke::Invoker for Refusing {
    async fn invoke(
        &self,
        function: cellmatrix::invoke::Function,
        _payload: serde_json::Value,
    ) -> Result<(), cellmatrix::Error> {
        Err(cellmatrix::Error::Conflict(format!(
            "{function}: access denied (injected)"
        )))
    }
    fn counts(&self) -> std::collections::HashMap<cellmatrix::invoke::Function, u64> {
        Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_cannot_start_is_failed_and_runs_when_submitted_again() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    ingest_samples(&store).await;
    let body = REQUEST.as_bytes();
    let broken = App::with_invoker(config(), store.clone(), Arc::new(Refusing));
    let answer = cellmatrix::handlers::driver::handle(&broken, "POST", "/v1/matrix", body).await;
    assert_eq!(answer.status, 500, "{}", answer.body);
    // The detail goes to the log; the answer names a correlation id.
    let message = answer.body["message"].as_str().unwrap();
    assert!(
        message.starts_with("internal error (correlation id ") && !message.contains("denied"),
        "{message}"
    );
    let request: serde_json::Value = serde_json::from_str(REQUEST).unwrap();
    let app = App::in_process(config(), store.clone(), |_| 2);
    let (_, status) = run_request(&app, &request).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
}

/// Lambda as seen by a task whose process dies every time (out of memory, say): the
/// handler never runs, so nothing records the failure but Lambda itself, which sends its
/// record to the on-failure destination, the reducer.
#[derive(Debug)]
struct Dying {
    inner: Arc<cellmatrix::invoke::InProcess>,
    deaths: AtomicU64,
}

#[async_trait::async_trait]
impl cellmatrix::invoke::Invoker for Dying {
    async fn invoke(
        &self,
        function: cellmatrix::invoke::Function,
        payload: serde_json::Value,
    ) -> Result<(), cellmatrix::Error> {
        let dies = function == cellmatrix::invoke::Function::Worker
            && self
                .deaths
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if !dies {
            return self.inner.invoke(function, payload).await;
        }
        let record = json!({
            "version": "1.0",
            "timestamp": "2026-11-21T10:15:42.118Z",
            "requestContext": {
                "requestId": "c2a8f0e4-6b1d-4f3a-9c7e-5d2b8a1f0e63",
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:cm-worker:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3
            },
            "requestPayload": payload,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorType": "Runtime.ExitError", "errorMessage": "signal: killed (injected)"}
        });
        self.inner
            .invoke(cellmatrix::invoke::Function::Reducer, record)
            .await
    }
    fn counts(&self) -> std::collections::HashMap<cellmatrix::invoke::Function, u64> {
        self.inner.counts()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_dies_silently_is_retried_from_lambdas_failure_record() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    ingest_samples(&store).await;
    let request: serde_json::Value = serde_json::from_str(REQUEST).unwrap();
    let clean = App::in_process(config(), store.clone(), |_| 2);
    let (_, want) = run_request(&clean, &request).await;
    assert_eq!(want["status"], "Succeeded", "{want}");
    // The result is seen as soon as it is committed; the collector may still be
    // cleaning up, and must not write into the run below.
    clean.idle().await;
    for prefix in ["requests/", "results/"] {
        for o in store.list(prefix).await.unwrap() {
            store.delete(&o.key).await.unwrap();
        }
    }

    // Without the record nothing would retry the dead tasks, and the request would fail
    // at this deadline.
    let mut c = config();
    c.request_timeout = Duration::from_secs(60);
    let inner = Arc::new(cellmatrix::invoke::InProcess::new(|_| 2));
    let dying = Arc::new(Dying {
        inner: inner.clone(),
        deaths: AtomicU64::new(2),
    });
    let app = App::with_invoker(c, store.clone(), dying.clone());
    let target: Arc<dyn cellmatrix::invoke::Dispatch> = app.clone();
    inner.bind(Arc::downgrade(&target));
    let (_, status) = run_request(&app, &request).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    assert_eq!(status["result"]["nnz"], want["result"]["nnz"]);
    assert_eq!(dying.deaths.load(Ordering::SeqCst), 0, "no task died");
}

/// Runs each consolidation shard inside the collector's `Invoke` call, `copies` of it at
/// once (a duplicate delivery), so the collector cannot look again until every shard it
/// launched has returned: whatever commits the result before then is a shard.
#[derive(Debug)]
struct InlineShards {
    inner: Arc<cellmatrix::invoke::InProcess>,
    app: std::sync::OnceLock<std::sync::Weak<App>>,
    copies: usize,
    /// Shards run, and of them how many found the result committed when they returned.
    shards: AtomicU64,
    committed: AtomicU64,
}

impl InlineShards {
    /// An app over `store` with `config` whose shards run inline, `copies` at once.
    fn app(config: Config, store: DynStore, copies: usize) -> (Arc<App>, Arc<InlineShards>) {
        let inner = Arc::new(cellmatrix::invoke::InProcess::new(|_| 2));
        let inline = Arc::new(InlineShards {
            inner: inner.clone(),
            app: std::sync::OnceLock::new(),
            copies,
            shards: AtomicU64::new(0),
            committed: AtomicU64::new(0),
        });
        let app = App::with_invoker(config, store, inline.clone());
        let target: Arc<dyn cellmatrix::invoke::Dispatch> = app.clone();
        inner.bind(Arc::downgrade(&target));
        inline.app.set(Arc::downgrade(&app)).unwrap();
        (app, inline)
    }
}

#[async_trait::async_trait]
impl cellmatrix::invoke::Invoker for InlineShards {
    async fn invoke(
        &self,
        function: cellmatrix::invoke::Function,
        payload: serde_json::Value,
    ) -> Result<(), cellmatrix::Error> {
        if function != cellmatrix::invoke::Function::Reducer
            || payload["mode"]["kind"] != "consolidate"
        {
            return self.inner.invoke(function, payload).await;
        }
        let app = self.app.get().and_then(std::sync::Weak::upgrade).unwrap();
        let event: cellmatrix::messages::ReducerEvent = serde_json::from_value(payload).unwrap();
        let keys = cellmatrix::state::Keys::new(&event.request_id);
        let runs =
            (0..self.copies).map(|_| cellmatrix::handlers::reducer::handle(&app, event.clone()));
        futures::future::try_join_all(runs).await?;
        self.shards.fetch_add(1, Ordering::SeqCst);
        if app.store.exists(&keys.result()).await? {
            self.committed.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
    fn counts(&self) -> std::collections::HashMap<cellmatrix::invoke::Function, u64> {
        self.inner.counts()
    }
    async fn idle(&self) {
        self.inner.idle().await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_shard_commits_the_result_without_waiting_for_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    ingest_samples(&store).await;
    let request: serde_json::Value = serde_json::from_str(REQUEST).unwrap();
    let clean = App::in_process(config(), store.clone(), |_| 2);
    let (_, want) = run_request(&clean, &request).await;
    assert_eq!(want["status"], "Succeeded", "{want}");
    // The result is seen as soon as it is committed; the collector may still be
    // cleaning up, and must not write into the run below.
    clean.idle().await;
    for prefix in ["requests/", "results/"] {
        for o in store.list(prefix).await.unwrap() {
            store.delete(&o.key).await.unwrap();
        }
    }

    let mut c = config();
    c.shard_nnz = 1 << 12;
    let (app, inline) = InlineShards::app(c, store.clone(), 1);
    let (_, status) = run_request(&app, &request).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    assert_eq!(status["result"]["nnz"], want["result"]["nnz"]);
    // The status sees the result before the shard that wrote it has returned.
    app.idle().await;
    let shards = inline.shards.load(Ordering::SeqCst);
    assert!(shards > 1, "{shards} shards");
    // The last to return found it there (the ones before it, if they returned later,
    // too); the collector could not have written it meanwhile.
    assert!(inline.committed.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_root_group_is_written_only_after_every_shard_and_the_other_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let fs: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    ingest_samples(&fs).await;
    let request: serde_json::Value = serde_json::from_str(REQUEST).unwrap();
    // Every write of the output's metadata and of the shard markers, in order.
    let written = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = written.clone();
    let store: DynStore = Arc::new(Intercept {
        inner: fs.clone(),
        on_write: move |key: &str, _: Option<&bytes::Bytes>| {
            let output = key.starts_with("results/") && key.ends_with("zarr.json");
            if output || (key.starts_with("requests/") && key.contains("/shards/")) {
                log.lock().unwrap().push(key.to_string());
            }
            Ok(())
        },
    });
    let mut c = config();
    c.shard_nnz = 1 << 12;
    // Every shard twice at once: the last shard's two copies each find every marker,
    // and the collector looks again at once when they return.
    let (app, _) = InlineShards::app(c, store.clone(), 2);
    let (_, status) = run_request(&app, &request).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    app.idle().await;
    let written = written.lock().unwrap();
    let is_root = |k: &str| k.ends_with("matrix.zarr/zarr.json");
    let markers: std::collections::BTreeSet<&String> =
        written.iter().filter(|k| k.contains("/shards/")).collect();
    let metadata: std::collections::BTreeSet<&String> = written
        .iter()
        .filter(|k| k.starts_with("results/") && !is_root(k))
        .collect();
    assert!(markers.len() > 1, "{} shards", markers.len());
    assert!(metadata.len() > 10, "{written:?}");
    let roots: Vec<usize> = (0..written.len())
        .filter(|&i| is_root(&written[i]))
        .collect();
    assert!(!roots.is_empty(), "{written:?}");
    // Whoever writes the root group (a last shard, its twin, the collector) writes it
    // after every shard's marker and every other metadata document: the output is an
    // AnnData object only once complete.
    for &i in &roots {
        let before: std::collections::BTreeSet<&String> = written[..i].iter().collect();
        for key in markers.iter().chain(metadata.iter()) {
            assert!(
                before.contains(key),
                "root group written before {key}: {written:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_record_that_races_the_end_of_its_request_leaves_no_error_marker() {
    let dir = tempfile::tempdir().unwrap();
    let fs: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    // Lambda's on-failure record of a worker's event, as the template delivers it.
    let record: cellmatrix::messages::FailureRecord =
        serde_json::from_str(include_str!("../../events/reducer-on-failure.json")).unwrap();
    let id = record.request_payload["request_id"].as_str().unwrap();
    let keys = cellmatrix::state::Keys::new(&cellmatrix::messages::RequestId::parse(id).unwrap());
    // The request's result lands, and its scratch data goes, between the failure
    // handler's look at whether the request ended and its error marker's write.
    let result = dir.path().join(keys.result());
    let store: DynStore = Arc::new(Intercept {
        inner: fs.clone(),
        on_write: move |key: &str, _: Option<&bytes::Bytes>| {
            if key.contains("/errors/") {
                std::fs::create_dir_all(result.parent().unwrap()).unwrap();
                std::fs::write(&result, b"{}").unwrap();
            }
            Ok(())
        },
    });
    let app = App::in_process(config(), store, |_| 1);
    cellmatrix::handlers::reducer::handle_input(
        &app,
        cellmatrix::messages::ReducerInput::Failure(Box::new(record)),
        None,
    )
    .await
    .unwrap();
    assert!(fs.get(&keys.result()).await.unwrap().is_some());
    let left: Vec<String> = fs
        .list(&keys.prefix())
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .filter(|k| !k.ends_with("result.json"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "scratch data left");
}

#[tokio::test(flavor = "multi_thread")]
async fn planning_that_fails_in_the_driver_goes_to_a_mapper_and_the_result_is_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, clean, request, id, status) = a_clean_run_forgotten(&dir).await;
    assert!(clean.config.driver_groups > 0);
    let want = status["result"].clone();
    let mappers = |app: &App| {
        let counts = app.invoker.counts();
        counts
            .get(&cellmatrix::invoke::Function::Mapper)
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        mappers(&clean),
        0,
        "the driver plans a small request itself"
    );
    // The first write of the plan fails, and so does that of the error marker the
    // failed planning then leaves for the collector: only the driver knows.
    let flaky = failing_writes(inner.clone(), vec![("/plans/", 1), ("/errors/", 1)]);
    let mut c = config();
    c.store_attempts = 1;
    // Were the group left to the collector, it would wait for this.
    c.request_timeout = Duration::from_secs(20);
    let app = App::in_process(c, flaky, |_| 2);
    let (again, status) = run_request(&app, &request).await;
    assert_eq!(again, id);
    assert_eq!(status["status"], "Succeeded", "{status}");
    assert_eq!(mappers(&app), 1, "no mapper took the group over");
    for field in ["n_cells", "n_genes", "nnz"] {
        assert_eq!(status["result"][field], want[field], "{field}");
    }
}

/// Lambda as seen by a driver whose process stopped: what it invokes never runs.
#[derive(Debug, Default)]
struct Vanishing;

#[async_trait::async_trait]
impl cellmatrix::invoke::Invoker for Vanishing {
    async fn invoke(
        &self,
        _function: cellmatrix::invoke::Function,
        _payload: serde_json::Value,
    ) -> Result<(), cellmatrix::Error> {
        Ok(())
    }
    fn counts(&self) -> std::collections::HashMap<cellmatrix::invoke::Function, u64> {
        Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_driver_that_stops_while_planning_leaves_its_group_to_a_mapper() {
    use cellmatrix::handlers::{driver, invoke_collector};
    let dir = tempfile::tempdir().unwrap();
    let inner: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    ingest_samples(&inner).await;
    // The driver stops between its group's task documents and its plan: the plan and
    // the error marker are never written, and nothing it invokes runs (a timeout or a
    // crash of the driver, which API Gateway does not retry).
    let stopped = failing_writes(inner.clone(), vec![("/plans/", 1), ("/errors/", 1)]);
    let mut c = config();
    c.store_attempts = 1;
    // Were the group taken for running, the request would wait for this.
    c.request_timeout = Duration::from_secs(20);
    let driver_app = App::with_invoker(c, stopped, Arc::new(Vanishing));
    let answer = driver::handle(&driver_app, "POST", "/v1/matrix", REQUEST.as_bytes()).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.body["id"].as_str().unwrap().to_string();
    let request_id = cellmatrix::messages::RequestId::parse(&id).unwrap();
    let keys = cellmatrix::state::Keys::new(&request_id);
    assert!(inner.get(&keys.plan(0)).await.unwrap().is_none());

    // A collector on a working stack takes the group for lost and gives it to a mapper.
    let mut c = config();
    c.lost_after = Duration::from_millis(300);
    c.lost_passed_after = Duration::from_millis(300);
    let app = App::in_process(c, inner.clone(), |_| 2);
    invoke_collector(&app, &request_id).await.unwrap();
    let path = format!("/v1/matrix/{id}");
    let status = loop {
        let s = driver::handle(&app, "GET", &path, b"").await.body;
        if s["status"] != "Running" {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["status"], "Succeeded", "{status}");
    let mappers = app.invoker.counts();
    assert!(
        mappers
            .get(&cellmatrix::invoke::Function::Mapper)
            .is_some_and(|&n| n >= 1),
        "no mapper planned the group: {mappers:?}"
    );
    app.idle().await;
}

/// Lambda losing every first launch of one task (the first one seen), both copies: the
/// collector must take it for lost and launch it again. Counts each task's events by
/// attempt.
#[derive(Debug)]
struct LosingOneTask {
    inner: Arc<cellmatrix::invoke::InProcess>,
    lost: std::sync::Mutex<Option<String>>,
    sent: std::sync::Mutex<std::collections::HashMap<(String, u64), u32>>,
}

#[async_trait::async_trait]
impl cellmatrix::invoke::Invoker for LosingOneTask {
    async fn invoke(
        &self,
        function: cellmatrix::invoke::Function,
        payload: serde_json::Value,
    ) -> Result<(), cellmatrix::Error> {
        if function == cellmatrix::invoke::Function::Worker {
            let task = payload["task_id"].as_str().unwrap().to_string();
            let attempt = payload["attempt"].as_u64().unwrap();
            *self
                .sent
                .lock()
                .unwrap()
                .entry((task.clone(), attempt))
                .or_default() += 1;
            let mut lost = self.lost.lock().unwrap();
            if attempt == 0 && lost.get_or_insert_with(|| task.clone()) == &task {
                // Accepted, never delivered.
                return Ok(());
            }
        }
        self.inner.invoke(function, payload).await
    }
    fn counts(&self) -> std::collections::HashMap<cellmatrix::invoke::Function, u64> {
        self.inner.counts()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_requests_relaunch_goes_out_twice_as_its_first_launch_did() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
    ingest_samples(&store).await;
    let mut c = config();
    c.lost_after = Duration::from_millis(300);
    c.lost_passed_after = Duration::from_millis(300);
    assert!(c.hedge && c.hedge_small >= 2, "a small request gets copies");
    let inner = Arc::new(cellmatrix::invoke::InProcess::new(|_| 2));
    let losing = Arc::new(LosingOneTask {
        inner: inner.clone(),
        lost: Default::default(),
        sent: Default::default(),
    });
    let app = App::with_invoker(c, store.clone(), losing.clone());
    let target: Arc<dyn cellmatrix::invoke::Dispatch> = app.clone();
    inner.bind(Arc::downgrade(&target));
    let request: serde_json::Value = serde_json::from_str(REQUEST).unwrap();
    let (_, status) = run_request(&app, &request).await;
    assert_eq!(status["status"], "Succeeded", "{status}");
    app.idle().await;
    let lost = losing
        .lost
        .lock()
        .unwrap()
        .clone()
        .expect("a worker was invoked");
    let sent = losing.sent.lock().unwrap().clone();
    assert_eq!(
        sent[&(lost.clone(), 0)],
        2,
        "the first launch's two copies: {sent:?}"
    );
    // Its relaunch is sent twice too, so one lost copy of it costs nothing either.
    assert_eq!(sent.get(&(lost.clone(), 1)), Some(&2), "{sent:?}");
    for ((task, attempt), n) in &sent {
        if *task != lost || *attempt == 0 {
            assert_eq!(*n, 2, "task {task} attempt {attempt}: {sent:?}");
        }
    }
}
