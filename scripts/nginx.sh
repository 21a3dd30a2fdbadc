#!/usr/bin/env bash
# `just nginx [server args...]`: the app behind nginx on this machine, as in production, without root.
#
#   - renders nginx/*.template into run/nginx/conf/ (git-ignored) with nginx/render.py;
#   - makes a self-signed certificate in run/nginx/tls/ if there is none;
#   - starts the app on 127.0.0.1 (the embedded model unless you pass e.g. `--models models.yaml`; any argument is
#     passed to `python -m server`) and nginx in front of it (HTTPS + HTTP/2 and plain HTTP);
#   - prints the URLs; Ctrl-C stops both (the app saves answers still streaming as interrupted).
#
# Settings (environment):
#   PINCHAT_NGINX_HTTPS_PORT  8443      HTTPS + HTTP/2 port
#   PINCHAT_NGINX_HTTP_PORT   8081      plain HTTP port (HTTP/1.1)
#   PINCHAT_NGINX_ADDR        127.0.0.1 address nginx listens on (0.0.0.0 for the local network)
#   PINCHAT_PORT              8080      the app's own port (the app's variable; nginx proxies /api/ to it)
#   PINCHAT_NGINX_PREFIX      run/nginx nginx's folder: conf/, logs/, tmp/, tls/, nginx.pid
#   PINCHAT_NGINX_SERVER_NAME localhost server_name
#   PINCHAT_NGINX_READ_TIMEOUT 120s     proxy_read_timeout: keep it well above the app's --heartbeat (15 s)
#   PINCHAT_NGINX_CERT / PINCHAT_NGINX_KEY  a certificate of your own instead of the self-signed one
#   PINCHAT_NGINX_BIN         nginx binary (default: `nginx` on PATH, else /usr/sbin/nginx)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

https_port=${PINCHAT_NGINX_HTTPS_PORT:-8443}
http_port=${PINCHAT_NGINX_HTTP_PORT:-8081}
addr=${PINCHAT_NGINX_ADDR:-127.0.0.1}
app_port=${PINCHAT_PORT:-8080}
prefix=${PINCHAT_NGINX_PREFIX:-$root/run/nginx}
server_name=${PINCHAT_NGINX_SERVER_NAME:-localhost}
read_timeout=${PINCHAT_NGINX_READ_TIMEOUT:-120s}
cert=${PINCHAT_NGINX_CERT:-}
key=${PINCHAT_NGINX_KEY:-}
python=${PINCHAT_PYTHON:-$root/.venv/bin/python}

die() { echo "nginx.sh: error: $*" >&2; exit 1; }

for arg in "$@"; do
    case $arg in
        --host|--host=*|--port|--port=*)
            die "the app's address is set here (127.0.0.1, port \$PINCHAT_PORT=$app_port); do not pass $arg" ;;
    esac
done

nginx_bin=${PINCHAT_NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}  # Debian: not on a user's PATH
[ -x "$nginx_bin" ] || die "nginx not found (Debian: apt-get install nginx; or set PINCHAT_NGINX_BIN)"
[ -x "$python" ] || die "$python not found: run \`just setup\` first"

mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)  # nginx wants absolute paths

if [ -z "$cert$key" ]; then
    cert=$prefix/tls/cert.pem key=$prefix/tls/key.pem
    if [ ! -s "$cert" ] || [ ! -s "$key" ]; then
        command -v openssl >/dev/null || die "openssl is needed to make a self-signed certificate"
        nginx/self-signed-cert.sh "$cert" "$key"
        echo "nginx.sh: made a self-signed certificate for localhost in $prefix/tls/"
    fi
elif [ ! -r "$cert" ] || [ ! -r "$key" ]; then
    die "PINCHAT_NGINX_CERT and PINCHAT_NGINX_KEY must both name readable files"
fi

"$python" nginx/render.py --out "$prefix/conf" >/dev/null \
    PREFIX="$prefix" CONF_DIR="$prefix/conf" WEB_ROOT="$root/web" APP_ADDR="127.0.0.1:$app_port" \
    HTTPS_LISTEN="$addr:$https_port" HTTP_LISTEN="$addr:$http_port" SERVER_NAME="$server_name" \
    TLS_CERT="$cert" TLS_KEY="$key" PROXY_READ_TIMEOUT="$read_timeout"
nginx_cmd=("$nginx_bin" -p "$prefix" -c "$prefix/conf/pinchat.conf" -e "$prefix/logs/error.log")
"${nginx_cmd[@]}" -t -q || die "nginx rejected the rendered config in $prefix/conf (see above)"

app_pid="" nginx_pid=""
stop() {
    trap - INT TERM EXIT
    # nginx first (no new requests), then the app, which saves every answer still streaming as interrupted.
    [ -z "$nginx_pid" ] || kill -TERM "$nginx_pid" 2>/dev/null || true
    [ -z "$nginx_pid" ] || wait "$nginx_pid" 2>/dev/null || true
    [ -z "$app_pid" ] || kill -TERM "$app_pid" 2>/dev/null || true
    [ -z "$app_pid" ] || wait "$app_pid" 2>/dev/null || true
    echo "nginx.sh: stopped nginx and the app"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# nginx passes the browser's Host: the server name must be one the app serves (DNS-rebinding check).
"$python" -m server --host 127.0.0.1 --port "$app_port" --allowed-hosts "$server_name" "$@" &
app_pid=$!

# Wait for the app to answer (the embedded model takes a few seconds to load) or to die.
"$python" - "$app_port" "$app_pid" <<'EOF' || die "the app did not start (see its output above)"
import os, sys, time, urllib.request
port, pid = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as resp:
            if resp.status == 200:
                sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
EOF

"${nginx_cmd[@]}" -g "daemon off;" &
nginx_pid=$!
sleep 0.3
kill -0 "$nginx_pid" 2>/dev/null || die "nginx did not start (see above and $prefix/logs/error.log)"

host=$addr
case $host in 127.0.0.1|0.0.0.0) host=localhost ;; esac
db_args=()  # the sign-in URL must be made in the database the app uses
for ((i = 1; i < $#; i++)); do
    if [ "${!i}" = --db ]; then j=$((i + 1)); db_args=(--db "${!j}"); fi
done
signin=$("$python" -m server users "${db_args[@]}" login-url --base-url "https://$host:$https_port/" 2>/dev/null || true)
cat <<EOF

pinchat behind nginx:
  sign in as the owner (one-time URL): ${signin:-just users login-url --base-url https://$host:$https_port/}
  https://$host:$https_port/   HTTPS + HTTP/2 (self-signed certificate: accept the browser's warning once)
  http://$host:$http_port/    plain HTTP/1.1 (a browser streams at most six threads at once over it)
  the app itself: http://127.0.0.1:$app_port/    nginx logs: $prefix/logs/
Ctrl-C stops both.
EOF

# Run until Ctrl-C or until either process ends (then the EXIT trap stops the other one).
set +e
wait -n "$app_pid" "$nginx_pid"
status=$?
echo "nginx.sh: $( kill -0 "$app_pid" 2>/dev/null && echo nginx || echo the app ) exited ($status)" >&2
exit "$status"
