//! The Lambda runtime contract, kept by the real binaries: `cargo lambda watch` serves
//! the Lambda APIs on 127.0.0.1 (the Invoke API, and the Runtime API the functions poll),
//! the driver, mapper, worker and reducer binaries run as its functions, their invoker
//! is pointed at it (`AWS_ENDPOINT_URL_LAMBDA`) and their store at moto S3. API Gateway
//! (HTTP API v2) events go to the driver through the Invoke API, as API Gateway sends
//! them: `POST /v1/matrix`, then `GET /v1/matrix/{id}` until the request ends. The result
//! is read by anndata and compared with the independent reference.
//!
//! The test starts the binaries itself (`--only-lambda-apis`), several instances of each
//! as Lambda would. Left to start them, the emulator runs `cargo run --bin <name>` for
//! each function, which resolves features per package and so builds the AWS SDK chain
//! again, twice, next to the workspace's build: minutes on CI's two cores, for the same
//! code. Here the binaries are the ones `scripts/test` builds before the tests
//! (`cellmatrix_tests::function_bin_dir`).
//!
//! The emulator's quirks (DESIGN.md) are the service's to cope with, not the test's: it
//! answers an `Event` invocation only once the function has run (see
//! `invoke::ACCEPT_WAIT`), and sends a fixed deadline of 600000 ms since 1970 (see
//! `reducer::handle_until`).
//!
//! Every function logs its init duration (`coldstart`); the test prints them, and writes
//! them to `$CELLMATRIX_TEST_FIGURES` when set (`scripts/test` shows that file). Run it
//! with `cargo test --release`, after building the functions with `--release`, for
//! release figures.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_lambda::primitives::Blob;
use cellmatrix::store::DynStore;
use cellmatrix::store::s3::S3Store;
use cellmatrix_tests::{
    check_reference, download, function_bin_dir, ingest_samples, moto_config, moto_endpoint,
    repo_root, report_figures, unique_bucket_name,
};
use serde_json::{Value, json};

/// Where `cargo-lambda` is; `scripts/test` installs it in the tools venv.
const CARGO_LAMBDA_VAR: &str = "CELLMATRIX_TEST_CARGO_LAMBDA";
/// Prefix of the store's keys in the bucket, so that the prefix handling is exercised.
const PREFIX: &str = "svc";
/// The functions and how many instances of each run: the collector holds a reducer for
/// the whole request, and the emulator queues what finds no free instance.
const FUNCTIONS: [(&str, usize); 4] = [("driver", 2), ("mapper", 2), ("worker", 4), ("reducer", 4)];

/// `cargo lambda watch` and the function instances, stopped when dropped. Everything
/// they print goes to one log file.
struct Emulator {
    watch: Child,
    instances: Vec<Child>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Emulator {
    fn start(env: &[(&str, String)]) -> Emulator {
        let cargo_lambda = PathBuf::from(std::env::var(CARGO_LAMBDA_VAR).unwrap_or_else(|_| {
            panic!(
                "{CARGO_LAMBDA_VAR} is not set: run the tests with scripts/test, which installs \
                 cargo-lambda in .venv-tools and sets it"
            )
        }));
        let bins = function_bin_dir();
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("lambda.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut watch = Command::new(&cargo_lambda);
        watch
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
            ])
            .arg(port.to_string())
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out.try_clone().unwrap());
        std::os::unix::process::CommandExt::process_group(&mut watch, 0);
        let watch = watch.spawn().expect("cannot start cargo lambda watch");
        let mut emulator = Emulator {
            watch,
            instances: Vec::new(),
            port,
            log,
            _dir: dir,
        };
        // A function whose first poll finds no Runtime API exits, as on Lambda.
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "cargo lambda watch did not start:\n{}",
                tail(&emulator.log_text())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for (function, count) in FUNCTIONS {
            for _ in 0..count {
                let child = Command::new(bins.join(function))
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .env("AWS_ENDPOINT_URL_LAMBDA", emulator.endpoint())
                    // What Lambda (and the emulator, when it starts a function) sets.
                    .env(
                        "AWS_LAMBDA_RUNTIME_API",
                        format!("http://127.0.0.1:{port}/.rt/{function}"),
                    )
                    .env("AWS_LAMBDA_FUNCTION_NAME", function)
                    .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                    .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().unwrap())
                    .stderr(out.try_clone().unwrap())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start {function}: {e}"));
                emulator.instances.push(child);
            }
        }
        emulator
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Each function instance's init duration, from its `ready` log line (JSON, as on
    /// Lambda).
    fn init_durations(&self) -> Vec<(String, f64)> {
        let file = std::fs::File::open(&self.log).unwrap();
        std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| {
                let start = line.find('{')?;
                let v: Value = serde_json::from_str(&line[start..]).ok()?;
                let fields = v.get("fields")?;
                let ms = fields.get("init_ms")?.as_f64()?;
                Some((fields.get("function")?.as_str()?.to_string(), ms))
            })
            .collect()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        for child in &mut self.instances {
            let _ = child.kill();
            let _ = child.wait();
        }
        let group = format!("-{}", self.watch.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.watch.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Lambda client on the emulator. No retries: the emulator answers a handler's error
/// with a 500, which the SDK would otherwise retry as a service fault.
fn lambda_client(endpoint: &str) -> aws_sdk_lambda::Client {
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled())
        // The first call of each function waits for cargo to build it.
        .timeout_config(
            aws_sdk_lambda::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(1800))
                .build(),
        )
        .build();
    aws_sdk_lambda::Client::from_conf(config)
}

