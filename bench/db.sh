#!/usr/bin/env bash
# Single-row INSERT commit latency (p50, p99) and throughput, same load loop
# (`bulwark-dbbench`, crates/dbbench: N concurrent clients, one autocommit
# INSERT per transaction, for D seconds) against:
#   (a) plain SQLite, WAL, synchronous=FULL, one connection per client
#   (b) Bulwark, 3 voters on loopback (through bulwark_db_api::Client)
#   (c) MariaDB primary + 1 semi-sync replica on loopback (InnoDB,
#       innodb_flush_log_at_trx_commit=1, sync_binlog=1)
#   (d) the same with the replica's sync_relay_log=1 (it syncs each event
#       it acknowledges, as a Raft follower does)
# Usage: bench/db.sh [clients] [seconds] [rounds]   (BULWARK=path/to/bulwark and
# DBBENCH=path/to/bulwark-dbbench to skip the builds; without DBBENCH it is
# built like bulwark, or, with no cargo, the bulwark-dbbench beside $BULWARK)
# Rounds are interleaved (a b c d, a b c d, ...); the summary is the median per leg.
# Installs mariadb-server/-client with apt-get if missing; the four mariadbd
# run in the foreground on temporary datadirs, loopback ports and their own
# sockets (the system service is never used), and are stopped at the end.
set -euo pipefail
CLIENTS=${1:-16}
SECONDS_RUN=${2:-10}
ROUNDS=${3:-2}
# A relative DBBENCH is relative to the caller's directory, as BULWARK is.
if [ -n "${DBBENCH:-}" ] && [ "${DBBENCH#/}" = "$DBBENCH" ]; then DBBENCH="$PWD/$DBBENCH"; fi
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"
need_pkgs mariadbd:mariadb-server mariadb:mariadb-client mariadb-install-db:mariadb-server python3:python3
BULWARK=$(bulwark_bin)
# The load generator: its own binary, so that its MySQL client stays out of
# bulwark's.
dbbench_bin() {
  if [ -n "${DBBENCH:-}" ]; then
    [ -x "$DBBENCH" ] || { echo "DBBENCH=$DBBENCH is not an executable" >&2; return 1; }
    echo "$DBBENCH"
    return 0
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    local beside
    beside="$(dirname "$BULWARK")/bulwark-dbbench"
    [ -x "$beside" ] && { echo "$beside"; return 0; }
    echo "cargo not found: set DBBENCH=/path/to/bulwark-dbbench" >&2
    return 1
  fi
  (cd "$BENCH_ROOT" && cargo build --release -q -p bulwark-dbbench >&2) || return 1
  local dir=${CARGO_TARGET_DIR:-$BENCH_ROOT/target}
  case $dir in /*) ;; *) dir=$BENCH_ROOT/$dir ;; esac
  echo "$dir/release/bulwark-dbbench"
}
DBBENCH=$(dbbench_bin)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- (b) Bulwark: 3 voters ----
SECRET=bench-secret-0123456789abcdef
write_db_cluster_configs "$WORK" "$SECRET"
for i in 1 2 3; do
  RUST_LOG=warn "$BULWARK" db -c "$WORK/db$i.toml" > "$WORK/out$i" 2> "$WORK/err$i" &
  PIDS+=($!)
done
NODES="127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}"
for _ in $(seq 1 300); do
  if BULWARK_DB_SECRET=$SECRET "$BULWARK" db status --nodes "$NODES" 2>/dev/null | grep -q primary; then break; fi
  sleep 0.1
done

# ---- (c) MariaDB: primary + semi-sync replica (MariaDB's defaults: the
# replica acknowledges once the event is in its relay log, which it syncs
# every 10000 events, sync_relay_log=10000) and (d) the same with
# sync_relay_log=1: the replica syncs its relay log for every event, as a
# Raft follower syncs its log before it acknowledges (start_pair, lib.sh). ----
start_pair mprimary mreplica 1
MURL=$PAIR_URL
start_pair dprimary dreplica 11 --sync-relay-log=1 --sync-relay-log-info=1
DURL=$PAIR_URL

# ---- interleaved rounds ----
RESULTS=()
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r: $(uptime)" >&2
  A=$("$DBBENCH" sqlite --path "$WORK/plain.db" --clients "$CLIENTS" --seconds "$SECONDS_RUN")
  B=$(BULWARK_DB_SECRET=$SECRET "$DBBENCH" cluster --nodes "$NODES" --clients "$CLIENTS" --seconds "$SECONDS_RUN")
  C=$("$DBBENCH" mariadb --url "$MURL" --clients "$CLIENTS" --seconds "$SECONDS_RUN")
  D=$("$DBBENCH" mariadb --url "$DURL" --clients "$CLIENTS" --seconds "$SECONDS_RUN")
  echo "round $r: $A $B $C $D" >&2
  RESULTS+=("$A" "$B" "$C" "$D")
done
check_pair mprimary
check_pair dprimary

python3 - "$CLIENTS" "$SECONDS_RUN" "${RESULTS[@]}" <<'PY'
import json, statistics, sys
clients, secs = sys.argv[1], sys.argv[2]
rs = [json.loads(x) for x in sys.argv[3:]]
legs = [("(a) SQLite sync=FULL", 0), ("(b) Bulwark 3 voters", 1), ("(c) MariaDB + semi-sync replica", 2),
        ("(d) MariaDB + semi-sync replica, sync_relay_log=1", 3)]
rounds = [rs[i:i + 4] for i in range(0, len(rs), 4)]
def med(leg, key): return statistics.median(r[leg][key] for r in rounds)
print(f"\n{len(rounds)} round(s), {clients} clients x {secs} s per leg; per round:")
for i, r in enumerate(rounds, 1):
    print("  round %d: " % i + ", ".join(f"{n.split()[0]} {x['writes_per_sec']:.0f}/s p50 {x['p50_us']/1000:.2f} p99 {x['p99_us']/1000:.2f}" for (n, _), x in zip(legs, r)))
print()
print("| leg | writes/s | p50 ms | p99 ms |")
print("| --- | ---: | ---: | ---: |")
for name, i in legs:
    print(f"| {name} | {med(i,'writes_per_sec'):.0f} | {med(i,'p50_us')/1000:.2f} | {med(i,'p99_us')/1000:.2f} |")
print()
print("| ratio (medians) | writes/s | p50 | p99 |")
print("| --- | ---: | ---: | ---: |")
for name, j in [("Bulwark / SQLite", 0), ("Bulwark / MariaDB (c)", 2), ("Bulwark / MariaDB (d)", 3)]:
    print(f"| {name} | {med(1,'writes_per_sec')/med(j,'writes_per_sec'):.2f}x | {med(1,'p50_us')/med(j,'p50_us'):.2f}x | {med(1,'p99_us')/med(j,'p99_us'):.2f}x |")
PY
