#!/usr/bin/env bash
# Runs every benchmark in sequence and prints their tables:
# load balancer, idle connections, web, database. Results go to stdout;
# copy the tables into docs/BENCHMARKS.md with the date and machine load.
# (Failover times come from the chaos suite: cargo test -p bulwark-chaos.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
echo "# Bulwark benchmarks — $(date -u '+%F %T') UTC, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for b in lb idle web db; do
  echo
  echo "## $b"
  bash "$here/$b.sh" 2>/dev/null | sed -n '/^[A-Z|]/,$p'
done
