#!/usr/bin/env bash
# Cluster pub/sub benchmark: nats-server and three release gateways joined by
# [cluster]; SUBSCRIBERS WebSocket subscribers of one chat room spread over
# the three nodes, one publisher on the first (loadtests/src/bin/fanout.rs).
# Reports publish -> delivery p50/p99 for the publisher's node and for the
# other two (through NATS), and the sustained rate. Then deploy propagation:
# ROUNDS deploys (immediate, alternating two versions) through the first
# node's admin API, each timed from the request until all three nodes answer
# with the new version.
#
# Usage: loadtests/cluster.sh     (SUBSCRIBERS=1000, ROUNDS=20)
set -euo pipefail
cd "$(dirname "$0")/.."

SUBSCRIBERS=${SUBSCRIBERS:-1000}
ROUNDS=${ROUNDS:-20}
source loadtests/lib.sh
ulimit -n "$(( SUBSCRIBERS * 2 + 512 > 65536 ? SUBSCRIBERS * 2 + 512 : 65536 ))" 2>/dev/null || true
command -v nats-server >/dev/null || PATH="$PATH:/usr/sbin"

cargo build --release --locked -p wasmgate -p wasmgate-loadtests
./target/release/wasmgate build >/dev/null

nats_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start nats 'Server is ready' nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$work/jetstream"

per_node=$(( SUBSCRIBERS / 3 + 10 ))
addrs=()
for node in a b c; do
  cat >"$work/$node.toml" <<TOML
[gateway]
handlers_dir = "$PWD/handlers/wasm"
cache_dir = "$work/$node-cache"
max_instances = $(( per_node + 100 ))
http_reserve = 90

[[listener]]
addr = "127.0.0.1:0"

[admin]
addr = "127.0.0.1:0"

[deploy]
state_dir = "$work/$node-state"

[cluster]
nats = "nats://127.0.0.1:$nats_port"
node = "$node"

[handler.chat-ws]
path = "$PWD/handlers/wasm/chat.wasm"
world = "websocket"
topic_scope = "chat"
limits = { memory = "4MiB" }
stream = { max_connections = $per_node }

[[route]]
path = "/chat/ws"
handler = "chat-ws"

[handler.version]
path = "$PWD/handlers/wasm/version-v1.wasm"

[[route]]
path = "/version"
handler = "version"
TOML
  WASMGATE_LOG=warn,wasmgate::cluster=info start "$node" '^listening on' \
    ./target/release/wasmgate serve --config "$work/$node.toml"
  # Connected to NATS and up to date with the cluster's deployments.
  wait_log "$node" 'caught up with the shared deployment state' "${pids[-1]}"
  addrs+=(--addr "$(http_addr "$node")")
done

echo "cluster fan-out: $SUBSCRIBERS WebSocket subscribers over 3 nodes, one publisher on the first"
./target/release/fanout "${addrs[@]}" --subscribers "$SUBSCRIBERS"

admin_a=$(sed -n 's|^admin on http://\(.*\)|\1|p' "$work/a.log" | head -1)
echo
echo "deploy propagation: $ROUNDS immediate deploys on a, until a, b and c all answer the new version"
python3 - "$admin_a" "$ROUNDS" "$PWD/handlers/wasm" "$(http_addr a)" "$(http_addr b)" "$(http_addr c)" <<'PY'
import statistics, sys, time, urllib.request
admin, rounds, wasm, *nodes = sys.argv[1:]
def version(addr):
    with urllib.request.urlopen(f"http://{addr}/version", timeout=5) as reply:
        return reply.read().decode().strip()
took = []
for round in range(int(rounds)):
    name = ("v2", "v1")[round % 2]
    body = open(f"{wasm}/version-{name}.wasm", "rb").read()
    request = urllib.request.Request(
        f"http://{admin}/deploy/version?strategy=immediate", data=body, method="POST",
        headers={"content-type": "application/wasm"})
    started = time.monotonic()
    urllib.request.urlopen(request, timeout=30).read()
    local = time.monotonic() - started
    pending = list(nodes)
    while pending:
        pending = [addr for addr in pending if version(addr) != name]
        if time.monotonic() - started > 30:
            sys.exit(f"round {round}: {pending} still not on {name}")
    took.append((local, time.monotonic() - started))
def ms(values, q):
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000
first_local, first_every = took[0]
print(f"  first deploy (v2 compiled on each node): on a {first_local * 1000:.1f} ms, on a, b and c {first_every * 1000:.1f} ms")
local = [l for l, _ in took[1:]]
every = [t for _, t in took[1:]]
print(f"  later deploys (each version already compiled on every node), {len(every)} rounds:")
print(f"    on a (deploy answered):   p50 {ms(local, 50):6.1f} ms   p99 {ms(local, 99):6.1f} ms")
print(f"    on a, b and c (serving):  p50 {ms(every, 50):6.1f} ms   p99 {ms(every, 99):6.1f} ms   max {max(every) * 1000:.1f} ms")
PY
