#!/usr/bin/env bash
# What `wrangler dev`'s bindings and bundling add to a cold start: lab Workers started by bench/coldstart.sh beside
# Clubhouse and the JS baseline, in the same run.
#
#   bash bench/probes/binding_cost.sh [--repeats N]     (default 7; uses the existing build/, never rebuilds)
#
# Lab Workers (written to a temp dir):
#   js-plain       a JS module answering a JSON 404, no bindings
#   js-asset-tiny  the same with `[assets]` (run_worker_first) over a folder of one small file
#   js-asset-full  the same with `[assets]` over a copy of build/assets (the page, the API documents, Swagger UI)
#   ch-bundled     Clubhouse's build/ under the repo's wrangler.toml without [build], its assets beside build/
#   ch-no-bundle   the same with `no_bundle = true` (wrangler takes build/ as it is, no esbuild pass)
# tiny against full tells whether the assets binding's cost grows with the files; bundled against no-bundle what
# the bundling step costs. GET /nope touches no binding, so the D1 of the ch-* Workers is left unmigrated.
set -euo pipefail
WORK_PREFIX=clubhouse-binding-cost
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

REPEATS=7
while [ $# -gt 0 ]; do
  case "$1" in
    --repeats) REPEATS="$2"; shift ;;
    *) other_arg "$1" ;;
  esac
  shift
done
[ -f "$REPO_ROOT/build/entry.mjs" ] || die "build/ missing: run bash scripts/build once"

js_worker() {  # js_worker NAME [ASSET_SOURCE]: ASSET_SOURCE a folder to serve, or "tiny"
  local dir="$WORK/$1"
  mkdir -p "$dir"
  cat > "$dir/index.js" <<'JS'
export default {
  async fetch() {
    return new Response(JSON.stringify({ detail: "Not Found" }), {
      status: 404,
      headers: { "content-type": "application/json" },
    });
  },
};
JS
  printf 'name = "%s"\nmain = "index.js"\ncompatibility_date = "2025-09-01"\n' "$1" > "$dir/wrangler.toml"
  [ $# -gt 1 ] || return 0
  if [ "$2" = tiny ]; then mkdir -p "$dir/assets" && echo hi > "$dir/assets/index.html"; else cp -r "$2" "$dir/assets"; fi
  printf '[assets]\ndirectory = "assets"\nbinding = "ASSETS"\nrun_worker_first = true\n' >> "$dir/wrangler.toml"
}

clubhouse_worker() {  # clubhouse_worker NAME [no-bundle]
  local dir="$WORK/$1"
  mkdir -p "$dir/build"
  ( cd "$REPO_ROOT/build" && cp entry.mjs index.js index_bg.wasm package.json "$dir/build/" )
  cp -r "$REPO_ROOT/build/assets" "$dir/assets"
  awk -v root="$REPO_ROOT" '
    /^\[build\]/ { skip = 1; next }
    /^\[/ { skip = 0 }
    skip { next }
    /^directory *=/ { print "directory = \"assets\""; next }
    /^migrations_dir *=/ { print "migrations_dir = \"" root "/migrations\""; next }
    { print }
  ' "$REPO_ROOT/wrangler.toml" > "$dir/wrangler.toml"
  if [ "${2:-}" = no-bundle ]; then
    # build/index.js is already one esbuild bundle; wrangler takes .js as ESM only by this rule.
    sed -i 's/^compatibility_date = .*/&\nno_bundle = true/' "$dir/wrangler.toml"
    printf '\n[[rules]]\ntype = "ESModule"\nglobs = ["**/*.js"]\n' >> "$dir/wrangler.toml"
  fi
  printf 'JWT_SECRET=%s\n' "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" > "$dir/.dev.vars"
}

js_worker js-plain
js_worker js-asset-tiny tiny
js_worker js-asset-full "$REPO_ROOT/build/assets"
clubhouse_worker ch-bundled
clubhouse_worker ch-no-bundle no-bundle

workers=()
for w in js-plain js-asset-tiny js-asset-full ch-bundled ch-no-bundle; do workers+=(--worker "$WORK/$w"); done
bash "$REPO_ROOT/bench/coldstart.sh" --repeats "$REPEATS" "${workers[@]}"
