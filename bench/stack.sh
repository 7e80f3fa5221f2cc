#!/usr/bin/env bash
# Whole stack against whole stack, on the same Python guestbook
# (examples/python-guestbook), on loopback:
#
#   classic   HAProxy (round robin, health checks, TLS) -> two nginx (static
#             files + proxy_pass) -> two gunicorn (2 workers each) -> MariaDB
#             primary + semi-sync replica (AFTER_SYNC, lib.sh start_pair):
#             writes to the primary, reads from the replica (mysqldb.py).
#             Every process is started again 0.1 s after it dies, as
#             systemd's Restart=always would (the database servers are not:
#             a lost primary stays lost).
#   bulwark-python   `bulwark up -c examples/python-guestbook/topology.toml`:
#             the same app under gunicorn behind Bulwark's lb and web tier,
#             on Bulwark's replicated database (bulwarkdb.py).
#   bulwark-rust     `bulwark up`: the built-in Rust guestbook.
#
# Workload: wrk with bench/stack.lua over HTTPS, THREADS threads and CONNS
# connections, for DURATION s per mix of static file / API read / API post
# (MIXES). The static file is /static/style.css for the Python app and the
# page / (index.html, static) for the built-in guestbook. Per leg: req/s,
# p50, p99, errors (connect/read/write errors, timeouts, answers not 2xx/3xx)
# and the total RSS, PSS and CPU seconds of every process of the stack
# (from /proc; memory at the end of the leg).
#
# Faults under load (FAULTS=1): one wrk leg of FAULT_DURATION s at
# FAULT_MIX per fault, the fault FAULT_AT s in:
#   app   kill -9 one app server (gunicorn master and workers; Bulwark: the
#         app role and its gunicorn)
#   web   kill -9 one web server (nginx master and workers; Bulwark: web1)
#   lb    restart the lb: HAProxy's master reloaded (SIGUSR2, what
#         `systemctl reload haproxy` sends: new workers take the sockets,
#         the old ones finish their requests); Bulwark: `bulwark stop` +
#         `bulwark start` of each lb process in turn
#   db    kill -9 the database primary, kept down. The classic stack has no
#         automatic promotion: PROMOTE_AFTER s later the script runs the
#         operator's step "promote the replica" (classic_promote below).
# Per fault: failed requests, the longest time between two acknowledged
# posts, when writes came back after the fault (the end of the longest gap
# between acknowledged posts that ends after it), and, read from the
# database at the end, every post answered 201 that is missing.
#
#   bash bench/stack.sh
#   DURATION=5 FAULT_DURATION=10 PROMOTE_AFTER=3 bash bench/stack.sh   # a quick check
#   STACKS="classic bulwark-python" FAULTS=0 bash bench/stack.sh
#   PROFILE=1 STACKS="classic bulwark-python" FAULTS=0 bash bench/stack.sh
#             adds each component's CPU µs per request to every leg
#             (bench/stack-profile.py: haproxy, nginx, gunicorn, mariadbd,
#             each kind of Bulwark role), printed after the tables.
#   PROBE=0 ...  leaves out bench/stack-probe.py, which by default runs
#             beside wrk in every throughput leg: one more client timing
#             static files, reads and posts apart (p50/p90/p99/max of
#             each), printed after the tables.
# BULWARK=path/to/bulwark to skip the release build (lib.sh).
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
MIXES=${MIXES:-"90/8/2 50/25/25"}
STACKS=${STACKS:-"classic bulwark-python bulwark-rust"}
FAULTS=${FAULTS:-1}
FAULT_LIST=${FAULT_LIST:-"app web lb db"}
FAULT_DURATION=${FAULT_DURATION:-30}
FAULT_AT=${FAULT_AT:-$((FAULT_DURATION / 3 < 8 ? FAULT_DURATION / 3 : 8))}
FAULT_MIX=${FAULT_MIX:-50/25/25}
PROMOTE_AFTER=${PROMOTE_AFTER:-10}
PROFILE=${PROFILE:-0}
PROBE=${PROBE:-1}
PROFILER=$BENCH_ROOT/bench/stack-profile.py
cd "$BENCH_ROOT"
need_pkgs haproxy:haproxy nginx:nginx wrk:wrk gunicorn:gunicorn openssl:openssl python3:python3 \
  mariadbd:mariadb-server mariadb:mariadb-client mariadb-install-db:mariadb-server
