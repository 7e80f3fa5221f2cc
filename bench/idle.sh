#!/usr/bin/env bash
# Memory per 10k idle client connections: Bulwark lb vs HAProxy (both one
# thread, same backend), in one run. Prints a markdown table.
#   N=10000 bash bench/idle.sh
source "$(dirname "$0")/lib.sh"
N=${N:-8000}   # 10000 needs more than the 20000-fd hard limit HAProxy asks for here
need_pkgs haproxy:haproxy nginx:nginx-light
cd "$BENCH_ROOT"
cargo build --release -q -p bulwark
BIN="$BENCH_ROOT/target/release/bulwark"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
b=$(free_port); p_ha=$(free_port); p_bw=$(free_port)
python3 -m http.server "$b" --bind 127.0.0.1 >/dev/null 2>&1 & pids+=($!)
cat >"$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn $((N + 1000))
defaults
  mode http
  timeout connect 3s
  timeout client 300s
  timeout server 30s
  timeout http-keep-alive 300s
  timeout http-request 300s
frontend www
  bind 127.0.0.1:$p_ha
  default_backend app
backend app
  server b 127.0.0.1:$b
CONF
haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 & ha_pid=$!; pids+=($ha_pid)
cat >"$work/lb.toml" <<CONF
threads = 1
[timeouts]
client_header = "300s"
[[frontend]]
name = "www"
bind = "127.0.0.1:$p_bw"
backend = "app"
access_log = false
[[backend]]
name = "app"
[[backend.server]]
name = "b"
address = "127.0.0.1:$b"
CONF
RUST_LOG=warn "$BIN" lb -c "$work/lb.toml" >/dev/null & bw_pid=$!; pids+=($bw_pid)
for p in $b $p_ha $p_bw; do wait_port "$p"; done
rss() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
measure() { # pid port -> KiB before, after
  local pid=$1 port=$2 before after
  before=$(rss "$pid")
  rm -f /tmp/bulwark-idle-ready
  python3 - "$port" "$N" <<'PY' &
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.socket(); s.connect(("127.0.0.1", port)); socks.append(s)
open("/tmp/bulwark-idle-ready", "w").close()
time.sleep(30)
PY
  local cpid=$!
  for _ in $(seq 1 600); do [ -f /tmp/bulwark-idle-ready ] && break; sleep 0.1; done
  sleep 2
  after=$(rss "$pid")
  kill "$cpid" 2>/dev/null || true
  wait "$cpid" 2>/dev/null || true
  rm -f /tmp/bulwark-idle-ready
  echo "$before $after"
}
read -r ha0 ha1 < <(measure "$ha_pid" "$p_ha")
read -r bw0 bw1 < <(measure "$bw_pid" "$p_bw")
echo
echo "Idle connections: $N held open to each balancer (one thread each), RSS from /proc; $(nproc) cores, $(date -u +%F)."
echo
echo "| balancer | RSS before (KiB) | RSS with $N idle (KiB) | bytes per connection | MiB per 10k |"
echo "|---|---:|---:|---:|---:|"
row() { printf "| %s | %d | %d | %.0f | %.1f |\n" "$1" "$2" "$3" "$(python3 -c "print(($3-$2)*1024/$N)")" "$(python3 -c "print(($3-$2)*1024/$N*10000/1048576)")"; }
row haproxy "$ha0" "$ha1"
row bulwark "$bw0" "$bw1"
