#!/usr/bin/env bash
# Ensures promtool and prometheus (Debian's `prometheus` package) are on the PATH: the tests
# check cem's Prometheus config, alert rules and dashboard with promtool and scrape a running
# worker with a real Prometheus server. Installs the package when missing and allowed (root, or
# passwordless sudo); otherwise says what to do. Never starts the packaged service.
set -euo pipefail
if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "prometheus-tools: promtool/prometheus missing and no root to install them;" \
       "run: sudo apt-get install prometheus (the observability tests fail in CI without it)" >&2
  exit 0
fi
echo "prometheus-tools: installing Debian's prometheus package (promtool + server)"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d keeps the package's service from starting (the tests start their own server)
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
fi
$SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
command -v promtool >/dev/null || { echo "prometheus-tools: install failed" >&2; exit 1; }
