#!/usr/bin/env bash
# Web tier benchmark, Bulwark web vs nginx, one worker each, in one run,
# interleaved rounds; prints two markdown tables:
# 1. static files: the same 1 KB file;
# 2. a cached proxied page: a small page from a tiny upstream (Python)
#    that both proxy to and cache in memory (Bulwark `[response_cache]`,
#    nginx `proxy_cache` with `proxy_cache_lock`), so wrk measures the
#    cache hits. The static server runs with compression, the response
#    cache, header rules and security headers off (their defaults).
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

new_workdir

mkdir -p "$work/root"
head -c "$FILE_BYTES" /dev/urandom | base64 -w 64 | head -c "$FILE_BYTES" >"$work/root/file.txt"
# nginx workers run as an unprivileged user: let them read the root.
chmod -R a+rX "$work"
p_ng=$(free_port); p_bw=$(free_port); p_ngc=$(free_port); p_bwc=$(free_port); p_up=$(free_port)
PAGE_BYTES=${PAGE_BYTES:-1024}

# The upstream of the cached page: a "dynamic" page (it names the time it
# was made) of PAGE_BYTES bytes, cacheable for an hour by shared caches.
cat >"$work/upstream.py" <<'PY'
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, size = int(sys.argv[1]), int(sys.argv[2])

class Page(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        head = f"<!doctype html><title>page</title><p>made at {time.time():.6f} for {self.path}</p>\n"
        body = (head + "<p>" + "x" * size + "</p>\n").encode()[:size]
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "public, max-age=3600")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", port), Page).serve_forever()
PY
python3 "$work/upstream.py" "$p_up" "$PAGE_BYTES" & pids+=($!)

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
  # The cached proxied page.
  proxy_cache_path $work/nginx/cache keys_zone=pages:10m max_size=64m;
  proxy_temp_path $work/nginx/proxy_temp;
  upstream page { server 127.0.0.1:$p_up; keepalive 16; }
  server {
    listen 127.0.0.1:$p_ngc reuseport;
    location / {
      proxy_pass http://page;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache pages;
      proxy_cache_lock on;
      add_header X-Cache \$upstream_cache_status;
    }
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

mkdir -p "$work/empty"
cat >"$work/web-cached.toml" <<CONF
listen = ["127.0.0.1:$p_bwc"]
root = "$work/empty"
threads = 1
access_log = false
[response_cache]
enabled = true
[[proxy]]
prefix = "/"
servers = ["127.0.0.1:$p_up"]
CONF
RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN" web -c "$work/web-cached.toml" >/dev/null & pids+=($!)

for p in $p_ng $p_bw $p_ngc $p_bwc $p_up; do wait_port "$p"; done
# Both must answer 200 with the whole file, or the comparison means nothing.
for p in $p_ng $p_bw; do
  got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$p/file.txt")
  if [ "$got" != "200 $FILE_BYTES" ]; then echo "port $p answered '$got', expected '200 $FILE_BYTES'" >&2; exit 1; fi
done
# The cached page: the second answer must come from the cache, whole.
for p in $p_ngc $p_bwc; do
  curl -s -o /dev/null "http://127.0.0.1:$p/page.html"
  got=$(curl -s -D - -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$p/page.html" | tr -d '\r' |
    awk 'tolower($1)=="x-cache:" {c=$2} /^[0-9]+ [0-9]+$/ {s=$0} END {print s, c}')
  if [ "$got" != "200 $PAGE_BYTES HIT" ]; then echo "port $p answered '$got', expected '200 $PAGE_BYTES HIT'" >&2; exit 1; fi
done
# Warm up.
for p in $p_ng $p_bw; do wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$p/file.txt" >/dev/null 2>&1; done
for p in $p_ngc $p_bwc; do wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$p/page.html" >/dev/null 2>&1; done

declare -A RPS P50 P99
names=(nginx bulwark)
declare -A PORT=([nginx]=$p_ng [bulwark]=$p_bw [nginx-cached]=$p_ngc [bulwark-cached]=$p_bwc)
declare -A TARGET=([nginx]=/file.txt [bulwark]=/file.txt [nginx-cached]=/page.html [bulwark-cached]=/page.html)
targets=()
for n in "${names[@]}" nginx-cached bulwark-cached; do targets+=("$n=http://127.0.0.1:${PORT[$n]}${TARGET[$n]}"); done
wrk_rounds "$ROUNDS" "$DURATION" "$CONNS" "${targets[@]}"

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

echo
echo "Cached proxied page: a ${PAGE_BYTES}-byte page from a Python upstream (\`Cache-Control: public, max-age=3600\`), cached by each server in memory (Bulwark \`[response_cache]\`, nginx \`proxy_cache\` + \`proxy_cache_lock\`); every measured request is a hit. Same rounds, wrk and CPUs as above; medians."
echo
echo "| server | req/s | p50 ms | p99 ms | req/s vs nginx |"
echo "|---|---:|---:|---:|---:|"
ng=$(median ${RPS[nginx-cached]})
for n in nginx-cached bulwark-cached; do
  rps=$(median ${RPS[$n]}); p50=$(median ${P50[$n]}); p99=$(median ${P99[$n]})
  printf "| %s | %.0f | %.3f | %.3f | %.2f |\n" "$([ "$n" = nginx-cached ] && echo "nginx proxy_cache" || echo "bulwark response_cache")" "$rps" "$p50" "$p99" "$(python3 -c "print($rps/$ng)")"
done
