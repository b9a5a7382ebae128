//! The names the collector knows invocations by, those of their error and start markers
//! (`group-{n}`, `task-{id}`, `shard-{n}`, `convert`): the event that runs one, how a
//! message describes it, and the markers' keys they are read from.

use serde_json::Value;

use crate::error::Error;
use crate::invoke::Function;
use crate::messages::{MapperEvent, ReducerEvent, ReducerMode, RequestId, TaskId, WorkerEvent};
use crate::state::StoredRequest;

/// The function and event that run `attempt` of `name` for request `stored`; `None` for
/// a name that is none of ours.
pub(super) fn event_for(
    stored: &StoredRequest,
    request_id: &RequestId,
    name: &str,
    attempt: u32,
) -> Result<Option<(Function, Value)>, Error> {
    let request_id = request_id.clone();
    let to_json = |event: Result<Value, serde_json::Error>| {
        event.map_err(|e| Error::input("event", e.to_string()))
    };
    let (function, payload) = if let Some(task) = name.strip_prefix("task-") {
        let event = WorkerEvent {
            request_id,
            task_id: TaskId::parse(task)?,
            attempt,
        };
        (Function::Worker, to_json(serde_json::to_value(&event))?)
    } else if let Some(group) = name
        .strip_prefix("group-")
        .and_then(|g| g.parse::<u32>().ok())
    {
        let per = stored.bundles_per_mapper;
        let bundles = stored
            .bundles
            .chunks(per)
            .nth(group as usize)
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        let event = MapperEvent {
            request_id,
            group,
            bundles,
            attempt,
            copies: stored.copies,
        };
        (Function::Mapper, to_json(serde_json::to_value(&event))?)
    } else if name == "convert" {
        let event = ReducerEvent {
            request_id,
            mode: ReducerMode::Convert,
            attempt,
        };
        (Function::Reducer, to_json(serde_json::to_value(&event))?)
    } else if let Some(shard) = name
        .strip_prefix("shard-")
        .and_then(|s| s.parse::<u32>().ok())
    {
        let event = ReducerEvent {
            request_id,
            mode: ReducerMode::Consolidate { shard },
            attempt,
        };
        (Function::Reducer, to_json(serde_json::to_value(&event))?)
    } else {
        return Ok(None);
    };
    Ok(Some((function, payload)))
}

/// The shard a shard marker's key (`shards/{n}.json`) is of.
pub(super) fn shard_of(key: &str) -> Option<u32> {
    key.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()
}

/// The task a done marker's key (`done/{task}.json`) is of.
pub(super) fn task_of(key: &str) -> Option<TaskId> {
    key.rsplit('/')
        .next()
        .and_then(|n| n.strip_suffix(".json"))
        .and_then(|n| TaskId::parse(n).ok())
}

/// `name` as a failure message says it.
pub(super) fn describe(name: &str) -> String {
    if let Some(t) = name.strip_prefix("task-") {
        format!("task {t}")
    } else if let Some(g) = name.strip_prefix("group-") {
        format!("planning of bundle group {g}")
    } else if let Some(s) = name.strip_prefix("shard-") {
        format!("consolidation shard {s}")
    } else if name == "convert" {
        "the conversion to the requested format".to_string()
    } else {
        name.to_string()
    }
}
