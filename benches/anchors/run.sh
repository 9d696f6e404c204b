#!/usr/bin/env bash
# Side-by-side load comparison: AetherFlow (durable and relaxed) vs the y-websocket reference
# server (y-websocket@1 bin/server.js) vs Hocuspocus, every scenario of the load generator run
# against each server in turn on this machine, each against a freshly started server.
#
#   benches/anchors/run.sh [--quick] [--servers "aetherflow-durable y-websocket ..."] (also: floor,
#                          aetherflow-hocuspocus[-relaxed]) [--scenarios "ingest fanout idle mixed conns"]
#                          (also: idle-multi) [--out DIR]
#
# On Hocuspocus's own protocol (the relay's /hocuspocus endpoint against Hocuspocus 4):
#   benches/anchors/run.sh --servers "aetherflow-hocuspocus hocuspocus" \
#                          --scenarios "ingest fanout idle-multi"
#
# Writes DIR/results.jsonl (one line per run, from `loadgen --json`) and DIR/loadgen.log, then
# renders DIR/report.md and the charts (benches/charts/*.png, or $CHARTS) with report.py.
# Scale knobs (environment): FANOUT_READERS, FANOUT_RATE, DURATION, IDLE_CONNS, IDLE_DOCS,
# IDLE_DOCS_PER_CONN (idle-multi, default 10), SERVER_PIN / LOADGEN_PIN (command prefixes, e.g.
# "taskset -c 0" and "taskset -c 1", to keep server and load generator on separate cores),
# MIXED_DOCS, MIXED_WRITERS, MIXED_READERS, MIXED_RATE, CONNS, CONNS_DOCS, INGEST_UPDATES,
# TRACE (trace file; default: loadgen's, ../shared/traces/automerge-paper.json.gz next to the
# repository, so a git worktree elsewhere must set it; where it is absent loadgen replays a
# generated session of the same length instead, says so on stderr and records
# "trace": "generated-seed-N" in results.jsonl, so such figures are not comparable to the
# recorded ones).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="$here/out"
servers="aetherflow-durable aetherflow-relaxed y-websocket hocuspocus"
scenarios="ingest fanout idle mixed conns"
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --servers) servers="$2"; shift ;;
    --scenarios) scenarios="$2"; shift ;;
    --out) out="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

# --quick: a smoke run (about a minute per server), not for the record.
if [ "$quick" = 1 ]; then
  : "${FANOUT_READERS:=100}" "${DURATION:=3}" "${IDLE_CONNS:=500}" "${IDLE_DOCS:=50}"
  : "${MIXED_DOCS:=10}" "${CONNS:=1000}" "${CONNS_DOCS:=100}" "${INGEST_UPDATES:=20000}"
fi
: "${FANOUT_READERS:=1000}" "${FANOUT_RATE:=20}" "${DURATION:=10}"
: "${IDLE_CONNS:=5000}" "${IDLE_DOCS:=500}" "${IDLE_DOCS_PER_CONN:=10}"
: "${MIXED_DOCS:=100}" "${MIXED_WRITERS:=2}" "${MIXED_READERS:=10}" "${MIXED_RATE:=5}"
: "${CONNS:=15000}" "${CONNS_DOCS:=1500}" "${INGEST_UPDATES:=}"
: "${SERVER_PIN:=}" "${LOADGEN_PIN:=}"

# Every connection is a file descriptor in the load generator and in the server.
ulimit -n "$(ulimit -Hn)"
echo "open-file limit: $(ulimit -n)"

(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
(cd "$root" && cargo build --release -p aetherflow-server -p aetherflow-benches)
loadgen="$target_dir/release/loadgen"
# RELAY_BIN: another relay binary (e.g. an experimental build) in place of this checkout's.
relay="${RELAY_BIN:-$target_dir/release/aetherflow}"

mkdir -p "$out"
results="$out/results.jsonl"
log="$out/loadgen.log"
: > "$results"
: > "$log"

server_pid=""
server_url=""
server_dialect=""
work=""

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server did not open port $1" >&2
  return 1
}

