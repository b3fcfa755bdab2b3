#!/usr/bin/env bash
# Install the pinned Socket.IO clients (tests/js/package-lock.json) into
# tests/js/node_modules for the Market Prophit tests (tests/test_prophit_node.py).
# Quick when they are there. With CI=true a missing npm fails (exit 1); elsewhere the
# Node tests then skip, printing the reason. Nothing is downloaded at test run time.
set -u
cd "$(dirname "$0")/js"
ci() { case "${CI:-}" in 1|true|TRUE|True|yes) return 0 ;; *) return 1 ;; esac; }
missing() {
  if ci; then
    echo "setup_js: $1 (CI=true: the Socket.IO client tests need it)" >&2
    exit 1
  fi
  echo "setup_js: $1; the Node.js Socket.IO client tests will be skipped"
  exit 0
}
stamp="node_modules/.installed-$(cksum < package-lock.json | cut -d' ' -f1)"
[ -f "$stamp" ] && exit 0
command -v node >/dev/null 2>&1 || missing "node is not installed"
command -v npm >/dev/null 2>&1 || missing "npm is not installed"
echo "setup_js: npm ci (socket.io-client 4 and 2, pinned)"
npm ci --no-audit --no-fund --silent || missing "npm ci failed"
rm -f node_modules/.installed-*
touch "$stamp"
