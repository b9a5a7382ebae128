//! The entry points of the four functions, free of any Lambda crate so that the Lambda
//! binaries, `cellmatrix serve` and the tests all call the same code. Each takes the
//! [`App`] (store, invoker, settings) and its event.

pub mod driver;
pub mod failures;
pub mod ledger;
pub mod mapper;
pub mod reducer;
pub mod worker;

use crate::app::App;
use crate::error::Error;
use crate::state::{ErrorMarker, Keys, put_json};

/// Starts invocation `name` (its start marker) unless the request has ended; `false`
/// when it has. An invocation of an ended request cleans up instead: it may be the retry
/// of a copy that crashed half-way through writing, after the request's cleanup.
pub(crate) async fn begin(app: &App, keys: &Keys, name: &str, attempt: u32) -> Result<bool, Error> {
    if crate::state::start(&app.store, keys, name, attempt).await? {
        return Ok(true);
    }
    crate::scratch::after_write(&app.store, keys, app.config.keep_scratch).await?;
    Ok(false)
}

/// An invocation that stopped with `e`. A failure is recorded for the collector, which
/// retries it or fails the request (best effort: if even this write fails, the deadline
/// still ends the request). A stop for a cancel or an ended request records nothing.
/// Either way, if the request has ended, the invocation cleans up after itself: its start
/// marker, at least, may have landed after the request's cleanup.
pub(crate) async fn stopped(app: &App, keys: &Keys, name: &str, attempt: u32, e: &Error) {
    if !matches!(e, Error::Cancelled(_)) {
        let marker = ErrorMarker {
            name: name.to_string(),
            retryable: e.is_retryable(),
            message: e.to_string(),
            attempt,
        };
        tracing::warn!(request = %keys.id(), name, attempt, error = %e, "invocation failed");
        if let Err(write) = put_json(&app.store, &keys.error(name), &marker).await {
            tracing::error!(request = %keys.id(), name, error = %write, "cannot record the failure");
        }
    }
    if let Err(e) = crate::scratch::after_write(&app.store, keys, app.config.keep_scratch).await {
        tracing::warn!(request = %keys.id(), error = %e, "cannot clean up after a stop");
    }
}
