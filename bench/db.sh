#!/usr/bin/env bash
# Single-row INSERT commit latency (p50, p99) and throughput, same load loop
# (`bulwark db bench`: N concurrent clients, one autocommit INSERT per
# transaction, for D seconds) against:
#   (a) plain SQLite, WAL, synchronous=FULL, one connection per client
#   (b) Bulwark, 3 voters on loopback (through bulwark_db::Client)
#   (c) MariaDB primary + 1 semi-sync replica on loopback (InnoDB,
#       innodb_flush_log_at_trx_commit=1, sync_binlog=1)
# Usage: bench/db.sh [clients] [seconds] [rounds]   (BULWARK=path/to/bulwark to skip the build)
# Rounds are interleaved (a b c, a b c, ...); the summary is the median per leg.
# Installs mariadb-server/-client with apt-get if missing; the two mariadbd
# run in the foreground on temporary datadirs, loopback ports and their own
# sockets (the system service is never used), and are stopped at the end.
set -euo pipefail
CLIENTS=${1:-16}
SECONDS_RUN=${2:-10}
ROUNDS=${3:-2}
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"
need_pkgs mariadbd:mariadb-server mariadb:mariadb-client mariadb-install-db:mariadb-server python3:python3
BULWARK=$(bulwark_bin)
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
PORTS=($(free_port) $(free_port) $(free_port))
for i in 1 2 3; do
  {
    echo "node_id = $i"; echo "listen = \"127.0.0.1:${PORTS[$((i-1))]}\""; echo "data_dir = \"$WORK/db$i\""
    echo "secret = \"$SECRET\""; echo "bootstrap = true"
    for j in 1 2 3; do echo "[[peer]]"; echo "id = $j"; echo "address = \"127.0.0.1:${PORTS[$((j-1))]}\""; done
  } > "$WORK/db$i.toml"
  RUST_LOG=warn "$BULWARK" db -c "$WORK/db$i.toml" > "$WORK/out$i" 2> "$WORK/err$i" &
  PIDS+=($!)
done
NODES="127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}"
for _ in $(seq 1 300); do
  if BULWARK_DB_SECRET=$SECRET "$BULWARK" db status --nodes "$NODES" 2>/dev/null | grep -q primary; then break; fi
  sleep 0.1
done

# ---- (c) MariaDB: primary + semi-sync replica ----
MPORT=$(free_port)
RPORT=$(free_port)
start_mariadb() { # name port server_id extra-args...
  local name=$1 port=$2 id=$3; shift 3
  mariadb-install-db --no-defaults --user=root --datadir="$WORK/$name" --skip-test-db \
    --auth-root-authentication-method=socket > "$WORK/$name.install" 2>&1
  /usr/sbin/mariadbd --no-defaults --user=root --datadir="$WORK/$name" \
    --socket="$WORK/$name.sock" --port="$port" --bind-address=127.0.0.1 --skip-name-resolve \
    --pid-file="$WORK/$name.pid" --log-error="$WORK/$name.err" --server-id="$id" \
    --default-storage-engine=InnoDB --innodb-flush-log-at-trx-commit=1 --sync-binlog=1 \
    --innodb-buffer-pool-size=128M --max-connections=256 "$@" > "$WORK/$name.out" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 300); do
    mariadb --no-defaults -uroot -S "$WORK/$name.sock" -e 'SELECT 1' >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "mariadb $name did not start:" >&2; cat "$WORK/$name.err" >&2; return 1
}
mp() { mariadb --no-defaults -uroot -S "$WORK/mprimary.sock" -N -B -e "$1"; }
mr() { mariadb --no-defaults -uroot -S "$WORK/mreplica.sock" -N -B -e "$1"; }
start_mariadb mprimary "$MPORT" 1 --log-bin="$WORK/mprimary/binlog" --binlog-format=ROW \
  --rpl-semi-sync-master-enabled=ON --rpl-semi-sync-master-wait-point=AFTER_SYNC \
  --rpl-semi-sync-master-timeout=30000
