//! The invoker: fire-and-forget invocation of a sibling function with a JSON payload.
//!
//! Two implementations share one contract: [`LambdaInvoker`] (AWS Lambda, InvocationType
//! `Event`) and [`InProcess`] (tokio tasks with a concurrency limit per function, like
//! Lambda's reserved concurrency). The in-process invoker round-trips every payload
//! through JSON, so what works embedded works on Lambda. [`FaultyInvoker`] wraps either
//! with the caller's side of injected faults.

mod faulty;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::error::Error;
use crate::task_counter::TaskCounter;

pub use faulty::FaultyInvoker;

/// The three functions that are invoked asynchronously (the driver is invoked by HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Function {
    /// Plans the worker tasks of one group of bundles.
    Mapper,
    /// Runs one task.
    Worker,
    /// Collects and consolidates a request.
    Reducer,
}

impl Function {
    /// Every function, in a fixed order.
    pub const ALL: [Function; 3] = [Function::Mapper, Function::Worker, Function::Reducer];

    /// The function's short name (`mapper`, `worker`, `reducer`).
    pub fn name(self) -> &'static str {
        match self {
            Function::Mapper => "mapper",
            Function::Worker => "worker",
            Function::Reducer => "reducer",
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Starts a function asynchronously. `Ok` means the invocation was accepted, not that
/// it ran: the state in the store is the only record of what happened.
#[async_trait::async_trait]
pub trait Invoker: Send + Sync + fmt::Debug {
    /// Invokes `function` with `payload`.
    async fn invoke(&self, function: Function, payload: Value) -> Result<(), Error>;

    /// How many invocations of each function were accepted so far.
    fn counts(&self) -> HashMap<Function, u64>;

    /// Waits until no invocation is queued or running here (at once where invocations
    /// run elsewhere, as on Lambda).
    async fn idle(&self) {}
}

/// A shared invoker.
pub type DynInvoker = Arc<dyn Invoker>;

/// What the in-process invoker calls: a function and its payload, to completion.
pub trait Dispatch: Send + Sync {
    /// Runs `function` on `payload`.
    fn dispatch(
        self: Arc<Self>,
        function: Function,
        payload: Value,
    ) -> BoxFuture<'static, Result<(), Error>>;
}

/// Runs invocations as tokio tasks, at most `limit` at a time per function; the others
/// wait for a slot, as throttled async Lambda invocations are queued and retried.
pub struct InProcess {
    target: OnceLock<Weak<dyn Dispatch>>,
    limits: HashMap<Function, Arc<Semaphore>>,
    counts: Mutex<HashMap<Function, u64>>,
    tasks: TaskCounter,
    faults: Option<Arc<HandlerFaults>>,
}

/// Deliveries of an asynchronous event whose handler crashed, as Lambda makes: the
/// first and two retries (`MaximumRetryAttempts` 2), then the on-failure destination.
pub const ASYNC_DELIVERIES: u32 = 3;

/// The faults of Lambda's side, decided per delivery (see [`crate::fault`]).
#[derive(Debug)]
struct HandlerFaults {
    plan: crate::fault::FaultPlan,
    dice: crate::fault::Dice,
    /// Lambda waits a minute, then two, before retrying; here a scaled-down pause.
    retry_pause: Duration,
}

/// How one delivery of an event ended.
enum Delivery {
    /// The handler returned; an error it returns it has recorded itself.
    Ran(Result<(), Error>),
    /// The process died: nothing was returned and nothing more written.
    Crashed(&'static str),
}

impl fmt::Debug for InProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcess")
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

impl InProcess {
    /// An invoker allowing `limit(function)` concurrent runs of each function.
    pub fn new(limit: impl Fn(Function) -> usize) -> Self {
        InProcess {
            target: OnceLock::new(),
            limits: Function::ALL
                .iter()
                .map(|&f| (f, Arc::new(Semaphore::new(limit(f).max(1)))))
                .collect(),
            counts: Mutex::new(HashMap::new()),
            tasks: TaskCounter::default(),
            faults: None,
        }
    }

    /// Injects Lambda's side of `plan`: handlers crashing before or after their side
    /// effects (and then retried, and at last reported to the reducer as Lambda's
    /// on-failure record), stragglers, and crashes the store triggers mid-write.
    pub fn with_faults(mut self, plan: crate::fault::FaultPlan, retry_pause: Duration) -> Self {
        self.faults = Some(Arc::new(HandlerFaults {
            dice: crate::fault::Dice::new(plan.seed, "handler"),
            plan,
            retry_pause,
        }));
        self
    }

    /// Connects the invoker to what it runs. Held weakly: the dispatcher owns the invoker.
    pub fn bind(&self, target: Weak<dyn Dispatch>) {
        let _ = self.target.set(target);
    }
}

#[async_trait::async_trait]
impl Invoker for InProcess {
    async fn invoke(&self, function: Function, payload: Value) -> Result<(), Error> {
        let target = self
            .target
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| Error::Conflict("the in-process invoker is not running".into()))?;
        // The same contract as Lambda: the payload crosses as JSON text.
        let payload: Value = serde_json::from_str(&payload.to_string())
            .map_err(|e| Error::input("invocation payload", e.to_string()))?;
        // A collector spends its life waiting for other invocations: counted against the
        // reducer's limit, enough concurrent requests would hold every slot and leave
        // none for the consolidation shards they wait for.
        let waits_on_others = function == Function::Reducer
            && matches!(payload["mode"]["kind"].as_str(), Some("collect" | "resume"));
        let slots = (!waits_on_others).then(|| self.limits[&function].clone());
        *self
            .counts
            .lock()
            .expect("counts lock")
            .entry(function)
            .or_default() += 1;
        let guard = self.tasks.enter();
        let faults = self.faults.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let mut why = "";
            for delivery in 0..ASYNC_DELIVERIES {
                if delivery > 0
                    && let Some(f) = &faults
                {
                    tokio::time::sleep(f.retry_pause * delivery).await;
                }
                let _permit = match &slots {
                    Some(slots) => match slots.clone().acquire_owned().await {
                        Ok(permit) => Some(permit),
                        Err(_) => return,
                    },
                    None => None,
                };
                match deliver(&target, function, &payload, faults.as_deref()).await {
                    Delivery::Ran(Ok(())) => return,
                    Delivery::Ran(Err(e)) => {
                        tracing::warn!(%function, error = %e, retryable = e.is_retryable(), "invocation failed");
                        return;
                    }
                    Delivery::Crashed(how) => {
                        tracing::warn!(%function, delivery, how, "invocation crashed (injected)");
                        why = how;
                    }
                }
            }
            // Lambda gives up and sends its record to the on-failure destination.
            let record = failure_record(function, &payload, why);
            if let Err(e) = target.dispatch(Function::Reducer, record).await {
                tracing::error!(error = %e, "the failure record was not handled");
            }
        });
        Ok(())
    }

