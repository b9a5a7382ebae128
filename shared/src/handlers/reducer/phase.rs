//! The collector's phase: what it waits for, with the data it has gathered for it, so
//! that a later step cannot find the plan or the request's settings missing.
//!
//! ```text
//! Collecting ── consolidate(plan) ──▶ Consolidating { plan }
//!   Consolidating ── finish(view) ──▶ Finished { plan, view }
//!   Finished ── commit ──▶ Committed
//! Collecting, Consolidating, Finished ── fail ──▶ Failed
//! ```
//!
//! A transition takes the phase and returns the next one, or [`Refused`] where the
//! phase does not allow it: the collector never makes one, and one would be a bug.

use crate::error::Error;
use crate::state::{Consolidation, RequestView};

/// Where a collector is in its request's life.
#[derive(Debug)]
pub(super) enum Phase {
    /// Waiting for every group's plan and every task's done marker.
    Collecting,
    /// The consolidation plan is stored: the shards are launched and awaited.
    Consolidating {
        /// The stored plan (a duplicate collector's, if that one stored it first).
        plan: Consolidation,
    },
    /// Every shard is in and the output's root group is written: a Zarr result is
    /// complete, another format waits for its conversion.
    Finished {
        /// The stored plan.
        plan: Consolidation,
        /// The request's settings, read once the shards were in (boxed: the largest
        /// phase by far).
        view: Box<RequestView>,
    },
    /// The result is recorded.
    Committed,
    /// The request failed; its failure is recorded.
    Failed,
}

/// A transition the phase does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the collector cannot {transition} while {from}")]
pub(super) struct Refused {
    /// The phase's name.
    pub from: &'static str,
    /// The transition refused.
    pub transition: &'static str,
}

impl From<Refused> for Error {
    fn from(refused: Refused) -> Self {
        Error::Internal(refused.to_string())
    }
}

