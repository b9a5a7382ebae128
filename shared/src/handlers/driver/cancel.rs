//! `DELETE /v1/matrix/{id}`: cancels a request that has not ended.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;

use crate::app::App;
use crate::state::{Failure, Keys, StoredRequest, get_json, put_json_if_absent};

use super::HttpResponse;
use super::error::ApiError;
use super::status::{last_segment, parse_id, status_response};

/// Records the cancel (202 with the status); 409 for a request that has already ended.
pub(super) async fn answer(
    State(app): State<Arc<App>>,
    uri: Uri,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(last_segment(&uri))?;
    let keys = Keys::new(&id);
    let Some(stored) = get_json::<StoredRequest>(&app.store, &keys.request()).await? else {
        return Err(ApiError::refuse(404, format!("no request {id}")));
    };
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
    put_json_if_absent(
        &app.store,
        &keys.cancel(),
        &Failure::now("cancelled by the user"),
    )
    .await?;
    status_response(&app, &stored, 202).await
}
