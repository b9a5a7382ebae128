//! `DELETE /v1/matrix/{id}`: detaches its caller from a request that has not ended, and
//! cancels the run once no caller is left.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;

use crate::app::App;
use crate::state::{Failure, Keys, get_json, put_json_if_absent};

use super::error::ApiError;
use super::status::{last_segment, parse_id, status_response};
use super::{HttpResponse, Who, owners, quota};

/// Detaches the caller, and records the cancel when it was the last (202 with the
/// status: Cancelled, or Running for the callers left); 409 for a request that has
/// already ended; 404 for one the caller does not own.
pub(super) async fn answer(
    State(app): State<Arc<App>>,
    Who(caller): Who,
    uri: Uri,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(last_segment(&uri))?;
    let keys = Keys::new(&id);
    let stored = owners::owned(&app, &id, &caller).await?;
    if app.store.exists(&keys.result()).await? {
        return Err(ApiError::refuse(
            409,
            format!("request {id} has already succeeded; there is nothing to cancel"),
        ));
    }
    if let Some(f) = get_json::<Failure>(&app.store, &keys.failed()).await? {
        return Err(ApiError::refuse(
            409,
            format!(
                "request {id} has already failed ({}); there is nothing to cancel",
                f.message
            ),
        ));
    }
    quota::unmark(&app, &caller, &id).await?;
    if !owners::detach(&app, &id, &caller).await? {
        put_json_if_absent(
            &app.store,
            &keys.cancel(),
            &Failure::now("cancelled by the user"),
        )
        .await?;
    }
    status_response(&app, &stored, 202).await
}
