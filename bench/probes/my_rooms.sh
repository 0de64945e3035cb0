#!/usr/bin/env bash
# Latency of `GET /me/rooms` for a user in 200 rooms (50 DMs, 50 private rooms, 100 joined public rooms), each with
# a message from someone else, against one local `wrangler dev` of the current build.
#
#   bash bench/probes/my_rooms.sh [--rooms N] [--requests R]     (defaults N=200, R=200; uses the existing build/)
#
# Sets the rooms up over the API (bench/probes/tools/my_rooms.mjs), checks that every room is listed with its last
# message and one unread, then times R sequential requests of the first page (50 rooms; the query sorts all N) and
# R walks of every page. Prints p50/p99/max in milliseconds, client-side, over a warm keep-alive connection.
# Environment: KEEP_WORK=1 keeps the temp dir.
set -euo pipefail
WORK_PREFIX=clubhouse-myrooms
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

ROOMS=200 REQUESTS=200
while [ $# -gt 0 ]; do
  case "$1" in
    --rooms) ROOMS="$2"; shift ;;
    --requests) REQUESTS="$2"; shift ;;
    *) other_arg "$1" ;;
  esac
  shift
done
log "load average before: $(loadavg)"
prepare_clubhouse clubhouse
spawn_clubhouse ch "SIGNUP_MAX_PER_IP:1000000 LOGIN_MAX_FAILURES_PER_IP:1000000 LOG_LEVEL:warn ARGON2_M_KIB:1024 ARGON2_T:1"
wait_http
node "$REPO_ROOT/bench/probes/tools/my_rooms.mjs" "$SERVER_URL" --rooms "$ROOMS" --requests "$REQUESTS"
log "load average after: $(loadavg)"
