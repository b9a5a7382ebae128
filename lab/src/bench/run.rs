//! Runs one request through an in-process app from POST to its end, the way the
//! benchmarks and the demo drive the embedded stack.

use std::time::{Duration, Instant};

use serde_json::Value;

use cellmatrix::app::App;
use cellmatrix::error::Error;
use cellmatrix::handlers::driver;

/// Deletes every request and result in `store` (a benchmark's own), so that the same
/// request runs again instead of being answered from its earlier result.
pub async fn forget_requests(store: &cellmatrix::store::DynStore) -> Result<(), Error> {
    for prefix in ["requests/", "results/"] {
        for object in store.list(prefix).await? {
            store.delete(&object.key).await?;
        }
    }
    Ok(())
}

/// A request that ended.
#[derive(Debug, Clone)]
pub struct Ended {
    /// The request id.
    pub id: String,
    /// The last status document (`status` is no longer `Running`).
    pub status: Value,
    /// From the POST to the first status that was not `Running`.
    pub seconds: f64,
}

impl Ended {
    /// Whether it succeeded.
    pub fn succeeded(&self) -> bool {
        self.status["status"] == "Succeeded"
    }
}

/// Submits `request` to `app` and polls its status every `every` until it ends; with
/// `progress`, a bar of tasks done. A refused request is an error with the driver's
/// message. Late copies may still run: call [`App::idle`] before reading scratch data.
pub async fn run_to_end(
    app: &App,
    request: &Value,
    every: Duration,
    progress: bool,
) -> Result<Ended, Error> {
    let (id, started) = submit(app, request).await?;
    follow(app, id, started, every, progress).await
}

/// Submits `request` to `app`: its id, and when it was sent. A refused request is an
/// error with the driver's message.
pub async fn submit(app: &App, request: &Value) -> Result<(String, Instant), Error> {
    let started = Instant::now();
    let answer = driver::handle(app, "POST", "/v1/matrix", request.to_string().as_bytes()).await;
    if answer.status >= 400 {
        return Err(Error::input(
            "request",
            format!(
                "the driver refused it ({}): {}",
                answer.status, answer.body["message"]
            ),
        ));
    }
    let id = answer.body["id"]
        .as_str()
        .ok_or_else(|| Error::Internal(format!("no request id in {}", answer.body)))?
        .to_string();
    Ok((id, started))
}

/// Polls request `id`'s status every `every` until it ends (see [`run_to_end`]).
pub async fn follow(
    app: &App,
    id: String,
    started: Instant,
    every: Duration,
    progress: bool,
) -> Result<Ended, Error> {
    let bar = cellmatrix::progress::bar(progress, 0, "tasks");
    let path = format!("/v1/matrix/{id}");
    let status = loop {
        let status = driver::handle(app, "GET", &path, b"").await;
        // 503: the store said "try again", as a client would.
        if status.status != 503 {
            let body = status.body;
            if let Some(total) = body["progress"]["tasks_total"].as_u64() {
                bar.set_length(total);
                bar.set_position(body["progress"]["tasks_done"].as_u64().unwrap_or(0));
            }
            if body["status"] != "Running" {
                break body;
            }
        }
        tokio::time::sleep(every).await;
    };
    bar.finish_and_clear();
    Ok(Ended {
        id,
        status,
        seconds: started.elapsed().as_secs_f64(),
    })
}
