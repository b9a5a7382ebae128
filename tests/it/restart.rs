//! A restarted `cellmatrix serve` finishes what the killed one left running (#22). The
//! process is killed with SIGKILL at four points of a request's life
//! (`CELLMATRIX_KILL_AT`: planning, workers running, consolidation, conversion to
//! h5ad) and started again on the same store; the request then ends Succeeded with the
//! same bytes as a run never killed, and within twice that run's time plus 2 s, on the
//! file store and on moto. The times are printed (and added to the test figures).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cellmatrix::fault::{KILL_AT_VAR, KillPoint};
use cellmatrix::store::DynStore;
use cellmatrix::store::fs::FsStore;
use cellmatrix::store::s3::S3Store;
use cellmatrix_tests::{
    copy_store, function_bin_dir, ingest_samples, moto_config, moto_endpoint, report_figures,
    unique_bucket_name,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Several groups (one planned by the driver, the others by mappers), tasks queued
/// behind two workers, and several consolidation shards: at each point some work is
/// done, some running and some waiting.
const SETTINGS: [(&str, &str); 5] = [
    ("CELLMATRIX_BUNDLES_PER_MAPPER", "8"),
    ("CELLMATRIX_DRIVER_GROUPS", "1"),
    ("CELLMATRIX_CELLS_PER_WORKER", "64"),
    ("CELLMATRIX_SHARD_NNZ", "32768"),
    ("CELLMATRIX_HEDGE", "0"),
];

fn request() -> Value {
    json!({
        "filter": {"op": ">=", "field": "cell.n_genes", "value": 200},
        "format": "h5ad",
    })
}

/// Where a case's stores live, and what `serve` needs to reach them.
struct Place {
    /// The store of the samples, copied into each run's own store.
    template: DynStore,
    env: Vec<(String, String)>,
    kind: &'static str,
}

impl Place {
    async fn files(root: &std::path::Path) -> Self {
        let template: DynStore = Arc::new(FsStore::open(root.join("template")).unwrap());
        ingest_samples(&template).await;
        Place {
            template,
            env: Vec::new(),
            kind: "files",
        }
    }

    async fn moto() -> Self {
        let template = s3(&unique_bucket_name("restart"), "template").await;
        ingest_samples(&template).await;
        let env = [
            ("CELLMATRIX_S3_ENDPOINT", moto_endpoint()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ];
        Place {
            template,
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            kind: "moto",
        }
    }

    /// A fresh store holding the samples, as `serve --store` names it.
    async fn fresh(&self, root: &std::path::Path, name: &str) -> (DynStore, String) {
        let (store, location): (DynStore, String) = if self.kind == "files" {
            let dir = root.join(name);
            let store = Arc::new(FsStore::open(&dir).unwrap());
            (store, dir.display().to_string())
        } else {
            let bucket = unique_bucket_name(&format!("restart-{name}"));
            let store = s3(&bucket, "store").await;
            (store, format!("s3://{bucket}/store"))
        };
        copy_store(&self.template, &store).await;
        (store, location)
    }
}

async fn s3(bucket: &str, prefix: &str) -> DynStore {
    let store = S3Store::connect(moto_config(bucket, prefix)).await.unwrap();
    store.create_bucket_if_missing().await.unwrap();
    Arc::new(store)
}

/// `cellmatrix serve` on `store` at a free port, killed when dropped; its base URL.
async fn serve(place: &Place, store: &str, kill_at: Option<KillPoint>) -> (Child, String) {
    let mut command = Command::new(function_bin_dir().join("cellmatrix"));
    command
        .args([
            "--store",
            store,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
        ])
        .env_remove("CELLMATRIX_STORE")
        .env_remove("CELLMATRIX_FAULTS")
        .env_remove(KILL_AT_VAR)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command.envs(SETTINGS);
    command.envs(place.env.iter().map(|(k, v)| (k, v)));
    if let Some(point) = kill_at {
        command.env(KILL_AT_VAR, point.name());
    }
    let mut child = command.spawn().expect("start cellmatrix serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("listening on ") {
                return url.trim().to_string();
            }
        }
        panic!("cellmatrix serve exited without listening");
    })
    .await
    .expect("cellmatrix serve did not print its address in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, base)
}

