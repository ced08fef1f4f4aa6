#!/usr/bin/env bash
# /hello under attack: oha load on /hello while, in turn, 10,000 silent
# connections, 1,000 slow uploads, 1,000 WebSockets and an HTTP/2 rapid-reset
# client run against the same listener (loadtests/src/bin/abuse.rs). Reports
# /hello's success rate and p99 in each phase, with the unloaded figure first,
# and the gateway's RSS and open file descriptors after each.
#
# Usage: loadtests/abuse.sh          (DURATION=10 seconds a phase, CONCURRENCY=50)
# Installs oha with cargo if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-50}

command -v oha >/dev/null || cargo install oha --locked
cargo build --release --locked -p wasmgate -p wasmgate-loadtests
./target/release/wasmgate build >/dev/null

source loadtests/lib.sh
# Ten thousand connections on each side of loopback: as many files as allowed.
ulimit -n "$(ulimit -Hn)"

cat >"$work/wasmgate.toml" <<TOML
[gateway]
handlers_dir = "$PWD/handlers/wasm"
max_instances = 1000

[[listener]]
addr = "127.0.0.1:0"
header_timeout = "3s"
body_timeout = "10s"

[handler.hello]
pool = { prewarm = 64 }

# Uploads may hold at most 200 instances (each slow upload holds one while
# it trickles); the rest of the pool stays with /hello.
[handler.echo]
limits = { concurrency = 200 }

[handler.ws-echo]
world = "websocket"

[[route]]
path = "/hello"
handler = "hello"

[[route]]
path = "/echo/*"
handler = "echo"

[[route]]
path = "/ws/*"
handler = "ws-echo"

[admin]
addr = "127.0.0.1:0"
TOML
WASMGATE_LOG=warn,wasmgate::access=off start wasmgate '^listening on' \
  ./target/release/wasmgate serve --config "$work/wasmgate.toml"
gateway_pid=${pids[-1]}
addr="$(http_addr wasmgate)"

resources() {
  local rss fds
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$gateway_pid/status")
  fds=$(find "/proc/$gateway_pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
  echo "$((rss / 1024)) MiB RSS, $fds fds"
}

# phase NAME [ATTACK COUNT EXTRA...]: oha on /hello for DURATION, with the
# attack running from a second before until it ends.
phase() {
  local name=$1
  shift
  local attacker=""
  if [ $# -gt 0 ]; then
    ./target/release/abuse "$@" --addr "$addr" --duration "$((DURATION + 3))s" \
      >"$work/$name.attack" 2>&1 &
    attacker=$!
    sleep 2
  fi
  oha -z "${DURATION}s" -c "$CONCURRENCY" --no-tui --output-format json "http://$addr/hello" \
    >"$work/$name.json"
  if [ -n "$attacker" ]; then wait "$attacker" || true; fi
  echo "$name|$(resources)|$(cat "$work/$name.attack" 2>/dev/null || true)" >>"$work/phases"
}

echo "oha -z ${DURATION}s -c $CONCURRENCY on /hello; gateway pid $gateway_pid, $(nproc) cores shared"
phase unloaded
phase silent silent 10000
phase slow-uploads slow-upload 1000 --path "/echo/x?length"
phase websockets websockets 1000 --path /ws/x
phase rapid-reset rapid-reset 1000

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
rows = [line.rstrip("\n").split("|", 2) for line in open(f"{work}/phases")]
base_p99 = None
print(f"{'phase':<13} {'req/s':>8} {'success':>9} {'p99 ms':>8} {'p99/unloaded':>12}  after")
for name, resources, attack in rows:
    run = json.load(open(f"{work}/{name}.json"))
    codes = run["statusCodeDistribution"]
    ok = int(codes.get("200", 0))
    errors = sum(n for kind, n in run.get("errorDistribution", {}).items()
                 if "aborted due to deadline" not in kind)
    total = sum(int(n) for n in codes.values()) + errors
    p99 = run["latencyPercentiles"]["p99"] * 1e3
    base_p99 = base_p99 or p99
    print(f"{name:<13} {run['summary']['requestsPerSec']:>8.0f} {100 * ok / max(total, 1):>8.2f}% "
          f"{p99:>8.2f} {p99 / base_p99:>11.2f}x  {resources}")
    if attack:
        print(f"{'':<13} attacker: {attack}")
PY
