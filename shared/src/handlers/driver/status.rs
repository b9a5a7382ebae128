//! `GET /v1/matrix/{id}`: a request's status document, read from the stored state; and
//! the revival of a collector gone silent, which a status read notices.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use serde_json::{Value, json};

use crate::app::App;
use crate::clock::now_ms;
use crate::error::{Error, clip};
use crate::messages::{ReducerMode, RequestId};
use crate::request::Rejection;
use crate::state::{Failure, Keys, Progress, ResultRecord, RunInfo, StoredRequest, get_json};

use super::error::ApiError;
use super::{HttpResponse, Who, owners};

/// The status of a request the caller owns; 404 for any other.
pub(super) async fn answer(
    State(app): State<Arc<App>>,
    Who(caller): Who,
    uri: Uri,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(last_segment(&uri))?;
    let stored = owners::owned(&app, &id, &caller).await?;
    status_response(&app, &stored, 200).await
}

/// The `{id}` of `/v1/matrix/{id}`, as sent (not percent-decoded: [`parse_id`] refuses
/// any escape, and its message shows the id as the caller wrote it).
pub(super) fn last_segment(uri: &Uri) -> &str {
    uri.path().rsplit('/').next().unwrap_or("")
}

/// The `{id}` of `/v1/matrix/{id}/files`, as [`last_segment`] takes it.
pub(super) fn id_segment(uri: &Uri) -> &str {
    uri.path()
        .strip_prefix("/v1/matrix/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("")
}

pub(super) fn parse_id(id: &str) -> Result<RequestId, Rejection> {
    if id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(RequestId::parse(id).expect("hex is a valid id"))
    } else {
        Err(Rejection::bad(format!(
            "{:?} is not a request id (32 hex digits)",
            clip(id)
        )))
    }
}

/// The status document of `stored` with status `code`, and its `Location`.
pub(super) async fn status_response(
    app: &App,
    stored: &StoredRequest,
    code: u16,
) -> Result<HttpResponse, ApiError> {
    let body = status(app, stored).await?;
    Ok(HttpResponse {
        status: code,
        location: Some(format!("/v1/matrix/{}", stored.id)),
        body,
        retry_after: None,
    })
}

/// The status document of a request, from the stored state.
pub async fn status(app: &App, stored: &StoredRequest) -> Result<Value, Error> {
    let keys = Keys::new(&stored.id);
    let store = &app.store;
    let (k_result, k_failed, k_cancel, k_run, k_progress) = (
        keys.result(),
        keys.failed(),
        keys.cancel(),
        keys.run(),
        keys.progress(),
    );
    let (result, failed, cancelled, run, progress) = futures::try_join!(
        get_json::<ResultRecord>(store, &k_result),
        get_json::<Failure>(store, &k_failed),
        get_json::<Failure>(store, &k_cancel),
        get_json::<RunInfo>(store, &k_run),
        get_json::<Progress>(store, &k_progress),
    )?;
    let now = now_ms();
    let started = run.as_ref().map_or(now, |r| r.started_ms);
    let deadline = run.as_ref().map_or(u64::MAX, |r| r.deadline_ms);
    let progress = progress.unwrap_or_default();
    // A collector that died cannot say so; past the deadline, and a grace period for it
    // to write failed.json, the request is Failed whatever the store holds.
    let overdue = now > deadline.saturating_add(60_000);
    let (status, message) = if result.is_some() {
        ("Succeeded", None)
    } else if let Some(f) = &failed {
        ("Failed", Some(f.message.clone()))
    } else if let Some(c) = &cancelled {
        ("Cancelled", Some(c.message.clone()))
    } else if overdue {
        (
            "Failed",
            Some("the request passed its deadline before the collector finished it".into()),
        )
    } else {
        revive_if_silent(app, stored, run.as_ref(), &progress, now).await;
        ("Running", None)
    };
    let finished_ms = match (&result, &failed, &cancelled) {
        (Some(r), _, _) => Some(r.finished_ms),
        (None, Some(f), _) | (None, None, Some(f)) => Some(f.at_ms),
        _ => None,
    };
    let result_doc = match &result {
        Some(r) => Some(result_document(app, &stored.id, r).await?),
        None => None,
    };
    let tasks_total = (progress.groups_planned == stored.groups).then_some(progress.tasks_total);
    Ok(json!({
        "id": stored.id,
        "status": status,
        "format": stored.canonical["format"],
        "progress": {
            "bundles": stored.bundles.len(),
            "tasks_total": tasks_total,
            "tasks_done": progress.tasks_done,
            "cells_written": result.as_ref().map_or(progress.cells_written, |r| r.n_cells),
        },
        "timings": {
            "submitted_at": stored.submitted_at,
            "started_at": crate::clock::rfc3339(started),
            "elapsed_seconds": (finished_ms.unwrap_or(now).saturating_sub(started)) as f64 / 1000.0,
            "planned_seconds": result.as_ref().map(|r| r.planned_after_ms as f64 / 1000.0),
            "collected_seconds": result.as_ref().map(|r| r.collected_after_ms as f64 / 1000.0),
            "finished_at": finished_ms.map(crate::clock::rfc3339),
        },
        "result": result_doc,
        "message": message,
    }))
    .map(|mut doc| {
        // Absent from a request stored before previews were recorded.
        if let Some(preview) = &stored.preview {
            doc["preview"] = json!(preview);
        }
        doc
    })
}

