#!/usr/bin/env bash
# Builds FerretDB (a MongoDB-wire server over SQLite) from the Go module proxy into $1 (a binary path).
# Used when no real `mongod` is on PATH: no registry we can reach ships mongod.
# v1.24.2 is the last 1.x (Apache-2.0, SQLite backend with no external database needed).
set -euo pipefail
out=${1:?usage: build-ferretdb.sh <output-binary>}
version=v1.24.2
: "${SP_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/sensor-pipeline}"
export GOPATH="$SP_CACHE/go" GOMODCACHE="$SP_CACHE/go/mod" GOCACHE="$SP_CACHE/go/build" GOFLAGS=-modcacherw
echo "==> downloading FerretDB $version from the Go module proxy"
dir=$(go mod download -json "github.com/FerretDB/FerretDB@$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[ -d "$dir" ] || { echo "error: go mod download did not give a module folder" >&2; exit 1; }
src="$SP_CACHE/ferretdb-src-$version"
rm -rf "$src"; cp -r "$dir" "$src"; chmod -R u+w "$src"
# A binary built without this file panics at start (FerretDB issue 2982).
printf '%s' "$version" > "$src/build/version/version.txt"
# The project's patches (localstack/ferretdb/*.patch; each says why), in C-locale order, exactly
# (no fuzz). The binary's name carries their digest and this script's
# (sensor_pipeline.local.artifacts.ferretdb), so a changed patch builds anew.
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/../../scripts/apt-ensure.sh" patch patch "to apply the project's patches to FerretDB"
export LC_ALL=C  # the glob's order
for patch in "$here"/../ferretdb/*.patch; do
  [ -e "$patch" ] || continue
  echo "==> applying $(basename "$patch")"
  patch --quiet --forward --batch --fuzz=0 -p1 -d "$src" < "$patch"
done
echo "==> building FerretDB (about 90 s on 2 cores; cached afterwards)"
(cd "$src" && go build -trimpath -o "$out.tmp" ./cmd/ferretdb)
mv "$out.tmp" "$out"
rm -rf "$src"
echo "==> FerretDB $version built: $out"
