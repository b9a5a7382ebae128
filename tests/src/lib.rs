//! Helpers shared by the integration tests.

use cellmatrix::store::s3::{S3Config, S3Store};

/// The environment variable naming the moto endpoint the S3 tests run against.
pub const S3_ENDPOINT_VAR: &str = "CELLMATRIX_TEST_S3_ENDPOINT";

/// The moto endpoint. Panics when it is not configured: an S3 test that silently passed
/// without a server would hide every S3 regression.
pub fn moto_endpoint() -> String {
    match std::env::var(S3_ENDPOINT_VAR) {
        Ok(endpoint) if !endpoint.trim().is_empty() => endpoint.trim().to_string(),
        _ => panic!(
            "{S3_ENDPOINT_VAR} is not set, so there is no S3 server to test against. \
             Run the tests with scripts/test, which starts moto and sets it; or start \
             `moto_server -H 127.0.0.1 -p 5123` and export \
             {S3_ENDPOINT_VAR}=http://127.0.0.1:5123"
        ),
    }
}

/// A bucket name no other test uses (S3 rules: 3-63 chars of a-z 0-9 -).
pub fn unique_bucket_name(tag: &str) -> String {
    let tag: String = tag
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(20)
        .collect();
    format!("cmtest-{tag}-{}", uuid::Uuid::new_v4().simple())
}

/// Settings for `bucket` on moto: fake credentials, a fixed region, and no SDK retries,
/// so a flaky behaviour shows up as a failure instead of being retried away.
pub fn moto_config(bucket: &str, prefix: &str) -> S3Config {
    S3Config::new(bucket, prefix)
        .with_endpoint(moto_endpoint())
        .with_region("us-east-1")
        .with_credentials("test", "test")
        .with_max_attempts(1)
}

/// A store on a fresh, empty moto bucket named after `tag`, keys under `prefix`.
pub async fn moto_store(tag: &str, prefix: &str) -> anyhow::Result<S3Store> {
    let config = moto_config(&unique_bucket_name(tag), prefix);
    let store = S3Store::connect(config).await?;
    store.create_bucket_if_missing().await?;
    Ok(store)
}

/// The Python interpreter of the test venv (anndata, h5py, scipy, pandas).
pub fn python() -> std::path::PathBuf {
    required_env("CELLMATRIX_TEST_PYTHON").into()
}

/// The directory holding the public test datasets (`pbmc.h5ad`, `chung_counts.tsv`).
pub fn test_data() -> std::path::PathBuf {
    required_env("CELLMATRIX_TEST_DATA").into()
}

/// The repository root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The four Lambda functions' binaries, by name.
pub const FUNCTIONS: [&str; 4] = ["driver", "mapper", "worker", "reducer"];

/// The directory holding the function binaries of the build this test belongs to. A test
/// runs as `<target>/<profile>/deps/it-<hash>` (`<target>` being `target/`, or
/// `$CARGO_TARGET_DIR`, with the triple under it when cross-compiling), and the
/// binaries of the same profile are in `<target>/<profile>/`. No test of this package is
/// theirs, so `cargo test` does not build them: `scripts/test` builds them first, and a
/// change to the library needs them built again. Panics, naming the command that builds
/// them, when one is missing.
pub fn function_bin_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .to_path_buf();
    for function in FUNCTIONS {
        assert!(
            dir.join(function).exists(),
            "no {function} binary in {}: build the functions first, with the tests' \
             profile: `cargo build --workspace --all-targets` as scripts/test does (which \
             `cargo test --workspace --all-targets` then reuses), or `cargo build \
             -p cellmatrix-driver -p cellmatrix-mapper -p cellmatrix-worker \
             -p cellmatrix-reducer`",
            dir.display()
        );
    }
    dir
}

fn required_env(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{var} is not set: run the tests with scripts/test, which prepares the Python venv and the data"
        ),
    }
}

/// Runs a Python script from `tests/python/` with the venv's interpreter; panics with
/// its output when it fails.
pub fn run_python(script: &str, args: &[&std::ffi::OsStr]) -> String {
    let path = repo_root().join("tests/python").join(script);
    let out = std::process::Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// One source to check against its bundles with `check_bundles.py`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// The input file or directory.
    pub source: std::path::PathBuf,
    /// Its format name (`h5ad`, `10x-h5`, `10x-mtx`, `table`).
    pub format: String,
    /// Table orientation, when a table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orientation: Option<String>,
    /// The bundles made from it.
    pub fqids: Vec<String>,
    /// Whether there is one bundle per cell.
    pub split: bool,
}

