//! Synthetic bundles for benchmarks: 10x-like (thousands of sparse UMI-count cells per
//! bundle) and SmartSeq2-like (one deep read-count cell per bundle).
//!
//! Everything is a pure function of the [`SynthSpec`] and the bundle's (kind, index):
//! any bundle can be regenerated alone, the same spec always gives the same bytes, and
//! the bundle ids are derived the same way, so re-running a synth is idempotent.
//!
//! The model, per organ (each bundle is from one organ):
//! - every gene has a relative expression `w_g`, log-normal, shared by all organs
//!   except for a tenth of the genes that each organ shifts;
//! - a cell draws its density `d` from the spec's range and detects gene `g` with
//!   probability `min(1, c·w_g)`, `c` chosen so the expected count is `d·n_genes`;
//! - a detected gene's count is `1 + NB(E − 1)` (Gamma-Poisson; each gene has one of
//!   eight dispersions),
//!   `E = r·max(1, c·w_g)`, `r` a per-cell depth; so rare genes are mostly 1s and
//!   saturated (housekeeping) genes grow with their expression;
//! - the 13 mitochondrial genes are always detected and take a per-cell fraction of
//!   the counts, so `pct_mito` looks like real data.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use cellmatrix::field::Scalar;
use cellmatrix::field::column::Column;
use futures::{StreamExt, TryStreamExt};
use rand::{Rng, RngCore, SeedableRng};
use rand_distr::{Distribution, Exp1, Gamma, Poisson, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus as Xoshiro256pp;

use cellmatrix::bundle::{
    BundleMetadata, Csr, Features, Layout, SourceInfo, SourceMatrix, Values, WriteOutcome,
    write_bundle,
};
use cellmatrix::catalog::{self, CatalogEntry};
use cellmatrix::error::Error;
use cellmatrix::fqid::Fqid;
use cellmatrix::store::DynStore;

/// What a synthetic run generates.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    /// Number of 10x-like bundles.
    pub tenx_bundles: usize,
    /// Cells in each 10x-like bundle.
    pub cells_per_tenx_bundle: usize,
    /// Number of SmartSeq2-like bundles (one cell each).
    pub smartseq2_bundles: usize,
    /// Features shared by every bundle.
    pub n_genes: usize,
    /// Seed of everything.
    pub seed: u64,
    /// Range of the per-cell fraction of detected genes in 10x-like cells.
    pub tenx_density: RangeInclusive<f64>,
    /// Range of the fraction of detected genes in SmartSeq2-like cells.
    pub smartseq2_detection: RangeInclusive<f64>,
    /// When not 0, every bundle gets a `cell_type` cell field: `rare` in every cell of
    /// each `rare_every`-th bundle of a kind, one of four common types in the others (a
    /// filter on it matches 1 bundle in `rare_every`).
    pub rare_every: usize,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec {
            tenx_bundles: 2,
            cells_per_tenx_bundle: 5000,
            smartseq2_bundles: 10,
            n_genes: 20_000,
            seed: 1,
            tenx_density: 0.02..=0.10,
            smartseq2_detection: 0.20..=0.40,
            rare_every: 0,
        }
    }
}

impl SynthSpec {
    /// Refuses specs that cannot make valid bundles.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::input("synth", m));
        if self.n_genes == 0 || self.n_genes > MAX_GENES {
            return bad(format!(
                "the number of genes must be between 1 and {MAX_GENES}, not {}",
                self.n_genes
            ));
        }
        if self.tenx_bundles > 0 && self.cells_per_tenx_bundle == 0 {
            return bad("10x bundles need at least one cell each".into());
        }
        if self.cells_per_tenx_bundle > u32::MAX as usize {
            return bad(format!(
                "at most {} cells per bundle (barcodes are 32-bit)",
                u32::MAX
            ));
        }
        for (what, r) in [
            ("10x density", &self.tenx_density),
            ("SmartSeq2 detection", &self.smartseq2_detection),
        ] {
            let (lo, hi) = (*r.start(), *r.end());
            if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
                return bad(format!(
                    "the {what} range must satisfy 0 < low <= high <= 1, not {lo}..={hi}"
                ));
            }
        }
        Ok(())
    }

    /// Bundles in the run.
    pub fn total_bundles(&self) -> usize {
        self.tenx_bundles + self.smartseq2_bundles
    }
}

/// The feature ids are 11-digit numbers and a bundle's columns are u32.
const MAX_GENES: usize = 10_000_000;

/// The two kinds of synthetic bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BundleKind {
    /// Droplet-like: many sparse cells of UMI counts.
    Tenx,
    /// Plate-like: one cell of read counts.
    SmartSeq2,
}

impl BundleKind {
    /// The assay name stored in the metadata.
    pub fn assay(self) -> &'static str {
        match self {
            BundleKind::Tenx => "10x",
            BundleKind::SmartSeq2 => "smartseq2",
        }
    }

    fn tag(self) -> u64 {
        match self {
            BundleKind::Tenx => 1,
            BundleKind::SmartSeq2 => 2,
        }
    }
}

/// Bundle `bundle_index` of the 10x-like kind. Builds the gene model each call; keep a
/// [`Generator`] to make many bundles.
pub fn generate_tenx(spec: &SynthSpec, bundle_index: usize) -> SourceMatrix {
    Generator::new(spec).generate(BundleKind::Tenx, bundle_index)
}

/// Bundle `bundle_index` of the SmartSeq2-like kind. Builds the gene model each call;
/// keep a [`Generator`] to make many bundles.
pub fn generate_smartseq2(spec: &SynthSpec, bundle_index: usize) -> SourceMatrix {
    Generator::new(spec).generate(BundleKind::SmartSeq2, bundle_index)
}

/// Part of every bundle uuid's name; bump it when the generated content changes (here,
/// or through a `rand_distr` upgrade that changes its samplers), so that new bundles
/// get new ids instead of conflicting with bundles already stored.
const GENERATOR_VERSION: &str = "1";

