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

/// Files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A fixture of the library's reader tests (`shared/tests/fixtures/NAME.gz`), inflated.
fn h5_fixture(name: &str, to: &Path) -> PathBuf {
    use std::io::Read;
    let gz = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/tests/fixtures")
        .join(format!("{name}.gz"));
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(gz).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    let path = to.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Inputs that claim more than they hold: each is refused in one line, with no panic
/// and nothing at all written to the store.
#[test]
fn crafted_sizes_are_refused_before_anything_is_allocated_or_written() {
    let tmp = tempfile::tempdir().unwrap();
    let mtx_dir = |name: &str, file: &str, matrix: &[u8]| {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("barcodes.tsv"), "A-1\nB-1\nC-1\nD-1\n").unwrap();
        std::fs::write(
            d.join("features.tsv"),
            "G1\tg1\nG2\tg2\nG3\tg3\nG4\tg4\nG5\tg5\n",
        )
        .unwrap();
        std::fs::write(d.join(file), matrix).unwrap();
        d
    };
    let header = b"%%MatrixMarket matrix coordinate integer general\n5 4 1000000000000000\n1 1 1\n";
    let mut bomb = b"gene\tc1\ng1\t".to_vec();
    bomb.resize(1 << 20, b'0');
    let bomb = gzip(&bomb);
    assert!(bomb.len() <= 1100, "{} bytes", bomb.len());
    let table_bomb = tmp.path().join("bomb.tsv.gz");
    std::fs::write(&table_bomb, &bomb).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut hundred = || -> Vec<u8> {
        (0..100)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let small = |name: &str, bytes: Vec<u8>| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let cases: Vec<(PathBuf, &str, &str)> = vec![
        (
            mtx_dir("nnz", "matrix.mtx", header),
            "matrix.mtx",
            "declares 1000000000000000 entries",
        ),
        (
            mtx_dir("nnzgz", "matrix.mtx.gz", &gzip(header)),
            "matrix.mtx.gz",
            "declares 1000000000000000 entries",
        ),
        (table_bomb, "bomb.tsv.gz", "inflates past"),
        (
            h5_fixture("huge_shape.h5", tmp.path()),
            "huge_shape.h5",
            "declares shape [1000000000000]",
        ),
        (
            h5_fixture("huge_shape.h5ad", tmp.path()),
            "huge_shape.h5ad",
            "declares shape [1000000000000]",
        ),
        (
            mtx_dir("hundred", "matrix.mtx", &hundred()),
            "matrix.mtx",
            "",
        ),
        (small("hundred.h5", hundred()), "hundred.h5", ""),
        (small("hundred.h5ad", hundred()), "hundred.h5ad", ""),
        (small("hundred.csv", hundred()), "hundred.csv", ""),
        (
            small("hundred.tsv.gz", gzip(&hundred())),
            "hundred.tsv.gz",
            "",
        ),
    ];
    for (i, (input, file, problem)) in cases.iter().enumerate() {
        let store = tmp.path().join(format!("store{i}"));
        let (ok, stderr) = ingest(&store, &[input.to_str().unwrap()]);
        assert!(!ok, "{file}: ingest should fail");
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{file}: one line expected, got:\n{stderr}");
        assert!(
            lines[0].contains(file) && lines[0].contains(problem),
            "{file}: {stderr}"
        );
        assert_eq!(
            files_under(&store),
            Vec::<PathBuf>::new(),
            "{file}: the store was written"
        );
    }
}
