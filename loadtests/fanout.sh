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
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
# Each subscriber is two sockets on this machine (client and gateway side).
ulimit -n "$(( SUBSCRIBERS * 2 + 512 > 65536 ? SUBSCRIBERS * 2 + 512 : 65536 ))" 2>/dev/null || true

cargo build --release --locked -p wasmgate -p wasmgate-loadtests
./target/release/wasmgate build >/dev/null

work=$(mktemp -d)
gateway_pid=""
cleanup() {
  [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/wasmgate.toml" <<TOML
[gateway]
handlers_dir = "$PWD/handlers/wasm"
max_instances = $(( SUBSCRIBERS + 100 ))

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
WASMGATE_LOG=warn ./target/release/wasmgate serve --config "$work/wasmgate.toml" >"$work/stdout" 2>"$work/log" &
gateway_pid=$!
for _ in $(seq 1 300); do grep -q '^listening on' "$work/stdout" && break; sleep 0.1; done
addr="$(sed -n 's|^listening on http://\(.*\)|\1|p' "$work/stdout")"

echo "fan-out: $SUBSCRIBERS WebSocket subscribers, one publisher, gateway pid $gateway_pid"
./target/release/fanout --addr "$addr" --subscribers "$SUBSCRIBERS" --gateway-pid "$gateway_pid"
