#!/usr/bin/env bash
# Interleaved ingest-only runs of three relay builds (durable, automerge-paper trace), relay on
# core 0, loadgen on core 1, four rounds; used to find which merge cost ingest (issue 16).
# The binaries are release builds copied to /tmp under the names below; edit to taste.
set -u
loadgen=/work/main/target/release/loadgen
trace=/work/shared/traces/automerge-paper.json.gz
out=/tmp/ingest-bisect.jsonl; : > "$out"
for round in 1 2 3 4; do
  for pair in "prev-main /tmp/aetherflow-base" "hocuspocus-merge /tmp/aetherflow-hocus" "main /tmp/aetherflow-main"; do
    set -- $pair
    work=$(mktemp -d)
    RUST_LOG=warn taskset -c 0 "$2" --http-addr 127.0.0.1:18191 --data-dir "$work/data" --durability durable \
      --quantum-addr off --connect-rate-per-min 0 --message-rate-per-sec 0 > "$work/log" 2>&1 &
    pid=$!; sleep 1.5
    taskset -c 1 "$loadgen" --url "ws://127.0.0.1:18191/ws/{doc}" --dialect y-websocket --server "$1" \
      --json "$out" --sources 8 ingest --trace "$trace" > /dev/null 2>&1
    kill $pid; wait $pid 2>/dev/null; rm -rf "$work"
  done
done
