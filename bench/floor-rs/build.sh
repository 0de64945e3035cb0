#!/usr/bin/env bash
# Builds the workers-rs floor Worker into bench/floor-rs/build/ the way scripts/build builds Clubhouse (worker-build
# --release with the offline tool overrides of scripts/lib.sh, then wasm-opt -O without names), offline, with
# Clubhouse's Cargo.lock as the starting lock so the shared crates are the same versions.
#   bash bench/floor-rs/build.sh
set -euo pipefail
FLOOR_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$FLOOR_DIR/../../scripts/lib.sh"
cd "$FLOOR_DIR"
[ -f Cargo.lock ] || cp "$REPO_ROOT/Cargo.lock" Cargo.lock
for bin in "$WASM_BINDGEN_BIN" "$WASM_OPT_BIN" "$ESBUILD_BIN"; do
  [ -x "$bin" ] || die "$bin is missing: run bash scripts/setup"
done
CARGO_NET_OFFLINE=true "$CARGO_BIN/worker-build" --release
optimize_wasm build/index_bg.wasm --strip-debug
log "bench/floor-rs/build: $(stat -c %s build/index_bg.wasm) bytes of wasm"
