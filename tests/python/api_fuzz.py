#!/usr/bin/env python3
"""Fuzzes the HTTP API of a running `cellmatrix serve` against docs/openapi.yaml.

Usage: api_fuzz.py --url BASE --store DIR [--spec PATH] [--examples N] [--seed N]
(defaults: 150 examples per operation, seed 6, or CELLMATRIX_FUZZ_EXAMPLES and
CELLMATRIX_FUZZ_SEED)

STORE is the server's filesystem store, with bundles ingested. In order:

1. Canaries: a bundle list the service must never read, as `secret/list.tsv` in the
   store (not under `lists/`) and as `outside.tsv` next to the store; each names an fqid
   that appears nowhere else, so an answer carrying it shows the list was read.
2. One real request, run to the end, for a real request id and a real fqid to build
   injections from.
3. Key-injection cases, sent verbatim with http.client (a client library would
   normalise `..` and re-encode `%2F`): fqids in `bundle_fqids` and request ids in
   `/v1/matrix/{id}` containing `/`, `..`, `%2F`, NUL, non-ASCII or very long; store
   keys in `bundle_fqids_url` that leave `lists/`; URLs of other schemes or of private
   hosts. Each must get a 4xx with a JSON message and no canary, and the store must hold
   exactly the same files afterwards.
4. schemathesis, with this file as its hooks module, over every phase (examples,
   coverage, fuzzing, stateful) in positive and negative mode, with the checks in
   CHECKS: no 5xx; status, content type, headers and body as the document says;
   schema-violating requests refused; every 4xx with a message; no canary.
5. The store afterwards: bundles, feature sets and catalog as before, and nothing new
   but `requests/{id}/` and `results/{id}/` under request ids, and `callers/{key}/`
   under a caller's hashed key (the quota's marks), and the calibration
   `service/calibration.json`.

Prints "ok api_fuzz: ..." and exits 0 when all hold; exits 1 naming what failed.
Requests go to BASE only: URLs given as `bundle_fqids_url` are rewritten to private
hosts the server refuses before any DNS lookup (see `offline_url`).
"""
import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zlib

CANARY_FQID = "cafecafe-0000-4000-8000-00000000c0de.2001-01-01T000000.000000Z"

# schemathesis' built-in checks that hold for this API, plus the two below. Left out:
# the auth checks (serve has none; API Gateway does SigV4), positive_data_acceptance (a
# schema-valid request may still name unknown genes or match no bundle, 400 and 422).
# use_after_free holds: a DELETE detaches its caller, who then gets 404.
CHECKS = [
    "not_a_server_error",
    "use_after_free",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "error_has_message",
    "no_canary",
]

# Hosts the driver refuses as private or loopback once resolved, none needing DNS.
OFFLINE_URLS = [
    "https://127.0.0.1/lists/pbmc.tsv",
    "https://localhost:8443/list.tsv",
    "https://[::1]/list",
    "https://10.1.2.3/list",
    "https://192.168.0.1/",
    "https://169.254.169.254/latest/meta-data/",
    "https://0.0.0.0/",
    "https://[::ffff:127.0.0.1]/",
    "https://100.64.0.1/",
    "https://[fd00::1]:443/x",
]


def offline_url(value):
    """`value`, or an https URL of a private host in its place when the server would
    fetch it: the fuzzer must not send requests, or DNS lookups, anywhere but BASE."""
    # A value is a URL when it holds "://"; it is fetched only when its scheme is https
    # (http is refused: only tests allow it, in code). URL parsers drop tabs and newlines and
    # lowercase the scheme, so anything that could parse to https contains "https".
    if "://" in value and "https" in re.sub(r"[\t\n\r]", "", value).lower():
        return OFFLINE_URLS[zlib.crc32(value.encode("utf-8", "surrogatepass")) % len(OFFLINE_URLS)]
    return value


