#!/usr/bin/env bash
# Runs the greeter tutorial, one step after another: builds the components
# and the gateway, then for each step starts wasmgate on stepN.toml, asks it
# what the step is about, shows the answer (and the log lines that matter),
# and stops it. Needs ports 8080 (the site), 8081 (the stand-in translation
# API) and 9090 (admin) free on 127.0.0.1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
cd "$here"

components=(greeter-plain greeter translator translator-api logger)
echo "building the components and the gateway..."
(cd "$root/handlers" && cargo build --quiet --release --target wasm32-wasip2 \
  $(printf -- '-p %s ' "${components[@]}"))
(cd "$root" && cargo build --quiet --release -p wasmgate)
mkdir -p components
for name in "${components[@]}"; do
  cp "$root/handlers/target/wasm32-wasip2/release/${name//-/_}.wasm" "components/$name.wasm"
done
wasmgate="$root/target/release/wasmgate"
log="$(mktemp)"
api_pid=""
gateway_pid=""
cleanup() {
  [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null || true
  [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT

# Starts the gateway on $1 and waits for its "listening on" line.
start() {
  : >"$log"
  "$wasmgate" serve --config "$1" >"$log" 2>&1 &
  gateway_pid=$!
  for _ in $(seq 100); do
    grep -q '^listening on' "$log" && return 0
    kill -0 "$gateway_pid" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
  done
  echo "wasmgate did not start:"; cat "$log"; exit 1
}
stop() {
  kill -TERM "$gateway_pid"
  wait "$gateway_pid" || true
  gateway_pid=""
}
# Waits until the log has a line matching $1, and shows it.
logged() {
  for _ in $(seq 50); do
    if grep -q "$1" "$log"; then
      grep -o "$1.*" "$log" | sed 's/^/    log: /'
      return 0
    fi
    sleep 0.1
  done
  echo "    (no log line matching $1)"; return 1
}
ask() { printf '    %s -> %s\n' "$*" "$(curl -sS "$@")"; }

echo "step 1: one self-contained greeter"
start step1.toml; ask http://127.0.0.1:8080/greet; stop

echo "step 2: a translator wired to the greeter's import (haw-US)"
start step2.toml; ask http://127.0.0.1:8080/greet; stop

echo "step 3: the locale from configuration (es-ES)"
start step3.toml; ask http://127.0.0.1:8080/greet; stop

echo "step 4: a translator that asks a translation API (only it may send HTTP)"
python3 translation-api.py 8081 &
api_pid=$!
for _ in $(seq 50); do
  curl -sf http://127.0.0.1:8081/translate >/dev/null && break
  sleep 0.1
done
TRANSLATION_API=http://127.0.0.1:8081 start step4.toml
ask http://127.0.0.1:8080/greet; stop
kill "$api_pid"; api_pid=""

echo "step 5: a logging interceptor around the translator (de-DE)"
start step5.toml; ask http://127.0.0.1:8080/greet
logged 'Before translate'; logged 'After translate'; stop

echo "step 6: a channel: POST /names invokes the subscribed greeter per message"
start step6.toml
ask -X POST --data Ana http://127.0.0.1:8080/names
logged 'invocation complete'
ask http://127.0.0.1:8080/greet/Kai
stop

echo "step 7: split configuration, the locale from the environment"
start step7.toml; ask http://127.0.0.1:8080/greet; stop
LOCALE=de-DE start step7.toml; echo "    (LOCALE=de-DE)"; ask http://127.0.0.1:8080/greet; stop
