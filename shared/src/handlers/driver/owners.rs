//! Who owns a request: the set of callers who submitted it, one key each under
//! `requests/{id}/callers/`. Identical requests share one run, so each caller's first
//! POST adds its own key (put-if-absent: no read-modify-write of a shared list). Only an
//! owner reads the status and the files or cancels; to anyone else the request does not
//! exist (the same 404 as an id never seen). A DELETE detaches its caller, and the run is
//! cancelled once no caller is left.

use crate::app::App;
use crate::caller::Caller;
use crate::clock::now_ms;
use crate::error::Error;
use crate::messages::RequestId;
use crate::state::{CallerRecord, Keys, StoredRequest, get_json, put_json_if_absent};

use super::error::ApiError;

/// The answer to a request id the caller may not see, and to one never seen.
pub(super) fn no_request(id: &RequestId) -> ApiError {
    ApiError::refuse(404, format!("no request {id}"))
}

/// Adds `caller` to the owners of request `id` (nothing when it is one already).
pub(super) async fn attach(app: &App, id: &RequestId, caller: &Caller) -> Result<(), Error> {
    let record = CallerRecord {
        caller: caller.identity().to_string(),
        request: id.clone(),
        at_ms: now_ms(),
    };
    put_json_if_absent(&app.store, &Keys::new(id).caller(caller), &record).await?;
    Ok(())
}

/// The stored request `id` when `caller` owns it; else the 404 of [`no_request`]. Both
/// reads at once.
pub(super) async fn owned(
    app: &App,
    id: &RequestId,
    caller: &Caller,
) -> Result<StoredRequest, ApiError> {
    let keys = Keys::new(id);
    let (k_request, k_caller) = (keys.request(), keys.caller(caller));
    let (stored, owner) =
        futures::try_join!(get_json::<StoredRequest>(&app.store, &k_request), async {
            Ok(app.store.exists(&k_caller).await?)
        },)?;
    match stored {
        Some(stored) if owner => Ok(stored),
        _ => Err(no_request(id)),
    }
}

/// Removes `caller` from the owners of request `id`; whether any owner is left.
pub(super) async fn detach(app: &App, id: &RequestId, caller: &Caller) -> Result<bool, Error> {
    let keys = Keys::new(id);
    app.store.delete(&keys.caller(caller)).await?;
    Ok(!app.store.list(&keys.callers()).await?.is_empty())
}