/// Namespace of synthetic bundle uuids (distinct from ingest's).
const UUID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6365_6c6c_6d61_7472_6978_2d73_796e_7468);

/// The id of a synthetic bundle. The uuid names every parameter that shapes the
/// bundle's content, so two runs that differ only in, say, cells per bundle write
/// different bundles rather than conflicting ones.
pub fn bundle_fqid(spec: &SynthSpec, kind: BundleKind, bundle_index: usize) -> Fqid {
    let (shape, range) = match kind {
        BundleKind::Tenx => (spec.cells_per_tenx_bundle, &spec.tenx_density),
        BundleKind::SmartSeq2 => (1, &spec.smartseq2_detection),
    };
    let name = format!(
        "cellmatrix-synth/v{GENERATOR_VERSION}/seed={}/{}/{bundle_index}/genes={}/cells={shape}/density={}..={}",
        spec.seed,
        kind.assay(),
        spec.n_genes,
        range.start(),
        range.end()
    );
    let uuid = uuid::Uuid::new_v5(&UUID_NAMESPACE, name.as_bytes());
    // A fixed version per seed keeps ids stable across runs; the index in microseconds
    // orders a run's bundles.
    let base = time::macros::datetime!(2020-01-01 0:00 UTC)
        + time::Duration::seconds((spec.seed % 10_000_000) as i64);
    Fqid::new(
        uuid,
        base + time::Duration::microseconds(bundle_index as i64),
    )
}

const ORGANS: [&str; 6] = ["blood", "brain", "lung", "liver", "kidney", "pancreas"];
const DONORS: usize = 5;

/// Organ index and donor of a bundle.
fn bundle_choice(spec: &SynthSpec, kind: BundleKind, bundle_index: usize) -> (usize, usize) {
    let mut rng = stream(&[spec.seed, kind.tag(), bundle_index as u64, TAG_BUNDLE]);
    let organ = rng.random_range(0..ORGANS.len());
    let donor = rng.random_range(0..DONORS);
    (organ, donor)
}

/// The metadata of a synthetic bundle.
pub fn bundle_metadata(spec: &SynthSpec, kind: BundleKind, bundle_index: usize) -> BundleMetadata {
    let (organ, donor) = bundle_choice(spec, kind, bundle_index);
    BundleMetadata {
        project: Some("synthetic".into()),
        organ: Some(ORGANS[organ].into()),
        species: Some("Homo sapiens".into()),
        assay: Some(kind.assay().into()),
        donor: Some(format!("synthetic-donor-{}", donor + 1)),
        other: BTreeMap::from([
            ("synth_seed".to_string(), Scalar::Int(spec.seed as i64)),
            ("synth_index".to_string(), Scalar::Int(bundle_index as i64)),
        ]),
    }
}

/// Where a synthetic bundle "came from".
pub fn source_info(kind: BundleKind, bundle_index: usize) -> SourceInfo {
    SourceInfo {
        file: format!("synth-{}-{bundle_index:06}", kind.assay()),
        format: "synthetic".into(),
    }
}

// Stream tags: each use of randomness gets its own stream, so adding one never shifts another.
const TAG_GENES: u64 = 0x6765_6e65;
const TAG_BUNDLE: u64 = 0x626e_646c;
const TAG_BLOCK: u64 = 0x626c_6f63;
const TAG_BARCODES: u64 = 0x6263_6f64;

/// Rows generated from one random stream. Fixed, so the output does not depend on how
/// many threads generate it.
const ROWS_PER_BLOCK: usize = 256;

const MITO_GENES: [&str; 13] = [
    "MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3", "MT-ND3", "MT-ND4L",
    "MT-ND4", "MT-ND5", "MT-ND6", "MT-CYB",
];

/// Log-scale spread of gene expression; about 2 gives a few hundred ubiquitous genes and
/// a long tail of genes seen in a handful of cells, as in real data.
const GENE_LOG_SD: f64 = 2.0;
/// Fraction of genes whose expression an organ shifts, and by how much (log scale).
const ORGAN_SPECIFIC_FRACTION: f64 = 0.1;
const ORGAN_LOG_SD: f64 = 1.5;

/// Per-cell randomness of one kind of assay.
#[derive(Debug, Clone)]
struct Profile {
    density: (f64, f64),
    /// Median and log-sd of the counts per detection of a non-saturated gene.
    depth: (f64, f64),
    /// Median and log-sd of the mitochondrial fraction of the counts.
    mito: (f64, f64),
}

/// The expression of the nuclear genes in one organ, arranged for fast sampling.
#[derive(Debug, Clone)]
struct OrganModel {
    /// Relative expression by gene index.
    w: Vec<f64>,
    /// Gene indices by decreasing expression.
    order: Vec<u32>,
    /// `w` in `order`.
    w_sorted: Vec<f64>,
    /// `suffix[j]` = sum of `w_sorted[j..]`.
    suffix: Vec<f64>,
    /// Ranges of `order` within which expression varies by at most 2x: sampling a bin
    /// at its top probability and thinning wastes at most half the draws.
    bins: Vec<(usize, usize)>,
}

impl OrganModel {
    fn new(w: Vec<f64>) -> OrganModel {
        let mut order: Vec<u32> = (0..w.len() as u32).collect();
        order.sort_by(|&a, &b| w[b as usize].total_cmp(&w[a as usize]).then(a.cmp(&b)));
        let w_sorted: Vec<f64> = order.iter().map(|&g| w[g as usize]).collect();
        let mut suffix = vec![0.0; w.len() + 1];
        for j in (0..w.len()).rev() {
            suffix[j] = suffix[j + 1] + w_sorted[j];
        }
        let mut bins = Vec::new();
        let mut start = 0;
        for j in 1..=w_sorted.len() {
            if j == w_sorted.len() || w_sorted[j] < 0.5 * w_sorted[start] {
                bins.push((start, j));
                start = j;
            }
        }
        OrganModel {
            w,
            order,
            w_sorted,
            suffix,
            bins,
        }
    }