/// Checks bundles in a filesystem store against their sources with anndata (an
/// independent reader); panics on any difference.
pub fn check_bundles(store_root: &std::path::Path, checks: &[Check]) -> String {
    let spec = serde_json::json!({ "store": store_root, "checks": checks });
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), serde_json::to_vec(&spec).expect("json")).expect("write spec");
    run_python("check_bundles.py", &[file.path().as_os_str()])
}

/// One bundle as `reference.py` sees it: where its cells come from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RefBundle {
    /// The bundle.
    pub fqid: String,
    /// Its source file or directory.
    pub source: std::path::PathBuf,
    /// The source's format (`h5ad`, `10x-mtx`, `table`).
    pub format: String,
    /// Table orientation, when a table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orientation: Option<String>,
    /// The source row the bundle holds, when split one bundle per cell.
    pub split_index: Option<usize>,
    /// Its metadata, as given at ingest.
    pub metadata: serde_json::Value,
}

/// Ingests `source` with `opts` and describes the bundles made for `reference.py`.
pub async fn ingest_for_reference(
    store: &cellmatrix::store::DynStore,
    source: &std::path::Path,
    format: &str,
    orientation: Option<&str>,
    opts: cellmatrix::ingest::IngestOptions,
    metadata: serde_json::Value,
) -> Vec<RefBundle> {
    let split = opts.one_bundle_per_cell;
    let report = cellmatrix::ingest::ingest(store, source, &opts)
        .await
        .unwrap_or_else(|e| panic!("ingest {}: {e}", source.display()));
    report
        .bundles
        .iter()
        .enumerate()
        .map(|(i, b)| RefBundle {
            fqid: b.manifest().fqid.to_string(),
            source: source.to_path_buf(),
            format: format.into(),
            orientation: orientation.map(str::to_string),
            split_index: split.then_some(i),
            metadata: metadata.clone(),
        })
        .collect()
}

/// The shipped samples, ingested: the 300-cell 10x bundle then the 40 SmartSeq2 bundles.
pub async fn ingest_samples(store: &cellmatrix::store::DynStore) -> Vec<RefBundle> {
    let samples = repo_root().join("samples");
    let sidecar = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(samples.join(name)).expect("sidecar")).expect("json")
    };
    let mut bundles = ingest_for_reference(
        store,
        &samples.join("pbmc3k_300"),
        "10x-mtx",
        None,
        cellmatrix::ingest::IngestOptions {
            sidecar: Some(samples.join("pbmc3k_300.json")),
            ..Default::default()
        },
        sidecar("pbmc3k_300.json"),
    )
    .await;
    bundles.extend(
        ingest_for_reference(
            store,
            &samples.join("chung_smartseq2_40.tsv.gz"),
            "table",
            Some("genes-by-cells"),
            cellmatrix::ingest::IngestOptions {
                sidecar: Some(samples.join("chung_smartseq2_40.json")),
                one_bundle_per_cell: true,
                ..Default::default()
            },
            sidecar("chung_smartseq2_40.json"),
        )
        .await,
    );
    bundles
}

/// Submits `body` through the driver and waits until the request is not Running;
/// returns the id and the final status document.
pub async fn run_request(
    app: &cellmatrix::app::App,
    body: &serde_json::Value,
) -> (String, serde_json::Value) {
    run_request_polling(app, body, std::time::Duration::from_millis(20)).await
}

/// [`run_request`], asking for the status every `every` (each ask is six store reads).
pub async fn run_request_polling(
    app: &cellmatrix::app::App,
    body: &serde_json::Value,
    every: std::time::Duration,
) -> (String, serde_json::Value) {
    use cellmatrix::handlers::driver;
    // A 503 says "try again", as a client does (under injected store faults a call can
    // fail all its store retries).
    let mut answer;
    let mut tries = 0;
    loop {
        answer = driver::handle(app, "POST", "/v1/matrix", body.to_string().as_bytes()).await;
        tries += 1;
        if answer.status != 503 || tries == 5 {
            break;
        }
        tokio::time::sleep(every).await;
    }
    assert!(
        answer.status == 202 || answer.status == 200,
        "POST answered {}: {}",
        answer.status,
        answer.body
    );
    let id = answer.body["id"].as_str().expect("an id").to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let status = driver::handle(app, "GET", &format!("/v1/matrix/{id}"), b"").await;
        if status.status == 503 {
            tokio::time::sleep(every).await;
            continue;
        }
        assert_eq!(status.status, 200, "{}", status.body);
        if status.body["status"] != "Running" {
            return (id, status.body);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running: {}",
            status.body
        );
        tokio::time::sleep(every).await;
    }
}

