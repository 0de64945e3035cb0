#!/usr/bin/env bash
# kill -9 durability: bursts from several senders in several rooms, SIGKILL of the Worker's workerd at a random
# moment, wrangler dev started again on the same --persist-to folder; checks that every acknowledged (echoed)
# message is in history exactly once with its id, that ids are never reused, that clients reconnecting with
# `since` and `rev` get exactly the room's history, and that a logout answered 200 stays in force.
#   bash bench/crash.sh                       20 kills, 3 rooms x 3 senders, window 4
#   bash bench/crash.sh --kills 5 --rooms 2 --senders 4 --seed 7
# Any option of bench/tools/crash.py (--help lists them). Uses build/ as it is (bash scripts/build first) and
# Python's `websockets` (python3 -m pip install -r bench/tools/requirements.txt if missing). Output: progress on stderr, a summary and one
# JSON line on stdout; exit status 1 if anything acknowledged was lost or anything else did not hold.
set -euo pipefail
WORK_PREFIX=clubhouse-crash
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for a in "$@"; do [ "$a" = -h ] || [ "$a" = --help ] && { usage; python3 "$BENCH_DIR/tools/crash.py" --help; exit 0; }; done
python3 -c 'import websockets' 2>/dev/null || die "python3 -m pip install -r bench/tools/requirements.txt"
prepare_clubhouse crash
vars=()
for kv in $LOAD_TEST_VARS LOG_LEVEL:warn; do vars+=(--var "$kv"); done
python3 "$BENCH_DIR/tools/crash.py" --wrangler "$WRANGLER" --cfgdir "$CH_CFGDIR" --state "$CH_STATE" \
  --work "$WORK" "${vars[@]}" "$@"
