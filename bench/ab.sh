#!/usr/bin/env bash
# Two builds of Clubhouse side by side, for a change whose effect is smaller than the noise between runs: starts the
# current build/ (A) and a saved copy of another build (B) under `wrangler dev`, each with its own port and state,
# and runs bench/run.sh --urls against both, alternating, so the table's ratios are A/B (new/old) in one run.
#
#   cp -r build /tmp/build-old        # at the old commit, after bash scripts/build
#   ...change, bash scripts/build...
#   bash bench/ab.sh /tmp/build-old [run.sh options, e.g. --scenarios rooms50 --repeats 4]
#
# Both get the limits a load test must lift (the same --var flags as bench/run.sh). The JS baseline is not run.
# Check the machinery with the same build on both sides first (bash bench/ab.sh build ...): an A/A run reads up
# to 1.08x on some figures (bench/RESULTS.md), so treat A/B ratios within about +-5% (more for tails) as no change.
set -euo pipefail
WORK_PREFIX=clubhouse-ab
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  ""|-*) die "usage: bash bench/ab.sh OLD_BUILD_DIR [bench/run.sh options]" ;;
esac
OLD_BUILD="$1"; shift
# --explorer (run.sh's option) must reach the servers, which start here.
for a in "$@"; do [ "$a" = --explorer ] && export X_LOCAL_EXPLORER=true; done

prepare_clubhouse new
spawn_clubhouse new "$LOAD_TEST_VARS"
wait_http
URL_NEW="$SERVER_URL"
BUILD_FROM="$OLD_BUILD" prepare_clubhouse old
spawn_clubhouse old "$LOAD_TEST_VARS"
wait_http
URL_OLD="$SERVER_URL"
log "A (build/) on $URL_NEW, B ($OLD_BUILD) on $URL_OLD"
bash "$BENCH_DIR/run.sh" --urls "$URL_NEW" "$URL_OLD" "$@"
