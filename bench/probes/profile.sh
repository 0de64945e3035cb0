#!/usr/bin/env bash
# Where a Worker isolate spends its time during one phase of a load run: starts Clubhouse (or, with
# --baseline, the JS baseline) under `wrangler dev`, runs clubhouse-bench against it, and takes a V8
# CPU profile of the isolate (bench/probes/tools/cpuprofile.mjs over the inspector port) from the moment
# the load tool reaches the phase.
#
#   bash bench/probes/profile.sh [--baseline] [--phase connect|messages] [--seconds S] [--warm] [--out FILE] [-- BENCH ARGS...]
#   e.g. bash bench/probes/profile.sh --phase connect --seconds 1.5 -- --clients 100 --rooms 1 --senders 1 --messages 300
#
# --warm: one unmeasured run of the load tool first (with WARM_ARGS="..." if set, else the same load), so
# the profile shows code the isolate has already compiled and tiered up, as in bench/run.sh's later
# scenarios, rather than a cold isolate.
# Clubhouse runs with the limits a load test must lift and LOG_LEVEL=error (CLUBHOUSE_EXTRA_VARS adds
# more). Not a benchmark: the profiler itself costs CPU; use it to see which functions matter, and
# bench/run.sh for figures. Needs build/ (bash scripts/build) and the release load tool.
set -euo pipefail
WORK_PREFIX=clubhouse-profile
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

SIDE=clubhouse PHASE=messages SECONDS_TO_PROFILE=2 OUT="" WARM=0
BENCH_ARGS=(--clients 100 --rooms 1 --senders 1 --messages 1000 --window 8)
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline) SIDE=baseline ;;
    --phase) PHASE="$2"; shift ;;
    --seconds) SECONDS_TO_PROFILE="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --warm) WARM=1 ;;
    --) shift; BENCH_ARGS=("$@"); break ;;
    *) other_arg "$1" ;;
  esac
  shift
done
case "$PHASE" in
  connect) TRIGGER="connecting" ;;
  messages) TRIGGER="senders x" ;;
  *) die "--phase is connect or messages" ;;
esac
load_tool
OUT="${OUT:-${TMPDIR:-/tmp}/clubhouse-profile-$SIDE-$PHASE.json}"
mkdir -p "$(dirname "$OUT")"

spawn_profiled "$SIDE"
wait_http
INSPECTOR_PORT="$(ps -o args= -p "$SERVER_PID" | grep -o -- '--inspector-port [0-9]*' | awk '{ print $2 }')"
[ -n "$INSPECTOR_PORT" ] || die "no --inspector-port on the server's command line"
if [ "$WARM" = 1 ]; then
  log "warm-up run"
  if [ -n "${WARM_ARGS:-}" ]; then read -r -a WARM_LOAD <<<"$WARM_ARGS"; else WARM_LOAD=("${BENCH_ARGS[@]}"); fi
  warm_up "${WARM_LOAD[@]}"
fi
log "$SIDE on $SERVER_URL, inspector $INSPECTOR_PORT; profiling $SECONDS_TO_PROFILE s from \"$TRIGGER\""

GO="$WORK/go"
node "$BENCH_DIR/probes/tools/cpuprofile.mjs" "$INSPECTOR_PORT" "$SECONDS_TO_PROFILE" "$OUT" "$GO" > "$WORK/summary.txt" &
PROFILER=$!
# The load tool's progress lines (stderr, -v) mark the phases; the summary (stdout) is kept.
"$BIN" -v --url "$SERVER_URL" --server-port "$SERVER_PORT" "${BENCH_ARGS[@]}" 2>&1 >"$WORK/bench.txt" \
  | while IFS= read -r line; do
      printf '%s\n' "$line" >&2
      case "$line" in *"$TRIGGER"*) touch "$GO" ;; esac
    done
touch "$GO" # the phase never came (e.g. --messages 0): profile whatever is left rather than hang
wait "$PROFILER"
grep -E '^(connect|run|cpu) ' "$WORK/bench.txt" || true
cat "$WORK/summary.txt"
log "raw profile: $OUT (Chrome DevTools → Performance → Load profile)"
