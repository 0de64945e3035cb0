#!/usr/bin/env bash
# What wrangler's local data explorer costs one server: starts the same server twice side by side, A without the
# explorer and B with it (X_LOCAL_EXPLORER=false / true), runs bench/run.sh --urls against both (ratios A/B), then
# counts, in each server's state, the objects whose SQLite database holds the explorer wrapper's table
# (__miniflare_do_name): none for A, every named object B started for B.
#
#   bash bench/explorer_ab.sh clubhouse|baseline [run.sh options, e.g. --scenarios rooms50 --repeats 6]
#
# Clubhouse runs build/ as it is (bash scripts/build first) with the limits a load test must lift. See lib.sh and
# bench/RESULTS.md, round 13.
set -euo pipefail
WORK_PREFIX=clubhouse-explorer-ab
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIDE="${1:-}"; shift || true
case "$SIDE" in
  clubhouse)
    prepare_clubhouse without
    X_LOCAL_EXPLORER=false spawn_clubhouse without "$LOAD_TEST_VARS"; URL_A="$SERVER_URL"; wait_http
    prepare_clubhouse with
    X_LOCAL_EXPLORER=true spawn_clubhouse with "$LOAD_TEST_VARS"; URL_B="$SERVER_URL"; wait_http ;;
  baseline)
    prepare_baseline without
    X_LOCAL_EXPLORER=false spawn_server without "$BASE_DIR" "$BASE_WRANGLER"; URL_A="$SERVER_URL"; wait_http
    prepare_baseline with
    X_LOCAL_EXPLORER=true spawn_server with "$BASE_DIR" "$BASE_WRANGLER"; URL_B="$SERVER_URL"; wait_http ;;
  *) die "usage: bash bench/explorer_ab.sh clubhouse|baseline [run.sh options]" ;;
esac
log "A (explorer off) on $URL_A, B (explorer on) on $URL_B"
# The mode differs by side, so run.sh records none (null).
env -u X_LOCAL_EXPLORER bash "$BENCH_DIR/run.sh" --urls "$URL_A" "$URL_B" "$@"

for name in without with; do
  n=0
  while IFS= read -r db; do
    python3 - "$db" <<'PY' && n=$((n + 1))
import sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
sys.exit(0 if db.execute("SELECT 1 FROM sqlite_master WHERE name = '__miniflare_do_name'").fetchone() else 1)
PY
  done < <(find "$WORK/state-$name.run" -path '*/do/*' -name '*.sqlite' ! -name metadata.sqlite)
  echo "$name explorer: $n objects hold __miniflare_do_name"
done
