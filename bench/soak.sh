#!/usr/bin/env bash
# A long soak with churn: sockets over rooms for a long time, 10 % of the sockets replaced every minute, logouts,
# private-room membership changes, a steady stream of messages. Reports delivered/expected, lost, duplicated, p50/p99
# latency, server-initiated closes (each announced by a `closing` frame within 2 s) and the Worker's workerd RSS every
# minute, and how much of it is the WASM linear memory (growth per 10,000 messages after a 2-minute warm-up).
#   bash bench/soak.sh                                   1000 sockets, 20 rooms, 30 min, 20 msg/s (not in CI)
#   bash bench/soak.sh --sockets 200 --minutes 3         a short run
#   bash bench/soak.sh --baseline                        the same steady load and churn against the JS baseline
#                                                        (no private rooms or logouts: it has none), for its memory
# Options (bench/tools/soak.py --help): --sockets --rooms --minutes --users --rate --churn --logouts-per-min
# --member-changes-per-min --private-rooms --seed. Uses build/ as it is (bash scripts/build first) and Python's
# `websockets` (python3 -m pip install -r bench/tools/requirements.txt). Exit status 1 if anything was lost,
# duplicated, or a close was not announced in time.
set -euo pipefail
WORK_PREFIX=clubhouse-soak
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for a in "$@"; do [ "$a" = -h ] || [ "$a" = --help ] && { usage; python3 "$BENCH_DIR/tools/soak.py" --help; exit 0; }; done
python3 -c 'import websockets' 2>/dev/null || die "python3 -m pip install -r bench/tools/requirements.txt"
if [[ " $* " == *" --baseline "* ]]; then
  prepare_baseline soak
  python3 "$BENCH_DIR/tools/soak.py" --wrangler "$BASE_WRANGLER" --cfgdir "$BASE_DIR" --state "$WORK/state-soak" \
    --work "$WORK" "$@"
else
  prepare_clubhouse soak
  vars=()
  for kv in $LOAD_TEST_VARS LOG_LEVEL:warn; do vars+=(--var "$kv"); done
  python3 "$BENCH_DIR/tools/soak.py" --wrangler "$WRANGLER" --cfgdir "$CH_CFGDIR" --state "$CH_STATE" \
    --work "$WORK" "${vars[@]}" "$@"
fi
