//! Bad input through the real `cellmatrix` binary: a one-line error naming the file and
//! the problem, a non-zero exit, and no bundle left behind.

use std::path::{Path, PathBuf};
use std::process::Command;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples")
}

/// Runs `cellmatrix --store STORE ingest ARGS...`; returns (success, stderr).
fn ingest(store: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cellmatrix"))
        .arg("--store")
        .arg(store)
        .arg("ingest")
        .args(args)
        .output()
        .expect("run cellmatrix");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn manifests(store: &Path) -> usize {
    let bundles = store.join("bundles");
    std::fs::read_dir(&bundles)
        .map(|d| {
            d.filter(|e| e.as_ref().unwrap().path().join("manifest.json").exists())
                .count()
        })
        .unwrap_or(0)
}

/// Asserts a failed ingest: one line, naming `file` and containing `problem`, no manifest.
fn assert_refused(store: &Path, args: &[&str], file: &str, problem: &str) {
    let (ok, stderr) = ingest(store, args);
    assert!(!ok, "ingest {args:?} should fail");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got:\n{stderr}");
    assert!(
        lines[0].contains(file),
        "error should name {file}: {stderr}"
    );
    assert!(
        lines[0].contains(problem),
        "error should say {problem:?}: {stderr}"
    );
    assert_eq!(manifests(store), 0, "no bundle may be left behind");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn truncated_gzip_matrix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pbmc");
    copy_dir(&samples().join("pbmc3k_300"), &dir);
    let m = dir.join("matrix.mtx.gz");
    let bytes = std::fs::read(&m).unwrap();
    std::fs::write(&m, &bytes[..bytes.len() / 2]).unwrap();
    let store = tmp.path().join("store");
    assert_refused(
        &store,
        &[dir.to_str().unwrap()],
        "matrix.mtx.gz",
        "truncated",
    );
}

#[test]
fn corrupt_hdf5_file() {
    let tmp = tempfile::tempdir().unwrap();
    let h5 = tmp.path().join("filtered_feature_bc_matrix.h5");
    let mut bytes = b"\x89HDF\r\n\x1a\n".to_vec();
    bytes.extend(std::iter::repeat_n(0xA5u8, 4000));
    std::fs::write(&h5, bytes).unwrap();
    let store = tmp.path().join("store");
    assert_refused(
        &store,
        &[h5.to_str().unwrap()],
        "filtered_feature_bc_matrix.h5",
        "",
    );
    let h5ad = tmp.path().join("x.h5ad");
    std::fs::write(&h5ad, b"not an hdf5 file at all").unwrap();
    assert_refused(&store, &[h5ad.to_str().unwrap()], "x.h5ad", "");
}

#[test]
fn barcodes_that_do_not_match_the_matrix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pbmc");
    copy_dir(&samples().join("pbmc3k_300"), &dir);
    std::fs::remove_file(dir.join("barcodes.tsv.gz")).unwrap();
    let barcodes: String = (0..299).map(|i| format!("BC{i}-1\n")).collect();
    std::fs::write(dir.join("barcodes.tsv"), barcodes).unwrap();
    let store = tmp.path().join("store");
    assert_refused(
        &store,
        &[dir.to_str().unwrap()],
        "barcodes.tsv",
        "299 barcodes",
    );
}

#[test]
fn non_numeric_table_cell() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("counts.tsv");
    std::fs::write(&t, "gene\tc1\tc2\nACTB\t1\t2\nMT-CO1\t3\tabc\n").unwrap();
    let store = tmp.path().join("store");
    assert_refused(
        &store,
        &[t.to_str().unwrap()],
        "counts.tsv",
        "\"abc\" is not a number",
    );
    assert_refused(
        &store,
        &[t.to_str().unwrap(), "--one-bundle-per-cell"],
        "counts.tsv",
        "line 3",
    );
}

#[test]
fn fqids_that_could_escape_their_key() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let dir = samples().join("pbmc3k_300");
    for bad in [
        "../../etc/passwd",
        "0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z/..",
        "0a1b2c3d-0000-4000-8000-000000000000/2019-02-02T065454.662896Z",
        "0a1b2c3d-0000-4000-8000-0000000000..2019-02-02T065454.662896Z",
    ] {
        let (ok, stderr) = ingest(&store, &[dir.to_str().unwrap(), "--fqid", bad]);
        assert!(!ok, "{bad} accepted");
        assert!(stderr.contains("fqid"), "{stderr}");
        assert_eq!(
            stderr.lines().filter(|l| !l.trim().is_empty()).count(),
            1,
            "{stderr}"
        );
    }
    assert!(!store.join("bundles").exists(), "nothing may be written");
}

#[test]
fn an_existing_bundle_is_not_overwritten_with_different_content() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let fqid = "0a1b2c3d-0000-4000-8000-000000000000.2019-02-02T065454.662896Z";
    let a = tmp.path().join("a.tsv");
    let b = tmp.path().join("b.tsv");
    std::fs::write(&a, "gene\tc1\nACTB\t1\n").unwrap();
    std::fs::write(&b, "gene\tc1\nACTB\t2\n").unwrap();
    let key = store
        .join("bundles")
        .join(fqid)
        .join("matrix.zarr/X/data/c/0");
    assert!(ingest(&store, &[a.to_str().unwrap(), "--fqid", fqid]).0);
    let before = std::fs::read(&key).unwrap();
    // The same content again is fine; different content is refused and changes nothing.
    assert!(ingest(&store, &[a.to_str().unwrap(), "--fqid", fqid]).0);
    let (ok, stderr) = ingest(&store, &[b.to_str().unwrap(), "--fqid", fqid]);
    assert!(!ok);
    assert!(
        stderr.contains("already exists with different content"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), before);
}
