//! Starting a collector in place of one that went silent or died: under a lease, so
//! that the status requests, POSTs and restarts that notice the same silence start one
//! collector between them, not one each; and, when `cellmatrix serve` starts, for every
//! request of its store that was running when the last process died.

use std::collections::BTreeMap;

use crate::app::App;
use crate::clock::now_ms;
use crate::error::Error;
use crate::messages::{ReducerMode, RequestId};
use crate::state::{Keys, Progress, RunInfo, get_json, put_json_if_absent};
use crate::store::PutOutcome;

/// Starts a collector for `request` in `mode` if this caller takes the lease of the
/// silence it saw: the collector last heard of at `heard_ms` (its heartbeat, or the
/// run's start), counted in stale periods since. Whoever sees the same silence in the
/// same period finds the lease taken; a collector revived and then silent too is
/// revived in a later period. True when this call started one.
pub async fn revive(
    app: &App,
    request: &RequestId,
    heard_ms: u64,
    mode: ReducerMode,
) -> Result<bool, Error> {
    let keys = Keys::new(request);
    let stale = (app.config.collector_stale.as_millis() as u64).max(1);
    let period = now_ms().saturating_sub(heard_ms) / stale;
    let lease = serde_json::json!({ "mode": mode, "at_ms": now_ms() });
    let key = keys.lease(heard_ms, period);
    if put_json_if_absent(&app.store, &key, &lease).await? == PutOutcome::AlreadyExists {
        tracing::info!(request = %request, lease = %key, "another caller revived the collector");
        return Ok(false);
    }
    super::invoke_reducer(app, request, mode).await?;
    Ok(true)
}

/// Resumes every request of the store that has neither ended nor been cancelled: the
/// process that ran their invocations is gone (this is `cellmatrix serve` starting), so
/// each gets a collector that launches again what did not finish
/// ([`ReducerMode::Resume`]). Lists `requests/` once. Returns the requests resumed.
pub async fn resume_all(app: &App) -> Result<Vec<RequestId>, Error> {
    #[derive(Default)]
    struct Seen {
        request: bool,
        ended: bool,
    }
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for o in app.store.list("requests/").await? {
        let Some((id, rest)) = o
            .key
            .strip_prefix("requests/")
            .and_then(|k| k.split_once('/'))
        else {
            continue;
        };
        let s = seen.entry(id.to_string()).or_default();
        match rest {
            "request.json" => s.request = true,
            "result.json" | "failed.json" | "cancel.json" => s.ended = true,
            _ => {}
        }
    }
    let mut resumed = Vec::new();
    for (id, s) in seen {
        if !s.request || s.ended {
            continue;
        }
        let Ok(id) = RequestId::parse(&id) else {
            continue;
        };
        let keys = Keys::new(&id);
        let (run_key, progress_key) = (keys.run(), keys.progress());
        let (run, progress) = futures::try_join!(
            get_json::<RunInfo>(&app.store, &run_key),
            get_json::<Progress>(&app.store, &progress_key),
        )?;
        let heard = progress
            .map_or(0, |p| p.heartbeat_ms)
            .max(run.map_or(0, |r| r.started_ms));
        if revive(app, &id, heard, ReducerMode::Resume).await? {
            tracing::info!(request = %id, "resumed a request the last process left running");
            resumed.push(id);
        }
    }
    Ok(resumed)
}
