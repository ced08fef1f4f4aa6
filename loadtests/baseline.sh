#!/usr/bin/env bash
# Side-by-side load baseline for the `hello` component, in one run:
#   wasmgate        HTTP/1.1 keep-alive               (fresh instance per request)
#   wasmgate-h2     HTTP/2 over TLS (ALPN h2)
#   wasmgate-reuse  HTTP/1.1, `reuse = { max_requests = 128 }` (one request at a time per instance)
#   wasmtime        `wasmtime serve` 48 at its best: -S cli, pooling allocator with
#                   keep-resident + pagemap scan, -W timeout (wasmgate always has a deadline)
#   wasmtime-reuse  the same with --max-instance-reuse-count 128
#   wasmgate-p3     the WASI 0.3 hello (hello-p3), an instance per request
#   wasmgate-p3-shared  the same, `reuse = { max_requests = 128, max_concurrent = 16 }`
#   wasmtime-p3     `wasmtime serve -S p3` on the same component (its p3 default:
#                   an instance serves up to 128 requests, 16 at once)
#   native          a plain hyper server answering the same bytes (the ceiling)
# Each row also gives the serving process's CPU time (user + system, from
# /proc) per answered request, and its resident memory at the end of the
# row's last round (the wasmgate rows share one process). Every target runs
# at each concurrency in CONCURRENCY. Rounds alternate between the targets
# so drift on a shared machine hits all of them alike; the medians of the
# rounds are reported, with ratios.
#
# Usage: loadtests/baseline.sh     (DURATION=10s CONCURRENCY="1 50" ROUNDS=3)
# Installs oha and wasmtime-cli 48.0.8 with cargo if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-1 50}
ROUNDS=${ROUNDS:-3}
WASMTIME_VERSION=48.0.8

command -v oha >/dev/null || cargo install oha --locked
if ! wasmtime --version 2>/dev/null | grep -q "$WASMTIME_VERSION"; then
  cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked
fi
cargo build --release --locked -p wasmgate -p wasmgate-loadtests

source loadtests/lib.sh

start wasmgate 'listening on https://' ./target/release/wasmgate up --config loadtests/wasmgate-bench.toml
gateway_pid=${pids[-1]}
gateway_http="http://$(http_addr wasmgate)"
gateway_https=$(sed -n 's|^listening on https://127.0.0.1:\(.*\)|https://localhost:\1|p' "$work/wasmgate.log" | head -1)

start wasmtime 'Serving HTTP on' wasmtime serve --addr 127.0.0.1:0 -S cli -W timeout=30s \
  -O pooling-allocator=y,pooling-memory-keep-resident=4194304,pooling-table-keep-resident=65536,pooling-pagemap-scan=y \
  handlers/wasm/hello.wasm
wasmtime_http=$(grep -oE 'http://[0-9.:]+' "$work/wasmtime.log" | head -1)
wasmtime_pid=${pids[-1]}

start wasmtime-reuse 'Serving HTTP on' wasmtime serve --addr 127.0.0.1:0 -S cli -W timeout=30s \
  -O pooling-allocator=y,pooling-memory-keep-resident=4194304,pooling-table-keep-resident=65536,pooling-pagemap-scan=y \
  --max-instance-reuse-count 128 handlers/wasm/hello.wasm
wasmtime_reuse_http=$(grep -oE 'http://[0-9.:]+' "$work/wasmtime-reuse.log" | head -1)
wasmtime_reuse_pid=${pids[-1]}

start wasmtime-p3 'Serving HTTP on' wasmtime serve --addr 127.0.0.1:0 -S cli,p3 -W timeout=30s \
  -O pooling-allocator=y,pooling-memory-keep-resident=4194304,pooling-table-keep-resident=65536,pooling-pagemap-scan=y \
  handlers/wasm/hello-p3.wasm
wasmtime_p3_http=$(grep -oE 'http://[0-9.:]+' "$work/wasmtime-p3.log" | head -1)
wasmtime_p3_pid=${pids[-1]}

start native 'listening on http://' ./target/release/native-hello
native_http="http://$(http_addr native)"
native_pid=${pids[-1]}

# The process serving each target, whose CPU time (user + system, from
# /proc) is read around its rounds.
declare -A server=(
  [wasmgate]=$gateway_pid [wasmgate-h2]=$gateway_pid [wasmgate-reuse]=$gateway_pid
  [wasmgate-p3]=$gateway_pid [wasmgate-p3-shared]=$gateway_pid [wasmtime]=$wasmtime_pid [wasmtime-reuse]=$wasmtime_reuse_pid
  [wasmtime-p3]=$wasmtime_p3_pid [native]=$native_pid
)

