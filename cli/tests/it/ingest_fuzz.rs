//! A bounded fuzz run of the ingest readers: small real inputs of each format (a 10x
//! mtx directory, plain and gzipped, cut from `samples/pbmc3k_300`; a count table as csv
//! and as tsv.gz, cut from `samples/chung_smartseq2_40.tsv.gz`; the library's Cell Ranger
//! and AnnData fixtures), mutated by byte flips, truncations, splices and size fields set
//! to huge values, and read by the library's readers.
//!
//! Every case must end in success or a one-line error. The cases run in a child process
//! (this test binary again) under a virtual-memory limit: a failed allocation aborts
//! the process, which no `catch_unwind` sees, and the parent reports the case it was
//! on. A panic anywhere, even one the HDF5 reader turns into an error, fails the run.
//! The seeds are fixed, so every run reads the same cases.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cellmatrix::ingest::{IngestOptions, read_input};

/// Set in the child's environment.
const CHILD: &str = "CELLMATRIX_INGEST_FUZZ_CHILD";
/// Another seed than the fixed one, for a longer hunt by hand.
const SEED: &str = "CELLMATRIX_INGEST_FUZZ_SEED";
/// Runs only this case (`N`, to reproduce one the run reported), or the cases from it
/// on (`N-`).
const ONLY: &str = "CELLMATRIX_INGEST_FUZZ_CASE";
/// The child's address-space limit: far above what the caps let these small inputs
/// allocate, far below what a size field read as a length would ask for.
const MEMORY_LIMIT_KIB: u64 = 3 << 20;
/// Cases per input.
const CASES_PER_INPUT: u64 = 6000;
/// A slow machine stops here instead of holding up the suite.
const TIME_GUARD: Duration = Duration::from_secs(150);

/// This test binary running only `test` (an ignored one), under the memory limit.
fn limited(test: &str) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit -v {MEMORY_LIMIT_KIB} && exec \"$@\""))
        .arg("sh")
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1");
    command
}

/// The limit holds: an allocation past it aborts the child. Without this, a machine
/// where `ulimit -v` did nothing would let the fuzz run pass on readers that abort.
#[test]
fn an_allocation_past_the_limit_aborts_the_child() {
    let out = limited("ingest_fuzz::allocate_past_the_limit")
        .output()
        .expect("start the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child allocated past the limit");
    assert!(stderr.contains("memory allocation of"), "{stderr}");
}

#[test]
#[ignore = "an_allocation_past_the_limit_aborts_the_child runs it under the memory limit"]
fn allocate_past_the_limit() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let bytes = usize::try_from((MEMORY_LIMIT_KIB << 10) * 2).unwrap();
    let v = vec![1u8; bytes];
    println!("allocated {}", std::hint::black_box(&v).len());
}

#[test]
fn mutated_inputs_end_in_success_or_a_one_line_error() {
    let out = limited("ingest_fuzz::child")
        .output()
        .expect("start the fuzz child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // libtest starts the child's output on its own "test ... " line.
    let summary: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.find("fuzz: ").map(|i| &l[i..]))
        .collect();
    for line in &summary {
        println!("{line}");
    }
    let last_case = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("case "))
        .unwrap_or("(none started)");
    let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
    assert!(
        out.status.success() && stdout.contains("fuzz: done"),
        "the fuzz child failed ({}); the case it was on: {last_case} (rerun it alone with \
         {ONLY}=<n>)\n{}\n--- stderr tail ---\n{}",
        out.status,
        stdout
            .lines()
            .filter(|l| l.starts_with("fuzz"))
            .collect::<Vec<_>>()
            .join("\n"),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

/// Panics seen in the child, wherever they were caught.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The panics seen; the hook's guard is dropped while panicking, which poisons the lock.
fn panics() -> std::sync::MutexGuard<'static, Vec<String>> {
    PANICS.lock().unwrap_or_else(|e| {
        PANICS.clear_poison();
        e.into_inner()
    })
}

