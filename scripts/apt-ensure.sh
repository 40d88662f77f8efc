#!/usr/bin/env bash
# apt-ensure.sh COMMAND PACKAGE WHY: install Debian's PACKAGE with apt-get when COMMAND is not on PATH.
# As root, or with password-less sudo; otherwise it says what to install by hand. The package lists may
# be missing or stale on a fresh machine: they are refreshed only when the first install fails.
set -euo pipefail
command=${1:?usage: apt-ensure.sh COMMAND PACKAGE WHY}
package=${2:?usage: apt-ensure.sh COMMAND PACKAGE WHY}
why=${3:-}
if command -v "$command" > /dev/null; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo > /dev/null && sudo -n true 2> /dev/null; then
  sudo=(sudo -n)
else
  echo "error: $command is not installed and this user cannot run apt-get;" \
    "install Debian's $package package (apt-get install $package)${why:+: $why}" >&2
  exit 1
fi
echo "==> installing Debian's $package${why:+ ($why)} with apt-get"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! "${sudo[@]}" apt-get install -y --no-install-recommends "$package" > "$log" 2>&1; then
  "${sudo[@]}" apt-get update -q >> "$log" 2>&1
  "${sudo[@]}" apt-get install -y --no-install-recommends "$package" >> "$log" 2>&1 \
    || { tail -20 "$log" >&2; echo "error: apt-get install $package failed" >&2; exit 1; }
fi
command -v "$command" > /dev/null || { echo "error: $package installed, but $command is still not on PATH" >&2; exit 1; }
