//! A small client of the cellmatrix HTTP API, shared by `query`, `status`, `cancel` (and
//! anything else that talks to a running server): submit, poll, cancel, download.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::sigv4::Signer;

/// How long one API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The `--url` option of the commands that talk to a server.
#[derive(Debug, Clone, clap::Args)]
pub struct Server {
    /// The API's base URL (`cellmatrix serve` prints it).
    #[arg(
        long,
        env = "CELLMATRIX_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "BASE"
    )]
    pub url: String,
    /// Sign every call with SigV4 and your AWS credentials, for a deployed API behind
    /// IAM auth (the template's default).
    #[arg(long, env = "CELLMATRIX_SIGV4")]
    pub sigv4: bool,
    /// The region to sign for (default: the one in an API Gateway URL, else AWS_REGION).
    #[arg(long, requires = "sigv4", value_name = "REGION")]
    pub region: Option<String>,
}

impl Server {
    /// A client of this server.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let mut client = Client::new(&self.url)?;
        if self.sigv4 {
            client.signer = Some(Signer::from_env(&client.base, self.region.clone()).await?);
        }
        Ok(client)
    }
}

/// A client of one cellmatrix API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    signer: Option<Signer>,
}

/// An error answer of the API: its status and the server's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The `message` of the body (or the body itself when it has none).
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (HTTP {})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum State {
    /// Still being built.
    Running,
    /// Built; `result` says where.
    Succeeded,
    /// Ended with an error; `message` says which.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The status document of a request (`GET /v1/matrix/{id}`).
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    /// The request id.
    pub id: String,
    /// Where it is.
    pub status: State,
    /// How far it got.
    pub progress: Progress,
    /// When.
    pub timings: Timings,
    /// The matrix, once Succeeded.
    pub result: Option<MatrixResult>,
    /// Why it Failed or was Cancelled.
    pub message: Option<String>,
    /// The document as the server sent it.
    #[serde(skip)]
    pub raw: Value,
}

/// The `progress` of a status document.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Progress {
    /// Bundles in the request.
    #[serde(default)]
    pub bundles: u64,
    /// Worker tasks planned, once every mapper has planned.
    pub tasks_total: Option<u64>,
    /// Worker tasks finished.
    #[serde(default)]
    pub tasks_done: u64,
    /// Cells written so far.
    #[serde(default)]
    pub cells_written: u64,
}

/// The `timings` of a status document.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Timings {
    /// Seconds from start to finish (or to now).
    #[serde(default)]
    pub elapsed_seconds: f64,
}

/// The `result` of a Succeeded request.
#[derive(Debug, Clone, Deserialize)]
pub struct MatrixResult {
    /// Where the matrix is: a local path or `s3://...`.
    pub location: String,
    /// Cells (rows).
    pub n_cells: u64,
    /// Genes (columns).
    pub n_genes: u64,
    /// Nonzeros.
    pub nnz: u64,
    /// How many objects make up the matrix (`GET /v1/matrix/{id}/files` lists them).
    #[serde(default)]
    pub n_files: u64,
    /// Their bytes.
    #[serde(default)]
    pub total_bytes: u64,
    /// The conversion to the requested format (none for zarr).
    #[serde(default)]
    pub conversion: Option<Conversion>,
}

/// What the conversion took.
#[derive(Debug, Clone, Deserialize)]
pub struct Conversion {
    /// Seconds.
    pub seconds: f64,
    /// The converting reducer's peak resident memory, bytes.
    pub peak_rss_bytes: u64,
    /// Its resident memory when the conversion started, bytes.
    #[serde(default)]
    pub start_rss_bytes: u64,
}

/// One object of a result.
#[derive(Debug, Clone, Deserialize)]
pub struct ResultFile {
    /// The path under the result's location.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// A presigned GET URL (S3), or null when the store is a local directory.
    pub url: Option<String>,
}

impl Status {
    fn from_value(raw: Value) -> anyhow::Result<Status> {
        let mut status: Status = serde_json::from_value(raw.clone())
            .with_context(|| format!("the server's status document is not as expected: {raw}"))?;
        status.raw = raw;
        Ok(status)
    }

