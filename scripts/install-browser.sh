#!/usr/bin/env bash
# Debian's chromium for the browser tests (tests/integration/test_dashboard_browser.py), installed with
# apt when it is missing. Playwright drives it (executable_path); nothing downloads a browser build
# from anywhere else ('playwright install' is never run). SP_CHROMIUM names another binary to use.
set -euo pipefail
chromium="${SP_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$chromium" ]; then
  exit 0
fi
if [ -n "${SP_CHROMIUM:-}" ]; then
  echo "error: SP_CHROMIUM=$SP_CHROMIUM is not an executable" >&2
  exit 1
fi
bash "$(dirname "$0")/apt-ensure.sh" chromium chromium "the browser tests; or set SP_CHROMIUM"
"$chromium" --version
