#!/usr/bin/env bash
# Runs the benchmarks in sequence and writes docs/BENCHMARKS.md.
#
#   bash bench/run-all.sh                  # lb idle tls lbprofile web db failover stack
#   bash bench/run-all.sh db failover      # a subset; the other sections keep
#                                          # their last results
#   SMOKE=1 bash bench/run-all.sh          # short durations, output in /tmp
#
# For each benchmark it records the machine, the date, the git commit, the
# load average before and after, the exact command, its table (stdout) and
# its per-round log (stderr) under $RESULTS/<name>.{json,md,log}, then
# renders $OUT from bench/BENCHMARKS.template.md and every result present
# (bench/render.py). Missing tools are installed with apt-get (lib.sh).
#
# Environment:
#   BULWARK=path      binary to benchmark (default: cargo build --release,
#                     in ${CARGO_TARGET_DIR:-target})
#   SMOKE=1           1 short round of everything; RESULTS and OUT default
#                     to /tmp/bulwark-bench-smoke{,.md} instead of the repo
#   RESULTS=dir       default bench/results
#   OUT=file          default docs/BENCHMARKS.md
#   LB_ROUNDS LB_DURATION LB_CONNS        default 3, 8s, 50
#   IDLE_NS                               default "10000 50000"
#   TLS_ROUNDS TLS_DURATION TLS_CONNS     default 3, 8, 50
#   LBPROFILE_N                           default 200000
#   WEB_ROUNDS WEB_DURATION WEB_CONNS     default 5, 10s, 50
#   DB_CLIENTS DB_SECONDS DB_ROUNDS       default 16, 10, 2
#   FAILOVER_ROUNDS FAILOVER_WRITERS      default 5, 4
#   STACK_DURATION STACK_CONNS STACK_FAULT_DURATION STACK_PROMOTE_AFTER
#                                         default 20, 32, 30, 10
#   BENCH_TIMEOUT     seconds one benchmark may take (default 1800)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"
set +e
cd "$BENCH_ROOT"

ALL=(lb idle tls lbprofile web db failover stack)
if [ $# -gt 0 ]; then BENCHES=("$@"); else BENCHES=("${ALL[@]}"); fi
for b in "${BENCHES[@]}"; do
  case " ${ALL[*]} " in *" $b "*) ;; *) echo "unknown benchmark '$b' (known: ${ALL[*]})" >&2; exit 2 ;; esac
done

if [ "${SMOKE:-0}" = 1 ]; then
  : "${LB_ROUNDS:=1}" "${LB_DURATION:=2s}" "${IDLE_NS:=1000}" "${TLS_ROUNDS:=1}" "${TLS_DURATION:=2}" "${LBPROFILE_N:=20000}" "${WEB_ROUNDS:=1}" "${WEB_DURATION:=2s}"
  : "${DB_CLIENTS:=4}" "${DB_SECONDS:=2}" "${DB_ROUNDS:=1}" "${FAILOVER_ROUNDS:=2}"
  : "${STACK_DURATION:=3}" "${STACK_FAULT_DURATION:=8}" "${STACK_PROMOTE_AFTER:=3}"
  : "${RESULTS:=/tmp/bulwark-bench-smoke}" "${OUT:=/tmp/bulwark-bench-smoke.md}"
fi
RESULTS=${RESULTS:-$BENCH_ROOT/bench/results}
OUT=${OUT:-$BENCH_ROOT/docs/BENCHMARKS.md}
mkdir -p "$RESULTS"

need_pkgs python3:python3
BULWARK=$(bulwark_bin) || exit 1
export BULWARK

# ---- the machine ----
fsync_probe() { # p50/p99 of a 4 KiB write + fdatasync on the filesystem of $TMPDIR
  python3 - <<'PY'
import os, statistics, tempfile, time
d = tempfile.mkdtemp()
p = os.path.join(d, "f")
fd = os.open(p, os.O_WRONLY | os.O_CREAT)
lat = []
for _ in range(200):
    os.write(fd, b"x" * 4096)
    t = time.perf_counter(); os.fdatasync(fd); lat.append(time.perf_counter() - t)
os.close(fd); os.unlink(p); os.rmdir(d)
lat.sort()
print(f"{statistics.median(lat)*1000:.2f} ms p50, {lat[int(len(lat)*0.99)]*1000:.2f} ms p99")
PY
}
machine_json() {
  local tmpdir=${TMPDIR:-/tmp} dev rot kind=
  dev=$(df "$tmpdir" | awk 'NR==2 {print $1}')
  rot=$(cat "/sys/block/$(basename "$dev")/queue/rotational" 2>/dev/null || true)
  case $rot in 0) kind="non-rotational" ;; 1) kind="reported rotational (virtual disks often are)" ;; esac
  python3 - "$(nproc)" "$(lscpu 2>/dev/null | awk -F: '/^Model name/ {sub(/^ +/, "", $2); print $2; exit}')" \
    "$(uname -sr)" "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)" \
    "$(df -hT "$tmpdir" | awk 'NR==2 {print $2 " on " $1 ", " $3 " (" $5 " free)"}')" "$kind" \
    "$(fsync_probe)" "$(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-unknown}")" "$(uname -n)" <<'PY'
