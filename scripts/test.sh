#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need, then
# runs unit tests and the end-to-end tests (which build the guest fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."

# Guest components build for wasm32-wasip2 (the tests' build script would add
# it too; doing it here keeps the install step visible).
rustup target add wasm32-wasip2

# --workspace also builds the wasmgate binary the end-to-end tests run.
cargo test --workspace --locked
