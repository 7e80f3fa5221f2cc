#!/usr/bin/env bash
# Memory per idle client connection: Bulwark lb vs HAProxy (both one
# thread, same backend), in one run. Prints markdown tables.
#
# Each leg starts both balancers afresh, holds N connections open to each
# in turn and reads the growth of its RSS:
#   plain  connected over TCP, nothing sent
#   tls    the TLS 1.3 handshake done (ECDSA P-256, the same certificate
#          for both, no ALPN so HTTP/1.1), nothing sent after it
#
#   bash bench/idle.sh                      # N = 10000 and 50000, plain and tls
#   NS="10000" KINDS=plain bash bench/idle.sh
source "$(dirname "$0")/lib.sh"
NS=${NS:-${N:-10000 50000}}
KINDS=${KINDS:-plain tls}
need_pkgs haproxy:haproxy python3:python3 openssl:openssl
cd "$BENCH_ROOT"
BIN=$(bulwark_bin)
# Each idle client connection takes one descriptor in the balancer (no
# server side yet), and one in the client. HAProxy sizes its own needs as
# two per connection of its maxconn (N + 1000) and refuses to start below
# that, so raise the limit where the hard limit allows; where it cannot be
# raised (no CAP_SYS_RESOURCE), HAProxy starts anyway (`no strict-limits`)
# and a leg holds as many connections as the limit leaves room for.
max_n=0
for n in $NS; do [ "$n" -gt "$max_n" ] && max_n=$n; done
want=$((2 * max_n + 2100))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then ulimit -Hn "$want" 2>/dev/null || true; fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
limit=$(ulimit -n)
[ "$limit" = unlimited ] && limit=$((want + 1))
new_workdir
make_cert "$work" ecdsa
b=$(free_port)
python3 -m http.server "$b" --bind 127.0.0.1 >/dev/null 2>&1 & pids+=($!)
wait_port "$b"

rss() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
fds() { ls /proc/$1/fd | wc -l; }

# start_pair N KIND: HAProxy and Bulwark's lb on fresh ports; sets ha_pid,
# bw_pid, p_ha, p_bw.
start_pair() {
  local n=$1 kind=$2 ha_bind bw_tls="" limits=""
  p_ha=$(free_port); p_bw=$(free_port)
  if [ "$limit" -lt $((2 * n + 2100)) ]; then limits=$'  ulimit-n '"$limit"$'\n  no strict-limits'; fi
  ha_bind="bind 127.0.0.1:$p_ha"
  if [ "$kind" = tls ]; then
    ha_bind+=" ssl crt $work/ecdsa.pem"
    bw_tls="tls = { certificate = [{ cert = \"$work/ecdsa.crt\", key = \"$work/ecdsa.key\" }], hsts = \"0s\" }"
  fi
  cat >"$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn $((n + 1000))
${limits}
defaults
  mode http
  timeout connect 3s
  timeout client 300s
  timeout server 30s
  timeout http-keep-alive 300s
  timeout http-request 300s
frontend www
  $ha_bind
  default_backend app
backend app
  server b 127.0.0.1:$b
CONF
  "${HAPROXY:-haproxy}" -f "$work/haproxy.cfg" -db >/dev/null 2>&1 & ha_pid=$!; pids+=($ha_pid)
  cat >"$work/lb.toml" <<CONF
threads = 1
[timeouts]
client_header = "300s"
[[frontend]]
name = "www"
bind = "127.0.0.1:$p_bw"
backend = "app"
access_log = false
$bw_tls
[[backend]]
name = "app"
[[backend.server]]
name = "b"
address = "127.0.0.1:$b"
CONF
  RUST_LOG=warn "$BIN" lb -c "$work/lb.toml" >/dev/null & bw_pid=$!; pids+=($bw_pid)
  wait_port "$p_ha"; wait_port "$p_bw"
}

# measure PID PORT N KIND -> "KiB before, KiB after, descriptors opened"
measure() {
  local pid=$1 port=$2 n=$3 kind=$4 before after fd0 fd1 cpid
  before=$(rss "$pid")
  fd0=$(fds "$pid")
  rm -f "$work/ready"
  python3 - "$port" "$n" "$work/ready" "$kind" <<'PY' &
import socket, ssl, sys, time
port, n, ready, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = None
if kind == "tls":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if ctx is not None:
        s = ctx.wrap_socket(s, server_hostname="localhost")  # the handshake, done here
    socks.append(s)
open(ready, "w").close()
time.sleep(60)
PY
  cpid=$!
  for _ in $(seq 1 1200); do [ -f "$work/ready" ] && break; sleep 0.1; done
  # Every connection accepted (not just queued in the backlog), RSS settled.
  for _ in $(seq 1 100); do [ $(( $(fds "$pid") - fd0 )) -ge "$n" ] && break; sleep 0.1; done
  sleep 2
  after=$(rss "$pid")
  fd1=$(fds "$pid")
  kill "$cpid" 2>/dev/null || true
  wait "$cpid" 2>/dev/null || true
  echo "$before $after $((fd1 - fd0))"
}

rows=()
ratios=()
for want_n in $NS; do
  n=$want_n
  if [ "$limit" -lt $((n + 1000)) ]; then
    n=$((limit - 1000))
    echo "descriptor limit $limit: holding $n connections instead of $want_n" >&2
  fi
  for kind in $KINDS; do
    start_pair "$n" "$kind"
    read -r ha0 ha1 hafd < <(measure "$ha_pid" "$p_ha" "$n" "$kind")
    read -r bw0 bw1 bwfd < <(measure "$bw_pid" "$p_bw" "$n" "$kind")
    kill "$ha_pid" "$bw_pid" 2>/dev/null || true
    wait "$ha_pid" "$bw_pid" 2>/dev/null || true
    for x in "haproxy $hafd" "bulwark $bwfd"; do
      set -- $x
      echo "$kind, $n: $1 opened $2 descriptors while the connections were held" >&2
      if [ "$2" -lt "$n" ]; then echo "WARNING: $1 accepted only $2 of $n connections" >&2; fi
    done
    ha_b=$(python3 -c "print(($ha1-$ha0)*1024/$n)")
    bw_b=$(python3 -c "print(($bw1-$bw0)*1024/$n)")
    for x in "haproxy $ha0 $ha1 $hafd $ha_b" "bulwark $bw0 $bw1 $bwfd $bw_b"; do
      set -- $x
      rows+=("$(printf "| %s | %s | %s | %d | %d | %d | %.0f | %.1f |" "$want_n" "$kind" "$1" "$4" "$2" "$3" "$5" "$(python3 -c "print($5*10000/1048576)")")")
    done
    ratios+=("$(printf "| %s | %s | %.0f | %.0f | %.2fx |" "$n" "$kind" "$bw_b" "$ha_b" "$(python3 -c "print($bw_b/max($ha_b,1))")")")
  done
done
echo
echo "Idle connections held open to each balancer (one thread each), RSS from /proc; descriptor limit $limit; $(nproc) cores, $(date -u +%F)."
echo
echo "| connections asked for | kind | balancer | connections accepted | RSS before (KiB) | RSS with them (KiB) | bytes per connection | MiB per 10k |"
echo "|---:|---|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
echo "| connections held | kind | Bulwark bytes per connection | HAProxy bytes per connection | Bulwark / HAProxy |"
echo "|---:|---|---:|---:|---:|"
printf '%s\n' "${ratios[@]}"
