#!/usr/bin/env bash
# Where a balancer's time goes, per request: HAProxy against Bulwark's lb,
# one worker thread each, in front of the same two nginx backends, for
# HTTP/1.1 over plain TCP and HTTP/2 over TLS 1.3 (ECDSA P-256).
#
# Each balancer serves exactly N requests (h2load -n N, C connections, 10
# streams each for HTTP/2) while `perf stat` counts, for the balancer's
# process only: CPU time (user and kernel, from /proc), system calls by
# name, and context switches. These are counts, not rates, so they do not
# depend on how busy the machine is. Then `perf record` samples one more
# run, and the top symbols and the kernel's share of the samples are
# printed.
#
#   bash bench/lb-profile.sh                 # N=200000, C=50
#   N=50000 PERF_RECORD=0 bash bench/lb-profile.sh
# Needs root (perf on another process) and perf (Debian's linux-perf).
source "$(dirname "$0")/lib.sh"
N=${N:-200000}
C=${C:-50}
PERF_RECORD=${PERF_RECORD:-1}
SYSCALLS=(read write readv writev recvfrom sendto recvmsg sendmsg epoll_wait epoll_ctl accept4 close
  futex io_uring_enter setsockopt getsockopt)

need_pkgs haproxy:haproxy nginx:nginx-light h2load:nghttp2-client openssl:openssl perf:linux-perf python3:python3
balancer_bench_start
for p in $b1 $b2; do wait_port "$p"; done
make_cert "$work" ecdsa

# cpu_ticks PID → "utime stime" in clock ticks (all threads of the process)
cpu_ticks() { awk '{ sub(/.*\) /, ""); split($0, f, " "); print f[12], f[13] }' "/proc/$1/stat"; }

# load URL PROTO → runs h2load for exactly N requests; fails on any error
load() {
  local url=$1 proto=$2 args=(-n "$N" -c "$C" -t 1) out
  if [ "$proto" = h1 ]; then args+=(--h1); else args+=(-m 10); fi
  out=$(h2load "${args[@]}" "$url" 2>&1)
  if ! grep -q "$N succeeded, 0 failed, 0 errored" <<<"$out"; then
    echo "h2load did not get $N good answers from $url:" >&2
    grep -E 'requests:|status codes' <<<"$out" >&2
    return 1
  fi
}

events=(context-switches raw_syscalls:sys_enter)
for s in "${SYSCALLS[@]}"; do events+=("syscalls:sys_enter_$s"); done
events_csv=$(IFS=,; echo "${events[*]}")

declare -A PORT
rows=() syscall_rows=() profiles=()
for proto in h1 h2; do
  if [ "$proto" = h1 ]; then kind=plain scheme=http; else kind=ecdsa scheme=https; fi
  start_balancers "$work" "$kind" "$b1" "$b2"
  for n in haproxy bulwark; do
    url="$scheme://localhost:${PORT[$n]}/"
    pid=$(ss -Hltnp "sport = :${PORT[$n]}" | grep -o "pid=[0-9]*" | sed -n "1s/pid=//p")
    [ -n "$pid" ] || { echo "no process listens on ${PORT[$n]}" >&2; exit 1; }
    load "$url" "$proto" # warm-up: connections to the backends, caches
    read -r u0 s0 < <(cpu_ticks "$pid")
    perf stat -x, -e "$events_csv" -p "$pid" -o "$work/stat-$proto-$n" -- bash -c "$(declare -f load); N=$N C=$C load '$url' $proto"
    read -r u1 s1 < <(cpu_ticks "$pid")
    # One line per balancer and protocol: per-request figures.
    IFS=$'\t' read -r row srow < <(python3 - "$work/stat-$proto-$n" "$N" "$((u1 - u0))" "$((s1 - s0))" "$n" "$proto" "${SYSCALLS[*]}" <<'PY'
import sys
path, n, ut, st, name, proto, names = sys.argv[1:]
n, tick = int(n), 1e6 / 100  # USER_HZ = 100
counts = {}
for line in open(path):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit():
        counts[f[2]] = float(f[0])
per = lambda k: counts.get(k, 0.0) / n
user, kern = int(ut) * tick / n, int(st) * tick / n
print(f"| {name} | {proto} | {user + kern:.1f} | {user:.1f} | {kern:.1f} | {per('raw_syscalls:sys_enter'):.2f} "
      f"| {per('context-switches'):.3f} |",
      "| " + name + " | " + proto + " | " + " | ".join(f"{per('syscalls:sys_enter_' + s):.2f}" for s in names.split()) + " |",
      sep="\t")
PY
    )
    rows+=("$row"); syscall_rows+=("$srow")
    if [ "$PERF_RECORD" = 1 ]; then
      perf record -q -F 1999 -g -p "$pid" -o "$work/perf-$proto-$n.data" -- bash -c "$(declare -f load); N=$N C=$C load '$url' $proto" 2>/dev/null
      kernel=$(perf report -q -i "$work/perf-$proto-$n.data" --no-children --sort dso --stdio 2>/dev/null |
        awk '/\[kernel/ { gsub("%", "", $1); s += $1 } END { printf "%.0f", s }')
      top=$(perf report -q -i "$work/perf-$proto-$n.data" --no-children --sort sym --stdio -g none 2>/dev/null |
        grep -v '^$' | sed -n '1,15s/^ */    /p')
      profiles+=("**$n, $proto**: ${kernel} % of samples in the kernel; top symbols (self time):"$'\n\n'"$top"$'\n')
    fi
  done
done

echo
echo "Balancer profile: $N requests per leg (h2load -c$C; HTTP/2 with 10 streams per connection, TLS 1.3 ECDSA), one worker thread each, 2 nginx backends. $(nproc) cores, $(date -u +%F)."
echo
echo "| balancer | protocol | CPU µs/request | user µs | kernel µs | syscalls/request | context switches/request |"
echo "|---|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
echo "System calls per request, by name:"
echo
echo "| balancer | protocol | $(printf '%s | ' "${SYSCALLS[@]}")"
echo "|---|---|$(printf -- '---:|%.0s' "${SYSCALLS[@]}")"
printf '%s\n' "${syscall_rows[@]}"
if [ "$PERF_RECORD" = 1 ]; then
  echo
  printf '%s\n' "${profiles[@]}"
fi
