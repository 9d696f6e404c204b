#!/usr/bin/env bash
# Schema-driven fuzzing of the relay's HTTP API: schemathesis (pinned, installed from PyPI into
# a venv under the cargo target dir) generates requests from /api/v1/openapi.json and checks
# that no response is a 5xx and that every response matches the description (status code,
# content type, body schema). The relay runs on loopback with a temporary data dir, with auth
# on: requests carry a client token for every document and the admin key, so the admin routes
# (sessions, tokens) are fuzzed too, not just refused.
# The SSE stream and the live WebSocket are left out: they do not end, and are tested in
# server/tests/. Takes about a minute; MAX_EXAMPLES=n changes the depth.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
target="${CARGO_TARGET_DIR:-$PWD/target}"
venv="$target/schemathesis-venv"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build -p aetherflow-server --locked --quiet
data_dir="$(mktemp -d)"
ready="$data_dir/ready"
jwt_secret="schemathesis-jwt-secret-$RANDOM$RANDOM"
admin_key="schemathesis-admin-key-$RANDOM$RANDOM"
"$target/debug/aetherflow" --http-addr 127.0.0.1:0 --data-dir "$data_dir/data" \
  --quantum-addr off --jwt-secret "$jwt_secret" --admin-key "$admin_key" \
  >"$ready" 2>"$data_dir/relay.log" &
relay=$!
trap 'kill "$relay" 2>/dev/null || true; wait "$relay" 2>/dev/null || true; rm -rf "$data_dir"' EXIT

# The relay prints "aetherflow ready: http://ADDR" once it listens.
for _ in $(seq 1 200); do
  grep -q "aetherflow ready" "$ready" && break
  kill -0 "$relay" 2>/dev/null || { cat "$data_dir/relay.log"; exit 1; }
  sleep 0.1
done
base="$(sed -n 's/^aetherflow ready: //p' "$ready")"
[ -n "$base" ] || { echo "relay did not start"; cat "$data_dir/relay.log"; exit 1; }

# A write token for every document, minted by the relay itself.
token="$(python3 - "$base" "$admin_key" <<'PY'
import json, sys, urllib.request
base, key = sys.argv[1], sys.argv[2]
body = json.dumps({"sub": "schemathesis", "docs": ["*"], "perm": "write", "ttl_secs": 3600}).encode()
request = urllib.request.Request(f"{base}/api/v1/tokens", data=body, method="POST",
                                 headers={"content-type": "application/json", "x-admin-key": key})
print(json.load(urllib.request.urlopen(request))["token"])
PY
)"

status=0
"$venv/bin/schemathesis" run "$base/api/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --header "X-Admin-Key: $admin_key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --exclude-path-regex '/(events|live)$' \
  --max-examples "${MAX_EXAMPLES:-100}" \
  --workers 2 \
  --no-color || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- relay log (5xx details are logged under the error id) ---"
  grep -a -i "error" "$data_dir/relay.log" | tail -20 || true
fi
exit "$status"
