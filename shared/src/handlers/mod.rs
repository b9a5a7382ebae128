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

/// Records a failed invocation for the collector, which retries it or fails the request.
/// Best effort: if even this write fails, the collector's deadline still ends the request.
pub(crate) async fn record_error(app: &App, keys: &Keys, name: &str, attempt: u32, e: &Error) {
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
    // A late copy failing after the request ended (its parts removed under it, say)
    // leaves no marker behind.
    if let Err(e) = crate::scratch::after_write(&app.store, keys, app.config.keep_scratch).await {
        tracing::warn!(request = %keys.id(), error = %e, "cannot clean up after a failure");
    }
}
