//! The per-caller quota: at most `caller_max_running` Running requests per caller. Each
//! run a caller submits or joins gets a marker under `callers/{caller}/running/`; a POST
//! that would start a run counts the caller's markers whose run has not ended (deleting
//! the others as it goes), and is refused with 429 and `Retry-After` at the limit.
//!
//! The count is not a lock: POSTs of one caller racing each other may each find room, and
//! pass the limit by as many as race. What it bounds is a caller's steady load.

use std::time::Duration;

use futures::future::try_join_all;

use crate::app::App;
use crate::caller::Caller;
use crate::clock::now_ms;
use crate::error::Error;
use crate::messages::RequestId;
use crate::state::{CallerKeys, CallerRecord, Keys, RunInfo, end, get_json, put_json};

use super::error::ApiError;

/// What a 429 asks the caller to wait: a few collector polls of a small request, a small
/// part of a large one.
pub(super) const RETRY_AFTER_SECS: u64 = 30;

/// A marker whose request is not stored yet still counts for this long: its POST may be
/// writing it.
const UNCOMMITTED_GRACE: Duration = Duration::from_secs(60);

/// Refuses (429) a POST of `caller` that would start the run of request `id` when the
/// caller already has `caller_max_running` runs going; otherwise marks the run as the
/// caller's.
pub(super) async fn admit(app: &App, caller: &Caller, id: &RequestId) -> Result<(), ApiError> {
    let limit = app.config.caller_max_running;
    let running = count_running(app, caller, id).await?;
    if running >= limit {
        return Err(ApiError::TooMany {
            message: format!(
                "you have {running} requests running, the most this service runs for one \
                 caller ({limit}); wait for one to end, or cancel one"
            ),
            retry_after: RETRY_AFTER_SECS,
        });
    }
    mark(app, caller, id).await?;
    Ok(())
}

/// Marks the run of request `id` as one of `caller`'s (a caller joining a Running run).
pub(super) async fn mark(app: &App, caller: &Caller, id: &RequestId) -> Result<(), Error> {
    let record = CallerRecord {
        caller: caller.identity().to_string(),
        request: id.clone(),
        at_ms: now_ms(),
    };
    put_json(
        &app.store,
        &CallerKeys::new(caller).running_request(id),
        &record,
    )
    .await
}

/// Removes the mark of `caller` on the run of request `id` (its DELETE).
pub(super) async fn unmark(app: &App, caller: &Caller, id: &RequestId) -> Result<(), Error> {
    Ok(app
        .store
        .delete(&CallerKeys::new(caller).running_request(id))
        .await?)
}

/// The runs of `caller` other than `id`'s that are still going; the marks of the others
/// are deleted.
async fn count_running(app: &App, caller: &Caller, id: &RequestId) -> Result<u64, Error> {
    let marks = app.store.list(&CallerKeys::new(caller).running()).await?;
    let checks = marks.iter().map(|o| async move {
        let Some(record) = get_json::<CallerRecord>(&app.store, &o.key).await? else {
            return Ok::<_, Error>(false);
        };
        if &record.request == id {
            return Ok(false);
        }
        if running(app, &record).await? {
            return Ok(true);
        }
        app.store.delete(&o.key).await?;
        Ok(false)
    });
    let running = try_join_all(checks).await?;
    Ok(running.into_iter().filter(|&r| r).count() as u64)
}

/// Whether the run a mark names is going: stored, not ended, not past its deadline (and
/// the grace the status gives it), or not stored yet but marked moments ago.
async fn running(app: &App, record: &CallerRecord) -> Result<bool, Error> {
    let keys = Keys::new(&record.request);
    let (k_request, k_run) = (keys.request(), keys.run());
    let (stored, run, end) = futures::try_join!(
        async { Ok::<_, Error>(app.store.exists(&k_request).await?) },
        get_json::<RunInfo>(&app.store, &k_run),
        end(&app.store, &keys),
    )?;
    let now = now_ms();
    if !stored {
        return Ok(now.saturating_sub(record.at_ms) < UNCOMMITTED_GRACE.as_millis() as u64);
    }
    let overdue = run.is_some_and(|r| now > r.deadline_ms.saturating_add(60_000));
    Ok(!end.any() && !overdue)
}