    fn counts(&self) -> HashMap<Function, u64> {
        self.counts.lock().expect("counts lock").clone()
    }

    async fn idle(&self) {
        self.tasks.idle().await
    }
}

/// Runs one delivery, with Lambda's side of the injected faults.
async fn deliver(
    target: &Arc<dyn Dispatch>,
    function: Function,
    payload: &Value,
    faults: Option<&HandlerFaults>,
) -> Delivery {
    let Some(f) = faults else {
        return Delivery::Ran(target.clone().dispatch(function, payload.clone()).await);
    };
    let roll = f.dice.uniform();
    if roll < f.plan.crash / 2.0 {
        return Delivery::Crashed("before its side effects");
    }
    let crash_after = roll < f.plan.crash;
    // Stragglers are workers: hedging is for tasks.
    let slowdown = if function == Function::Worker && f.dice.flip(f.plan.straggler) {
        f.plan.slowdown
    } else {
        1
    };
    let invocation = crate::fault::Invocation::new(slowdown);
    let run = crate::fault::INVOCATION.scope(
        invocation.clone(),
        target.clone().dispatch(function, payload.clone()),
    );
    let outcome = tokio::select! {
        outcome = run => outcome,
        () = invocation.killed() => {
            // The handler is gone, but writes it had sent may still land, as S3 completes
            // a PUT it already holds. Lambda retries a minute later, so they have always
            // landed by then; the scaled-down retry here must not overtake them.
            invocation.writes_landed().await;
            return Delivery::Crashed("midway, after a write");
        }
    };
    if crash_after {
        Delivery::Crashed("after its side effects")
    } else {
        Delivery::Ran(outcome)
    }
}