need_pymods pymysql:python3-pymysql
BULWARK=$(bulwark_bin)
APP_DIR=$BENCH_ROOT/examples/python-guestbook
LUA=$BENCH_ROOT/bench/stack.lua

WORK=$(mktemp -d)
mkdir -p "$WORK/logs"
PIDS=()
# Stop every process started here (TERM, then KILL after 10 s).
stop_all() {
  touch "$WORK/down"
  local all
  all=$(proc_tree "${PIDS[@]}")
  [ -n "$all" ] && { kill $all 2>/dev/null || true; }
  for _ in $(seq 1 100); do
    all=$(proc_tree "${PIDS[@]}")
    [ -z "$all" ] && break
    sleep 0.1
  done
  [ -n "$all" ] && { kill -9 $all 2>/dev/null || true; }
  PIDS=()
  rm -f "$WORK/down"
}
cleanup() {
  stop_all
  if [ -n "${KEEP_WORK:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for WHAT SECONDS COMMAND...: until COMMAND succeeds, at most SECONDS.
wait_for() {
  local what=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then echo "$what: not within $secs s" >&2; return 1; fi
    sleep 0.1
  done
}
# GET URL answers 200.
site_ok() { [ "$(curl -ks -o /dev/null -w '%{http_code}' --max-time 10 "$1")" = 200 ]; }

# check_site STATIC: each kind of request of the workload answers as it
# should before anything is measured.
check_site() {
  local static=$1 code
  for path in "$static" /api/messages; do
    code=$(curl -ks -o "$WORK/check.body" -w '%{http_code}' --max-time 10 "$SITE$path")
    [ "$code" = 200 ] || { echo "GET $path: $code $(head -c 300 "$WORK/check.body")" >&2; return 1; }
  done
  code=$(curl -ks -o "$WORK/check.body" -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
    --data '{"author": "check", "text": "check"}' "$SITE/api/messages")
  [ "$code" = 201 ] || { echo "POST /api/messages: $code $(head -c 300 "$WORK/check.body")" >&2; return 1; }
}

# ---- the classic stack ----

# supervise NAME CMD...: run CMD, and again 0.1 s after it exits, as
# systemd's Restart=always does; $WORK/NAME.child holds the running PID.
supervise() {
  local name=$1; shift
  (
    while [ ! -e "$WORK/down" ]; do
      "$@" >> "$WORK/logs/$name.log" 2>&1 &
      echo $! > "$WORK/$name.child"
      wait $! 2> /dev/null || true # (set -e: a killed child must not end the loop)
      sleep 0.1
    done
  ) &
  PIDS+=($!)
}

classic_up() {
  local d=$WORK/classic
  mkdir -p "$d"
  start_pair cprimary creplica 1
  read -r MPRIMARY MREPLICA <<< "$PAIR_PORTS"
  MYSQL_PRIMARY=cprimary
  # A replica takes no writes but the replication's.
  msql creplica "SET GLOBAL read_only = ON"
  echo bench > "$d/db-password"
  local g1 g2 n1 n2
  g1=$(free_port); g2=$(free_port); n1=$(free_port); n2=$(free_port); CLASSIC_PORT=$(free_port)
  local i=0
  for g in $g1 $g2; do
    i=$((i + 1))
    cat > "$d/app$i.conf.py" <<EOF
# gunicorn of app server $i; a reload (SIGHUP) reads this file again.
bind = "127.0.0.1:$g"
workers = 2
chdir = "$APP_DIR"
graceful_timeout = 5
raw_env = [
    "GUESTBOOK_DB=mysql",
    "GUESTBOOK_MYSQL_PRIMARY=127.0.0.1:$MPRIMARY",
    "GUESTBOOK_MYSQL_REPLICA=127.0.0.1:$MREPLICA",
    "GUESTBOOK_MYSQL_USER=bench",
    "GUESTBOOK_MYSQL_PASSWORD_FILE=$d/db-password",
    "GUESTBOOK_MYSQL_DATABASE=bench",
    "BULWARK_APP_NAME=app$i",
    "PYTHONDONTWRITEBYTECODE=1",
]
EOF
    supervise "app$i" /usr/bin/gunicorn -c "$d/app$i.conf.py" guestbook:app
  done
  i=0
  for n in $n1 $n2; do
    i=$((i + 1))
    mkdir -p "$d/web$i"
    cat > "$d/web$i/nginx.conf" <<EOF
$([ "$(id -u)" = 0 ] && echo "user root;")
worker_processes auto;
daemon off;
pid $d/web$i/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  sendfile on;
  keepalive_timeout 65;
  client_body_temp_path $d/web$i/body;
  proxy_temp_path $d/web$i/proxy;
  fastcgi_temp_path $d/web$i/fastcgi;
  uwsgi_temp_path $d/web$i/uwsgi;
  scgi_temp_path $d/web$i/scgi;
  upstream apps {
    server 127.0.0.1:$g1 max_fails=1 fail_timeout=2s;
    server 127.0.0.1:$g2 max_fails=1 fail_timeout=2s;
  }
  server {
    listen 127.0.0.1:$n;
    location = /nginx-health { return 200 "ok\n"; }
    location /static/ { root $APP_DIR; }
    location / {
      proxy_pass http://apps;
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
      proxy_connect_timeout 2s;
      proxy_read_timeout 30s;
      proxy_next_upstream error timeout;
    }
  }
}
EOF
    supervise "web$i" /usr/sbin/nginx -p "$d/web$i" -c "$d/web$i/nginx.conf"
  done
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -keyout "$d/site.key" -out "$d/site.crt" 2> "$WORK/logs/openssl.log"
  cat "$d/site.crt" "$d/site.key" > "$d/site.pem"
  # Health checks as Bulwark's lb does them: every 1 s, down after 2
  # failures, up after 1 success.
  cat > "$d/haproxy.cfg" <<EOF
global
  maxconn 4096
  pidfile $d/haproxy.pid
defaults
  mode http
  option http-keep-alive
  option forwardfor
  option redispatch
  retries 2
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 10s
frontend site
  bind 127.0.0.1:$CLASSIC_PORT ssl crt $d/site.pem alpn http/1.1
  default_backend web
backend web
  balance roundrobin
  option httpchk GET /nginx-health
  default-server check inter 1s fall 2 rise 1
  server web1 127.0.0.1:$n1
  server web2 127.0.0.1:$n2
EOF
  /usr/sbin/haproxy -c -q -f "$d/haproxy.cfg"
  supervise lb /usr/sbin/haproxy -W -db -f "$d/haproxy.cfg"
  for p in $g1 $g2 $n1 $n2 $CLASSIC_PORT; do wait_port "$p"; done
  SITE=https://127.0.0.1:$CLASSIC_PORT
  wait_for "classic stack answering" 60 site_ok "$SITE/api/messages"
  check_site /static/style.css
  echo "classic stack up: haproxy $(/usr/sbin/haproxy -v | awk 'NR==1 {print $3}'), nginx" \
    "$(/usr/sbin/nginx -v 2>&1 | cut -d/ -f2), gunicorn $(/usr/bin/gunicorn --version | tr -dc '0-9.')," \
    "mariadb primary :$MPRIMARY replica :$MREPLICA" >&2
}

# The operator's step when the classic stack's primary is lost, "promote the
# replica": let it apply everything it received, stop replicating, make it
# writable, name it as the primary in both app servers' config and reload
# them (gunicorn: SIGHUP starts new workers that read the new address).
classic_promote() {
  local io
  msql creplica "STOP SLAVE IO_THREAD"
  io=$(msql creplica "SHOW SLAVE STATUS\G" | awk '$1 == "Gtid_IO_Pos:" {print $2}')
  msql creplica "SELECT MASTER_GTID_WAIT('$io', 30)" > /dev/null
  msql creplica "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF"
  sed -i "s/GUESTBOOK_MYSQL_PRIMARY=[0-9.:]*/GUESTBOOK_MYSQL_PRIMARY=127.0.0.1:$MREPLICA/" "$WORK"/classic/app*.conf.py
  kill -HUP "$(cat "$WORK/app1.child")" "$(cat "$WORK/app2.child")"
  MYSQL_PRIMARY=creplica
}

classic_fault() { # FAULT: prints what it did (not in a subshell: it sets MYSQL_PRIMARY)
  case $1 in
    app) kill_tree "$(cat "$WORK/app1.child")"; echo "kill -9 of app1 (gunicorn master and workers)" ;;
    web) kill_tree "$(cat "$WORK/web1.child")"; echo "kill -9 of web1 (nginx master and workers)" ;;
    lb) kill -USR2 "$(cat "$WORK/lb.child")"; echo "HAProxy reloaded (SIGUSR2 to its master)" ;;
    db)
      kill -9 "$(cat "$WORK/cprimary.pid")"
      local t=$EPOCHREALTIME
      sleep "$PROMOTE_AFTER"
      classic_promote
      echo "kill -9 of the MariaDB primary; replica promoted by hand $(python3 -c "import sys,time; print(f'{time.time()-float(sys.argv[1]):.1f}')" "$t") s later"
      echo "$EPOCHREALTIME" > "$WORK/operator.t"
      ;;
  esac
}