declare -A url=(
  [wasmgate]="$gateway_http/hello"
  [wasmgate-h2]="$gateway_https/hello"
  [wasmgate-reuse]="$gateway_http/reuse/hello"
  [wasmtime]="$wasmtime_http/hello"
  [wasmtime-reuse]="$wasmtime_reuse_http/hello"
  [wasmgate-p3]="$gateway_http/p3/hello"
  [wasmgate-p3-shared]="$gateway_http/p3-shared/hello"
  [wasmtime-p3]="$wasmtime_p3_http/hello"
  [native]="$native_http/hello"
)
declare -A extra=(
  [wasmgate]=""
  [wasmgate-h2]="--http2 --insecure"
  [wasmgate-reuse]=""
  [wasmtime]=""
  [wasmtime-reuse]=""
  [wasmgate-p3]=""
  [wasmgate-p3-shared]=""
  [wasmtime-p3]=""
  [native]=""
)
targets=(wasmgate wasmgate-h2 wasmgate-reuse wasmtime wasmtime-reuse wasmgate-p3 wasmgate-p3-shared wasmtime-p3 native)

for c in $CONCURRENCY; do
echo
echo "oha -z $DURATION -c $c, $ROUNDS alternating rounds, $(nproc) cores shared by server and load generator"
for round in $(seq 1 "$ROUNDS"); do
  for target in "${targets[@]}"; do
    before=$(cpu_ticks "${server[$target]}")
    # shellcheck disable=SC2086
    oha -z "$DURATION" -c "$c" --no-tui --output-format json ${extra[$target]} "${url[$target]}" \
      >"$work/$target.c$c.$round.json"
    echo $(( $(cpu_ticks "${server[$target]}") - before )) >"$work/$target.c$c.$round.cpu"
    rss_kib "${server[$target]}" >"$work/$target.c$c.rss"
    echo "  round $round: $target done"
  done
done

python3 - "$work" "$ROUNDS" "$(getconf CLK_TCK)" "$c" "${targets[@]}" <<'PY'
import json, statistics, sys
work, rounds, tick, c, targets = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
rows = {}
for target in targets:
    target_c = f"{target}.c{c}"

    runs = [json.load(open(f"{work}/{target_c}.{r}.json")) for r in range(1, rounds + 1)]
    rps = statistics.median(run["summary"]["requestsPerSec"] for run in runs)
    p50 = statistics.median(run["latencyPercentiles"]["p50"] for run in runs) * 1e3
    p99 = statistics.median(run["latencyPercentiles"]["p99"] for run in runs) * 1e3
    ok = sum(int(n) for run in runs for code, n in run["statusCodeDistribution"].items() if code == "200")
    bad = sum(int(n) for run in runs for code, n in run["statusCodeDistribution"].items() if code != "200")
    # oha counts the requests still in flight when -z runs out as
    # "aborted due to deadline": those are not failures.
    errors = sum(n for run in runs for kind, n in run.get("errorDistribution", {}).items()
                 if "aborted due to deadline" not in kind)
    # Server CPU (user + system) per answered request, in microseconds.
    cpu = statistics.median(
        int(open(f"{work}/{target_c}.{r}.cpu").read()) / tick * 1e6
        / max(sum(int(n) for n in run["statusCodeDistribution"].values()), 1)
        for r, run in zip(range(1, rounds + 1), runs)
    )
    rss = int(open(f"{work}/{target_c}.rss").read()) / 1024
    rows[target] = (rps, p50, p99, ok, bad + errors, cpu, rss)
print(f"{'target':<19} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'200s':>9} {'failed':>7} {'cpu µs/req':>10} {'RSS MiB':>8}")
for target, (rps, p50, p99, ok, failed, cpu, rss) in rows.items():
    print(f"{target:<19} {rps:>10.0f} {p50:>8.2f} {p99:>8.2f} {ok:>9} {failed:>7} {cpu:>10.1f} {rss:>8.1f}")
gw, h2, wt, native = (rows[t][0] for t in ("wasmgate", "wasmgate-h2", "wasmtime", "native"))
print(f"wasmgate / wasmtime serve (HTTP/1.1): {gw / wt:.2f}x req/s, p99 {rows['wasmgate'][2] / rows['wasmtime'][2]:.2f}x")
print(f"wasmgate / native hyper   (HTTP/1.1): {gw / native:.2f}x req/s")
print(f"wasmgate h2+TLS / wasmgate HTTP/1.1:  {h2 / gw:.2f}x req/s")
reuse, wt_reuse = rows["wasmgate-reuse"][0], rows["wasmtime-reuse"][0]
print(f"wasmgate reuse / wasmtime serve reuse: {reuse / wt_reuse:.2f}x req/s, p99 {rows['wasmgate-reuse'][2] / rows['wasmtime-reuse'][2]:.2f}x")
print(f"wasmgate reuse / native hyper:         {reuse / native:.2f}x req/s")
print(f"wasmgate reuse / wasmgate fresh:       {reuse / gw:.2f}x req/s")
p3, wt_p3 = rows["wasmgate-p3"][0], rows["wasmtime-p3"][0]
print(f"wasmgate 0.3 / wasmtime serve 0.3:      {p3 / wt_p3:.2f}x req/s, p99 {rows['wasmgate-p3'][2] / rows['wasmtime-p3'][2]:.2f}x")
shared = rows["wasmgate-p3-shared"][0]
print(f"wasmgate 0.3 shared / wasmtime serve 0.3: {shared / wt_p3:.2f}x req/s, p99 {rows['wasmgate-p3-shared'][2] / rows['wasmtime-p3'][2]:.2f}x")
PY
done
