#!/usr/bin/env bash
# A/B of two wasmgate builds on the hello baseline (HTTP/1.1, fresh instance
# per request), in alternating rounds so drift on a shared machine hits both
# alike; prints the medians and B/A ratios.
#
# Usage: loadtests/ab.sh BIN_A BIN_B     (DURATION=10s CONCURRENCY=50 ROUNDS=3)
# e.g. a build of the previous commit and of this one, each `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."

a=$(realpath "$1")
b=$(realpath "$2")
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-50}
ROUNDS=${ROUNDS:-3}
command -v oha >/dev/null || cargo install oha --locked

source loadtests/lib.sh

hello=$(find handlers/wasm target -name hello.wasm -path '*wasm*' | head -1)
cat >"$work/ab.toml" <<TOML
[gateway]
handlers_dir = "$work"
cache_dir = ""

[[listener]]
addr = "127.0.0.1:0"

[handler.hello]
path = "$PWD/$hello"
pool = { prewarm = 64 }

[[route]]
path = "/*"
handler = "hello"

[admin]
addr = "127.0.0.1:0"
TOML

WASMGATE_LOG=warn,wasmgate::access=off start a '^listening on' "$a" serve --config "$work/ab.toml"
url_a="http://$(http_addr a)/hello"
WASMGATE_LOG=warn,wasmgate::access=off start b '^listening on' "$b" serve --config "$work/ab.toml"
url_b="http://$(http_addr b)/hello"

echo "oha -z $DURATION -c $CONCURRENCY, $ROUNDS alternating rounds; A=$a B=$b"
for round in $(seq 1 "$ROUNDS"); do
  for side in a b; do
    url=url_$side
    oha -z "$DURATION" -c "$CONCURRENCY" --no-tui --output-format json "${!url}" >"$work/$side.$round.json"
  done
done

python3 - "$work" "$ROUNDS" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
for side in ("a", "b"):
    runs = [json.load(open(f"{work}/{side}.{r}.json")) for r in range(1, rounds + 1)]
    rps = statistics.median(run["summary"]["requestsPerSec"] for run in runs)
    p50 = statistics.median(run["latencyPercentiles"]["p50"] for run in runs) * 1e3
    p99 = statistics.median(run["latencyPercentiles"]["p99"] for run in runs) * 1e3
    bad = sum(int(n) for run in runs for code, n in run["statusCodeDistribution"].items() if code != "200")
    rows[side] = (rps, p50, p99, bad)
    print(f"{side.upper()}  {rps:>8.0f} req/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms  non-200 {bad}")
print(f"B/A: {rows['b'][0] / rows['a'][0]:.3f}x req/s, p99 {rows['b'][2] / rows['a'][2]:.2f}x")
PY
