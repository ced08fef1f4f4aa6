#!/usr/bin/env bash
# What the edge features cost on /hello: the same release binary twice, one
# gateway whose route has no edge features ("none") and one whose route has
# every one this build offers ("all": cors with a policy, header rules set,
# append and remove, compression, whose predicate runs but finds /hello's
# answer too small), in alternating rounds, oha -c 50 with an Origin header
# (so CORS does its work on every request). Request ids and the per-request
# tracing span are always on, so both sides pay for them.
#
# Usage: loadtests/edge.sh     (DURATION=10s ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
command -v oha >/dev/null || cargo install oha --locked
cargo build --release --locked -p wasmgate
./target/release/wasmgate build --config config/wasmgate.toml >/dev/null

source loadtests/lib.sh

for side in none all; do
  edge=""
  [ "$side" = all ] && edge='cors = { origins = ["https://app.example"], methods = ["GET", "POST"], headers = ["content-type"], credentials = true, max_age = "10m" }
headers = { set = { "x-frame-options" = "DENY", "x-content-type-options" = "nosniff" }, append = { "cache-control" = "no-store" }, remove = ["x-powered-by"] }
compress = true'
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

[[route]]
path = "/hello"
handler = "hello"
$edge
TOML
  # info, as operators run it: the request span is made (access lines are
  # off so the terminal is not the bottleneck).
  WASMGATE_LOG=info,wasmgate::access=off start "$side" '^listening on' \
    ./target/release/wasmgate serve --config "$work/$side.toml"
done

echo "oha -z $DURATION -c 50, $ROUNDS alternating rounds"
for round in $(seq 1 "$ROUNDS"); do
  order="none all"
  [ $((round % 2)) -eq 0 ] && order="all none"
  for side in $order; do
    oha -z "$DURATION" -c 50 --no-tui --output-format json -H "Origin: https://app.example" \
      "http://$(http_addr "$side")/hello" >"$work/hello.$side.$round.json"
  done
done

python3 - "$work" "$ROUNDS" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
rps = {}
for side in ("none", "all"):
    runs = [json.load(open(f"{work}/hello.{side}.{r}.json")) for r in range(1, rounds + 1)]
    bad = {c: n for run in runs for c, n in run["statusCodeDistribution"].items() if c != "200"}
    if bad:
        print(f"{side}: answers other than 200: {bad}")
    rps[side] = statistics.median(run["summary"]["requestsPerSec"] for run in runs)
    print(f"{side:5} " + " ".join(f"{run['summary']['requestsPerSec']:.0f}" for run in runs))
print(f"hello  none {rps['none']:>8.0f} req/s   all {rps['all']:>8.0f} req/s   all/none {rps['all'] / rps['none']:.3f}x")
PY
