#!/usr/bin/env bash
# A cold start without wrangler: workerd (the one wrangler dev runs) started directly on a minimal config per
# Worker, to split a first response into what the Worker itself costs and what `wrangler dev` adds around it.
#
#   bash bench/probes/workerd_coldstart.sh [--repeats N] [--old DIR]    (default 9; uses the existing build/)
#
# Workers, started alternately (order reversed every other repeat), each N times: a JS Worker that answers 404
# (js-floor), the workers-rs floor (bench/floor-rs: built first by its build.sh if bench/floor-rs/build is
# missing), the floor with Clubhouse's WASM imported beside its own but never instantiated (floor+ch.wasm: what
# compiling the module costs), Clubhouse's build/ and, with --old, a saved build/ DIR. Only the Worker itself, no
# bindings (Clubhouse's /nope touches none), so no Durable Objects, D1 or assets services.
# Per start (bench/tools/workerd_coldstart.mjs): spawn -> the port accepts (workerd listens once every module is
# compiled and evaluated, so this holds the WASM compile, instantiation and the wasm-bindgen start) and the CPU
# workerd used by then (all threads, /proc/PID/task/*/schedstat); then GET /nope twice, wall and CPU each: the first
# holds V8 compiling (lazily, function by function) what the request runs. Prints medians.
# Environment: KEEP_WORK=1 keeps the temp dir.
set -euo pipefail
WORK_PREFIX=clubhouse-workerd-coldstart
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

REPEATS=9
OLD_BUILD=
while [ $# -gt 0 ]; do
  case "$1" in
    --repeats) REPEATS="$2"; shift ;;
    --old) OLD_BUILD="$(cd "$2" && pwd)"; shift ;;
    *) other_arg "$1" ;;
  esac
  shift
done
WORKERD="$REPO_ROOT/node_modules/@cloudflare/workerd-linux-64/bin/workerd"
[ -x "$WORKERD" ] || die "$WORKERD missing (bash scripts/setup)"
[ -f "$REPO_ROOT/build/index_bg.wasm" ] || die "build/ missing (bash scripts/build)"
FLOOR_BUILD="$BENCH_DIR/floor-rs/build"
[ -f "$FLOOR_BUILD/index_bg.wasm" ] || bash "$BENCH_DIR/floor-rs/build.sh"

# worker_config NAME BUILD_DIR [WASM]: $WORK/NAME/config.capnp running BUILD_DIR's index.js (behind its entry.mjs if
# it has one) and index_bg.wasm; WASM, if given, is imported too and kept reachable, never instantiated.
worker_config() {
  local name="$1" build="$2" extra="${3:-}" dir="$WORK/$1" main=index.js
  mkdir -p "$dir"
  cp "$build/index.js" "$build/index_bg.wasm" "$dir/"
  [ -f "$build/entry.mjs" ] && cp "$build/entry.mjs" "$dir/" && main=entry.mjs
  local modules="(name = \"$main\", esModule = embed \"$main\")"
  [ "$main" = entry.mjs ] && modules="$modules, (name = \"index.js\", esModule = embed \"index.js\")"
  modules="$modules, (name = \"index_bg.wasm\", wasm = embed \"index_bg.wasm\")"
  if [ -n "$extra" ]; then
    cp "$extra" "$dir/extra.wasm"
    sed -i '1s/^/import extraWasm from ".\/extra.wasm"; globalThis.extraWasm = extraWasm;\n/' "$dir/index.js"
    modules="$modules, (name = \"extra.wasm\", wasm = embed \"extra.wasm\")"
  fi
  write_config "$dir" "$modules"
}
write_config() {  # write_config DIR MODULES: one service on a socket the probe overrides (--socket-addr)
  local compat
  compat="$(awk -F'"' '/^compatibility_date/ { print $2 }' "$REPO_ROOT/wrangler.toml")"
  cat > "$1/config.capnp" <<CAPNP
using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "main", worker = .worker)],
  sockets = [(name = "http", address = "127.0.0.1:0", http = (), service = "main")],
);
const worker :Workerd.Worker = (
  modules = [$2],
  compatibilityDate = "$compat",
  bindings = [(name = "LOG_LEVEL", text = "error")],
);
CAPNP
}

mkdir -p "$WORK/js-floor"
cat > "$WORK/js-floor/index.mjs" <<'JS'
export default {
  async fetch() {
    return new Response(JSON.stringify({ detail: "Not Found" }), { status: 404, headers: { "content-type": "application/json" } });
  },
};
JS
write_config "$WORK/js-floor" '(name = "index.mjs", esModule = embed "index.mjs")'
worker_config rs-floor "$FLOOR_BUILD"
worker_config floor+ch.wasm "$FLOOR_BUILD" "$REPO_ROOT/build/index_bg.wasm"
worker_config clubhouse "$REPO_ROOT/build"
variants=(js-floor rs-floor floor+ch.wasm clubhouse)
[ -n "$OLD_BUILD" ] && worker_config old "$OLD_BUILD" && variants+=(old)

log "load average before: $(loadavg)"
node "$BENCH_DIR/tools/workerd_coldstart.mjs" "$WORKERD" "$REPEATS" "${variants[@]/#/$WORK/}"
log "load average after: $(loadavg)"