impl Phase {
    /// The phase's name, for messages.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Phase::Collecting => "collecting",
            Phase::Consolidating { .. } => "consolidating",
            Phase::Finished { .. } => "finished",
            Phase::Committed => "committed",
            Phase::Failed => "failed",
        }
    }

    /// The consolidation plan, once stored (until the request ends).
    pub(super) fn plan(&self) -> Option<&Consolidation> {
        match self {
            Phase::Consolidating { plan } | Phase::Finished { plan, .. } => Some(plan),
            Phase::Collecting | Phase::Committed | Phase::Failed => None,
        }
    }

    /// `transition` refused from this phase.
    pub(super) fn refuse(&self, transition: &'static str) -> Refused {
        Refused {
            from: self.name(),
            transition,
        }
    }

    /// Collecting → Consolidating: every task is done and the plan is stored.
    pub(super) fn consolidate(self, plan: Consolidation) -> Result<Phase, Refused> {
        match self {
            Phase::Collecting => Ok(Phase::Consolidating { plan }),
            other => Err(other.refuse("consolidate")),
        }
    }

    /// Consolidating → Finished: every shard is in and the root group written.
    pub(super) fn finish(self, view: RequestView) -> Result<Phase, Refused> {
        match self {
            Phase::Consolidating { plan } => Ok(Phase::Finished {
                plan,
                view: Box::new(view),
            }),
            other => Err(other.refuse("finish")),
        }
    }

    /// Finished → Committed: the result is recorded.
    pub(super) fn commit(self) -> Result<Phase, Refused> {
        match self {
            Phase::Finished { .. } => Ok(Phase::Committed),
            other => Err(other.refuse("commit")),
        }
    }

    /// Any phase before the end → Failed: the failure is recorded.
    pub(super) fn fail(self) -> Result<Phase, Refused> {
        match self {
            Phase::Collecting | Phase::Consolidating { .. } | Phase::Finished { .. } => {
                Ok(Phase::Failed)
            }
            other => Err(other.refuse("fail")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::ValueType;
    use crate::convert::Format;
    use crate::messages::RequestId;
    use crate::state::StoredRequest;

    fn plan(shards: u32) -> Consolidation {
        Consolidation {
            parts: Vec::new(),
            n_cells: 10,
            nnz: 20,
            rows_per_chunk: 16,
            nnz_per_chunk: 16,
            shards,
            started_ms: 1,
            planned_after_ms: 2,
            collected_after_ms: 3,
        }
    }

    fn view() -> RequestView {
        RequestView {
            stored: StoredRequest {
                id: RequestId::parse("0123456789abcdef0123456789abcdef").unwrap(),
                canonical: serde_json::json!({}),
                bundles: Vec::new(),
                groups: 1,
                bundles_per_mapper: 1,
                value_type: ValueType::Uint32,
                n_genes: 5,
                submitted_at: "2026-01-01T00:00:00Z".into(),
                identity_sets: Vec::new(),
                columns: Vec::new(),
                copies: 1,
                preview: None,
            },
            filter: None,
            columns: Vec::new(),
            fields: Vec::new(),
            format: Format::Zarr,
        }
    }

    /// One of each phase, in order.
    fn phases() -> Vec<Phase> {
        vec![
            Phase::Collecting,
            Phase::Consolidating { plan: plan(2) },
            Phase::Finished {
                plan: plan(2),
                view: Box::new(view()),
            },
            Phase::Committed,
            Phase::Failed,
        ]
    }

    type Transition = fn(Phase) -> Result<Phase, Refused>;

    /// Every transition, by name.
    fn transitions() -> [(&'static str, Transition); 4] {
        [
            ("consolidate", |p| p.consolidate(plan(3))),
            ("finish", |p| p.finish(view())),
            ("commit", Phase::commit),
            ("fail", Phase::fail),
        ]
    }

    /// The legal transitions: (from, transition, to).
    const LEGAL: [(&str, &str, &str); 6] = [
        ("collecting", "consolidate", "consolidating"),
        ("collecting", "fail", "failed"),
        ("consolidating", "finish", "finished"),
        ("consolidating", "fail", "failed"),
        ("finished", "commit", "committed"),
        ("finished", "fail", "failed"),
    ];

    #[test]
    fn every_legal_transition_is_made_and_every_other_refused() {
        for n in 0..phases().len() {
            for (transition, make) in transitions() {
                let from = phases().swap_remove(n);
                let name = from.name();
                let legal = LEGAL
                    .iter()
                    .find(|(f, t, _)| *f == name && *t == transition);
                match (make(from), legal) {
                    (Ok(to), Some((_, _, expected))) => assert_eq!(to.name(), *expected),
                    (Err(refused), None) => assert_eq!(
                        refused,
                        Refused {
                            from: name,
                            transition
                        }
                    ),
                    (outcome, legal) => {
                        panic!("{name} --{transition}--> {outcome:?}; legal: {legal:?}")
                    }
                }
            }
        }
    }

    #[test]
    fn the_plan_is_carried_from_consolidating_to_finished() {
        let phase = Phase::Collecting.consolidate(plan(7)).unwrap();
        assert_eq!(phase.plan().map(|p| p.shards), Some(7));
        let phase = phase.finish(view()).unwrap();
        assert_eq!(phase.plan().map(|p| p.shards), Some(7));
        let Phase::Finished { view, .. } = &phase else {
            panic!("{phase:?}");
        };
        assert_eq!(view.format, Format::Zarr);
        let phase = phase.commit().unwrap();
        assert!(phase.plan().is_none());
    }

    #[test]
    fn no_phase_before_the_plan_has_one() {
        assert!(Phase::Collecting.plan().is_none());
        assert!(Phase::Failed.plan().is_none());
    }

    #[test]
    fn a_refused_transition_is_an_internal_error() {
        let e: Error = Phase::Committed.fail().unwrap_err().into();
        assert!(matches!(&e, Error::Internal(m) if m.contains("cannot fail while committed")));
        assert!(!e.is_retryable());
    }
}