/// An HTTP API v2 event for `method path`, built on the sample in `events/`, so the test
/// sends what API Gateway sends.
fn api_event(method: &str, path: &str, route: &str, body: Option<&Value>) -> Value {
    let sample = repo_root().join("events/api-post-matrix.json");
    let mut event: Value = serde_json::from_slice(&std::fs::read(sample).unwrap()).unwrap();
    event["routeKey"] = json!(route);
    event["rawPath"] = json!(path);
    event["requestContext"]["routeKey"] = json!(route);
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(path);
    if route.contains("{id}") {
        let id = path.split('/').nth(3).unwrap();
        event["pathParameters"] = json!({ "id": id });
    }
    match body {
        Some(b) => event["body"] = json!(b.to_string()),
        None => {
            event.as_object_mut().unwrap().remove("body");
            event["headers"]
                .as_object_mut()
                .unwrap()
                .remove("content-type");
            event["headers"]
                .as_object_mut()
                .unwrap()
                .remove("content-length");
        }
    }
    event
}

/// Sends `event` to the driver (RequestResponse, as API Gateway does); the HTTP status
/// and the JSON body of the driver's answer.
async fn call_driver(client: &aws_sdk_lambda::Client, event: &Value) -> (u16, Value) {
    let out = client
        .invoke()
        .function_name("driver")
        .payload(Blob::new(event.to_string()))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "invoke driver: {}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            )
        });
    assert_eq!(out.function_error(), None, "the driver failed: {out:?}");
    let answer: Value = serde_json::from_slice(out.payload().expect("a payload").as_ref())
        .expect("the driver answers JSON");
    let status = answer["statusCode"].as_u64().expect("statusCode") as u16;
    let body: Value = serde_json::from_str(answer["body"].as_str().expect("a body"))
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {answer}"));
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_binaries_serve_a_request_under_cargo_lambda_watch() {
    let bucket = unique_bucket_name("lambda");
    let s3 = S3Store::connect(moto_config(&bucket, PREFIX))
        .await
        .unwrap();
    s3.create_bucket_if_missing().await.unwrap();
    let store: DynStore = Arc::new(s3);
    let mut bundles = ingest_samples(&store).await;
    bundles.sort_by(|a, b| a.fqid.cmp(&b.fqid));

    let env = [
        ("CELLMATRIX_STORE", format!("s3://{bucket}/{PREFIX}")),
        ("CELLMATRIX_S3_ENDPOINT", moto_endpoint()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        // The functions' own Lambda client: no retries of the emulator's 500s.
        ("AWS_MAX_ATTEMPTS", "1".into()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".into()),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO".into()),
        // Several groups, tasks and consolidation shards, so every kind of invocation
        // crosses the emulator more than once.
        ("CELLMATRIX_BUNDLES_PER_MAPPER", "16".into()),
        // The driver plans the first group itself and invokes its workers; mappers
        // plan the others: both ways across the emulator.
        ("CELLMATRIX_DRIVER_GROUPS", "1".into()),
        ("CELLMATRIX_CELLS_PER_WORKER", "256".into()),
        ("CELLMATRIX_SHARD_NNZ", (1u64 << 15).to_string()),
        ("CELLMATRIX_POLL_MS", "100".into()),
        ("CELLMATRIX_REQUEST_TIMEOUT_SECS", "1500".into()),
    ];
    let lambda = Emulator::start(&env);
    let client = lambda_client(&lambda.endpoint());

    let request = json!({
        "filter": {"op": "and", "value": [
            {"op": "in", "field": "bundle.assay", "value": ["10x", "smartseq2"]},
            {"op": ">=", "field": "cell.n_genes", "value": 300}
        ]},
        "fields": ["bundle.project", "cell.barcode", "cell.n_genes", "cell.total_counts"],
        "format": "zarr"
    });
    let post = api_event("POST", "/v1/matrix", "POST /v1/matrix", Some(&request));
    let (code, body) = call_driver(&client, &post).await;
    assert_eq!(code, 202, "{body}\n{}", tail(&lambda.log_text()));
    let id = body["id"].as_str().expect("an id").to_string();

    let path = format!("/v1/matrix/{id}");
    let get = api_event("GET", &path, "GET /v1/matrix/{id}", None);
    // The caller is the IAM principal of the request context: another principal does not
    // see the request (the answer of an id never seen), and a request with no IAM
    // authorizer in its context is refused.
    let mut other = get.clone();
    other["requestContext"]["authorizer"]["iam"]["userArn"] =
        json!("arn:aws:sts::123456789012:assumed-role/cellmatrix-user/someone-else");
    let (code, body) = call_driver(&client, &other).await;
    assert_eq!(
        (code, &body),
        (404, &json!({"message": format!("no request {id}")}))
    );
    let mut unsigned = get.clone();
    unsigned["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    let (code, body) = call_driver(&client, &unsigned).await;
    assert_eq!(code, 403, "{body}");
    let deadline = Instant::now() + Duration::from_secs(1500);
    let status = loop {
        let (code, body) = call_driver(&client, &get).await;
        assert_eq!(code, 200, "{body}");
        if body["status"] != "Running" {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "still running: {body}\n{}",
            tail(&lambda.log_text())
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        status["status"],
        "Succeeded",
        "{status}\n{}",
        tail(&lambda.log_text())
    );
    let result = &status["result"];
    // The files, a page at a time, each presigned (the store is moto's S3).
    let files_path = format!("{path}/files");
    let mut files = api_event("GET", &files_path, "GET /v1/matrix/{id}/files", None);
    files["rawQueryString"] = json!("limit=5");
    files["queryStringParameters"] = json!({"limit": "5"});
    let (code, page) = call_driver(&client, &files).await;
    assert_eq!(code, 200, "{page}");
    let listed = page["files"].as_array().unwrap();
    assert_eq!(
        listed.len(),
        5.min(result["n_files"].as_u64().unwrap() as usize),
        "{page}"
    );
    assert!(
        listed
            .iter()
            .all(|f| f["url"].as_str().is_some_and(|u| u.starts_with("http"))),
        "{page}"
    );
    let location = result["location"].as_str().unwrap();
    let prefix = location
        .strip_prefix(&format!("s3://{bucket}/{PREFIX}/"))
        .unwrap_or_else(|| panic!("{location} is not in the bucket"));
    let out = tempfile::tempdir().unwrap();
    let local = download(&store, prefix, out.path()).await;
    let said = check_reference(&local, &bundles, &request);
    assert!(said.contains("ok reference"), "{said}");
    assert_eq!(
        said.split_whitespace().nth(2),
        Some(result["n_cells"].to_string().as_str()),
        "{said} vs {status}"
    );

    // Every function ran as its own real binary and logged its init duration.
    let cold = lambda.init_durations();
    let mut figures = String::new();
    for (function, _) in FUNCTIONS {
        let mine: Vec<f64> = cold
            .iter()
            .filter(|(f, _)| f == function)
            .map(|&(_, ms)| ms)
            .collect();
        assert!(
            !mine.is_empty(),
            "{function} never became ready\n{}",
            tail(&lambda.log_text())
        );
        let min = mine.iter().copied().fold(f64::INFINITY, f64::min);
        let max = mine.iter().copied().fold(0.0, f64::max);
        figures.push_str(&format!(
            "init duration {function}: {min:.1} ms (fastest of {} instances; slowest {max:.1} ms)\n",
            mine.len()
        ));
    }
    let lines: Vec<String> = figures.lines().map(str::to_string).collect();
    report_figures(&lines);
}

/// The end of a log, for a failure message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
