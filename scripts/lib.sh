# Shared helpers for scripts/*: sourced, not run.
# Versions the offline toolchain is pinned to (see shared/notes/toolchain.md). The wasm-bindgen CLI must match the
# `wasm-bindgen` pin in Cargo.toml / Cargo.lock exactly.
WASM_BINDGEN_VERSION=0.2.130
WORKER_BUILD_VERSION=0.8.7

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$CARGO_BIN:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Keep wrangler/miniflare off the internet and out of the home folder.
export CLOUDFLARE_CF_FETCH_ENABLED=false
export WRANGLER_SEND_METRICS=false

# worker-build would download these (two from GitHub, unreachable here); exported globally so that a wrangler
# `[build]` command run by `wrangler dev`/`deploy` uses them too.
export WASM_BINDGEN_BIN="$CARGO_BIN/wasm-bindgen"
export WASM_OPT_BIN="$REPO_ROOT/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$REPO_ROOT/node_modules/.bin/esbuild"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# optimize_wasm FILE [wasm-opt flags...]: wasm-opt -O (worker-build's default, binaryen's -Os) in place, without the
# producers section. The feature list is worker-build's (src/build/mod.rs, step_run_wasm_opt): nothing newer than
# what workerd reads. Extra flags: --strip-debug drops the names section, --debuginfo keeps it.
optimize_wasm() {
  local file="$1"; shift
  local features=()
  for feature in mutable-globals sign-ext nontrapping-float-to-int bulk-memory multivalue reference-types \
    exception-handling; do
    features+=("--enable-$feature")
  done
  "$WASM_OPT_BIN" "$file" -O "$@" --strip-producers "${features[@]}" -o "$file.opt"
  mv "$file.opt" "$file"
}
