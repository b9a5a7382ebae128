#!/usr/bin/env python3
"""Independent reference for a matrix request: recomputes from the sources the matrix
the service should return for a request and compares it with the service's output.

Usage: reference.py SPEC.json | reference.py --self-test, where SPEC is
  {"output": PATH, "format": "zarr" (default) | "h5ad" | "loom" | "mtx" | "csv",
   "bundles": [{"fqid", "source", "format", "orientation"?, "split_index"?, "metadata"?}],
   "filter": tree or null, "fields": [...] or null, "genes": [...] or null}
and PATH, per format (N cells, G genes; obs columns are the fields' names after the dot):
  zarr  an AnnData Zarr group; X CSR; obs index = cell ids, var index = gene ids,
        var["feature_name"] = gene names.                   Read with anndata.read_zarr.
  h5ad  a file matrix.h5ad with the same layout, X a CSR matrix (not dense).
                                Read with anndata.read_h5ad and scanpy.read_h5ad (same).
  loom  a file matrix.loom (Loom 3.0.0): /matrix G x N of X's dtype; row attrs Accession
        (gene ids), Gene (names); col attrs CellID (cell ids) and one per field.
                                                     Read with loompy.connect(PATH, "r").
  mtx   a file filtered_feature_bc_matrix.tar.gz holding filtered_feature_bc_matrix/
        {matrix.mtx.gz (MatrixMarket coordinate general, G x N, integer when X is uint32,
        else real), features.tsv.gz (id, name, "Gene Expression"), barcodes.tsv.gz
        (cell ids), obs.tsv.gz (header "barcode" then the fields; row = cell id, values)};
        a text field holding the delimiter, a quote or a line break is quoted as in RFC
        4180 (in the TSVs too). Read with scipy.io.mmread + pandas, scanpy.read_10x_mtx and,
        when R and Seurat are there, Seurat::Read10X (tests/R/read10x.R; without them it
        prints `skip Read10X: ...`, a MISMATCH when CELLMATRIX_TEST_REQUIRE_R=1).
  csv   a directory holding matrix.csv.gz (header "cell" then the gene ids; rows: cell
        id then N dense values), obs.csv.gz (header "cell" then the fields) and
        var.csv.gz (header "gene_id,feature_name"); RFC 4180 quoting. Read with pandas.
Sources are read with check_bundles.py's readers. Prints one `ok reference: ...` line
(then any `skip ...` lines); on the first difference prints `MISMATCH: ...` to stderr and
exits 1. Every reader call runs with warnings as errors; a reader that fails is a MISMATCH.
"""
import atexit
import contextlib
import csv
import gzip
import io
import json
import operator
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
import warnings

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_bundles import read_10x_h5, read_h5ad, read_mtx, read_table, strs  # noqa: E402

ALL_FIELDS = ["bundle.project", "bundle.organ", "bundle.species", "bundle.assay", "bundle.donor",
              "bundle.fqid", "cell.n_genes", "cell.total_counts", "cell.pct_mito", "cell.barcode"]
STRING_FIELDS = {"bundle.project", "bundle.organ", "bundle.species", "bundle.assay",
                 "bundle.donor", "bundle.fqid", "cell.barcode"}
COMPARE = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
           ">": operator.gt, ">=": operator.ge}
UINT32_MAX = 2**32 - 1


def fail(msg):
    """Reports the first mismatch and exits 1."""
    print(f"MISMATCH: {msg}", file=sys.stderr)
    sys.exit(1)


def load_source(source, fmt, orientation, cache):
    """Reads a source once per (source, format, orientation) and derives, per row: the
    QC fields and whether its values are integral counts / exactly float32."""
    key = (source, fmt, orientation)
    if key in cache:
        return cache[key]
    if fmt == "h5ad":
        x, cells, ids, names = read_h5ad(source)
    elif fmt == "10x-h5":
        x, cells, ids, names = read_10x_h5(source)
    elif fmt == "10x-mtx":
        x, cells, ids, names = read_mtx(source)
    elif fmt == "table":
        x, cells, ids, names = read_table(source, orientation or "genes-by-cells")
    else:
        raise ValueError(f"unknown format {fmt!r}")
    x = sp.csr_matrix(x)
    x.sum_duplicates()
    x.eliminate_zeros()
    x.sort_indices()
    raw = x.data
    f64 = x.astype(np.float64)
    integral = np.isfinite(f64.data) & (np.mod(f64.data, 1) == 0) & (f64.data >= 0) & (f64.data <= UINT32_MAX)
    f32_exact = raw.astype(np.float32).astype(raw.dtype) == raw
    rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    bad_int = np.bincount(rows[~integral], minlength=x.shape[0]) > 0
    bad_f32 = np.bincount(rows[~f32_exact], minlength=x.shape[0]) > 0
    mito = np.array([n.upper().startswith("MT-") for n in names], dtype=np.float64)
    # csr @ vector sums each row sequentially in column order, in float64, like the service.
    total = f64 @ np.ones(x.shape[1])
    mt = f64 @ mito
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(total == 0, 0.0, 100.0 * mt / np.where(total == 0, 1.0, total))
    src = {"x": f64, "cells": list(cells), "ids": list(ids), "names": list(names),
           "n_genes": np.diff(x.indptr), "total": total, "pct": pct,
           "bad_int": bad_int, "bad_f32": bad_f32}
    cache[key] = src
    return src


def field_value(field, bundle, cell):
    """The value of a field for a bundle and (when not None) one of its cells; None
    means unknown (a cell field during bundle pruning)."""
    kind, _, name = field.partition(".")
    if kind == "bundle" and name == "fqid":
        return bundle["fqid"]
    if kind == "bundle" and field in STRING_FIELDS:
        value = (bundle.get("metadata") or {}).get(name)
        return "" if value is None else str(value)
    if kind == "cell" and field in ALL_FIELDS:
        if cell is None:
            return None
        src, row = cell
        return {"n_genes": float(src["n_genes"][row]), "total_counts": float(src["total"][row]),
                "pct_mito": float(src["pct"][row]), "barcode": src["cells"][row]}[name]
    raise ValueError(f"unknown field {field!r}")


def operand(field, v):
    """A filter value coerced to the field's type: str, or float64 for numbers."""
    if field in STRING_FIELDS:
        if not isinstance(v, str):
            raise ValueError(f"{field} compares with strings, got {v!r}")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{field} compares with numbers, got {v!r}")
    return float(v)


