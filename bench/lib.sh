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
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    local sudo=()
    if [ "$(id -u)" != 0 ]; then sudo=(sudo -n); fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
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
  out=$(wrk -t1 -c"$conns" -d"$dur" --latency "$url" 2>&1)
  local rps p50 p99 errs
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx or 3xx responses:/ {print $5} /Socket errors:/ {print "sock"}' <<<"$out" | head -1)
  if [ -n "$errs" ]; then echo "wrk reported errors for $url:" >&2; echo "$out" >&2; fi
  echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}

# wrk prints 512.00us / 1.20ms / 2.00s
to_ms() {
  python3 -c 'import sys,re
v=sys.argv[1]; m=re.match(r"([0-9.]+)(us|ms|s)$", v)
n=float(m.group(1)); u=m.group(2)
print(round(n/1000 if u=="us" else n*1000 if u=="s" else n, 3))' "$1"
}

median() { python3 -c 'import sys,statistics; print(statistics.median([float(x) for x in sys.argv[1:]]))' "$@"; }
