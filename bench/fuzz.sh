#!/usr/bin/env bash
# Malformed WebSocket frames (bad JSON, wrong and unknown types, huge, deeply nested, raw control characters,
# invalid UTF-8, binary) and raw HTTP garbage (bad methods, paths, versions and headers, wrong content types, bodies
# that do not match or are cut short) against a local server; summary: frames, error frames, sockets lost, anything
# accepted or broadcast; requests, 5xx, statuses.
#   bash bench/fuzz.sh                          2400 frames, 2400 requests
#   bash bench/fuzz.sh --frames 5000 --requests 5000 --seed 7
# Uses build/ as it is (bash scripts/build first) and Python's `websockets` (python3 -m pip install -r bench/tools/requirements.txt if missing).
# Exit status 1 on any finding (listed as FINDING lines).
set -euo pipefail
WORK_PREFIX=clubhouse-fuzz
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for a in "$@"; do [ "$a" = -h ] || [ "$a" = --help ] && { usage; python3 "$BENCH_DIR/tools/fuzz.py" --help; exit 0; }; done
python3 -c 'import websockets' 2>/dev/null || die "python3 -m pip install -r bench/tools/requirements.txt"
prepare_clubhouse fuzz
vars=()
for kv in $LOAD_TEST_VARS LOG_LEVEL:warn; do vars+=(--var "$kv"); done
python3 "$BENCH_DIR/tools/fuzz.py" --wrangler "$WRANGLER" --cfgdir "$CH_CFGDIR" --state "$CH_STATE" \
  --work "$WORK" "${vars[@]}" "$@"