#[test]
#[ignore = "the fuzz run's child: mutated_inputs_end_in_success_or_a_one_line_error starts it under a memory limit"]
fn child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let only = std::env::var(ONLY).ok();
    let (from, only): (u64, Option<u64>) = match only.as_deref().map(|v| v.strip_suffix('-')) {
        Some(Some(from)) => (from.parse().unwrap(), None),
        Some(None) => (0, Some(only.as_deref().unwrap().parse().unwrap())),
        None => (0, None),
    };
    let seed: u64 = std::env::var(SEED).map_or(0x5eed_0000, |v| v.parse().unwrap());
    std::panic::set_hook(Box::new(|info| panics().push(info.to_string())));
    let tmp = tempfile::tempdir().unwrap();
    let inputs = corpus();
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut case = 0u64;
    let mut stopped_early = false;
    'inputs: for input in &inputs {
        let (mut ok, mut refused) = (0u64, 0u64);
        let input_started = Instant::now();
        for i in 0..CASES_PER_INPUT {
            case += 1;
            if only.is_some_and(|n| n != case) || case < from {
                continue;
            }
            if started.elapsed() > TIME_GUARD {
                stopped_early = true;
                break 'inputs;
            }
            let mut rng = Rng::new(seed ^ case.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let dir = tmp.path().join(format!("c{case}"));
            std::fs::create_dir_all(&dir).unwrap();
            let (path, how) = input.write_mutated(&dir, &mut rng);
            eprintln!("case {case} {} #{i}: {how}", input.name);
            panics().clear();
            let outcome = std::panic::catch_unwind(|| read_input(&path, &IngestOptions::default()));
            let seen = std::mem::take(&mut *panics());
            let problem = match (&outcome, seen.first()) {
                (_, Some(p)) => Some(format!("panicked: {p}")),
                (Err(_), None) => Some("panicked".to_string()),
                (Ok(Ok(_)), None) => {
                    ok += 1;
                    None
                }
                (Ok(Err(e)), None) => {
                    let msg = e.to_string();
                    refused += 1;
                    (msg.contains('\n') || msg.trim().is_empty())
                        .then(|| format!("not a one-line error: {msg:?}"))
                }
            };
            if let Some(p) = problem {
                let kept = std::env::temp_dir().join(format!("cellmatrix-fuzz-case-{case}"));
                let _ = std::fs::remove_dir_all(&kept);
                let _ = std::fs::rename(&dir, &kept);
                failures.push(format!(
                    "case {case} ({} #{i}, {how}; kept in {}): {p}",
                    input.name,
                    kept.display()
                ));
            } else {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        let secs = input_started.elapsed().as_secs_f64();
        println!(
            "fuzz: {:<28} {:>5} cases in {secs:>5.1} s ({:>6.0}/s): {ok} read, {refused} refused",
            input.name,
            ok + refused,
            (ok + refused) as f64 / secs.max(1e-9)
        );
    }
    // The default hook again, so a failure below is printed.
    drop(std::panic::take_hook());
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {case} cases in {secs:.1} s ({:.0}/s) under a {} MiB address-space limit{}",
        case as f64 / secs,
        MEMORY_LIMIT_KIB >> 10,
        if stopped_early {
            "; stopped early at the time guard"
        } else {
            ""
        }
    );
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("fuzz: done");
}

/// xorshift64*: small, seeded, the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Values a size field is set to.
const HUGE: [u64; 9] = [
    u32::MAX as u64,
    1 << 31,
    1 << 32,
    1 << 40,
    1_000_000_000_000,
    1_000_000_000_000_000,
    i64::MAX as u64,
    u64::MAX,
    u64::MAX - 7,
];