classic_texts() { msql "$MYSQL_PRIMARY" "SELECT text FROM bench.py_messages WHERE text LIKE 'sb-%'"; }

# ---- the Bulwark stacks ----

bulwark_up() { # NAME [topology]
  local name=$1 topo=${2:-}
  local d=$WORK/$name
  mkdir -p "$d"
  local args=(up --port-base 0 --data-dir "$d/data")
  [ -n "$topo" ] && args+=(-c "$topo")
  RUST_LOG=warn PYTHONDONTWRITEBYTECODE=1 "$BULWARK" "${args[@]}" > "$d/up.out" 2> "$WORK/logs/$name-up.log" &
  UP_PID=$!
  PIDS+=($UP_PID)
  DATA=$d/data
  wait_for "bulwark up ($name) ready" 180 grep -q '^{"ready"' "$d/up.out" || {
    tail -20 "$WORK/logs/$name-up.log" >&2
    return 1
  }
  local port
  port=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    if l.startswith("{\"ready\""): print(json.loads(l)["ready"]["listeners"]["lb1.https"].rsplit(":", 1)[1])' "$d/up.out")
  SITE=https://127.0.0.1:$port
  wait_for "$name answering" 60 site_ok "$SITE/api/messages"
  echo "$name up: $("$BULWARK" --version | head -1), site $SITE, data $DATA" >&2
}

