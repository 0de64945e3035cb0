#!/usr/bin/env bash
# Memory of the Worker's workerd under a stream of plain HTTP requests, Clubhouse vs the JS baseline.
#
#   bash bench/probes/request_memory.sh [--requests N] [--steps S] [--path /nope] [--heap | --alone]
#                                                                        (defaults 32000, 8, /nope)
#
# Starts both under `wrangler dev` (Clubhouse with LOG_LEVEL=error, so no log lines are involved), sends N requests
# to PATH (16 in flight) in S steps and prints VmRSS of each Worker's workerd after every step, then again after 30 s
# idle. A steady climb that idling does not give back means the isolate keeps something per request.
# With --heap, each step also takes a heap snapshot of both isolates (inspector; it collects garbage first) and
# prints their live JS heap (KB):
# flat live heap under a climbing RSS is garbage or native memory not yet reclaimed, not objects kept alive.
# HEAP_SNAPSHOT=1 with --heap ends with the constructors holding Clubhouse's heap (bench/probes/tools/heap.mjs).
# --alone: each server on its own, all N requests without a pause (Clubhouse first, then the baseline), printing
# its resident memory per step, then its JS heap (V8's figure in use, and the live objects of a heap snapshot, which
# collects garbage first) and its resident memory after that collection.
set -euo pipefail
WORK_PREFIX=clubhouse-reqmem
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

REQUESTS=32000 STEPS=8 REQ_PATH=/nope HEAP=0 ALONE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) REQUESTS="$2"; shift ;;
    --steps) STEPS="$2"; shift ;;
    --path) REQ_PATH="$2"; shift ;;
    --heap) HEAP=1 ;;
    --alone) ALONE=1 ;;
    *) other_arg "$1" ;;
  esac
  shift
done

cat > "$WORK/hammer.mjs" <<'JS'
const [url, n] = process.argv.slice(2);
let sent = 0;
async function lane() { while (sent < +n) { sent++; const r = await fetch(url); await r.arrayBuffer(); } }
await Promise.all(Array.from({ length: 16 }, lane));
JS

rss() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }

prepare_clubhouse clubhouse
prepare_baseline baseline
spawn_clubhouse clubhouse "LOG_LEVEL:error"; wait_http; CLUB_URL="$SERVER_URL"; workerd_pids "$SERVER_PID" "$SERVER_PORT"; CLUB_W="$WORKER_PID"
CLUB_INSPECTOR="$SERVER_INSPECTOR"
spawn_server baseline "$BASE_DIR" "$BASE_WRANGLER"; wait_http; BASE_URL="$SERVER_URL"; workerd_pids "$SERVER_PID" "$SERVER_PORT"; BASE_W="$WORKER_PID"
BASE_INSPECTOR="$SERVER_INSPECTOR"
[ -n "$CLUB_W" ] && [ -n "$BASE_W" ] || die "could not find the Worker processes"

# heap_kb INSPECTOR_PORT: "USED LIVE" (KB, summed over the isolate's inspector targets): V8's heap in use
# (Runtime.getHeapUsage), then the live objects of a heap snapshot, taken after the snapshot's full GC. The two are
# counted differently (a snapshot counts objects' own sizes), so compare each with itself over time.
heap_kb() {
  node "$BENCH_DIR/probes/tools/heap.mjs" "$1" usage | awk '
    { match($0, /"used":[0-9]+/); u += substr($0, RSTART + 7, RLENGTH - 7)
      match($0, /"live":[0-9]+/); l += substr($0, RSTART + 7, RLENGTH - 7) }
    END { printf "%d %d", u / 1024, l / 1024 }'
}
live_heap() { heap_kb "$1" | cut -d' ' -f2; }
row() {  # row LABEL
  if [ "$HEAP" = 1 ]; then
    printf '%10s %16s %16s %16s %16s\n' "$1" "$(rss "$CLUB_W")" "$(rss "$BASE_W")" "$(live_heap "$CLUB_INSPECTOR")" "$(live_heap "$BASE_INSPECTOR")"
  else
    printf '%10s %16s %16s\n' "$1" "$(rss "$CLUB_W")" "$(rss "$BASE_W")"
  fi
}

per_step=$((REQUESTS / STEPS))
if [ "$ALONE" = 1 ]; then
  # alone SIDE URL PID INSPECTOR
  alone() {
    local name="$1" url="$2" pid="$3" insp="$4" step used live
    printf '%s: %s KB at the start\n' "$name" "$(rss "$pid")"
    for step in $(seq 1 "$STEPS"); do
      node "$WORK/hammer.mjs" "$url$REQ_PATH" "$per_step"
      printf '%s: %s KB after %s requests\n' "$name" "$(rss "$pid")" $((step * per_step))
    done
    read -r used live <<<"$(heap_kb "$insp")"
    printf '%s: JS heap in use %s KB (V8), live in a heap snapshot %s KB (after its full GC); %s KB resident after it\n' \
      "$name" "$used" "$live" "$(rss "$pid")"
  }
  alone clubhouse "$CLUB_URL" "$CLUB_W" "$CLUB_INSPECTOR"
  alone baseline "$BASE_URL" "$BASE_W" "$BASE_INSPECTOR"
  exit 0
fi
if [ "$HEAP" = 1 ]; then
  printf '%10s %16s %16s %16s %16s\n' requests "clubhouse KB" "baseline KB" "club heap KB" "base heap KB"
else
  printf '%10s %16s %16s\n' requests "clubhouse KB" "baseline KB"
fi
row 0
for step in $(seq 1 "$STEPS"); do
  node "$WORK/hammer.mjs" "$CLUB_URL$REQ_PATH" "$per_step"
  node "$WORK/hammer.mjs" "$BASE_URL$REQ_PATH" "$per_step"
  row $((step * per_step))
done
sleep 30
row "idle 30 s"
if [ "$HEAP" = 1 ] && [ "${HEAP_SNAPSHOT:-0}" = 1 ]; then
  node "$BENCH_DIR/probes/tools/heap.mjs" "$CLUB_INSPECTOR" snapshot 30
fi
