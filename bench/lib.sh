# Shared helpers for bench/*.sh (sourced).
set -euo pipefail
BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# A relative BULWARK is relative to the caller's directory (scripts cd).
if [ -n "${BULWARK:-}" ] && [ "${BULWARK#/}" = "$BULWARK" ]; then BULWARK="$PWD/$BULWARK"; fi

need_pkgs() {
  local missing=()
  for spec in "$@"; do
    local cmd=${spec%%:*} pkg=${spec##*:}
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

apt_install() {
  echo "installing: $*" >&2
  local sudo=()
  if [ "$(id -u)" != 0 ]; then sudo=(sudo -n); fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Path of the bulwark binary: $BULWARK if set, else a release build in
# ${CARGO_TARGET_DIR:-target} (built here; cargo's output goes to stderr).
bulwark_bin() {
  if [ -n "${BULWARK:-}" ]; then
    [ -x "$BULWARK" ] || { echo "BULWARK=$BULWARK is not an executable" >&2; return 1; }
    echo "$BULWARK"
    return 0
  fi
  command -v cargo >/dev/null 2>&1 || {
    echo "cargo not found: install Rust (https://rustup.rs) or set BULWARK=/path/to/bulwark" >&2
    return 1
  }
  (cd "$BENCH_ROOT" && cargo build --release -q -p bulwark >&2) || return 1
  local dir=${CARGO_TARGET_DIR:-$BENCH_ROOT/target}
  case $dir in /*) ;; *) dir=$BENCH_ROOT/$dir ;; esac
  echo "$dir/release/bulwark"
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {
  local port=$1
  for _ in $(seq 1 200); do
    (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && { exec 3>&- 3<&-; return 0; }
    sleep 0.05
  done
  echo "port $port never opened" >&2
  return 1
}

# run_wrk URL DURATION CONNS → prints "rps p50_ms p99_ms"
run_wrk() {
  local url=$1 dur=$2 conns=$3
  local out
  out=$(wrk -t"${WRK_THREADS:-1}" -c"$conns" -d"$dur" --latency "$url" 2>&1)
  local rps p50 p99 errs
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx or 3xx responses:/ {print $5} /Socket errors:/ {print "sock"}' <<<"$out" | head -1)
  if [ -n "$errs" ]; then echo "wrk reported errors for $url:" >&2; echo "$out" >&2; fi
  echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}

# wrk_rounds ROUNDS DURATION CONNS NAME=URL...: each round runs wrk on every
# URL in turn and appends its figures to RPS[NAME], P50[NAME] and P99[NAME]
# (associative arrays the caller declares), logging each run on stderr.
wrk_rounds() {
  local rounds=$1 dur=$2 conns=$3; shift 3
  local r pair n rps p50 p99
  for r in $(seq 1 "$rounds"); do
    for pair in "$@"; do
      n=${pair%%=*}
      read -r rps p50 p99 < <(run_wrk "${pair#*=}" "$dur" "$conns")
      RPS[$n]="${RPS[$n]:-} $rps"; P50[$n]="${P50[$n]:-} $p50"; P99[$n]="${P99[$n]:-} $p99"
      echo "round $r $n: $rps req/s p50 ${p50}ms p99 ${p99}ms" >&2
    done
  done
}

# wrk prints 512.00us / 1.20ms / 2.00s
to_ms() {
  python3 -c 'import sys,re
v=sys.argv[1]; m=re.match(r"([0-9.]+)(us|ms|s)$", v)
n=float(m.group(1)); u=m.group(2)
print(round(n/1000 if u=="us" else n*1000 if u=="s" else n, 3))' "$1"
}

median() { python3 -c 'import sys,statistics; print(statistics.median([float(x) for x in sys.argv[1:]]))' "$@"; }

# Like need_pkgs for Python modules of Debian's python3 (the one gunicorn
# runs): need_pymods module:package...
need_pymods() {
  local missing=()
  for spec in "$@"; do
    /usr/bin/python3 -c "import ${spec%%:*}" 2>/dev/null || missing+=("${spec##*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# ---- MariaDB primary + semi-sync replica (bench/db.sh, bench/stack.sh) ----
# The servers run in the foreground on datadirs under $WORK, loopback ports
# and their own sockets (the system service is never used); their PIDs go
# to the caller's PIDS array, their pid files to $WORK/NAME.pid.

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
msql() { local name=$1; shift; mariadb --no-defaults -uroot -S "$WORK/$name.sock" -N -B -e "$1"; }
mariadb_status() { msql "$1" "SHOW STATUS LIKE '$2'" | cut -f2; }
# start_pair PRIMARY REPLICA PRIMARY_ID replica-extra-args...: a primary
# (binary log, semi-sync AFTER_SYNC) and its replica; database `bench`, user
# bench/bench from 127.0.0.1. Sets PAIR_URL and PAIR_PORTS ("primary
# replica"); not a $(...) subshell: the server PIDs must reach PIDS.
start_pair() {
  local p=$1 r=$2 id=$3; shift 3
  local pport rport
  pport=$(free_port); rport=$(free_port)
  start_mariadb "$p" "$pport" "$id" --log-bin="$WORK/$p/binlog" --binlog-format=ROW \
    --rpl-semi-sync-master-enabled=ON --rpl-semi-sync-master-wait-point=AFTER_SYNC \
    --rpl-semi-sync-master-timeout=30000
  start_mariadb "$r" "$rport" "$((id + 1))" --relay-log="$WORK/$r/relay" --rpl-semi-sync-slave-enabled=ON "$@"
  msql "$p" "CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'repl'; GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';
    CREATE DATABASE bench; CREATE USER 'bench'@'127.0.0.1' IDENTIFIED BY 'bench';
    GRANT ALL ON bench.* TO 'bench'@'127.0.0.1';"
  msql "$r" "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$pport, MASTER_USER='repl', MASTER_PASSWORD='repl',
    MASTER_USE_GTID=slave_pos; START SLAVE;"
  # The primary switches semi-sync on once the replica has connected and
  # caught up with the binary log: wait for both.
  for _ in $(seq 1 300); do
    [ "$(mariadb_status "$p" Rpl_semi_sync_master_clients)" = 1 ] &&
      [ "$(mariadb_status "$p" Rpl_semi_sync_master_status)" = ON ] && break
    sleep 0.1
  done
  if [ "$(mariadb_status "$p" Rpl_semi_sync_master_status)" != ON ] ||
    [ "$(mariadb_status "$p" Rpl_semi_sync_master_clients)" != 1 ]; then
    echo "semi-sync not active on $p" >&2
    msql "$r" "SHOW SLAVE STATUS\G" >&2 || true
    return 1
  fi
  echo "mariadb $(msql "$p" 'SELECT VERSION()') ($p -> $r $*): semi-sync on, 1 semi-sync replica;" \
    "replica sync_relay_log=$(msql "$r" 'SELECT @@sync_relay_log')" >&2
  # The setup statements above ran before the replica connected (async).
  mariadb_status "$p" Rpl_semi_sync_master_no_tx > "$WORK/$p.no_tx0"
  PAIR_URL="mysql://bench:bench@127.0.0.1:$pport/bench"
  PAIR_PORTS="$pport $rport"
}
# Semi-sync must still be on, with no commit that fell back to async.
check_pair() {
  local p=$1 no_tx
  no_tx=$(($(mariadb_status "$p" Rpl_semi_sync_master_no_tx) - $(cat "$WORK/$p.no_tx0")))
  echo "mariadb $p after the run: semi-sync status=$(mariadb_status "$p" Rpl_semi_sync_master_status)," \
    "acked commits=$(mariadb_status "$p" Rpl_semi_sync_master_yes_tx), unacked (async) commits during the run=$no_tx" >&2
  if [ "$(mariadb_status "$p" Rpl_semi_sync_master_status)" != ON ] || [ "$no_tx" != 0 ]; then
    echo "WARNING: MariaDB semi-sync fell back to async on $p" >&2
  fi
}

# ---- processes ----

# PIDs of the processes under (and including) the given ones.
proc_tree() {
  python3 "$BENCH_ROOT/bench/proctree.py" "$@"
}

# kill -9 the given processes and everything under them, at once.
kill_tree() {
  local all
  all=$(proc_tree "$@")
  [ -n "$all" ] && { kill -9 $all 2>/dev/null || true; }
  return 0
}

# Memory and CPU of the process trees under the given PIDs, from /proc:
# one JSON line {"procs", "rss_kib", "pss_kib", "cpu": {pid: seconds}}.
# Shells and sleeps (the bench's own wrappers) are left out. Two samples
# give the CPU seconds of a leg: usage_cpu_between BEFORE AFTER.
usage_sample() {
  python3 - $(proc_tree "$@") <<'PY'
import json, os, sys
hz = os.sysconf("SC_CLK_TCK")
out = {"procs": 0, "rss_kib": 0, "pss_kib": 0, "cpu": {}}
for p in sys.argv[1:]:
    try:
        s = open(f"/proc/{p}/stat").read()
        if s[s.index("(") + 1:s.rindex(")")] in ("bash", "sh", "sleep", "timeout"):
            continue
        f = s[s.rindex(")") + 2:].split()
        cpu = (int(f[11]) + int(f[12])) / hz
        rss = pss = 0
        for line in open(f"/proc/{p}/smaps_rollup"):
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        continue
    out["procs"] += 1
    out["rss_kib"] += rss
    out["pss_kib"] += pss
    # Keyed by pid and start time: a pid reused by a new process is another.
    out["cpu"][f"{p}:{f[19]}"] = cpu
print(json.dumps(out))
PY
}
usage_cpu_between() {
  python3 - "$1" "$2" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1])["cpu"], json.loads(sys.argv[2])["cpu"]
print(round(sum(v - a.get(k, 0.0) for k, v in b.items()), 2))
PY
}

# start_nginx_backends WORK PORT... : one nginx per port (one worker each,
# answering a small fixed body), configs under WORK/bPORT; their pids are
# appended to the caller's `pids` array.
start_nginx_backends() {
  local work=$1 port nginx
  shift
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
  for port in "$@"; do
    mkdir -p "$work/b$port"
    cat >"$work/b$port/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/b$port/nginx.pid;
error_log $work/b$port/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$port reuseport;
    location / { return 200 "hello from $port\n"; }
  }
}
CONF
    "$nginx" -p "$work/b$port" -c "$work/b$port/nginx.conf" &
    pids+=($!)
  done
}

# make_cert WORK KIND → WORK/KIND.{crt,key,pem}: a self-signed certificate
# for `localhost` with an ECDSA P-256 (KIND=ecdsa) or RSA 2048 (rsa) key.
make_cert() {
  local work=$1 kind=$2 newkey
  case $kind in
    ecdsa) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
  esac
  openssl req -x509 -nodes "${newkey[@]}" -days 30 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$work/$kind.key" -out "$work/$kind.crt" 2>/dev/null
  cat "$work/$kind.crt" "$work/$kind.key" >"$work/$kind.pem"
}

# start_balancers WORK KIND BACKEND_PORT... : HAProxy, nginx as a balancer
# and Bulwark's lb, BALANCER_THREADS worker threads (or nginx worker
# processes) each, 1 unless set, round robin over the backends,
# each adding the same forwarded headers. KIND is `plain` (HTTP) or a
# certificate made by make_cert (HTTPS, with HTTP/2 by ALPN). Their ports
# go into the caller's associative array PORT[haproxy|nginx|bulwark], their
# pids into `pids`. Needs BIN (the bulwark binary).
start_balancers() {
  local work=$1 kind=$2 p_ha p_ng p_bw proto=https ha_bind ng_listen ng_tls="" bw_tls="" servers="" upstream="" i=0 b
  local threads=${BALANCER_THREADS:-1} tag
  shift 2
  tag=$kind-t$threads
  p_ha=$(free_port); p_ng=$(free_port); p_bw=$(free_port)
  PORT[haproxy]=$p_ha; PORT[nginx]=$p_ng; PORT[bulwark]=$p_bw
  for b in "$@"; do
    i=$((i + 1))
    servers+="  server b$i 127.0.0.1:$b"$'\n'
    upstream+="server 127.0.0.1:$b; "
  done
  if [ "$kind" = plain ]; then
    proto=http
    ha_bind="bind 127.0.0.1:$p_ha"
    ng_listen="listen 127.0.0.1:$p_ng;"
  else
    ha_bind="bind 127.0.0.1:$p_ha ssl crt $work/$kind.pem alpn h2,http/1.1"
    ng_listen="listen 127.0.0.1:$p_ng ssl http2;"
    ng_tls="ssl_certificate $work/$kind.crt; ssl_certificate_key $work/$kind.key; ssl_session_cache shared:SSL:10m;"
    bw_tls="tls = { certificate = [{ cert = \"$work/$kind.crt\", key = \"$work/$kind.key\" }], hsts = \"0s\" }"
  fi
  cat >"$work/haproxy-$tag.cfg" <<CONF
global
  nbthread $threads
  maxconn 8000
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 3s
  timeout client 30s
  timeout server 30s
  option forwardfor
  http-reuse always
frontend www
  $ha_bind
  # Same header work as Bulwark's defaults: XFF, X-Forwarded-Proto, Forwarded.
  http-request set-header X-Forwarded-Proto $proto
  http-request add-header Forwarded "for=%[src];proto=$proto"
  default_backend app
backend app
  balance roundrobin
$servers
CONF
  "${HAPROXY:-haproxy}" -f "$work/haproxy-$tag.cfg" -db &
  pids+=($!)
  mkdir -p "$work/nglb-$tag"
  cat >"$work/nglb-$tag/nginx.conf" <<CONF
worker_processes $threads;
daemon off;
pid $work/nglb-$tag/nginx.pid;
error_log $work/nglb-$tag/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream app { $upstream keepalive 64; }
  server {
    $ng_listen
    $ng_tls
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $proto;
      proxy_set_header Forwarded "for=\$remote_addr;proto=$proto";
    }
  }
}
CONF
  "${NGINX:-nginx}" -p "$work/nglb-$tag" -c "$work/nglb-$tag/nginx.conf" &
  pids+=($!)
  # No Via and no request id: HAProxy and nginx add neither here.
  {
    printf 'threads = %s\n[[frontend]]\nname = "www"\nbind = "127.0.0.1:%s"\nbackend = "app"\naccess_log = false\nvia = false\nrequest_id = false\n' "$threads" "$p_bw"
    [ -n "$bw_tls" ] && printf '%s\n' "$bw_tls"
    printf '[[backend]]\nname = "app"\nbalance = "roundrobin"\n'
    i=0
    for b in "$@"; do
      i=$((i + 1))
      printf '[[backend.server]]\nname = "b%s"\naddress = "127.0.0.1:%s"\n' "$i" "$b"
    done
  } >"$work/lb-$tag.toml"
  RUST_LOG=warn "$BIN" lb -c "$work/lb-$tag.toml" >/dev/null &
  pids+=($!)
  for b in $p_ha $p_ng $p_bw; do wait_port "$b"; done
}

# new_workdir: a fresh temporary directory in `work` and an empty `pids`;
# at exit every process in `pids` is stopped and the directory removed.
new_workdir() {
  work=$(mktemp -d)
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}

# balancer_bench_start: what lb.sh, tls.sh and lb-profile.sh share: BIN,
# NGINX and HAPROXY, a fresh `work` directory, and two nginx backends (one
# worker each, answering a small fixed body) on ports b1 and b2.
balancer_bench_start() {
  cd "$BENCH_ROOT"
  BIN=$(bulwark_bin)
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
  HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
  new_workdir
  b1=$(free_port); b2=$(free_port)
  start_nginx_backends "$work" "$b1" "$b2"
}

# write_db_cluster_configs DIR SECRET: configs DIR/db1.toml..db3.toml of a
# three-voter `bulwark db` cluster on free loopback ports (PORTS: the API
# ports, RAFT_PORTS: the Raft ports; every node bootstraps with all three
# as peers). HEARTBEAT and ELECTION_TIMEOUT, when set, go into each config.
write_db_cluster_configs() {
  local dir=$1 secret=$2 i j
  PORTS=($(free_port) $(free_port) $(free_port))
  RAFT_PORTS=($(free_port) $(free_port) $(free_port))
  for i in 1 2 3; do
    {
      echo "node_id = $i"; echo "listen = \"127.0.0.1:${PORTS[$((i-1))]}\""
      echo "raft_listen = \"127.0.0.1:${RAFT_PORTS[$((i-1))]}\""; echo "data_dir = \"$dir/db$i\""
      echo "secret = \"$secret\""; echo "bootstrap = true"
      if [ -n "${HEARTBEAT:-}" ]; then echo "heartbeat_interval = \"$HEARTBEAT\""; fi
      if [ -n "${ELECTION_TIMEOUT:-}" ]; then echo "election_timeout = \"$ELECTION_TIMEOUT\""; fi
      for j in 1 2 3; do echo "[[peer]]"; echo "id = $j"; echo "address = \"127.0.0.1:${PORTS[$((j-1))]}\""
        echo "raft_address = \"127.0.0.1:${RAFT_PORTS[$((j-1))]}\""; done
    } > "$dir/db$i.toml"
  done
}