    /// The scale `c` at which `sum_g min(1, c·w_g) = target`, and how many genes (the
    /// first of `order`) are saturated at it.
    fn solve(&self, target: f64) -> (usize, f64) {
        let n = self.w_sorted.len();
        if n == 0 || target <= 0.0 {
            return (0, 0.0);
        }
        if target >= n as f64 {
            return (n, 1.0 / self.w_sorted[n - 1]);
        }
        // With j genes saturated, c = (target − j) / suffix[j]; the answer is the first j
        // at which gene j is not saturated by that c. The predicate holds at floor(target).
        let fits = |j: usize| (target - j as f64) * self.w_sorted[j] <= self.suffix[j];
        let (mut lo, mut hi) = (0usize, (target.floor() as usize).min(n - 1));
        while lo < hi {
            let mid = (lo + hi) / 2;
            if fits(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        (lo, (target - lo as f64) / self.suffix[lo])
    }
}

/// Generates synthetic bundles; building one costs a few milliseconds (the gene model),
/// so runs share one and call [`Generator::generate`] per bundle.
#[derive(Debug, Clone)]
pub struct Generator {
    spec: SynthSpec,
    features: Features,
    n_mito: usize,
    /// Each gene's dispersion class, an index into `classes`.
    class_of: Vec<u8>,
    classes: Vec<Dispersion>,
    /// How the mitochondrial counts split among the mitochondrial genes.
    mito_share: Vec<f64>,
    organs: Vec<OrganModel>,
    tenx: Profile,
    smartseq2: Profile,
}

impl Generator {
    /// The generator of `spec`. Out-of-range densities are clamped; [`SynthSpec::validate`]
    /// is where they are refused.
    pub fn new(spec: &SynthSpec) -> Generator {
        let n = spec.n_genes.min(MAX_GENES);
        // Real mitochondrial genes are a tiny fraction of a gene list; keep it that way
        // for small test lists too.
        let n_mito = MITO_GENES.len().min(n / 8);
        let n_nuc = n - n_mito;
        let mut rng = stream(&[spec.seed, TAG_GENES]);

        let ids = (0..n).map(|i| format!("ENSGSYN{:011}", i + 1)).collect();
        // Mitochondrial genes come last, as chrM does in the usual references; it also
        // lets each row append them after its sorted nuclear genes.
        let names = (0..n)
            .map(|i| match i.checked_sub(n_nuc) {
                Some(k) => MITO_GENES[k].to_string(),
                None => format!("GENE{}", i + 1),
            })
            .collect();

        let classes: Vec<Dispersion> = SHAPE_CLASSES
            .iter()
            .chain([&MITO_SHAPE])
            .map(|&k| Dispersion::new(k))
            .collect();
        let class_of = (0..n)
            .map(|g| {
                if g >= n_nuc {
                    SHAPE_CLASSES.len() as u8
                } else {
                    rng.random_range(0..SHAPE_CLASSES.len() as u8)
                }
            })
            .collect();
        let mut mito_share: Vec<f64> = (0..n_mito)
            .map(|_| log_normal(&mut rng, 1.0, 0.7))
            .collect();
        let total: f64 = mito_share.iter().sum();
        mito_share.iter_mut().for_each(|s| *s /= total);

        let base: Vec<f64> = (0..n_nuc).map(|_| normal(&mut rng) * GENE_LOG_SD).collect();
        let top = base.iter().copied().fold(0.0, f64::max);
        let organs = (0..ORGANS.len())
            .map(|_| {
                let w = base
                    .iter()
                    .map(|&b| {
                        let shift = if rng.random::<f64>() < ORGAN_SPECIFIC_FRACTION {
                            normal(&mut rng) * ORGAN_LOG_SD
                        } else {
                            0.0
                        };
                        // An organ may raise a gene to the top, not past it: one gene
                        // taking a third of a cell's counts looks like an artefact.
                        (b + shift).min(top).exp()
                    })
                    .collect();
                OrganModel::new(w)
            })
            .collect();

        Generator {
            spec: spec.clone(),
            features: Features { ids, names },
            n_mito,
            class_of,
            classes,
            mito_share,
            organs,
            tenx: Profile {
                density: sane_range(&spec.tenx_density),
                // Most UMI counts of a non-saturated gene are 1, a few 2 or 3.
                depth: (1.6, 0.25),
                mito: (0.04, 0.7),
            },
            smartseq2: Profile {
                density: sane_range(&spec.smartseq2_detection),
                // Full-length reads: a detected gene has tens to thousands of reads.
                depth: (30.0, 0.4),
                mito: (0.03, 0.5),
            },
        }
    }

    /// The features every bundle has.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// Bundle `bundle_index` of `kind`, using every core for large bundles.
    pub fn generate(&self, kind: BundleKind, bundle_index: usize) -> SourceMatrix {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.generate_with(kind, bundle_index, workers)
    }

    fn generate_with(&self, kind: BundleKind, bundle_index: usize, workers: usize) -> SourceMatrix {
        let (organ, _) = bundle_choice(&self.spec, kind, bundle_index);
        let (n_cells, profile) = match kind {
            BundleKind::Tenx => (self.spec.cells_per_tenx_bundle, &self.tenx),
            BundleKind::SmartSeq2 => (1, &self.smartseq2),
        };
        let cells = match kind {
            BundleKind::Tenx => {
                let key = stream(&[
                    self.spec.seed,
                    kind.tag(),
                    bundle_index as u64,
                    TAG_BARCODES,
                ])
                .next_u32();
                (0..n_cells).map(|i| barcode(i as u32, key)).collect()
            }
            BundleKind::SmartSeq2 => vec![format!("SS2_{:06}", bundle_index + 1)],
        };

        let n_blocks = n_cells.div_ceil(ROWS_PER_BLOCK);
        let block = |b: usize| {
            let rows = ROWS_PER_BLOCK.min(n_cells - b * ROWS_PER_BLOCK);
            let mut rng = stream(&[
                self.spec.seed,
                kind.tag(),
                bundle_index as u64,
                TAG_BLOCK,
                b as u64,
            ]);
            self.block(&self.organs[organ], profile, rows, &mut rng)
        };
        let workers = workers.clamp(1, n_blocks.max(1));
        let blocks: Vec<Block> = if workers == 1 {
            (0..n_blocks).map(block).collect()
        } else {
            let next = AtomicUsize::new(0);
            let mut done: Vec<(usize, Block)> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..workers)
                    .map(|_| {
                        s.spawn(|| {
                            let mut mine = Vec::new();
                            loop {
                                let b = next.fetch_add(1, Ordering::Relaxed);
                                if b >= n_blocks {
                                    return mine;
                                }
                                mine.push((b, block(b)));
                            }
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            });
            done.sort_unstable_by_key(|(b, _)| *b);
            done.into_iter().map(|(_, blk)| blk).collect()
        };

        let nnz: usize = blocks.iter().map(|b| b.indices.len()).sum();
        let mut indptr = Vec::with_capacity(n_cells + 1);
        indptr.push(0u64);
        let mut indices = Vec::with_capacity(nnz);
        let mut values = Vec::with_capacity(nnz);
        for blk in blocks {
            let base = indices.len() as u64;
            indptr.extend(blk.row_ends.iter().map(|&e| base + e));
            indices.extend_from_slice(&blk.indices);
            values.extend_from_slice(&blk.values);
        }
        let obs = match self.spec.rare_every {
            0 => Vec::new(),
            every => {
                let common = ["T cell", "B cell", "NK cell", "monocyte"];
                let types: Vec<Option<&str>> = (0..n_cells)
                    .map(|c| {
                        Some(if bundle_index.is_multiple_of(every) {
                            "rare"
                        } else {
                            common[c % 4]
                        })
                    })
                    .collect();
                vec![("cell_type".to_string(), Column::from_strings(&types))]
            }
        };
        SourceMatrix {
            obs,
            cells,
            features: self.features.clone(),
            matrix: Csr {
                n_rows: n_cells,
                n_cols: self.features.ids.len(),
                indptr,
                indices,
                values: Values::U32(values),
            },
        }
    }

    fn block(&self, organ: &OrganModel, p: &Profile, rows: usize, rng: &mut Xoshiro256pp) -> Block {
        let n = self.features.ids.len();
        let n_nuc = n - self.n_mito;
        // Capped: a huge, dense spec grows the vectors instead of reserving gigabytes.
        let expected = (rows as f64 * (p.density.1 * n as f64 + 1.0)).min(4e6);
        let mut out = Block {
            row_ends: Vec::with_capacity(rows),
            indices: Vec::with_capacity(expected as usize),
            values: Vec::with_capacity(expected as usize),
        };
        // Detected genes as a bitmap: setting bits in any order and reading them back in
        // column order is far cheaper than sorting each row.
        let mut detected = vec![0u64; n_nuc.div_ceil(64)];
        let mut tables: Vec<NbTable> = self.classes.iter().map(|d| NbTable::new(d.shape)).collect();
        for _ in 0..rows {
            let density = rng.random_range(p.density.0..=p.density.1);
            let depth = log_normal(rng, p.depth.0, p.depth.1).max(1.0);
            let mito = log_normal(rng, p.mito.0, p.mito.1).clamp(0.002, 0.6);
            let target = (density * n as f64 - self.n_mito as f64).clamp(0.0, n_nuc as f64);
            let (saturated, c) = organ.solve(target);

            detected.fill(0);
            let mut set = |g: u32| detected[g as usize / 64] |= 1 << (g % 64);
            organ.order[..saturated].iter().for_each(|&g| set(g));
            for &(a, b) in &organ.bins {
                if b <= saturated {
                    continue;
                }
                let start = a.max(saturated);
                let top = (c * organ.w_sorted[start]).min(1.0);
                if top <= 0.0 {
                    continue;
                }
                let keep = |rng: &mut Xoshiro256pp, pos: usize| {
                    let p = c * organ.w_sorted[pos];
                    p >= top || rng.random::<f64>() * top < p
                };
                if top > 0.25 {
                    // Likely draws: a coin per gene costs less than drawing every gap.
                    for pos in start..b {
                        if rng.random::<f64>() < top && keep(rng, pos) {
                            set(organ.order[pos]);
                        }
                    }
                } else {
                    // Unlikely draws: jump straight to the next candidate (geometric gaps).
                    let rate = 1.0 / -(-top).ln_1p();
                    let mut pos = start;
                    loop {
                        let gap: f64 = rng.sample(Exp1);
                        pos = pos.saturating_add((gap * rate) as usize);
                        if pos >= b {
                            break;
                        }
                        if keep(rng, pos) {
                            set(organ.order[pos]);
                        }
                        pos += 1;
                    }
                }
            }

            // Genes below saturation all have mean `depth` here, so their counts come
            // from one table per dispersion class, built once per row.
            tables.iter_mut().for_each(|t| t.build(depth - 1.0));
            let mut nuclear_total = 0.0;
            for (word_index, &word) in detected.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let g = word_index * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let class = self.class_of[g] as usize;
                    let scaled = c * organ.w[g];
                    let v = 1 + if scaled <= 1.0 {
                        tables[class].sample(rng.random())
                    } else {
                        self.classes[class].sample(rng, depth * scaled - 1.0)
                    };
                    nuclear_total += f64::from(v);
                    out.indices.push(g as u32);
                    out.values.push(v);
                }
            }
            let mito_total = nuclear_total * mito / (1.0 - mito);
            for k in 0..self.n_mito {
                let g = n_nuc + k;
                let mean = mito_total * self.mito_share[k];
                let v = 1 + self.classes[self.class_of[g] as usize].sample(rng, mean - 1.0);
                out.indices.push(g as u32);
                out.values.push(v);
            }
            out.row_ends.push(out.indices.len() as u64);
        }
        out
    }
}

/// Spread of the per-gene dispersion: the Gamma shapes (1/overdispersion) at the
/// eighths of LogNormal(median 2.5, log-sd 0.6). A handful of classes instead of a
/// shape per gene lets each row share one count table per class.
const SHAPE_CLASSES: [f64; 8] = [0.998, 1.468, 1.870, 2.267, 2.757, 3.342, 4.256, 6.262];
/// Mitochondrial transcripts are abundant and comparatively regular.
const MITO_SHAPE: f64 = 10.0;

/// A negative binomial of shape `k`: Gamma(k) mixing, Poisson counts.
#[derive(Debug, Clone)]
struct Dispersion {
    shape: f64,
    inv_shape: f64,
    gamma: Gamma<f64>,
}

impl Dispersion {
    fn new(shape: f64) -> Dispersion {
        Dispersion {
            shape,
            inv_shape: 1.0 / shape,
            gamma: Gamma::new(shape, 1.0).expect("the shapes are positive constants"),
        }
    }

