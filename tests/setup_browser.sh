#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium for the dashboard's browser test
# (tests/test_dashboard.py). Quick when it is already there. Installs it with apt-get
# when run as root; otherwise says why not. With CI=true a browser that cannot be had
# fails (exit 1); elsewhere the browser test then skips, printing the reason.
# Nothing is downloaded at test run time: Playwright drives this Chromium, and
# `playwright install` is never run.
set -u
CHROMIUM=/usr/bin/chromium
ci() { case "${CI:-}" in 1|true|TRUE|True|yes) return 0 ;; *) return 1 ;; esac; }
missing() {
  if ci; then
    echo "setup_browser: $1 (CI=true: the browser test needs $CHROMIUM)" >&2
    exit 1
  fi
  echo "setup_browser: $1; the browser test will be skipped"
  exit 0
}

[ -x "$CHROMIUM" ] && exit 0
command -v apt-get >/dev/null 2>&1 || missing "$CHROMIUM is missing and there is no apt-get"
[ "$(id -u)" = 0 ] || missing "$CHROMIUM is missing; install it as root: apt-get install chromium"
echo "setup_browser: installing Debian's chromium (apt-get)"
export DEBIAN_FRONTEND=noninteractive
# Wait for the dpkg lock rather than fail when another apt-get runs at the same time.
apt="apt-get -q -o DPkg::Lock::Timeout=300"
if ! { $apt update >/dev/null && $apt install -y chromium >/dev/null; }; then
  missing "apt-get install chromium failed"
fi
[ -x "$CHROMIUM" ] || missing "apt-get installed chromium but $CHROMIUM is not there"
echo "setup_browser: $("$CHROMIUM" --version 2>/dev/null || echo chromium) installed"
