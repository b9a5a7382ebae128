//! The caller's side of a faulty Lambda: an accepted invocation that is never delivered,
//! delivered twice, or delivered late.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{DynInvoker, Function, Invoker};
use crate::error::Error;
use crate::fault::{Dice, FaultPlan};

/// Wraps an invoker with [`FaultPlan::drop`], [`FaultPlan::duplicate`] and
/// [`FaultPlan::delay`]. A dropped invocation still answers `Ok`, as Lambda's 202 does
/// for an event it will lose. A delay holds the caller, not only the delivery.
#[derive(Debug)]
pub struct FaultyInvoker {
    inner: DynInvoker,
    plan: FaultPlan,
    dice: Arc<Dice>,
}

impl FaultyInvoker {
    /// `inner`, delivering as `plan` says.
    pub fn new(inner: DynInvoker, plan: FaultPlan) -> Self {
        FaultyInvoker {
            dice: Arc::new(Dice::new(plan.seed, "invoke")),
            inner,
            plan,
        }
    }
}

#[async_trait::async_trait]
impl Invoker for FaultyInvoker {
    async fn invoke(&self, function: Function, payload: Value) -> Result<(), Error> {
        let p = &self.plan;
        if self.dice.flip(p.drop) {
            tracing::warn!(%function, %payload, "invocation dropped (injected)");
            return Ok(());
        }
        let copies = if self.dice.flip(p.duplicate) { 2 } else { 1 };
        if self.dice.flip(p.delay) {
            let wait = Duration::from_millis((self.dice.uniform() * p.delay_ms as f64) as u64);
            tracing::info!(%function, ms = wait.as_millis() as u64, "invocation delayed (injected)");
            tokio::time::sleep(wait).await;
        }
        for _ in 0..copies {
            self.inner.invoke(function, payload.clone()).await?;
        }
        Ok(())
    }

    fn counts(&self) -> HashMap<Function, u64> {
        self.inner.counts()
    }

    async fn idle(&self) {
        self.inner.idle().await
    }
}
