"""Checks outputs of requests that filter on and carry open fields.

usage: check_fields.py SOURCES.json CHECKS.json

SOURCES.json describes every cell of the test's bundles as the test generated them:
{"cells": [{"id", "organ", "batch", "cell_type", "score", "doublet", "age", "counts"}],
 "genes": [...]}. CHECKS.json lists {"case", "format", "path"}: an output (as downloaded)
of the request named by "case". For each, the cells are selected here with pandas, with
SQL's rule that a comparison with a missing value is false (written out per case, not
parsed from the request), and the output, read with the format's reader (anndata,
loompy, scipy and pandas, through reference.py's loaders), must hold exactly those
cells in order, their counts, and every field's value; zarr and h5ad must also keep
the fields' dtypes (categorical, nullable Int64 and boolean, float64 with NaN).
Prints "ok fields N" for N outputs checked.
"""
import json
import math
import os
import sys
import tempfile

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402

FIELDS = ["cell_type", "score", "doublet", "age", "organ", "batch"]


def select(df, case):
    """The cells a case selects; a missing value compares false."""
    ct, score, doublet, age = df.cell_type, df.score, df.doublet, df.age
    if case == "b_cells_lung_or_blood_not_doublet":
        # `not doublet` negates `doublet == true`, which is false for a missing value.
        return (ct == "B cell") & df.organ.isin(["lung", "blood"]) & ~(doublet == True)  # noqa: E712
    if case == "age_null_or_high_score":
        return age.isna() | ((score > 1.5).fillna(False) & (df.batch != 2))
    if case == "not_in_types_with_age":
        return ct.notna() & ~ct.isin(["T cell"]) & (age >= 30).fillna(False)
    raise SystemExit(f"unknown case {case}")


def norm(v):
    """A value as both sides can state it: None for missing, else bool, float or str."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) or v == "":
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, str):
        if v in ("True", "False"):
            return v == "True"
        try:
            return float(v)
        except ValueError:
            return v
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    return str(v)


def main():
    sources = json.load(open(sys.argv[1]))
    checks = json.load(open(sys.argv[2]))
    df = pd.DataFrame(sources["cells"])
    df["age"] = df["age"].astype("Float64")
    df["score"] = df["score"].astype("Float64")
    n = 0
    for c in checks:
        fmt, case = c["format"], c["case"]
        want = df[select(df, case).fillna(False).astype(bool)]
        output = c["path"]
        output = {"h5ad": os.path.join(output, "matrix.h5ad"),
                  "loom": os.path.join(output, "matrix.loom"),
                  "mtx": os.path.join(output, "filtered_feature_bc_matrix.tar.gz")}.get(fmt, output)
        with tempfile.TemporaryDirectory() as tmp:
            got = reference.LOADERS[fmt](output, tmp, FIELDS, np.uint32)
        what = f"{case} in {fmt}"
        if got.obs_names != list(want.id):
            raise SystemExit(f"{what}: cells {got.obs_names[:5]}... ({len(got.obs_names)}), "
                             f"expected {list(want.id)[:5]}... ({len(want)})")
        if len(want) == 0:
            raise SystemExit(f"{what}: the case selects no cell; it tests nothing")
        dense = np.asarray(got.x.todense()) if got.x.shape[0] else np.zeros((0, 0))
        if [list(map(int, r)) for r in dense] != list(want.counts):
            raise SystemExit(f"{what}: counts differ")
        for f in FIELDS:
            if f not in got.obs:
                raise SystemExit(f"{what}: no obs column {f} (has {list(got.obs)})")
            g = [norm(v) for v in got.obs[f].tolist()]
            w = [norm(v) for v in want[f].tolist()]
            if g != w:
                i = next(k for k, (a, b) in enumerate(zip(g, w)) if a != b) if len(g) == len(w) else 0
                raise SystemExit(f"{what}: {f}[{i}] is {g[i] if g else None!r}, expected {w[i] if w else None!r}")
        if fmt in ("zarr", "h5ad"):
            dtypes = {f: str(got.obs[f].dtype) for f in FIELDS}
            expected = {"cell_type": "category", "score": "float64", "doublet": "boolean",
                        "age": "Int64", "organ": "object", "batch": "int64"}
            if dtypes != expected:
                raise SystemExit(f"{what}: dtypes {dtypes}, expected {expected}")
            cats = sorted(got.obs["cell_type"].cat.categories)
            if cats != ["B cell", "NK cell", "T cell"]:
                raise SystemExit(f"{what}: categories {cats}")
        n += 1
    print(f"ok fields {n}")


if __name__ == "__main__":
    main()
