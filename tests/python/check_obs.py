#!/usr/bin/env python3
"""Independent check of a bundle's cell fields: reads the bundle with anndata.read_zarr
and compares every obs column with the values the test wrote, built here in pandas.

Usage: check_obs.py SPEC.json, where SPEC is
  {"zarr": PATH, "cells": [...],
   "columns": [{"name": N, "type": "string|integer|number|boolean",
                "values": [... null for missing ...], "categories": [...]?}]}
"categories" (strings only) is the categorical's categories in stored order, unused ones
included. Expected dtypes: string -> category, integer -> int64 (Int64 with nulls),
number -> float64 (NaN for null), boolean -> bool (boolean with nulls). The built-in
columns n_genes, total_counts and pct_mito come first in column order. Prints one line
per column; exits 1 on the first mismatch.
"""
import json
import sys
import warnings

import anndata
import numpy as np
import pandas as pd


def fail(msg):
    print(f"MISMATCH: {msg}", file=sys.stderr)
    sys.exit(1)


def expected(col, index):
    values, kind = col["values"], col["type"]
    nulls = any(v is None for v in values)
    if kind == "string":
        cats = col.get("categories")
        if cats is None:
            cats = sorted({v for v in values if v is not None})
        data = pd.Categorical(values, categories=cats, ordered=False)
    elif kind == "integer":
        data = pd.array(values, dtype="Int64") if nulls else np.array(values, dtype=np.int64)
    elif kind == "number":
        data = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    elif kind == "boolean":
        data = pd.array(values, dtype="boolean") if nulls else np.array(values, dtype=bool)
    else:
        fail(f"unknown type {kind}")
    return pd.Series(data, index=index, name=col["name"])


def main():
    spec = json.load(open(sys.argv[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = anndata.read_zarr(spec["zarr"])
    index = pd.Index(spec["cells"])
    if list(got.obs_names) != spec["cells"]:
        fail("cell ids differ")
    names = [c["name"] for c in spec["columns"]]
    want_order = ["n_genes", "total_counts", "pct_mito"] + names
    if list(got.obs.columns) != want_order:
        fail(f"obs columns {list(got.obs.columns)} != {want_order}")
    for col in spec["columns"]:
        want = expected(col, index)
        have = got.obs[col["name"]]
        have.index = index
        try:
            pd.testing.assert_series_equal(have, want, check_index_type=False, check_exact=True)
        except AssertionError as e:
            fail(f"{col['name']}: {e}")
        print(f"ok {col['name']}: {have.dtype}, {int(have.isna().sum())} null of {len(have)}")


if __name__ == "__main__":
    main()
