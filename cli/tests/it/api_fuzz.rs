//! Fuzzes the HTTP API of the real `cellmatrix serve`, on a store with the shipped samples,
//! with schemathesis against `docs/openapi.yaml`, after explicit key-injection cases
//! (`tests/python/api_fuzz.py` says what each part checks). Needs the test venv's Python
//! with schemathesis (`CELLMATRIX_TEST_PYTHON`, set by scripts/test).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::support::serve;

const CELLMATRIX: &str = env!("CARGO_BIN_EXE_cellmatrix");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

fn python() -> String {
    match std::env::var("CELLMATRIX_TEST_PYTHON") {
        Ok(p) if !p.trim().is_empty() => p,
        _ => panic!(
            "CELLMATRIX_TEST_PYTHON is not set: run the tests with scripts/test, which \
             prepares the Python venv (with schemathesis)"
        ),
    }
}

/// Runs `cellmatrix --store STORE ARGS` to its end; panics with its output when it fails.
fn cellmatrix(store: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let out = Command::new(CELLMATRIX)
        .arg("--store")
        .arg(store)
        .args(args.iter().map(|a| a.as_ref()))
        .env_remove("CELLMATRIX_STORE")
        .output()
        .expect("run cellmatrix");
    assert!(
        out.status.success(),
        "cellmatrix failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_failure_and_keys_cannot_be_injected() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let samples = repo_root().join("samples");
    cellmatrix(
        &store,
        &[
            &"ingest",
            &samples.join("pbmc3k_300"),
            &"--metadata",
            &samples.join("pbmc3k_300.json"),
        ],
    );
    cellmatrix(
        &store,
        &[
            &"ingest",
            &samples.join("chung_smartseq2_40.tsv.gz"),
            &"--one-bundle-per-cell",
            &"--metadata",
            &samples.join("chung_smartseq2_40.json"),
        ],
    );

    // Cancelled and refused requests log warnings by the hundred; errors still show.
    let (mut server, base) = serve::serve(&store, &[("CELLMATRIX_LOG", "error")]).await;

    let script = repo_root().join("tests/python/api_fuzz.py");
    let started = Instant::now();
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg("--url")
        .arg(&base)
        .arg("--store")
        .arg(&store)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {} with {python}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "api_fuzz.py failed:\n{stdout}\n{stderr}"
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("ok api_fuzz:"))
        .unwrap_or_else(|| panic!("no summary from api_fuzz.py:\n{stdout}\n{stderr}"));
    eprintln!(
        "{summary} ({:.0} s in all)",
        started.elapsed().as_secs_f64()
    );

    // The server is still up: no request took it down.
    assert!(
        server.try_wait().unwrap().is_none(),
        "cellmatrix serve exited"
    );
    // Nothing written next to the store: only the canary list the script put there.
    let mut beside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(beside, ["outside.tsv", "store"], "files beside the store");
}
