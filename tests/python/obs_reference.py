#!/usr/bin/env python3
"""What pandas says of an h5ad's obs columns, for the ingest's cell-field summaries.

    obs_reference.py PATH | scanpy-pbmc68k

Prints JSON: {"path": PATH, "columns": {NAME: {"nulls": N, "values": {VALUE: COUNT}} or
{"nulls": N, "min": X, "max": Y}}}, read with anndata (independently of cellmatrix's
reader). `scanpy-pbmc68k` names scanpy's bundled 10x_pbmc68k_reduced.h5ad.
"""

import importlib.util
import json
import sys
import warnings
from pathlib import Path

import anndata
import pandas as pd

warnings.simplefilter("ignore")

arg = sys.argv[1]
if arg == "scanpy-pbmc68k":
    # The wheel's file, found without importing scanpy (slow, and not needed).
    root = Path(importlib.util.find_spec("scanpy").submodule_search_locations[0])
    path = root / "datasets" / "10x_pbmc68k_reduced.h5ad"
else:
    path = Path(arg)

obs = anndata.read_h5ad(path, backed="r").obs
columns = {}
for name in obs.columns:
    col = obs[name]
    out = {"nulls": int(col.isna().sum())}
    if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object:
        counts = col.value_counts()
        out["values"] = {str(k): int(v) for k, v in counts.items() if v > 0}
    elif col.dtype == bool:
        out["values"] = {str(k).lower(): int(v) for k, v in col.value_counts().items()}
    else:
        out["min"] = float(col.min())
        out["max"] = float(col.max())
    columns[name] = out
print(json.dumps({"path": str(path), "columns": columns}))
