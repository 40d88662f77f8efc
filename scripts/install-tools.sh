#!/usr/bin/env bash
# Installs the command-line tools the infra checks use, pinned, into the project cache ($SP_CACHE/bin).
# checkov has a large dependency tree of its own, so it lives in its own uv-managed environment
# instead of the project's venv.
set -euo pipefail
: "${SP_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/sensor-pipeline}"
CHECKOV_VERSION=3.3.30
export UV_CACHE_DIR="$SP_CACHE/uv" UV_TOOL_DIR="$SP_CACHE/uv-tools" UV_TOOL_BIN_DIR="$SP_CACHE/bin"
if ! "$SP_CACHE/bin/checkov" --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
  echo "==> installing checkov $CHECKOV_VERSION into $SP_CACHE/bin"
  "$SP_CACHE/tools/bin/uv" tool install --quiet --force "checkov==$CHECKOV_VERSION"
fi
