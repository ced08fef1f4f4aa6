#!/usr/bin/env bash
# What fuel metering (limits.fuel, CPU budgets) costs: the same release
# binary twice, one gateway without any limits.fuel (no metering) and one
# where every handler has a budget (metering on), in alternating rounds:
#   hello            a request that does almost nothing in wasm (-c 50)
#   spin?iterations  a compute-bound request, 1M loop iterations (-c 2)
#
# Usage: loadtests/fuel.sh     (DURATION=10s ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
command -v oha >/dev/null || cargo install oha --locked
cargo build --release --locked -p wasmgate
./target/release/wasmgate build --config config/wasmgate.toml >/dev/null

source loadtests/lib.sh

for side in off on; do
  limits=""
  [ "$side" = on ] && limits='limits = { fuel = 100_000_000_000 }'
  cat >"$work/$side.toml" <<TOML
[gateway]
handlers_dir = "$PWD/handlers/wasm"
auto_routes = false
cache_dir = ""

[[listener]]
addr = "127.0.0.1:0"

[admin]
enabled = false

[handler.hello]
pool = { prewarm = 64 }
$limits

[handler.spin]
pool = { prewarm = 8 }
$limits

[[route]]
path = "/hello"
handler = "hello"

[[route]]
path = "/spin"
handler = "spin"
TOML
  WASMGATE_LOG=warn,wasmgate::access=off start "$side" '^listening on' \
    ./target/release/wasmgate serve --config "$work/$side.toml"
done

echo "oha -z $DURATION, $ROUNDS alternating rounds"
for round in $(seq 1 "$ROUNDS"); do
  # Which goes first alternates too, so neither always follows the other.
  order="off on"
  [ $((round % 2)) -eq 0 ] && order="on off"
  for side in $order; do
    base="http://$(http_addr "$side")"
    oha -z "$DURATION" -c 50 --no-tui --output-format json "$base/hello" >"$work/hello.$side.$round.json"
    oha -z "$DURATION" -c 2 --no-tui --output-format json "$base/spin?iterations=1000000" \
      >"$work/spin.$side.$round.json"
  done
done

python3 - "$work" "$ROUNDS" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
for target in ("hello", "spin"):
    rps = {}
    for side in ("off", "on"):
        runs = [json.load(open(f"{work}/{target}.{side}.{r}.json")) for r in range(1, rounds + 1)]
        bad = {c: n for run in runs for c, n in run["statusCodeDistribution"].items() if c != "200"}
        if bad:
            print(f"{target} {side}: answers other than 200: {bad}")
        rps[side] = statistics.median(run["summary"]["requestsPerSec"] for run in runs)
    print(f"{target:6} metering off {rps['off']:>8.0f} req/s   on {rps['on']:>8.0f} req/s   "
          f"on/off {rps['on'] / rps['off']:.3f}x")
PY
