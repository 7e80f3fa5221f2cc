#!/usr/bin/env bash
# Failover benchmark: 3 Bulwark db voters on loopback, steady writers
# (`bulwark db probe`: WRITERS concurrent clients, one autocommit INSERT
# each, then a 10 ms pause), then, ROUNDS times: kill -9 the primary, measure
#   election     kill -> first `/v1/status` poll (every 20 ms, what
#                `bulwark db status` reads) showing another node primary
#                in a newer term
#   writes back  kill -> first write acknowledged in the new term
#                (end of the request, as the client saw it)
#   write gap    last acknowledged write before the kill -> first one
#                after it (the outage a client sees)
# then restart the killed node on its data dir and wait until it has caught
# up as a replica before the next round. Prints a markdown table
# (min / median / max over the rounds).
#
#   bash bench/failover.sh                 # 5 rounds
#   ROUNDS=3 WRITERS=4 SETTLE=3 BULWARK=path/to/bulwark bash bench/failover.sh
# PROBE_LOG=file keeps the probe's JSON lines (and file.kills: round, node,
# term, kill time) for a closer look.
# Nodes use the default timing of `bulwark db` (heartbeat 100 ms, election
# timeout 400-800 ms) unless ELECTION_TIMEOUT / HEARTBEAT are set (e.g. 1s).
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-5}
WRITERS=${WRITERS:-4}
SETTLE=${SETTLE:-3}          # seconds of steady writes before each kill
TIMEOUT=${TIMEOUT:-30}       # give up on a round after this many seconds
cd "$BENCH_ROOT"
need_pkgs python3:python3
BULWARK=$(bulwark_bin)

WORK=$(mktemp -d)
declare -A PID
PROBE=
cleanup() {
  [ -n "$PROBE" ] && kill "$PROBE" 2>/dev/null
  for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PID[@]}" $PROBE; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  if [ -n "${PROBE_LOG:-}" ]; then cp "$WORK/probe.jsonl" "$PROBE_LOG" 2>/dev/null || true; cat "$WORK"/kills >> "$PROBE_LOG.kills" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

SECRET=bench-secret-0123456789abcdef
export BULWARK_DB_SECRET=$SECRET
write_db_cluster_configs "$WORK" "$SECRET"
start_node() {
  local i=$1
  RUST_LOG=warn "$BULWARK" db -c "$WORK/db$i.toml" >> "$WORK/out$i" 2>> "$WORK/err$i" &
  PID[$i]=$!
}
for i in 1 2 3; do start_node "$i"; done
NODES="127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}"
status() { "$BULWARK" db status --nodes "$NODES" 2>/dev/null || true; }
# "id term" of the primary, empty if none.
primary() { status | awk '$3 == "primary" { print $1, $4; exit }'; }
for _ in $(seq 1 300); do [ -n "$(primary)" ] && break; sleep 0.1; done
[ -n "$(primary)" ] || { echo "no primary elected" >&2; status >&2; cat "$WORK"/err* >&2; exit 1; }

"$BULWARK" db probe --nodes "$NODES" --writers "$WRITERS" > "$WORK/probe.jsonl" 2> "$WORK/probe.err" &
PROBE=$!
for _ in $(seq 1 300); do grep -q '"ok":true' "$WORK/probe.jsonl" 2>/dev/null && break; sleep 0.1; done
grep -q '"ok":true' "$WORK/probe.jsonl" || { echo "the probe wrote nothing:" >&2; cat "$WORK/probe.err" >&2; exit 1; }

# Lines "round killed_id old_term kill_time" for the analysis.
: > "$WORK/kills"
# Exit 0 when a line on stdin is a write acknowledged in a term above argv[1].
ACKED_IN_NEWER_TERM='
import json, sys
old = int(sys.argv[1])
for line in sys.stdin:
    try: e = json.loads(line)
    except ValueError: continue
    if e.get("ev") == "write" and e.get("ok") and e["term"] > old: sys.exit(0)
