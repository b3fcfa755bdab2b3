#!/usr/bin/env bash
# Install the peer servers' dependencies: npm into bench/peers/node/node_modules, pip into
# bench/peers/.venv. Idempotent: does nothing when the pinned set is already installed.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"

stamp_py=".venv/.installed-$(cksum < requirements.txt | cut -d' ' -f1)"
if [ ! -f "$stamp_py" ]; then
  echo "peers: installing Python peers into bench/peers/.venv" >&2
  test -x .venv/bin/python || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  rm -f .venv/.installed-*
  touch "$stamp_py"
fi

stamp_js="node/node_modules/.installed-$(cksum < node/package.json | cut -d' ' -f1)"
if [ ! -f "$stamp_js" ]; then
  if command -v npm >/dev/null; then
    echo "peers: installing Node.js peers into bench/peers/node/node_modules" >&2
    (cd node && npm install --no-audit --no-fund --silent)
    rm -f node/node_modules/.installed-*
    touch "$stamp_js"
  else
    echo "peers: npm not found; the Node.js peers will be skipped" >&2
  fi
fi