def error_problem(status, content_type, text):
    """What is wrong with an error answer, or None."""
    if not 400 <= status < 600:
        return None
    if (content_type or "").split(";")[0].strip() != "application/json":
        return f"{status} with content type {content_type!r}, not application/json: {text[:200]!r}"
    try:
        body = json.loads(text)
    except ValueError:
        return f"{status} with a body that is not JSON: {text[:200]!r}"
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message.strip():
        return f"{status} without a message: {text[:200]!r}"
    return None


if __name__ != "__main__":
    # Loaded by schemathesis through SCHEMATHESIS_HOOKS.
    import schemathesis

    @schemathesis.hook
    def before_load_schema(context, raw_schema):
        # `cellmatrix serve` has no authentication: SigV4 is API Gateway's.
        raw_schema.pop("security", None)

    @schemathesis.hook
    def before_call(context, case, kwargs):
        body = case.body
        if isinstance(body, dict) and isinstance(body.get("bundle_fqids_url"), str):
            body["bundle_fqids_url"] = offline_url(body["bundle_fqids_url"])

    @schemathesis.check
    def error_has_message(ctx, response, case):
        """Every 4xx and 5xx is JSON with a non-empty `message`."""
        content_type = (response.headers.get("content-type") or [None])[0]
        problem = error_problem(response.status_code, content_type, response.text)
        if problem:
            raise AssertionError(problem)

    @schemathesis.check
    def no_canary(ctx, response, case):
        """No answer shows a list the service must not read."""
        if CANARY_FQID in response.text:
            raise AssertionError(f"the answer carries the canary fqid {CANARY_FQID}: the service read a list it must not")


def fail(msg):
    print(f"api_fuzz: {msg}", file=sys.stderr)
    sys.exit(1)


def send(base, method, path, body=None):
    """Sends `path` exactly as given; returns (status, content type, text)."""
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type"), r.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as e:
        return None, None, f"no answer: {e!r}"
    finally:
        conn.close()


