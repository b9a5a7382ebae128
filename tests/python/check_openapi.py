#!/usr/bin/env python3
"""Checks docs/openapi.yaml: it is a valid OpenAPI document, and its operations are
exactly the server's routes.

Usage: check_openapi.py [--spec PATH] ROUTE...
where each ROUTE is "METHOD /path" (one argument with a space, or METHOD and /path as
two arguments), e.g.  check_openapi.py "POST /v1/matrix" "GET /v1/matrix/{id}".
Path parameters may be written {id}, :id or <id>; all compare as {id}.

Loads the spec with PyYAML, validates it with openapi_spec_validator.validate, then
compares the set of (METHOD, path) in `paths` with the routes given. Prints
"ok openapi: N routes" and exits 0 when they are equal; exits 1 with a message
otherwise (and on a spec that does not load or validate).
"""
import os
import re
import sys

import yaml
from openapi_spec_validator import validate

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SPEC = os.path.normpath(os.path.join(HERE, "..", "..", "docs", "openapi.yaml"))

# The operation keys of an OpenAPI 3.0 Path Item.
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def fail(msg):
    print(f"check_openapi: {msg}", file=sys.stderr)
    sys.exit(1)


def normalize_path(path):
    """/v1/matrix/:id and /v1/matrix/<id> -> /v1/matrix/{id}; no trailing slash."""
    path = re.sub(r":([A-Za-z_][A-Za-z0-9_]*)", r"{\1}", path)
    path = re.sub(r"<([A-Za-z_][A-Za-z0-9_]*)>", r"{\1}", path)
    if len(path) > 1:
        path = path.rstrip("/")
    return path


def parse_routes(args):
    tokens = " ".join(args).split()
    if not tokens:
        fail("no routes given; usage: check_openapi.py [--spec PATH] 'METHOD /path'...")
    if len(tokens) % 2:
        fail(f"routes must be METHOD /path pairs, got an odd number of words: {tokens}")
    routes = set()
    for method, path in zip(tokens[::2], tokens[1::2]):
        if method.lower() not in METHODS:
            fail(f"not an HTTP method: {method!r} (before {path!r})")
        if not path.startswith("/"):
            fail(f"not a path: {path!r} (after {method!r})")
        routes.add((method.upper(), normalize_path(path)))
    return routes


def spec_routes(spec):
    paths = spec.get("paths") or {}
    routes = set()
    for path, item in paths.items():
        for key in item:
            if key in METHODS:
                routes.add((key.upper(), normalize_path(path)))
    return routes


def show(routes):
    return "\n".join(f"  {m} {p}" for m, p in sorted(routes, key=lambda r: (r[1], r[0])))


def main(argv):
    spec_path = DEFAULT_SPEC
    if argv[:1] == ["--spec"]:
        if len(argv) < 2:
            fail("--spec needs a path")
        spec_path, argv = argv[1], argv[2:]
    expected = parse_routes(argv)

    try:
        with open(spec_path, encoding="utf-8") as f:
            spec = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        fail(f"{spec_path}: cannot load: {e}")
    if not isinstance(spec, dict):
        fail(f"{spec_path}: not a YAML mapping")
    try:
        validate(spec)
    except Exception as e:  # the validator's error classes vary between versions
        # A jsonschema ValidationError's str() dumps the whole meta-schema; its message
        # and the path to the offending node are what a reader needs.
        where = "/".join(str(p) for p in getattr(e, "absolute_path", []) or [])
        what = str(getattr(e, "message", e))
        if len(what) > 500:  # an unresolvable $ref quotes the whole document
            what = what[:500] + " ..."
        fail(f"{spec_path}: invalid OpenAPI at /{where}: {what}")

    documented = spec_routes(spec)
    if documented != expected:
        msg = [f"{spec_path}: operations do not match the server's routes"]
        if expected - documented:
            msg.append("routes the spec does not document:\n" + show(expected - documented))
        if documented - expected:
            msg.append("operations in the spec the server does not route:\n" + show(documented - expected))
        fail("\n".join(msg))
    print(f"ok openapi: {len(documented)} routes")


if __name__ == "__main__":
    main(sys.argv[1:])
