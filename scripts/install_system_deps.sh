#!/usr/bin/env bash
# Install the system packages the test suite needs (called by `make test`).
#
# - chromium: the browser tests (tests/test_book.py) drive Debian's Chromium through
#   Playwright; `playwright install` is not used because it downloads browsers from a CDN.
# - fonts-nanum: a Korean font, so the book's Korean terms are legible in the page
#   screenshots the tests save (without one they render as empty boxes).
# - bubblewrap: the grading sandbox (llmcourse/grading/sandbox.py); `llmcourse grade`
#   refuses to run student code without it, and tests/test_sandbox.py needs it.
# Idempotent: does nothing when all are already there.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

have_korean_font() {
    command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=ko 2>/dev/null | head -n 1)" ]
}

missing=()
[ -x "$CHROMIUM" ] || missing+=(chromium)
have_korean_font || missing+=(fonts-nanum)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_system_deps.sh: missing system packages: ${missing[*]}; installing them needs root." >&2
    echo "  Run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
    echo "  (or: sudo bash scripts/install_system_deps.sh)" >&2
    # The font only affects screenshots; the sandbox tests skip without bwrap (and grading
    # refuses); only a missing browser stops the tests.
    [ -x "$CHROMIUM" ] && exit 0
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_system_deps.sh: missing ${missing[*]} and apt-get is not available;" >&2
    echo "  install Chromium with your system's package manager so that $CHROMIUM exists" >&2
    echo "  (and bubblewrap, for the grading sandbox)." >&2
    [ -x "$CHROMIUM" ] && exit 0
    exit 1
fi

echo "Installing system packages for the tests (apt-get): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q "${missing[@]}"

if [ ! -x "$CHROMIUM" ]; then
    echo "install_system_deps.sh: apt-get finished but $CHROMIUM is still missing" >&2
    exit 1
fi
echo "Chromium: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
if ! command -v bwrap >/dev/null 2>&1; then
    echo "install_system_deps.sh: apt-get finished but bwrap (bubblewrap) is still missing" >&2
    exit 1
fi
echo "bubblewrap: $(bwrap --version)"
