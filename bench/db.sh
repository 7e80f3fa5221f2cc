#!/usr/bin/env bash
# Single-row INSERT commit latency (p50, p99) and throughput:
#   (a) plain SQLite, WAL, synchronous=FULL, one connection per client
#   (b) Bulwark, 3 voters on loopback (through bulwark_db::Client)
# Usage: bench/db.sh [clients] [seconds]      (BULWARK=path/to/bulwark to skip the build)
# Not yet here: (c) MariaDB primary + semi-sync replica (needs a MySQL client
# in the load generator).
set -euo pipefail
CLIENTS=${1:-16}
SECONDS_RUN=${2:-10}
cd "$(dirname "$0")/.."
if [ -z "${BULWARK:-}" ]; then
  cargo build --release -p bulwark >&2
  BULWARK=${CARGO_TARGET_DIR:-target}/release/bulwark
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
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
for i in $(seq 1 300); do
  if BULWARK_DB_SECRET=$SECRET "$BULWARK" db status --nodes "$NODES" 2>/dev/null | grep -q primary; then break; fi
  sleep 0.1
done
A=$("$BULWARK" db bench sqlite --path "$WORK/plain.db" --clients "$CLIENTS" --seconds "$SECONDS_RUN")
B=$(BULWARK_DB_SECRET=$SECRET "$BULWARK" db bench cluster --nodes "$NODES" --clients "$CLIENTS" --seconds "$SECONDS_RUN")
python3 - "$A" "$B" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{'target':<28}{'clients':>8}{'writes/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'vs sqlite':>11}")
for name, r in [("(a) SQLite sync=FULL", a), ("(b) Bulwark 3 voters", b)]:
    print(f"{name:<28}{r['clients']:>8}{r['writes_per_sec']:>12.0f}{r['p50_us']/1000:>10.2f}{r['p99_us']/1000:>10.2f}{r['writes_per_sec']/a['writes_per_sec']:>10.2f}x")
PY
