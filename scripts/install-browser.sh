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
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo > /dev/null && sudo -n true 2> /dev/null; then
  sudo=(sudo -n)
else
  echo "error: chromium is not installed and this user cannot run apt-get;" \
    "install Debian's chromium package (apt-get install chromium) or set SP_CHROMIUM" >&2
  exit 1
fi
echo "==> installing Debian's chromium for the browser tests (apt-get)"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The package lists may be missing or stale on a fresh machine: refresh them only if the install fails.
if ! "${sudo[@]}" apt-get install -y --no-install-recommends chromium > "$log" 2>&1; then
  "${sudo[@]}" apt-get update -q >> "$log" 2>&1
  "${sudo[@]}" apt-get install -y --no-install-recommends chromium >> "$log" 2>&1 \
    || { tail -20 "$log" >&2; echo "error: apt-get install chromium failed" >&2; exit 1; }
fi
"$chromium" --version
