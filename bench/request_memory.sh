#!/usr/bin/env bash
# Memory of the Worker's workerd under a stream of plain HTTP requests, Clubhouse vs the JS baseline.
#
#   bash bench/request_memory.sh [--requests N] [--steps S] [--path /nope]     (defaults 32000, 8, /nope)
#
# Starts both under `wrangler dev` (Clubhouse with LOG_LEVEL=error, so no log lines are involved), sends N requests
# to PATH (16 in flight) in S steps and prints VmRSS of each Worker's workerd after every step, then again after 30 s
# idle. A steady climb that idling does not give back means the isolate keeps something per request.
set -euo pipefail
WORK_PREFIX=clubhouse-reqmem
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=32000 STEPS=8 REQ_PATH=/nope
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) REQUESTS="$2"; shift ;;
    --steps) STEPS="$2"; shift ;;
    --path) REQ_PATH="$2"; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
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
spawn_server baseline "$BASE_DIR" "$BASE_WRANGLER"; wait_http; BASE_URL="$SERVER_URL"; workerd_pids "$SERVER_PID" "$SERVER_PORT"; BASE_W="$WORKER_PID"
[ -n "$CLUB_W" ] && [ -n "$BASE_W" ] || die "could not find the Worker processes"

per_step=$((REQUESTS / STEPS))
printf '%10s %16s %16s\n' requests "clubhouse KB" "baseline KB"
printf '%10s %16s %16s\n' 0 "$(rss "$CLUB_W")" "$(rss "$BASE_W")"
for step in $(seq 1 "$STEPS"); do
  node "$WORK/hammer.mjs" "$CLUB_URL$REQ_PATH" "$per_step"
  node "$WORK/hammer.mjs" "$BASE_URL$REQ_PATH" "$per_step"
  printf '%10s %16s %16s\n' $((step * per_step)) "$(rss "$CLUB_W")" "$(rss "$BASE_W")"
done
sleep 30
printf '%10s %16s %16s\n' "idle 30 s" "$(rss "$CLUB_W")" "$(rss "$BASE_W")"