import json, sys
k = ["cores", "cpu", "kernel", "ram", "disk", "disk_kind", "fdatasync", "os", "host"]
print(json.dumps(dict(zip(k, sys.argv[1:]))))
PY
}
# CPU use of the whole machine during one second, and the busiest programs:
# {"busy": "87% of 200%", "top": ["rustc 95%", ...]}.
busy_probe() {
  python3 - <<'PY'
import json, os, time
def cpu():
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    return sum(v), v[3] + v[4]
def procs():
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            s = open(f"/proc/{p}/stat").read()
            f = s[s.rindex(")") + 2:].split()
            out[p] = (s[s.index("(") + 1:s.rindex(")")], int(f[11]) + int(f[12]))
        except (OSError, ValueError, IndexError):
            pass
    return out
t0, i0 = cpu(); p0 = procs(); time.sleep(1); t1, i1 = cpu(); p1 = procs()
hz = os.sysconf("SC_CLK_TCK")
n = os.cpu_count()
busy = 100 * (1 - (i1 - i0) / max(t1 - t0, 1)) * n
use = {}
for pid, (name, t) in p1.items():
    if pid in p0 and p0[pid][0] == name:
        use[name] = use.get(name, 0) + (t - p0[pid][1]) * 100 / hz
top = [f"{k} {v:.0f}%" for k, v in sorted(use.items(), key=lambda x: -x[1]) if v >= 5][:4]
print(json.dumps({"busy": f"{busy:.0f}% of {n * 100}%", "top": top}))
PY
}
MACHINE=$(machine_json)
echo "machine: $MACHINE" >&2
COMMIT=$(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$BENCH_ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (with uncommitted changes)")
VERSION=$("$BULWARK" --version 2>/dev/null | head -1)

command_for() {
  case $1 in
    lb) echo "ROUNDS=${LB_ROUNDS:-3} DURATION=${LB_DURATION:-8s} CONNS=${LB_CONNS:-50} bash bench/lb.sh" ;;
    idle) echo "NS=\"${IDLE_NS:-10000 50000}\" bash bench/idle.sh" ;;
    tls) echo "ROUNDS=${TLS_ROUNDS:-3} DURATION=${TLS_DURATION:-8} CONNS=${TLS_CONNS:-50} bash bench/tls.sh" ;;
    lbprofile) echo "N=${LBPROFILE_N:-200000} bash bench/lb-profile.sh" ;;
    web) echo "ROUNDS=${WEB_ROUNDS:-5} DURATION=${WEB_DURATION:-10s} CONNS=${WEB_CONNS:-50} bash bench/web.sh" ;;
    db) echo "bash bench/db.sh ${DB_CLIENTS:-16} ${DB_SECONDS:-10} ${DB_ROUNDS:-2}" ;;
    failover) echo "ROUNDS=${FAILOVER_ROUNDS:-5} WRITERS=${FAILOVER_WRITERS:-4} bash bench/failover.sh" ;;
    stack) echo "DURATION=${STACK_DURATION:-20} CONNS=${STACK_CONNS:-32} FAULT_DURATION=${STACK_FAULT_DURATION:-30}" \
      "PROMOTE_AFTER=${STACK_PROMOTE_AFTER:-10} PROFILE=${STACK_PROFILE:-1} bash bench/stack.sh" ;;
  esac
}

failed=()
for b in "${BENCHES[@]}"; do
  cmd="BULWARK=$BULWARK $(command_for "$b")"
  echo "== $b: $cmd" >&2
  start=$(date -u '+%F %T')
  t0=$SECONDS
  load0=$(cut -d' ' -f1-3 /proc/loadavg)
  busy0=$(busy_probe)
  timeout -k 30 "${BENCH_TIMEOUT:-1800}" bash -c "$cmd" > "$RESULTS/$b.md.new" 2> "$RESULTS/$b.log.new"
  rc=$?
  load1=$(cut -d' ' -f1-3 /proc/loadavg)
  busy1=$(busy_probe)
  end=$(date -u '+%F %T')
  # Keep only the tables and their caption (from the first non-empty line).
  sed -n '/[^[:space:]]/,$p' "$RESULTS/$b.md.new" > "$RESULTS/$b.md"
  # The per-round log, without apt/cargo chatter.
  grep -v '^\(Reading\|Building\|Selecting\|Preparing\|Unpacking\|Setting up\|Processing\|debconf\)' "$RESULTS/$b.log.new" > "$RESULTS/$b.log"
  rm -f "$RESULTS/$b.md.new" "$RESULTS/$b.log.new"
  python3 - "$RESULTS/$b.json" "$b" "$cmd" "$start" "$end" "$((SECONDS - t0))" "$load0" "$load1" "$rc" \
    "$COMMIT${DIRTY:-}" "$VERSION" "$MACHINE" "$busy0" "$busy1" <<'PY'
import json, sys
f, name, cmd, start, end, secs, l0, l1, rc, commit, version, machine, b0, b1 = sys.argv[1:]
json.dump({"name": name, "command": cmd, "start": start, "end": end, "seconds": int(secs),
           "load_before": l0, "load_after": l1, "cpu_before": json.loads(b0), "cpu_after": json.loads(b1),
           "exit": int(rc), "commit": commit, "version": version, "machine": json.loads(machine)},
          open(f, "w"), indent=1)
PY
  if [ $rc -ne 0 ]; then
    failed+=("$b")
    echo "== $b FAILED (exit $rc); last lines of its log:" >&2
    tail -20 "$RESULTS/$b.log" >&2
  else
    echo "== $b done in $((SECONDS - t0)) s (load $load0 -> $load1)" >&2
    cat "$RESULTS/$b.md" >&2
  fi
done

python3 "$here/render.py" "$here/BENCHMARKS.template.md" "$RESULTS" "$OUT" || exit 1
echo "wrote $OUT" >&2
if [ ${#failed[@]} -gt 0 ]; then echo "failed: ${failed[*]}" >&2; exit 1; fi
