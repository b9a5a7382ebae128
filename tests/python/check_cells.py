"""Checks a request's cell table against the obs of its matrix as anndata reads it.

usage: check_cells.py OUTPUT FORMAT CELLS.csv CELLS.jsonl

OUTPUT is the result (a zarr directory, or the .h5ad file) and FORMAT says which. The
CSV must have the header `cell,bundle,<obs columns in order>` and one row per cell in
the matrix's order: `cell` its obs name, `bundle` the part of it before the first `:`,
every field its value (a missing value empty; booleans True/False). The JSON lines must
hold the same, one object per cell with the same keys in the same order, a missing
value null. A categorical column must be categorical in the matrix. Prints
"ok cells N" for N rows checked.
"""
import csv
import json
import math
import sys

import anndata
import numpy as np
import pandas as pd


def norm(v):
    """A value as both sides can state it: None for missing, else bool, float or str."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) or v == "":
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    return str(v)


def norm_csv(v, kind):
    """A CSV field as `norm` states the matrix's value of that kind."""
    if v == "":
        return None
    if kind == "b":
        return {"True": True, "False": False}[v]
    if kind in "iuf":
        return float(v)
    return v


def main():
    output, fmt, csv_path, jsonl_path = sys.argv[1:5]
    adata = anndata.read_h5ad(output) if fmt == "h5ad" else anndata.read_zarr(output)
    obs = adata.obs
    names = list(obs.index)
    columns = list(obs.columns)
    if not any(isinstance(obs[c].dtype, pd.CategoricalDtype) for c in columns):
        raise SystemExit(f"no categorical column in {columns}")
    header = ["cell", "bundle"] + columns
    kinds = {}
    for c in columns:
        dt = obs[c].dtype
        if pd.api.types.is_bool_dtype(dt):
            kinds[c] = "b"
        elif pd.api.types.is_numeric_dtype(dt) and not isinstance(dt, pd.CategoricalDtype):
            kinds[c] = "f"
        else:
            kinds[c] = "s"
    want = [[norm(v) for v in obs[c]] for c in columns]

    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    if rows[0] != header:
        raise SystemExit(f"csv header {rows[0]}, not {header}")
    rows = rows[1:]
    if len(rows) != len(names):
        raise SystemExit(f"csv has {len(rows)} rows, the matrix {len(names)} cells")
    with open(jsonl_path) as f:
        lines = [json.loads(line, object_pairs_hook=list) for line in f]
    if len(lines) != len(names):
        raise SystemExit(f"jsonl has {len(lines)} lines, the matrix {len(names)} cells")
    for i, name in enumerate(names):
        bundle = name.split(":", 1)[0]
        row, pairs = rows[i], lines[i]
        if [k for k, _ in pairs] != header:
            raise SystemExit(f"jsonl line {i}: keys {[k for k, _ in pairs]}, not {header}")
        values = [v for _, v in pairs]
        if row[0] != name or values[0] != name or row[1] != bundle or values[1] != bundle:
            raise SystemExit(f"row {i}: {row[:2]} / {values[:2]}, not {name}, {bundle}")
        for j, c in enumerate(columns):
            w = want[j][i]
            got_csv = norm_csv(row[j + 2], kinds[c])
            got_json = norm(values[j + 2])
            if got_csv != w or got_json != w:
                raise SystemExit(f"row {i} ({name}) {c}: csv {got_csv!r}, jsonl {got_json!r}, "
                                 f"matrix {w!r}")
    print(f"ok cells {len(names)}")


if __name__ == "__main__":
    main()
