#!/usr/bin/env bash
# Load balancer benchmark: direct vs HAProxy vs nginx-as-LB vs Bulwark, in
# one run, interleaved rounds, once with one worker thread each (nginx: one
# worker process) and once with two. Prints a markdown table.
#
#   bash bench/lb.sh            # 3 rounds × 8 s, 50 connections, 1 and 2 threads
#   ROUNDS=5 DURATION=10s CONNS=100 THREADS="1" bash bench/lb.sh
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-1 2}

need_pkgs haproxy:haproxy nginx:nginx-light wrk:wrk python3:python3
# Two nginx backends and the three balancers in front of them (lib.sh).
balancer_bench_start
for p in $b1 $b2; do wait_port "$p"; done
declare -A PORT RPS P50 P99
names=(direct haproxy nginx bulwark)
for t in $THREADS; do
  # The balancers of the previous thread count stop first: they would
  # only take memory, but a clean machine costs nothing.
  for p in "${pids[@]:2}"; do kill "$p" 2>/dev/null || true; done
  pids=("${pids[@]:0:2}")
  PORT=([direct]=$b1)
  BALANCER_THREADS=$t start_balancers "$work" plain "$b1" "$b2"
  # wrk gets as many threads as the balancers, so that it is not the
  # bottleneck of the two-thread legs.
  export WRK_THREADS=$t
  # Warm up every path once.
  for p in $b1 ${PORT[haproxy]} ${PORT[nginx]} ${PORT[bulwark]}; do wrk -t"$t" -c"$CONNS" -d1s "http://127.0.0.1:$p/" >/dev/null 2>&1; done
  targets=()
  for n in "${names[@]}"; do targets+=("$t/$n=http://127.0.0.1:${PORT[$n]}/"); done
  wrk_rounds "$ROUNDS" "$DURATION" "$CONNS" "${targets[@]}"
done

echo
echo "LB benchmark: $ROUNDS rounds × $DURATION, wrk -c$CONNS with as many threads as the balancers, 2 nginx backends; medians. $(nproc) cores, $(date -u +%F)."
echo
echo "| threads | target | req/s | p50 ms | p99 ms | vs HAProxy req/s | vs direct req/s |"
echo "|---:|---|---:|---:|---:|---:|---:|"
for t in $THREADS; do
  ha=$(median ${RPS[$t/haproxy]}); di=$(median ${RPS[$t/direct]})
  for n in "${names[@]}"; do
    rps=$(median ${RPS[$t/$n]}); p50=$(median ${P50[$t/$n]}); p99=$(median ${P99[$t/$n]})
    printf "| %s | %s | %.0f | %.3f | %.3f | %.2f | %.2f |\n" "$t" "$n" "$rps" "$p50" "$p99" \
      "$(python3 -c "print($rps/$ha)")" "$(python3 -c "print($rps/$di)")"
  done
done
