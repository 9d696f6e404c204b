#!/usr/bin/env bash
# Python interop: the published pycrdt and pycrdt-websocket packages (pinned in
# tests/python/requirements.txt, installed into a venv under the cargo target dir) against the
# real relay, beside stock y-websocket clients in Node (tests/interop's node_modules, so the
# interop step's `npm ci` runs first). Needs the debug relay binary (AETHERFLOW_BIN overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-$PWD/target}"
venv="$target/python-venv"
requirements="tests/python/requirements.txt"
stamp="$venv/requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" >"$stamp"
fi

cargo build -p aetherflow-server --locked --quiet
export AETHERFLOW_BIN="${AETHERFLOW_BIN:-$target/debug/aetherflow}"
[ -d tests/interop/node_modules ] || (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
cd tests/python
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
