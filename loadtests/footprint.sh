#!/usr/bin/env bash
# Start-up time and memory, release build:
#   1. time from exec to the first `listening on` line with 50 handlers whose
#      compiled code is already in the compile cache (a restart);
#   2. RSS of the default development config (config/wasmgate.toml), idle;
#   3. RSS per live instance: 1000 requests held open at once on the `slow`
#      fixture (a Rust wasi:http guest like hello, answering after 5 s),
#      (RSS during - RSS before) / 1000.
#
# Usage: loadtests/footprint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtests/lib.sh

command -v oha >/dev/null || cargo install oha --locked
cargo build --release --locked -p wasmgate
./target/release/wasmgate build >/dev/null


echo "== 1. start-up with 50 handlers in a warm compile cache"
{
  printf '[gateway]\nhandlers_dir = "%s/handlers/wasm"\ncache_dir = "%s/cache"\n\n' "$PWD" "$work"
  printf '[deploy]\nstate_dir = "%s/state"\n\n[[listener]]\naddr = "127.0.0.1:0"\n\n[admin]\nenabled = false\n' "$work"
  for i in $(seq 1 50); do
    printf '\n[handler.h%d]\npath = "%s/handlers/wasm/hello.wasm"\npool = { prewarm = 1 }\n\n[[route]]\npath = "/h%d"\nhandler = "h%d"\n' "$i" "$PWD" "$i" "$i"
  done
} >"$work/fifty.toml"
# The first run compiles hello once and fills the cache; the next ones map it.
for run in cold warm1 warm2 warm3; do
  python3 - "$work/fifty.toml" "$run" <<'PY'
import subprocess, sys, time
started = time.monotonic()
child = subprocess.Popen(["./target/release/wasmgate", "serve", "--config", sys.argv[1]],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
for line in child.stdout:
    if line.startswith("listening on"):
        print(f"  {sys.argv[2]}: listening {1e3 * (time.monotonic() - started):.0f} ms after exec")
        break
child.terminate()
child.wait()
PY
done

echo "== 2. idle RSS, default development config"
start dev '^admin on' ./target/release/wasmgate serve --config config/wasmgate.toml
sleep 2
echo "  $(( $(rss_kib "${pids[-1]}") / 1024 )) MiB RSS ($(rss_kib "${pids[-1]}") KiB), idle"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

echo "== 3. RSS per live instance: 1000 requests held at once"
cat >"$work/slow.toml" <<EOF2
[gateway]
handlers_dir = "$PWD/handlers/wasm"
cache_dir = "$work/cache"
max_instances = 1200
http_reserve = 1200

[deploy]
state_dir = ""

[[listener]]
addr = "127.0.0.1:0"
max_connections = 2000

[admin]
enabled = false

[handler.slow]
pool = { prewarm = 0 }
limits = { concurrency = 1100 }

[[route]]
path = "/slow"
handler = "slow"
EOF2
start slow '^listening on' ./target/release/wasmgate serve --config "$work/slow.toml"
pid=${pids[-1]}
url="http://$(http_addr slow)/slow?chunks=1&pause_ms=5000"
curl -s "$url" >/dev/null   # one request first: the code is paged in
before=$(rss_kib "$pid")
oha -n 1000 -c 1000 --no-tui "$url" >"$work/oha-slow.txt" 2>&1 &
oha_pid=$!
peak=$before
for _ in $(seq 1 40); do
  now=$(rss_kib "$pid"); [ "$now" -gt "$peak" ] && peak=$now
  sleep 0.1
done
wait "$oha_pid" || true
grep -E "Success rate|\[200\]" "$work/oha-slow.txt" | sed 's/^/  /'
echo "  RSS before $before KiB, peak with 1000 live instances $peak KiB: $(( (peak - before) / 1000 )) KiB per instance"