    /// One readable line.
    pub fn summary(&self) -> String {
        let p = &self.progress;
        let elapsed = self.timings.elapsed_seconds;
        match (self.status, &self.result) {
            (State::Succeeded, Some(r)) => format!(
                "{} Succeeded: {} cells x {} genes, {} nonzeros in {elapsed:.2} s, at {}",
                self.id, r.n_cells, r.n_genes, r.nnz, r.location
            ),
            (State::Running, _) => format!(
                "{} Running: {} bundle(s), {}/{} tasks, {} cells written, {elapsed:.1} s",
                self.id,
                p.bundles,
                p.tasks_done,
                p.tasks_total.map_or("?".to_string(), |t| t.to_string()),
                p.cells_written
            ),
            (state, _) => format!(
                "{} {state}: {}",
                self.id,
                self.message.as_deref().unwrap_or("(no message)")
            ),
        }
    }
}

impl Client {
    /// A client of the API at `base` (`http://host:port`, possibly with a path prefix).
    pub fn new(base: &str) -> anyhow::Result<Client> {
        let base = Url::parse(base).with_context(|| format!("--url {base:?} is not a URL"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("--url {base} must be an http:// or https:// URL");
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("cellmatrix/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(CALL_TIMEOUT)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client {
            http,
            base,
            signer: None,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `base` with `segments` appended (each percent-encoded, so an id cannot change
    /// the route; an empty, `.` or `..` segment, which would, is refused).
    fn url(&self, segments: &[&str]) -> anyhow::Result<Url> {
        if let Some(s) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
            bail!("{s:?} is not a request id");
        }
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .expect("checked in new: an http URL has a path")
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// One API call; an error status becomes an [`ApiError`] with the server's message.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Value> {
        let mut url = self.url(segments)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .timeout(CALL_TIMEOUT);
        let content_type = [("content-type", "application/json")];
        let signed_headers: &[(&str, &str)] = if body.is_some() { &content_type } else { &[] };
        if let Some(signer) = &self.signer {
            let payload = body.as_deref().unwrap_or_default();
            for (name, value) in signer
                .headers(method.as_str(), &url, signed_headers, payload)
                .await?
            {
                request = request.header(name, value);
            }
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("{method} {url}: reading the answer"))?;
        let json = serde_json::from_slice::<Value>(&bytes);
        if !status.is_success() {
            return Err(api_error(status, &bytes).into());
        }
        json.with_context(|| format!("{method} {url}: the answer ({status}) is not JSON"))
    }

    /// `POST /v1/matrix` with a `MatrixRequest` body; the status of the request (already
    /// Succeeded when the same request was built before).
    pub async fn submit(&self, body: Vec<u8>) -> anyhow::Result<Status> {
        Status::from_value(
            self.call(Method::POST, &["v1", "matrix"], &[], Some(body))
                .await?,
        )
    }

    /// `POST /v1/matrix` with `"dry_run": true` in `body` (a JSON object): the dry run's
    /// answer.
    pub async fn dry_run(&self, body: Vec<u8>) -> anyhow::Result<Value> {
        self.call(Method::POST, &["v1", "matrix"], &[], Some(body))
            .await
    }

    /// `GET /v1/fields`, or with a name `GET /v1/fields/{name}` page after page (its
    /// values gathered into one document).
    pub async fn fields(&self, name: Option<&str>) -> anyhow::Result<Value> {
        let Some(name) = name else {
            return self.call(Method::GET, &["v1", "fields"], &[], None).await;
        };
        let mut doc = self
            .call(Method::GET, &["v1", "fields", name], &[], None)
            .await?;
        while let Some(cursor) = doc["next_cursor"].as_str().map(str::to_string) {
            let page = self
                .call(
                    Method::GET,
                    &["v1", "fields", name],
                    &[("cursor", &cursor)],
                    None,
                )
                .await?;
            if let (Some(all), Some(more)) =
                (doc["values"].as_array_mut(), page["values"].as_array())
            {
                all.extend(more.iter().cloned());
            }
            doc["next_cursor"] = page["next_cursor"].clone();
        }
        Ok(doc)
    }

    /// `GET /v1/matrix/{id}`.
    pub async fn status(&self, id: &str) -> anyhow::Result<Status> {
        Status::from_value(
            self.call(Method::GET, &["v1", "matrix", id], &[], None)
                .await?,
        )
    }

    /// `DELETE /v1/matrix/{id}`: the status after the cancel was recorded.
    pub async fn cancel(&self, id: &str) -> anyhow::Result<Status> {
        Status::from_value(
            self.call(Method::DELETE, &["v1", "matrix", id], &[], None)
                .await?,
        )
    }

    /// `GET /v1/matrix/{id}/cells` as `accept` (a media type), each piece of the table
    /// handed to `out` as it arrives; what it covers. A table cut short is an error.
    pub async fn cells(
        &self,
        id: &str,
        accept: &str,
        out: &mut (dyn FnMut(&[u8]) -> std::io::Result<()> + Send),
    ) -> anyhow::Result<CellCoverage> {
        let url = self.url(&["v1", "matrix", id, "cells"])?;
        let mut request = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, accept);
        if let Some(signer) = &self.signer {
            for (name, value) in signer.headers("GET", &url, &[], b"").await? {
                request = request.header(name, value);
            }
        }
        let mut response = request.send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(api_error(status, &bytes).into());
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let number = |name: &str| header(name).and_then(|v| v.parse::<u64>().ok());
        let coverage = CellCoverage {
            tasks_covered: number("cellmatrix-tasks-covered").unwrap_or(0),
            tasks_total: number("cellmatrix-tasks-total"),
            complete: header("cellmatrix-complete").as_deref() == Some("true"),
            cells: number("cellmatrix-cells").unwrap_or(0),
        };
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("GET {url}: the table was cut short"))?
        {
            out(&chunk)?;
        }
        Ok(coverage)
    }

    /// `GET /v1/matrix/{id}/report`: the run report of a request that has ended.
    pub async fn report(&self, id: &str) -> anyhow::Result<cellmatrix::report::Report> {
        let value = self
            .call(Method::GET, &["v1", "matrix", id, "report"], &[], None)
            .await?;
        serde_json::from_value(value).context("the run report is not one")
    }

    /// `GET /v1/matrix/{id}/files`, page after page: every file of the result.
    pub async fn files(&self, id: &str) -> anyhow::Result<Vec<ResultFile>> {
        #[derive(Deserialize)]
        struct Page {
            files: Vec<ResultFile>,
            next_cursor: Option<String>,
        }
        let mut files = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query: Vec<(&str, &str)> = cursor.iter().map(|c| ("cursor", c.as_str())).collect();
            let page: Page = serde_json::from_value(
                self.call(Method::GET, &["v1", "matrix", id, "files"], &query, None)
                    .await?,
            )
            .context("the file list is not one")?;
            files.extend(page.files);
            match page.next_cursor {
                // A cursor that does not move on would page forever.
                Some(next) if cursor.as_deref() != Some(next.as_str()) => cursor = Some(next),
                Some(next) => bail!("the server gave the same cursor twice: {next:?}"),
                None => return Ok(files),
            }
        }
    }

    /// Downloads every file of `result` into `dir` (its presigned URL, or a copy from the
    /// local store when there is none), each through a temporary file renamed into place
    /// once its size is checked. `progress` is told of every chunk's bytes. Returns the
    /// bytes written.
    pub async fn download(
        &self,
        result: &MatrixResult,
        files: &[ResultFile],
        dir: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> anyhow::Result<u64> {
        // Every path is checked before anything is written.
        let mut plan = Vec::with_capacity(files.len());
        for file in files {
            plan.push((file, dir.join(safe_relative(&file.path)?)));
        }
        let mut total = 0;
        for (file, dest) in plan {
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            let tmp = temp_path(&dest);
            let written = match &file.url {
                Some(url) => self.fetch_to(url, file.size, &tmp, progress).await,
                None => copy_local(result, file, &tmp, progress).await,
            };
            let written = match written {
                Ok(n) if n == file.size => n,
                Ok(n) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    bail!(
                        "{}: got {n} bytes, the server said {}",
                        file.path,
                        file.size
                    );
                }
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(e.context(format!("downloading {}", file.path)));
                }
            };
            tokio::fs::rename(&tmp, &dest)
                .await
                .with_context(|| format!("cannot move {} into place", dest.display()))?;
            total += written;
        }
        Ok(total)
    }

