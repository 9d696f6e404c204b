#!/usr/bin/env bash
# Interleaved A/B of two relay builds next to the y-websocket reference server and Hocuspocus:
# ROUNDS rounds of { fanout (1,000 readers, 20 updates/s, 10 s) on A relaxed, B relaxed,
# Hocuspocus, y-websocket; ingest (automerge-paper) on A durable, B durable, y-websocket;
# idle (IDLE_CONNS connections over IDLE_DOCS documents, server RSS per connection) on A, B }.
# Interleaving puts each pair of figures in the same moment of a shared, noisy machine.
#
#   RELAY_A=path/to/aetherflow RELAY_B=path/to/other/aetherflow \
#   TRACE=../shared/traces/automerge-paper.json.gz benches/anchors/ab.sh > ab.jsonl
#
# Labels in the output: A_LABEL/B_LABEL (default as-built / candidate) plus the mode.
# Optional pinning: SERVER_PIN="taskset -c 0" LOADGEN_PIN="taskset -c 1" run every server and
# the load generator on separate cores.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
loadgen="${LOADGEN:-${CARGO_TARGET_DIR:-$here/../../target}/release/loadgen}"
: "${RELAY_A:?path to relay A}" "${RELAY_B:?path to relay B}" "${TRACE:?trace file}"
: "${A_LABEL:=as-built}" "${B_LABEL:=candidate}" "${ROUNDS:=3}" "${PORT:=18090}"
ulimit -n "$(ulimit -Hn)"
out="$(mktemp)"

start() { # label [binary mode]
  work="$(mktemp -d)"
  case "$1" in
    hocuspocus) PORT="$PORT" ${SERVER_PIN:-} node "$here/hocuspocus-server.js" > "$work/log" 2>&1 &
      url="ws://127.0.0.1:$PORT/"; dialect=hocuspocus ;;
    y-websocket) HOST=127.0.0.1 PORT="$PORT" ${SERVER_PIN:-} node "$here/node_modules/y-websocket/bin/server.js" \
        > "$work/log" 2>&1 &
      url="ws://127.0.0.1:$PORT/{doc}"; dialect=y-websocket ;;
    *) RUST_LOG=warn ${SERVER_PIN:-} "$2" --http-addr "127.0.0.1:$PORT" --data-dir "$work/data" \
        --durability "$3" --quantum-addr off \
        --connect-rate-per-min 0 --message-rate-per-sec 0 > "$work/log" 2>&1 &
      url="ws://127.0.0.1:$PORT/ws/{doc}"; dialect=y-websocket ;;
  esac
  pid=$!
  sleep 1.5
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null; rm -rf "$work"; }
run() { # label scenario args...
  local label="$1"; shift
  ${LOADGEN_PIN:-} "$loadgen" --url "$url" --dialect "$dialect" --server "$label" --json "$out" --sources 8 "$@" \
    > /dev/null 2>&1 || echo "failed: $label $*" >&2
}

for _ in $(seq 1 "$ROUNDS"); do
  for s in "$A_LABEL-relaxed $RELAY_A relaxed" "$B_LABEL-relaxed $RELAY_B relaxed" hocuspocus y-websocket; do
    set -- $s; start "$@"
    run "$1" fanout --readers 1000 --rate 20 --duration 10
    stop
  done
  for s in "$A_LABEL-durable $RELAY_A durable" "$B_LABEL-durable $RELAY_B durable" y-websocket; do
    set -- $s; start "$@"
    run "$1" ingest --trace "$TRACE"
    stop
  done
  for s in "$A_LABEL-durable $RELAY_A durable" "$B_LABEL-durable $RELAY_B durable"; do
    set -- $s; start "$@"
    run "$1" idle --connections "${IDLE_CONNS:-1000}" --docs "${IDLE_DOCS:-100}" --server-pid "$pid"
    stop
  done
done
cat "$out"
rm -f "$out"
