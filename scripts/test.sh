#!/usr/bin/env bash
# Runs every check CI runs, cheapest first: format, lints, the engine's and the wire
# formats' wasm32 builds (the formats' tests with the pure-Rust zstd), the fuzz crate's
# tests, the fuzz targets for a bounded time (FUZZ_SECONDS each, 30 by default), and all
# tests (unit, randomized convergence on memory and on real Kuzu, crash, fidelity).
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

echo "== the wire formats build for wasm32 (pure-Rust zstd) and pass their tests with it"
cargo build -p kuzu-sync-protocol --no-default-features --target wasm32-unknown-unknown
cargo test -q -p kuzu-sync-protocol --no-default-features --lib

echo "== fuzz crate's own tests (attacks through the hub_session checks, the allocation bound)"
CARGO_TARGET_DIR="$HOME/.cache/kuzu-sync/fuzz-test-target" cargo test -q --manifest-path fuzz/Cargo.toml

echo "== fuzz: each target for ${FUZZ_SECONDS:-30} s (scripts/fuzz.sh)"
./scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

echo "== cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary, the last of which
# is usually an empty doc-test run).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
