#!/usr/bin/env bash
# Cluster mode against the anchor users would otherwise pick for several instances (issue 17):
# every scenario runs with the writer on instance A and the readers on instance B, against
#
#   aetherflow-cluster  three nats-server processes (JetStream, clustered, the configs of
#                       deploy/nats/ with sync_interval: always, rewritten for loopback) and two
#                       AetherFlow relays with --cluster (streams of 3 replicas);
#   hocuspocus-redis    Debian's redis-server and two Hocuspocus 4 instances joined by
#                       @hocuspocus/extension-redis (hocuspocus-server.js with REDIS_PORT; no
#                       persistence, like the single-node Hocuspocus anchor);
#   aetherflow-durable  the single-node durable relay (readers and writer on the one relay), for
#                       the "cluster ≥ 0.3 × single-node" ratio.
#
#   benches/anchors/cluster.sh [--quick] [--servers "aetherflow-cluster hocuspocus-redis
#                              aetherflow-durable"] [--scenarios "ingest fanout failover"]
#                              [--out DIR]
#
# Scenarios: ingest (the automerge-paper trace, one update per frame, writer on A, receiver on
# B), fanout (one writer on A at FANOUT_RATE updates/s, FANOUT_READERS readers on B) and
# failover (FAILOVER_CONNS connections over FAILOVER_DOCS documents, half on each instance, an
# update through A on every document, then A killed with SIGKILL: time until every displaced
# client has synced on B, and updates lost; skipped for the single node).
# Writes DIR/results.jsonl and DIR/loadgen.log and renders DIR/report.md and DIR/charts/ with
# report.py, every ratio taken of aetherflow-cluster. Knobs (environment): FANOUT_READERS,
# FANOUT_RATE, DURATION, INGEST_UPDATES, FAILOVER_CONNS, FAILOVER_DOCS, TRACE, SERVER_PIN / LOADGEN_PIN (as run.sh),
# NATS_SERVER (default: the binary tests/nats-server.sh pins and installs), REDIS_SERVER
# (default: redis-server on the PATH; `apt-get install redis-server` on Debian).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="$here/out-cluster"
servers="aetherflow-cluster hocuspocus-redis aetherflow-durable"
scenarios="ingest fanout failover"
quick=0
# shellcheck source=lib.sh
. "$here/lib.sh"
parse_runner_args "$@"

# --quick: a smoke run, not for the record.
if [ "$quick" = 1 ]; then
  : "${FANOUT_READERS:=100}" "${DURATION:=3}" "${INGEST_UPDATES:=20000}"
  : "${FAILOVER_CONNS:=500}" "${FAILOVER_DOCS:=50}"
fi
: "${FANOUT_READERS:=1000}" "${FANOUT_RATE:=20}" "${DURATION:=10}" "${INGEST_UPDATES:=}"
: "${FAILOVER_CONNS:=5000}" "${FAILOVER_DOCS:=500}"
: "${SERVER_PIN:=}" "${LOADGEN_PIN:=}"

ulimit -n "$(ulimit -Hn)"
echo "open-file limit: $(ulimit -n)"

build_anchors
loadgen="$target_dir/release/loadgen"
relay="${RELAY_BIN:-$target_dir/release/aetherflow}"
nats_server="${NATS_SERVER:-$("$root/tests/nats-server.sh")}"
redis_server="${REDIS_SERVER:-$(command -v redis-server || true)}"
if [ -z "$redis_server" ]; then
  echo "no redis-server: apt-get install redis-server (or set REDIS_SERVER)" >&2
  exit 2
fi

mkdir -p "$out"
results="$out/results.jsonl"
log="$out/loadgen.log"
: > "$results"
: > "$log"

# Every process of the system under test, stopped in reverse order by stop_system.
system_pids=()

# Two AetherFlow relays on the NATS cluster (durable, streams of 3 replicas).
start_aetherflow_cluster() {
  start_nats_cluster
  local a b
  a="$(free_port)"; b="$(free_port)"
  start_relay "$a" "$work/relay-a" --cluster "$nats_urls" --cluster-prefix BENCH --cluster-replicas 3
  system_pids+=($!)
  start_relay "$b" "$work/relay-b" --cluster "$nats_urls" --cluster-prefix BENCH --cluster-replicas 3
  system_pids+=($!)
  wait_for_http "http://127.0.0.1:$a/healthz"
  wait_for_http "http://127.0.0.1:$b/healthz"
  server_url="ws://127.0.0.1:$a/ws/{doc}"; reader_url="ws://127.0.0.1:$b/ws/{doc}"
  server_dialect="y-websocket"; server_pid="${system_pids[3]}"
}

# Redis (pub/sub and the extension's locks only: no snapshots, no append-only file) and two
# Hocuspocus instances joined through it.
start_hocuspocus_redis() {
  local redis_port a b
  redis_port="$(free_port)"
  $SERVER_PIN "$redis_server" --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --dir "$work" > "$work/redis.log" 2>&1 &
  system_pids+=($!)
  wait_for_port "$redis_port"
  a="$(free_port)"; b="$(free_port)"
  for port in "$a" "$b"; do
    HOST=127.0.0.1 PORT="$port" REDIS_PORT="$redis_port" $SERVER_PIN node "$here/hocuspocus-server.js" \
      > "$work/hocuspocus-$port.log" 2>&1 &
    system_pids+=($!)
  done
  wait_for_port "$a"; wait_for_port "$b"
  server_url="ws://127.0.0.1:$a/"; reader_url="ws://127.0.0.1:$b/"
  server_dialect="hocuspocus"; server_pid="${system_pids[1]}"
}

# Starts system $1: a cluster of two instances, or a single server from lib.sh.
start_system() {
  system_pids=()
  case "$1" in
    aetherflow-cluster) work="$(mktemp -d)"; start_aetherflow_cluster ;;
    hocuspocus-redis) work="$(mktemp -d)"; start_hocuspocus_redis ;;
    *) start_server "$1"; system_pids=("$server_pid") ;;
  esac
}

# Stops every process of the system, the instances before what they depend on.
stop_system() {
  local i
  for ((i = ${#system_pids[@]} - 1; i >= 0; i--)); do
    kill "${system_pids[i]}" 2>/dev/null || true
    wait "${system_pids[i]}" 2>/dev/null || true
  done
  system_pids=()
  [ -n "$work" ] && rm -rf "$work"
}
trap stop_system EXIT

for scenario in $scenarios; do
  for name in $servers; do
    start_system "$name"
    case "$scenario" in
      ingest) run_loadgen "$name" ingest ${INGEST_UPDATES:+--updates "$INGEST_UPDATES"} \
                ${TRACE:+--trace "$TRACE"} ;;
      fanout) run_loadgen "$name" fanout --readers "$FANOUT_READERS" --rate "$FANOUT_RATE" \
                --duration "$DURATION" ;;
      # Kills instance A (server_pid) in the middle of the run; a single node has no B.
      failover)
        if [ -n "$reader_url" ]; then
          run_loadgen "$name" failover --connections "$FAILOVER_CONNS" --docs "$FAILOVER_DOCS" \
            --victim-pid "$server_pid"
        else
          echo "== $name: failover skipped (a single instance)" | tee -a "$log"
        fi ;;
      *) echo "unknown scenario $scenario" >&2; exit 2 ;;
    esac
    stop_system
  done
done

CHARTS="${CHARTS:-$out/charts}" render_report "$out" --base aetherflow-cluster \
  --alternatives hocuspocus-redis aetherflow-durable
