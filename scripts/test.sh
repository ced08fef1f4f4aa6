#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need, then
# runs unit tests and the end-to-end tests (which build the guest fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."

# Guest components build for wasm32-wasip2 (the tests' build script would add
# it too; doing it here keeps the install step visible).
rustup target add wasm32-wasip2

# componentize-py builds the Python example (tests/tests/toolchains.rs); a
# virtualenv under target/ keeps it out of the system Python.
if [ ! -x target/test-venv/bin/componentize-py ]; then
  python3 -m venv target/test-venv
  target/test-venv/bin/pip install --quiet --disable-pip-version-check componentize-py==0.25.1
fi
export COMPONENTIZE_PY="$PWD/target/test-venv/bin/componentize-py"
# kubernetes-validate checks deploy/kubernetes against the Kubernetes API's
# schemas, which it carries (tests/tests/kubernetes.rs).
if [ ! -x target/test-venv/bin/kubernetes-validate ]; then
  target/test-venv/bin/pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
export KUBERNETES_VALIDATE="$PWD/target/test-venv/bin/kubernetes-validate"

# Debian packages the tests run for real: chromium drives the chat demo page
# (tests/tests/chat.rs); prometheus (with promtool) checks and scrapes the
# admin listener's metrics (tests/tests/observability.rs); haproxy sends PROXY
# headers (tests/tests/behind_proxy.rs); pebble is the ACME CA
# (tests/tests/acme.rs); systemd-socket-activate passes sockets like a .socket
# unit (tests/tests/restarts.rs); node and npm build the JavaScript and
# TypeScript templates (tests/tests/templates.rs); nats-server joins gateways
# into a cluster (tests/tests/cluster.rs).
# Installed only when missing; needs root or sudo.
apt_install() {
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
apt_install chromium:chromium promtool:prometheus haproxy:haproxy pebble:pebble \
  systemd-socket-activate:systemd node:nodejs npm:npm /usr/sbin/nats-server:nats-server

# --workspace also builds the wasmgate binary the end-to-end tests run.
cargo test --workspace --locked