/// The record Lambda sends an on-failure destination once it gives up on an event.
fn failure_record(function: Function, payload: &Value, why: &str) -> Value {
    serde_json::json!({
        "version": "1.0",
        "timestamp": crate::clock::rfc3339(crate::clock::now_ms()),
        "requestContext": {
            "requestId": format!("in-process-{}", crate::clock::now_ms()),
            "functionArn": format!("arn:aws:lambda:local:000000000000:function:{function}:$LATEST"),
            "condition": "RetriesExhausted",
            "approximateInvokeCount": ASYNC_DELIVERIES,
        },
        "requestPayload": payload,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": "Runtime.ExitError", "errorMessage": format!("crashed {why} (injected)")},
    })
}

/// How long [`LambdaInvoker`] waits for an `Event` invocation to be accepted. Lambda
/// answers 202 as soon as the event is queued, in milliseconds. An emulator such as
/// `cargo lambda watch` answers only once the function has run: waiting for that would
/// make every caller wait for its callee, and a driver wait for a collector that waits
/// for the mappers the driver has yet to start. After this long the invocation counts as
/// accepted and its answer is awaited in the background, where a refusal is logged.
pub const ACCEPT_WAIT: Duration = Duration::from_secs(1);

/// Invokes deployed Lambda functions with InvocationType `Event`.
#[derive(Debug)]
pub struct LambdaInvoker {
    client: aws_sdk_lambda::Client,
    names: HashMap<Function, String>,
    counts: Mutex<HashMap<Function, u64>>,
}

impl LambdaInvoker {
    /// A client from the standard AWS environment (`AWS_ENDPOINT_URL_LAMBDA` points it at
    /// an emulator); `name(function)` is the deployed function name.
    pub async fn from_env(name: impl Fn(Function) -> String) -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        LambdaInvoker {
            client: aws_sdk_lambda::Client::new(&config),
            names: Function::ALL.iter().map(|&f| (f, name(f))).collect(),
            counts: Mutex::new(HashMap::new()),
        }
    }
}

