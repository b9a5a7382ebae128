//! The reducer as the on-failure destination of the asynchronous functions: Lambda sends
//! it a [`FailureRecord`] once it gives up on an invocation (a crash, a timeout, running
//! out of memory, or an event that waited too long). A handler that returns an error has
//! already recorded it; one that died could not. The record becomes the same error
//! marker, so the collector retries the work or fails the request now rather than at the
//! request's deadline.

use serde::Deserialize;

use crate::app::App;
use crate::clock::now_ms;
use crate::error::Error;
use crate::messages::{
    FailureRecord, MapperEvent, ReducerEvent, ReducerMode, RequestId, WorkerEvent,
};
use crate::state::{ErrorMarker, Failure, Keys, RunInfo, get_json, put_json_if_absent};

/// What a failure record is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// A mapper, worker, consolidation shard or conversion: a marker for the collector.
    Work {
        /// The request.
        request: RequestId,
        /// The marker's name (`group-{n}`, `task-{id}`, `shard-{n}`, `convert`).
        name: String,
        /// The attempt that failed.
        attempt: u32,
    },
    /// The collector itself: nothing else would end the request.
    Collector(RequestId),
}

/// Reads what the failed invocation was doing from its event; `None` for anything that
/// is not one of our events, a failure record of a failure record included, so that a
/// record the reducer cannot handle is never sent on again.
pub fn lost(record: &FailureRecord) -> Option<Lost> {
    let payload = &record.request_payload;
    if let Ok(e) = WorkerEvent::deserialize(payload) {
        return Some(Lost::Work {
            request: e.request_id,
            name: format!("task-{}", e.task_id),
            attempt: e.attempt,
        });
    }
    if let Ok(e) = MapperEvent::deserialize(payload) {
        return Some(Lost::Work {
            request: e.request_id,
            name: format!("group-{}", e.group),
            attempt: e.attempt,
        });
    }
    let e = ReducerEvent::deserialize(payload).ok()?;
    let name = match e.mode {
        ReducerMode::Collect | ReducerMode::Resume => {
            return Some(Lost::Collector(e.request_id));
        }
        ReducerMode::Consolidate { shard } => format!("shard-{shard}"),
        ReducerMode::Convert => "convert".to_string(),
    };
    Some(Lost::Work {
        request: e.request_id,
        name,
        attempt: e.attempt,
    })
}

