//! The internal events the functions send each other (Lambda async invocations, or the
//! in-process invoker). They carry ids, not data: what a stage needs is in the store under
//! `requests/{request_id}/`, so an event stays far below Lambda's async payload limit and
//! a re-invocation or a duplicate delivery needs nothing but the same small event.
//!
//! Every type refuses unknown fields: a sender and a receiver from different deployments
//! must fail loudly rather than silently drop a field the sender relied on.

use std::fmt;

use crate::error::{Error, clip};
use crate::fqid::Fqid;

/// Longest id accepted; ids become single key segments.
const MAX_ID_LEN: usize = 64;

fn validate_id(kind: &'static str, s: &str) -> Result<(), Error> {
    let bad = |reason: &str| Error::InvalidId {
        kind,
        value: clip(s),
        reason: reason.to_string(),
    };
    if s.is_empty() || s.len() > MAX_ID_LEN {
        return Err(bad(&format!("must be 1 to {MAX_ID_LEN} characters")));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad("only a-z, 0-9 and '-' are allowed"));
    }
    if s.starts_with('-') {
        return Err(bad("must not start with '-'"));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
        )]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates `s`.
            pub fn parse(s: &str) -> Result<Self, Error> {
                validate_id($kind, s)?;
                Ok(Self(s.to_string()))
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                validate_id($kind, &s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// The id of a matrix request: `a-z`, `0-9` and `-`, at most 64 characters, because it
    /// becomes the key segment in `requests/{id}/`.
    RequestId,
    "request id"
);

id_type!(
    /// The id of a worker task, derived from its content so that a duplicate or hedged
    /// copy writes the same part. Same alphabet and length limit as [`RequestId`].
    TaskId,
    "task id"
);

/// Driver → mapper: plan the worker tasks for one group of bundles.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapperEvent {
    /// The request this group belongs to.
    pub request_id: RequestId,
    /// The group's index; it names the mapper's plan, so two mappers never write the same key.
    pub group: u32,
    /// The bundles to plan, in request order.
    pub bundles: Vec<Fqid>,
    /// 0 from the driver, then counted up by the collector: it names the start marker.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// How many times the mapper sends each worker event
    /// ([`crate::state::StoredRequest::copies`]).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub copies: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

pub(crate) fn one() -> u32 {
    1
}

pub(crate) fn is_one(n: &u32) -> bool {
    *n == 1
}

/// Mapper (or the collector re-invoking a failed or slow task) → worker: run one task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerEvent {
    /// The request the task belongs to.
    pub request_id: RequestId,
    /// The task; its slices are in the stored plan, not in the event.
    pub task_id: TaskId,
    /// 0 for the mapper's invocation, then counted up by the collector. Only for logs and
    /// stats: every attempt writes the same bytes.
    #[serde(default)]
    pub attempt: u32,
}

/// Driver or reducer → reducer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReducerEvent {
    /// The request to collect or consolidate.
    pub request_id: RequestId,
    /// What this invocation does.
    pub mode: ReducerMode,
    /// 0 first, then counted up by the collector: it names the start marker.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
}

/// The jobs of the reducer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReducerMode {
    /// Wait for plans and done markers, re-invoke and hedge tasks, then start consolidation.
    Collect,
    /// Collect in place of a collector that died together with every invocation in
    /// flight (a restarted `cellmatrix serve`): what did not finish is launched again at
    /// once.
    Resume,
    /// Write one disjoint, chunk-aligned range of the final matrix.
    Consolidate {
        /// The shard's index in the consolidation plan.
        shard: u32,
    },
    /// Convert the consolidated matrix to the requested format.
    Convert,
}

/// What the reducer function is invoked with: one of our events, or the record Lambda
/// sends an on-failure destination after it gave up on an asynchronous invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum ReducerInput {
    /// Collect, consolidate or convert.
    Event(ReducerEvent),
    /// An invocation of the mapper, worker or reducer that Lambda gave up on.
    Failure(Box<FailureRecord>),
}

impl<'de> serde::Deserialize<'de> for ReducerInput {
    /// Told apart by Lambda's `requestContext`, which no event of ours has; an untagged
    /// enum would hide why an event of ours was refused behind "no variant matched".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(d)?;
        if value.get("requestContext").is_some() {
            serde_json::from_value(value)
                .map(|r| ReducerInput::Failure(Box::new(r)))
                .map_err(|e| D::Error::custom(format!("not a Lambda failure record: {e}")))
        } else {
            serde_json::from_value(value)
                .map(ReducerInput::Event)
                .map_err(D::Error::custom)
        }
    }
}

