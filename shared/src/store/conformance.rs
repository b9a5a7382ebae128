//! The conformance suite every [`BlobStore`](super::BlobStore) passes.
//!
//! Each check is a public async fn that panics with a message naming the store and the
//! property on failure, so an implementation's test can call [`run_all`] or pick single
//! checks. Every check works under its own random key prefix and never lists outside it,
//! so the suite can run against a shared store, even concurrently with itself.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rand::RngCore;

use super::{DynStore, ObjectMeta, PutOutcome, StoreError};

/// Runs every check in turn.
pub async fn run_all(store: DynStore) {
    round_trip(&store).await;
    get_missing(&store).await;
    put_replaces(&store).await;
    put_if_absent(&store).await;
    ranged_reads(&store).await;
    sizes(&store).await;
    list_prefix(&store).await;
    list_paginates(&store).await;
    delete(&store).await;
    list_while_deleting(&store).await;
    invalid_keys(&store).await;
    presign_get(&store).await;
    put_if_absent_race(&store).await;
    streamed_writes(&store).await;
    overwrite_changes_modified(&store).await;
}

/// A fresh prefix for one check, so runs never see each other's keys.
pub fn unique_prefix(check: &str) -> String {
    format!("conformance/{check}-{:016x}", rand::random::<u64>())
}

fn random_bytes(len: usize) -> Bytes {
    let mut buf = vec![0u8; len];
    rand::rng().fill_bytes(&mut buf);
    Bytes::from(buf)
}

/// Every byte value, to catch text-mode or encoding mangling.
fn all_byte_values() -> Bytes {
    (0..=255u8).cycle().take(1024).collect::<Vec<_>>().into()
}

fn short(b: &[u8]) -> String {
    if b.len() <= 48 {
        format!("{b:?}")
    } else {
        format!("<{} bytes, starting {:?}>", b.len(), &b[..16])
    }
}

async fn must_get(store: &DynStore, key: &str) -> Option<Bytes> {
    store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("{}: get {key}: {e}", store.describe()))
}

async fn must_put(store: &DynStore, key: &str, body: Bytes) {
    store
        .put(key, body)
        .await
        .unwrap_or_else(|e| panic!("{}: put {key}: {e}", store.describe()));
}

async fn assert_body(store: &DynStore, key: &str, expected: &[u8], what: &str) {
    match must_get(store, key).await {
        None => panic!("{}: {what}: get {key} found nothing", store.describe()),
        Some(got) => assert!(
            got == expected,
            "{}: {what}: get {key} returned {} instead of {}",
            store.describe(),
            short(&got),
            short(expected)
        ),
    }
}

/// Bodies come back byte for byte: empty, every byte value, several MB.
pub async fn round_trip(store: &DynStore) {
    let p = unique_prefix("round-trip");
    let cases = [
        ("empty", Bytes::new()),
        ("text.json", Bytes::from_static(b"{\"a\": 1}\n")),
        ("binary.bin", all_byte_values()),
        // Several MB and an odd length, so no buffer size divides it.
        ("big/multi-mb_x.bin", random_bytes(5 * 1024 * 1024 + 7)),
    ];
    for (name, body) in &cases {
        let key = format!("{p}/{name}");
        must_put(store, &key, body.clone()).await;
        assert_body(store, &key, body, "round trip").await;
    }
}

/// A missing key is `None`, not an error.
pub async fn get_missing(store: &DynStore) {
    let p = unique_prefix("get-missing");
    let key = format!("{p}/nothing-here");
    assert_eq!(
        must_get(store, &key).await,
        None,
        "{}: get of a missing key",
        store.describe()
    );
    // A missing "directory" level too.
    let key = format!("{p}/no/such/dir/x");
    assert_eq!(
        must_get(store, &key).await,
        None,
        "{}: get under a missing directory",
        store.describe()
    );
}

