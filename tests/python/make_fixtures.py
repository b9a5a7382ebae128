#!/usr/bin/env python3
"""Writes one input of every supported format, built from real PBMC3k cells, the way
the tools users have write them: Cell Ranger-style HDF5 (v3 and v2 layouts, gzip +
shuffle, fixed-length strings) with h5py; .h5ad with X as CSR, CSC and dense with
anndata; 10x matrix directories v3 (gzipped) and v2 (plain) with scipy; a CSV table
(cells by genes) with pandas.

Usage: make_fixtures.py PBMC_H5AD OUT_DIR N_CELLS
Prints a JSON list of {path, format, orientation?}.
"""
import gzip
import json
import os
import sys

import anndata
import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp


def main():
    src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.makedirs(out, exist_ok=True)
    full = anndata.read_h5ad(src)
    # Cells spread over the file; genes: all of them (the MT- genes included).
    a = full[np.linspace(0, full.n_obs - 1, n).astype(int)].copy()
    x = sp.csr_matrix(a.X).astype(np.int32)
    barcodes = np.array(a.obs_names, dtype="S")
    ids = np.array(a.var["gene_ids"], dtype="S")
    names = np.array(a.var["gene_symbols"], dtype="S")
    made = []

    # Cell Ranger v3 HDF5: features x barcodes CSC, i.e. the CSR of cells x features.
    def ds(g, name, data):
        g.create_dataset(name, data=data, compression="gzip", shuffle=True, chunks=True if np.size(data) > 1 else None)

    p = os.path.join(out, "filtered_feature_bc_matrix.h5")
    with h5py.File(p, "w") as f:
        g = f.create_group("matrix")
        ds(g, "barcodes", barcodes)
        ds(g, "data", x.data)
        ds(g, "indices", x.indices.astype(np.int64))
        ds(g, "indptr", x.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array([x.shape[1], x.shape[0]], dtype=np.int32))
        fg = g.create_group("features")
        ds(fg, "id", ids)
        ds(fg, "name", names)
        ds(fg, "feature_type", np.array([b"Gene Expression"] * len(ids)))
        ds(fg, "genome", np.array([b"GRCh38"] * len(ids)))
        f.attrs["chemistry_description"] = "Single Cell 3' v3"
    made.append({"path": p, "format": "10x-h5"})

    # Cell Ranger v2 HDF5: one group per genome.
    p = os.path.join(out, "filtered_gene_bc_matrices_h5.h5")
    with h5py.File(p, "w") as f:
        g = f.create_group("GRCh38")
        ds(g, "barcodes", barcodes)
        ds(g, "data", x.data)
        ds(g, "indices", x.indices.astype(np.int64))
        ds(g, "indptr", x.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array([x.shape[1], x.shape[0]], dtype=np.int32))
        ds(g, "genes", ids)
        ds(g, "gene_names", names)
    made.append({"path": p, "format": "10x-h5"})

    # h5ad with X as CSR (float32, the scanpy default), CSC (int) and dense (float64),
    # with a categorical obs column and gene_symbols in var.
    base = anndata.AnnData(
        X=x.astype(np.float32),
        obs=pd.DataFrame({"batch": pd.Categorical(["a", "b"] * (n // 2) + ["a"] * (n % 2))}, index=a.obs_names),
        var=pd.DataFrame({"gene_ids": a.var["gene_ids"].values, "gene_symbols": a.var["gene_symbols"].values}, index=a.var["gene_ids"].values),
    )
    for kind, conv in [("csr", lambda m: m), ("csc", lambda m: sp.csc_matrix(m).astype(np.int64)), ("dense", lambda m: m.toarray().astype(np.float64))]:
        b = base.copy()
        b.X = conv(b.X)
        p = os.path.join(out, f"pbmc_{kind}.h5ad")
        b.write_h5ad(p, compression="gzip" if kind != "dense" else None)
        made.append({"path": p, "format": "h5ad"})

    # 10x matrix directory v3, gzipped.
    d = os.path.join(out, "mtx_v3")
    os.makedirs(d, exist_ok=True)
    with gzip.open(os.path.join(d, "matrix.mtx.gz"), "wb") as f:
        scipy.io.mmwrite(f, x.T.tocoo(), field="integer")
    with gzip.open(os.path.join(d, "barcodes.tsv.gz"), "wt") as f:
        f.writelines(f"{b.decode()}\n" for b in barcodes)
    with gzip.open(os.path.join(d, "features.tsv.gz"), "wt") as f:
        f.writelines(f"{i.decode()}\t{s.decode()}\tGene Expression\n" for i, s in zip(ids, names))
    made.append({"path": d, "format": "10x-mtx"})

    # 10x matrix directory v2, plain text with genes.tsv.
    d = os.path.join(out, "mtx_v2")
    os.makedirs(d, exist_ok=True)
    scipy.io.mmwrite(os.path.join(d, "matrix.mtx"), x.T.tocoo(), field="integer")
    with open(os.path.join(d, "barcodes.tsv"), "w") as f:
        f.writelines(f"{b.decode()}\n" for b in barcodes)
    with open(os.path.join(d, "genes.tsv"), "w") as f:
        f.writelines(f"{i.decode()}\t{s.decode()}\n" for i, s in zip(ids, names))
    made.append({"path": d, "format": "10x-mtx"})

    # A CSV table, cells by genes, with fractional values (normalised counts).
    genes = list(a.var["gene_symbols"].values[:2000])
    dense = x[:, :2000].toarray() / 2.0
    df = pd.DataFrame(dense, index=pd.Index(a.obs_names, name="cell"), columns=genes)
    p = os.path.join(out, "cells_by_genes.csv")
    df.to_csv(p)
    made.append({"path": p, "format": "table", "orientation": "cells-by-genes"})

    print(json.dumps(made))


if __name__ == "__main__":
    main()
