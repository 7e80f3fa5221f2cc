#!/usr/bin/env bash
# Installs the system packages the test suite needs. Idempotent; run as root.
# (Benchmarks install their own extra packages: see bench/*.sh.)
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need+=(iproute2)
have iptables || need+=(iptables)
have unshare || need+=(util-linux)
have tc || need+=(iproute2)
have curl || need+=(curl)
# The access log tests read the combined log with GoAccess.
have goaccess || need+=(goaccess)
have chromium || need+=(chromium)
have chromedriver || need+=(chromium-driver)
# The Python example app (examples/python-guestbook) runs under Debian's
# python3 and gunicorn (the `gunicorn` command comes with the package of
# that name, the module with python3-gunicorn).
have python3 || need+=(python3)
[ -x /usr/bin/gunicorn ] || need+=(gunicorn python3-gunicorn)
# The WebSocket tests use Python's `websockets` package as the client.
/usr/bin/python3 -c "import websockets" 2>/dev/null || need+=(python3-websockets)
# WebSockets over HTTP/2 (extended CONNECT) are driven by hand with `h2`.
/usr/bin/python3 -c "import h2" 2>/dev/null || need+=(python3-h2)
# Its MySQL/MariaDB backend (examples/python-guestbook/mysqldb.py).
/usr/bin/python3 -c 'import pymysql' 2>/dev/null || need+=(python3-pymysql)
# The VRRP interoperability tests run keepalived as the peer.
[ -x /usr/sbin/keepalived ] || need+=(keepalived)
# The host firewall tests (bulwark firewall) load rulesets with nft.
have nft || [ -x /usr/sbin/nft ] || need+=(nftables)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-test-deps: need root to install: ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "install-test-deps: ok"