    /// Streams `url` into `tmp`; stops as soon as more than `expected` bytes arrive.
    async fn fetch_to(
        &self,
        url: &str,
        expected: u64,
        tmp: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> anyhow::Result<u64> {
        let url = Url::parse(url).context("the file's URL is not a URL")?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("the file's URL has the scheme {:?}", url.scheme());
        }
        let mut response = self.http.get(url).send().await?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            bail!(
                "the object store answered {status}: {}",
                text.chars().take(300).collect::<String>()
            );
        }
        let mut out = tokio::fs::File::create(tmp)
            .await
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut written = 0u64;
        while let Some(chunk) = response.chunk().await? {
            written += chunk.len() as u64;
            if written > expected {
                bail!("more than the {expected} bytes the server said");
            }
            out.write_all(&chunk).await?;
            progress(chunk.len() as u64);
        }
        out.flush().await?;
        out.sync_all().await?;
        Ok(written)
    }
}

/// The [`ApiError`] of an answer with error status `status` and body `bytes`.
fn api_error(status: reqwest::StatusCode, bytes: &[u8]) -> ApiError {
    let message = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(bytes);
            let text = text.trim();
            if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_string()
            } else {
                text.chars().take(300).collect()
            }
        });
    ApiError {
        status: status.as_u16(),
        message,
    }
}

