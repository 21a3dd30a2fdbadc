#!/usr/bin/env bash
# Vendor the pure-Python wheels the browser's Markdown renderer needs (web/py/markdown_render.py) into
# web/vendor/wheels/ (git-ignored), from PyPI only, and write web/vendor/wheels/manifest.json listing them.
# boot.js fetches the manifest, then each wheel, and installs it with pyodide.unpackArchive(buf, "wheel").
# The same pins go into the project venv (pyproject's `test` extra) for the CPython tests.
# Idempotent: when every pinned wheel and the manifest are present this exits at once, without the network.
set -euo pipefail
cd "$(dirname "$0")/.."

PINS=(mdurl==0.1.2 markdown-it-py==4.3.0 mdit-py-plugins==0.7.0 Pygments==2.21.0 latex2mathml==3.81.1)
DEST=web/vendor/wheels
PIP=${PIP:-.venv/bin/pip}
[ -x "$PIP" ] || PIP="python3 -m pip"

# The wheel file name of a pin: distribution name normalised as in wheel names (PEP 427: - and . -> _).
wheel_glob() { local name=${1%%==*} ver=${1##*==}; name=$(echo "$name" | tr '.-' '__'); echo "${name}-${ver}-py3-none-any.whl"; }

manifest_ok=1
[ -s "$DEST/manifest.json" ] || manifest_ok=0
for p in "${PINS[@]}"; do
    f=$(wheel_glob "$p")
    # pip names files as PyPI does (case differs for Pygments): match case-insensitively.
    if ! ls "$DEST" 2>/dev/null | grep -qix "$f"; then manifest_ok=0; fi
    grep -qi "\"$f\"" "$DEST/manifest.json" 2>/dev/null || manifest_ok=0
done
[ "$manifest_ok" = 1 ] && exit 0

echo "vendor_wheels: fetching ${PINS[*]} from PyPI"
mkdir -p "$DEST"
tmp=$(mktemp -d "$DEST/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# Pure-Python wheels only (py3-none-any): they run unchanged under Pyodide. --no-deps: the pins are the closure.
if ! $PIP download -q --no-deps --only-binary=:all: --implementation py --abi none --platform any \
        --python-version 3.12 --dest "$tmp" "${PINS[@]}"; then
    echo "vendor_wheels: ERROR: 'pip download' failed (network or PyPI unreachable?)" >&2
    exit 1
fi
names=()
for p in "${PINS[@]}"; do
    f=$(ls "$tmp" | grep -ix "$(wheel_glob "$p")" || true)
    [ -n "$f" ] || { echo "vendor_wheels: ERROR: no pure-Python wheel for $p (got: $(ls "$tmp"))" >&2; exit 1; }
    names+=("$f")
done
# In PINS order: dependencies before dependants (unpacking does not care, but the list reads right).
{
    printf '{"wheels": ['
    sep=""
    for f in "${names[@]}"; do printf '%s"%s"' "$sep" "$f"; sep=", "; done
    printf ']}\n'
} >"$tmp/manifest.json"
# Replace old versions: remove wheels that are no longer pinned, then move the new files in, manifest last.
find "$DEST" -maxdepth 1 -name '*.whl' -delete
for f in "${names[@]}"; do mv "$tmp/$f" "$DEST/$f"; done
mv "$tmp/manifest.json" "$DEST/manifest.json"
echo "vendor_wheels: installed ${#names[@]} wheels into $DEST"
