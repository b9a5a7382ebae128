#!/usr/bin/env python3
"""Regenerates the sample data shipped in samples/ from the public sources DESIGN.md names.

- samples/pbmc3k_300/: the first 300 cells of 10x PBMC3k (raw UMI counts), from the
  `desc==2.1.1` wheel's desc/datasets/pbmc.h5ad, as a Cell Ranger v3 matrix directory.
- samples/chung_smartseq2_40.tsv.gz: the first 40 cells of the Chung et al. 2017
  SmartSeq2 read-count table (genes x cells), from the `scirpy==0.22.5` source archive's
  docs/tutorials/example_data/chung-park-2017.tar.bz2 (counts.tsv).

Usage: make_samples.py PBMC_H5AD CHUNG_COUNTS_TSV OUT_DIR
"""
import gzip
import json
import os
import sys

import anndata
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse


def write_gz(path, text):
    # mtime=0 keeps the gzip bytes reproducible.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(text.encode())


def pbmc(h5ad, out):
    a = anndata.read_h5ad(h5ad)[:300].copy()
    d = os.path.join(out, "pbmc3k_300")
    os.makedirs(d, exist_ok=True)
    x = scipy.sparse.csr_matrix(a.X).astype(np.int64)
    assert np.array_equal(x.toarray(), np.asarray(a.X.toarray()))
    with open(os.path.join(d, "matrix.mtx"), "wb") as f:
        scipy.io.mmwrite(f, x.T.tocoo(), field="integer")
    with open(os.path.join(d, "matrix.mtx"), "rb") as f:
        body = f.read()
    os.remove(os.path.join(d, "matrix.mtx"))
    with open(os.path.join(d, "matrix.mtx.gz"), "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(body)
    write_gz(os.path.join(d, "barcodes.tsv.gz"), "".join(f"{b}\n" for b in a.obs_names))
    feats = "".join(f"{i}\t{s}\tGene Expression\n" for i, s in zip(a.var["gene_ids"], a.var["gene_symbols"]))
    write_gz(os.path.join(d, "features.tsv.gz"), feats)
    with open(os.path.join(out, "pbmc3k_300.json"), "w") as f:
        json.dump({"project": "pbmc3k", "organ": "blood", "species": "Homo sapiens", "assay": "10x", "donor": "pbmc-donor-1"}, f, indent=2)
        f.write("\n")


def chung(tsv, out):
    df = pd.read_csv(tsv, sep="\t", index_col=0)
    sub = df.iloc[:, :40]
    text = sub.to_csv(sep="\t")
    write_gz(os.path.join(out, "chung_smartseq2_40.tsv.gz"), text)
    with open(os.path.join(out, "chung_smartseq2_40.json"), "w") as f:
        json.dump({"project": "chung-park-2017", "organ": "breast", "species": "Homo sapiens", "assay": "smartseq2", "donor": "chung-bc"}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    pbmc(sys.argv[1], sys.argv[3])
    chung(sys.argv[2], sys.argv[3])