start_mariadb mreplica "$RPORT" 2 --relay-log="$WORK/mreplica/relay" --rpl-semi-sync-slave-enabled=ON
mp "CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'repl'; GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';
    CREATE DATABASE bench; CREATE USER 'bench'@'127.0.0.1' IDENTIFIED BY 'bench';
    GRANT ALL ON bench.* TO 'bench'@'127.0.0.1';"
mr "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$MPORT, MASTER_USER='repl', MASTER_PASSWORD='repl',
    MASTER_USE_GTID=slave_pos; START SLAVE;"
# The primary switches semi-sync on once the replica has connected and
# caught up with the binary log: wait for both.
for _ in $(seq 1 300); do
  [ "$(mp "SHOW STATUS LIKE 'Rpl_semi_sync_master_clients'" | cut -f2)" = 1 ] &&
    [ "$(mp "SHOW STATUS LIKE 'Rpl_semi_sync_master_status'" | cut -f2)" = ON ] && break
  sleep 0.1
done
SEMI=$(mp "SHOW STATUS LIKE 'Rpl_semi_sync_master_status'" | cut -f2)
CLIENTS_SEMI=$(mp "SHOW STATUS LIKE 'Rpl_semi_sync_master_clients'" | cut -f2)
if [ "$SEMI" != ON ] || [ "$CLIENTS_SEMI" != 1 ]; then
  echo "semi-sync not active (status=$SEMI clients=$CLIENTS_SEMI)" >&2
  mr "SHOW SLAVE STATUS\G" >&2 || true
  exit 1
fi
echo "mariadb $(mp 'SELECT VERSION()'): semi-sync master status=$SEMI, semi-sync replicas=$CLIENTS_SEMI" >&2
MURL="mysql://bench:bench@127.0.0.1:$MPORT/bench"
# The setup statements above ran before the replica connected (async).
NO_TX0=$(mp "SHOW STATUS LIKE 'Rpl_semi_sync_master_no_tx'" | cut -f2)

# ---- interleaved rounds ----
RESULTS=()
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r: $(uptime)" >&2
  A=$("$BULWARK" db bench sqlite --path "$WORK/plain.db" --clients "$CLIENTS" --seconds "$SECONDS_RUN")
  B=$(BULWARK_DB_SECRET=$SECRET "$BULWARK" db bench cluster --nodes "$NODES" --clients "$CLIENTS" --seconds "$SECONDS_RUN")
  C=$("$BULWARK" db bench mariadb --url "$MURL" --clients "$CLIENTS" --seconds "$SECONDS_RUN")
  echo "round $r: $A $B $C" >&2
  RESULTS+=("$A" "$B" "$C")
done

# Semi-sync must still be on, with no commit that fell back to async.
SEMI=$(mp "SHOW STATUS LIKE 'Rpl_semi_sync_master_status'" | cut -f2)
NO_TX=$(mp "SHOW STATUS LIKE 'Rpl_semi_sync_master_no_tx'" | cut -f2)
YES_TX=$(mp "SHOW STATUS LIKE 'Rpl_semi_sync_master_yes_tx'" | cut -f2)
NO_TX=$((NO_TX - NO_TX0))
echo "mariadb after the run: semi-sync status=$SEMI, acked commits=$YES_TX, unacked (async) commits during the run=$NO_TX" >&2
if [ "$SEMI" != ON ] || [ "$NO_TX" != 0 ]; then echo "WARNING: MariaDB semi-sync fell back to async" >&2; fi

python3 - "$CLIENTS" "$SECONDS_RUN" "${RESULTS[@]}" <<'PY'
import json, statistics, sys
clients, secs = sys.argv[1], sys.argv[2]
rs = [json.loads(x) for x in sys.argv[3:]]
legs = [("(a) SQLite sync=FULL", 0), ("(b) Bulwark 3 voters", 1), ("(c) MariaDB + semi-sync replica", 2)]
rounds = [rs[i:i + 3] for i in range(0, len(rs), 3)]
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
for name, j in [("Bulwark / SQLite", 0), ("Bulwark / MariaDB", 2)]:
    print(f"| {name} | {med(1,'writes_per_sec')/med(j,'writes_per_sec'):.2f}x | {med(1,'p50_us')/med(j,'p50_us'):.2f}x | {med(1,'p99_us')/med(j,'p99_us'):.2f}x |")
PY