# control JSON: one request on the control socket; prints the reply.
control() {
  python3 - "$DATA/control.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(60)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
buf = b""
while not buf.endswith(b"\n"):
    c = s.recv(65536)
    if not c:
        break
    buf += c
print(buf.decode().strip())
PY
}
role_pid() { control '{"cmd":"status"}' | python3 -c 'import json,sys
for c in json.load(sys.stdin)["children"]:
    if c["name"] == sys.argv[1]: print(c["pid"] or "")' "$1"; }
# Name of the database role that is the primary (from its /v1/status).
bulwark_primary() {
  # (awk reads to the end: an early exit would end `db status` with SIGPIPE)
  "$BULWARK" db status -c "$DATA/config/db1.toml" 2>/dev/null | awk '$3 == "primary" && !n++ {print "db" $1}'
}

bulwark_fault() { # FAULT
  case $1 in
    app) kill_tree "$(role_pid app1)"; echo "kill -9 of app1 (the app role and any program under it)" ;;
    web) kill_tree "$(role_pid web1)"; echo "kill -9 of web1" ;;
    lb)
      local lbs
      lbs=$(control '{"cmd":"status"}' | python3 -c 'import json,sys
print(" ".join(c["name"] for c in json.load(sys.stdin)["children"] if c["kind"] == "lb"))')
      for lb in $lbs; do
        "$BULWARK" stop "$lb" --data-dir "$DATA" > /dev/null
        "$BULWARK" start "$lb" --data-dir "$DATA" > /dev/null
      done
      echo "bulwark stop + start of each lb process in turn ($lbs)"
      ;;
    db)
      local p
      p=$(bulwark_primary)
      [ -n "$p" ] || { echo "no database primary found" >&2; return 1; }
      control "{\"cmd\":\"kill\",\"node\":\"$p\"}" > /dev/null
      echo "kill -9 of the primary $p, kept down; no operator step"
      ;;
  esac
}

# Every stored text of the workload's posts (TABLE: py_messages or messages),
# read from the primary through the database's HTTP API.
bulwark_texts() {
  python3 - "$DATA" "$1" <<'PY'
import glob, json, re, sys, urllib.request
data, table = sys.argv[1], sys.argv[2]
secret = open(f"{data}/secrets/app-db").read().strip()
nodes = [re.search(r'listen\s*=\s*"([^"]+)"', open(f).read()).group(1) for f in sorted(glob.glob(f"{data}/config/db*.toml"))]
last, out = 0, []
while True:
    body = json.dumps({"sql": f"SELECT id, text FROM {table} WHERE id > ? AND text LIKE 'sb-%' ORDER BY id LIMIT 1000",
                       "params": [last], "consistency": "strong"}).encode()
    rows = None
    for n in nodes:
        req = urllib.request.Request(f"http://{n}/v1/query", body, {"Content-Type": "application/json",
                                                                  "Authorization": "Bearer " + secret})
        try:
            rows = json.load(urllib.request.urlopen(req, timeout=10))["rows"]
            break
        except Exception:
            continue
    if rows is None:
        sys.exit("no database node answered the final read")
    if not rows:
        break
    out += [r[1] for r in rows]
    last = rows[-1][0]
print("\n".join(out))
PY
}