/// A refused invocation as our error: throttling and Lambda's own faults may pass on a
/// retry, anything else (no such function, access denied) will not.
fn invoke_error(
    name: &str,
    e: aws_sdk_lambda::error::SdkError<
        aws_sdk_lambda::operation::invoke::InvokeError,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> Error {
    let retryable = e
        .raw_response()
        .is_none_or(|r| r.status().as_u16() == 429 || r.status().is_server_error());
    let message = format!(
        "invoke {name}: {}",
        aws_smithy_types::error::display::DisplayErrorContext(&e)
    );
    if retryable {
        Error::Store(crate::store::StoreError::Transient {
            op: "invoke",
            key: name.to_string(),
            message,
        })
    } else {
        Error::Conflict(message)
    }
}

#[async_trait::async_trait]
impl Invoker for LambdaInvoker {
    async fn invoke(&self, function: Function, payload: Value) -> Result<(), Error> {
        let name = self.names[&function].clone();
        let call = self
            .client
            .invoke()
            .function_name(&name)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(aws_smithy_types::Blob::new(payload.to_string()))
            .send();
        let mut answer =
            tokio::spawn(async move { call.await.map(drop).map_err(|e| invoke_error(&name, e)) });
        match tokio::time::timeout(ACCEPT_WAIT, &mut answer).await {
            Ok(joined) => {
                joined.map_err(|e| Error::Internal(format!("invoke {function}: {e}")))??
            }
            Err(_) => {
                tracing::debug!(%function, "invocation not answered yet; counted as accepted");
                tokio::spawn(async move {
                    if let Ok(Err(e)) = answer.await {
                        tracing::error!(%function, error = %e, "invocation refused late");
                    }
                });
            }
        }
        *self
            .counts
            .lock()
            .expect("counts lock")
            .entry(function)
            .or_default() += 1;
        Ok(())
    }

    fn counts(&self) -> HashMap<Function, u64> {
        self.counts.lock().expect("counts lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::FutureExt;
    use serde_json::json;

    use super::*;

    /// Counts runs and the most at once; collectors wait until all of them run.
    #[derive(Default)]
    struct Probe {
        running: AtomicUsize,
        most: AtomicUsize,
        done: AtomicUsize,
        collectors: tokio::sync::Notify,
        waiting: AtomicUsize,
    }

    impl Dispatch for Probe {
        fn dispatch(
            self: Arc<Self>,
            function: Function,
            payload: Value,
        ) -> BoxFuture<'static, Result<(), Error>> {
            async move {
                if payload["mode"]["kind"] == "collect" {
                    if self.waiting.fetch_add(1, Ordering::SeqCst) + 1 == 5 {
                        self.collectors.notify_waiters();
                    } else {
                        let notified = self.collectors.notified();
                        if self.waiting.load(Ordering::SeqCst) < 5 {
                            notified.await;
                        }
                    }
                } else {
                    let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
                    self.most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    self.running.fetch_sub(1, Ordering::SeqCst);
                }
                let _ = function;
                self.done.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            .boxed()
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn limits_hold_and_collectors_do_not_take_slots() {
        let probe = Arc::new(Probe::default());
        let invoker = InProcess::new(|_| 2);
        let target: Arc<dyn Dispatch> = probe.clone();
        invoker.bind(Arc::downgrade(&target));
        for _ in 0..5 {
            invoker
                .invoke(Function::Reducer, json!({"mode": {"kind": "collect"}}))
                .await
                .unwrap();
        }
        for _ in 0..10 {
            invoker.invoke(Function::Worker, json!({})).await.unwrap();
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), invoker.idle())
            .await
            .expect("collectors waiting on each other were not all running");
        assert_eq!(probe.done.load(Ordering::SeqCst), 15);
        assert!(probe.most.load(Ordering::SeqCst) <= 2);
        assert_eq!(invoker.counts()[&Function::Worker], 10);
    }

    /// Its first delivery sends a slow write from a task of its own, as the part writer
    /// does, and crashes; the retry records whether that write had landed.
    #[derive(Default)]
    struct CrashMidWrite {
        deliveries: AtomicUsize,
        landed: Arc<std::sync::atomic::AtomicBool>,
        landed_at_retry: Mutex<Option<bool>>,
    }

    impl Dispatch for CrashMidWrite {
        fn dispatch(
            self: Arc<Self>,
            _function: Function,
            _payload: Value,
        ) -> BoxFuture<'static, Result<(), Error>> {
            async move {
                if self.deliveries.fetch_add(1, Ordering::SeqCst) == 0 {
                    let landed = self.landed.clone();
                    let write = crate::fault::landing(async move {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        landed.store(true, Ordering::SeqCst);
                    });
                    let _task = tokio::spawn(crate::fault::carried(write));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    return Err(crate::fault::crash("a test write").await);
                }
                *self.landed_at_retry.lock().unwrap() = Some(self.landed.load(Ordering::SeqCst));
                Ok(())
            }
            .boxed()
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_crashed_invocation_is_retried_only_once_its_writes_have_landed() {
        let handler = Arc::new(CrashMidWrite::default());
        let invoker = InProcess::new(|_| 2)
            .with_faults(crate::fault::FaultPlan::default(), Duration::from_millis(1));
        let target: Arc<dyn Dispatch> = handler.clone();
        invoker.bind(Arc::downgrade(&target));
        invoker.invoke(Function::Worker, json!({})).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), invoker.idle())
            .await
            .expect("the invocation did not end");
        assert_eq!(handler.deliveries.load(Ordering::SeqCst), 2);
        assert_eq!(*handler.landed_at_retry.lock().unwrap(), Some(true));
    }
}
