#!/usr/bin/env bash
# Pub/sub fan-out benchmark: a release gateway serves the chat example; N
# WebSocket subscribers join one room and a publisher times delivery
# (loadtests/src/bin/fanout.rs): publish -> received by all N (p50/p99), and
# the sustained message rate with a window of messages in flight.
#
# Usage: loadtests/fanout.sh     (SUBSCRIBERS=1000)
set -euo pipefail
cd "$(dirname "$0")/.."

SUBSCRIBERS=${SUBSCRIBERS:-1000}
source loadtests/lib.sh
# Each subscriber is two sockets on this machine (client and gateway side).
ulimit -n "$(( SUBSCRIBERS * 2 + 512 > 65536 ? SUBSCRIBERS * 2 + 512 : 65536 ))" 2>/dev/null || true

cargo build --release --locked -p wasmgate -p wasmgate-loadtests
./target/release/wasmgate build >/dev/null

cat >"$work/wasmgate.toml" <<TOML
[gateway]
handlers_dir = "$PWD/handlers/wasm"
max_instances = $(( SUBSCRIBERS + 100 ))
http_reserve = 90

[[listener]]
addr = "127.0.0.1:0"

[handler.chat-ws]
path = "$PWD/handlers/wasm/chat.wasm"
world = "websocket"
limits = { memory = "4MiB" }
stream = { max_connections = $(( SUBSCRIBERS + 10 )) }

[[route]]
path = "/chat/ws"
handler = "chat-ws"
TOML
WASMGATE_LOG=warn start wasmgate '^listening on' ./target/release/wasmgate serve --config "$work/wasmgate.toml"
gateway_pid=${pids[-1]}
addr="$(http_addr wasmgate)"

echo "fan-out: $SUBSCRIBERS WebSocket subscribers, one publisher, gateway pid $gateway_pid"
./target/release/fanout --addr "$addr" --subscribers "$SUBSCRIBERS" --gateway-pid "$gateway_pid"
