#!/usr/bin/env bash
# Tools the tests use that are not Python packages: tmux (the live ladder runs in a real
# terminal, tests/test_client_cli.py). `make test` runs this first; quick when tmux is
# there. Installs it with apt-get when run as root; otherwise says why not. With CI=true
# a tmux that cannot be had fails (exit 1); elsewhere the ladder test then skips,
# printing the reason.
set -u
ci() { case "${CI:-}" in 1|true|TRUE|True|yes) return 0 ;; *) return 1 ;; esac; }
command -v tmux >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure_tools: installing tmux (the live ladder test runs in it)"
  apt-get install -y -q tmux >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q tmux >/dev/null 2>&1; }
fi
command -v tmux >/dev/null 2>&1 && exit 0
if ci; then
  echo "ensure_tools: tmux is not installed and could not be (CI=true: the ladder test needs it)" >&2
  exit 1
fi
echo "ensure_tools: tmux is not installed; the live ladder test will be skipped"
exit 0
