//! Watches a request's cell table while it runs, as a user waiting for the first answer
//! would: `GET /v1/matrix/{id}/cells` polled through the real router, timing the first
//! partial, non-empty table and the complete one (each read to its end).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use cellmatrix::app::App;
use cellmatrix::caller::Caller;
use cellmatrix::handlers::driver;

/// When the cell table came, in seconds after the request was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CellTimes {
    /// The first table with rows (partial, unless the first one seen was complete).
    pub first_seconds: Option<f64>,
    /// Its rows.
    pub first_cells: u64,
    /// The first complete table.
    pub complete_seconds: Option<f64>,
}

/// Polls the cell table of request `id` every `every` until it is complete, or until
/// the route says the request has none (it failed or was cancelled).
pub async fn watch(app: &App, id: &str, started: Instant, every: Duration) -> CellTimes {
    let mut times = CellTimes::default();
    loop {
        let request = axum::http::Request::builder()
            .method("GET")
            .uri(format!("/v1/matrix/{id}/cells"))
            .header("accept", "text/csv")
            .extension(Caller::local())
            .body(axum::body::Body::empty());
        let Ok(request) = request else {
            return times;
        };
        let response = driver::send(app, request).await;
        let status = response.status().as_u16();
        if status != 200 && status != 503 {
            return times;
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let complete = header(driver::COMPLETE).as_deref() == Some("true");
        let cells: u64 = header(driver::CELLS)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let first = times.first_seconds.is_none() && cells > 0;
        if status == 200 && (first || complete) {
            // The table is there once it has been read to its end.
            let read = axum::body::to_bytes(response.into_body(), usize::MAX).await;
            if read.is_ok() {
                let at = started.elapsed().as_secs_f64();
                if first {
                    times.first_seconds = Some(at);
                    times.first_cells = cells;
                }
                if complete {
                    times.complete_seconds = Some(at);
                    return times;
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}
