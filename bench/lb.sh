#!/usr/bin/env bash
# Load balancer benchmark: direct vs HAProxy vs nginx-as-LB vs Bulwark, all
# single-threaded, in one run, interleaved rounds. Prints a markdown table.
#
#   bash bench/lb.sh            # 3 rounds × 8 s, 50 connections
#   ROUNDS=5 DURATION=10s CONNS=100 bash bench/lb.sh
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-50}

need_pkgs haproxy:haproxy nginx:nginx-light wrk:wrk python3:python3
cd "$BENCH_ROOT"
BIN=$(bulwark_bin)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

b1=$(free_port); b2=$(free_port); p_ha=$(free_port); p_ng=$(free_port); p_bw=$(free_port)

# Two nginx backends, one worker each, answering a small fixed body.
start_nginx_backends "$work" "$b1" "$b2"

cat >"$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 3s
  timeout client 30s
  timeout server 30s
  option forwardfor
  http-reuse always
frontend www
  bind 127.0.0.1:$p_ha
  # Same header work as Bulwark's defaults: XFF, X-Forwarded-Proto, Forwarded.
  http-request set-header X-Forwarded-Proto http
  http-request add-header Forwarded "for=%[src];proto=http"
  default_backend app
backend app
  balance roundrobin
  server b1 127.0.0.1:$b1
  server b2 127.0.0.1:$b2
CONF
"$HAPROXY" -f "$work/haproxy.cfg" -db & pids+=($!)

mkdir -p "$work/nglb"
cat >"$work/nglb/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nglb/nginx.pid;
error_log $work/nglb/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$b1; server 127.0.0.1:$b2; keepalive 64; }
  server {
    listen 127.0.0.1:$p_ng;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto http;
      proxy_set_header Forwarded "for=\$remote_addr;proto=http";
    }
  }
}
CONF
"$NGINX" -p "$work/nglb" -c "$work/nglb/nginx.conf" & pids+=($!)

cat >"$work/lb.toml" <<CONF
threads = 1
[[frontend]]
name = "www"
bind = "127.0.0.1:$p_bw"
backend = "app"
access_log = false
via = false
# As HAProxy and nginx here: no request id (on by default in Bulwark).
request_id = false
[[backend]]
name = "app"
balance = "roundrobin"
[[backend.server]]
name = "b1"
address = "127.0.0.1:$b1"
[[backend.server]]
name = "b2"
address = "127.0.0.1:$b2"
CONF
RUST_LOG=warn "$BIN" lb -c "$work/lb.toml" >/dev/null & pids+=($!)

for p in $b1 $b2 $p_ha $p_ng $p_bw; do wait_port "$p"; done
# Warm up every path once.
for p in $b1 $p_ha $p_ng $p_bw; do wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$p/" >/dev/null 2>&1; done

declare -A RPS P50 P99
names=(direct haproxy nginx bulwark)
declare -A PORT=([direct]=$b1 [haproxy]=$p_ha [nginx]=$p_ng [bulwark]=$p_bw)
for r in $(seq 1 "$ROUNDS"); do
  for n in "${names[@]}"; do
    read -r rps p50 p99 < <(run_wrk "http://127.0.0.1:${PORT[$n]}/" "$DURATION" "$CONNS")
    RPS[$n]="${RPS[$n]:-} $rps"; P50[$n]="${P50[$n]:-} $p50"; P99[$n]="${P99[$n]:-} $p99"
    echo "round $r $n: $rps req/s p50 ${p50}ms p99 ${p99}ms" >&2
  done
done

echo
echo "LB benchmark: $ROUNDS rounds × $DURATION, wrk -t1 -c$CONNS, 2 nginx backends; medians. $(nproc) cores, $(date -u +%F)."
echo
echo "| target | req/s | p50 ms | p99 ms | vs HAProxy req/s | vs direct req/s |"
echo "|---|---:|---:|---:|---:|---:|"
ha=$(median ${RPS[haproxy]}); di=$(median ${RPS[direct]})
for n in "${names[@]}"; do
  rps=$(median ${RPS[$n]}); p50=$(median ${P50[$n]}); p99=$(median ${P99[$n]})
  printf "| %s | %.0f | %.3f | %.3f | %.2f | %.2f |\n" "$n" "$rps" "$p50" "$p99" \
    "$(python3 -c "print($rps/$ha)")" "$(python3 -c "print($rps/$di)")"
done