sys.exit(1)'
for r in $(seq 1 "$ROUNDS"); do
  sleep "$SETTLE"
  victim= term=
  read -r victim term < <(primary) || true
  if [ -z "${victim:-}" ]; then echo "round $r: no primary before the kill" >&2; status >&2; exit 1; fi
  echo "round $r: $(cut -d' ' -f1-3 /proc/loadavg) load; killing primary node $victim (term $term, pid ${PID[$victim]})" >&2
  t_kill=$EPOCHREALTIME
  kill -9 "${PID[$victim]}"
  wait "${PID[$victim]}" 2>/dev/null || true
  echo "$r $victim $term $t_kill" >> "$WORK/kills"
  # Wait for a write acknowledged in a newer term.
  deadline=$((SECONDS + TIMEOUT))
  until tail -n 4000 "$WORK/probe.jsonl" | python3 -c "$ACKED_IN_NEWER_TERM" "$term"
  do
    if [ $SECONDS -ge $deadline ]; then echo "round $r: no write acknowledged ${TIMEOUT}s after the kill" >&2; status >&2; break; fi
    sleep 0.2
  done
  sleep 1
  # Bring the killed node back on its data dir; wait until it replicates again.
  start_node "$victim"
  deadline=$((SECONDS + 60))
  until status | awk -v id="$victim" '$1 == id && $3 == "replica" && $6 != "?" && $6 < 1000 { ok = 1 } END { exit !ok }'; do
    if [ $SECONDS -ge $deadline ]; then echo "round $r: node $victim did not rejoin within 60 s" >&2; status >&2; exit 1; fi
    sleep 0.2
  done
  echo "round $r: node $victim is back as a replica" >&2
done
sleep 1
kill "$PROBE" 2>/dev/null || true
wait "$PROBE" 2>/dev/null || true
PROBE=
status >&2

python3 - "$WORK/probe.jsonl" "$WORK/kills" "$WRITERS" "$(nproc)" <<'PY'
import json, statistics, sys
events = []
for line in open(sys.argv[1]):
    try: events.append(json.loads(line))
    except ValueError: pass
kills = [l.split() for l in open(sys.argv[2]) if l.strip()]
writes = [e for e in events if e.get("ev") == "write"]
ok = sorted((e for e in writes if e["ok"]), key=lambda e: e["end"])
stat = [e for e in events if e.get("ev") == "status"]
rows = []
bounds = [float(k[3]) for k in kills] + [float("inf")]
for i, (r, victim, term, t) in enumerate(kills):
    victim, term, t = int(victim), int(term), float(t)
    nxt = bounds[i + 1]
    new = next(((s["t"] - t, n) for s in stat if t < s["t"] < nxt for n in s["nodes"]
                if n["role"] == "primary" and n["term"] > term and n["id"] != victim), None)
    elect = new[0] if new else None
    # A term more than one above the old one means a split or repeated vote.
    who = f"node {new[1]['id']} in term {new[1]['term']}" if new else "none"
    back = next((e["end"] - t for e in ok if t < e["end"] < nxt and e["term"] > term), None)
    before = [e["end"] for e in ok if e["end"] <= t]
    gap = (back + t - before[-1]) if back is not None and before else None
    failed = sum(1 for e in writes if not e["ok"] and t <= e["end"] < (t + back if back else nxt))
    rows.append((int(r), victim, elect, back, gap, failed))
    f = lambda x: "-" if x is None else f"{x:.3f} s"
    print(f"round {r}: killed node {victim} (term {term}); new primary ({who}) seen after {f(elect)}, "
          f"first write acked after {f(back)}, write gap {f(gap)}, failed writes {failed}", file=sys.stderr)

def col(k): return [x[k] for x in rows if x[k] is not None]
def cell(v, fn): return f"{fn(v):.2f}" if v else "–"
print()
print(f"Failover: 3 voters on loopback, {len(rows)} kill -9 of the primary, {sys.argv[3]} writers "
      f"(one INSERT at a time each, 10 ms apart); {sys.argv[4]} cores.")
print()
print("| measure | min s | median s | max s | rounds |")
print("|---|---:|---:|---:|---:|")
for name, k in [("kill → new primary visible (election)", 2), ("kill → first acknowledged write", 3),
                ("write gap (last ack before → first ack after)", 4)]:
    v = col(k)
    print(f"| {name} | {cell(v, min)} | {cell(v, statistics.median)} | {cell(v, max)} | {len(v)}/{len(rows)} |")
print()
print("Per round (s): " + "; ".join(
    f"{r}: node {vi} killed, election {'-' if e is None else f'{e:.2f}'}, writes {'-' if b is None else f'{b:.2f}'}"
    f", {fl} failed" for r, vi, e, b, g, fl in rows) + ".")
PY
