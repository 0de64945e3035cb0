#!/usr/bin/env bash
# Where the Worker's workerd process spends its CPU per connection (or, with --phase messages, per delivered
# message), native code included: starts Clubhouse (or, with --baseline, the JS baseline) under `wrangler dev`,
# warms it with one unmeasured load run, then records the workerd that runs the Worker with `perf` from the moment
# a second run starts connecting until all its sockets are open (with --through-settle: until the servers are idle
# again, the deferred work of the connects included; with --phase messages: from the first send to the last
# delivery; the window is cut by wall-clock stamps, as perf attaches too slowly to start at "connecting"), and
# splits the samples by the runtime API they were spent under (bench/probes/tools/perf_by_api.py).
#
#   bash bench/probes/native_profile.sh [--baseline] [--phase connect|messages] [--hz F] [--out FILE] [--through-settle]
#                                [--innermost] [-- BENCH ARGS...]
#   --innermost: each sample under the innermost runtime API on its stack (bench/probes/tools/perf_by_api.py --innermost)
#   default load: --clients 1000 --rooms 50 --senders 1 --messages 10 (connect),
#                 --clients 1000 --rooms 50 --senders 50 --messages 100 --window 1 (messages: 50 rooms x 20)
#
# bench/probes/profile.sh sees only JS and WASM inside the isolate; this sees the whole process (subrequests, SQLite
# commits, WebSocket plumbing, GC), which is where most of a connection's cost is. Clubhouse runs with the limits
# a load test must lift and LOG_LEVEL=error (CLUBHOUSE_EXTRA_VARS adds more). Needs `perf` (linux-tools) with
# perf_event_paranoid <= 2, build/ (bash scripts/build) and the release load tool. Not a benchmark: one run, and
# the profiler costs CPU; use bench/run.sh for figures.
set -euo pipefail
WORK_PREFIX=clubhouse-native-profile
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

SIDE=clubhouse HZ=4999 OUT="" PHASE=connect FROM=connecting UNTIL=connected BY_API=()
BENCH_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline) SIDE=baseline ;;
    --phase) PHASE="$2"; shift ;;
    --hz) HZ="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --through-settle) UNTIL="senders x" ;;
    --innermost) BY_API=(--innermost) ;;
    --) shift; BENCH_ARGS=("$@"); break ;;
    *) other_arg "$1" ;;
  esac
  shift
done
case "$PHASE" in
  connect) [ ${#BENCH_ARGS[@]} -gt 0 ] || BENCH_ARGS=(--clients 1000 --rooms 50 --senders 1 --messages 10) ;;
  messages)
    FROM="senders x" UNTIL="all sent"
    [ ${#BENCH_ARGS[@]} -gt 0 ] || BENCH_ARGS=(--clients 1000 --rooms 50 --senders 50 --messages 100 --window 1) ;;
  *) die "--phase is connect or messages" ;;
esac
command -v perf >/dev/null || die "perf is not installed (linux-tools)"
load_tool
OUT="${OUT:-${TMPDIR:-/tmp}/clubhouse-native-$SIDE-$PHASE.perf}"

spawn_profiled "$SIDE"
wait_http
workerd_pids "$SERVER_PID" "$SERVER_PORT"
[ -n "$WORKER_PID" ] || die "no workerd running the Worker found"
log "$SIDE on $SERVER_URL, Worker workerd pid $WORKER_PID; warm-up run"
# WARM_ARGS="..." replaces the warm-up's load (say, the scenarios bench/run.sh runs before this one).
read -r -a WARM <<< "${WARM_ARGS:-${BENCH_ARGS[*]}}"
warm_up "${WARM[@]}"

log "measured run: perf from \"getting tokens\"; samples kept from \"$FROM\" to \"$UNTIL\""
# perf takes a moment to attach, longer than a burst of 100 connects lasts: it starts during the token phase
# and stamps samples with the wall clock, so the window is cut from the samples afterwards (perf script --time).
PERF_PID_FILE="$WORK/perf.pid" WINDOW_FILE="$WORK/window"
: > "$WINDOW_FILE"
"$BIN" -v --url "$SERVER_URL" --server-port "$SERVER_PORT" "${BENCH_ARGS[@]}" 2>&1 >"$WORK/bench.txt" \
  | while IFS= read -r line; do
      printf '%s\n' "$line" >&2
      case "$line" in
        *"getting tokens"*)
          perf record -F "$HZ" -g -k CLOCK_REALTIME -p "$WORKER_PID" -o "$OUT" >"$WORK/perf.log" 2>&1 &
          echo $! > "$PERF_PID_FILE" ;;
        *"$FROM"*) date +%s.%N >> "$WINDOW_FILE" ;;
        *"$UNTIL"*)
          date +%s.%N >> "$WINDOW_FILE"
          if [ -f "$PERF_PID_FILE" ]; then kill -INT "$(cat "$PERF_PID_FILE")"; fi ;;
      esac
    done
[ -f "$PERF_PID_FILE" ] || die "the run never reached \"getting tokens\""
[ "$(wc -l < "$WINDOW_FILE")" -ge 2 ] || die "the run never reached \"$UNTIL\""
for _ in $(seq 1 100); do kill -0 "$(cat "$PERF_PID_FILE")" 2>/dev/null || break; sleep 0.1; done
grep -E '^ *(connect|run) *:' "$WORK/bench.txt" || true
if [ "$PHASE" = messages ]; then
  UNITS="$(sed -nE 's/^ *run *: .*delivered ([0-9]+).*/\1/p' "$WORK/bench.txt" | head -1)" UNIT=delivery
else
  UNITS="$(sed -nE 's/^ *connect: ok ([0-9]+).*/\1/p' "$WORK/bench.txt" | head -1)" UNIT=connection
fi
[ -n "$UNITS" ] && [ "$UNITS" -gt 0 ] || die "no ${UNIT} in the run"
WINDOW="$(head -1 "$WINDOW_FILE"),$(sed -n 2p "$WINDOW_FILE")"
perf script -i "$OUT" --time "$WINDOW" 2>/dev/null > "$WORK/perf.txt"
python3 "$BENCH_DIR/probes/tools/perf_by_api.py" "$WORK/perf.txt" "$HZ" "$UNITS" "$UNIT" "${BY_API[@]+"${BY_API[@]}"}"
log "raw profile: $OUT (the window's samples: perf script -i $OUT --time $WINDOW)"
