#!/usr/bin/env bash
# Vendor the pinned Pyodide runtime into web/vendor/pyodide/<version>/ (git-ignored), from the npm registry only.
#
# Only the five files the browser fetches are kept (see ../shared/notes/pyodide-frontend.md, section 2):
# pyodide.mjs, pyodide.asm.mjs, pyodide.asm.wasm, python_stdlib.zip, pyodide-lock.json.
# Idempotent: when the versioned folder is complete this exits at once, without touching the network.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=314.0.7
FILES=(pyodide.mjs pyodide.asm.mjs pyodide.asm.wasm python_stdlib.zip pyodide-lock.json)
DEST=web/vendor/pyodide/$VERSION
STAMP=$DEST/.complete

if [ -f "$STAMP" ]; then
    ok=1
    for f in "${FILES[@]}"; do [ -s "$DEST/$f" ] || ok=0; done
    [ "$ok" = 1 ] && exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "vendor_pyodide: ERROR: 'npm' was not found on PATH." >&2
    echo "vendor_pyodide: the browser frontend needs pyodide@$VERSION from the npm registry; install Node.js + npm" >&2
    echo "vendor_pyodide: (Debian: apt-get install nodejs npm) and run scripts/setup.sh again." >&2
    exit 1
fi

echo "vendor_pyodide: fetching pyodide@$VERSION from the npm registry"
mkdir -p web/vendor/pyodide
tmp=$(mktemp -d web/vendor/pyodide/.tmp.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# `npm pack` downloads the published tarball and checks its integrity hash; no install scripts run.
if ! (cd "$tmp" && npm pack --silent "pyodide@$VERSION" >pack.out 2>pack.err); then
    echo "vendor_pyodide: ERROR: 'npm pack pyodide@$VERSION' failed:" >&2
    cat "$tmp/pack.err" >&2
    exit 1
fi
tarball="$tmp/$(tail -n1 "$tmp/pack.out")"
[ -f "$tarball" ] || { echo "vendor_pyodide: ERROR: npm pack produced no tarball (got: $(cat "$tmp/pack.out"))" >&2; exit 1; }

mkdir "$tmp/out"
members=()
for f in "${FILES[@]}"; do members+=("package/$f"); done
tar -xzf "$tarball" -C "$tmp/out" --strip-components=1 "${members[@]}"
for f in "${FILES[@]}"; do
    [ -s "$tmp/out/$f" ] || { echo "vendor_pyodide: ERROR: $f missing from pyodide@$VERSION tarball" >&2; exit 1; }
done
touch "$tmp/out/.complete"

# Swap the finished folder into place so a half-written copy is never served.
rm -rf "$DEST"
mv "$tmp/out" "$DEST"
echo "vendor_pyodide: installed $(du -sh "$DEST" | cut -f1) into $DEST"
