#!/usr/bin/env bash
# Rollout benchmark. A release gateway serves handlers/version.wasm (v1) on
# /version while oha loads it at fixed concurrency, and:
#   1. v2 is deployed as a canary (10%, 25%, 50%, one step every $STEP):
#      the share of requests v2 answered in each step's window (from the
#      per-version counters), and every request's outcome;
#   2. the `flaky` fixture (fails a third of its requests) is deployed as a
#      canary (10%, 50%, every 1 s, 2 failed checks): how long until the
#      gateway rolls it back (from its audit log), and how many requests
#      failed meanwhile, against all requests;
#   3. v2 is deployed blue-green, then rolled back: the switch-back time the
#      admin API reports, and oha's failed requests (none expected).
#
# Usage: loadtests/rollout.sh     (STEP=5s CONCURRENCY=16)
set -euo pipefail
cd "$(dirname "$0")/.."

STEP=${STEP:-5s}
CONCURRENCY=${CONCURRENCY:-16}
source loadtests/lib.sh

command -v oha >/dev/null || cargo install oha --locked
cargo build --release --locked -p wasmgate
./target/release/wasmgate build >/dev/null

admin_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir "$work/handlers"
cp handlers/wasm/version-v1.wasm "$work/handlers/version.wasm"
cat >"$work/wasmgate.toml" <<EOF2
[gateway]
handlers_dir = "handlers"
cache_dir = "cache"

[deploy]
state_dir = "state"

[[listener]]
addr = "127.0.0.1:0"

[handler.version]
env = ["FAIL_PERCENT"]

[[route]]
path = "/version"
handler = "version"

[admin]
addr = "127.0.0.1:$admin_port"
EOF2
FAIL_PERCENT=33 start wasmgate '^listening on' ./target/release/wasmgate serve --config "$work/wasmgate.toml"
url="http://$(http_addr wasmgate)/version"
admin="http://127.0.0.1:$admin_port"
cli() { ./target/release/wasmgate "$@" --config "$work/wasmgate.toml"; }

# oha in the background for $1; its JSON goes to $work/$2.json.
load() {
  oha -z "$1" -c "$CONCURRENCY" --no-tui --output-format json "$url" >"$work/$2.json" &
  oha_pid=$!
  sleep 1
}

report() {
  python3 - "$work/$1.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
codes = run["statusCodeDistribution"]
errors = {kind: n for kind, n in run.get("errorDistribution", {}).items()
          if "aborted due to deadline" not in kind}
total = sum(int(n) for n in codes.values())
failed = sum(int(n) for code, n in codes.items() if int(code) >= 500)
print(f"  oha: {total} responses, {failed} x 5xx ({100 * failed / max(total, 1):.2f}%), "
      f"{sum(errors.values())} transport errors {errors or ''}; "
      f"{run['summary']['requestsPerSec']:.0f} req/s, p99 {run['latencyPercentiles']['p99'] * 1e3:.2f} ms")
PY
}

# Samples the per-version counters at every step change until the rollout ends.
watch_steps() {
  python3 - "$admin" <<'PY'
import json, re, sys, time, urllib.request
admin = sys.argv[1]
def get(path):
    return urllib.request.urlopen(admin + path, timeout=5).read().decode()
def counts():
    totals = {}
    for line in get("/metrics").splitlines():
        m = re.match(r'wasmgate_version_requests_total\{handler="version",outcome="\w+",version="(\w+)"\} (\d+)', line)
        if m:
            totals[m.group(1)] = totals.get(m.group(1), 0) + int(m.group(2))
    return totals
step, since, canary = None, None, None
while True:
    handler = json.loads(get("/status"))["handlers"][0]
    rollout = handler["rollout"]
    now = (rollout or {}).get("step") if rollout and rollout["weight_percent"] > 0 else None
    if now != step:
        snap = counts()
        if step is not None:
            done = sum(snap.values()) - sum(since.values())
            got = snap.get(canary, 0) - since.get(canary, 0)
            print(f"  step {step} ({weight}%): canary answered {got} of {done} requests = {100 * got / max(done, 1):.2f}%")
        step, since = now, snap
        if rollout:
            canary, weight = rollout["version"][:12], rollout["weight_percent"]
    if rollout is None and step is None:
        break
    time.sleep(0.05)
PY
}

echo "== 1. a good canary: v2 at 10%, 25%, 50%, $STEP each, oha -c $CONCURRENCY"
load 60s good
cli deploy version handlers/wasm/version-v2.wasm --canary 10%,25%,50% --every "$STEP" --min-requests 100 >/dev/null
watch_steps
kill -INT "$oha_pid" 2>/dev/null || true; wait "$oha_pid" || true
report good
cli rollback version >/dev/null   # back to v1 for the next run

echo "== 2. a bad canary: flaky (33% 500s) at 10%, 50%, checked every 1 s, rolled back after 2 failed checks"
load 20s bad
cli deploy version handlers/wasm/flaky.wasm --canary 10%,50% --every 1s --max-failures 2 --min-requests 50 >/dev/null
for _ in $(seq 1 100); do
  over=$(cli status | python3 -c 'import json,sys; print(json.load(sys.stdin)["handlers"][0]["rollout"] is None)')
  [ "$over" = True ] && break
  sleep 0.1
done
kill -INT "$oha_pid" 2>/dev/null || true; wait "$oha_pid" || true
python3 - "$work/state/audit.log" <<'PY'
import json, sys
from datetime import datetime
lines = [json.loads(l) for l in open(sys.argv[1])]
def at(line): return datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
start = [l for l in lines if l["event"] == "rollout_started"][-1]
back = [l for l in lines if l["event"] == "rolled_back" and l["actor"] == "rollout controller"][-1]
fails = [l for l in lines if l["event"] == "rollout_check_failed" and at(l) >= at(start)]
print(f"  rolled back {(at(back) - at(start)).total_seconds():.2f} s after the rollout started "
      f"(bound: 1 s x 2 checks + 1 s = 3 s); {len(fails)} failed checks: {fails[-1]['reason']}")
PY
report bad

echo "== 3. blue-green: v2 warmed and switched to, then switched back, oha -c $CONCURRENCY"
load 10s bluegreen
cli deploy version handlers/wasm/version-v2.wasm --blue-green --smoke /version >/dev/null
sleep 2
cli rollback version | python3 -c 'import json,sys; ms = json.load(sys.stdin)["ms"]; print(f"  switch back: {ms} ms (admin API)")'
wait "$oha_pid" || true
report bluegreen