/// Records what Lambda gave up on. Never fails for a record it does not understand:
/// an error here would make Lambda send a record of this invocation back to it.
pub(crate) async fn handle(app: &App, record: &FailureRecord) -> Result<(), Error> {
    let why = record.describe();
    let Some(lost) = lost(record) else {
        tracing::error!(%why, payload = %record.request_payload, "failure record of an unknown event; dropped");
        return Ok(());
    };
    match lost {
        Lost::Work {
            request,
            name,
            attempt,
        } => {
            let keys = Keys::new(&request);
            if crate::state::ended(&app.store, &keys).await? {
                // What the lost invocation wrote may have come after the cleanup.
                crate::scratch::after_write(&app.store, &keys, app.config.keep_scratch).await?;
                return Ok(());
            }
            // Retryable unless the handler itself said otherwise: a crash or a timeout
            // may well pass on another try, and the collector bounds the attempts.
            let marker = ErrorMarker {
                name: name.clone(),
                retryable: record.error_type() != Some(Error::NON_RETRYABLE),
                message: why.clone(),
                attempt,
            };
            tracing::warn!(request = %keys.id(), name, %why, "invocation lost");
            // If the handler recorded its own error, that marker says more; keep it.
            put_json_if_absent(&app.store, &keys.error(&name), &marker).await?;
            // The request may have ended since the check, its scratch data removed
            // before the marker landed: removed again, so nothing is left behind.
            crate::scratch::after_write(&app.store, &keys, app.config.keep_scratch).await?;
        }
        Lost::Collector(request) => {
            let keys = Keys::new(&request);
            if crate::state::ended(&app.store, &keys).await? {
                return Ok(());
            }
            // The collector's state is all in the store: before the deadline a new one
            // takes over. Past it, or with no run at all, the request fails now.
            let run = get_json::<RunInfo>(&app.store, &keys.run()).await?;
            if run.is_some_and(|r| now_ms() < r.deadline_ms) {
                tracing::warn!(request = %keys.id(), %why, "collector lost; starting a new one");
                return crate::handlers::invoke_collector(app, &request).await;
            }
            tracing::error!(request = %keys.id(), %why, "collector lost");
            let failure = Failure::now(format!("the request's collector stopped: {why}"));
            put_json_if_absent(&app.store, &keys.failed(), &failure).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::config::Config;
    use crate::state::{get_json, put_json};
    use crate::store::DynStore;
    use crate::store::fs::FsStore;

    const REQUEST: &str = "5f0c9a7e-3b1d-4c2a-9e8f-0d1c2b3a4f5e";

    fn record(payload: Value, error_type: Option<&str>) -> FailureRecord {
        let mut v = json!({
            "version": "1.0",
            "timestamp": "2026-11-21T10:15:42.118Z",
            "requestContext": {
                "requestId": "c2a8f0e4",
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:cm-worker:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3
            },
            "requestPayload": payload,
        });
        if let Some(t) = error_type {
            v["responsePayload"] = json!({"errorType": t, "errorMessage": "boom"});
        }
        serde_json::from_value(v).unwrap()
    }

    fn work(name: &str, attempt: u32) -> Option<Lost> {
        Some(Lost::Work {
            request: RequestId::parse(REQUEST).unwrap(),
            name: name.into(),
            attempt,
        })
    }

    #[test]
    fn each_event_names_what_was_lost() {
        let id = REQUEST;
        for (payload, want) in [
            (
                json!({"request_id": id, "task_id": "t1", "attempt": 2}),
                work("task-t1", 2),
            ),
            (
                json!({"request_id": id, "group": 4, "bundles": []}),
                work("group-4", 0),
            ),
            (
                json!({"request_id": id, "mode": {"kind": "consolidate", "shard": 3}}),
                work("shard-3", 0),
            ),
            (
                json!({"request_id": id, "mode": {"kind": "convert"}}),
                work("convert", 0),
            ),
            (
                json!({"request_id": id, "mode": {"kind": "collect"}}),
                Some(Lost::Collector(RequestId::parse(id).unwrap())),
            ),
            // A record of a record, or anything else, is never acted on.
            (
                serde_json::to_value(record(
                    json!({"request_id": id, "mode": {"kind": "collect"}}),
                    None,
                ))
                .unwrap(),
                None,
            ),
            (json!({"request_id": "../x", "task_id": "t1"}), None),
            (json!("hello"), None),
        ] {
            assert_eq!(lost(&record(payload.clone(), None)), want, "{payload}");
        }
    }

    #[test]
    fn describe_names_the_function_the_condition_and_the_error() {
        let r = record(json!({}), Some("Runtime.ExitError"));
        assert_eq!(
            r.describe(),
            "Lambda gave up on cm-worker (RetriesExhausted, 3 attempt(s)): boom"
        );
    }

    async fn app() -> (tempfile::TempDir, Arc<App>) {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
        (dir, App::in_process(Config::new("test"), store, |_| 1))
    }

    fn keys() -> Keys {
        Keys::new(&RequestId::parse(REQUEST).unwrap())
    }

    #[tokio::test]
    async fn a_lost_task_becomes_an_error_marker_unless_one_is_there() {
        let (_dir, app) = app().await;
        let task = json!({"request_id": REQUEST, "task_id": "t1", "attempt": 1});
        handle(&app, &record(task.clone(), Some("Runtime.ExitError")))
            .await
            .unwrap();
        let marker: ErrorMarker = get_json(&app.store, &keys().error("task-t1"))
            .await
            .unwrap()
            .expect("a marker");
        assert!(marker.retryable);
        assert_eq!(marker.attempt, 1);
        assert!(
            marker.message.contains("RetriesExhausted"),
            "{}",
            marker.message
        );

        // The handler's own marker says more than the record: it stays.
        let own = ErrorMarker {
            name: "task-t2".into(),
            retryable: false,
            message: "corrupt chunk".into(),
            attempt: 0,
        };
        put_json(&app.store, &keys().error("task-t2"), &own)
            .await
            .unwrap();
        let t2 = json!({"request_id": REQUEST, "task_id": "t2"});
        handle(&app, &record(t2, Some("Retryable"))).await.unwrap();
        let kept: ErrorMarker = get_json(&app.store, &keys().error("task-t2"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept, own);

        // The handler said a retry cannot help.
        let t3 = json!({"request_id": REQUEST, "task_id": "t3"});
        handle(&app, &record(t3, Some(Error::NON_RETRYABLE)))
            .await
            .unwrap();
        let marker: ErrorMarker = get_json(&app.store, &keys().error("task-t3"))
            .await
            .unwrap()
            .unwrap();
        assert!(!marker.retryable);
    }

    #[tokio::test]
    async fn a_lost_collector_without_a_run_fails_the_request_and_a_late_record_changes_nothing() {
        let (_dir, app) = app().await;
        let collect = json!({"request_id": REQUEST, "mode": {"kind": "collect"}});
        handle(&app, &record(collect, Some("Sandbox.Timedout")))
            .await
            .unwrap();
        let failure: Failure = get_json(&app.store, &keys().failed())
            .await
            .unwrap()
            .expect("failed.json");
        assert!(
            failure.message.contains("collector") && failure.message.contains("boom"),
            "{}",
            failure.message
        );
        // The request has ended: a record arriving now writes nothing.
        let task = json!({"request_id": REQUEST, "task_id": "t9"});
        handle(&app, &record(task, None)).await.unwrap();
        assert!(
            get_json::<ErrorMarker>(&app.store, &keys().error("task-t9"))
                .await
                .unwrap()
                .is_none()
        );
        // Nor does a record of nothing we know fail (which would loop through Lambda).
        handle(&app, &record(json!({"what": 1}), None))
            .await
            .unwrap();
    }
}
