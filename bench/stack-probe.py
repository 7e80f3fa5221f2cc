#!/usr/bin/env python3
"""Latency by kind of request while bench/stack.sh loads a stack.

wrk reports one latency distribution for the whole mix; it cannot tell a
slow post from a slow read. This probe is one more client, on one kept
HTTPS connection, that sends the three kinds of request of bench/stack.lua
in turn (static file, API read, API post) for SECONDS and prints, per kind,
how many it sent and the p50, p90, p99 and largest latency in ms, as one
JSON line. One request at a time, so it adds little load.

    stack-probe.py URL SECONDS STATIC_PATH RUN_ID
"""
import http.client
import json
import ssl
import sys
import time
import urllib.parse


def percentile(sorted_ms, q):
    if not sorted_ms:
        return None
    return round(sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))], 2)


def main():
    url, seconds, static_path, run_id = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    u = urllib.parse.urlsplit(url)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = None
    kinds = {"static": [], "read": [], "post": []}
    errors = 0
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        kind = ("static", "read", "post")[n % 3]
        n += 1
        if kind == "static":
            args = ("GET", static_path, None, {})
        elif kind == "read":
            args = ("GET", "/api/messages?limit=20", None, {})
        else:
            text = f"probe-{run_id}-{n}"
            body = json.dumps({"author": "probe", "text": text})
            args = ("POST", "/api/messages", body, {"Content-Type": "application/json", "Idempotency-Key": text})
        try:
            if conn is None:
                conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
            t0 = time.monotonic()
            conn.request(args[0], args[1], body=args[2], headers=args[3])
            resp = conn.getresponse()
            resp.read()
            ms = (time.monotonic() - t0) * 1000
            if resp.status >= 400:
                errors += 1
            else:
                kinds[kind].append(ms)
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            errors += 1
            if conn is not None:
                conn.close()
            conn = None
    out = {"errors": errors}
    for kind, ms in kinds.items():
        ms.sort()
        out[kind] = {"n": len(ms), "p50": percentile(ms, 0.5), "p90": percentile(ms, 0.9),
                     "p99": percentile(ms, 0.99), "max": round(ms[-1], 2) if ms else None}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
