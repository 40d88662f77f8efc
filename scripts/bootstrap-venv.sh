#!/usr/bin/env bash
# Creates .venv and installs the project with uv, caching everything under $SP_CACHE.
# Why uv: pyspark is a 434 MB source distribution; uv builds its wheel once, caches it and links it
# into a new venv in seconds, so a fresh clone on a machine that ran this before is ready at once.
set -euo pipefail
: "${SP_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/sensor-pipeline}"
UV_VERSION=0.13.9
PYTHON=${PYTHON:-python3}
export UV_CACHE_DIR="$SP_CACHE/uv"
tools="$SP_CACHE/tools"
if [ ! -x "$tools/bin/uv" ] || ! "$tools/bin/uv" --version | grep -q "$UV_VERSION"; then
  echo "==> installing uv $UV_VERSION into $tools"
  "$PYTHON" -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
uv="$tools/bin/uv"
[ -x .venv/bin/python ] || "$uv" venv --quiet --python "$PYTHON" .venv
echo "==> installing the project and its pinned dependencies into .venv (cache: $UV_CACHE_DIR)"
"$uv" pip install --python .venv/bin/python --link-mode=hardlink -e '.[local,dev,bench]' 2>&1 \
  | grep -vE '^ (\+|-) ' || true
.venv/bin/python -c 'import sensor_pipeline, pyspark, kafka, pymongo, bokeh, flask, moto' \
  || { echo "error: the venv is incomplete; remove .venv and run 'make venv' again" >&2; exit 1; }
# uv keeps every revision of a source build it made: pyspark's is 0.5-1.3 GB, and revisions piled up
# to tens of GB on a developer machine. Prune what nothing refers to (uv waits, here at most 5 minutes,
# for a uv process that is using the cache).
timeout 300 "$uv" cache prune --quiet 2>&1 \
  || echo "warning: uv cache prune failed or timed out (the cache is only larger)" >&2