/// Compares a result (a local AnnData Zarr group) with `reference.py`'s independent
/// computation over `bundles` (the candidates, in resolved order).
pub fn check_reference(
    output: &std::path::Path,
    bundles: &[RefBundle],
    request: &serde_json::Value,
) -> String {
    // A zarr result is checked at `output`; the other formats' files lie in it.
    let format = request
        .get("format")
        .and_then(|f| f.as_str())
        .unwrap_or("zarr");
    let output = match format {
        "h5ad" => output.join("matrix.h5ad"),
        "loom" => output.join("matrix.loom"),
        "mtx" => output.join("filtered_feature_bc_matrix.tar.gz"),
        _ => output.to_path_buf(),
    };
    let spec = serde_json::json!({
        "output": output,
        "format": format,
        "bundles": bundles,
        "filter": request.get("filter"),
        "fields": request.get("fields"),
        "genes": request.get("genes"),
    });
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), serde_json::to_vec(&spec).expect("json")).expect("write spec");
    run_python("reference.py", &[file.path().as_os_str()])
}

/// The reference bundles `request` selected: those in its stored `request.json`, the
/// ones the catalog could not rule out. The output genes are the union over these, so
/// the reference must take the same set (pruning itself is tested against `eval_cell`).
pub async fn selected(
    store: &cellmatrix::store::DynStore,
    id: &str,
    bundles: &[RefBundle],
) -> Vec<RefBundle> {
    let body = store
        .get(&format!("requests/{id}/request.json"))
        .await
        .expect("reading request.json")
        .expect("request.json exists");
    let stored: cellmatrix::state::StoredRequest =
        serde_json::from_slice(&body).expect("a stored request");
    bundles
        .iter()
        .filter(|b| stored.bundles.iter().any(|f| f.as_str() == b.fqid))
        .cloned()
        .collect()
}

/// The key prefix of a succeeded request's result in `store`, from the `location` of its
/// status document (a path or URL that starts with the store's own).
pub fn result_prefix(store: &cellmatrix::store::DynStore, status: &serde_json::Value) -> String {
    let base = store.describe();
    let location = status["result"]["location"]
        .as_str()
        .unwrap_or_else(|| panic!("no result location in {status}"));
    location
        .strip_prefix(base.strip_prefix("file://").unwrap_or(&base))
        .unwrap_or_else(|| panic!("{location} is not in the store {base}"))
        .trim_start_matches('/')
        .to_string()
}

/// Copies the objects under `prefix` of `store` into `dir`, as a user downloading a
/// result would, and returns the local path of the prefix.
pub async fn download(
    store: &cellmatrix::store::DynStore,
    prefix: &str,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let root = dir.join(prefix);
    for (key, body) in objects(store, prefix).await {
        let path = root.join(key.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, &body).expect("write");
    }
    root
}

/// The full PBMC3k (one 10x bundle) and Chung (563 one-cell SmartSeq2 bundles).
pub async fn ingest_real(store: &cellmatrix::store::DynStore) -> Vec<RefBundle> {
    let data = test_data();
    let mut bundles = ingest_for_reference(
        store,
        &data.join("pbmc.h5ad"),
        "h5ad",
        None,
        cellmatrix::ingest::IngestOptions {
            metadata: cellmatrix::bundle::BundleMetadata {
                project: Some("pbmc3k".into()),
                organ: Some("blood".into()),
                species: Some("Homo sapiens".into()),
                assay: Some("10x".into()),
                donor: None,
                other: Default::default(),
            },
            ..Default::default()
        },
        serde_json::json!({"project": "pbmc3k", "organ": "blood", "species": "Homo sapiens", "assay": "10x"}),
    )
    .await;
    bundles.extend(
        ingest_for_reference(
            store,
            &data.join("chung_counts.tsv"),
            "table",
            Some("genes-by-cells"),
            cellmatrix::ingest::IngestOptions {
                one_bundle_per_cell: true,
                orientation: cellmatrix::ingest::Orientation::GenesByCells,
                metadata: cellmatrix::bundle::BundleMetadata {
                    project: Some("chung-park-2017".into()),
                    organ: Some("breast".into()),
                    species: Some("Homo sapiens".into()),
                    assay: Some("smartseq2".into()),
                    donor: Some("chung-bc".into()),
                    other: Default::default(),
                },
                ..Default::default()
            },
            serde_json::json!({"project": "chung-park-2017", "organ": "breast", "species": "Homo sapiens",
                   "assay": "smartseq2", "donor": "chung-bc"}),
        )
        .await,
    );
    bundles.sort_by(|a, b| a.fqid.cmp(&b.fqid));
    bundles
}

