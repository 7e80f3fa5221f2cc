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
# Two nginx backends and the three balancers in front of them (lib.sh).
balancer_bench_start
declare -A PORT=([direct]=$b1)
start_balancers "$work" plain "$b1" "$b2"
for p in $b1 $b2; do wait_port "$p"; done
# Warm up every path once.
for p in $b1 ${PORT[haproxy]} ${PORT[nginx]} ${PORT[bulwark]}; do wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$p/" >/dev/null 2>&1; done

declare -A RPS P50 P99
names=(direct haproxy nginx bulwark)
targets=()
for n in "${names[@]}"; do targets+=("$n=http://127.0.0.1:${PORT[$n]}/"); done
wrk_rounds "$ROUNDS" "$DURATION" "$CONNS" "${targets[@]}"

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
