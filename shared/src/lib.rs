//! # cellmatrix
//!
//! The library behind the cellmatrix service: every piece with logic lives here, and the
//! Lambda binaries and the CLI are thin wrappers around it.
//!
//! Module map:
//! - [`error`]: the error types, each saying whether a retry can help.
//! - [`fqid`]: strict bundle ids (`uuid.version`); they become object keys.
//! - [`store`]: the [`store::BlobStore`] trait, its filesystem and S3 implementations,
//!   the zarrs adapter and the conformance suite every store passes (feature `testing`).
//! - [`bundle`]: the in-memory matrix, the manifest, QC metrics and the AnnData-Zarr
//!   bundle writer and reader.
//! - [`catalog`]: the index of bundles, read in O(1) GETs, updated without locks.
//! - [`ingest`] (feature `ingest`): readers for 10x, h5ad and table inputs, with
//!   [`progress`] bars on long work.
//! - [`plan`]: the pure planner: bundles and a budget in, worker tasks out.
//! - [`layout`]: the output's layout: rows and nonzeros per chunk, and how
//!   consolidation shards split the chunks.
//! - [`part`]: a worker's part: rows remapped, filtered and compacted, its chunks
//!   written as they fill.
//! - [`field`]: field names, types and values; a cell column; the catalog's summary of one.
//! - [`facets`]: the catalog's fields summed over bundles: `GET /v1/fields`, bare names, `cell.*`.
//! - [`obs`]: the output's obs columns: each field's kind, decided from the catalog.
//! - [`filter`]: the request's filter tree, evaluated per bundle (three-valued) and per cell.
//! - [`query`]: the `where` language, parsed into the filter's JSON tree.
//! - [`select`]: a request's bundles and columns chosen from the catalog, purely.
//! - [`genes`]: the output gene space and each bundle's column remapping.
//! - [`request`]: the body of `POST /v1/matrix`, validated, normalised, and its request id.
//! - [`caller`]: who calls the API (an IAM principal, or the local user), and its key.
//! - [`scratch`]: removing a request's parts and markers once it has ended.
//! - [`messages`]: the events the functions send each other.
//! - [`state`]: every key of a request's state in the store, and the records kept there.
//! - [`invoke`]: the invoker trait, with the Lambda and the in-process implementations.
//! - [`fault`]: fault injection (dropped, duplicated, delayed and crashing invocations,
//!   stragglers, store errors), off unless configured.
//! - [`clock`], [`process`], [`text`]: small leaves: the records' clock, this process's
//!   memory, values clipped for messages.
//! - [`config`]: the settings read once per cold start.
//! - [`cost`]: prices, deployment and usage: one bill for the report, the dry run and the
//!   simulation.
//! - [`app`]: the composition root (store, invoker, settings) the handlers share.
//! - [`coldstart`]: a function's init duration, from `main` to ready, logged once.
//! - [`convert`]: the output formats (h5ad, loom, mtx, csv), streamed from the
//!   consolidated Zarr by the reducer.
//! - [`cells`]: the cell table (a request's obs, CSV or JSON lines), from the done
//!   tasks' parts while it runs, from the consolidated Zarr once it succeeded.
//! - [`handlers`]: the entry points of the driver, mapper, worker and reducer, free of
//!   Lambda crates so that the binaries, `cellmatrix serve` and the tests share them;
//!   with the reducer's handling of Lambda's on-failure records.
//!
//! Synthetic data, the benchmarks and the simulation live in the `cellmatrix-lab`
//! crate, which the functions do not link.

pub mod app;
pub mod bundle;
pub mod calibration;
pub mod caller;
pub mod catalog;
pub mod cells;
pub mod clock;
pub mod coldstart;
pub mod config;
pub mod convert;
pub mod cost;
pub mod error;
pub mod estimate;
pub mod facets;
pub mod fault;
pub mod field;
pub mod filter;
pub mod fqid;
pub(crate) mod genes;
pub mod handlers;
#[cfg(feature = "ingest")]
pub mod ingest;
pub mod invoke;
pub mod layout;
pub mod messages;
pub mod obs;
pub mod part;
pub mod plan;
pub mod process;
#[cfg(feature = "ingest")]
pub mod progress;
pub mod query;
pub mod report;
pub mod request;
pub(crate) mod scratch;
pub mod select;
pub mod state;
pub mod store;
mod task_counter;
pub(crate) mod text;

pub use error::{Error, Result};
pub use fqid::Fqid;