/// Starts a new collector for a Running request whose collector has gone silent
/// ([`collector_silent`]): its invocation was lost, or it died without a record. Two
/// collectors at once are harmless (what must happen once is a put-if-absent), and the
/// new one writes its heartbeat at once. Best effort: the status is answered anyway.
async fn revive_if_silent(
    app: &App,
    stored: &StoredRequest,
    run: Option<&RunInfo>,
    progress: &Progress,
    now: u64,
) {
    let Some(run) = run else { return };
    let c = &app.config;
    if !collector_silent(
        now,
        progress.heartbeat_ms,
        run.started_ms,
        c.collector_first_beat,
        c.collector_stale,
    ) {
        return;
    }
    let heard = progress.heartbeat_ms.max(run.started_ms);
    tracing::warn!(request = %stored.id, silent_ms = now - heard, "collector silent; starting a new one");
    let revived = crate::handlers::revive(app, &stored.id, heard, ReducerMode::Collect);
    if let Err(e) = revived.await {
        tracing::error!(request = %stored.id, error = %e, "cannot start a new collector");
    }
}

/// Whether a run's collector has gone silent: never heard of (no heartbeat) for
/// `first_beat` since the run started, or not heard of for `stale` since its last
/// heartbeat. A collector writes its first heartbeat on its first look, a delivery and
/// a cold start after the run starts, so silence from the start shows much sooner than
/// silence after a heartbeat, which comes every quarter of `stale`.
fn collector_silent(
    now: u64,
    heartbeat_ms: u64,
    started_ms: u64,
    first_beat: std::time::Duration,
    stale: std::time::Duration,
) -> bool {
    let (heard, wait) = if heartbeat_ms == 0 {
        (started_ms, first_beat.min(stale))
    } else {
        (heartbeat_ms.max(started_ms), stale)
    };
    now.saturating_sub(heard) > wait.as_millis() as u64
}

/// The result, of bounded size whatever the number of its files: where it is, its
/// shape, and how many files of how many bytes, which `files_url` lists a page at a time.
async fn result_document(app: &App, id: &RequestId, r: &ResultRecord) -> Result<Value, Error> {
    let base = app.store.describe();
    let location = format!(
        "{}/{}",
        base.strip_prefix("file://").unwrap_or(&base),
        r.key
    );
    let objects = app.store.list(&format!("{}/", r.key)).await?;
    Ok(json!({
        "location": location,
        "n_cells": r.n_cells,
        "n_genes": r.n_genes,
        "nnz": r.nnz,
        "n_files": objects.len(),
        "total_bytes": objects.iter().map(|o| o.size).sum::<u64>(),
        "files_url": format!("/v1/matrix/{id}/files"),
        "conversion": r.conversion.as_ref().map(|c| json!({
            "seconds": c.duration_ms as f64 / 1000.0,
            "peak_rss_bytes": c.peak_rss_bytes,
            "start_rss_bytes": c.start_rss_bytes,
        })),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collector_never_heard_of_is_silent_sooner_than_one_that_stopped() {
        use std::time::Duration;
        let (first, stale) = (Duration::from_secs(2), Duration::from_secs(10));
        let start = 1_000_000;
        // No heartbeat yet: silent once `first_beat` has passed since the run started.
        assert!(!collector_silent(start + 2_000, 0, start, first, stale));
        assert!(collector_silent(start + 2_001, 0, start, first, stale));
        // A heartbeat: silent only `stale` after it.
        let beat = start + 500;
        assert!(!collector_silent(beat + 10_000, beat, start, first, stale));
        assert!(collector_silent(beat + 10_001, beat, start, first, stale));
        // `first_beat` never waits longer than `stale`.
        let long = Duration::from_secs(60);
        assert!(collector_silent(start + 10_001, 0, start, long, stale));
    }

    #[test]
    fn request_ids_are_32_hex_digits() {
        assert!(parse_id(&"a".repeat(32)).is_ok());
        for bad in [
            "",
            "abc",
            &"g".repeat(32),
            &"A".repeat(32),
            "..%2F",
            &"a".repeat(33),
        ] {
            assert_eq!(parse_id(bad).unwrap_err().status, 400, "{bad}");
        }
    }
}