/// `put` replaces an existing value, shorter or longer.
pub async fn put_replaces(store: &DynStore) {
    let key = format!("{}/k", unique_prefix("put-replaces"));
    must_put(store, &key, Bytes::from_static(b"first value, quite long")).await;
    must_put(store, &key, Bytes::from_static(b"second")).await;
    assert_body(store, &key, b"second", "put over a longer value").await;
    must_put(
        store,
        &key,
        Bytes::from_static(b"third value, longer still"),
    )
    .await;
    assert_body(
        store,
        &key,
        b"third value, longer still",
        "put over a shorter value",
    )
    .await;
}

/// A listing tells an overwrite apart, with the same bytes and size too: the collector
/// sees an invocation's heartbeat this way. S3's `LastModified` has whole seconds, so
/// the second write waits past one.
pub async fn overwrite_changes_modified(store: &DynStore) {
    let prefix = unique_prefix("overwrite-modified");
    let key = format!("{prefix}/beat");
    let modified = || async {
        let listed = must_list(store, &prefix).await;
        assert_eq!(keys(&listed), [key.as_str()], "{}", store.describe());
        listed[0].modified.unwrap_or_else(|| {
            panic!(
                "{}: a listing must say when an object was written",
                store.describe()
            )
        })
    };
    must_put(store, &key, Bytes::from_static(b"{\"beat\":1}")).await;
    let first = modified().await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    must_put(store, &key, Bytes::from_static(b"{\"beat\":1}")).await;
    let second = modified().await;
    assert!(
        second > first,
        "{}: an overwrite must change the listed modified ({first} then {second})",
        store.describe()
    );
}

/// `put_if_absent` creates once, then reports `AlreadyExists` and keeps the first value.
pub async fn put_if_absent(store: &DynStore) {
    let d = store.describe();
    let key = format!("{}/k", unique_prefix("put-if-absent"));
    let first = store
        .put_if_absent(&key, Bytes::from_static(b"first"))
        .await
        .unwrap_or_else(|e| panic!("{d}: put_if_absent {key}: {e}"));
    assert_eq!(first, PutOutcome::Created, "{d}: first put_if_absent");
    let second = store
        .put_if_absent(&key, Bytes::from_static(b"second"))
        .await
        .unwrap_or_else(|e| panic!("{d}: second put_if_absent {key}: {e}"));
    assert_eq!(
        second,
        PutOutcome::AlreadyExists,
        "{d}: second put_if_absent"
    );
    assert_body(store, &key, b"first", "after a refused put_if_absent").await;

    // Over a value written by plain `put`.
    let key = format!("{}/k", unique_prefix("put-if-absent-over-put"));
    must_put(store, &key, Bytes::from_static(b"plain")).await;
    let outcome = store
        .put_if_absent(&key, Bytes::from_static(b"conditional"))
        .await
        .unwrap_or_else(|e| panic!("{d}: put_if_absent {key}: {e}"));
    assert_eq!(
        outcome,
        PutOutcome::AlreadyExists,
        "{d}: put_if_absent over a put"
    );
    assert_body(store, &key, b"plain", "put_if_absent over a put").await;

    // After a delete the key is free again.
    store
        .delete(&key)
        .await
        .unwrap_or_else(|e| panic!("{d}: delete {key}: {e}"));
    let outcome = store
        .put_if_absent(&key, Bytes::from_static(b"again"))
        .await
        .unwrap_or_else(|e| panic!("{d}: put_if_absent {key}: {e}"));
    assert_eq!(
        outcome,
        PutOutcome::Created,
        "{d}: put_if_absent after delete"
    );
    assert_body(store, &key, b"again", "put_if_absent after delete").await;
}

