#!/usr/bin/env bash
# Hot-swap benchmark. A gateway serves handlers/version.wasm (answers "v1" or
# "v2") from a scratch directory while:
#   1. oha loads it for $DURATION and the file is swapped every 250 ms between
#      two known versions (rollbacks: compile-cache hits);
#   2. the same, with content the gateway has never seen on every swap (each
#      swap compiles);
#   3. with no load, 1000 cache-hit swaps back to back, reading the gateway's
#      RSS after 10 and after 1000.
# Swap latency runs from the rename into the handlers directory to the first
# response carrying the new version (loadtests/src/bin/swap-probe.rs).
#
# Usage: loadtests/swap.sh     (DURATION=30s CONCURRENCY=16)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-30s}
CONCURRENCY=${CONCURRENCY:-16}
source loadtests/lib.sh

command -v oha >/dev/null || cargo install oha --locked
cargo build --release --locked -p wasmgate -p wasmgate-loadtests
./target/release/wasmgate build >/dev/null

mkdir "$work/handlers"
cp handlers/wasm/version-v1.wasm "$work/handlers/version.wasm"
cat >"$work/wasmgate.toml" <<'EOF'
[gateway]
handlers_dir = "handlers"
cache_dir = "cache"

[[listener]]
addr = "127.0.0.1:0"

[handler.version]

[[route]]
path = "/version"
handler = "version"
EOF
start wasmgate '^listening on' ./target/release/wasmgate serve --config "$work/wasmgate.toml"
gateway_pid=${pids[-1]}
url="http://$(http_addr wasmgate)/version"

probe() {
  ./target/release/swap-probe --url "$url" --target "$work/handlers/version.wasm" \
    --versions handlers/wasm/version-v1.wasm handlers/wasm/version-v2.wasm "$@"
}

# Runs oha in the background while the probe swaps; prints both.
under_load() {
  local name=$1
  shift
  oha -z "$DURATION" -c "$CONCURRENCY" --no-tui --output-format json "$url" >"$work/$name.json" &
  local oha_pid=$!
  probe "$@"
  wait "$oha_pid"
  python3 - "$work/$name.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
codes = run["statusCodeDistribution"]
errors = {kind: n for kind, n in run.get("errorDistribution", {}).items()
          if "aborted due to deadline" not in kind}
ok = int(codes.get("200", 0))
other = sum(int(n) for code, n in codes.items() if code != "200")
print(f"  oha: {ok} x 200, {other} other statuses, {sum(errors.values())} transport errors {errors or ''}")
print(f"  oha: {run['summary']['requestsPerSec']:.0f} req/s, p99 {run['latencyPercentiles']['p99'] * 1e3:.2f} ms")
PY
}

echo "== rollbacks to known files (cache hits) every 250 ms, oha -c $CONCURRENCY for $DURATION"
under_load cached --mode cached --swaps 100 --interval-ms 250
echo "== new content (compiled) every 250 ms, oha -c $CONCURRENCY for $DURATION"
under_load cold --mode cold --swaps 80 --interval-ms 250
echo "== compile time of version.wasm alone (gateway log, load_ms of compiled loads)"
grep 'origin=Compiled' "$work/wasmgate.log" | sed -n 's/.*load_ms=\([0-9]*\).*/\1/p' | sort -n |
  awk '{a[NR]=$1} END {printf "  %d compiles: p50 %d ms, p99 %d ms\n", NR, a[int((NR+1)/2)], a[int(NR*0.99+0.5)]}'
echo "== 1000 cache-hit swaps back to back, no load"
probe --mode cached --swaps 1000 --pid "$gateway_pid" --rss-at 10,100,1000
