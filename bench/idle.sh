#!/usr/bin/env bash
# Memory per 10k idle client connections: Bulwark lb vs HAProxy (both one
# thread, same backend), in one run. Prints a markdown table.
#   N=10000 bash bench/idle.sh
source "$(dirname "$0")/lib.sh"
N=${N:-10000}
need_pkgs haproxy:haproxy python3:python3
cd "$BENCH_ROOT"
BIN=$(bulwark_bin)
# HAProxy sizes its descriptor needs as two per connection of its maxconn
# (N + 1000) and refuses to start below that. Idle client connections take
# one descriptor each (no server side yet), so when the hard limit cannot be
# raised (no CAP_SYS_RESOURCE), let HAProxy start anyway (`no strict-limits`)
# as long as N connections fit.
want=$((2 * N + 2100))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then ulimit -Hn "$want" 2>/dev/null || true; fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
hard=$(ulimit -n)
HA_LIMITS=
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
  if [ "$hard" -lt $((N + 1000)) ]; then
    N=$((hard - 1000))
    echo "descriptor limit $hard: holding only $N connections" >&2
  fi
  HA_LIMITS=$'  ulimit-n '"$hard"$'\n  no strict-limits'
  echo "descriptor limit $hard < $want: HAProxy runs with 'ulimit-n $hard' and 'no strict-limits'" >&2
fi
new_workdir
b=$(free_port); p_ha=$(free_port); p_bw=$(free_port)
python3 -m http.server "$b" --bind 127.0.0.1 >/dev/null 2>&1 & pids+=($!)
cat >"$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn $((N + 1000))
${HA_LIMITS}
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
fds() { ls /proc/$1/fd | wc -l; }
measure() { # pid port -> KiB before, after, descriptors opened meanwhile
  local pid=$1 port=$2 before after fd0 fd1
  before=$(rss "$pid")
  fd0=$(fds "$pid")
  rm -f "$work/ready"
  python3 - "$port" "$N" "$work/ready" <<'PY' &
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.socket(); s.connect(("127.0.0.1", port)); socks.append(s)
open(sys.argv[3], "w").close()
time.sleep(30)
PY
  local cpid=$!
  for _ in $(seq 1 600); do [ -f "$work/ready" ] && break; sleep 0.1; done
  # Every connection accepted (not just queued in the backlog), RSS settled.
  for _ in $(seq 1 100); do [ $(( $(fds "$pid") - fd0 )) -ge "$N" ] && break; sleep 0.1; done
  sleep 2
  after=$(rss "$pid")
  fd1=$(fds "$pid")
  kill "$cpid" 2>/dev/null || true
  wait "$cpid" 2>/dev/null || true
  rm -f "$work/ready"
  echo "$before $after $((fd1 - fd0))"
}
read -r ha0 ha1 hafd < <(measure "$ha_pid" "$p_ha")
read -r bw0 bw1 bwfd < <(measure "$bw_pid" "$p_bw")
for x in "haproxy $hafd" "bulwark $bwfd"; do
  set -- $x
  echo "$1: $2 descriptors opened while $N connections were held" >&2
  if [ "$2" -lt "$N" ]; then echo "WARNING: $1 accepted only $2 of $N connections" >&2; fi
done
echo
echo "Idle connections: $N held open to each balancer (one thread each), RSS from /proc; $(nproc) cores, $(date -u +%F)."
echo
echo "| balancer | connections accepted | RSS before (KiB) | RSS with $N idle (KiB) | bytes per connection | MiB per 10k |"
echo "|---|---:|---:|---:|---:|---:|"
row() { printf "| %s | %d | %d | %d | %.0f | %.1f |\n" "$1" "$4" "$2" "$3" "$(python3 -c "print(($3-$2)*1024/$N)")" "$(python3 -c "print(($3-$2)*1024/$N*10000/1048576)")"; }
row haproxy "$ha0" "$ha1" "$hafd"
row bulwark "$bw0" "$bw1" "$bwfd"
echo
echo "| ratio | bytes per connection |"
echo "|---|---:|"
printf "| Bulwark / HAProxy | %.1fx |\n" "$(python3 -c "print(($bw1-$bw0)/max($ha1-$ha0,1))")"
