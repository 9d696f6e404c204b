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
# shellcheck source=lib.sh
. "$here/lib.sh"
parse_runner_args "$@"

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

build_anchors
loadgen="$target_dir/release/loadgen"
# RELAY_BIN: another relay binary (e.g. an experimental build) in place of this checkout's.
relay="${RELAY_BIN:-$target_dir/release/aetherflow}"

mkdir -p "$out"
results="$out/results.jsonl"
log="$out/loadgen.log"
: > "$results"
: > "$log"

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

render_report "$out"