/// What a cell table covers, from its answer's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellCoverage {
    /// Worker tasks whose cells it holds.
    pub tasks_covered: u64,
    /// Worker tasks in all, once known.
    pub tasks_total: Option<u64>,
    /// Whether it holds every selected cell.
    pub complete: bool,
    /// Rows.
    pub cells: u64,
}

/// Copies `file` from the result's directory on this machine (a filesystem store).
async fn copy_local(
    result: &MatrixResult,
    file: &ResultFile,
    tmp: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<u64> {
    if result.location.contains("://") {
        bail!(
            "no URL for a file of {}; only a local store can be copied from",
            result.location
        );
    }
    let source = Path::new(&result.location).join(safe_relative(&file.path)?);
    let n = tokio::fs::copy(&source, tmp).await.with_context(|| {
        format!(
            "cannot copy {} (is the server's store on this machine?)",
            source.display()
        )
    })?;
    progress(n);
    Ok(n)
}

/// `path` as a relative path of normal components only: no root, no `..`, no `.`.
pub fn safe_relative(path: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && !path.contains('\\')
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.split('/').any(|s| s == "..");
    if !ok {
        bail!("refusing the result path {path:?}: it must be relative, without `..`");
    }
    Ok(p.to_path_buf())
}

/// A temporary name next to `dest`.
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{}.part", std::process::id()))
}

/// Whether `e` may go away if the call is repeated (a busy store, a dropped connection).
pub fn is_transient(e: &anyhow::Error) -> bool {
    if let Some(api) = e.downcast_ref::<ApiError>() {
        return matches!(api.status, 502..=504);
    }
    e.chain()
        .filter_map(|c| c.downcast_ref::<reqwest::Error>())
        .any(|r| r.is_connect() || r.is_timeout() || r.is_request())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_paths_must_stay_inside() {
        for ok in ["a", "matrix.zarr/zarr.json", "x/y/z.bin", "a..b/c"] {
            assert_eq!(safe_relative(ok).unwrap(), PathBuf::from(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            "./a",
            "a\\..\\b",
            "..",
        ] {
            assert!(safe_relative(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_cannot_change_the_route() {
        let client = Client::new("http://127.0.0.1:1/api/").unwrap();
        assert_eq!(
            client.url(&["v1", "matrix", "../x"]).unwrap().as_str(),
            "http://127.0.0.1:1/api/v1/matrix/..%2Fx"
        );
        assert_eq!(
            client.url(&["v1", "matrix", "a?b#c"]).unwrap().as_str(),
            "http://127.0.0.1:1/api/v1/matrix/a%3Fb%23c"
        );
        for dots in ["..", ".", ""] {
            assert!(client.url(&["v1", "matrix", dots]).is_err(), "{dots:?}");
        }
        assert!(Client::new("ftp://x").is_err());
        assert!(Client::new("not a url").is_err());
    }

    #[test]
    fn status_documents_parse_and_summarise() {
        let raw = serde_json::json!({
            "id": "ab", "status": "Succeeded", "format": "zarr",
            "progress": {"bundles": 2, "tasks_total": 3, "tasks_done": 3, "cells_written": 10},
            "timings": {"submitted_at": "t", "started_at": "t", "elapsed_seconds": 1.5, "finished_at": "t"},
            "result": {"location": "/s/r", "n_cells": 10, "n_genes": 5, "nnz": 7,
                       "n_files": 1, "total_bytes": 3, "files_url": "/v1/matrix/ab/files"},
            "message": null
        });
        let s = Status::from_value(raw.clone()).unwrap();
        assert_eq!(s.raw, raw);
        assert_eq!(s.status, State::Succeeded);
        assert!(
            s.summary().contains("10 cells x 5 genes, 7 nonzeros"),
            "{}",
            s.summary()
        );
        let running = Status::from_value(serde_json::json!({
            "id": "ab", "status": "Running",
            "progress": {"bundles": 2, "tasks_total": null, "tasks_done": 0, "cells_written": 0},
            "timings": {"elapsed_seconds": 0.25}, "result": null, "message": null
        }))
        .unwrap();
        assert!(
            running.summary().contains("0/? tasks"),
            "{}",
            running.summary()
        );
        assert!(Status::from_value(serde_json::json!({"id": "x", "status": "Weird"})).is_err());
    }
}
