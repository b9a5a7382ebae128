//! `GET /v1/matrix/{id}/report`: the run report of a request that has ended
//! ([`crate::report`]), for its owners; 409 while it runs.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;

use crate::app::App;
use crate::state::Keys;

use super::error::ApiError;
use super::status::{id_segment, parse_id};
use super::{HttpResponse, Who, owners};

/// The report; 409 while the request runs, 404 for one that ended without a report
/// (one the driver failed before its collector ran, or ended before reports existed).
pub(super) async fn answer(
    State(app): State<Arc<App>>,
    Who(caller): Who,
    uri: Uri,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(id_segment(&uri))?;
    owners::owned(&app, &id, &caller).await?;
    let keys = Keys::new(&id);
    let (report, end) = futures::try_join!(
        crate::report::read(&app.store, &keys),
        crate::state::end(&app.store, &keys)
    )?;
    match report {
        Some(report) => Ok(HttpResponse::json(
            200,
            serde_json::to_value(&report)
                .map_err(|e| crate::error::Error::Internal(e.to_string()))?,
        )),
        None if !end.any() => Err(ApiError::refuse(
            409,
            format!("request {id} is still running: its report comes once it has ended"),
        )),
        None => Err(ApiError::refuse(
            404,
            format!("request {id} ended without a run report"),
        )),
    }
}
