//! Restructuring keeps behaviour: the SHA-256 of every output object of (a) the demo's
//! request and (b) `bench e2e`'s request at 2,500 cells, against the hashes recorded
//! before issue #21 moved any code (`cli/tests/fixtures/output_hashes.json`, written by
//! this test with `CELLMATRIX_RECORD_HASHES=1`). Both requests run through the
//! `cellmatrix` binary, so the test does not depend on where the code lives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::support::files::files_under;

type Hashes = BTreeMap<String, BTreeMap<String, String>>;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/output_hashes.json")
}

fn cellmatrix(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cellmatrix"))
        .args(args)
        .env_remove("CELLMATRIX_FAULTS")
        // The demo's bundle ids carry their ingest time, and its cells' names their
        // bundle's id.
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cellmatrix {args:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every file under `dir`, by its path relative to `dir`, with its SHA-256.
fn hash_tree(dir: &Path) -> BTreeMap<String, String> {
    let out: BTreeMap<String, String> = files_under(dir)
        .into_iter()
        .map(|(rel, bytes)| (rel, hex(&Sha256::digest(bytes))))
        .collect();
    assert!(!out.is_empty(), "no output under {}", dir.display());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn demo(tmp: &Path) -> BTreeMap<String, String> {
    let store = tmp.join("demo");
    let stdout = cellmatrix(&["--store", store.to_str().unwrap(), "demo"]);
    let location = stdout
        .lines()
        .find_map(|l| l.strip_prefix("matrix (AnnData Zarr v3): "))
        .unwrap_or_else(|| panic!("the demo printed no location:\n{stdout}"));
    hash_tree(Path::new(location.trim()))
}

fn e2e(tmp: &Path) -> BTreeMap<String, String> {
    let dir = tmp.join("e2e");
    let figures = tmp.join("e2e.json");
    cellmatrix(&[
        "bench",
        "e2e",
        "--cells",
        "2500",
        "--no-baseline",
        "--dir",
        dir.to_str().unwrap(),
        "--out",
        figures.to_str().unwrap(),
    ]);
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&figures).unwrap()).unwrap();
    let output = figures[0]["ours"]["output"].as_str().unwrap();
    let store = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join(output).is_dir())
        .unwrap_or_else(|| panic!("no store under {} holds {output}", dir.display()));
    hash_tree(&store.join(output))
}

#[test]
fn outputs_are_byte_identical_to_the_recorded_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let got: Hashes = [
        ("demo".to_string(), demo(tmp.path())),
        ("bench_e2e_2500".to_string(), e2e(tmp.path())),
    ]
    .into_iter()
    .collect();
    if std::env::var_os("CELLMATRIX_RECORD_HASHES").is_some() {
        let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
        std::fs::write(fixture(), text).unwrap();
        return;
    }
    let want: Hashes = serde_json::from_slice(&std::fs::read(fixture()).unwrap()).unwrap();
    for (run, objects) in &want {
        let ours = &got[run];
        for (key, hash) in objects {
            assert_eq!(
                ours.get(key),
                Some(hash),
                "{run}: object {key} differs from the recorded output"
            );
        }
        let extra: Vec<_> = ours.keys().filter(|k| !objects.contains_key(*k)).collect();
        assert!(
            extra.is_empty(),
            "{run}: objects not in the recording: {extra:?}"
        );
    }
}
