//! # cellmatrix-lab
//!
//! The tools around the service, kept out of the crate the four functions link: what
//! measures, models or feeds the service rather than being part of it. The CLI and the
//! tests depend on it; the functions do not, so its dependencies (random distributions,
//! progress bars, the YAML reader) stay out of the Lambda builds.
//!
//! Module map:
//! - [`synth`]: synthetic 10x-like and SmartSeq2-like bundles for benchmarks.
//! - [`bench`]: benchmarks measured against a baseline in the same run: the worker
//!   against this machine's bound for the same bytes and its peak memory, the whole
//!   service against a Python (anndata) baseline, and a request's invocations and store
//!   requests against the planner's optimum.
//! - [`simulate`]: a deterministic discrete-event simulation of a request on Lambda
//!   and S3, replaying the real planner and the collector's real ledger.

pub mod bench;
pub mod simulate;
pub mod synth;
