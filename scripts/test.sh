#!/usr/bin/env bash
# Runs every check CI runs, cheapest first: format, lints, the engine's wasm32 build, and
# all tests (unit, randomized convergence on memory and on real Kuzu, crash, fidelity).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

echo "== engine builds for wasm32-unknown-unknown"
if ! rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
cargo build -p kuzu-sync-engine --target wasm32-unknown-unknown

echo "== cargo test"
cargo test --workspace "$@"
