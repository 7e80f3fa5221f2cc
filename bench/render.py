#!/usr/bin/env python3
"""Render docs/BENCHMARKS.md from bench/BENCHMARKS.template.md and the
results bench/run-all.sh stored (RESULTS/<name>.json, .md, .log).

usage: render.py TEMPLATE RESULTS_DIR OUT

Placeholders in the template:
  {{machine}}          the machine of the newest result
  {{summary}}          one line per benchmark: when, load, duration, status
  {{run:NAME}}         date, commit, load before/after, exact command, the
                       script's tables and its per-round log lines
  {{verdict:NAME}}     the target check computed from the tables (lb, db,
                       failover, stack)
  {{failover:bulwark}} a one-line summary of the failover medians
"""
import json
import os
import re
import sys

NAMES = ["lb", "idle", "tls", "lbprofile", "web", "db", "failover", "stack"]
TITLES = {"lb": "load balancer", "idle": "idle connections", "tls": "HTTPS", "lbprofile": "where the lb's time goes", "web": "web", "db": "database",
          "failover": "failover", "stack": "whole stack vs. classic"}
CLASSIC = "classic (HAProxy, nginx, gunicorn, MariaDB)"
BULWARK_PY = "Bulwark, same Python app"


def load(results):
    out = {}
    for n in NAMES:
        j = os.path.join(results, n + ".json")
        if not os.path.exists(j):
            continue
        meta = json.load(open(j))
        md = os.path.join(results, n + ".md")
        log = os.path.join(results, n + ".log")
        meta["table"] = open(md).read().strip() if os.path.exists(md) else ""
        meta["log"] = open(log).read() if os.path.exists(log) else ""
        out[n] = meta
    return out


def machine_line(m):
    return (f"- CPU: {m.get('cpu') or 'unknown'}, `nproc` = {m.get('cores')}\n"
            f"- RAM: {m.get('ram')}\n"
            f"- Kernel: {m.get('kernel')} ({m.get('os')})\n"
            f"- Disk (where the benchmarks keep their data, `$TMPDIR`): {m.get('disk')}"
            f"{', ' + m['disk_kind'] if m.get('disk_kind') else ''}; "
            f"4 KiB write + `fdatasync`: {m.get('fdatasync')}\n"
            f"- Host: `{m.get('host')}`")


def cpu_text(c):
    if not c:
        return ""
    top = f" ({', '.join(c['top'])})" if c.get("top") else ""
    return f"{c['busy']} busy{top}"


def load_text(meta):
    t = (f"load average (1/5/15 min) {meta['load_before'].replace(' ', ' / ')} before, "
         f"{meta['load_after'].replace(' ', ' / ')} after")
    if meta.get("cpu_before"):
        t += (f"; CPU use in the second before: {cpu_text(meta['cpu_before'])}, "
              f"in the second after: {cpu_text(meta.get('cpu_after'))}")
    return t


def run_block(n, meta):
    if meta is None:
        return f"_Not run yet: `bash bench/run-all.sh {n}`._"
    lines = []
    status = "" if meta["exit"] == 0 else f" **The script failed (exit {meta['exit']}); see the log below.**"
    lines.append(f"Run {meta['start']} – {meta['end'][11:]} UTC ({meta['seconds']} s), commit "
                 f"`{meta['commit']}`, {load_text(meta)}.{status}")
    lines.append("")
    lines.append("```sh")
    lines.append(meta["command"])
    lines.append("```")
    lines.append("")
    if meta["table"]:
        lines.append(meta["table"])
        lines.append("")
    # Per-round lines (the raw JSON reports of db.sh are summarised in its
    # table already).
    keep = [l.rstrip() for l in meta["log"].splitlines()
            if re.match(r"\s*(round \d|mariadb|descriptor limit|WARNING|semi-sync|\w+: \d+ descriptors"
                        r"|== |classic[ :-]|bulwark-\w+[ :-])", l)
            and '{"target"' not in l]
    if meta["exit"] != 0:
        keep = [l.rstrip() for l in meta["log"].splitlines()][-30:]
    if keep:
        lines.append("Log of the run (per round):")
        lines.append("")
        lines.append("```text")
        lines.extend(keep)
        lines.append("```")
    return "\n".join(lines).rstrip()


def rows(table):
    """Markdown table rows as lists of cells (header and rule lines skipped)."""
    out = []
    for l in table.splitlines():
        if not l.startswith("|") or re.match(r"^\|[\s:|-]+\|$", l):
            continue
        out.append([c.strip() for c in l.strip().strip("|").split("|")])
    return out


def num(s):
    m = re.match(r"[-+]?[0-9.]+", s.replace(",", ""))
    return float(m.group(0)) if m else None


