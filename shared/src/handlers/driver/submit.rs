//! `POST /v1/matrix`: parses and resolves a request, writes its state and starts it (or
//! answers with the run of the same request, when there is one).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use crate::app::App;
use crate::caller::Caller;
use crate::clock::now_ms;
use crate::error::Error;
use crate::invoke::Function;
use crate::messages::MapperEvent;
use crate::state::{Failure, Keys, RunInfo, StoredRequest, get_json, put_json, put_json_if_absent};
use crate::store::PutOutcome;

use super::HttpResponse;
use super::check::{Checked, check, worker_copies};
use super::error::ApiError;
use super::status::status_response;
use super::{Who, limits, owners, quota};

/// A body over the router's limit comes as a rejection, answered as the request's error.
pub(super) async fn answer(
    State(app): State<Arc<App>>,
    Who(caller): Who,
    body: Result<Bytes, BytesRejection>,
) -> Result<HttpResponse, ApiError> {
    submit(&app, &caller, &body?).await
}

/// Every way through adds `caller` to the request's owners; a way that starts a run
/// first passes the caller's quota. A dry run only answers.
async fn submit(app: &App, caller: &Caller, body: &[u8]) -> Result<HttpResponse, ApiError> {
    let received_ms = now_ms();
    let checked = check(app, body).await?;
    if checked.req.dry_run {
        return Ok(super::dry_run::answer(app, &checked).await?);
    }
    let preview = super::dry_run::preview(app, &checked).await?;
    let Checked {
        req,
        resolved,
        genes,
        identity_sets,
        id,
    } = checked;
    let keys = Keys::new(&id);
    let store = &app.store;

    if let Some(existing) = get_json::<StoredRequest>(store, &keys.request()).await? {
        if store.exists(&keys.result()).await? {
            owners::attach(app, &id, caller).await?;
            return status_response(app, &existing, 200).await;
        }
        let failed = store.exists(&keys.failed()).await?;
        let cancelled = store.exists(&keys.cancel()).await?;
        if !failed && !cancelled {
            // Joining a run starts nothing: no quota to pass, but the run counts.
            futures::try_join!(
                owners::attach(app, &id, caller),
                quota::mark(app, caller, &id)
            )?;
            return status_response(app, &existing, 202).await;
        }
        quota::admit(app, caller, &id).await?;
        owners::attach(app, &id, caller).await?;
        // Ran before and ended badly: run again. Parts and markers of tasks that were
        // done are the same bytes a new run would write, so they stay. The new deadline
        // goes first, so the request never looks overdue in between.
        put_json(store, &keys.run(), &new_run(app, received_ms)).await?;
        for key in [
            keys.failed(),
            keys.cancel(),
            keys.checkpoint(),
            keys.report(),
        ] {
            store.delete(&key).await?;
        }
        for o in store.list(&keys.errors()).await? {
            store.delete(&o.key).await?;
        }
        start_or_fail(app, &existing).await?;
        return status_response(app, &existing, 202).await;
    }

    quota::admit(app, caller, &id).await?;
    // Before request.json: the request never exists without its first owner.
    owners::attach(app, &id, caller).await?;
    let copies = worker_copies(app, &resolved);
    let stored = StoredRequest {
        id: id.clone(),
        canonical: req.canonical(&resolved.bundles),
        groups: resolved
            .bundles
            .len()
            .div_ceil(app.config.bundles_per_mapper) as u32,
        bundles_per_mapper: app.config.bundles_per_mapper,
        bundles: resolved.bundles,
        value_type: limits::output_type(&resolved.entries),
        n_genes: genes.len() as u64,
        submitted_at: crate::clock::rfc3339(now_ms()),
        identity_sets,
        columns: resolved.columns,
        copies,
        preview: Some(preview),
    };
    // Everything the functions read comes first (at once: they are independent);
    // request.json commits the request.
    let (run, genes_key, run_key) = (new_run(app, received_ms), keys.genes(), keys.run());
    futures::try_join!(
        put_json(store, &genes_key, &genes),
        put_json(store, &run_key, &run)
    )?;
    if put_json_if_absent(store, &keys.request(), &stored).await? == PutOutcome::Created {
        crate::fault::kill_point(crate::fault::KillPoint::Planning);
        start_or_fail(app, &stored).await?;
    }
    status_response(app, &stored, 202).await
}

fn new_run(app: &App, received_ms: u64) -> RunInfo {
    let now = now_ms();
    RunInfo {
        received_ms,
        started_ms: now,
        deadline_ms: now + app.config.request_timeout.as_millis() as u64,
    }
}

/// Starts the request; if it cannot be started, records it Failed, so that the same
/// request submitted again runs again instead of waiting for its deadline.
async fn start_or_fail(app: &App, stored: &StoredRequest) -> Result<(), Error> {
    let outcome = start(app, stored).await;
    if let Err(e) = &outcome {
        let keys = Keys::new(&stored.id);
        let failure = Failure::now(format!("the request could not be started: {e}"));
        if let Err(write) = put_json_if_absent(&app.store, &keys.failed(), &failure).await {
            tracing::error!(request = %stored.id, error = %write, "cannot record the failure");
        }
    }
    outcome
}

/// Invokes the collector, plans the first `driver_groups` groups here (as their mappers
/// would, with the same code) and invokes a mapper for each other group,
/// `invoke_concurrency` at a time (the caller has written `run.json`, whose deadline
/// counts from just before).
async fn start(app: &App, stored: &StoredRequest) -> Result<(), Error> {
    let events: Vec<MapperEvent> = stored
        .bundles
        .chunks(stored.bundles_per_mapper)
        .enumerate()
        .map(|(group, bundles)| MapperEvent {
            request_id: stored.id.clone(),
            group: group as u32,
            bundles: bundles.to_vec(),
            attempt: 0,
            copies: stored.copies,
        })
        .collect();
    // Futures built eagerly for `Send`; `buffer_unordered` polls at most
    // `invoke_concurrency`.
    let mut calls: Vec<futures::future::BoxFuture<'_, Result<(), Error>>> =
        vec![Box::pin(crate::handlers::invoke_collector(app, &stored.id))];
    for (n, event) in events.into_iter().enumerate() {
        if n < app.config.driver_groups {
            calls.push(Box::pin(map_here(app, event)));
        } else {
            calls.push(Box::pin(async move {
                app.invoker
                    .invoke(Function::Mapper, to_value(&event)?)
                    .await
            }));
        }
    }
    futures::stream::iter(calls)
        .buffer_unordered(app.config.invoke_concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Plans one group in this invocation (`mapper::handle_in_driver`). A failure is
/// recorded as a mapper's is (its error marker, which the collector retries), and the
/// group goes to a mapper invocation, as Lambda retries a mapper that failed: the
/// request does not wait for the lost rule if even that marker could not be written.
/// Planning twice writes the same keys.
async fn map_here(app: &App, event: MapperEvent) -> Result<(), Error> {
    let retry = event.clone();
    match crate::handlers::mapper::handle_in_driver(app, event).await {
        Ok(()) | Err(Error::Cancelled(_)) => Ok(()),
        Err(e) => {
            tracing::warn!(request = %retry.request_id, group = retry.group, error = %e,
                "planning in the driver failed; invoking a mapper");
            app.invoker
                .invoke(Function::Mapper, to_value(&retry)?)
                .await
        }
    }
}

fn to_value<T: serde::Serialize>(event: &T) -> Result<Value, Error> {
    serde_json::to_value(event).map_err(|e| Error::input("event", e.to_string()))
}
