"""The peer baseline of `cellmatrix bench e2e`: the same job done the way a user would
without cellmatrix. anndata reads every bundle of the store, the cells are filtered,
the bundles concatenated (outer join of the genes; every BATCH bundles as they are
read, then the batches) and the result written as Zarr.

Usage: baseline.py STORE_DIR MIN_GENES OUT_ZARR [OURS_ZARR]

Prints one JSON object: the time from the first read to the written result, the
process's peak RSS, and the shape, nonzeros and sum of the result. Given OURS_ZARR (the
service's output for the same request), it also reads that back and says whether the
two hold the same cells, genes and values.
"""

import glob
import json
import os
import resource
import sys
import time
import warnings

import anndata as ad
import numpy as np

warnings.filterwarnings("ignore")

# Bundles read between two concatenations.
BATCH = 1000


def summary(a):
    x = a.X
    return {
        "n_cells": int(a.n_obs),
        "n_genes": int(a.n_vars),
        "nnz": int(x.nnz),
        "sum": float(x.sum(dtype=np.float64)),
    }


def main():
    store, min_genes, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ours = sys.argv[4] if len(sys.argv) > 4 else None
    started = time.perf_counter()
    batches, parts, bundles = [], [], 0
    for path in sorted(glob.glob(os.path.join(store, "bundles", "*", "matrix.zarr"))):
        fqid = os.path.basename(os.path.dirname(path))
        a = ad.read_zarr(path)
        a = a[a.obs["n_genes"] >= min_genes].copy()
        a.obs_names = [f"{fqid}:{c}" for c in a.obs_names]
        a.var = a.var[[]]
        parts.append(a)
        bundles += 1
        # Every bundle's AnnData keeps its own gene index (20,000 strings, ~1.4 MB):
        # a million cells' 10,000 bundles held at once ran out of 24 GB. Concatenating
        # every BATCH bundles as they are read is what a user does then.
        if len(parts) == BATCH:
            batches.append(ad.concat(parts, join="outer"))
            parts = []
    if parts:
        batches.append(ad.concat(parts, join="outer"))
    del parts
    result = ad.concat(batches, join="outer")
    del batches
    result.write_zarr(out)
    seconds = time.perf_counter() - started
    report = {
        "seconds": seconds,
        "bundles": bundles,
        # ru_maxrss is in KiB on Linux.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        **summary(result),
    }
    if ours:
        theirs = ad.read_zarr(ours)
        report["ours"] = summary(theirs)
        same = (
            sorted(theirs.obs_names) == sorted(result.obs_names)
            and sorted(theirs.var_names) == sorted(result.var_names)
        )
        if same:
            a = result[sorted(result.obs_names), sorted(result.var_names)].X
            b = theirs[sorted(theirs.obs_names), sorted(theirs.var_names)].X
            same = (a != b).nnz == 0
        report["same_matrix"] = bool(same)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
