#!/usr/bin/env bash
# Static file benchmark: Bulwark web vs nginx serving the same 1 KB file,
# one worker each, in one run, interleaved rounds. Prints a markdown table.
#
#   bash bench/web.sh                     # 3 rounds × 10 s, 50 connections
#   ROUNDS=5 DURATION=10s CONNS=100 bash bench/web.sh
#
# Servers run on CPU 0 and wrk on CPU 1 (taskset) when the machine has two
# or more cores, so neither steals the other's core.
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
FILE_BYTES=${FILE_BYTES:-1024}

need_pkgs nginx:nginx-light wrk:wrk taskset:util-linux curl:curl python3:python3
cd "$BENCH_ROOT"
BIN=$(bulwark_bin)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

SERVER_CPU=0
WRK_CPU=0
if [ "$(nproc)" -ge 2 ]; then WRK_CPU=1; fi
# run_wrk (lib.sh) calls `wrk`: pin it.
wrk() { taskset -c "$WRK_CPU" "$(type -P wrk)" "$@"; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/root"
head -c "$FILE_BYTES" /dev/urandom | base64 -w 64 | head -c "$FILE_BYTES" >"$work/root/file.txt"
# nginx workers run as an unprivileged user: let them read the root.
chmod -R a+rX "$work"
p_ng=$(free_port); p_bw=$(free_port)

mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log error;
events { worker_connections 4096; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  # The same kind of cache Bulwark keeps: open descriptors and metadata,
  # re-checked every second.
  open_file_cache max=1000 inactive=60s;
  open_file_cache_valid 1s;
  client_body_temp_path $work/nginx/body;
  server {
    listen 127.0.0.1:$p_ng reuseport;
    root $work/root;
  }
}
CONF
taskset -c "$SERVER_CPU" "$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf" & pids+=($!)

cat >"$work/web.toml" <<CONF
listen = ["127.0.0.1:$p_bw"]
root = "$work/root"
threads = 1
access_log = false
[cache]
revalidate = "1s"
CONF
RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN" web -c "$work/web.toml" >/dev/null & pids+=($!)

for p in $p_ng $p_bw; do wait_port "$p"; done
# Both must answer 200 with the whole file, or the comparison means nothing.
for p in $p_ng $p_bw; do
  got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$p/file.txt")
  if [ "$got" != "200 $FILE_BYTES" ]; then echo "port $p answered '$got', expected '200 $FILE_BYTES'" >&2; exit 1; fi
done
# Warm up.
for p in $p_ng $p_bw; do wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$p/file.txt" >/dev/null 2>&1; done

declare -A RPS P50 P99
names=(nginx bulwark)
declare -A PORT=([nginx]=$p_ng [bulwark]=$p_bw)
for r in $(seq 1 "$ROUNDS"); do
  for n in "${names[@]}"; do
    read -r rps p50 p99 < <(run_wrk "http://127.0.0.1:${PORT[$n]}/file.txt" "$DURATION" "$CONNS")
    RPS[$n]="${RPS[$n]:-} $rps"; P50[$n]="${P50[$n]:-} $p50"; P99[$n]="${P99[$n]:-} $p99"
    echo "round $r $n: $rps req/s p50 ${p50}ms p99 ${p99}ms" >&2
  done
done

echo
echo "Static file benchmark: ${FILE_BYTES}-byte file, $ROUNDS rounds × $DURATION, wrk -t1 -c$CONNS (CPU $WRK_CPU), one server worker (CPU $SERVER_CPU); medians. $(nproc) cores, $(date -u +%F)."
echo
echo "| server | req/s | p50 ms | p99 ms | req/s vs nginx |"
echo "|---|---:|---:|---:|---:|"
ng=$(median ${RPS[nginx]})
for n in "${names[@]}"; do
  rps=$(median ${RPS[$n]}); p50=$(median ${P50[$n]}); p99=$(median ${P99[$n]})
  printf "| %s | %.0f | %.3f | %.3f | %.2f |\n" "$n" "$rps" "$p50" "$p99" "$(python3 -c "print($rps/$ng)")"
done