    fn sample(&self, rng: &mut Xoshiro256pp, mean: f64) -> u32 {
        if mean.is_nan() || mean <= 1e-9 {
            return 0;
        }
        let lambda = self.gamma.sample(rng) * mean * self.inv_shape;
        poisson(rng, lambda)
    }
}

/// The cumulative distribution of one negative binomial, for sampling by inversion:
/// the same law as a Gamma-Poisson draw, for one uniform and a short scan instead of a
/// Gamma and a Poisson draw.
#[derive(Debug, Clone)]
struct NbTable {
    shape: f64,
    /// `mean / (shape + mean)`, the ratio between successive probabilities.
    q: f64,
    cdf: Vec<f64>,
    last_pmf: f64,
}

impl NbTable {
    /// The table stops where the rest of the mass is negligible; [`NbTable::sample`]
    /// walks on from there in the rare draws that land beyond it.
    const MAX_LEN: usize = 256;
    const TAIL: f64 = 1e-12;

    fn new(shape: f64) -> NbTable {
        NbTable {
            shape,
            q: 0.0,
            cdf: Vec::with_capacity(Self::MAX_LEN),
            last_pmf: 1.0,
        }
    }

    fn build(&mut self, mean: f64) {
        let mean = if mean > 0.0 { mean } else { 0.0 };
        self.q = mean / (self.shape + mean);
        let mut pmf = (1.0 - self.q).powf(self.shape);
        let mut cdf = pmf;
        self.cdf.clear();
        self.cdf.push(cdf);
        while cdf < 1.0 - Self::TAIL && self.cdf.len() < Self::MAX_LEN && pmf > 0.0 {
            let x = (self.cdf.len() - 1) as f64;
            pmf *= (x + self.shape) / (x + 1.0) * self.q;
            cdf += pmf;
            self.cdf.push(cdf);
        }
        self.last_pmf = pmf;
    }

