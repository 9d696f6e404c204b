#!/usr/bin/env bash
# What webhooks cost on the commit path: the relay-ingest trace (one sender, one receiver, one
# document) through release relays with no webhook endpoint ("none"), with one endpoint
# subscribed to document.changed at the default 2 s debounce ("debounced": every commit
# extends one outbox row), and with debounce 0 ("debounce-0": a row is due at once, and the
# commits that land while it waits for its attempt still join it). Rounds alternate the variants; the relay runs on
# core 1, the load generator and the receiver on core 0.
#
#   cargo build --release --locked -p aetherflow-server -p aetherflow-benches
#   benches/webhook-ingest.sh [ROUNDS] [durable|relaxed]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
durability="${2:-durable}"
bin="${AETHERFLOW_BIN:-$PWD/target/release/aetherflow}"
ingest="$PWD/target/release/relay-ingest"
trace="${TRACE:-/work/shared/traces/automerge-paper.json.gz}"
[ -f "$trace" ] || trace=""
key="webhook-bench-admin-key-0123456789"
work="$(mktemp -d)"
receiver_pid=""
relay_pid=""
cleanup() {
  [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
  [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A receiver answering 204 to every POST, counting requests.
cat >"$work/receiver.py" <<'PY'
import http.server, sys
class Hook(http.server.BaseHTTPRequestHandler):
    count = 0
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        Hook.count += 1
        self.send_response(204); self.end_headers()
    def do_GET(self):
        body = str(Hook.count).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
taskset -c 0 python3 "$work/receiver.py" >"$work/receiver.port" &
receiver_pid=$!
for _ in $(seq 1 50); do [ -s "$work/receiver.port" ] && break; sleep 0.1; done
port="$(cat "$work/receiver.port")"

run() {
  local variant="$1" data="$work/data-$variant-$RANDOM"
  # A ready file of its own: the background start may truncate a shared one only after the
  # loop below has read the previous relay's address.
  local ready="$data.ready"
  taskset -c 1 "$bin" --http-addr 127.0.0.1:0 --quantum-addr off --data-dir "$data" \
    --durability "$durability" --message-rate-per-sec 0 --admin-key "$key" \
    --webhook-allow-private-addresses >"$ready" 2>"$work/relay.log" &
  relay_pid=$!
  for _ in $(seq 1 300); do grep -q "aetherflow ready" "$ready" 2>/dev/null && break; sleep 0.1; done
  local addr
  addr="$(sed -n 's/^aetherflow ready: http:\/\///p' "$ready")"
  [ -n "$addr" ] || { echo "relay did not start: $(cat "$work/relay.log")" >&2; exit 1; }
  local debounce=""
  case "$variant" in
    debounced) debounce=2000 ;;
    debounce-0) debounce=0 ;;
  esac
  if [ -n "$debounce" ]; then
    curl -sf --retry 5 --retry-connrefused -X POST "http://$addr/api/v1/webhooks" -H "x-admin-key: $key" \
      -H 'content-type: application/json' \
      -d "{\"url\":\"http://127.0.0.1:$port/hook\",\"events\":[\"document.changed\"],\"debounce_ms\":$debounce}" >/dev/null
  fi
  local before after seconds
  before="$(curl -sf "http://127.0.0.1:$port/")"
  seconds="$(taskset -c 0 "$ingest" $trace "$durability" --addr "$addr" | sed -n 's/^relay ([a-z]*), end to end : *\([0-9.]*\) s.*/\1/p')"
  sleep 3
  after="$(curl -sf "http://127.0.0.1:$port/")"
  kill "$relay_pid"; wait "$relay_pid" 2>/dev/null || true; relay_pid=""
  rm -rf "$data" "$ready"
  printf '%s\t%s\t%s\n' "$variant" "$seconds" "$((after - before))"
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'variant\trelay_s\twebhook_requests\n'
for round in $(seq 1 "$rounds"); do
  for variant in none debounced debounce-0; do
    run "$variant"
  done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