def verdict(n, meta):
    if meta is None or meta["exit"] != 0 or not meta["table"]:
        return ""
    r = {row[0]: row for row in rows(meta["table"])}
    try:
        if n == "lb":
            # | threads | target | req/s | p50 | p99 | vs HAProxy | vs direct |
            legs = {}
            for row in rows(meta["table"]):
                if len(row) == 7 and row[0].isdigit():
                    legs.setdefault(row[0], {})[row[1]] = row
            parts, met = [], bool(legs)
            for t, r in legs.items():
                ha, bw, di = r["haproxy"], r["bulwark"], r["direct"]
                rps = num(bw[2]) / num(ha[2])
                p99ok = num(bw[4]) <= num(ha[4])
                vsd = num(bw[2]) / num(di[2])
                met = met and rps >= 1.25 and p99ok and vsd >= 0.6
                parts.append(f"{t} thread{'s' if t != '1' else ''}: {rps:.2f}× HAProxy req/s, p99 {bw[4]} vs "
                             f"{ha[4]} ms ({'≤' if p99ok else '>'}), {vsd:.2f} of direct")
            return (f"Target (≥ 1.25× HAProxy req/s with p99 ≤ HAProxy's, ≥ 0.6 of direct, at each thread count) in this run: "
                    f"**{'met' if met else 'not met'}** — " + "; ".join(parts) + ".")
        if n == "db":
            s = r["Bulwark / SQLite"]
            m = r.get("Bulwark / MariaDB (c)") or r["Bulwark / MariaDB"]
            a, b = num(s[1]), num(m[1])
            met = a >= 0.5 and b > 1.0
            d = r.get("Bulwark / MariaDB (d)")
            extra = f" (and {num(d[1]):.2f}× MariaDB with the replica syncing every event, leg d)" if d else ""
            return (f"Target (Bulwark's writes/s within 2× of SQLite's and ahead of MariaDB's, leg c) in this run: "
                    f"**{'met' if met else 'not met'}** — {a:.2f}× SQLite, {b:.2f}× MariaDB{extra}.")
        if n == "failover":
            per = re.findall(r"writes ([0-9.]+|-)", meta["table"])
            ok = [p for p in per if p != "-" and float(p) < 2.0]
            return (f"Target (writes back < 2 s after a primary kill, the chaos suite's): "
                    f"**{'met' if per and len(ok) == len(per) else 'not met'}** in this run — "
                    f"{len(ok)} of {len(per)} kills under 2 s.")
        if n == "stack":
            return stack_verdict(meta["table"])
        if n == "idle":
            return idle_verdict(meta["table"])
        if n == "tls":
            # The ratio columns are the last half of the numbers: the table
            # has one "vs HAProxy" column per measure.
            lines = [row for row in rows(meta["table"]) if len(row) >= 10 and row[1] == "bulwark"]
            worst = min(num(x) for row in lines for x in row[2 + (len(row) - 2) // 2:])
            met = bool(lines) and worst >= 1.0
            return (f"Target (≥ HAProxy on every line) in this run: **{'met' if met else 'not met'}** — "
                    f"the lowest ratio is {worst:.2f}.")
    except (KeyError, TypeError, ZeroDivisionError, IndexError):
        return "_(target check: the table did not have the expected rows)_"
    return ""


def idle_verdict(table):
    """The idle-memory target: at most 2,000 bytes per plain idle client
    connection, and for TLS at most 1.5 times HAProxy's own TLS figure,
    at every connection count measured."""
    legs = [r for r in rows(table) if len(r) == 5 and r[1] in ("plain", "tls")]
    if not legs:
        return "_(target check: the table has no ratio rows)_"
    parts, met = [], True
    for held, kind, bw, ha, ratio in legs:
        ok = num(bw) <= 2000 if kind == "plain" else num(bw) <= 1.5 * num(ha)
        met = met and ok
        parts.append(f"{kind} at {held}: {bw} bytes ({ratio} HAProxy's {ha})")
    return (f"Target (≤ 2,000 bytes per plain idle connection; TLS ≤ 1.5× HAProxy's TLS figure) in this run: "
            f"**{'met' if met else 'not met'}** — " + "; ".join(parts) + ".")


def stack_verdict(table):
    """The target for the whole-stack comparison: same Python app,
    Bulwark's req/s >= the classic stack's, p99 no worse, less memory in
    each mix; under 0.1 % failed and no lost acknowledged post in each
    fault. Memory is the sum of every process's PSS: a page shared by
    several processes (the bulwark binary mapped by each role, a forked
    worker's pages) counts once in all, where a sum of RSS counts it once
    per process."""
    legs = {(r[0], r[1]): r for r in rows(table) if len(r) == 10 and r[0] != "stack"}
    faults = [r for r in rows(table) if len(r) == 9 and r[0] != "stack"]
    parts, met = [], True
    for (stack, mix), py in legs.items():
        if stack != BULWARK_PY or (CLASSIC, mix) not in legs:
            continue
        cl = legs[(CLASSIC, mix)]
        rps, p99, pss = num(py[2]) / num(cl[2]), num(py[4]) <= num(cl[4]), num(py[8]) < num(cl[8])
        met = met and rps >= 1.0 and p99 and pss
        parts.append(
            f"{mix}: {rps:.2f}× the classic req/s, p99 {py[4]} vs {cl[4]} ms, "
            f"memory (PSS) {py[8]} vs {cl[8]} MiB (RSS {py[7]} vs {cl[7]})"
        )
    if not parts:
        return "_(target check: the table has no Python legs of both stacks)_"
    bw = [r for r in faults if r[0] == BULWARK_PY]
    bad = [r for r in bw if num(r[4]) >= 0.1 or r[8] != "0"]
    met = met and bool(bw) and not bad
    if bw:
        parts.append(f"faults: {len(bw) - len(bad)} of {len(bw)} under 0.1 % failed with no acknowledged post lost")
    cdb = [r for r in faults if r[0] == CLASSIC and "primary" in r[1]]
    if cdb:
        parts.append(f"the classic stack's primary kill: {cdb[0][4]} % failed, writes back {cdb[0][6]}")
    return (f"Target (same Python app: ≥ the classic stack's req/s, p99 no worse, less memory; under 0.1 % "
            f"failed and no lost write through every fault) in this run: **{'met' if met else 'not met'}** — "
            + "; ".join(parts) + ".")


def failover_summary(meta):
    if meta is None or meta["exit"] != 0:
        return "not measured yet (`bash bench/run-all.sh failover`)"
    r = {row[0]: row for row in rows(meta["table"])}
    e = next((v for k, v in r.items() if k.startswith("kill → new primary")), None)
    w = next((v for k, v in r.items() if k.startswith("kill → first acknowledged")), None)
    if not e or not w:
        return "see the Failover section"
    return (f"measured here: new primary after {e[2]} s (median; {e[1]}–{e[3]} s), first acknowledged "
            f"write after {w[2]} s (median; {w[1]}–{w[3]} s), over {w[4].split('/')[-1]} kills")


def summary(res):
    out = ["| benchmark | run (UTC) | duration | load before → after (1 min) | status |",
           "|---|---|---:|---|---|"]
    for n in NAMES:
        m = res.get(n)
        if m is None:
            out.append(f"| {TITLES[n]} | – | – | – | not run |")
            continue
        out.append(f"| {TITLES[n]} | {m['start']} | {m['seconds']} s | "
                   f"{m['load_before'].split()[0]} → {m['load_after'].split()[0]} | "
                   f"{'ok' if m['exit'] == 0 else 'FAILED (exit %d)' % m['exit']} |")
    return "\n".join(out)


def main():
    template, results, out = sys.argv[1:4]
    res = load(results)
    text = open(template).read()
    newest = max(res.values(), key=lambda m: m["start"], default=None)
    machine = machine_line(newest["machine"]) if newest else "_No benchmark has run yet._"
    others = {json.dumps(m["machine"], sort_keys=True) for m in res.values()}
    if len({json.dumps({k: v for k, v in json.loads(o).items() if k != "fdatasync"}, sort_keys=True)
            for o in others}) > 1:
        machine += "\n- **Note: the sections were not all run on this machine; see each section's commit/date.**"
    # Placeholders are checked in the template itself: what the benchmarks
    # print (a Rust symbol's `{{closure}}`) is inserted as it is.
    known = {"{{machine}}", "{{summary}}", "{{failover:bulwark}}"}
    known |= {"{{%s:%s}}" % (k, n) for n in NAMES for k in ("run", "verdict")}
    left = [p for p in re.findall(r"\{\{[^}]*\}\}", text) if p not in known]
    if left:
        sys.exit(f"unknown placeholders in {template}: {left}")
    text = text.replace("{{machine}}", machine)
    text = text.replace("{{summary}}", summary(res))
    text = text.replace("{{failover:bulwark}}", failover_summary(res.get("failover")))
    for n in NAMES:
        text = text.replace("{{run:%s}}" % n, run_block(n, res.get(n)))
        text = text.replace("{{verdict:%s}}" % n, verdict(n, res.get(n)))
    text = re.sub(r"\n{3,}", "\n\n", text)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    open(out, "w").write(text)


if __name__ == "__main__":
    main()