    fn sample(&self, u: f64) -> u32 {
        if let Some(x) = self.cdf.iter().position(|&c| u < c) {
            return x as u32;
        }
        let (mut x, mut pmf) = (self.cdf.len() - 1, self.last_pmf);
        let mut cdf = self.cdf[x];
        // Rounding can leave the sum a hair below 1; stop once the terms vanish.
        while u >= cdf && pmf > 0.0 {
            pmf *= (x as f64 + self.shape) / (x as f64 + 1.0) * self.q;
            x += 1;
            cdf += pmf;
        }
        x.min(u32::MAX as usize - 1) as u32
    }
}

/// A Poisson draw. Small means, nearly every draw of 10x-like data, count unit-rate
/// arrivals before `lambda`: exact, and only exponential draws (a table lookup mostly)
/// where `Poisson::new` would compute an `exp` every time.
fn poisson(rng: &mut Xoshiro256pp, lambda: f64) -> u32 {
    if lambda.is_nan() || lambda <= 0.0 {
        return 0;
    }
    if lambda < 12.0 {
        let mut k = 0;
        let mut t: f64 = rng.sample(Exp1);
        while t < lambda {
            k += 1;
            t += rng.sample::<f64, _>(Exp1);
        }
        return k;
    }
    match Poisson::new(lambda) {
        // Keep the +1 of the callers from overflowing.
        Ok(p) => (p.sample(rng) as u32).min(u32::MAX - 1),
        Err(_) => u32::MAX - 1,
    }
}

#[derive(Debug)]
struct Block {
    row_ends: Vec<u64>,
    indices: Vec<u32>,
    values: Vec<u32>,
}

fn sane_range(r: &RangeInclusive<f64>) -> (f64, f64) {
    let (lo, hi) = (*r.start(), *r.end());
    let lo = if lo.is_finite() {
        lo.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let hi = if hi.is_finite() {
        hi.clamp(lo, 1.0)
    } else {
        lo
    };
    (lo, hi)
}

fn normal(rng: &mut impl Rng) -> f64 {
    rng.sample(StandardNormal)
}

fn log_normal(rng: &mut impl Rng, median: f64, log_sd: f64) -> f64 {
    median * (normal(rng) * log_sd).exp()
}

/// A 10x-style barcode, 16 bases and `-1`. The mixing is a bijection on 32 bits, so the
/// barcodes of distinct cells differ, while looking random rather than counting up.
fn barcode(i: u32, key: u32) -> String {
    let mut x = i ^ key;
    x = x.wrapping_mul(0x9E37_79B1);
    x ^= x >> 15;
    x = x.wrapping_mul(0x85EB_CA77);
    x ^= x >> 13;
    x = x.wrapping_add(key.rotate_left(16));
    let mut s = String::with_capacity(18);
    for k in (0..16).rev() {
        s.push(b"ACGT"[(x >> (2 * k)) as usize & 3] as char);
    }
    s.push_str("-1");
    s
}

/// The random stream named by `parts`. xoshiro256++ from `rand_xoshiro`, whose output
/// for a seed is fixed by the algorithm (unlike `StdRng`/`SmallRng`, which may change
/// between rand releases): synthetic bundles must stay what their ids say they are.
fn stream(parts: &[u64]) -> Xoshiro256pp {
    let key = parts.iter().fold(0x6365_6c6c_6d61_7472u64, |h, &p| {
        // splitmix64 finaliser: mixes each part into the key.
        let mut z = (h ^ p).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    });
    Xoshiro256pp::seed_from_u64(key)
}

/// How to write a synthetic run.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// Chunking of the written arrays.
    pub layout: Layout,
    /// 10x-like bundles generated or written at once; memory holds about this many.
    pub concurrency: usize,
    /// SmartSeq2-like bundles written at once. They are tiny, and writing one is a
    /// string of small requests, so many in flight hide the store's latency.
    pub smartseq2_concurrency: usize,
    /// Show a progress bar.
    pub progress: bool,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            layout: Layout::default(),
            concurrency: 3,
            smartseq2_concurrency: 16,
            progress: false,
        }
    }
}

