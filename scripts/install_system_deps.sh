#!/usr/bin/env bash
# Install the system packages the test suite needs (called by `make test`).
#
# The browser tests (tests/test_book.py) drive Debian's Chromium through Playwright;
# `playwright install` is not used because it downloads browsers from a CDN.
# Idempotent: does nothing when /usr/bin/chromium is already there.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_system_deps.sh: $CHROMIUM is missing and installing it needs root." >&2
    echo "  Run as root:  apt-get update && apt-get install -y chromium" >&2
    echo "  (or: sudo bash scripts/install_system_deps.sh)" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_system_deps.sh: $CHROMIUM is missing and apt-get is not available;" >&2
    echo "  install Chromium with your system's package manager so that $CHROMIUM exists." >&2
    exit 1
fi

echo "Installing Chromium from Debian (apt-get) for the browser tests"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q chromium

if [ ! -x "$CHROMIUM" ]; then
    echo "install_system_deps.sh: apt-get finished but $CHROMIUM is still missing" >&2
    exit 1
fi
echo "Chromium installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