/// Ranged reads: start, middle, clamped end, empty ranges, a start past the end, a
/// missing key, an empty object.
pub async fn ranged_reads(store: &DynStore) {
    let d = store.describe();
    let p = unique_prefix("ranged-reads");
    let key = format!("{p}/data");
    let body = all_byte_values();
    let len = body.len() as u64;
    must_put(store, &key, body.clone()).await;

    let cases: [(std::ops::Range<u64>, &[u8], &str); 8] = [
        (0..10, &body[..10], "start"),
        (100..200, &body[100..200], "middle"),
        (len - 1..len, &body[len as usize - 1..], "last byte"),
        (1000..2000, &body[1000..], "end past the object, clamped"),
        (
            0..1 << 40,
            &body[..],
            "huge end, clamped to the whole object",
        ),
        (0..len, &body[..], "exactly the object"),
        (5..5, b"", "empty range"),
        (len..len + 10, b"", "start at the end"),
    ];
    for (range, expected, what) in cases {
        let got = store
            .get_range(&key, range.clone())
            .await
            .unwrap_or_else(|e| panic!("{d}: get_range {key} {range:?} ({what}): {e}"));
        let got = got.unwrap_or_else(|| panic!("{d}: get_range {key} {range:?} ({what}): None"));
        assert!(
            got == expected,
            "{d}: get_range {key} {range:?} ({what}) returned {} instead of {}",
            short(&got),
            short(expected)
        );
    }

    for range in [len + 1..len + 10, len + 1..len + 1, 2000..3000] {
        match store.get_range(&key, range.clone()).await {
            Err(StoreError::InvalidRange { size, .. }) => {
                assert_eq!(
                    size, len,
                    "{d}: InvalidRange for {range:?} reports the size"
                )
            }
            other => panic!(
                "{d}: get_range {key} {range:?} past the end: expected InvalidRange, got {other:?}"
            ),
        }
    }

    let missing = format!("{p}/missing");
    for range in [0..10, 3..3] {
        let got = store
            .get_range(&missing, range.clone())
            .await
            .unwrap_or_else(|e| panic!("{d}: get_range of a missing key {range:?}: {e}"));
        assert_eq!(got, None, "{d}: get_range of a missing key {range:?}");
    }

    let empty = format!("{p}/empty");
    must_put(store, &empty, Bytes::new()).await;
    for range in [0..10, 0..0] {
        let got = store
            .get_range(&empty, range.clone())
            .await
            .unwrap_or_else(|e| panic!("{d}: get_range of an empty object {range:?}: {e}"));
        assert_eq!(
            got,
            Some(Bytes::new()),
            "{d}: get_range of an empty object {range:?}"
        );
    }
}

/// `size` reports the byte length, `None` for a missing key.
pub async fn sizes(store: &DynStore) {
    let d = store.describe();
    let p = unique_prefix("sizes");
    for len in [0usize, 1, 1024, 70_001] {
        let key = format!("{p}/len-{len}");
        must_put(store, &key, random_bytes(len)).await;
        let size = store
            .size(&key)
            .await
            .unwrap_or_else(|e| panic!("{d}: size {key}: {e}"));
        assert_eq!(size, Some(len as u64), "{d}: size of {key}");
    }
    let missing = format!("{p}/missing");
    let size = store
        .size(&missing)
        .await
        .unwrap_or_else(|e| panic!("{d}: size {missing}: {e}"));
    assert_eq!(size, None, "{d}: size of a missing key");
}

async fn must_list(store: &DynStore, prefix: &str) -> Vec<ObjectMeta> {
    store
        .list(prefix)
        .await
        .unwrap_or_else(|e| panic!("{}: list {prefix:?}: {e}", store.describe()))
}

fn keys(listed: &[ObjectMeta]) -> Vec<&str> {
    listed.iter().map(|m| m.key.as_str()).collect()
}