impl serde::Serialize for ReducerInput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ReducerInput::Event(e) => e.serialize(s),
            ReducerInput::Failure(r) => r.serialize(s),
        }
    }
}

/// The invocation record Lambda sends an asynchronous function's on-failure destination
/// (`DestinationConfig.OnFailure` in `template.yaml`) once the retries are used up or
/// the event grew too old. Unknown fields are accepted, unlike our own events: this
/// shape is Lambda's, and it may grow.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureRecord {
    /// The record format's version (`1.0`).
    pub version: String,
    /// When Lambda gave up.
    pub timestamp: String,
    /// Which invocation failed, and why Lambda stopped.
    pub request_context: FailureContext,
    /// The event the failed invocation was given.
    pub request_payload: serde_json::Value,
    /// The last attempt's status; absent when the event was never run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_context: Option<serde_json::Value>,
    /// The last attempt's error (`errorType`, `errorMessage`); absent when the event was
    /// never run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_payload: Option<serde_json::Value>,
}

/// The `requestContext` of a [`FailureRecord`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureContext {
    /// Lambda's id of the failed invocation.
    pub request_id: String,
    /// The function (and version) that failed.
    pub function_arn: String,
    /// `RetriesExhausted` or `EventAgeExceeded`.
    pub condition: String,
    /// How many times Lambda ran the event.
    pub approximate_invoke_count: u32,
}

impl FailureRecord {
    /// The last attempt's `errorType`, if it ran.
    pub fn error_type(&self) -> Option<&str> {
        self.response_payload.as_ref()?.get("errorType")?.as_str()
    }

    /// What went wrong, in one line: the condition, the attempts and the last error.
    pub fn describe(&self) -> String {
        let c = &self.request_context;
        let function = c
            .function_arn
            .rsplit(':')
            .find(|s| !s.starts_with('$'))
            .unwrap_or("");
        let error = self
            .response_payload
            .as_ref()
            .and_then(|p| p.get("errorMessage"))
            .and_then(|m| m.as_str())
            .map(|m| format!(": {}", crate::error::clip(m)))
            .unwrap_or_default();
        format!(
            "Lambda gave up on {function} ({}, {} attempt(s)){error}",
            c.condition, c.approximate_invoke_count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids() {
        for ok in ["a", "0f3c-12", &"a".repeat(MAX_ID_LEN)] {
            RequestId::parse(ok).unwrap();
            TaskId::parse(ok).unwrap();
        }
        for bad in [
            "",
            "-a",
            "A",
            "a/b",
            "a.b",
            "../x",
            "a b",
            &"a".repeat(MAX_ID_LEN + 1),
        ] {
            assert!(RequestId::parse(bad).is_err(), "{bad:?}");
            assert!(
                serde_json::from_value::<TaskId>(json!(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn reducer_modes_round_trip() {
        for (mode, value) in [
            (ReducerMode::Collect, json!({"kind": "collect"})),
            (ReducerMode::Resume, json!({"kind": "resume"})),
            (
                ReducerMode::Consolidate { shard: 3 },
                json!({"kind": "consolidate", "shard": 3}),
            ),
            (ReducerMode::Convert, json!({"kind": "convert"})),
        ] {
            assert_eq!(serde_json::to_value(mode).unwrap(), value);
            assert_eq!(serde_json::from_value::<ReducerMode>(value).unwrap(), mode);
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let fqid = "0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z";
        for (ok, bad) in [
            (
                json!({"request_id": "r1", "group": 0, "bundles": [fqid]}),
                json!({"request_id": "r1", "group": 0, "bundles": [fqid], "extra": 1}),
            ),
            (
                json!({"request_id": "r1", "task_id": "t1"}),
                json!({"request_id": "r1", "task_id": "t1", "attempts": 2}),
            ),
            (
                json!({"request_id": "r1", "mode": {"kind": "consolidate", "shard": 0}}),
                json!({"request_id": "r1", "mode": {"kind": "consolidate", "shard": 0, "of": 2}}),
            ),
        ] {
            let accepts = |v: &serde_json::Value| {
                serde_json::from_value::<MapperEvent>(v.clone()).is_ok()
                    || serde_json::from_value::<WorkerEvent>(v.clone()).is_ok()
                    || serde_json::from_value::<ReducerEvent>(v.clone()).is_ok()
            };
            assert!(accepts(&ok), "{ok}");
            assert!(!accepts(&bad), "{bad}");
        }
    }
}
