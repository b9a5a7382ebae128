//! The reducer. As the collector it waits for the plans and the done markers, re-invokes
//! what failed with a retryable error, ends the request at its deadline, and then starts
//! consolidation; as a consolidation shard it writes one disjoint, chunk-aligned range of
//! the output. The collector commits the result once every shard is in; with a format
//! other than Zarr, once the conversion trigger has converted it.
//!
//! This module dispatches the reducer's events; `collector`, `consolidate` and `convert`
//! do the work, the collector keeping its [`ledger`] and going through its `phase`s.
//! [`failures`] turns Lambda's on-failure records into error markers.

mod collector;
mod consolidate;
mod convert;
pub mod failures;
pub mod ledger;
mod names;
mod phase;

use crate::app::App;
use crate::clock::now_ms;
use crate::error::Error;
use crate::handlers::beat::beating;
use crate::handlers::{begin, begin_with, stopped};
use crate::messages::{ReducerEvent, ReducerInput, ReducerMode};
use crate::state::{Consolidation, Keys, RequestView, get_json};

/// Runs a reducer invocation to completion.
pub async fn handle(app: &App, event: ReducerEvent) -> Result<(), Error> {
    handle_until(app, event, None).await
}

/// Runs whatever the reducer function was invoked with: one of our events, or Lambda's
/// record of an asynchronous invocation it gave up on (see [`failures`]).
pub async fn handle_input(
    app: &App,
    input: ReducerInput,
    stop_at_ms: Option<u64>,
) -> Result<(), Error> {
    match input {
        ReducerInput::Event(event) => handle_until(app, event, stop_at_ms).await,
        ReducerInput::Failure(record) => failures::handle(app, &record).await,
    }
}

/// Runs a reducer invocation; a collector hands over to a fresh invocation of itself
/// before `stop_at_ms` (the Lambda deadline), since its state is all in the store.
pub async fn handle_until(
    app: &App,
    event: ReducerEvent,
    stop_at_ms: Option<u64>,
) -> Result<(), Error> {
    let keys = Keys::new(&event.request_id);
    // A deadline already past is not a real one: `cargo lambda watch` sends a fixed
    // 600000 (ten minutes after 1970), and a collector taking it at its word would hand
    // over to a new invocation of itself at once, forever.
    let stop_at_ms = stop_at_ms.filter(|&deadline| deadline > now_ms());
    match event.mode {
        ReducerMode::Collect => {
            collector::Collector::new(app, keys)
                .await?
                .run(stop_at_ms)
                .await
        }
        ReducerMode::Resume => {
            collector::Collector::new(app, keys)
                .await?
                .resuming()
                .run(stop_at_ms)
                .await
        }
        ReducerMode::Consolidate { shard } => {
            let name = format!("shard-{shard}");
            let done = keys.shard(shard);
            // The plan and the request are independent: one round trip, not two, made
            // while the start marker is written. Their errors are looked at after.
            let plan_key = keys.consolidate();
            let reads = async {
                Ok(futures::join!(
                    get_json::<Consolidation>(&app.store, &plan_key),
                    RequestView::read(&app.store, &keys)
                ))
            };
            let begun = begin_with(app, &keys, &name, event.attempt, Some(&done), reads);
            let outcome = match begun.await {
                Ok(None) => return Ok(()),
                Ok(Some(begun)) => {
                    let (plan, view) = begun.read;
                    let work = consolidate::write_shard(
                        app,
                        &keys,
                        shard,
                        (event.attempt, begun.at_ms),
                        plan,
                        view,
                    );
                    beating(app, &keys, &name, event.attempt, begun.at_ms, work).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = &outcome {
                stopped(app, &keys, &name, event.attempt, e).await;
            }
            outcome
        }
        ReducerMode::Convert => {
            let done = keys.converted();
            let Some(at_ms) = begin(app, &keys, "convert", event.attempt, Some(&done)).await?
            else {
                return Ok(());
            };
            let work = convert::convert(app, &keys);
            let outcome = beating(app, &keys, "convert", event.attempt, at_ms, work).await;
            if let Err(e) = &outcome {
                stopped(app, &keys, "convert", event.attempt, e).await;
            }
            outcome
        }
    }
}