/// Listing returns exactly the keys under a prefix, sorted, with their sizes; a prefix
/// need not end at a `/`.
pub async fn list_prefix(store: &DynStore) {
    let d = store.describe();
    let p = unique_prefix("list-prefix");
    // Written out of order; sizes differ so a mix-up shows.
    let objects = [
        ("z", 1usize),
        ("a/bc/x", 2),
        ("a/b/2", 3),
        ("a/b/deep/er/k", 4),
        ("a/b/1", 5),
        ("a/c", 6),
        ("a/b-sibling", 7),
    ];
    for (name, len) in objects {
        must_put(store, &format!("{p}/{name}"), random_bytes(len)).await;
    }
    // A neighbouring prefix that shares the leading characters must not leak in.
    let neighbour = format!("{p}x/a/b/1");
    must_put(store, &neighbour, random_bytes(1)).await;

    let expect = |names: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = names.iter().map(|n| format!("{p}/{n}")).collect();
        v.sort();
        v
    };

    let all = must_list(store, &format!("{p}/")).await;
    let mut all_names: Vec<&str> = objects.iter().map(|(n, _)| *n).collect();
    all_names.sort();
    assert_eq!(keys(&all), expect(&all_names), "{d}: list {p}/");
    for (name, len) in objects {
        let key = format!("{p}/{name}");
        let meta = all.iter().find(|m| m.key == key).expect("listed above");
        assert_eq!(meta.size, len as u64, "{d}: listed size of {key}");
    }
    assert!(
        all.windows(2).all(|w| w[0].key < w[1].key),
        "{d}: list is not sorted: {:?}",
        keys(&all)
    );

    let partial = must_list(store, &format!("{p}/a/b")).await;
    assert_eq!(
        keys(&partial),
        expect(&["a/b-sibling", "a/b/1", "a/b/2", "a/b/deep/er/k", "a/bc/x"]),
        "{d}: list of a partial segment {p}/a/b"
    );

    let dir = must_list(store, &format!("{p}/a/b/")).await;
    assert_eq!(
        keys(&dir),
        expect(&["a/b/1", "a/b/2", "a/b/deep/er/k"]),
        "{d}: list {p}/a/b/"
    );

    let one = must_list(store, &format!("{p}/a/c")).await;
    assert_eq!(keys(&one), expect(&["a/c"]), "{d}: list {p}/a/c");

    let none = must_list(store, &format!("{p}/nothing/")).await;
    assert!(none.is_empty(), "{d}: list of an empty prefix: {none:?}");

    // Without the trailing '/', the neighbour matches too.
    let with_neighbour = must_list(store, &p).await;
    assert!(
        with_neighbour.iter().any(|m| m.key == neighbour),
        "{d}: list {p} misses {neighbour}"
    );
    assert_eq!(with_neighbour.len(), objects.len() + 1, "{d}: list {p}");
}

/// Listing more keys than one S3 page (1000) returns them all. The keys are written and
/// deleted concurrently, and the cleanup is checked by listing again.
pub async fn list_paginates(store: &DynStore) {
    const N: usize = 1100;
    let d = store.describe();
    let p = unique_prefix("list-paginates");
    let names: Vec<String> = (0..N).map(|i| format!("{p}/k{i:05}")).collect();
    futures::stream::iter(names.iter().map(|key| {
        let store = store.clone();
        let key = key.clone();
        async move {
            let body = Bytes::from(key.clone());
            store.put(&key, body).await.map_err(|e| (key, e))
        }
    }))
    .buffer_unordered(32)
    .try_collect::<()>()
    .await
    .unwrap_or_else(|(key, e)| panic!("{d}: put {key}: {e}"));

    let listed = must_list(store, &format!("{p}/")).await;
    assert_eq!(
        listed.len(),
        N,
        "{d}: list of {N} keys returned {}",
        listed.len()
    );
    assert_eq!(keys(&listed), names, "{d}: list of {N} keys");
    for meta in &listed {
        assert_eq!(
            meta.size,
            meta.key.len() as u64,
            "{d}: listed size of {}",
            meta.key
        );
    }

    futures::stream::iter(names.iter().map(|key| {
        let store = store.clone();
        let key = key.clone();
        async move { store.delete(&key).await.map_err(|e| (key, e)) }
    }))
    .buffer_unordered(32)
    .try_collect::<()>()
    .await
    .unwrap_or_else(|(key, e)| panic!("{d}: delete {key}: {e}"));
    let left = must_list(store, &format!("{p}/")).await;
    assert!(
        left.is_empty(),
        "{d}: {} keys left after deleting all {N}",
        left.len()
    );
}