start_server() {
  local name="$1" port
  port="$(free_port)"
  work="$(mktemp -d)"
  case "$name" in
    aetherflow-durable|aetherflow-relaxed)
      RUST_LOG=warn $SERVER_PIN "$relay" --http-addr "127.0.0.1:$port" --data-dir "$work/data" \
        --durability "${name#aetherflow-}" --quantum-addr off \
        --connect-rate-per-min 0 --message-rate-per-sec 0 > "$work/server.log" 2>&1 &
      server_url="ws://127.0.0.1:$port/ws/{doc}"; server_dialect="y-websocket" ;;
    # The same relay, spoken to over its Hocuspocus endpoint (durable, or relaxed with the
    # -relaxed suffix), to compare with Hocuspocus on Hocuspocus's own protocol.
    aetherflow-hocuspocus|aetherflow-hocuspocus-relaxed)
      durability=durable; [ "$name" = aetherflow-hocuspocus-relaxed ] && durability=relaxed
      RUST_LOG=warn $SERVER_PIN "$relay" --http-addr "127.0.0.1:$port" --data-dir "$work/data" \
        --durability "$durability" --quantum-addr off \
        --connect-rate-per-min 0 --message-rate-per-sec 0 > "$work/server.log" 2>&1 &
      server_url="ws://127.0.0.1:$port/hocuspocus"; server_dialect="hocuspocus" ;;
    y-websocket)
      HOST=127.0.0.1 PORT="$port" $SERVER_PIN node "$here/node_modules/y-websocket/bin/server.js" \
        > "$work/server.log" 2>&1 &
      server_url="ws://127.0.0.1:$port/{doc}"; server_dialect="y-websocket" ;;
    hocuspocus)
      HOST=127.0.0.1 PORT="$port" $SERVER_PIN node "$here/hocuspocus-server.js" > "$work/server.log" 2>&1 &
      server_url="ws://127.0.0.1:$port/"; server_dialect="hocuspocus" ;;
    # Not an alternative: a relay with no CRDT (benches/src/bin/broadcast-floor.rs), the
    # floor of the fan-out figures on this machine.
    floor)
      $SERVER_PIN "$target_dir/release/broadcast-floor" --addr "127.0.0.1:$port" > "$work/server.log" 2>&1 &
      server_url="ws://127.0.0.1:$port/{doc}"; server_dialect="y-websocket" ;;
    *) echo "unknown server $name" >&2; exit 2 ;;
  esac
  server_pid=$!
  wait_for_port "$port"
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}

run_loadgen() {
  local name="$1"; shift
  echo "== $name: $*" | tee -a "$log"
  # A failed run is recorded in the log and the report shows it as missing; the comparison
  # goes on with the next one.
  $LOADGEN_PIN "$loadgen" --url "$server_url" --dialect "$server_dialect" --server "$name" \
    --json "$results" --sources 8 "$@" >> "$log" 2>&1 || echo "   FAILED (see $log)" | tee -a "$log"
}

for scenario in $scenarios; do
  for name in $servers; do
    start_server "$name"
    case "$scenario" in
      ingest) run_loadgen "$name" ingest ${INGEST_UPDATES:+--updates "$INGEST_UPDATES"} \
                ${TRACE:+--trace "$TRACE"} ;;
      fanout) run_loadgen "$name" fanout --readers "$FANOUT_READERS" --rate "$FANOUT_RATE" \
                --duration "$DURATION" ;;
      idle)   run_loadgen "$name" idle --connections "$IDLE_CONNS" --docs "$IDLE_DOCS" \
                --server-pid "$server_pid" ;;
      # Idle connections holding IDLE_DOCS_PER_CONN documents each (Hocuspocus servers only).
      idle-multi) run_loadgen "$name" --label idle-multi idle --connections "$IDLE_CONNS" \
                --docs "$IDLE_DOCS" --docs-per-connection "$IDLE_DOCS_PER_CONN" \
                --server-pid "$server_pid" ;;
      mixed)  run_loadgen "$name" mixed --docs "$MIXED_DOCS" --writers "$MIXED_WRITERS" \
                --readers "$MIXED_READERS" --rate "$MIXED_RATE" --duration "$DURATION" ;;
      conns)  run_loadgen "$name" --label conns idle --connections "$CONNS" --docs "$CONNS_DOCS" \
                --server-pid "$server_pid" ;;
      *) echo "unknown scenario $scenario" >&2; exit 2 ;;
    esac
    stop_server
  done
done

# The report needs matplotlib: a private venv with the pinned requirements.
venv="${VENV:-$here/.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet -r "$here/requirements.txt"
"$venv/bin/python" "$here/report.py" "$results" --charts "${CHARTS:-$root/benches/charts}" \
  > "$out/report.md"
echo "report: $out/report.md"
