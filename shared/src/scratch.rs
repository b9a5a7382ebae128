//! Removing a request's scratch data (tasks, plans, parts, markers) once it has ended:
//! after success, and after a cancel together with any partial output. A failed request
//! keeps its parts, so that submitting it again reuses them; `requests/` also expires by
//! the bucket's lifecycle rule.
//!
//! Invocations may still run when a request ends (a straggler, a duplicate, a delayed
//! delivery), so every writer looks again after its last write ([`after_write`]): either
//! the end was already visible then, and it removes what it wrote, or its write came
//! before the end, and the cleanup that follows the end removes it.

use futures::StreamExt;

use crate::error::Error;
use crate::state::Keys;
use crate::store::DynStore;

/// How the request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `result.json` is there: the result stays.
    Succeeded,
    /// `cancel.json` is there and no result: partial output goes too.
    Cancelled,
}

/// What a status request, a re-submission and the run report's route still read.
const KEEP: [&str; 9] = [
    "request.json",
    "run.json",
    "genes.json",
    "progress.json",
    "result.json",
    "failed.json",
    "cancel.json",
    "converted.json",
    "report.json",
];

/// Deletes the scratch data of a request that ended; returns how many objects it deleted.
/// After success that includes a `failed.json` or `cancel.json` that raced the result.
/// After success the consolidated Zarr a conversion read from is kept: a late duplicate
/// of the conversion still reads it, and writes the same bytes.
pub async fn remove(store: &DynStore, keys: &Keys, ending: Ending) -> Result<usize, Error> {
    // The run report is made from what this removes. The collector writes it with its
    // ledger's launches before it cleans up; an invocation that gets here first (the
    // shard that committed a zarr result, a late duplicate) writes it without them.
    crate::report::write(store, keys, Vec::new()).await;
    // First: a late consolidation shard checks for the plan before it writes what it
    // read from the parts, so no shard writes from parts that were being deleted.
    store.delete(&keys.consolidate()).await?;
    let prefix = keys.prefix();
    let mut doomed: Vec<String> = store
        .list(&prefix)
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|key| {
            let rest = key.strip_prefix(&prefix).unwrap_or(key);
            let converted_from = ending == Ending::Succeeded && rest.starts_with("matrix.zarr/");
            // The result stands: a failure or cancel that raced it is noise.
            let overruled =
                ending == Ending::Succeeded && matches!(rest, "failed.json" | "cancel.json");
            // The callers own the request beyond its run: they may read the result,
            // or run it again.
            let owner = rest.starts_with("callers/");
            overruled || !(KEEP.contains(&rest) || converted_from || owner)
        })
        .collect();
    if ending == Ending::Cancelled && !store.exists(&keys.result()).await? {
        let results = format!("{}/", keys.results());
        doomed.extend(store.list(&results).await?.into_iter().map(|o| o.key));
    }
    let count = doomed.len();
    let deletes: Vec<_> = doomed.iter().map(|key| store.delete(key)).collect();
    let outcomes: Vec<_> = futures::stream::iter(deletes)
        .buffer_unordered(16)
        .collect()
        .await;
    for outcome in outcomes {
        outcome?;
    }
    if count > 0 {
        tracing::info!(request = %keys.id(), ?ending, objects = count, "scratch data removed");
    }
    Ok(count)
}

/// Called by an invocation after its last write: if the request has ended meanwhile,
/// its cleanup may have come before that write, so clean up again.
pub async fn after_write(store: &DynStore, keys: &Keys, keep: bool) -> Result<(), Error> {
    if keep {
        return Ok(());
    }
    let end = crate::state::end(store, keys).await?;
    if end.result {
        remove(store, keys, Ending::Succeeded).await?;
    } else if end.cancelled {
        remove(store, keys, Ending::Cancelled).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::messages::RequestId;
    use crate::store::fs::FsStore;

    async fn seeded() -> (tempfile::TempDir, DynStore, Keys) {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(FsStore::open(dir.path()).unwrap());
        let keys = Keys::new(&RequestId::parse("0123456789abcdef0123456789abcdef").unwrap());
        for rest in [
            "request.json",
            "run.json",
            "progress.json",
            "consolidate.json",
            "tasks/t.json",
            "parts/t/X/data/c/0",
            "done/t.json",
            "started/task-t.0.json",
            "matrix.zarr/zarr.json",
        ] {
            let key = format!("{}{rest}", keys.prefix());
            store.put(&key, Bytes::from_static(b"{}")).await.unwrap();
        }
        let out = format!("{}/matrix.zarr/zarr.json", keys.results());
        store.put(&out, Bytes::from_static(b"{}")).await.unwrap();
        (dir, store, keys)
    }

    async fn left(store: &DynStore, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = store
            .list(prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key.strip_prefix(prefix).unwrap().to_string())
            .collect();
        keys.sort();
        keys
    }

    #[tokio::test]
    async fn success_keeps_the_status_the_result_and_the_zarr_a_conversion_reads() {
        let (_dir, store, keys) = seeded().await;
        // Its owners stay: they read the result.
        let owner = keys.caller(&crate::caller::Caller::local());
        store.put(&owner, Bytes::from_static(b"{}")).await.unwrap();
        let deleted = remove(&store, &keys, Ending::Succeeded).await.unwrap();
        assert_eq!(deleted, 4);
        assert_eq!(
            left(&store, &keys.prefix()).await,
            [
                &owner[keys.prefix().len()..],
                "matrix.zarr/zarr.json",
                "progress.json",
                "request.json",
                "run.json"
            ]
        );
        assert_eq!(left(&store, &format!("{}/", keys.results())).await.len(), 1);
    }

    #[tokio::test]
    async fn a_cancel_removes_partial_output_and_a_late_writer_cleans_after_itself() {
        let (_dir, store, keys) = seeded().await;
        // Nothing ended yet: a writer's look afterwards removes nothing.
        after_write(&store, &keys, false).await.unwrap();
        assert_eq!(left(&store, &keys.prefix()).await.len(), 9);
        store
            .put(&keys.cancel(), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        after_write(&store, &keys, true).await.unwrap();
        assert_eq!(
            left(&store, &keys.prefix()).await.len(),
            10,
            "kept on request"
        );
        after_write(&store, &keys, false).await.unwrap();
        assert_eq!(
            left(&store, &keys.prefix()).await,
            ["cancel.json", "progress.json", "request.json", "run.json"]
        );
        assert!(
            left(&store, &format!("{}/", keys.results()))
                .await
                .is_empty()
        );
    }
}