def evaluate(node, bundle, cell):
    """Kleene evaluation of a filter tree: True, False or None (unknown)."""
    op = node["op"]
    if op in ("and", "or"):
        results = [evaluate(c, bundle, cell) for c in node["value"]]
        decisive = op == "or"  # True decides an "or", False decides an "and"
        if decisive in results:
            return decisive
        return None if None in results else not decisive
    if op == "not":
        child = node["value"][0] if isinstance(node["value"], list) else node["value"]
        r = evaluate(child, bundle, cell)
        return None if r is None else not r
    field = node["field"]
    got = field_value(field, bundle, cell)
    if got is None:
        return None
    if op == "in":
        return any(got == operand(field, v) for v in node["value"])
    if op in COMPARE:
        return COMPARE[op](got, operand(field, node["value"]))
    raise ValueError(f"unknown op {op!r}")


def gene_space(kept, genes):
    """The output's feature ids and names: the union of the kept bundles' features in
    first-seen order, or the requested subset resolved by id, then by name."""
    union = {}
    for b in kept:
        for fid, name in zip(b["src"]["ids"], b["src"]["names"]):
            union.setdefault(fid, name)
    if genes is None:
        ids = list(union)
    else:
        ids = []
        for entry in genes:
            hits = [entry] if entry in union else [f for f, n in union.items() if n == entry]
            if not hits:
                raise ValueError(f"requested gene {entry!r} matches no feature (a 400)")
            ids += [f for f in hits if f not in ids]
    return ids, [union[f] for f in ids]


def expected(spec):
    """Computes the expected (X, obs_names, obs columns, var ids, var names, dtype)."""
    cache, tree = {}, spec.get("filter")
    kept = []
    for b in spec["bundles"]:
        b = dict(b, src=load_source(b["source"], b["format"], b.get("orientation"), cache))
        n = len(b["src"]["cells"])
        b["rows"] = range(n) if b.get("split_index") is None else [b["split_index"]]
        if tree is None or evaluate(tree, b, None) is not False:
            kept.append(b)
    ids, names = gene_space(kept, spec.get("genes"))
    col = {f: j for j, f in enumerate(ids)}
    if all(not b["src"]["bad_int"][list(b["rows"])].any() for b in kept):
        dtype = np.dtype(np.uint32)
    elif all(not b["src"]["bad_f32"][list(b["rows"])].any() for b in kept):
        dtype = np.dtype(np.float32)
    else:
        dtype = np.dtype(np.float64)
    fields = ALL_FIELDS if spec.get("fields") is None else spec["fields"]
    blocks, obs_names, columns, remaps = [], [], {f: [] for f in fields}, {}
    for b in kept:
        src = b["src"]
        rows = [r for r in b["rows"] if tree is None or evaluate(tree, b, (src, r)) is True]
        if not rows:
            continue
        sub = src["x"][rows]
        if id(src) not in remaps:  # source column -> output column, or -1 when not requested
            remaps[id(src)] = np.array([col.get(f, -1) for f in src["ids"]], dtype=np.int64)
        remap = remaps[id(src)]
        m = remap[sub.indices] if sub.nnz else np.zeros(0, dtype=np.int64)
        keep = m >= 0
        per_row = np.add.reduceat(keep.astype(np.int64), sub.indptr[:-1]) if sub.nnz else np.zeros(len(rows), np.int64)
        per_row[np.diff(sub.indptr) == 0] = 0  # reduceat quirk for empty rows
        indptr = np.concatenate([[0], np.cumsum(per_row)])
        blocks.append(sp.csr_matrix((sub.data[keep], m[keep], indptr), shape=(len(rows), len(ids))))
        for r in rows:
            obs_names.append(f"{b['fqid']}:{src['cells'][r]}")
            for f in fields:
                v = field_value(f, b, (src, r))
                columns[f].append(int(v) if f == "cell.n_genes" else v)
    x = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, len(ids)))
    x = sp.csr_matrix(x, dtype=np.float64)
    x.sort_indices()
    return x, obs_names, fields, columns, ids, names, dtype


def first_diff(got, want):
    """Index of the first differing element of two equal-length sequences, or None."""
    return next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), None)


# ---------------------------------------------------------------------------------------
# Readers. Each loader turns one output format into the same pieces (`Loaded`), with the
# real reader of that format, and the same checks (`check`) then run on them.

FORMATS = ("zarr", "h5ad", "loom", "mtx", "csv")
NUMERIC_COLUMNS = {"n_genes", "total_counts", "pct_mito"}
MTX_DIR = "filtered_feature_bc_matrix"
MTX_FILES = ("matrix.mtx.gz", "features.tsv.gz", "barcodes.tsv.gz", "obs.tsv.gz")
R_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "R", "read10x.R")
R_MISSING_SEURAT = 3  # read10x.R's exit status when library(Seurat) does not load
_SCRATCH = []


def scratch_env():
    """Points numba's cache and matplotlib's config dir (importing scanpy or loompy touches
    them) at a private temporary directory, unless already set: an import then never
    writes to $HOME or the venv, nor needs the network."""
    if not _SCRATCH:
        d = tempfile.mkdtemp(prefix="reference-cache-")
        atexit.register(shutil.rmtree, d, True)
        _SCRATCH.append(d)
        os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(d, "numba"))
        os.environ.setdefault("MPLCONFIGDIR", os.path.join(d, "matplotlib"))


def import_scanpy():
    """scanpy, imported only for the formats that use it (it takes seconds)."""
    scratch_env()
    import scanpy
    return scanpy


def import_loompy():
    """loompy, imported only for the loom format (it imports numba)."""
    scratch_env()
    import loompy
    return loompy


