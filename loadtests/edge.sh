#!/usr/bin/env bash
# What the edge features cost on /hello: the same release binary twice, one
# gateway whose route has no edge features ("none") and one whose route has
# every one this build offers ("all": cors with a policy, header rules set,
# append and remove, compression, whose predicate runs but finds /hello's
# answer too small, and request decompression, which finds no body
# encoding), in alternating rounds, oha -c 50 with an Origin and an
# Accept-Encoding header as a browser sends them (so CORS and the encoding
# negotiation do their work on every request). Request ids and the
# per-request tracing span are always on, so both sides pay for them.
#
# Two ratios, because one round's throughput drifts with the machine (rounds
# of one side differ by up to 1.4x here): the median of each round's
# all/none req/s (the two sides of a round run back to back, so a slow
# drift cancels), and none/all of the gateway's median CPU time per request
# (utime + stime from /proc).
#
# COUNT=instructions counts instead of timing: each gateway runs under
# valgrind's callgrind, takes 300 requests to warm up, then REQUESTS more
# (oha -c 10) between a zeroing and a dump of its counters; the result is
# instructions per request on each side and their ratio. Valgrind runs one
# thread at a time and the pooling allocator cannot reserve its memory
# under it (both sides instantiate on demand), so the absolute figures are
# not a native run's; the difference between the sides is the layers' own
# work, and it repeats within a fraction of a percent, where req/s cannot
# resolve 5%.
#
# Usage: loadtests/edge.sh     (DURATION=10s ROUNDS=3; COUNT=instructions
# REQUESTS=2000, and KEEP=DIR to keep the profiles for callgrind_annotate)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
COUNT=${COUNT:-time}
REQUESTS=${REQUESTS:-2000}
command -v oha >/dev/null || cargo install oha --locked
if [ "$COUNT" = instructions ] && ! command -v valgrind >/dev/null; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends valgrind
fi
cargo build --release --locked -p wasmgate
./target/release/wasmgate build --config config/wasmgate.toml >/dev/null

source loadtests/lib.sh
declare -A server

for side in none all; do
  edge=""
  [ "$side" = all ] && edge='cors = { origins = ["https://app.example"], methods = ["GET", "POST"], headers = ["content-type"], credentials = true, max_age = "10m" }
headers = { set = { "x-frame-options" = "DENY", "x-content-type-options" = "nosniff" }, append = { "cache-control" = "no-store" }, remove = ["x-powered-by"] }
compress = true
decompress = true'
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
  under=()
  [ "$COUNT" = instructions ] && under=(valgrind --tool=callgrind --smc-check=all-non-file
    "--callgrind-out-file=$work/callgrind.$side")
  WASMGATE_LOG=info,wasmgate::access=off start "$side" '^listening on' \
    "${under[@]}" ./target/release/wasmgate serve --config "$work/$side.toml"
  server[$side]=${pids[-1]}
done

browser=(-H "Origin: https://app.example" -H "Accept-Encoding: gzip, br")
if [ "$COUNT" = instructions ]; then
  for side in none all; do
    url="http://$(http_addr "$side")/hello"
    oha -n 300 -c 10 --no-tui "${browser[@]}" "$url" >/dev/null
    callgrind_control --zero "${server[$side]}" >/dev/null 2>&1
    oha -n "$REQUESTS" -c 10 --no-tui --output-format json "${browser[@]}" "$url" >"$work/count.$side.json"
    callgrind_control --dump "${server[$side]}" >/dev/null 2>&1
  done
  python3 - "$work" "$REQUESTS" <<'PY'
import json, sys
work, requests = sys.argv[1], int(sys.argv[2])
per = {}
for side in ("none", "all"):
    codes = json.load(open(f"{work}/count.{side}.json"))["statusCodeDistribution"]
    if codes != {"200": requests}:
        sys.exit(f"{side}: answers {codes}, not {requests} 200s")
    totals = [line for line in open(f"{work}/callgrind.{side}.1") if line.startswith("totals:")]
    per[side] = int(totals[0].split()[1]) / requests
    print(f"{side:5} {per[side]:>10.0f} instructions per request")
print(f"hello  all - none {per['all'] - per['none']:.0f} instructions per request"
      f"   none/all {per['none'] / per['all']:.3f}x")
PY
  [ -n "${KEEP:-}" ] && cp "$work"/callgrind.* "$KEEP"/
  exit 0
fi

echo "oha -z $DURATION -c 50, $ROUNDS alternating rounds"
for round in $(seq 1 "$ROUNDS"); do
  order="none all"
  [ $((round % 2)) -eq 0 ] && order="all none"
  for side in $order; do
    before=$(cpu_ticks "${server[$side]}")
    oha -z "$DURATION" -c 50 --no-tui --output-format json "${browser[@]}" \
      "http://$(http_addr "$side")/hello" >"$work/hello.$side.$round.json"
    echo $(( $(cpu_ticks "${server[$side]}") - before )) >"$work/hello.$side.$round.cpu"
  done
done

python3 - "$work" "$ROUNDS" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
work, rounds, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rps, cpu = {}, {}
for side in ("none", "all"):
    runs = [json.load(open(f"{work}/hello.{side}.{r}.json")) for r in range(1, rounds + 1)]
    bad = {c: n for run in runs for c, n in run["statusCodeDistribution"].items() if c != "200"}
    if bad:
        print(f"{side}: answers other than 200: {bad}")
    rps[side] = [run["summary"]["requestsPerSec"] for run in runs]
    ticks = [int(open(f"{work}/hello.{side}.{r}.cpu").read()) for r in range(1, rounds + 1)]
    done = [sum(int(n) for n in run["statusCodeDistribution"].values()) for run in runs]
    cpu[side] = [t / hz * 1e6 / max(n, 1) for t, n in zip(ticks, done)]
    print(f"{side:5} req/s " + " ".join(f"{x:.0f}" for x in rps[side])
          + "   CPU us/req " + " ".join(f"{x:.1f}" for x in cpu[side]))
paired = statistics.median(a / n for a, n in zip(rps["all"], rps["none"]))
cpu_ratio = statistics.median(cpu["none"]) / statistics.median(cpu["all"])
print(f"hello  none {statistics.median(rps['none']):>8.0f} req/s   all {statistics.median(rps['all']):>8.0f} req/s"
      f"   all/none per round (median) {paired:.3f}x   CPU per request none/all {cpu_ratio:.3f}x")
PY
