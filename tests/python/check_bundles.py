#!/usr/bin/env python3
"""Independent check of ingested bundles: reads each source with its own reader
(anndata, h5py, scipy, pandas), reads each bundle with anndata.read_zarr, and asserts
X, obs (cell ids, n_genes, total_counts, pct_mito) and var (ids, names) are equal.

Usage: check_bundles.py SPEC.json, where SPEC is
  {"store": DIR, "checks": [{"source": PATH, "format": "h5ad|10x-h5|10x-mtx|table",
                             "orientation": "genes-by-cells|cells-by-genes",
                             "fqids": [...], "split": bool}]}
With "split", bundle i holds cell i of the source. Prints one line per check; exits 1 on
the first mismatch.
"""
import glob
import json
import os
import sys
import warnings

import anndata
import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp


def fail(msg):
    print(f"MISMATCH: {msg}", file=sys.stderr)
    sys.exit(1)


def strs(a):
    return [x.decode() if isinstance(x, bytes) else str(x) for x in a]


def read_h5ad(path):
    a = anndata.read_h5ad(path)
    names = None
    for col in ("gene_symbols", "gene_name", "gene_names", "feature_name"):
        if col in a.var.columns:
            names = strs(a.var[col])
            break
    ids = strs(a.var_names)
    return sp.csr_matrix(a.X), strs(a.obs_names), ids, names or ids


def read_10x_h5(path):
    with h5py.File(path, "r") as f:
        if "matrix" in f:
            g = f["matrix"]
            ids, names = strs(g["features/id"][:]), strs(g["features/name"][:])
        else:
            g = f[list(f.keys())[0]]
            ids, names = strs(g["genes"][:]), strs(g["gene_names"][:])
        n_genes, n_cells = g["shape"][:]
        m = sp.csc_matrix((g["data"][:], g["indices"][:], g["indptr"][:]), shape=(n_genes, n_cells))
        return m.T.tocsr(), strs(g["barcodes"][:]), ids, names


def read_mtx(d):
    def one(stem):
        hits = sorted(glob.glob(os.path.join(d, stem)) + glob.glob(os.path.join(d, stem + ".gz")))
        return hits[0] if hits else None

    m = scipy.io.mmread(one("matrix.mtx")).T.tocsr()
    barcodes = pd.read_csv(one("barcodes.tsv"), sep="\t", header=None, dtype=str)[0].tolist()
    feats = pd.read_csv(one("features.tsv") or one("genes.tsv"), sep="\t", header=None, dtype=str)
    ids = feats[0].tolist()
    names = feats[1].tolist() if feats.shape[1] > 1 else ids
    return m, barcodes, ids, names


def read_table(path, orientation):
    sep = "," if path.removesuffix(".gz").endswith(".csv") else "\t"
    df = pd.read_csv(path, sep=sep, index_col=0)
    if orientation == "cells-by-genes":
        cells, genes, x = strs(df.index), strs(df.columns), df.values
    else:
        cells, genes, x = strs(df.columns), strs(df.index), df.values.T
    return sp.csr_matrix(x.astype(np.float64)), cells, genes, genes


def expected(check):
    fmt, src = check["format"], check["source"]
    if fmt == "h5ad":
        return read_h5ad(src)
    if fmt == "10x-h5":
        return read_10x_h5(src)
    if fmt == "10x-mtx":
        return read_mtx(src)
    if fmt == "table":
        return read_table(src, check.get("orientation", "genes-by-cells"))
    raise ValueError(fmt)


def compare(label, got, x, cells, ids, names):
    x = sp.csr_matrix(x, dtype=np.float64)
    x.eliminate_zeros()
    if list(got.obs_names) != cells:
        fail(f"{label}: cell ids differ")
    if list(got.var_names) != ids:
        fail(f"{label}: feature ids differ")
    if strs(got.var["feature_name"]) != names:
        fail(f"{label}: feature names differ")
    gx = got.X
    if not sp.issparse(gx) or gx.format != "csr":
        fail(f"{label}: X is not CSR but {type(gx)}")
    if gx.shape != x.shape:
        fail(f"{label}: shape {gx.shape} != {x.shape}")
    integral = bool(np.all(np.mod(x.data, 1) == 0) and np.all(x.data >= 0))
    if integral and not np.issubdtype(gx.dtype, np.integer):
        fail(f"{label}: integer counts stored as {gx.dtype}")
    diff = sp.csr_matrix(gx, dtype=np.float64) - x
    if diff.nnz and np.abs(diff.data).max() > 0:
        fail(f"{label}: X differs in {np.count_nonzero(diff.data)} entries")
    n_genes = np.diff(x.indptr)
    total = np.asarray(x.sum(axis=1)).ravel()
    mito = np.array([n.upper().startswith("MT-") for n in names], dtype=bool)
    mt = np.asarray(x[:, mito].sum(axis=1)).ravel() if mito.any() else np.zeros(x.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(total == 0, 0.0, 100 * mt / np.where(total == 0, 1, total))
    obs = got.obs
    if not np.array_equal(obs["n_genes"].to_numpy(), n_genes):
        fail(f"{label}: n_genes differ")
    if not np.allclose(obs["total_counts"].to_numpy(), total, rtol=1e-12, atol=0):
        fail(f"{label}: total_counts differ")
    if not np.allclose(obs["pct_mito"].to_numpy(), pct, rtol=1e-12, atol=1e-12):
        fail(f"{label}: pct_mito differ")


def main():
    spec = json.load(open(sys.argv[1]))
    store = spec["store"]
    for check in spec["checks"]:
        x, cells, ids, names = expected(check)
        fqids = check["fqids"]
        if check.get("split"):
            if len(fqids) != x.shape[0]:
                fail(f"{check['source']}: {len(fqids)} bundles for {x.shape[0]} cells")
            parts = [(f, x[i : i + 1], cells[i : i + 1]) for i, f in enumerate(fqids)]
        else:
            if len(fqids) != 1:
                fail(f"{check['source']}: expected one bundle, got {len(fqids)}")
            parts = [(fqids[0], x, cells)]
        for fqid, px, pcells in parts:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                got = anndata.read_zarr(os.path.join(store, "bundles", fqid, "matrix.zarr"))
            compare(f"{check['source']} -> {fqid}", got, px, pcells, ids, names)
        print(f"ok {check['format']} {check['source']}: {x.shape[0]} cells x {x.shape[1]} features, nnz {x.nnz}, {len(parts)} bundle(s)")


if __name__ == "__main__":
    main()