/// `delete` removes the object and is idempotent.
pub async fn delete(store: &DynStore) {
    let d = store.describe();
    let p = unique_prefix("delete");
    let key = format!("{p}/k");
    let keep = format!("{p}/keep");
    must_put(store, &key, Bytes::from_static(b"doomed")).await;
    must_put(store, &keep, Bytes::from_static(b"kept")).await;
    store
        .delete(&key)
        .await
        .unwrap_or_else(|e| panic!("{d}: delete {key}: {e}"));
    assert_eq!(must_get(store, &key).await, None, "{d}: get after delete");
    let size = store
        .size(&key)
        .await
        .unwrap_or_else(|e| panic!("{d}: size {key}: {e}"));
    assert_eq!(size, None, "{d}: size after delete");
    let listed = must_list(store, &format!("{p}/")).await;
    assert_eq!(keys(&listed), vec![keep.clone()], "{d}: list after delete");
    assert_body(store, &keep, b"kept", "a neighbour of a deleted key").await;

    store
        .delete(&key)
        .await
        .unwrap_or_else(|e| panic!("{d}: second delete of {key}: {e}"));
    let never = format!("{p}/never/existed");
    store
        .delete(&never)
        .await
        .unwrap_or_else(|e| panic!("{d}: delete of a missing key {never}: {e}"));
}

