#!/usr/bin/env bash
# Cluster pub/sub benchmark: nats-server and three release gateways joined by
# [cluster]; SUBSCRIBERS WebSocket subscribers of one chat room spread over
# the three nodes, one publisher on the first (loadtests/src/bin/fanout.rs).
# Reports publish -> delivery p50/p99 for the publisher's node and for the
# other two (through NATS), and the sustained rate.
#
# Usage: loadtests/cluster.sh     (SUBSCRIBERS=1000)
set -euo pipefail
cd "$(dirname "$0")/.."

SUBSCRIBERS=${SUBSCRIBERS:-1000}
source loadtests/lib.sh
ulimit -n "$(( SUBSCRIBERS * 2 + 512 > 65536 ? SUBSCRIBERS * 2 + 512 : 65536 ))" 2>/dev/null || true
command -v nats-server >/dev/null || PATH="$PATH:/usr/sbin"

cargo build --release --locked -p wasmgate -p wasmgate-loadtests
./target/release/wasmgate build >/dev/null

nats_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start nats 'Server is ready' nats-server -a 127.0.0.1 -p "$nats_port"

per_node=$(( SUBSCRIBERS / 3 + 10 ))
addrs=()
for node in a b c; do
  cat >"$work/$node.toml" <<TOML
[gateway]
handlers_dir = "$PWD/handlers/wasm"
max_instances = $(( per_node + 100 ))
http_reserve = 90

[[listener]]
addr = "127.0.0.1:0"

[admin]
enabled = false

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
TOML
  WASMGATE_LOG=warn,wasmgate::cluster=info start "$node" '^listening on' \
    ./target/release/wasmgate serve --config "$work/$node.toml"
  for _ in $(seq 1 100); do
    grep -q 'cluster: connected to NATS' "$work/$node.log" && break
    sleep 0.1
  done
  grep -q 'cluster: connected to NATS' "$work/$node.log" || { cat "$work/$node.log"; exit 1; }
  addrs+=(--addr "$(http_addr "$node")")
done

echo "cluster fan-out: $SUBSCRIBERS WebSocket subscribers over 3 nodes, one publisher on the first"
./target/release/fanout "${addrs[@]}" --subscribers "$SUBSCRIBERS"
