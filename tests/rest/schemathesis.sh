#!/usr/bin/env bash
# Fuzzes the REST routes with schemathesis: it reads /openapi.json from a live Confab, signs in
# as a fresh user, and checks every generated request for server errors and for responses that
# do not match the document (status codes, content types, bodies). Any finding fails the run.
#
#   CONFAB_BIN=target/debug/confab tests/rest/schemathesis.sh [max examples per operation]
set -euo pipefail

bin=${CONFAB_BIN:?set CONFAB_BIN to the confab binary}
examples=${1:-50}
log=$(mktemp)
"$bin" --addr 127.0.0.1:0 --database-url sqlite::memory: \
  --jwt-secret "schemathesis-secret-schemathesis-secret" --rate-limits off >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT

url=""
for _ in $(seq 1 200); do
  url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n 1 | sed 's/listening on //' || true)
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "confab exited before listening" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$log"; echo "confab did not start listening" >&2; exit 1; }

credentials='{"username": "fuzzer", "password": "correct horse battery"}'
curl -sf "$url/register" -H 'content-type: application/json' -d "$credentials" >/dev/null
token=$(curl -sf "$url/login" -H 'content-type: application/json' -d "$credentials" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')

# .ci/run sets SCHEMATHESIS to the installed script's path. /logout is left out: it would end the
# session whose token every other request carries (the API tests cover it).
"${SCHEMATHESIS:-schemathesis}" run "$url/openapi.json" --url "$url" \
  -H "Authorization: Bearer $token" \
  --exclude-path /logout \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --max-examples "$examples" \
  --request-timeout 30
