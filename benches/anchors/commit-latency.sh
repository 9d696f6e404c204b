#!/usr/bin/env bash
# The cost of durability (issue 17): append-to-durable latency per batch size in the embedded
# engine (redb, fsync'd group commit) next to cluster mode's (JetStream on three nats-server
# processes from deploy/nats/, sync_interval: always, streams of 3 replicas), in one run of
# benches/src/bin/commit-latency.rs.
#
#   benches/anchors/commit-latency.sh [--out DIR]
#
# Knobs (environment): BATCHES (default 1,8,64,512), ROUNDS (default 200), SERVER_PIN (prefix
# of the nats-servers, e.g. "taskset -c 0"), LOADGEN_PIN (prefix of the benchmark, which holds
# the redb writer too, e.g. "taskset -c 1"), NATS_SERVER (default: the binary
# tests/nats-server.sh pins and installs). Writes DIR/results.jsonl.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="$here/out-commit-latency"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
: "${BATCHES:=1,8,64,512}" "${ROUNDS:=200}" "${SERVER_PIN:=}" "${LOADGEN_PIN:=}"

# shellcheck source=lib.sh
. "$here/lib.sh"
(cd "$root" && cargo build --release --locked -p aetherflow-benches --bin commit-latency)
nats_server="${NATS_SERVER:-$("$root/tests/nats-server.sh")}"

mkdir -p "$out"
: > "$out/results.jsonl"
system_pids=()
work="$(mktemp -d)"
cleanup() {
  for pid in "${system_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start_nats_cluster
$LOADGEN_PIN "$target_dir/release/commit-latency" --cluster "$nats_urls" --batches "$BATCHES" \
  --rounds "$ROUNDS" --json "$out/results.jsonl"
