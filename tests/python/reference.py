#!/usr/bin/env python3
"""Independent reference for a matrix request: recomputes from the sources the matrix
the service should return for a request and compares it with the service's output.

Usage: reference.py SPEC.json | reference.py --self-test, where SPEC is
  {"output": ".../matrix.zarr",
   "bundles": [{"fqid", "source", "format", "orientation"?, "split_index"?, "metadata"?}],
   "filter": tree or null, "fields": [...] or null, "genes": [...] or null}
Sources are read with check_bundles.py's readers. Prints one `ok reference: ...` line;
on the first difference prints `MISMATCH: ...` to stderr and exits 1.
"""
import json
import operator
import os
import sys
import tempfile
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


def compare(output, x, obs_names, fields, columns, ids, names, dtype):
    """Reads the service's output and asserts it equals the expected matrix."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = anndata.read_zarr(output)
    gx = got.X
    if not sp.issparse(gx) or gx.format != "csr":
        fail(f"X is not a CSR matrix but {type(gx).__name__}")
    if gx.dtype != dtype:
        fail(f"X dtype {gx.dtype}, expected {dtype}")
    if np.count_nonzero(gx.data == 0):
        fail(f"X stores {np.count_nonzero(gx.data == 0)} explicit zeros")
    if not gx.has_sorted_indices or not gx.has_canonical_format:
        fail("X indices are not sorted / canonical within rows")
    for what, g, w in (("obs_names", strs(got.obs_names), obs_names), ("var_names", strs(got.var_names), ids)):
        if len(g) != len(w) or first_diff(g, w) is not None:
            i = first_diff(g, w)
            fail(f"{len(g)} {what}, expected {len(w)}" + ("" if i is None else f"; [{i}] is {g[i]!r}, expected {w[i]!r}"))
    if gx.shape != x.shape:
        fail(f"X shape {gx.shape}, expected {x.shape}")
    if "feature_name" not in got.var.columns:
        fail("var has no feature_name column")
    i = first_diff(strs(got.var["feature_name"]), names)
    if i is not None:
        fail(f"var feature_name of {ids[i]!r} is {strs(got.var['feature_name'])[i]!r}, expected {names[i]!r}")
    diff = sp.csr_matrix(gx, dtype=np.float64) != x
    if diff.nnz:
        rr, cc = diff.nonzero()
        k = np.lexsort((cc, rr))[0]
        r, c = rr[k], cc[k]
        fail(f"X differs in {diff.nnz} entries; first: cell {obs_names[r]!r}, gene {ids[c]!r}: got {float(gx[r, c])!r}, expected {float(x[r, c])!r}")
    want_cols = [f.split(".", 1)[1] for f in fields]
    if list(got.obs.columns) != want_cols:
        fail(f"obs columns {list(got.obs.columns)}, expected {want_cols}")
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
            fail(f"obs {name} of cell {obs_names[i]!r} is {list(g)[i]!r}, expected {w[i]!r}")
    print(f"ok reference: {x.shape[0]} cells x {x.shape[1]} genes, nnz {x.nnz}, dtype {dtype}")


def run(spec):
    """Computes the expected matrix for a spec and compares the output with it."""
    x, obs_names, fields, columns, ids, names, dtype = expected(spec)
    compare(spec["output"], x, obs_names, fields, columns, ids, names, dtype)


def write_case(path, dense, dtype, obs_names, obs, ids, names):
    """Writes a hand-made expected output with anndata, as the service would."""
    a = anndata.AnnData(X=sp.csr_matrix(np.array(dense, dtype=dtype).reshape(len(obs_names), len(ids))),
                        obs=pd.DataFrame(obs, index=pd.Index(obs_names, dtype=object)),
                        var=pd.DataFrame({"feature_name": names}, index=pd.Index(ids, dtype=object)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's notes about future Zarr defaults
        a.write_zarr(path)


def self_test():
    """Runs the self-test in a temporary directory removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="reference-self-test-") as d:
        self_test_in(d)


def self_test_in(d):
    """Checks the reference against hand-computed outputs of a tiny request in d, and
    that one changed value is caught."""
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
    good = os.path.join(d, "good.zarr")
    write_case(good, dense, np.float32, cells, obs, ids, names)
    run(dict(spec, output=good))
    # No cell passes, nothing is pruned: all seven features, and C's 0.1 makes it float64.
    empty = os.path.join(d, "empty.zarr")
    empty_obs = {f.split(".")[1]: (np.zeros(0, np.uint32) if f == "cell.n_genes" else np.zeros(0)
                                   if f in ("cell.total_counts", "cell.pct_mito") else np.array([], dtype=object))
                 for f in ALL_FIELDS}
    write_case(empty, [], np.float64, [], empty_obs, ["E1", "E2", "E3", "E4", "E5", "E6", "E7"],
               ["CD3E", "ACTB", "MT-CO1", "GAPDH", "CD3E", "mt-nd1", "CD3E"])
    run({"bundles": bundles, "filter": {"op": ">", "field": "cell.n_genes", "value": 100},
         "fields": None, "genes": None, "output": empty})
    # One changed value each: an X entry, a cell's n_genes, a cell's pct_mito.
    bad_n = dict(obs, n_genes=np.array([2, 4, 3, 2], dtype=np.uint32))
    bad_pct = dict(obs, pct_mito=[200 / 3, 100 / 9 * (1 + 1e-9), 0.0, 25 / 1.5])
    for what, x_, obs_ in (("X", dense[:9] + [0.75] + dense[10:], obs), ("n_genes", dense, bad_n),
                           ("pct_mito", dense, bad_pct)):
        bad = os.path.join(d, f"bad-{what}.zarr")
        write_case(bad, x_, np.float32, cells, obs_, ids, names)
        print(f"self-test: a changed {what} value must be reported:", flush=True)
        try:
            run(dict(spec, output=bad))
        except SystemExit as e:
            if e.code != 1:
                raise
            continue
        raise AssertionError(f"self-test: a changed {what} value was not detected")
    print("ok self-test")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    elif len(sys.argv) == 2:
        run(json.load(open(sys.argv[1])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
