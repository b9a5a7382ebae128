//! The mapper: plans the worker tasks of one group of bundles and starts them.

use futures::{StreamExt, TryStreamExt};

use crate::app::App;
use crate::catalog::lookup;
use crate::catalog::{self, CatalogEntry};
use crate::error::Error;
use crate::invoke::Function;
use crate::messages::{MapperEvent, TaskId, WorkerEvent};
use crate::plan::plan;
use crate::state::{BundleInfo, Keys, Plan, PlannedTask, SliceSpec, TaskSpec, put_json};

/// Plans the group's tasks, writes each task and then the plan, and invokes the workers.
/// A duplicate delivery writes the same keys and invokes the same tasks again, which
/// the workers shrug off.
pub async fn handle(app: &App, event: MapperEvent) -> Result<(), Error> {
    let keys = Keys::new(&event.request_id);
    let name = format!("group-{}", event.group);
    let Some(at_ms) = super::begin(app, &keys, &name, event.attempt, None).await? else {
        return Ok(());
    };
    let work = run(app, &event, &keys);
    let outcome = super::beat::beating(app, &keys, &name, event.attempt, at_ms, work).await;
    if let Err(e) = &outcome {
        super::stopped(app, &keys, &name, event.attempt, e).await;
    }
    outcome
}

/// Plans the group within the driver's answer to the request's POST: as [`handle`],
/// without the start marker. The collector counts every group launched when the run
/// started, so a group whose plan never lands because the driver stopped half-way (its
/// timeout, a crash: API Gateway retries neither) is taken for lost and goes to a mapper,
/// as a dropped mapper invocation does; with a start marker it would count as running
/// until the request's deadline.
pub async fn handle_in_driver(app: &App, event: MapperEvent) -> Result<(), Error> {
    let keys = Keys::new(&event.request_id);
    let outcome = run(app, &event, &keys).await;
    if let Err(e) = &outcome {
        let name = format!("group-{}", event.group);
        super::stopped(app, &keys, &name, event.attempt, e).await;
    }
    outcome
}

async fn run(app: &App, event: &MapperEvent, keys: &Keys) -> Result<(), Error> {
    let started_ms = crate::clock::now_ms();
    let catalog = catalog::read(&app.store).await?;
    let mut entries: Vec<(crate::fqid::Fqid, CatalogEntry)> =
        Vec::with_capacity(event.bundles.len());
    let mut manifest_reads = 0;
    for fqid in &event.bundles {
        let known = catalog.bundles.contains_key(fqid)
            || app.learnt.lock().expect("learnt lock").contains_key(fqid);
        let entry = lookup(&app.store, &app.learnt, &catalog.bundles, fqid)
            .await?
            .ok_or_else(|| Error::NotFound(format!("bundle {fqid}")))?;
        manifest_reads += u64::from(!known);
        entries.push((fqid.clone(), entry));
    }
    let planned = plan(
        &entries
            .iter()
            .map(|(f, e)| e.plan_bundle(f))
            .collect::<Vec<_>>(),
        app.config.budget(),
    );
    // A group holds up to `bundles_per_mapper` bundles and its plan as many slices: an
    // index, not a scan per slice.
    let by_fqid: std::collections::HashMap<&crate::fqid::Fqid, &CatalogEntry> =
        entries.iter().map(|(f, e)| (f, e)).collect();
    let info = |fqid: &crate::fqid::Fqid| {
        let e = by_fqid[fqid];
        BundleInfo {
            fqid: fqid.clone(),
            n_cells: e.n_cells,
            n_features: e.n_features,
            nnz: e.nnz,
            value_type: e.value_type,
            feature_set: e.feature_set.clone(),
            metadata: e.metadata.clone(),
            layout: e.layout(),
        }
    };
    let specs: Vec<TaskSpec> = planned
        .iter()
        .map(|t| {
            Ok(TaskSpec {
                id: TaskId::parse(&t.id)?,
                group: event.group,
                slices: t
                    .slices
                    .iter()
                    .map(|s| SliceSpec {
                        bundle: info(&s.fqid),
                        rows: s.rows.clone(),
                    })
                    .collect(),
            })
        })
        .collect::<Result<_, Error>>()?;
    let concurrency = app.config.invoke_concurrency.max(1);
    // Futures built eagerly: a lazily mapped stream of borrowing closures is not `Send`
    // as the Lambda runtime needs (a known rustc limitation with higher-ranked lifetimes).
    let writes: Vec<_> = specs
        .iter()
        .map(|spec| {
            let key = keys.task(&spec.id);
            async move { put_json(&app.store, &key, spec).await }
        })
        .collect();
    futures::stream::iter(writes)
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let plan_doc = Plan {
        group: event.group,
        tasks: planned
            .iter()
            .zip(&specs)
            .map(|(t, s)| PlannedTask {
                id: s.id.clone(),
                cells: t.cells,
                bytes: t.bytes,
            })
            .collect(),
        manifest_reads,
        started_ms,
        finished_ms: crate::clock::now_ms(),
    };
    put_json(&app.store, &keys.plan(event.group), &plan_doc).await?;
    crate::scratch::after_write(&app.store, keys, app.config.keep_scratch).await?;
    // A small request's every event twice, the copies after the first of each: a
    // duplicate delivery on purpose (`StoredRequest::copies`).
    let copies = event.copies.clamp(1, 2) as usize;
    let invocations: Vec<_> = specs
        .iter()
        .cycle()
        .take(specs.len() * copies)
        .map(|spec| {
            let worker = WorkerEvent {
                request_id: event.request_id.clone(),
                task_id: spec.id.clone(),
                attempt: 0,
            };
            async move {
                let payload = serde_json::to_value(&worker)
                    .map_err(|e| Error::input("worker event", e.to_string()))?;
                app.invoker.invoke(Function::Worker, payload).await
            }
        })
        .collect();
    // A batch at a time, each after a look for a cancel: a DELETE stops the invocations
    // that have not gone out yet.
    let mut invocations = invocations.into_iter();
    loop {
        let batch: Vec<_> = invocations.by_ref().take(concurrency).collect();
        if batch.is_empty() {
            return Ok(());
        }
        if crate::state::ended(&app.store, keys).await? {
            return Err(Error::Cancelled(keys.id().to_string()));
        }
        futures::stream::iter(batch)
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await?;
    }
}