/// A listing while objects under the prefix are deleted succeeds and names only keys
/// that were there: a request's cleanup deletes its scratch data while a late
/// invocation lists it to clean up after itself.
pub async fn list_while_deleting(store: &DynStore) {
    let d = store.describe();
    let p = unique_prefix("list-while-deleting");
    let all: Vec<String> = (0..400)
        .map(|i| format!("{p}/d{}/k{i:04}", i % 4))
        .collect();
    futures::stream::iter(
        all.iter()
            .map(|k| must_put(store, k, Bytes::from_static(b"x"))),
    )
    .buffer_unordered(32)
    .collect::<Vec<()>>()
    .await;
    let deleting = async {
        futures::stream::iter(all.iter().map(|k| store.delete(k)))
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await
            .unwrap_or_else(|e| panic!("{d}: delete while listing: {e}"));
    };
    // Four listings at once, each until the prefix is empty.
    let listing = |n: usize| {
        let (all, d, p) = (&all, &d, &p);
        async move {
            let mut lists = 0;
            loop {
                let listed = store.list(&format!("{p}/")).await.unwrap_or_else(|e| {
                    panic!("{d}: list while deleting (lister {n}, list {lists}): {e}")
                });
                lists += 1;
                for o in &listed {
                    assert!(all.contains(&o.key), "{d}: listed {} never written", o.key);
                }
                if listed.is_empty() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
    };
    let listings = futures::future::join_all((0..4).map(listing));
    futures::join!(deleting, listings);
    assert!(
        must_list(store, &format!("{p}/")).await.is_empty(),
        "{d}: all deleted"
    );
}

/// Unsafe keys are refused by every operation, before any I/O.
pub async fn invalid_keys(store: &DynStore) {
    let d = store.describe();
    let p = unique_prefix("invalid-keys");
    let bad_keys = [
        "../x".to_string(),
        "/x".to_string(),
        "a//b".to_string(),
        "a%2Fb".to_string(),
        String::new(),
        format!("{p}/../escape"),
        format!("{p}/trailing/"),
    ];
    let is_invalid = |r: &Result<(), StoreError>| matches!(r, Err(StoreError::InvalidKey { .. }));
    for key in &bad_keys {
        let body = Bytes::from_static(b"x");
        let results: [(&str, Result<(), StoreError>); 7] = [
            ("get", store.get(key).await.map(drop)),
            ("get_range", store.get_range(key, 0..1).await.map(drop)),
            ("size", store.size(key).await.map(drop)),
            ("put", store.put(key, body.clone()).await),
            (
                "put_if_absent",
                store.put_if_absent(key, body).await.map(drop),
            ),
            ("delete", store.delete(key).await),
            (
                "presign_get",
                store
                    .presign_get(key, Duration::from_secs(60))
                    .await
                    .map(drop),
            ),
        ];
        for (op, result) in results {
            assert!(
                is_invalid(&result),
                "{d}: {op} {key:?} should be InvalidKey, got {result:?}"
            );
        }
    }
    for prefix in ["../x", "/x", "a//b", "a%2Fb", "/"] {
        let result = store.list(prefix).await.map(drop);
        assert!(
            is_invalid(&result),
            "{d}: list {prefix:?} should be InvalidKey, got {result:?}"
        );
    }
}

/// `presign_get` gives a non-empty URL naming the object.
pub async fn presign_get(store: &DynStore) {
    let d = store.describe();
    let key = format!("{}/presigned.bin", unique_prefix("presign"));
    must_put(store, &key, Bytes::from_static(b"hello")).await;
    let url = store
        .presign_get(&key, Duration::from_secs(300))
        .await
        .unwrap_or_else(|e| panic!("{d}: presign_get {key}: {e}"));
    assert!(!url.is_empty(), "{d}: presign_get returned an empty URL");
    assert!(
        url.contains("presigned.bin"),
        "{d}: presigned URL {url} does not name the object"
    );
}

/// Sixteen tasks race `put_if_absent` on one key with different bodies: exactly one
/// gets `Created`, and its body is what the store holds.
pub async fn put_if_absent_race(store: &DynStore) {
    const RACERS: usize = 16;
    let d = store.describe();
    let key = format!("{}/contested", unique_prefix("race"));
    // Line the tasks up so the requests really overlap.
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let store = store.clone();
            let key = key.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let body = Bytes::from(format!("racer {i:02} was here"));
                barrier.wait().await;
                let outcome = store.put_if_absent(&key, body.clone()).await;
                (body, outcome)
            })
        })
        .collect();

    let mut winners = Vec::new();
    for task in tasks {
        let (body, outcome) = task.await.expect("racer task panicked");
        match outcome {
            Ok(PutOutcome::Created) => winners.push(body),
            Ok(PutOutcome::AlreadyExists) => {}
            Err(e) => panic!("{d}: racing put_if_absent {key}: {e}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "{d}: {} of {RACERS} racing put_if_absent calls got Created: {:?}",
        winners.len(),
        winners
    );
    assert_body(store, &key, &winners[0], "the race winner's body").await;
}

/// An [`ObjectWriter`](super::writer::ObjectWriter) writes objects of one part and of
/// several (uploaded in parts), replaces an existing object, and an aborted write leaves
/// nothing behind.
pub async fn streamed_writes(store: &DynStore) {
    use super::writer::ObjectWriter;
    let name = store.describe();
    let prefix = unique_prefix("streamed");
    let part = super::MIN_PART_BYTES;
    let big = random_bytes(2 * part + 12_345);
    let key = format!("{prefix}/big");
    store
        .put(&key, Bytes::from_static(b"old"))
        .await
        .expect("put");
    let mut w = ObjectWriter::with_part_bytes(store.clone(), &key, part);
    // Uneven writes, so parts are cut inside a write.
    for piece in big.chunks(1_000_003) {
        w.write(piece).await.expect("write");
    }
    assert_eq!(
        store.get(&key).await.expect("get").as_deref(),
        Some(&b"old"[..]),
        "{name}: an unfinished upload is visible"
    );
    assert_eq!(w.finish().await.expect("finish"), big.len() as u64);
    let got = store.get(&key).await.expect("get").expect("object");
    assert!(
        got == big,
        "{name}: a multipart object reads back different bytes"
    );

    let small_key = format!("{prefix}/small");
    let mut w = ObjectWriter::with_part_bytes(store.clone(), &small_key, part);
    w.write(b"hello ").await.expect("write");
    w.write(b"world").await.expect("write");
    w.finish().await.expect("finish");
    assert_eq!(
        store.get(&small_key).await.expect("get").as_deref(),
        Some(&b"hello world"[..]),
        "{name}: a one-part object"
    );

    let aborted = format!("{prefix}/aborted");
    let mut w = ObjectWriter::with_part_bytes(store.clone(), &aborted, part);
    w.write(&big).await.expect("write");
    w.abort().await;
    assert_eq!(
        store.get(&aborted).await.expect("get"),
        None,
        "{name}: an aborted upload left an object"
    );
    let listed = store.list(&format!("{prefix}/")).await.expect("list");
    assert_eq!(listed.len(), 2, "{name}: {listed:?}");
    for k in [key, small_key] {
        store.delete(&k).await.expect("delete");
    }
}
