#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need, then
# runs unit tests and the end-to-end tests (which build the guest fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."

# Guest components build for wasm32-wasip2 (the tests' build script would add
# it too; doing it here keeps the install step visible).
rustup target add wasm32-wasip2

# componentize-py builds the Python fixture (tests/tests/toolchains.rs); a
# virtualenv under target/ keeps it out of the system Python.
if [ ! -x target/test-venv/bin/componentize-py ]; then
  python3 -m venv target/test-venv
  target/test-venv/bin/pip install --quiet --disable-pip-version-check componentize-py==0.25.1
fi
export COMPONENTIZE_PY="$PWD/target/test-venv/bin/componentize-py"

# --workspace also builds the wasmgate binary the end-to-end tests run.
cargo test --workspace --locked