@contextlib.contextmanager
def reading(what):
    """Runs a reader call with every warning an error; a reader that raises is a
    MISMATCH naming it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            yield
        except Exception as e:  # noqa: BLE001 - any reader failure is the output's fault
            fail(f"{what} cannot read the output: {type(e).__name__}: {e}")


def loaded(x, obs_names, var_ids, var_names, obs, obs_ordered=True, dtype=None, later=()):
    """The pieces every format is checked on. x: the matrix (cells x genes; must be scipy
    CSR), dtype: the dtype the format records (None: x.dtype), var_names: the gene names
    or None when the format lacks them, obs: column name -> pandas Series in the file's
    order (obs_ordered False: the format has no column order), later: checks run on the
    expected matrix after the common ones, each f(x, obs_names, ids, names, dtype) -> notes."""
    return types.SimpleNamespace(x=x, obs_names=list(obs_names), var_ids=list(var_ids),
                                 var_names=None if var_names is None else list(var_names),
                                 obs=obs, obs_cols=list(obs), obs_ordered=obs_ordered,
                                 dtype=x.dtype if dtype is None else np.dtype(dtype), later=list(later))


def require_file(output, name):
    """Fails unless output is an existing file called name."""
    if os.path.basename(os.path.normpath(output)) != name or not os.path.isfile(output):
        fail(f"output {str(output)!r} is not a file named {name}")


def from_anndata(a):
    """The pieces of an AnnData read from zarr or h5ad."""
    return loaded(a.X, strs(a.obs_names), strs(a.var_names),
                  strs(a.var["feature_name"]) if "feature_name" in a.var.columns else None,
                  {c: a.obs[c] for c in a.obs.columns})


def load_zarr(output, tmp, fields, dtype):
    """An AnnData Zarr group, read with anndata.read_zarr."""
    with reading("anndata.read_zarr"):
        got = anndata.read_zarr(output)
    return from_anndata(got)


def same_anndata(a, b, what):
    """Fails unless two AnnData objects read from one file hold the same X, obs and var."""
    def same_x(gx, hx):
        if type(gx) is not type(hx) or gx.dtype != hx.dtype or gx.shape != hx.shape:
            return False
        if sp.issparse(gx):
            return gx.format == hx.format and all(np.array_equal(getattr(gx, k), getattr(hx, k))
                                                  for k in ("indptr", "indices", "data"))
        return np.array_equal(np.asarray(gx), np.asarray(hx))
    for part, ok in (("X", lambda: same_x(a.X, b.X)),
                     ("obs_names", lambda: a.obs_names.equals(b.obs_names)),
                     ("var_names", lambda: a.var_names.equals(b.var_names)),
                     ("obs", lambda: a.obs.equals(b.obs) and list(a.obs.dtypes) == list(b.obs.dtypes)),
                     ("var", lambda: a.var.equals(b.var) and list(a.var.dtypes) == list(b.var.dtypes))):
        if not ok():
            fail(f"{what} and anndata.read_h5ad read different {part}")


def load_h5ad(output, tmp, fields, dtype):
    """A file matrix.h5ad, read with anndata.read_h5ad and with scanpy.read_h5ad."""
    require_file(output, "matrix.h5ad")
    with reading("anndata.read_h5ad"):
        a = anndata.read_h5ad(output)
    sc = import_scanpy()
    with reading("scanpy.read_h5ad"):
        b = sc.read_h5ad(output)
    same_anndata(a, b, "scanpy.read_h5ad")
    return from_anndata(a)


def load_loom(output, tmp, fields, dtype):
    """A file matrix.loom, opened with loompy.connect (validating it): /matrix genes x
    cells, row attrs Accession and Gene, col attrs CellID and one per field."""
    require_file(output, "matrix.loom")
    loompy = import_loompy()
    with reading("loompy.connect"):
        # Not `with`: leaving a LoomConnection of an empty matrix raises.
        ds = loompy.connect(output, "r")
        try:
            m = ds[:, :]
            ra = {k: ds.ra[k] for k in ds.ra.keys()}
            ca = {k: ds.ca[k] for k in ds.ca.keys()}
        finally:
            ds.close()
    for attr in ("Accession", "Gene"):
        if attr not in ra:
            fail(f"matrix.loom has no row attribute {attr} (has {sorted(ra)})")
    if "CellID" not in ca:
        fail(f"matrix.loom has no column attribute CellID (has {sorted(ca)})")
    obs = {k: pd.Series(v) for k, v in sorted(ca.items()) if k != "CellID"}
    return loaded(sp.csr_matrix(m.T), strs(ca["CellID"]), strs(ra["Accession"]), strs(ra["Gene"]),
                  obs, obs_ordered=False)


def gz_empty(path):
    """Whether a gzip file holds no bytes (pandas cannot parse an empty file)."""
    with gzip.open(path, "rb") as f:
        return f.read(1) == b""


def read_columns(path, ncols, what):
    """A headerless tab-separated file (RFC 4180 quoting) as ncols lists of str."""
    if gz_empty(path):
        return [[] for _ in range(ncols)]
    with reading(f"pandas.read_csv({what})"):
        t = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False, na_filter=False,
                        quoting=csv.QUOTE_MINIMAL, skip_blank_lines=False)
    if t.shape[1] != ncols:
        fail(f"{what} has {t.shape[1]} columns, expected {ncols}")
    return [list(t[c]) for c in t.columns]


def read_with_header(path, sep, quoting, what, first, string_col):
    """(names, frame) of a delimited file whose first line names its columns, the first
    being `first` (the row names): read with pandas.read_csv(index_col=0), the header kept
    apart so that no name is renamed (pandas would rename a repeated one); frame's columns
    are the positions 1.., string_col(name) says which are read as str."""
    opts = dict(sep=sep, header=None, keep_default_na=False, na_filter=False, quoting=quoting)
    with reading(f"pandas.read_csv({what})"):
        head = pd.read_csv(path, nrows=1, dtype=str, **opts) if not gz_empty(path) else pd.DataFrame()
    if head.empty:
        fail(f"{what} has no header line")
    names = list(head.iloc[0])
    if names[0] != first:
        fail(f"{what} header starts with {names[0]!r}, expected {first!r}")
    str_cols = {0: str, **{i: str for i, n in enumerate(names) if i and string_col(n)}}
    with reading(f"pandas.read_csv({what})"):
        body = pd.read_csv(path, skiprows=1, names=list(range(len(names))), index_col=0, dtype=str_cols,
                           float_precision="round_trip", skip_blank_lines=False, **opts)
    return names[1:], body


def text_obs(names, body, what):
    """obs columns read from text: a number column with no rows gets its numeric dtype,
    and a float field whose values all print as integers ("3" is the shortest text of
    3.0) is float64; anything else keeps the dtype pandas inferred."""
    if len(set(names)) != len(names):
        fail(f"{what} repeats a column name: {names}")
    obs = {}
    for pos, name in enumerate(names, start=1):
        s = body[pos].reset_index(drop=True)
        if name == "n_genes" and len(s) == 0:
            s = s.astype(np.int64)
        elif name in NUMERIC_COLUMNS - {"n_genes"} and (len(s) == 0 or pd.api.types.is_integer_dtype(s.dtype)):
            s = s.astype(np.float64)
        obs[name] = s
    return obs


def load_mtx(output, tmp, fields, dtype):
    """A file filtered_feature_bc_matrix.tar.gz (Cell Ranger's layout plus obs.tsv.gz),
    extracted with tarfile and read with scipy.io.mmread and pandas; then also with
    scanpy.read_10x_mtx and Seurat::Read10X (the `later` checks)."""
    require_file(output, f"{MTX_DIR}.tar.gz")
    with reading("tarfile"):
        with tarfile.open(output, "r:gz") as tar:
            members = tar.getmembers()
            odd = [m.name for m in members if not (m.isfile() or m.isdir())]
            if odd:
                fail(f"{MTX_DIR}.tar.gz holds members that are not files or directories: {odd}")
            files = sorted(m.name.removeprefix("./") for m in members if m.isfile())
            want = sorted(f"{MTX_DIR}/{n}" for n in MTX_FILES)
            if files != want:
                fail(f"{MTX_DIR}.tar.gz holds files {files}, expected {want}")
            tar.extractall(tmp, filter="data")
    d = os.path.join(tmp, MTX_DIR)
    mtx = os.path.join(d, "matrix.mtx.gz")
    import scipy.io
    with reading("scipy.io.mminfo"):
        rows, cols, entries, layout, field, symmetry = scipy.io.mminfo(mtx)
    if layout != "coordinate" or symmetry != "general":
        fail(f"matrix.mtx.gz is {layout} {field} {symmetry}, expected coordinate ... general")
    if field == "integer" and dtype != np.uint32:
        fail(f"matrix.mtx.gz has field integer, expected real (X is {dtype})")
    if field == "real" and dtype == np.uint32:
        fail("matrix.mtx.gz has field real, expected integer (X is uint32)")
    if field not in ("integer", "real"):
        fail(f"matrix.mtx.gz has field {field}, expected integer or real")
    with reading("scipy.io.mmread"):
        m = sp.coo_matrix(scipy.io.mmread(mtx))  # genes x cells
    pairs = m.row.astype(np.int64) * max(m.shape[1], 1) + m.col
    if len(np.unique(pairs)) != m.nnz:
        fail(f"matrix.mtx.gz has {m.nnz - len(np.unique(pairs))} repeated entries")
    file_x = sp.csr_matrix(m.T, dtype=np.float64)  # the values the file's text denotes
    if field == "integer":
        if m.dtype.kind not in "iu":
            fail(f"matrix.mtx.gz has field integer but mmread gave {m.dtype}")
        if m.nnz and (m.data.min() < 0 or m.data.max() > UINT32_MAX):
            fail("matrix.mtx.gz holds integers outside uint32")
        x = sp.csr_matrix(m.T).astype(np.uint32)
    else:  # real: float64 values; float32 data is compared after rounding to float32
        x = sp.csr_matrix(m.T).astype(np.float32 if dtype == np.float32 else np.float64)
    ids, names, kinds = read_columns(os.path.join(d, "features.tsv.gz"), 3, "features.tsv.gz")
    if any(k != "Gene Expression" for k in kinds):
        fail(f"features.tsv.gz has feature types {sorted(set(kinds))}, expected only 'Gene Expression'")
    (barcodes,) = read_columns(os.path.join(d, "barcodes.tsv.gz"), 1, "barcodes.tsv.gz")
    if m.shape != (len(ids), len(barcodes)):
        fail(f"matrix.mtx.gz is {m.shape[0]} x {m.shape[1]} but features.tsv.gz has {len(ids)} "
             f"lines and barcodes.tsv.gz {len(barcodes)}")
    names_obs, body = read_with_header(os.path.join(d, "obs.tsv.gz"), "\t", csv.QUOTE_MINIMAL, "obs.tsv.gz",
                                       "barcode", lambda n: n not in NUMERIC_COLUMNS)
    if list(body.index) != barcodes:
        fail("obs.tsv.gz rows are not the cells of barcodes.tsv.gz, in order")
    def scanpy_check(x_, obs_names, ids_, names_, dtype_):
        return check_scanpy_10x(d, x_, obs_names, ids_, names_)
    def r_check(x_, obs_names, ids_, names_, dtype_):
        return check_read10x(d, file_x if dtype_ == np.float32 else x_, obs_names, ids_, dtype_)
    return loaded(x, barcodes, ids, names, text_obs(names_obs, body, "obs.tsv.gz"),
                  later=[scanpy_check, r_check])


def load_csv(output, tmp, fields, dtype):
    """A directory of matrix.csv.gz, obs.csv.gz and var.csv.gz, read with pandas."""
    if not os.path.isdir(output):
        fail(f"output {str(output)!r} is not a directory")
    path = lambda n: os.path.join(output, n)  # noqa: E731
    for n in ("matrix.csv.gz", "obs.csv.gz", "var.csv.gz"):
        if not os.path.isfile(path(n)):
            fail(f"output has no {n}")
    ids, body = read_with_header(path("matrix.csv.gz"), ",", csv.QUOTE_MINIMAL, "matrix.csv.gz", "cell",
                                 lambda n: False)
    kinds = body.dtypes.tolist()
    bad = [ids[i] for i, k in enumerate(kinds) if not (pd.api.types.is_integer_dtype(k) or pd.api.types.is_float_dtype(k))]
    if bad and body.shape[0]:
        fail(f"matrix.csv.gz has non-numeric values for gene {bad[0]!r}")
    if body.shape[0] == 0 or body.shape[1] == 0:
        got_dtype = dtype  # no values tell a dtype
    elif all(pd.api.types.is_integer_dtype(k) for k in kinds) and body.to_numpy().min() >= 0 \
            and body.to_numpy().max() <= UINT32_MAX:
        got_dtype = np.dtype(np.uint32)
    else:  # decimals: float64 values; float32 data is compared after rounding to float32
        got_dtype = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)
    if got_dtype == np.uint32:
        dense = body.to_numpy(dtype=np.int64).astype(np.uint32)
    else:
        dense = body.to_numpy(dtype=np.float64).astype(got_dtype)
    x = sp.csr_matrix(dense.reshape(body.shape), dtype=got_dtype)
    cells = list(body.index)
    var_cols, var = read_with_header(path("var.csv.gz"), ",", csv.QUOTE_MINIMAL, "var.csv.gz", "gene_id",
                                     lambda n: True)
    if var_cols != ["feature_name"]:
        fail(f"var.csv.gz columns {var_cols}, expected ['feature_name']")
    if list(var.index) != ids:
        fail("var.csv.gz rows are not the genes of matrix.csv.gz's header, in order")
    obs_cols, obs = read_with_header(path("obs.csv.gz"), ",", csv.QUOTE_MINIMAL, "obs.csv.gz", "cell",
                                     lambda n: n not in NUMERIC_COLUMNS)
    if list(obs.index) != cells:
        fail("obs.csv.gz rows are not the cells of matrix.csv.gz, in order")
    return loaded(x, cells, ids, list(var[1]), text_obs(obs_cols, obs, "obs.csv.gz"))


LOADERS = {"zarr": load_zarr, "h5ad": load_h5ad, "loom": load_loom, "mtx": load_mtx, "csv": load_csv}


def x_diff(gx, x, obs_names, ids, what="X"):
    """A message for the first difference of two CSR matrices of one shape, or None."""
    diff = sp.csr_matrix(gx, dtype=np.float64) != sp.csr_matrix(x, dtype=np.float64)
    if not diff.nnz:
        return None
    rr, cc = diff.nonzero()
    k = np.lexsort((cc, rr))[0]
    r, c = rr[k], cc[k]
    return (f"{what} differs in {diff.nnz} entries; first: cell {obs_names[r]!r}, gene {ids[c]!r}: "
            f"got {float(gx[r, c])!r}, expected {float(x[r, c])!r}")


def check(got, x, obs_names, fields, columns, ids, names, dtype):
    """The checks every format goes through, on a loader's pieces."""
    gx = got.x
    if not sp.issparse(gx) or gx.format != "csr":
        fail(f"X is not a CSR matrix but {type(gx).__name__}")
    if got.dtype != dtype:
        fail(f"X dtype {got.dtype}, expected {dtype}")
    if np.count_nonzero(gx.data == 0):
        fail(f"X stores {np.count_nonzero(gx.data == 0)} explicit zeros")
    if not gx.has_sorted_indices or not gx.has_canonical_format:
        fail("X indices are not sorted / canonical within rows")
    for what, g, w in (("obs_names", got.obs_names, obs_names), ("var_names", got.var_ids, ids)):
        if len(g) != len(w) or first_diff(g, w) is not None:
            i = first_diff(g, w)
            fail(f"{len(g)} {what}, expected {len(w)}" + ("" if i is None else f"; [{i}] is {g[i]!r}, expected {w[i]!r}"))
    if gx.shape != x.shape:
        fail(f"X shape {gx.shape}, expected {x.shape}")
    if got.var_names is None:
        fail("var has no feature_name column")
    i = first_diff(got.var_names, names)
    if i is not None:
        fail(f"var feature_name of {ids[i]!r} is {got.var_names[i]!r}, expected {names[i]!r}")
    msg = x_diff(gx, x, obs_names, ids)
    if msg:
        fail(msg)
    want_cols = [f.split(".", 1)[1] for f in fields]
    if (got.obs_cols if got.obs_ordered else sorted(got.obs_cols)) != (want_cols if got.obs_ordered else sorted(want_cols)):
        fail(f"obs columns {got.obs_cols}, expected {want_cols}")
    for f, name in zip(fields, want_cols):
        g, w = got.obs[name], columns[f]
        if f in STRING_FIELDS:
            i = first_diff(strs(g), w)
        elif f == "cell.n_genes":
            if not pd.api.types.is_integer_dtype(g.dtype):
                fail(f"obs n_genes has dtype {g.dtype}, expected integers")
            i = first_diff([int(v) for v in g], w)
        else:
            if g.dtype != np.float64:
                fail(f"obs {name} has dtype {g.dtype}, expected float64")
            close = np.isclose(g.to_numpy(), np.array(w, dtype=np.float64), rtol=1e-12, atol=0)
            i = None if close.all() else int(np.argmin(close))
        if i is not None:
            fail(f"obs {name} of cell {obs_names[i]!r} is {(strs(g) if f in STRING_FIELDS else list(g))[i]!r}, expected {w[i]!r}")


def check_scanpy_10x(d, x, obs_names, ids, names):
    """scanpy.read_10x_mtx of the mtx directory gives the expected cells, genes, names
    and values (it reads X as float32, so the values rounded to float32)."""
    if x.shape[0] == 0 or x.shape[1] == 0:
        return ["skip scanpy.read_10x_mtx: an empty matrix (pandas cannot read an empty "
                f"{'barcodes' if x.shape[0] == 0 else 'features'}.tsv.gz)"]
    sc = import_scanpy()
    with reading("scanpy.read_10x_mtx"):
        a = sc.read_10x_mtx(d, var_names="gene_ids")
    for what, g, w in (("obs_names", strs(a.obs_names), obs_names), ("var_names", strs(a.var_names), ids),
                       ("var gene_symbols", strs(a.var["gene_symbols"]), names)):
        if g != list(w):
            i = first_diff(g, w)
            fail(f"scanpy.read_10x_mtx: {len(g)} {what}, expected {len(w)}"
                 + ("" if i is None else f"; [{i}] is {g[i]!r}, expected {w[i]!r}"))
    if a.X.shape != x.shape:
        fail(f"scanpy.read_10x_mtx: X shape {a.X.shape}, expected {x.shape}")
    msg = x_diff(sp.csr_matrix(a.X), sp.csr_matrix(x.astype(np.float32)), obs_names, ids,
                 "scanpy.read_10x_mtx: X (as float32)")
    if msg:
        fail(msg)
    return ["read by scanpy.read_10x_mtx"]


def read10x_summary(d):
    """Runs tests/R/read10x.R (Seurat::Read10X) on an mtx directory: (summary, None), or
    (None, why) when Rscript or Seurat is missing. The summary: counts {n_genes, n_cells,
    nnz}, cells and genes [(id, sum)] in order."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return None, "Rscript is not on PATH"
    with tempfile.TemporaryDirectory(prefix="read10x-") as t:
        out = os.path.join(t, "summary.tsv")
        p = subprocess.run([rscript, R_SCRIPT, d, out], capture_output=True, text=True, timeout=600)
        if p.returncode == R_MISSING_SEURAT:
            return None, "library(Seurat) does not load: " + " ".join(p.stderr.strip().splitlines()[-1:])
        if p.returncode != 0:
            fail(f"Seurat::Read10X cannot read the output (read10x.R exit {p.returncode}): {p.stderr.strip()[-2000:]}")
        with open(out, encoding="utf-8", newline="") as f:
            text = f.read()
    counts, cells, genes = {}, [], []
    for line in text.split("\n")[:-1]:
        kind, rest = line.split("\t", 1)
        if kind in ("n_genes", "n_cells", "nnz"):
            counts[kind] = int(rest)
        else:
            total, name = rest.split("\t", 1)
            {"cell": cells, "gene": genes}[kind].append((name, float(total)))
    return {"counts": counts, "cells": cells, "genes": genes}, None


def compare_read10x(summary, ref, obs_names, ids, exact):
    """Compares Read10X's summary with the expected matrix ref (cells x genes, float64):
    dimensions, cell and gene ids, nnz, and per-cell / per-gene sums (exactly for
    integers, else within 1e-9 of the sum of magnitudes: R adds in its own order)."""
    want = {"n_genes": ref.shape[1], "n_cells": ref.shape[0], "nnz": ref.nnz}
    for k, w in want.items():
        if summary["counts"].get(k) != w:
            fail(f"Seurat::Read10X: {k} {summary['counts'].get(k)}, expected {w}")
    a = abs(ref)
    for what, got, names_, sums, mags in (
            ("cell", summary["cells"], obs_names, np.asarray(ref.sum(axis=1)).ravel(), np.asarray(a.sum(axis=1)).ravel()),
            ("gene", summary["genes"], ids, np.asarray(ref.sum(axis=0)).ravel(), np.asarray(a.sum(axis=0)).ravel())):
        g = [n for n, _ in got]
        i = first_diff(g, names_)
        if len(g) != len(names_) or i is not None:
            fail(f"Seurat::Read10X: {len(g)} {what} ids, expected {len(names_)}"
                 + ("" if i is None else f"; [{i}] is {g[i]!r}, expected {names_[i]!r}"))
        s = np.array([v for _, v in got], dtype=np.float64)
        ok = s == sums if exact else np.abs(s - sums) <= 1e-9 * mags
        if not ok.all():
            i = int(np.argmin(ok))
            fail(f"Seurat::Read10X: sum of {what} {names_[i]!r} is {float(s[i])!r}, expected {float(sums[i])!r}")


def check_read10x(d, ref, obs_names, ids, dtype):
    """Seurat::Read10X reads the mtx directory as expected; without R or Seurat, a skip
    note, or a MISMATCH when CELLMATRIX_TEST_REQUIRE_R=1."""
    if ref.shape[0] == 0 or ref.shape[1] == 0:
        return ["skip Read10X: an empty matrix (Read10X's read.table fails on an empty "
                f"{'barcodes' if ref.shape[0] == 0 else 'features'}.tsv.gz)"]
    summary, why = read10x_summary(d)
    if summary is None:
        if os.environ.get("CELLMATRIX_TEST_REQUIRE_R") == "1":
            fail(f"Seurat::Read10X is required (CELLMATRIX_TEST_REQUIRE_R=1) but {why}")
        return [f"skip Read10X: {why}"]
    compare_read10x(summary, sp.csr_matrix(ref, dtype=np.float64), obs_names, ids, dtype == np.uint32)
    return ["read by Seurat::Read10X"]


def compare(output, x, obs_names, fields, columns, ids, names, dtype, fmt="zarr"):
    """Reads the service's output in format fmt and asserts it equals the expected
    matrix; prints the `ok reference` line, then any `skip` notes, and returns the notes."""
    if fmt not in LOADERS:
        raise ValueError(f"unknown output format {fmt!r} (one of {', '.join(FORMATS)})")
    notes = []
    with tempfile.TemporaryDirectory(prefix="reference-output-") as tmp:
        got = LOADERS[fmt](str(output), tmp, fields, dtype)
        check(got, x, obs_names, fields, columns, ids, names, dtype)
        for later in got.later:
            notes += later(x, obs_names, ids, names, dtype)
    also = [n.removeprefix("read by ") for n in notes if n.startswith("read by ")]
    print(f"ok reference: {x.shape[0]} cells x {x.shape[1]} genes, nnz {x.nnz}, dtype {dtype}"
          + ("" if fmt == "zarr" else f", format {fmt}") + (f" (also read by {', '.join(also)})" if also else ""))
    for n in notes:
        if not n.startswith("read by "):
            print(n)
    return notes


def run(spec):
    """Computes the expected matrix for a spec and compares the output with it."""
    x, obs_names, fields, columns, ids, names, dtype = expected(spec)
    return compare(spec["output"], x, obs_names, fields, columns, ids, names, dtype, spec.get("format", "zarr"))


# ---------------------------------------------------------------------------------------
# Self-test: hand-made outputs, written by independent writers, must pass; altered ones fail.

def case_frame(dense, dtype, obs_names, ids):
    """The hand-made X, dense, cells x genes."""
    return np.array(dense, dtype=dtype).reshape(len(obs_names), len(ids))


def write_case(path, dense, dtype, obs_names, obs, ids, names):
    """Writes a hand-made expected output with anndata, as the service would."""
    a = anndata.AnnData(X=sp.csr_matrix(case_frame(dense, dtype, obs_names, ids)),
                        obs=pd.DataFrame(obs, index=pd.Index(obs_names, dtype=object)),
                        var=pd.DataFrame({"feature_name": names}, index=pd.Index(ids, dtype=object)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's notes about future Zarr defaults
        a.write_zarr(path)


def write_h5ad_case(path, dense, dtype, obs_names, obs, ids, names, dense_x=False):
    """The same with anndata's write_h5ad (X dense when dense_x)."""
    x = case_frame(dense, dtype, obs_names, ids)
    a = anndata.AnnData(X=x if dense_x else sp.csr_matrix(x),
                        obs=pd.DataFrame(obs, index=pd.Index(obs_names, dtype=object)),
                        var=pd.DataFrame({"feature_name": names}, index=pd.Index(ids, dtype=object)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.write_h5ad(path)


def attr(v):
    """A column as a loom attribute: strings as an object array, numbers as they are."""
    v = np.asarray(v)
    return v.astype(object) if v.dtype.kind in "OUS" else v


def write_loom_case(path, dense, dtype, obs_names, obs, ids, names):
    """The same with loompy.create; an empty matrix (which loompy.create refuses) with
    h5py in loompy's layout."""
    x = case_frame(dense, dtype, obs_names, ids)
    ra = {"Accession": attr(ids), "Gene": attr(names)}
    ca = {"CellID": attr(obs_names), **{k: attr(v) for k, v in obs.items()}}
    if x.size:
        import_loompy().create(path, sp.coo_matrix(x.T), ra, ca)
        return
    import h5py
    s = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        for g in ("attrs", "layers", "row_attrs", "col_attrs", "row_graphs", "col_graphs"):
            f.create_group(g)
        f["attrs"].create_dataset("LOOM_SPEC_VERSION", data="3.0.0", dtype=s)
        f.create_dataset("matrix", data=x.T)
        for group, attrs in (("row_attrs", ra), ("col_attrs", ca)):
            for k, v in attrs.items():
                f[group].create_dataset(k, data=v, dtype=s if v.dtype == object else v.dtype)


def write_mtx_case(path, dense, dtype, obs_names, obs, ids, names):
    """The same as Cell Ranger's directory plus obs.tsv.gz, with scipy.io.mmwrite, gzip,
    pandas and tarfile."""
    import scipy.io
    x = case_frame(dense, dtype, obs_names, ids)
    with tempfile.TemporaryDirectory() as t:
        d = os.path.join(t, MTX_DIR)
        os.mkdir(d)
        buf = io.BytesIO()
        scipy.io.mmwrite(buf, sp.coo_matrix(x.T), field="integer" if x.dtype == np.uint32 else "real",
                         symmetry="general")
        with gzip.open(os.path.join(d, "matrix.mtx.gz"), "wb") as f:
            f.write(buf.getvalue())
        for file, rows in (("features.tsv.gz", [(i, n, "Gene Expression") for i, n in zip(ids, names)]),
                           ("barcodes.tsv.gz", [(c,) for c in obs_names])):
            with gzip.open(os.path.join(d, file), "wt", newline="") as f:
                csv.writer(f, delimiter="\t", lineterminator="\n").writerows(rows)
        pd.DataFrame(obs, index=pd.Index(obs_names, dtype=object, name="barcode")).to_csv(
            os.path.join(d, "obs.tsv.gz"), sep="\t")
        with tarfile.open(path, "w:gz") as tar:
            tar.add(d, arcname=MTX_DIR)


def write_csv_case(path, dense, dtype, obs_names, obs, ids, names):
    """The same as three gzipped CSVs, with pandas' to_csv."""
    os.mkdir(path)
    cells = pd.Index(obs_names, dtype=object, name="cell")
    pd.DataFrame(case_frame(dense, dtype, obs_names, ids), index=cells, columns=pd.Index(ids, dtype=object)
                 ).to_csv(os.path.join(path, "matrix.csv.gz"))
    pd.DataFrame(obs, index=cells).to_csv(os.path.join(path, "obs.csv.gz"))
    pd.DataFrame({"feature_name": names}, index=pd.Index(ids, dtype=object, name="gene_id")).to_csv(
        os.path.join(path, "var.csv.gz"))


def write_output(d, fmt, name, *case, **kw):
    """Writes a hand-made case in format fmt under d; returns the spec's output path."""
    base = os.path.join(d, fmt, name)
    os.makedirs(os.path.dirname(base), exist_ok=True)
    if fmt == "zarr":
        write_case(base + ".zarr", *case)
        return base + ".zarr"
    if fmt == "csv":
        write_csv_case(base, *case)
        return base
    os.mkdir(base)
    file = {"h5ad": "matrix.h5ad", "loom": "matrix.loom", "mtx": f"{MTX_DIR}.tar.gz"}[fmt]
    {"h5ad": write_h5ad_case, "loom": write_loom_case, "mtx": write_mtx_case}[fmt](
        os.path.join(base, file), *case, **kw)
    return os.path.join(base, file)


def expect_mismatch(label, spec, want):
    """Runs spec and asserts it fails with a MISMATCH whose message contains want."""
    print(f"self-test: {label} must be reported:", flush=True)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            run(spec)
    except SystemExit as e:
        sys.stderr.write(err.getvalue())
        sys.stderr.flush()
        if e.code != 1 or "MISMATCH: " not in err.getvalue() or want not in err.getvalue():
            raise AssertionError(f"self-test: {label} failed, but not with a MISMATCH about {want!r}")
        return
    raise AssertionError(f"self-test: {label} was not detected")


def self_test():
    """Runs the self-test in a temporary directory removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="reference-self-test-") as d:
        self_test_in(d)


def self_test_in(d):
    """Checks the reference against hand-computed outputs of tiny requests in d, written
    in every format by independent writers, and that altered outputs are caught."""
    anndata.settings.zarr_write_format = 3  # the service writes Zarr v3
    def h5ad(name, cells, ids, symbols, rows, dtype):
        p = os.path.join(d, name + ".h5ad")
        anndata.AnnData(X=sp.csr_matrix(np.array(rows, dtype=dtype)), obs=pd.DataFrame(index=cells),
                        var=pd.DataFrame({"gene_symbols": symbols}, index=ids)).write_h5ad(p)
        return p
    a = h5ad("a", ["a1", "a2", "a3", "a4"], ["E1", "E2", "E3", "E4"], ["CD3E", "ACTB", "MT-CO1", "GAPDH"],
             [[1, 0, 2, 0], [0, 5, 0, 1], [0, 0, 0, 0], [3, 1, 1, 4]], np.int32)
    b = h5ad("b", ["b1", "b2", "b3"], ["E5", "E2", "E6"], ["CD3E", "ACTB-alt", "mt-nd1"],
             [[0.5, 2, 0], [0, 1.25, 0.25], [4, 1, 0]], np.float64)
    c = h5ad("c", ["c1"], ["E7"], ["CD3E"], [[0.1]], np.float64)
    bundles = [{"fqid": "A", "source": a, "format": "h5ad", "metadata": {"project": "p1", "organ": "blood"}},
               {"fqid": "B", "source": b, "format": "h5ad", "metadata": {"project": "p2", "organ": "lung"}},
               {"fqid": "C", "source": c, "format": "h5ad", "metadata": {"project": "p3", "organ": "lung"}}]
    tree = {"op": "and", "value": [
        {"op": "in", "field": "bundle.project", "value": ["p1", "p2"]},  # prunes C
        {"op": "!=", "field": "bundle.donor", "value": "d9"},
        {"op": "not", "value": [{"op": "=", "field": "cell.barcode", "value": "a2"}]},
        {"op": "or", "value": [
            {"op": ">=", "field": "cell.n_genes", "value": 3},
            {"op": ">", "field": "cell.pct_mito", "value": 10},
            {"op": "and", "value": [{"op": "=", "field": "bundle.organ", "value": "lung"},
                                    {"op": "not", "value": {"op": ">=", "field": "cell.total_counts", "value": 4}}]}]}]}
    fields = ["cell.barcode", "bundle.project", "cell.n_genes", "cell.pct_mito", "bundle.donor", "cell.total_counts"]
    # Kept: a1 (pct 66.7), a4 (n_genes 4), b1, b2 (lung, total < 4); not b3 (total 5). Genes: CD3E by
    # name -> E1, E5; E6 by id; ACTB by (first-seen) name -> E2. Float32-exact -> float32.
    ids, names = ["E1", "E5", "E6", "E2"], ["CD3E", "CD3E", "mt-nd1", "ACTB"]
    dense = [1, 0, 0, 0, 3, 0, 0, 1, 0, 0.5, 0, 2, 0, 0, 0.25, 1.25]
    obs = {"barcode": ["a1", "a4", "b1", "b2"], "project": ["p1", "p1", "p2", "p2"],
           "n_genes": np.array([2, 4, 2, 2], dtype=np.uint32), "pct_mito": [200 / 3, 100 / 9, 0.0, 25 / 1.5],
           "donor": ["", "", "", ""], "total_counts": [3.0, 9.0, 2.5, 1.5]}
    cells = ["A:a1", "A:a4", "B:b1", "B:b2"]
    spec = {"bundles": bundles, "filter": tree, "fields": fields, "genes": ["CD3E", "E6", "ACTB"]}
    good = (dense, np.float32, cells, obs, ids, names)
    # No cell passes, nothing is pruned: all seven features, and C's 0.1 makes it float64.
    empty_spec = {"bundles": bundles, "filter": {"op": ">", "field": "cell.n_genes", "value": 100},
                  "fields": None, "genes": None}
    empty_obs = {f.split(".")[1]: (np.zeros(0, np.uint32) if f == "cell.n_genes" else np.zeros(0)
                                   if f in ("cell.total_counts", "cell.pct_mito") else np.array([], dtype=object))
                 for f in ALL_FIELDS}
    empty = ([], np.float64, [], empty_obs, ["E1", "E2", "E3", "E4", "E5", "E6", "E7"],
             ["CD3E", "ACTB", "MT-CO1", "GAPDH", "CD3E", "mt-nd1", "CD3E"])
    # Bundle A alone (C and B pruned by project): integer counts -> uint32, with an empty cell a3.
    counts_spec = {"bundles": bundles, "filter": {"op": "=", "field": "bundle.project", "value": "p1"},
                   "fields": ["cell.n_genes", "cell.barcode", "bundle.organ"], "genes": None}
    counts_dense = [1, 0, 2, 0, 0, 5, 0, 1, 0, 0, 0, 0, 3, 1, 1, 4]
    counts_obs = {"n_genes": np.array([2, 2, 0, 4], dtype=np.uint32), "barcode": ["a1", "a2", "a3", "a4"],
                  "organ": ["blood"] * 4}
    counts = (counts_dense, np.uint32, ["A:a1", "A:a2", "A:a3", "A:a4"], counts_obs, ["E1", "E2", "E3", "E4"],
              ["CD3E", "ACTB", "MT-CO1", "GAPDH"])
    # One change each, in every format; then what only some formats can get wrong.
    changes = [("a changed X value", "X", (dense[:9] + [0.75] + dense[10:], *good[1:]), "X differs"),
               ("a changed cell id", "cell", (dense, np.float32, cells[:2] + ["B:bX"] + cells[3:], *good[3:]),
                "obs_names"),
               ("a changed n_genes value", "n_genes",
                (*good[:3], dict(obs, n_genes=np.array([2, 4, 3, 2], dtype=np.uint32)), *good[4:]), "obs n_genes"),
               ("a changed pct_mito value", "pct_mito",
                (*good[:3], dict(obs, pct_mito=[200 / 3, 100 / 9 * (1 + 1e-9), 0.0, 25 / 1.5]), *good[4:]),
                "obs pct_mito"),
               ("a changed project value", "project",
                (*good[:3], dict(obs, project=["p1", "p1", "p2", "p9"]), *good[4:]), "obs project")]
    wrong_dtype = {"zarr": "X dtype float32, expected uint32", "h5ad": "X dtype float32, expected uint32",
                   "loom": "X dtype float32, expected uint32", "mtx": "field real, expected integer",
                   "csv": "X dtype float64, expected uint32"}
    r_ran = False
    for fmt in FORMATS:
        print(f"self-test: format {fmt}", flush=True)
        for name, s, case in (("good", spec, good), ("empty", empty_spec, empty), ("counts", counts_spec, counts)):
            notes = run(dict(s, output=write_output(d, fmt, name, *case), format=fmt))
            r_ran |= "read by Seurat::Read10X" in notes
        for label, name, case, want in changes:
            expect_mismatch(f"{fmt}: {label}", dict(spec, output=write_output(d, fmt, f"bad-{name}", *case),
                                                     format=fmt), want)
        expect_mismatch(f"{fmt}: uint32 counts written as float32", dict(
            counts_spec, output=write_output(d, fmt, "bad-dtype", counts_dense, np.float32, *counts[2:]),
            format=fmt), wrong_dtype[fmt])
        if fmt == "h5ad":
            expect_mismatch("h5ad: a dense X", dict(spec, output=write_output(d, fmt, "bad-dense", *good, dense_x=True),
                                                    format=fmt), "X is not a CSR matrix but ndarray")
        if fmt == "mtx":
            self_test_read10x(counts_spec, r_ran)
    print("ok self-test")


def self_test_read10x(spec, r_ran):
    """Read10X ran on the mtx cases when R and Seurat are there (and must have, when
    CELLMATRIX_TEST_REQUIRE_R=1); a Read10X summary with one changed sum is caught."""
    if not r_ran:
        if os.environ.get("CELLMATRIX_TEST_REQUIRE_R") == "1":
            raise AssertionError("self-test: Read10X did not run")
        print("self-test: Read10X did not run (no R or Seurat); only its comparison is checked")
    x, obs_names, fields, columns, ids, names, dtype = expected(dict(spec, output=None))
    summary = {"counts": {"n_genes": 4, "n_cells": 4, "nnz": 8},
               "cells": list(zip(obs_names, [3.0, 6.0, 0.0, 9.0])), "genes": list(zip(ids, [4.0, 6.0, 3.0, 5.0]))}
    compare_read10x(summary, x, obs_names, ids, True)
    bad = dict(summary, cells=summary["cells"][:1] + [(obs_names[1], 7.0)] + summary["cells"][2:])
    err = io.StringIO()
    print("self-test: mtx: a changed Read10X cell sum must be reported:", flush=True)
    try:
        with contextlib.redirect_stderr(err):
            compare_read10x(bad, x, obs_names, ids, True)
    except SystemExit as e:
        sys.stderr.write(err.getvalue())
        assert e.code == 1 and "MISMATCH: Seurat::Read10X: sum of cell" in err.getvalue(), err.getvalue()
    else:
        raise AssertionError("self-test: a changed Read10X sum was not detected")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    elif len(sys.argv) == 2:
        run(json.load(open(sys.argv[1])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
