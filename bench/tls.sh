#!/usr/bin/env bash
# HTTPS benchmark: Bulwark's lb (rustls) against HAProxy and nginx (both
# OpenSSL), one worker thread each, in front of the same two nginx
# backends, with the same certificate, for an ECDSA P-256 and an RSA 2048
# certificate. Interleaved rounds; prints one markdown table of medians.
#
#   keep-alive  req/s over kept connections (wrk, TLS 1.3, HTTP/1.1)
#   new         new connections per second (wrk with `Connection: close`);
#               wrk resumes TLS sessions, so these are mostly resumed
#               handshakes: the RSA and ECDSA figures come out the same
#   full        full handshakes per second, no resumption (FULL_CLIENTS
#               `openssl s_time -new` at once, each one connection at a
#               time; the figures add up)
#   resumed     new connections per second resuming a session
#               (openssl s_time -reuse, one connection at a time)
#   h2          HTTP/2 req/s (h2load, 50 connections × 10 streams)
#
#   bash bench/tls.sh                       # 3 rounds × 8 s
#   ROUNDS=5 DURATION=10 CONNS=100 bash bench/tls.sh
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-50}
FULL_CLIENTS=${FULL_CLIENTS:-4}

need_pkgs haproxy:haproxy nginx:nginx-light wrk:wrk h2load:nghttp2-client openssl:openssl python3:python3
# Two nginx backends, one worker each, answering a small fixed body.
balancer_bench_start

declare -A PORT

# run_h2load URL → req/s
run_h2load() {
  local out
  out=$(h2load -D "$DURATION" -c "$CONNS" -m 10 -t 1 "$1" 2>&1)
  if ! grep -q ' 0 failed, 0 errored' <<<"$out"; then echo "h2load reported failures for $1:" >&2; grep -E 'requests:|status codes' <<<"$out" >&2; fi
  awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$out"
}

# run_resumed PORT → connections/s resuming a session (s_time, one at a time)
run_resumed() {
  openssl s_time -connect "127.0.0.1:$1" -reuse -time "$DURATION" -www / 2>/dev/null |
    awk '/connections in/ && /real seconds/ { if ($4 > 0) print $1 / $4; exit }'
}

# run_full PORT → full handshakes/s: FULL_CLIENTS s_time -new clients at
# once, each connection a new session (no ticket, no session id reused)
run_full() {
  local i outs=()
  for i in $(seq 1 "$FULL_CLIENTS"); do
    outs+=("$work/full.$i")
    openssl s_time -connect "127.0.0.1:$1" -new -time "$DURATION" -www / >"$work/full.$i" 2>/dev/null &
  done
  wait
  cat "${outs[@]}" | awk '/connections in/ && /real seconds/ { if ($4 > 0) s += $1 / $4 } END { printf "%.0f\n", s }'
}

names=(haproxy nginx bulwark)
declare -A R
for kind in ecdsa rsa; do
  make_cert "$work" "$kind"
  start_balancers "$work" "$kind" "$b1" "$b2"
  for n in "${names[@]}"; do wrk -t1 -c"$CONNS" -d1s "https://localhost:${PORT[$n]}/" >/dev/null 2>&1 || true; done
  for r in $(seq 1 "$ROUNDS"); do
    for n in "${names[@]}"; do
      url="https://localhost:${PORT[$n]}/"
      read -r ka _ _ < <(run_wrk "$url" "${DURATION}s" "$CONNS")
      full=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" -H 'Connection: close' "$url" 2>&1 | awk '/^Requests\/sec:/ {print $2}')
      fresh=$(run_full "${PORT[$n]}")
      resumed=$(run_resumed "${PORT[$n]}")
      h2=$(run_h2load "$url")
      R[$kind,$n,ka]+=" $ka"; R[$kind,$n,full]+=" $full"; R[$kind,$n,fresh]+=" ${fresh:-0}"; R[$kind,$n,resumed]+=" ${resumed:-0}"; R[$kind,$n,h2]+=" ${h2:-0}"
      echo "round $r $kind $n: keep-alive $ka req/s, full $full conn/s, full handshakes ${fresh:-?}/s, resumed ${resumed:-?} conn/s, h2 ${h2:-?} req/s" >&2
    done
  done
done

echo
echo "HTTPS benchmark: $ROUNDS rounds × ${DURATION}s, one worker thread each, wrk -t1 -c$CONNS, h2load -c$CONNS -m10, 2 nginx backends; medians. $(nproc) cores, $(openssl version | cut -d' ' -f1-2), $(date -u +%F)."
echo
echo "| certificate | balancer | keep-alive req/s | new connections/s (wrk) | full handshakes/s | resumed handshakes/s | HTTP/2 req/s | keep-alive vs HAProxy | new connections vs HAProxy | full handshakes vs HAProxy | resumed vs HAProxy | HTTP/2 vs HAProxy |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for kind in ecdsa rsa; do
  for n in "${names[@]}"; do
    row="| $kind | $n"
    ratios=""
    for m in ka full fresh resumed h2; do
      v=$(median ${R[$kind,$n,$m]}); ha=$(median ${R[$kind,haproxy,$m]})
      row+=" | $(printf %.0f "$v")"
      ratios+=" | $(python3 -c "print(f'{$v/$ha:.2f}' if $ha else 'n/a')")"
    done
    echo "$row$ratios |"
  done
done
