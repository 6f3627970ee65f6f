#!/usr/bin/env bash
# The browser pieces of the demo shop and its end-to-end test:
# - @segment/analytics-next (the real analytics.js) from the npm registry into .cache/web,
#   served by `cem collector --demo-site`;
# - Debian's chromium for the headless browser test (installed when missing and allowed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f .cache/web/node_modules/@segment/analytics-next/dist/umd/index.js ]; then
  command -v npm >/dev/null || { echo "web-tools: npm is required for analytics.js (Node.js)" >&2; exit 1; }
  mkdir -p .cache/web
  (cd .cache/web && [ -f package.json ] || echo '{"private": true}' > package.json)
  (cd .cache/web && npm install --no-audit --no-fund --silent @segment/analytics-next@1.84.3)
fi
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "web-tools: chromium missing and no root to install it; run: sudo apt-get install chromium" \
         "(the browser test fails in CI without it)" >&2
    exit 0
  fi
  echo "web-tools: installing Debian's chromium for the headless browser test"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null 2>&1 &&
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null; }
fi
