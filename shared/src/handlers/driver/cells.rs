//! `GET /v1/matrix/{id}/cells`: the cell table of a request the caller owns, streamed as
//! CSV or JSON lines by `Accept` (see [`crate::cells`]): partial while it runs, its
//! coverage in the headers, and the final matrix's obs once it succeeded. A request
//! that failed or was cancelled has none (409).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use futures::TryStreamExt;

use crate::app::App;
use crate::cells::{CellTable, Encoding};
use crate::error::clip;
use crate::state::{Failure, Keys, Progress, RequestView, ResultRecord, get_json};

use super::error::ApiError;
use super::status::{id_segment, parse_id};
use super::{Who, owners};

/// Tasks whose cells the table holds.
pub const TASKS_COVERED: &str = "cellmatrix-tasks-covered";
/// Tasks in all, once every group is planned.
pub const TASKS_TOTAL: &str = "cellmatrix-tasks-total";
/// `true` when the table holds every selected cell.
pub const COMPLETE: &str = "cellmatrix-complete";
/// Rows in the table.
pub const CELLS: &str = "cellmatrix-cells";

/// The cell table, streamed; its coverage in the headers.
pub(super) async fn answer(
    State(app): State<Arc<App>>,
    Who(caller): Who,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(id_segment(&uri))?;
    let accept = headers
        .get(header::ACCEPT)
        .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned());
    let encoding = Encoding::from_accept(accept.as_deref()).ok_or_else(|| {
        ApiError::refuse(
            406,
            format!(
                "the cell table comes as {} or {}, not {}",
                Encoding::CSV,
                Encoding::JSON_LINES,
                clip(accept.as_deref().unwrap_or(""))
            ),
        )
    })?;
    let stored = owners::owned(&app, &id, &caller).await?;
    let keys = Keys::new(&id);
    let store = &app.store;
    let (k_result, k_failed, k_cancel, k_progress) =
        (keys.result(), keys.failed(), keys.cancel(), keys.progress());
    let (result, failed, cancelled, progress, view) = futures::try_join!(
        get_json::<ResultRecord>(store, &k_result),
        get_json::<Failure>(store, &k_failed),
        get_json::<Failure>(store, &k_cancel),
        get_json::<Progress>(store, &k_progress),
        RequestView::read(store, &keys),
    )?;
    let table = if let Some(result) = &result {
        let tasks = progress.unwrap_or_default().tasks_total;
        CellTable::succeeded(&keys, &keys.zarr(view.format), result, tasks, &view.columns)
    } else if let Some(f) = failed {
        return Err(ApiError::refuse(
            409,
            format!(
                "request {id} failed, so it has no cell table: {}",
                f.message
            ),
        ));
    } else if let Some(c) = cancelled {
        return Err(ApiError::refuse(
            409,
            format!(
                "request {id} was cancelled, so it has no cell table: {}",
                c.message
            ),
        ));
    } else {
        CellTable::running(store, &keys, stored.groups, &view.columns).await?
    };
    let coverage = table.coverage;
    let rows = table.rows();
    let body = table
        .stream(store.clone(), encoding)
        .inspect_err(move |e| tracing::error!(request = %id, error = %e, "cell table cut short"));
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    h.insert(header::VARY, HeaderValue::from_static("accept"));
    h.insert(TASKS_COVERED, HeaderValue::from(coverage.tasks_covered));
    if let Some(total) = coverage.tasks_total {
        h.insert(TASKS_TOTAL, HeaderValue::from(total));
    }
    h.insert(
        COMPLETE,
        HeaderValue::from_static(if coverage.complete { "true" } else { "false" }),
    );
    h.insert(CELLS, HeaderValue::from(rows));
    Ok(response)
}