# ---- the workload ----

# run_wrk NAME MIX SECONDS STATIC [log]: prints wrk's "stackbench" JSON.
run_wrk() {
  local name=$1 mix=$2 secs=$3 static=$4 log=${5:-}
  MIX=$mix STATIC_PATH=$static RUN_ID=$name WRK_LOG=$log timeout -k 5 $((secs + 60)) \
    wrk -t"$THREADS" -c"$CONNS" -d"${secs}s" --timeout 10s -s "$LUA" "$SITE" > "$WORK/logs/wrk-$name.out" 2>&1
  local line
  line=$(sed -n 's/^stackbench //p' "$WORK/logs/wrk-$name.out")
  if [ -z "$line" ]; then echo "wrk $name gave no result:" >&2; cat "$WORK/logs/wrk-$name.out" >&2; return 1; fi
  echo "$line"
}

# throughput STACK STATIC ROOT_PIDS...: one leg per mix -> $WORK/legs.jsonl
throughput() {
  local stack=$1 static=$2; shift 2
  run_wrk "$stack-warmup" 50/25/25 "$WARMUP" "$static" > /dev/null
  for mix in $MIXES; do
    local before after w cpu
    local parts_before parts='{}'
    if [ "$PROFILE" = 1 ]; then parts_before=$(python3 "$PROFILER" sample "$@"); fi
    before=$(usage_sample "$@")
    local probe_out=$WORK/probe-$stack-${mix//\//-}.json probe_pid=
    if [ "$PROBE" = 1 ]; then
      python3 "$BENCH_ROOT/bench/stack-probe.py" "$SITE" "$DURATION" "$static" "$stack-${mix//\//-}" > "$probe_out" &
      probe_pid=$!
    fi
    w=$(run_wrk "$stack-${mix//\//-}" "$mix" "$DURATION" "$static")
    after=$(usage_sample "$@")
    if [ -n "$probe_pid" ]; then
      wait "$probe_pid" || echo "probe of $stack $mix failed" >&2
      w=$(python3 -c 'import json,sys
w = json.loads(sys.argv[1])
try:
    w["probe"] = json.load(open(sys.argv[2]))
except (OSError, ValueError):
    pass
print(json.dumps(w))' "$w" "$probe_out")
    fi
    if [ "$PROFILE" = 1 ]; then
      parts=$(python3 "$PROFILER" between "$parts_before" "$(python3 "$PROFILER" sample "$@")")
    fi
    cpu=$(usage_cpu_between "$before" "$after")
    python3 -c 'import json,sys
w, u, parts = json.loads(sys.argv[4]), json.loads(sys.argv[5]), json.loads(sys.argv[6])
leg = {"stack": sys.argv[1], "mix": sys.argv[2], "cpu_s": float(sys.argv[3]), "procs": u["procs"],
       "rss_kib": u["rss_kib"], "pss_kib": u["pss_kib"], **w}
if parts:
    leg["components"] = parts
print(json.dumps(leg))' \
      "$stack" "$mix" "$cpu" "$w" "$after" "$parts" | tee -a "$WORK/legs.jsonl" >&2
  done
}

# faults STACK STATIC: one leg per fault -> $WORK/faults.jsonl; the acked
# posts of each leg in $WORK/acked-STACK-FAULT.
faults() {
  local stack=$1 static=$2 inject=$3
  for fault in $FAULT_LIST; do
    local name="$stack-$fault" secs=$FAULT_DURATION
    if [ "$fault" = db ] && [ "$stack" = classic ] && [ $((FAULT_AT + PROMOTE_AFTER + 10)) -gt "$secs" ]; then
      secs=$((FAULT_AT + PROMOTE_AFTER + 10))
    fi
    rm -f "$WORK/operator.t"
    run_wrk "$name" "$FAULT_MIX" "$secs" "$static" "$WORK/log-$name" > "$WORK/wrk-$name.json" &
    local wrk=$! t_fault what
    sleep "$FAULT_AT" # the fault's moment in the leg, not a wait for anything
    t_fault=$EPOCHREALTIME
    "$inject" "$fault" > "$WORK/fault.what"
    what=$(cat "$WORK/fault.what")
    echo "$name: $what" >&2
    wait "$wrk" || return 1
    python3 - "$stack" "$fault" "$t_fault" "$what" "$WORK/wrk-$name.json" "$WORK/operator.t" \
      "$WORK/acked-$name" "$WORK"/log-"$name".* <<'PY' | tee -a "$WORK/faults.jsonl" >&2
import json, os, sys
stack, fault, t_fault, what, wrk_file, op_file, acked_file = sys.argv[1:8]
t_fault = float(t_fault)
w = json.load(open(wrk_file))
posts, last = [], 0.0
for f in sys.argv[8:]:
    for line in open(f):
        p = line.split()
        if len(p) >= 2:
            last = max(last, float(p[0]))
            if p[1] == "201" and len(p) == 3:
                posts.append((float(p[0]), p[2]))
posts.sort()
open(acked_file, "w").write("".join(t + "\n" for _, t in posts))
times = [t for t, _ in posts]
gaps = [b - a for a, b in zip(times, times[1:])] + ([last - times[-1]] if times else [])
# Writes back: the end of the longest gap between acknowledged posts that
# ends after the fault (posts in flight at the fault may be answered first).
ends = [(b - a, b) for a, b in zip([t_fault] + times, times) if b > t_fault]
gap_after, back = (max(ends)[0], max(ends)[1] - t_fault) if ends else (None, None)
operator = float(open(op_file).read()) if os.path.exists(op_file) else None
failed = w["connect"] + w["read"] + w["write"] + w["timeout"] + w["status"]
print(json.dumps({"stack": stack, "fault": fault, "what": what, "requests": w["requests"], "failed": failed,
                  "posts_acked": len(posts), "longest_gap_s": round(max(gaps), 3) if gaps else None,
                  "writes_back_s": round(back, 3) if back is not None else None,
                  "gap_after_s": round(gap_after, 3) if gap_after is not None else None,
                  "operator_s": round(operator - t_fault, 3) if operator else None, "wrk": w}))
PY
  done
}

# lost STACK TEXTS_FILE: per fault leg, acked posts missing from the database.
check_acked() {
  local stack=$1 texts=$2
  python3 - "$stack" "$texts" "$WORK/faults.jsonl" "$WORK" <<'PY'
import json, os, sys
stack, texts, faults, work = sys.argv[1:]
stored = set(l.strip() for l in open(texts) if l.strip())
rows = [json.loads(l) for l in open(faults)]
for r in rows:
    if r["stack"] == stack and "lost" not in r:
        acked = [l.strip() for l in open(os.path.join(work, f"acked-{stack}-{r['fault']}")) if l.strip()]
        r["lost"] = sum(1 for t in acked if t not in stored)
        print(f"{stack} {r['fault']}: {len(acked)} posts acknowledged, {r['lost']} missing from the database",
              file=sys.stderr)
open(faults, "w").write("".join(json.dumps(r) + "\n" for r in rows))
PY
}

# ---- the runs ----
: > "$WORK/legs.jsonl"
: > "$WORK/faults.jsonl"
for stack in $STACKS; do
  echo "== $stack: $(cut -d' ' -f1-3 /proc/loadavg) load" >&2
  case $stack in
    classic)
      classic_up
      throughput classic /static/style.css "${PIDS[@]}"
      check_pair cprimary
      if [ "$FAULTS" = 1 ]; then
        faults classic /static/style.css classic_fault
        classic_texts > "$WORK/texts-classic"
        check_acked classic "$WORK/texts-classic"
      fi
      ;;
    bulwark-python | bulwark-rust)
      if [ "$stack" = bulwark-python ]; then
        bulwark_up "$stack" "$APP_DIR/topology.toml"
        static=/static/style.css table=py_messages
      else
        bulwark_up "$stack"
        static=/ table=messages
      fi
      throughput "$stack" "$static" "$UP_PID"
      if [ "$FAULTS" = 1 ]; then
        faults "$stack" "$static" bulwark_fault
        bulwark_texts "$table" > "$WORK/texts-$stack"
        check_acked "$stack" "$WORK/texts-$stack"
      fi
      ;;
    *) echo "unknown stack $stack (classic, bulwark-python, bulwark-rust)" >&2; exit 2 ;;
  esac
  stop_all
