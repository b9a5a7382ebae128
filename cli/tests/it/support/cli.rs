//! The `cellmatrix` command as the tests run it, and the sample data shipped in the repo.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repo's `samples/`.
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .join("samples")
}

/// Runs `cellmatrix ARGS` to its end, without the environment's store or URL; its
/// stdout, or a panic with its output.
pub fn cellmatrix(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cellmatrix"))
        .args(args)
        .env_remove("CELLMATRIX_STORE")
        .env_remove("CELLMATRIX_URL")
        .output()
        .expect("run cellmatrix");
    assert!(
        out.status.success(),
        "cellmatrix {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