/// Applies one to three mutations; returns what they were.
fn mutate(bytes: &mut Vec<u8>, rng: &mut Rng, text: bool) -> String {
    let mut how = Vec::new();
    for _ in 0..1 + rng.below(3) {
        if bytes.is_empty() {
            break;
        }
        // Most of an HDF5 file is zero padding: aim at the bytes that say something.
        let pos = |bytes: &[u8], rng: &mut Rng| {
            for _ in 0..16 {
                let i = rng.below(bytes.len());
                if bytes[i] != 0 {
                    return i;
                }
            }
            rng.below(bytes.len())
        };
        match rng.below(4) {
            0 => {
                let n = 1 + rng.below(8);
                for _ in 0..n {
                    let i = pos(bytes, rng);
                    bytes[i] = if rng.below(2) == 0 {
                        bytes[i] ^ (1 << rng.below(8))
                    } else {
                        rng.next() as u8
                    };
                }
                how.push(format!("flip {n}"));
            }
            1 => {
                let at = rng.below(bytes.len() + 1);
                bytes.truncate(at);
                how.push(format!("truncate at {at}"));
            }
            2 => {
                let from = rng.below(bytes.len());
                let n = (1 + rng.below(512)).min(bytes.len() - from);
                let piece = bytes[from..from + n].to_vec();
                let to = rng.below(bytes.len());
                if rng.below(2) == 0 {
                    bytes.splice(to..to, piece);
                    how.push(format!("insert {n} from {from} at {to}"));
                } else {
                    let end = (to + n).min(bytes.len());
                    bytes.splice(to..end, piece);
                    how.push(format!("overwrite {n} from {from} at {to}"));
                }
            }
            _ => {
                let value = HUGE[rng.below(HUGE.len())];
                if text {
                    // A run of digits (a count, an index, a size line) becomes huge.
                    let start = pos(bytes, rng);
                    let Some(s) = (start..bytes.len()).find(|&i| bytes[i].is_ascii_digit()) else {
                        continue;
                    };
                    let e = (s..bytes.len())
                        .find(|&i| !bytes[i].is_ascii_digit())
                        .unwrap_or(bytes.len());
                    let digits = if rng.below(4) == 0 {
                        "-1".to_string()
                    } else {
                        value.to_string()
                    };
                    bytes.splice(s..e, digits.into_bytes());
                    how.push(format!("number at {s} = huge"));
                } else {
                    let width = if rng.below(2) == 0 { 4 } else { 8 };
                    let at = pos(bytes, rng) / width * width;
                    let le = value.to_le_bytes();
                    let end = (at + width).min(bytes.len());
                    bytes[at..end].copy_from_slice(&le[..end - at]);
                    how.push(format!("u{} at {at} = {value}", width * 8));
                }
            }
        }
    }
    how.join(", ")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// One real input and where its mutations go.
struct Input {
    name: String,
    shape: Shape,
}

enum Shape {
    /// A 10x directory: (barcodes, features, matrix) texts; the matrix gzipped or not.
    Mtx {
        barcodes: Vec<u8>,
        features: Vec<u8>,
        matrix: Vec<u8>,
        gz: bool,
    },
    /// One file named `file`: text (gzipped when the name ends in .gz) or binary.
    File {
        file: String,
        bytes: Vec<u8>,
        text: bool,
    },
}

impl Input {
    /// Writes a mutated copy into `dir`; returns the path to read and the mutations.
    fn write_mutated(&self, dir: &Path, rng: &mut Rng) -> (PathBuf, String) {
        // A gzipped text is mutated before compression (the parser sees the damage) or
        // after (the inflater does).
        let text_or_gz = |plain: &[u8], gz: bool, rng: &mut Rng| -> (Vec<u8>, String) {
            if !gz {
                let mut b = plain.to_vec();
                let how = mutate(&mut b, rng, true);
                (b, how)
            } else if rng.below(3) < 2 {
                let mut b = plain.to_vec();
                let how = mutate(&mut b, rng, true);
                (gzip(&b), format!("{how}, gzipped"))
            } else {
                let mut b = gzip(plain);
                let how = mutate(&mut b, rng, false);
                (b, format!("gzip bytes: {how}"))
            }
        };
        match &self.shape {
            Shape::Mtx {
                barcodes,
                features,
                matrix,
                gz,
            } => {
                let d = dir.join("mtx");
                std::fs::create_dir_all(&d).unwrap();
                let (mut b, mut f) = (barcodes.clone(), features.clone());
                let (m, how) = match rng.below(10) {
                    0 => (
                        matrix.clone(),
                        format!("barcodes: {}", mutate(&mut b, rng, true)),
                    ),
                    1 => (
                        matrix.clone(),
                        format!("features: {}", mutate(&mut f, rng, true)),
                    ),
                    _ => {
                        let (m, how) = text_or_gz(matrix, *gz, rng);
                        (m, format!("matrix: {how}"))
                    }
                };
                // An unmutated matrix still goes in its own form.
                let m = if *gz && !how.starts_with("matrix") {
                    gzip(&m)
                } else {
                    m
                };
                std::fs::write(d.join("barcodes.tsv"), b).unwrap();
                std::fs::write(d.join("features.tsv"), f).unwrap();
                let name = if *gz { "matrix.mtx.gz" } else { "matrix.mtx" };
                std::fs::write(d.join(name), m).unwrap();
                (d, how)
            }
            Shape::File { file, bytes, text } => {
                let (out, how) = if *text {
                    text_or_gz(bytes, file.ends_with(".gz"), rng)
                } else {
                    let mut b = bytes.clone();
                    let how = mutate(&mut b, rng, false);
                    (b, how)
                };
                let p = dir.join(file);
                std::fs::write(&p, out).unwrap();
                (p, how)
            }
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The inputs: small cuts of the shipped samples, and the readers' HDF5 fixtures.
fn corpus() -> Vec<Input> {
    let mut inputs = Vec::new();

    // 5 cells of pbmc3k_300 and the genes among the first 3,000 they express.
    let samples = repo().join("samples/pbmc3k_300");
    let matrix = String::from_utf8(gunzip(&samples.join("matrix.mtx.gz"))).unwrap();
    let all_features: Vec<String> = String::from_utf8(gunzip(&samples.join("features.tsv.gz")))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let barcodes: Vec<String> = String::from_utf8(gunzip(&samples.join("barcodes.tsv.gz")))
        .unwrap()
        .lines()
        .take(5)
        .map(str::to_string)
        .collect();
    let mut entries = Vec::new();
    for line in matrix.lines().filter(|l| !l.starts_with('%')).skip(1) {
        let v: Vec<usize> = line
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        if v[1] <= 5 && v[0] <= 3000 {
            entries.push((v[0], v[1], v[2]));
        }
    }
    let mut genes: Vec<usize> = entries.iter().map(|e| e.0).collect();
    genes.sort_unstable();
    genes.dedup();
    let mut text = format!(
        "%%MatrixMarket matrix coordinate integer general\n%\n{} {} {}\n",
        genes.len(),
        barcodes.len(),
        entries.len()
    );
    for (g, c, v) in &entries {
        let row = genes.binary_search(g).unwrap() + 1;
        text.push_str(&format!("{row} {c} {v}\n"));
    }
    let features: String = genes
        .iter()
        .map(|&g| format!("{}\n", all_features[g - 1]))
        .collect();
    let barcodes: String = barcodes.iter().map(|b| format!("{b}\n")).collect();
    for gz in [false, true] {
        inputs.push(Input {
            name: format!("pbmc mtx{}", if gz { ".gz" } else { "" }),
            shape: Shape::Mtx {
                barcodes: barcodes.clone().into_bytes(),
                features: features.clone().into_bytes(),
                matrix: text.clone().into_bytes(),
                gz,
            },
        });
    }

    // 8 cells and the first 60 expressed genes of the Chung SmartSeq2 table.
    let table =
        String::from_utf8(gunzip(&repo().join("samples/chung_smartseq2_40.tsv.gz"))).unwrap();
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').take(9).collect();
    let mut rows = vec![header.join("\t")];
    for line in lines {
        let fields: Vec<&str> = line.split('\t').take(9).collect();
        if fields[1..].iter().any(|f| *f != "0") {
            rows.push(fields.join("\t"));
        }
        if rows.len() > 60 {
            break;
        }
    }
    let tsv = rows.join("\n") + "\n";
    inputs.push(Input {
        name: "chung csv".into(),
        shape: Shape::File {
            file: "chung.csv".into(),
            bytes: tsv.replace('\t', ",").into_bytes(),
            text: true,
        },
    });
    inputs.push(Input {
        name: "chung tsv.gz".into(),
        shape: Shape::File {
            file: "chung.tsv.gz".into(),
            bytes: tsv.into_bytes(),
            text: true,
        },
    });

    let fixtures = repo().join("shared/tests/fixtures");
    for name in [
        "tenx_v3.h5",
        "tenx_v3_vlen_multichunk.h5",
        "tenx_v2.h5",
        "tenx_v2_two_genomes.h5",
        "csr.h5ad",
        "csc.h5ad",
        "dense.h5ad",
        "legacy.h5ad",
    ] {
        inputs.push(Input {
            name: name.to_string(),
            shape: Shape::File {
                file: name.to_string(),
                bytes: gunzip(&fixtures.join(format!("{name}.gz"))),
                text: false,
            },
        });
    }
    inputs
}
