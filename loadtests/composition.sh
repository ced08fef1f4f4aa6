#!/usr/bin/env bash
# What composition costs, in one run of one gateway (composition-bench.toml):
#   - a two-middleware chain: req/s of /chain against /bare (hello), oha -c 50;
#   - one wired import call: one client (oha -c 1) asks /wired?calls=1 and
#     /wired?calls=$CALLS; the difference in mean latency over $CALLS-1 is
#     the cost of one call once the translator's instance exists;
#   - making that instance (once per importing instance, at its first
#     call): /wired?calls=1 minus /wired?calls=0;
#   - one interceptor around a call: the same on /advised (a do-nothing
#     advice), minus the plain call.
# Rounds alternate between the targets; medians are reported.
#
# Usage: loadtests/composition.sh     (DURATION=10s ROUNDS=3 CALLS=1000)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CALLS=${CALLS:-1000}

command -v oha >/dev/null || cargo install oha --locked
cargo build --release --locked -p wasmgate

source loadtests/lib.sh

# `build` installs what a gateway serves; the benchmark's own fixtures
# (test-only) are copied beside them.
./target/release/wasmgate build --config loadtests/composition-bench.toml
for fixture in wired-bench advice-pass mw-stamp; do
  cp "handlers/target/wasm32-wasip2/release/${fixture//-/_}.wasm" "handlers/wasm/$fixture.wasm"
done
WASMGATE_LOG=warn,wasmgate::access=off start wasmgate '^listening on http://' \
  ./target/release/wasmgate serve --config loadtests/composition-bench.toml
base="http://$(http_addr wasmgate)"

# name concurrency path
targets=(
  "bare 50 /bare"
  "chain 50 /chain"
  "chain-reuse 50 /chain-reuse"
  "wired0 1 /wired?calls=0"
  "wired1 1 /wired?calls=1"
  "wiredN 1 /wired?calls=$CALLS"
  "advised1 1 /advised?calls=1"
  "advisedN 1 /advised?calls=$CALLS"
)
echo "oha -z $DURATION, $ROUNDS alternating rounds, CALLS=$CALLS"
for round in $(seq 1 "$ROUNDS"); do
  for target in "${targets[@]}"; do
    read -r name concurrency path <<<"$target"
    oha -z "$DURATION" -c "$concurrency" --no-tui --output-format json "$base$path" \
      >"$work/$name.$round.json"
  done
done

python3 - "$work" "$ROUNDS" "$CALLS" <<'PY'
import json, statistics, sys
work, rounds, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def median(name, pick):
    runs = [json.load(open(f"{work}/{name}.{r}.json")) for r in range(1, rounds + 1)]
    bad = {code: n for run in runs for code, n in run["statusCodeDistribution"].items() if code != "200"}
    if bad:
        print(f"{name}: answers other than 200: {bad}")
    return statistics.median(pick(run) for run in runs)
rps = lambda run: run["summary"]["requestsPerSec"]
mean = lambda run: run["summary"]["average"]
bare, chain = median("bare", rps), median("chain", rps)
print(f"bare hello        {bare:>8.0f} req/s (c=50)")
print(f"two middleware    {chain:>8.0f} req/s (c=50)  {chain / bare:.3f}x of bare")
reuse = median("chain-reuse", rps)
print(f"  with reuse      {reuse:>8.0f} req/s (c=50)  {reuse / bare:.3f}x of bare (middleware instances reused)")
w0, w1, wn = (median(n, mean) for n in ("wired0", "wired1", "wiredN"))
a1, an = median("advised1", mean), median("advisedN", mean)
print(f"wired, 0 calls    {w0 * 1e6:>8.1f} us/request (c=1)")
print(f"first wired call  {(w1 - w0) * 1e6:>8.1f} us (instantiating the translator)")
print(f"one wired call    {(wn - w1) / (calls - 1) * 1e9:>8.0f} ns")
print(f"first advised     {(a1 - w0) * 1e6:>8.1f} us (translator and advice instances)")
print(f"one advised call  {(an - a1) / (calls - 1) * 1e9:>8.0f} ns "
      f"(interceptor: {((an - a1) - (wn - w1)) / (calls - 1) * 1e9:.0f} ns)")
PY
# Anything the gateway complained about while measured.
grep -E ' (WARN|ERROR) ' "$work/wasmgate.log" | head -5 || true
