#!/usr/bin/env python3
"""Checks a request over real annotated data: scanpy's 10x_pbmc68k_reduced.h5ad.

    check_annotated.py SOURCE.h5ad FQID OUTPUT.zarr

The request was `bulk_labels in ['CD14+ Monocyte', 'CD19+ B'] and phase != 'G1' and
percent_mito < 0.05` over PBMC3k, Chung and this file, with fields bulk_labels, phase,
percent_mito and louvain. Here the cells are selected with pandas from the source, read
with anndata (percent_mito widened to float64, as the service keeps numbers), and the
output, read with anndata.read_zarr, must hold exactly those cells, in the source's
order, with the same values and with the categoricals still categorical. The other
sources have none of these fields: their cells are null there and fail every
comparison. Prints "ok annotated N" for N cells.
"""
import sys
import warnings

import anndata
import numpy as np
import pandas as pd

warnings.simplefilter("ignore")
source, fqid, output = sys.argv[1:4]
obs = anndata.read_h5ad(source, backed="r").obs
pct = obs["percent_mito"].astype("float64")
keep = obs["bulk_labels"].isin(["CD14+ Monocyte", "CD19+ B"]) & (obs["phase"] != "G1") & (pct < 0.05)
want = obs[keep]
got = anndata.read_zarr(output).obs
ids = [f"{fqid}:{c}" for c in want.index]
if list(got.index) != ids:
    sys.exit(f"cells {list(got.index)[:3]}... ({len(got)}), expected {ids[:3]}... ({len(ids)})")
if len(ids) == 0:
    sys.exit("the request selects no cell: it tests nothing")
for name in ["bulk_labels", "phase", "louvain"]:
    if not isinstance(got[name].dtype, pd.CategoricalDtype):
        sys.exit(f"{name} is {got[name].dtype}, expected categorical")
    if list(got[name].astype(str)) != list(want[name].astype(str)):
        sys.exit(f"{name} values differ")
if not np.array_equal(got["percent_mito"].to_numpy(), want["percent_mito"].astype("float64").to_numpy()):
    sys.exit("percent_mito values differ")
print(f"ok annotated {len(ids)}")