def snapshot(store, skip=()):
    """Every file under `store` (but the temporary-file dir and `skip` prefixes) with
    its size and modification time."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(store):
        rel = os.path.relpath(dirpath, store)
        dirnames[:] = [d for d in dirnames if not (rel == "." and (d == ".tmp" or d in skip))]
        for f in filenames:
            path = os.path.join(dirpath, f)
            st = os.stat(path)
            files[os.path.relpath(path, store)] = (st.st_size, st.st_mtime_ns)
    return files


def diff(before, after):
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return ", ".join(changed[:10]) + (" ..." if len(changed) > 10 else "")


def wait_done(base, request_id):
    for _ in range(600):
        status, _, text = send(base, "GET", f"/v1/matrix/{request_id}")
        if status != 200:
            fail(f"GET /v1/matrix/{request_id}: {status} {text[:300]}")
        doc = json.loads(text)
        if doc["status"] != "Running":
            return doc
        time.sleep(0.1)
    fail(f"request {request_id} still Running after a minute")


def injection_cases(store, fqid, request_id):
    """(method, raw path, body) of every key-injection attempt."""
    outside = os.path.join(os.path.dirname(os.path.abspath(store)), "outside.tsv")
    # Same length as an fqid (62), so only the characters make them wrong.
    same_length = [
        fqid[:36] + "/" + fqid[37:],
        fqid[:59] + "/..",
        fqid[:60] + "..",
        fqid[:36] + "%2F" + fqid[39:],
        fqid[:33] + "%2f.." + fqid[38:],
        "../" * 20 + "..",
        "..%2F" * 12 + "..",
        fqid[:35] + "\u00e9" + fqid[37:],  # a 2-byte character across the uuid's end
        fqid[:61] + "\u0000",
        fqid[:36] + "\\" + fqid[37:],
    ]
    assert all(len(s.encode()) == 62 for s in same_length), same_length
    fqids = same_length + [
        "../" + fqid,
        fqid + "/..",
        fqid + "/../../catalog/gen/0.json",
        "../../catalog",
        "/" + fqid,
        fqid + "%2F..%2F..%2Fcatalog",
        "bundles/" + fqid,
        fqid.upper(),
        "a" * 1000,
        "a" * 100_000,
        "/" * 5000,
        "%2F" * 20_000,
        "\u00e9" * 31,
    ]
    cases = []
    for bad in fqids:
        cases.append(("POST", "/v1/matrix", {"bundle_fqids": [bad]}))
        cases.append(("POST", "/v1/matrix", {"bundle_fqids": [fqid, bad]}))
    keys = [
        "lists/../secret/list.tsv",
        "lists/../../outside.tsv",
        "lists/%2E%2E/secret/list.tsv",
        "lists/..%2Fsecret%2Flist.tsv",
        "lists%2F..%2Fsecret%2Flist.tsv",
        "lists/./../secret/list.tsv",
        "lists//secret/list.tsv",
        "lists\\..\\secret\\list.tsv",
        "secret/list.tsv",
        "catalog/gen/0.json",
        "../outside.tsv",
        outside,
        "/etc/passwd",
        "lists/",
        "lists",
        "lists/" + "a" * 2100,
        "lists/" + "a/" * 450 + "x",
        "lists/\u00e9",
        "file://" + outside,
        "file:///etc/passwd",
        "http://127.0.0.1:1/list.tsv",
        "ftp://example.org/list.tsv",
        "s3://bucket/secret/list.tsv",
    ] + OFFLINE_URLS
    for key in keys:
        cases.append(("POST", "/v1/matrix", {"bundle_fqids_url": key}))
    # Not a key, but a filter value may look like one.
    cases.append(("POST", "/v1/matrix", {"filter": {"op": "=", "field": "bundle.fqid", "value": "../secret/list.tsv"}}))
    ids = [
        ".",
        "..",
        "%2E%2E",
        "..%2F..%2Fcatalog%2Fgen%2F0.json",
        "..%2f..%2fbundles",
        request_id + "%2F..%2F..%2Fcatalog",
        request_id + "%2f..",
        request_id + "%00",
        request_id + "%20",
        request_id + "\\..",
        request_id.upper(),
        request_id[:31] + "%C3%A9",
        "%C3%A9" * 32,
        "a" * 1000,
        "0" * 10_000,
        "%2F" * 5000,
        "a" * 60_000,
    ]
    for bad in ids:
        for method in ("GET", "DELETE"):
            cases.append((method, f"/v1/matrix/{bad}", None))
        cases.append(("GET", f"/v1/matrix/{bad}/files", None))
    # A page cursor is compared with the result's paths, never made a key.
    for cursor in ["..%2F..%2Fcatalog", "%2F", "%00", "a" * 1025]:
        cases.append(("GET", f"/v1/matrix/{request_id}/files?cursor={cursor}&limit=0", None))
    # Paths a client would normalise: the server must not.
    for path in [
        f"/v1/matrix/{request_id}/..",
        f"/v1/matrix/{request_id}/../{request_id}",
        "/v1/matrix/../../catalog/gen/0.json",
        f"/v1/matrix/./{request_id}",
        f"/v1//matrix/{request_id}",
        f"/v1/matrix/{request_id}/",
    ]:
        for method in ("GET", "DELETE"):
            cases.append((method, path, None))
    return cases


def run_injections(base, store, fqid, request_id):
    before = snapshot(store)
    problems = []
    cases = injection_cases(store, fqid, request_id)
    for method, path, body in cases:
        status, ctype, text = send(base, method, path, body)
        what = f"{method} {path[:120]}" + (f" {json.dumps(body)[:160]}" if body is not None else "")
        if status is None or not 400 <= status < 500:
            problems.append(f"{what}: expected a 4xx, got {status}: {text[:200]}")
            continue
        problem = error_problem(status, ctype, text)
        if problem:
            problems.append(f"{what}: {problem}")
        if CANARY_FQID in text:
            problems.append(f"{what}: the answer carries the canary: the list was read")
    after = snapshot(store)
    if before != after:
        problems.append(f"the injection cases changed the store: {diff(before, after)}")
    return len(cases), [f"key injection: {p}" for p in problems]


def run_schemathesis(args):
    env = dict(os.environ, SCHEMATHESIS_HOOKS=os.path.abspath(__file__))
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "run", args.spec,
        "--url", args.url,
        "--checks", ",".join(CHECKS),
        "--max-examples", str(args.examples),
        "--seed", str(args.seed),
        # One worker: CPython 3.11 before 3.11.8 can fail in ast.parse when threads
        # parse at once, which hypothesis does to describe strategies.
        "--workers", "1",
        "--request-timeout", "60",
        "--generation-database", "none",
        "--no-color",
        "--output-truncate", "true",
    ]
    print("$ " + " ".join(cmd[2:]), flush=True)
    started = time.monotonic()
    # Anything it writes in its working directory goes to a scratch one, not the repository.
    with tempfile.TemporaryDirectory() as scratch:
        out = subprocess.run(cmd, env=env, cwd=scratch, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    print(out.stdout)
    problems = []
    if out.returncode != 0:
        problems.append(f"schemathesis exited with {out.returncode}: it found failures (above)")
    m = re.search(r"(\d+) generated", out.stdout)
    cases = int(m.group(1)) if m else 0
    m = re.search(r"Tested: (\d+)", out.stdout)
    operations = int(m.group(1)) if m else 0
    if cases == 0 or operations != 9:
        problems.append(f"schemathesis ran {cases} cases over {operations} operations; expected cases over all 9")
    return cases, operations, time.monotonic() - started, problems


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--spec", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "openapi.yaml"))
    # Fixed, so CI replays the same cases; CELLMATRIX_FUZZ_SEED and _EXAMPLES explore more.
    p.add_argument("--examples", type=int, default=int(os.environ.get("CELLMATRIX_FUZZ_EXAMPLES", 150)))
    p.add_argument("--seed", type=int, default=int(os.environ.get("CELLMATRIX_FUZZ_SEED", 6)))
    args = p.parse_args()
    store = os.path.abspath(args.store)
    args.store = store

    listing = f"# must never be read\n{CANARY_FQID}\n"
    os.makedirs(os.path.join(store, "secret"), exist_ok=True)
    with open(os.path.join(store, "secret", "list.tsv"), "w") as f:
        f.write(listing)
    with open(os.path.join(os.path.dirname(store), "outside.tsv"), "w") as f:
        f.write(listing)

    fqid = sorted(os.listdir(os.path.join(store, "bundles")))[0]
    status, _, text = send(args.url, "POST", "/v1/matrix", {"bundle_fqids": [fqid], "fields": ["cell.barcode"]})
    if status not in (200, 202):
        fail(f"a real request was refused: {status} {text[:300]}")
    request_id = json.loads(text)["id"]
    done = wait_done(args.url, request_id)
    if done["status"] != "Succeeded":
        fail(f"the real request did not succeed: {done}")

    # Every part runs whatever the one before found, so one run reports everything.
    # `service/` holds the service's own calibration, which finished requests update.
    fixed = snapshot(store, skip=("requests", "results", "callers", "service"))
    n_injections, problems = run_injections(args.url, store, fqid, request_id)
    cases, operations, seconds, found = run_schemathesis(args)
    problems += found
    now = snapshot(store, skip=("requests", "results", "callers", "service"))
    if now != fixed:
        problems.append(f"store: bundles, feature sets, catalog or canaries changed: {diff(fixed, now)}")
    for top in ("requests", "results", "callers"):
        for name in os.listdir(os.path.join(store, top)):
            if not re.fullmatch(r"[0-9a-f]{32}", name):
                problems.append(f"store: {top}/{name} is not under a request id or caller key")
    service = os.path.join(store, "service")
    for name in os.listdir(service) if os.path.isdir(service) else []:
        if name != "calibration.json":
            problems.append(f"store: service/{name} is not the calibration")
    if problems:
        fail("\n  ".join(["failed:"] + problems))
    print(f"ok api_fuzz: {n_injections} injection cases, schemathesis {cases} cases over "
          f"{operations} operations in {seconds:.0f} s")


if __name__ == "__main__":
    main()
