#!/usr/bin/env bash
# Runs every check CI runs, cheapest first: format, lints, the engine's and the wire
# formats' wasm32 builds (the formats' tests with the pure-Rust zstd), the fuzz crate's
# tests, the fuzz targets for a bounded time (FUZZ_SECONDS each, 30 by default), and all
# tests (unit, randomized convergence on memory and on real Kuzu, crash, fidelity), then the
# JS package's tests on Node (real `kuzu` and `kuzu-wasm`, bundles with the native CLI).
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
if [ "$status" -ne 0 ]; then exit "$status"; fi

echo "== JS package (js/): build the WASM core, install kuzu and kuzu-wasm, node --test"
./scripts/build-js.sh
cargo build -q -p kuzu-sync
(cd js && npm install --no-audit --no-fund --silent)
(cd js && KUZU_SYNC_BIN="$CARGO_TARGET_DIR/debug/kuzu-sync" npm test)

echo "== the packed tarball, unpacked into a fresh project, runs js/examples/node.mjs"
app="$(mktemp -d)"
mkdir -p "$app/node_modules"
tar xzf js/kuzu-sync-*.tgz -C "$app/node_modules"
mv "$app/node_modules/package" "$app/node_modules/kuzu-sync"
ln -s "$PWD/js/node_modules/kuzu" "$app/node_modules/kuzu"
cp js/examples/node.mjs "$app/"
(cd "$app" && node node.mjs "$app") | tee "$app/out.txt"
grep -q "'Alice'" "$app/out.txt"
rm -rf "$app"
