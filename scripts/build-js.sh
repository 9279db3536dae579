#!/usr/bin/env bash
# Builds the npm package `kuzu-sync` (js/): the engine compiled to WASM
# (adapters/wasm, profile `wasm`), its JS bindings made by wasm-bindgen, then `npm pack`.
#
#   scripts/build-js.sh            builds js/wasm/ and writes js/kuzu-sync-<version>.tgz
#   scripts/build-js.sh --no-pack  builds js/wasm/ only (what the JS tests need)
#
# Installs what is missing: the wasm32-unknown-unknown target, and wasm-bindgen-cli at the
# exact version of the wasm-bindgen crate (they must match; ~95 s once).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

WASM_BINDGEN_VERSION=0.2.130
if ! rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
if [ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
  echo "== installing wasm-bindgen-cli $WASM_BINDGEN_VERSION" >&2
  # Without --locked: with it, this version's lock file fails to resolve (JS-NOTES).
  cargo install wasm-bindgen-cli --version "=$WASM_BINDGEN_VERSION"
fi

echo "== building the WASM core" >&2
cargo build -p kuzu-sync-wasm --target wasm32-unknown-unknown --profile wasm
rm -rf js/wasm
wasm-bindgen --target web --out-dir js/wasm \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm/kuzu_sync_wasm.wasm"
ls -l js/wasm/kuzu_sync_wasm_bg.wasm >&2

if [ "${1:-}" != "--no-pack" ]; then
  (cd js && npm pack --silent)
  echo "== package: js/$(cd js && ls -t kuzu-sync-*.tgz | head -n 1)" >&2
fi