/// What a synthetic run did.
#[derive(Debug, Clone)]
pub struct SynthReport {
    /// Each bundle, and whether it was written or already there.
    pub bundles: Vec<WriteOutcome>,
    /// Cells in all bundles.
    pub cells: u64,
    /// Stored nonzeros in all bundles.
    pub nnz: u64,
    /// Seconds spent generating, summed over bundles (they overlap with each other and
    /// with writing).
    pub generate_seconds: f64,
    /// Wall-clock seconds in total.
    pub total_seconds: f64,
}

/// Generates the bundles of `spec`, writes them to `store` and records them in the
/// catalog in one update. Re-running the same spec writes nothing new.
pub async fn synth(
    store: &DynStore,
    spec: &SynthSpec,
    opts: &SynthOptions,
) -> Result<SynthReport, Error> {
    spec.validate()?;
    let started = Instant::now();
    let generator = Arc::new(
        run_blocking({
            let spec = spec.clone();
            move || Generator::new(&spec)
        })
        .await?,
    );
    let feature_set = cellmatrix::bundle::write_feature_set(store, generator.features()).await?;
    let run = Run {
        store,
        spec,
        opts,
        feature_set,
        generator,
        bar: cellmatrix::progress::bar(opts.progress, spec.total_bundles() as u64, "bundles"),
        generate_nanos: AtomicU64::new(0),
    };
    let mut outcomes = run
        .write(BundleKind::Tenx, spec.tenx_bundles, opts.concurrency)
        .await?;
    outcomes.extend(
        run.write(
            BundleKind::SmartSeq2,
            spec.smartseq2_bundles,
            opts.smartseq2_concurrency,
        )
        .await?,
    );
    run.bar.finish_and_clear();

    let entries: Vec<(Fqid, CatalogEntry)> = outcomes
        .iter()
        .map(|o| (o.manifest().fqid.clone(), CatalogEntry::from(o.manifest())))
        .collect();
    if !entries.is_empty() {
        catalog::upsert(store, entries).await?;
    }
    Ok(SynthReport {
        cells: outcomes.iter().map(|o| o.manifest().n_cells).sum(),
        nnz: outcomes.iter().map(|o| o.manifest().nnz).sum(),
        bundles: outcomes,
        generate_seconds: run.generate_nanos.into_inner() as f64 * 1e-9,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

/// What the bundles of one run share.
struct Run<'a> {
    store: &'a DynStore,
    spec: &'a SynthSpec,
    opts: &'a SynthOptions,
    /// Every bundle of a run has the generator's gene list, stored once.
    feature_set: String,
    generator: Arc<Generator>,
    bar: indicatif::ProgressBar,
    generate_nanos: AtomicU64,
}

impl Run<'_> {
    /// Generates and writes bundles `0..count` of `kind`, `concurrency` at a time.
    async fn write(
        &self,
        kind: BundleKind,
        count: usize,
        concurrency: usize,
    ) -> Result<Vec<WriteOutcome>, Error> {
        futures::stream::iter(0..count)
            .map(|i| self.write_one(kind, i))
            .buffered(concurrency.max(1))
            .try_collect()
            .await
    }

    async fn write_one(&self, kind: BundleKind, i: usize) -> Result<WriteOutcome, Error> {
        let generator = self.generator.clone();
        let (src, took) = run_blocking(move || {
            let t = Instant::now();
            let src = generator.generate(kind, i);
            (src, t.elapsed())
        })
        .await?;
        self.generate_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        let fqid = bundle_fqid(self.spec, kind, i);
        let out = write_bundle(
            self.store,
            &fqid,
            &src,
            &self.feature_set,
            &bundle_metadata(self.spec, kind, i),
            source_info(kind, i),
            self.opts.layout,
        )
        .await;
        if out.is_err() {
            cellmatrix::bundle::writer::remove_partial(self.store, &fqid).await;
        }
        self.bar.inc(1);
        out
    }
}

/// Runs CPU-bound work off the async workers; a panic in it stays a panic.
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::Io {
            path: "synthetic bundle".into(),
            source: std::io::Error::other(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellmatrix::bundle::qc;

    fn spec(cells: usize, genes: usize) -> SynthSpec {
        SynthSpec {
            tenx_bundles: 2,
            cells_per_tenx_bundle: cells,
            smartseq2_bundles: 3,
            n_genes: genes,
            ..SynthSpec::default()
        }
    }

    fn values(m: &SourceMatrix) -> &[u32] {
        match &m.matrix.values {
            Values::U32(v) => v,
            other => panic!("expected integer counts, got {:?}", other.value_type()),
        }
    }

    fn assert_canonical(m: &SourceMatrix) {
        m.validate("synth").unwrap();
        let c = &m.matrix;
        assert_eq!(c.indptr.len(), c.n_rows + 1);
        assert_eq!(c.indptr[0], 0);
        assert_eq!(*c.indptr.last().unwrap() as usize, c.nnz());
        for r in 0..c.n_rows {
            let cols = &c.indices[c.row_range(r)];
            assert!(cols.windows(2).all(|w| w[0] < w[1]), "row {r} not sorted");
            assert!(cols.iter().all(|&j| (j as usize) < c.n_cols));
        }
        assert!(values(m).iter().all(|&v| v > 0), "explicit zeros");
    }

    #[test]
    fn deterministic_per_seed_kind_and_index() {
        let s = spec(600, 3000);
        let g = Generator::new(&s);
        let a = g.generate(BundleKind::Tenx, 0);
        assert_eq!(a, generate_tenx(&s, 0));
        // The thread count does not change the result.
        assert_eq!(a, g.generate_with(BundleKind::Tenx, 0, 1));
        assert_eq!(a, g.generate_with(BundleKind::Tenx, 0, 3));
        assert_ne!(a.matrix, g.generate(BundleKind::Tenx, 1).matrix);
        let other_seed = SynthSpec {
            seed: 2,
            ..s.clone()
        };
        assert_ne!(a.matrix, generate_tenx(&other_seed, 0).matrix);

        let b = generate_smartseq2(&s, 4);
        assert_eq!(b, generate_smartseq2(&s, 4));
        assert_ne!(b.matrix, generate_smartseq2(&s, 5).matrix);
        assert_eq!(
            bundle_metadata(&s, BundleKind::Tenx, 1),
            bundle_metadata(&s, BundleKind::Tenx, 1)
        );
    }

    #[test]
    fn fqids_are_stable_valid_and_distinct() {
        let s = spec(100, 500);
        let a = bundle_fqid(&s, BundleKind::Tenx, 0);
        assert_eq!(a, bundle_fqid(&s, BundleKind::Tenx, 0));
        assert_eq!(Fqid::parse(a.as_str()).unwrap(), a);
        assert_eq!(a.version(), "2020-01-01T000001.000000Z");
        assert_eq!(
            bundle_fqid(&s, BundleKind::Tenx, 7).version(),
            "2020-01-01T000001.000007Z"
        );
        let mut all: Vec<Fqid> = (0..50)
            .flat_map(|i| {
                [
                    bundle_fqid(&s, BundleKind::Tenx, i),
                    bundle_fqid(&s, BundleKind::SmartSeq2, i),
                ]
            })
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 100);
        let bigger = SynthSpec {
            cells_per_tenx_bundle: 200,
            ..s.clone()
        };
        assert_ne!(a, bundle_fqid(&bigger, BundleKind::Tenx, 0));
        assert_ne!(
            a,
            bundle_fqid(&SynthSpec { seed: 9, ..s }, BundleKind::Tenx, 0)
        );
    }

    #[test]
    fn tenx_shapes_density_and_counts() {
        let s = spec(2000, 5000);
        let m = generate_tenx(&s, 0);
        assert_canonical(&m);
        assert_eq!(m.cells.len(), 2000);
        assert_eq!(m.matrix.n_cols, 5000);
        assert_eq!(m.features.ids[0], "ENSGSYN00000000001");
        assert_eq!(m.features.names[0], "GENE1");

        let c = &m.matrix;
        let density = c.nnz() as f64 / (c.n_rows * c.n_cols) as f64;
        assert!((0.05..=0.07).contains(&density), "mean density {density}");
        let per_cell: Vec<f64> = (0..c.n_rows)
            .map(|r| c.row_range(r).len() as f64 / c.n_cols as f64)
            .collect();
        let inside = per_cell
            .iter()
            .filter(|d| (0.015..=0.11).contains(*d))
            .count();
        assert!(
            inside as f64 >= 0.99 * c.n_rows as f64,
            "{inside} cells within 2-10%"
        );
        let spread = per_cell.iter().cloned().fold(f64::NAN, f64::max)
            - per_cell.iter().cloned().fold(f64::NAN, f64::min);
        assert!(spread > 0.06, "per-cell densities barely vary: {spread}");

        // Overdispersed UMI counts: mostly ones, a long tail.
        let v = values(&m);
        let ones = v.iter().filter(|&&x| x == 1).count() as f64 / v.len() as f64;
        assert!((0.4..0.9).contains(&ones), "fraction of ones {ones}");
        let max = *v.iter().max().unwrap();
        assert!((50..100_000).contains(&max), "max count {max}");
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / v.len() as f64;
        assert!(var > 2.0 * mean, "mean {mean} variance {var}");

        // Library sizes vary between cells.
        let q = qc::compute(c, &m.features);
        let (lo, hi) = q
            .total_counts
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &t| (lo.min(t), hi.max(t)));
        assert!(hi > 4.0 * lo, "library sizes {lo}..{hi}");
    }

    #[test]
    fn mitochondrial_genes_and_pct_mito() {
        let s = spec(1000, 4000);
        let m = generate_tenx(&s, 1);
        let mito: Vec<&String> = m.features.names.iter().filter(|n| qc::is_mito(n)).collect();
        assert_eq!(mito.len(), 13);
        let q = qc::compute(&m.matrix, &m.features);
        let mean = q.pct_mito.iter().sum::<f64>() / q.pct_mito.len() as f64;
        assert!((2.0..10.0).contains(&mean), "mean pct_mito {mean}");
        assert!(q.pct_mito.iter().all(|&p| p > 0.0 && p < 70.0));
        // A small gene list still names its mitochondrial genes.
        assert!(
            generate_tenx(&spec(10, 100), 0)
                .features
                .names
                .iter()
                .any(|n| n == "MT-ND1")
        );
    }

    #[test]
    fn barcodes_look_real_and_are_unique() {
        let m = generate_tenx(&spec(20_000, 50), 0);
        let mut seen = std::collections::HashSet::new();
        for b in &m.cells {
            assert_eq!(b.len(), 18, "{b}");
            assert!(b[..16].bytes().all(|c| b"ACGT".contains(&c)), "{b}");
            assert!(b.ends_with("-1"));
            assert!(seen.insert(b.clone()), "duplicate {b}");
        }
        let other = generate_tenx(&spec(20_000, 50), 1);
        assert_ne!(m.cells[..10], other.cells[..10]);
    }

    #[test]
    fn smartseq2_cells() {
        let s = spec(10, 20_000);
        let g = Generator::new(&s);
        let mut highest = 0;
        for i in 0..8 {
            let m = g.generate(BundleKind::SmartSeq2, i);
            assert_canonical(&m);
            assert_eq!(m.cells, vec![format!("SS2_{:06}", i + 1)]);
            assert_eq!(m.matrix.n_rows, 1);
            let detected = m.matrix.nnz() as f64 / m.matrix.n_cols as f64;
            assert!((0.18..=0.42).contains(&detected), "detected {detected}");
            // Read counts: deep, with a few genes in the thousands or tens of thousands.
            let v = values(&m);
            let max = *v.iter().max().unwrap();
            assert!((1_000..1_000_000).contains(&max), "max read count {max}");
            highest = highest.max(max);
            let total: u64 = v.iter().map(|&x| u64::from(x)).sum();
            assert!((50_000..10_000_000).contains(&total), "{total} reads");
        }
        assert!(highest >= 10_000, "highest read count {highest}");
    }

    #[test]
    fn degenerate_specs() {
        assert!(spec(10, 0).validate().is_err());
        assert!(
            SynthSpec {
                tenx_density: 0.2..=0.1,
                ..spec(10, 10)
            }
            .validate()
            .is_err()
        );
        assert!(
            SynthSpec {
                cells_per_tenx_bundle: 0,
                ..spec(10, 10)
            }
            .validate()
            .is_err()
        );
        spec(10, 10).validate().unwrap();
        // Everything detected still gives a canonical matrix.
        let full = SynthSpec {
            tenx_density: 1.0..=1.0,
            ..spec(300, 40)
        };
        let m = generate_tenx(&full, 0);
        assert_canonical(&m);
        assert_eq!(m.matrix.nnz(), 300 * 40);
        let one = generate_tenx(&spec(1, 1), 0);
        assert_canonical(&one);
        // Specs that validate() refuses still generate something well-formed.
        let none = generate_tenx(&spec(5, 0), 0);
        assert_eq!(
            (none.matrix.n_rows, none.matrix.n_cols, none.matrix.nnz()),
            (5, 0, 0)
        );
        assert_eq!(generate_tenx(&spec(0, 10), 0).matrix.n_rows, 0);
    }

    #[test]
    fn solve_hits_the_target() {
        let g = Generator::new(&spec(1, 3000));
        let organ = &g.organs[0];
        for target in [0.5, 10.0, 150.0, 1200.0, 2900.0] {
            let (j, c) = organ.solve(target);
            let sum: f64 = organ.w.iter().map(|&w| (c * w).min(1.0)).sum();
            assert!(
                (sum - target).abs() < 1e-6 * target.max(1.0),
                "{target}: {sum}"
            );
            assert_eq!(organ.w_sorted.iter().filter(|&&w| c * w >= 1.0).count(), j);
        }
    }

    fn mean_var(xs: impl Iterator<Item = u32>) -> (f64, f64) {
        let xs: Vec<f64> = xs.map(f64::from).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        (mean, var)
    }

    #[test]
    fn count_draws_follow_their_laws() {
        let mut rng = stream(&[42]);
        for lambda in [0.3, 4.0, 80.0] {
            let (m, v) = mean_var((0..200_000).map(|_| poisson(&mut rng, lambda)));
            assert!(
                (m / lambda - 1.0).abs() < 0.02,
                "Poisson({lambda}) mean {m}"
            );
            assert!(
                (v / lambda - 1.0).abs() < 0.05,
                "Poisson({lambda}) variance {v}"
            );
        }
        // The table and the Gamma-Poisson draw are the same negative binomial.
        for (shape, mean) in [
            (SHAPE_CLASSES[0], 0.6),
            (SHAPE_CLASSES[5], 2.0),
            (1.0, 40.0),
        ] {
            let nb_var = mean + mean * mean / shape;
            let mut table = NbTable::new(shape);
            table.build(mean);
            let by_table = mean_var((0..200_000).map(|_| table.sample(rng.random())));
            let d = Dispersion::new(shape);
            let by_mixture = mean_var((0..200_000).map(|_| d.sample(&mut rng, mean)));
            for (how, (m, v)) in [("table", by_table), ("mixture", by_mixture)] {
                assert!(
                    (m / mean - 1.0).abs() < 0.03,
                    "{how} NB({shape}, {mean}) mean {m}"
                );
                assert!(
                    (v / nb_var - 1.0).abs() < 0.08,
                    "{how} NB({shape}, {mean}) var {v}"
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_bundles_and_catalog_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let store = cellmatrix::store::open(dir.path().to_str().unwrap())
            .await
            .unwrap();
        let s = SynthSpec {
            tenx_bundles: 2,
            cells_per_tenx_bundle: 300,
            smartseq2_bundles: 3,
            n_genes: 800,
            ..SynthSpec::default()
        };
        let opts = SynthOptions::default();
        let first = synth(&store, &s, &opts).await.unwrap();
        assert_eq!(first.bundles.len(), 5);
        assert!(
            first
                .bundles
                .iter()
                .all(|b| matches!(b, WriteOutcome::Written(_)))
        );
        assert_eq!(first.cells, 603);
        let cat = catalog::read(&store).await.unwrap();
        assert_eq!(cat.bundles.len(), 5);
        let assays: Vec<&str> = cat
            .bundles
            .values()
            .filter_map(|e| e.metadata.assay.as_deref())
            .collect();
        assert_eq!(assays.iter().filter(|a| **a == "10x").count(), 2);
        assert!(
            cat.bundles
                .values()
                .all(|e| e.metadata.project.as_deref() == Some("synthetic"))
        );

        let again = synth(&store, &s, &opts).await.unwrap();
        assert!(
            again
                .bundles
                .iter()
                .all(|b| matches!(b, WriteOutcome::AlreadyPresent(_)))
        );
        assert_eq!(again.nnz, first.nnz);
        assert_eq!(catalog::read(&store).await.unwrap().bundles.len(), 5);
    }
}
