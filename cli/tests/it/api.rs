//! The HTTP API through the real `cellmatrix serve` on 127.0.0.1, and the client commands
//! against it. No data is ingested: these are the answers that need none.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::support::serve;

const MAX_BODY_BYTES: usize = 1 << 20;
const UNKNOWN_FQID: &str = "0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z";
const UNKNOWN_ID: &str = "0123456789abcdef0123456789abcdef";

/// A running `cellmatrix serve`, killed when dropped.
struct Server {
    _child: Child,
    _store: tempfile::TempDir,
    base: String,
}

async fn start() -> Server {
    let store = tempfile::tempdir().unwrap();
    let (child, base) = serve::serve(&store.path().join("store"), &[]).await;
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert!(!base.ends_with(":0"), "the real port is printed: {base}");
    Server {
        _child: child,
        _store: store,
        base,
    }
}

/// Checks an error answer: its status, a JSON content type and a non-empty message, which
/// it returns.
async fn error(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status().as_u16(), status, "{response:?}");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{response:?}"
    );
    let body: Value = response.json().await.unwrap();
    let message = body["message"].as_str().unwrap_or_default().to_string();
    assert!(!message.trim().is_empty(), "a message is expected: {body}");
    message
}

/// Runs the `cellmatrix` binary; returns (success, stdout, stderr).
async fn cellmatrix(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cellmatrix"))
        .args(args)
        .env_remove("CELLMATRIX_URL")
        .output()
        .await
        .expect("run cellmatrix");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends `body` chunked (no Content-Length) over a raw connection; returns the status
/// line and the body of the answer.
async fn post_chunked(base: &str, body: &[u8]) -> (String, Value) {
    let addr = base.strip_prefix("http://").unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/matrix HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(64 << 10) {
        // The server may answer and close before taking everything.
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .is_err()
            || s.write_all(chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status_line = head.lines().next().unwrap().to_string();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // One chunk is enough for a short JSON message.
        let (_, rest) = rest.split_once("\r\n").unwrap();
        rest.split_once("\r\n").unwrap().0.to_string()
    } else {
        rest.to_string()
    };
    (
        status_line,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}")),
    )
}

#[tokio::test]
async fn api_answers_without_data() {
    let server = start().await;
    let base = &server.base;
    let http = reqwest::Client::new();
    let matrix = format!("{base}/v1/matrix");

    // Metadata.
    let r = http.get(format!("{base}/v1/fields")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let fields: Value = r.json().await.unwrap();
    assert_eq!(fields["fields"].as_array().unwrap().len(), 10, "{fields}");
    let r = http.get(format!("{base}/v1/formats")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let formats: Value = r.json().await.unwrap();
    assert!(
        formats["formats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "zarr"),
        "{formats}"
    );

    // Bad bodies.
    let r = http
        .post(&matrix)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    error(r, 400).await;
    let r = http.post(&matrix).json(&json!({})).send().await.unwrap();
    error(r, 400).await;
    // One byte over: the driver refuses it; more: the server stops reading.
    for (size, says) in [
        (MAX_BODY_BYTES + 1, "the limit is"),
        (MAX_BODY_BYTES + 1000, "over"),
    ] {
        let r = http
            .post(&matrix)
            .header("content-type", "application/json")
            .body(vec![b' '; size])
            .send()
            .await
            .unwrap();
        let message = error(r, 413).await;
        assert!(message.contains(says), "{size}: {message}");
    }
    let (status, body) = post_chunked(base, &vec![b' '; MAX_BODY_BYTES + 200_000]).await;
    assert!(status.contains(" 413 "), "{status}: {body}");
    assert!(
        body["message"].as_str().unwrap().contains("limit"),
        "{body}"
    );
    // A chunked body under the limit reaches the driver like any other.
    let (status, body) = post_chunked(base, b"{}").await;
    assert!(status.contains(" 400 "), "{status}: {body}");

    // Ids.
    let r = http
        .get(format!("{matrix}/not-an-id"))
        .send()
        .await
        .unwrap();
    let message = error(r, 400).await;
    assert!(message.contains("not-an-id"), "{message}");
    let r = http
        .get(format!("{matrix}/{UNKNOWN_ID}"))
        .send()
        .await
        .unwrap();
    let message = error(r, 404).await;
    assert!(message.contains(UNKNOWN_ID), "{message}");
    let r = http
        .delete(format!("{matrix}/{UNKNOWN_ID}"))
        .send()
        .await
        .unwrap();
    error(r, 404).await;

    // Routes.
    let r = http.get(format!("{base}/nowhere")).send().await.unwrap();
    let message = error(r, 404).await;
    assert!(message.contains("/nowhere"), "{message}");
    let r = http.put(format!("{base}/v1/formats")).send().await.unwrap();
    let message = error(r, 405).await;
    assert!(message.contains("GET"), "{message}");
    let r = http.get(format!("{base}/")).send().await.unwrap();
    error(r, 404).await;

    // Bundles the store does not have.
    let r = http
        .post(&matrix)
        .json(&json!({ "bundle_fqids": [UNKNOWN_FQID] }))
        .send()
        .await
        .unwrap();
    let message = error(r, 404).await;
    assert!(message.contains(UNKNOWN_FQID), "{message}");

    // The client commands.
    let (ok, _, stderr) = cellmatrix(&["status", "--url", base, UNKNOWN_ID]).await;
    assert!(!ok, "status of an unknown id must fail");
    assert!(
        stderr.contains(&format!("no request {UNKNOWN_ID}")),
        "{stderr}"
    );
    assert!(stderr.contains("404"), "{stderr}");
    let (ok, _, stderr) = cellmatrix(&["cancel", "--url", base, UNKNOWN_ID]).await;
    assert!(!ok, "cancel of an unknown id must fail");
    assert!(
        stderr.contains(&format!("no request {UNKNOWN_ID}")),
        "{stderr}"
    );
    let (ok, _, stderr) = cellmatrix(&["status", "--url", base, "not-an-id", "--json"]).await;
    assert!(!ok);
    assert!(stderr.contains("not a request id"), "{stderr}");
    let (ok, stdout, stderr) = cellmatrix(&["query", "--url", base, "--fqids", UNKNOWN_FQID]).await;
    assert!(!ok, "a query of unknown bundles must fail");
    assert!(stderr.contains(UNKNOWN_FQID), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let (ok, _, stderr) = cellmatrix(&["query", "--url", base, "--filter", "{"]).await;
    assert!(!ok);
    assert!(stderr.contains("--filter"), "{stderr}");
}

#[tokio::test]
async fn serve_refuses_remote_addresses_unless_allowed() {
    let store = tempfile::tempdir().unwrap();
    let store = store.path().to_str().unwrap();
    let (ok, stdout, stderr) =
        cellmatrix(&["--store", store, "serve", "--listen", "0.0.0.0:0"]).await;
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("--allow-remote"), "{stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
}

#[tokio::test]
async fn client_commands_say_when_no_server_listens() {
    // The port stays bound but never listens, so a connection is refused and no
    // server started by a test running alongside can take it: a port merely freed
    // a moment ago was once picked up by `api_answers_without_data`'s server.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = held.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let (ok, _, stderr) = cellmatrix(&["status", "--url", &url, UNKNOWN_ID]).await;
    assert!(!ok);
    assert!(stderr.contains(&url), "{stderr}");
    drop(held);
}
