#!/usr/bin/env bash
# Tools the tests use that are not Python packages: tmux (the live ladder runs in a real
# terminal). `make test` runs this first: it installs what is missing where it can (root
# with apt-get), and otherwise says so; the tests that need a missing tool then fail in
# CI and skip elsewhere, with the reason.
set -u
command -v tmux >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "make test: installing tmux (the live ladder test runs in it)"
  apt-get install -y -q tmux >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q tmux >/dev/null 2>&1; } \
    || echo "make test: could not install tmux"
else
  echo "make test: tmux is not installed (the live ladder test needs it)"
fi
exit 0
