#!/usr/bin/env bash
# Make a self-signed certificate for local HTTPS: nginx/self-signed-cert.sh CERT KEY [extra DNS name...]
# P-256 key, valid 365 days, for localhost, 127.0.0.1 and ::1 (plus any names given). Not for production.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CERT.pem KEY.pem [dns-name...]" >&2
    exit 2
fi
cert=$1 key=$2
shift 2
san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do san="$san,DNS:$name"; done
mkdir -p "$(dirname "$cert")" "$(dirname "$key")"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
    -subj "/CN=pinchat local" -addext "subjectAltName=$san" \
    -keyout "$key" -out "$cert" 2>/dev/null
chmod 644 "$cert"