/// Every object under `prefix`, by key relative to it. Through `Retrying`, as the
/// service reads: moto, one Python process, answers a busy moment's request with a 500.
pub async fn objects(
    store: &cellmatrix::store::DynStore,
    prefix: &str,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let store: cellmatrix::store::DynStore =
        std::sync::Arc::new(cellmatrix::store::retry::Retrying::new(store.clone(), 5));
    let mut out = std::collections::BTreeMap::new();
    for o in store.list(&format!("{prefix}/")).await.expect("list") {
        let body = store
            .get(&o.key)
            .await
            .expect("get")
            .expect("listed object");
        out.insert(o.key[prefix.len()..].to_string(), body.to_vec());
    }
    out
}

/// Copies every object of `source` into `store`: the same bundles (same fqids) in a
/// fresh store, as two deployments serving the same data would hold them.
pub async fn copy_store(source: &cellmatrix::store::DynStore, store: &cellmatrix::store::DynStore) {
    for o in source.list("").await.expect("list") {
        let body = source
            .get(&o.key)
            .await
            .expect("get")
            .expect("listed object");
        store.put(&o.key, body).await.expect("put");
    }
}

/// A store passing every call to `inner`, that shows each write (its key and body, if
/// any) to `on_write` first, which may fail it: the tests' fault and recording wrappers.
pub struct Intercept<F> {
    /// The store underneath.
    pub inner: cellmatrix::store::DynStore,
    /// Sees each put, put-if-absent and upload start before it happens.
    pub on_write: F,
}

impl<F> std::fmt::Debug for Intercept<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intercept")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<F> cellmatrix::store::BlobStore for Intercept<F>
where
    F: Fn(&str, Option<&bytes::Bytes>) -> cellmatrix::store::StoreResult<()> + Send + Sync,
{
    async fn get(&self, key: &str) -> cellmatrix::store::StoreResult<Option<bytes::Bytes>> {
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> cellmatrix::store::StoreResult<Option<bytes::Bytes>> {
        self.inner.get_range(key, range).await
    }
    async fn size(&self, key: &str) -> cellmatrix::store::StoreResult<Option<u64>> {
        self.inner.size(key).await
    }
    async fn put(&self, key: &str, body: bytes::Bytes) -> cellmatrix::store::StoreResult<()> {
        (self.on_write)(key, Some(&body))?;
        self.inner.put(key, body).await
    }
    async fn put_if_absent(
        &self,
        key: &str,
        body: bytes::Bytes,
    ) -> cellmatrix::store::StoreResult<cellmatrix::store::PutOutcome> {
        (self.on_write)(key, Some(&body))?;
        self.inner.put_if_absent(key, body).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> cellmatrix::store::StoreResult<Vec<cellmatrix::store::ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> cellmatrix::store::StoreResult<()> {
        self.inner.delete(key).await
    }
    async fn presign_get(
        &self,
        key: &str,
        expires: std::time::Duration,
    ) -> cellmatrix::store::StoreResult<String> {
        self.inner.presign_get(key, expires).await
    }
    async fn start_upload(
        &self,
        key: &str,
    ) -> cellmatrix::store::StoreResult<std::sync::Arc<dyn cellmatrix::store::Upload>> {
        (self.on_write)(key, None)?;
        self.inner.start_upload(key).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Prints `lines`, and appends them to `$CELLMATRIX_TEST_FIGURES` when set: the test
/// command shows that file after the run, as it captures a passing test's output. Each
/// test appends, so several leave their figures in the same file.
pub fn report_figures(lines: &[String]) {
    for line in lines {
        println!("{line}");
    }
    if let Ok(path) = std::env::var("CELLMATRIX_TEST_FIGURES") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("the figures file");
        for line in lines {
            writeln!(f, "{line}").expect("a figure written");
        }
    }
}