done

python3 - "$WORK/legs.jsonl" "$WORK/faults.jsonl" "$THREADS" "$CONNS" "$DURATION" "$(nproc)" \
  "$FAULT_DURATION" "$FAULT_AT" "$FAULT_MIX" "$PROMOTE_AFTER" <<'PY'
import json, sys
legs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
faults = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
threads, conns, dur, cores, fdur, fat, fmix, promote = sys.argv[3:]
NAMES = {"classic": "classic (HAProxy, nginx, gunicorn, MariaDB)", "bulwark-python": "Bulwark, same Python app",
         "bulwark-rust": "Bulwark, built-in Rust guestbook"}
if legs:
    print(f"Whole stacks on loopback, {cores} cores, wrk {threads} threads × {conns} connections over HTTPS, "
          f"{dur} s per leg; mix = static file / API read / API post, in %. Errors: connect, read, write "
          f"errors, timeouts and answers not 2xx/3xx. Memory: every process of the stack at the end of the "
          f"leg; CPU: their user + system seconds during the leg.")
    print()
    print("| stack | mix | req/s | p50 ms | p99 ms | errors | processes | RSS MiB | PSS MiB | CPU s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for l in legs:
        err = l["connect"] + l["read"] + l["write"] + l["timeout"] + l["status"]
        print(f"| {NAMES.get(l['stack'], l['stack'])} | {l['mix']} | {l['rps']:.0f} | {l['p50_ms']:.2f} | "
              f"{l['p99_ms']:.2f} | {err} | {l['procs']} | {l['rss_kib']/1024:.0f} | {l['pss_kib']/1024:.0f} | "
              f"{l['cpu_s']:.1f} |")
    probed = [l for l in legs if "probe" in l]
    if probed:
        print()
        print("Latency by kind of request (bench/stack-probe.py: one more client on one kept connection, "
              "static file, read and post in turn during the leg), ms:")
        print()
        print("| stack | mix | static p50 | static p99 | read p50 | read p90 | read p99 | post p50 | post p90 "
              "| post p99 | post max | probe errors |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for l in probed:
            p = l["probe"]
            f = lambda k, q: "–" if p.get(k, {}).get(q) is None else f"{p[k][q]:.2f}"
            print(f"| {NAMES.get(l['stack'], l['stack'])} | {l['mix']} | {f('static', 'p50')} | "
                  f"{f('static', 'p99')} | {f('read', 'p50')} | {f('read', 'p90')} | {f('read', 'p99')} | "
                  f"{f('post', 'p50')} | {f('post', 'p90')} | {f('post', 'p99')} | {f('post', 'max')} | "
                  f"{p.get('errors', 0)} |")
if faults:
    print()
    print(f"Faults under load: one {fdur} s leg per fault at {fmix}, the fault {fat} s in. Failed: requests "
          f"not answered 2xx/3xx (errors and timeouts included). Longest write gap: the longest time between "
          f"two acknowledged posts in the leg. Lost: posts answered 201 that the database does not have at "
          f"the end. The classic stack's replica is promoted by hand {promote} s after its primary is killed.")
    print()
    print("| stack | fault | requests | failed | failed % | longest write gap s | writes back after the fault "
          "| acknowledged posts | lost |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|")
    for f in faults:
        pct = 100 * f["failed"] / max(f["requests"], 1)
        if f["writes_back_s"] is None:
            back = "never"
        elif f["gap_after_s"] < 1.0:
            back = "not interrupted (no gap over 1 s)"
        else:
            back = f"after {f['writes_back_s']:.2f} s"
        if f["fault"] == "db":
            if f["operator_s"] is not None:
                back += f", operator promoted the replica at {f['operator_s']:.1f} s"
            else:
                back += ", no operator"
        gap = "–" if f["longest_gap_s"] is None else f"{f['longest_gap_s']:.2f}"
        print(f"| {NAMES.get(f['stack'], f['stack'])} | "
              f"{f['what']} | {f['requests']} | {f['failed']} | {pct:.2f} | {gap} | {back} | "
              f"{f['posts_acked']} | {f.get('lost', '?')} |")
PY
if [ "$PROFILE" = 1 ]; then python3 "$PROFILER" report "$WORK/legs.jsonl"; fi
