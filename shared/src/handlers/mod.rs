//! The entry points of the four functions, free of any Lambda crate so that the Lambda
//! binaries, `cellmatrix serve` and the tests all call the same code. Each takes the
//! [`App`] (store, invoker, settings) and its event.

mod beat;
pub mod driver;
pub mod mapper;
pub mod reducer;
mod revive;
pub mod worker;

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::app::App;
use crate::error::Error;
use crate::invoke::{Dispatch, Function};
use crate::messages::{ReducerEvent, ReducerMode, RequestId};
use crate::state::{ErrorMarker, Keys, put_json};

pub use revive::{resume_all, revive};

/// Starts a collector for `request`: at the start of a run, or in place of one that
/// handed over.
pub async fn invoke_collector(app: &App, request: &RequestId) -> Result<(), Error> {
    invoke_reducer(app, request, ReducerMode::Collect).await
}

/// Invokes the reducer for `request` in `mode` (a collector's, as its first attempt).
async fn invoke_reducer(app: &App, request: &RequestId, mode: ReducerMode) -> Result<(), Error> {
    let event = ReducerEvent {
        request_id: request.clone(),
        mode,
        attempt: 0,
    };
    let payload = serde_json::to_value(&event)
        .map_err(|e| Error::Internal(format!("collector event: {e}")))?;
    app.invoker.invoke(Function::Reducer, payload).await
}

/// Starts invocation `name` (its start marker) unless the request has ended or its
/// output's marker `done` exists; `None` then, else its start time. An invocation of an ended request cleans
/// up instead: it may be the retry of a copy that crashed half-way through writing,
/// after the request's cleanup. One that finds its output done starts nothing (and
/// leaves no start marker behind).
pub(crate) async fn begin(
    app: &App,
    keys: &Keys,
    name: &str,
    attempt: u32,
    done: Option<&str>,
) -> Result<Option<u64>, Error> {
    let begun = begin_with(app, keys, name, attempt, done, async { Ok(()) }).await?;
    Ok(begun.map(|b| b.at_ms))
}

/// A started invocation: the start time its marker says (its heartbeats repeat it), and
/// its first reads.
pub(crate) struct Begun<T> {
    pub at_ms: u64,
    pub read: T,
}

/// [`begin`], with the invocation's first `reads` made while its start marker is
/// written (a round trip less); `None` where `begin` is `false`.
pub(crate) async fn begin_with<T>(
    app: &App,
    keys: &Keys,
    name: &str,
    attempt: u32,
    done: Option<&str>,
    reads: impl Future<Output = Result<T, Error>>,
) -> Result<Option<Begun<T>>, Error> {
    use crate::state::Started;
    match crate::state::start(&app.store, keys, name, attempt, done, reads).await? {
        Started::Started { at_ms, read } => Ok(Some(Begun { at_ms, read })),
        Started::AlreadyDone => Ok(None),
        Started::Ended => {
            crate::scratch::after_write(&app.store, keys, app.config.keep_scratch).await?;
            Ok(None)
        }
    }
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

/// The in-process Lambda: an event for `function` runs its handler on this app.
impl Dispatch for App {
    fn dispatch(
        self: Arc<Self>,
        function: Function,
        payload: Value,
    ) -> BoxFuture<'static, Result<(), Error>> {
        async move {
            let bad =
                |e: serde_json::Error| Error::input(format!("{function} event"), e.to_string());
            match function {
                Function::Mapper => {
                    mapper::handle(&self, serde_json::from_value(payload).map_err(bad)?).await
                }
                Function::Worker => {
                    worker::handle(&self, serde_json::from_value(payload).map_err(bad)?).await
                }
                Function::Reducer => {
                    let input = serde_json::from_value(payload).map_err(bad)?;
                    reducer::handle_input(&self, input, None).await
                }
            }
        }
        .boxed()
    }
}