/// POSTs the request; its id, or `None` when the process died before answering.
async fn post(http: &reqwest::Client, base: &str) -> Option<String> {
    let answer = http
        .post(format!("{base}/v1/matrix"))
        .header("content-type", "application/json")
        .body(request().to_string())
        .send()
        .await
        .ok()?;
    assert!(
        answer.status() == 202 || answer.status() == 200,
        "{answer:?}"
    );
    let body: Value = answer.json().await.ok()?;
    Some(body["id"].as_str().expect("an id").to_string())
}

/// Waits until request `id` is Succeeded; panics if it ends otherwise or takes a minute.
async fn until_succeeded(http: &reqwest::Client, base: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: Value = http
            .get(format!("{base}/v1/matrix/{id}"))
            .send()
            .await
            .expect("the status")
            .json()
            .await
            .expect("a JSON status");
        match status["status"].as_str() {
            Some("Succeeded") => return,
            Some("Running") => {}
            _ => panic!("request {id} ended otherwise: {status}"),
        }
        assert!(
            Instant::now() < deadline,
            "still running after a minute: {status}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every result object of request `id`, by key, with its SHA-256.
async fn hashes(store: &DynStore, id: &str) -> BTreeMap<String, String> {
    let listed = store.list(&format!("results/{id}/")).await.unwrap();
    let mut out = BTreeMap::new();
    for o in listed {
        let body = store.get(&o.key).await.unwrap().expect("listed");
        let digest: String = Sha256::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.insert(o.key, digest);
    }
    assert!(!out.is_empty(), "no result objects for {id}");
    out
}

async fn restarts(place: Place, root: &std::path::Path) {
    let http = reqwest::Client::new();
    // The run never killed: its bytes, and its time from POST to Succeeded.
    let (store, location) = place.fresh(root, "reference").await;
    let (server, base) = serve(&place, &location, None).await;
    let began = Instant::now();
    let id = post(&http, &base).await.expect("an answer");
    until_succeeded(&http, &base, &id).await;
    let fault_free = began.elapsed();
    drop(server);
    let reference = hashes(&store, &id).await;
    assert!(
        reference.keys().any(|k| k.ends_with(".h5ad")),
        "{reference:?}"
    );

    let mut lines = Vec::new();
    for point in KillPoint::ALL {
        let (store, location) = place.fresh(root, point.name()).await;
        let (mut server, base) = serve(&place, &location, Some(point)).await;
        let answered = post(&http, &base).await;
        let status = tokio::time::timeout(Duration::from_secs(120), server.wait())
            .await
            .unwrap_or_else(|_| panic!("{}: serve did not reach {point:?}", place.kind))
            .unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "{}: killed at {point:?}: {status}",
            place.kind
        );
        // A later point may come before the answer too: the driver's answer waits for
        // the groups it plans, whose workers already run.
        match answered {
            None => {}
            Some(_) if point == KillPoint::Planning => panic!("the driver answered, then died"),
            Some(answered) => assert_eq!(answered, id, "the same request, the same id"),
        }
        assert!(
            store
                .exists(&format!("requests/{id}/request.json"))
                .await
                .unwrap(),
            "{point:?}: the request was committed before the kill"
        );

        let restarted = Instant::now();
        let (server, base) = serve(&place, &location, None).await;
        until_succeeded(&http, &base, &id).await;
        let took = restarted.elapsed();
        drop(server);
        assert_eq!(
            hashes(&store, &id).await,
            reference,
            "{}: killed at {point:?}, the output differs from the run never killed",
            place.kind
        );
        let bound = 2 * fault_free + Duration::from_secs(2);
        lines.push(format!(
            "restart ({}, killed at {}): restart to Succeeded {:.2} s; fault-free run {:.2} s; bound {:.2} s",
            place.kind,
            point.name(),
            took.as_secs_f64(),
            fault_free.as_secs_f64(),
            bound.as_secs_f64(),
        ));
        assert!(
            took < bound,
            "{}: killed at {point:?}, the restart took {took:?}, over 2 × {fault_free:?} + 2 s",
            place.kind
        );
    }
    report_figures(&lines);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_survives_serve_killed_at_each_point_on_files() {
    let root = tempfile::tempdir().unwrap();
    restarts(Place::files(root.path()).await, root.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_survives_serve_killed_at_each_point_on_moto() {
    let root = tempfile::tempdir().unwrap();
    restarts(Place::moto().await, root.path()).await;
}
