# Tasks for pinchat. Get `just` with `pip install rust-just` (see README).
set shell := ["bash", "-euo", "pipefail", "-c"]

py := ".venv/bin/python"

# Install what is missing: the virtualenv, Python deps (llama-cpp-python builds once), the embedded model, Pyodide.
setup:
    scripts/setup.sh

# Start the app (embedded model unless --models is given) and print its URL.
run *ARGS: setup
    {{py}} -m server {{ARGS}}

# Manage accounts from a shell: `just users add NAME [--admin]`, `list`, `login-url`, ... (`just users --help`).
users *ARGS: setup
    {{py}} -m server users {{ARGS}}

# Run every test: server, frontend modules, browser, nginx.
test *ARGS: setup
    {{py}} -m pytest {{ARGS}}

# Run nginx (unprivileged, state under run/nginx) in front of the app: HTTP on 8081, HTTPS + HTTP/2 on 8443.
nginx *ARGS: setup
    scripts/nginx.sh {{ARGS}}

# Measure every hop (see bench/README.md); prints a table and writes bench/results/*.json.
bench *ARGS: setup
    .venv/bin/pip install -q -e '.[bench]'
    {{py}} -m bench {{ARGS}}
