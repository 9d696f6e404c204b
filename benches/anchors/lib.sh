# Helpers shared by the anchor runners (run.sh: one server at a time; cluster.sh: several
# relays or instances per system). Sourced, not run. The caller sets:
#   here, root, target_dir   where the anchors, the repository and the cargo target are
#   relay, loadgen           the relay and load generator binaries
#   results, log             results.jsonl and loadgen.log of this run
#   SERVER_PIN, LOADGEN_PIN  command prefixes (e.g. "taskset -c 0"), may be empty
# A started server leaves server_pid, server_url, server_dialect and work (its temporary
# directory) behind; reader_url (empty unless a cluster runner sets it) is where loadgen's
# readers connect.

server_pid=""
server_url=""
server_dialect=""
reader_url=""
work=""

# Reads a runner's arguments (--quick, --servers LIST, --scenarios LIST, --out DIR) into
# quick, servers, scenarios and out, whose defaults the runner set before.
parse_runner_args() {
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
}

# Installs the anchors from npm and builds the relay and the load generator (release).
build_anchors() {
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  (cd "$root" && cargo build --release --locked -p aetherflow-server -p aetherflow-benches)
}

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits up to 10 s until something listens on loopback port $1.
wait_for_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server did not open port $1" >&2
  return 1
}

# Starts an AetherFlow relay in the background on loopback port $1 with data under $2; further
# arguments go to the relay. Rate limits and Quantum are off, as for every anchor.
start_relay() {
  local port="$1" data="$2"; shift 2
  RUST_LOG=warn $SERVER_PIN "$relay" --http-addr "127.0.0.1:$port" --data-dir "$data" \
    --quantum-addr off --connect-rate-per-min 0 --message-rate-per-sec 0 "$@" \
    > "$data.log" 2>&1 &
}

# Starts the single server $1 (see run.sh's header for the names) on a fresh port.
start_server() {
  local name="$1" port
  port="$(free_port)"
  work="$(mktemp -d)"
  case "$name" in
    aetherflow-durable|aetherflow-relaxed)
      start_relay "$port" "$work/data" --durability "${name#aetherflow-}"
      server_url="ws://127.0.0.1:$port/ws/{doc}"; server_dialect="y-websocket" ;;
    # The same relay, spoken to over its Hocuspocus endpoint (durable, or relaxed with the
    # -relaxed suffix), to compare with Hocuspocus on Hocuspocus's own protocol.
    aetherflow-hocuspocus|aetherflow-hocuspocus-relaxed)
      durability=durable; [ "$name" = aetherflow-hocuspocus-relaxed ] && durability=relaxed
      start_relay "$port" "$work/data" --durability "$durability"
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
  reader_url=""
  wait_for_port "$port"
}

# Stops the server start_server started and removes its directory.
stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}

# Runs loadgen against the started server, labelled $1, with the remaining arguments.
run_loadgen() {
  local name="$1"; shift
  echo "== $name: $*" | tee -a "$log"
  # A failed run is recorded in the log and the report shows it as missing; the comparison
  # goes on with the next one.
  $LOADGEN_PIN "$loadgen" --url "$server_url" ${reader_url:+--reader-url "$reader_url"} \
    --dialect "$server_dialect" --server "$name" \
    --json "$results" --sources 8 "$@" >> "$log" 2>&1 || echo "   FAILED (see $log)" | tee -a "$log"
}

# Renders $1/report.md and the charts from results.jsonl (matplotlib in a private venv);
# further arguments go to report.py (e.g. --base and --alternatives).
render_report() {
  local out="$1"; shift
  local venv="${VENV:-$here/.venv}"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r "$here/requirements.txt"
  "$venv/bin/python" "$here/report.py" "$results" --charts "${CHARTS:-$root/benches/charts}" \
    "$@" > "$out/report.md"
  echo "report: $out/report.md"
}

# Waits up to 30 s until GET $1 answers 2xx.
wait_for_http() {
  for _ in $(seq 1 300); do
    if curl -sf -o /dev/null "$1"; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not answer in 30 s" >&2
  return 1
}

# Three nats-server processes on loopback, each from its deploy/nats/nN.conf with the
# addresses and the store directory rewritten (sync_interval: always kept) into $work; sets
# nats_urls and adds the servers to system_pids. Needs nats_server (the binary).
start_nats_cluster() {
  local i client=() route=() monitor=() conf
  for i in 0 1 2; do
    client+=("$(free_port)"); route+=("$(free_port)"); monitor+=("$(free_port)")
  done
  nats_urls=""
  for i in 0 1 2; do
    conf="$work/n$((i + 1)).conf"
    sed -e "s|listen: 0.0.0.0:4222|listen: 127.0.0.1:${client[i]}|" \
        -e "s|store_dir: /var/lib/nats|store_dir: $work/n$((i + 1))|" \
        -e "s|listen: 0.0.0.0:6222|listen: 127.0.0.1:${route[i]}|" \
        -e "s|nats-route://nats-1.internal:6222|nats-route://127.0.0.1:${route[0]}|" \
        -e "s|nats-route://nats-2.internal:6222|nats-route://127.0.0.1:${route[1]}|" \
        -e "s|nats-route://nats-3.internal:6222|nats-route://127.0.0.1:${route[2]}|" \
        "$root/deploy/nats/n$((i + 1)).conf" > "$conf"
    # The rewrite must have hit both listeners and all three routes, and kept the fsync.
    if [ "$(grep -c '127\.0\.0\.1' "$conf")" != 5 ] || ! grep -q 'sync_interval: always' "$conf"; then
      echo "deploy/nats/n$((i + 1)).conf no longer has the expected shape" >&2
      exit 2
    fi
    $SERVER_PIN "$nats_server" -c "$conf" -m "${monitor[i]}" > "$work/n$((i + 1)).log" 2>&1 &
    system_pids+=($!)
    nats_urls+="${nats_urls:+,}nats://127.0.0.1:${client[i]}"
  done
  # /healthz answers 200 once the server's JetStream is current with a meta leader.
  for i in 0 1 2; do wait_for_http "http://127.0.0.1:${monitor[i]}/healthz"; done
}

