#!/usr/bin/env bash
# Side-by-side benchmark: Clubhouse (A) vs the JavaScript Durable Object baseline (B) and the JavaScript relay floor
# (C, shared/peers/js-floor: a room that only relays frames), same scenarios, alternating A B C / C B A for N
# repeats, then a table of A/B and A/C ratios (median of the per-repeat ratios). See bench/README.md.
#
#   bash bench/run.sh                              start Clubhouse + baseline under wrangler dev, run everything
#   bash bench/run.sh --baseline-only              two baseline instances (A = B: ratios should be ~1.0)
#   bash bench/run.sh --urls http://127.0.0.1:9001 http://127.0.0.1:9002   servers already running
#   bash bench/run.sh --repeats 5 --scenarios room100,login --out /tmp/r.json --quick
#
# Options:
#   --baseline-only        A is a second baseline instance instead of Clubhouse
#   --urls A B             use running servers (CPU is read from the processes on each URL's port, if local)
#   --repeats N            repeats per scenario (default 3)
#   --scenarios LIST       comma list of room100,room100b,room1000,room1000b,rooms50,solo,paced,login (default: all),
#                          or custom; room100b/room1000b are room100/room1000 with batched delivery (--batch: the
#                          servers without batches ignore it), paced one sender at 100 msg/s into a room of 100
#   --no-floor             don't start the relay floor (C); with --urls and --baseline-only there is none
#   --custom "ARGS"        the clubhouse-bench arguments of scenario "custom" (e.g. "--clients 20 --rooms 1
#                          --senders 1 --messages 2000 --window 1"); adds it to --scenarios if missing
#   --quick                smaller sizes (smoke test)
#   --no-build             don't run scripts/build before starting Clubhouse (use the existing build/)
#   --out FILE             results JSON (default bench/results/<timestamp>.json); raw runs go to FILE.jsonl
#   --window W             in-flight messages per sender in the single-sender scenarios (default 8)
#   --explorer             keep wrangler's local data explorer on, as `wrangler dev` ships (default: off for both
#                          servers; X_LOCAL_EXPLORER=true does the same; why: lib.sh)
#   --evict-wait S         before each run, wait until S seconds (default 11) have passed since the previous run
#                          ended, then until the servers are idle: workerd evicts a Durable Object 10 s after its
#                          last event, and the previous run's rooms closing (each a SQLite checkpoint) would
#                          otherwise land inside whichever run's window comes 10 s later. 0: only wait for idle
#                          (faster, biased against the side whose window comes later).
# Environment: BENCH_EXTRA="..." extra flags for every clubhouse-bench run; KEEP_WORK=1 keeps the temp dir;
#   CONNECT_LOG_DIR=DIR writes each run's connect log (one line per connection: index, room, start, duration)
#   to DIR/<scenario>-<repeat>-<A|B>.txt, to see where a connect tail comes from.
set -euo pipefail

# With --urls the servers are someone else's: the local data explorer mode is recorded only if given (ab.sh gives
# it). lib.sh then defaults it to off for both servers (see there).
EXPLORER_GIVEN="${X_LOCAL_EXPLORER:+yes}"
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode=both
URL_A="" URL_B="" URL_C="" PORT_C="" LABEL_C=""
REPEATS=3
SCENARIOS="room100,room100b,room1000,room1000b,rooms50,solo,paced,login"
FLOOR=1
QUICK=0
BUILD=1
OUT=""
WINDOW=8
CUSTOM_ARGS=""
EVICT_WAIT=11
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline-only) mode=baseline-only ;;
    --urls) [ $# -ge 3 ] || die "--urls needs two URLs"; mode=urls; URL_A="$2"; URL_B="$3"; shift 2 ;;
    --repeats) REPEATS="$2"; shift ;;
    --scenarios) SCENARIOS="$2"; shift ;;
    --quick) QUICK=1 ;;
    --no-floor) FLOOR=0 ;;
    --no-build) BUILD=0 ;;
    --out) OUT="$2"; shift ;;
    --evict-wait) EVICT_WAIT="$2"; shift ;;
    --window) WINDOW="$2"; shift ;;
    --custom) CUSTOM_ARGS="$2"; shift ;;
    --explorer) X_LOCAL_EXPLORER=true; EXPLORER_GIVEN=yes ;;
    *) other_arg "$1" ;;
  esac
  shift
done
if [ -n "$CUSTOM_ARGS" ]; then
  case ",$SCENARIOS," in *,custom,*) ;; *) SCENARIOS="$SCENARIOS,custom" ;; esac
fi
case "$X_LOCAL_EXPLORER" in true|1|yes) X_LOCAL_EXPLORER=true ;; *) X_LOCAL_EXPLORER=false ;; esac
export X_LOCAL_EXPLORER
EXPLORER_JSON="$X_LOCAL_EXPLORER"
if [ "$mode" = urls ] && [ -z "$EXPLORER_GIVEN" ]; then EXPLORER_JSON=null; fi
[ -n "$OUT" ] || { mkdir -p "$BENCH_DIR/results"; OUT="$BENCH_DIR/results/$(date +%Y%m%d-%H%M%S).json"; }
RAW="$OUT.jsonl"
: > "$RAW"

# Each run starts EVICT_WAIT seconds after the previous one ended (LAST_RUN_END; lib.sh: sleep_until_evicted), so
# the rooms it left are evicted before the next window opens; wait_idle then lets their checkpoints finish.
LAST_RUN_END=""

start_baseline() {  # start_baseline NAME: sets SERVER_URL / SERVER_PORT once it answers HTTP
  prepare_baseline "$1"
  log "starting $1"
  spawn_server "$1" "$BASE_DIR" "$BASE_WRANGLER"
  wait_http
}

start_floor() {  # start_floor NAME: the relay floor, like the baseline
  prepare_floor "$1"
  log "starting $1 (relay floor)"
  spawn_server "$1" "$FLOOR_DIR" "$FLOOR_WRANGLER"
  wait_http
}

# Clubhouse: build once (scripts/build) unless --no-build, then build/ under wrangler dev from a snapshot with a
# generated config (lib.sh: prepare_clubhouse), the limits a load test must lift (LOAD_TEST_VARS) and
# CLUBHOUSE_EXTRA_VARS="NAME:VALUE ..." (a later --var wins). The snapshot matters: wrangler dev watches `main`
# and restarts the Worker when it changes, so a rebuild in the repo during the run would spoil the figures.
start_clubhouse() {
  if [ "$BUILD" = 1 ]; then
    log "bash scripts/build"
    ( cd "$REPO_ROOT" && bash scripts/build ) || die "scripts/build failed"
  fi
  prepare_clubhouse clubhouse
  log "starting clubhouse"
  spawn_clubhouse clubhouse "$LOAD_TEST_VARS ${CLUBHOUSE_EXTRA_VARS:-}"
  wait_http
}

# ---------------------------------------------------------------------------------------------------------------
load_tool

case "$mode" in
  both)
    start_clubhouse; URL_A="$SERVER_URL"; PORT_A="$SERVER_PORT"; LABEL_A=clubhouse
    start_baseline baseline; URL_B="$SERVER_URL"; PORT_B="$SERVER_PORT"; LABEL_B=baseline
    if [ "$FLOOR" = 1 ]; then start_floor floor; URL_C="$SERVER_URL"; PORT_C="$SERVER_PORT"; LABEL_C=floor; fi ;;
  baseline-only)
    start_baseline baseline-a; URL_A="$SERVER_URL"; PORT_A="$SERVER_PORT"; LABEL_A=baseline-a
    start_baseline baseline-b; URL_B="$SERVER_URL"; PORT_B="$SERVER_PORT"; LABEL_B=baseline-b ;;
  urls)
    PORT_A="$(sed -E 's#^[a-z]+://[^:/]+:?([0-9]*).*#\1#' <<<"$URL_A")"; PORT_A="${PORT_A:-80}"; LABEL_A=A
    PORT_B="$(sed -E 's#^[a-z]+://[^:/]+:?([0-9]*).*#\1#' <<<"$URL_B")"; PORT_B="${PORT_B:-80}"; LABEL_B=B ;;
esac
log "A = $LABEL_A $URL_A   B = $LABEL_B $URL_B${URL_C:+   C = $LABEL_C $URL_C}   (local data explorer: ${EXPLORER_JSON/null/unknown}; each run starts $EVICT_WAIT s after the previous one ended, servers idle)"

scenario_args() {
  local s="$1"
  if [ "$s" = custom ]; then
    [ -n "$CUSTOM_ARGS" ] || die "scenario custom needs --custom \"ARGS\""
    echo "$CUSTOM_ARGS"; return
  fi
  if [ "$QUICK" = 1 ]; then
    case "$s" in
      room100)  echo "--clients 20 --rooms 1 --senders 1 --messages 200 --window $WINDOW" ;;
      room100b) echo "--clients 20 --rooms 1 --senders 1 --messages 200 --window $WINDOW --batch" ;;
      room1000) echo "--clients 200 --rooms 1 --senders 1 --messages 50 --window $WINDOW" ;;
      room1000b) echo "--clients 200 --rooms 1 --senders 1 --messages 50 --window $WINDOW --batch" ;;
      paced)    echo "--clients 20 --rooms 1 --senders 1 --messages 200 --rate 100" ;;
      rooms50)  echo "--clients 100 --rooms 10 --senders 10 --messages 50 --window 1" ;;
      login)    echo "--clients 0 --users 10 --login-burst 40 --login-concurrency 8" ;;
      solo)     echo "--clients 1 --rooms 1 --senders 1 --messages 500 --window $WINDOW" ;;
      *) die "unknown scenario $s" ;;
    esac
  else
    case "$s" in
      room100)  echo "--clients 100 --rooms 1 --senders 1 --messages 1000 --window $WINDOW" ;;
      room100b) echo "--clients 100 --rooms 1 --senders 1 --messages 1000 --window $WINDOW --batch" ;;
      room1000) echo "--clients 1000 --rooms 1 --senders 1 --messages 200 --window $WINDOW" ;;
      room1000b) echo "--clients 1000 --rooms 1 --senders 1 --messages 200 --window $WINDOW --batch" ;;
      paced)    echo "--clients 100 --rooms 1 --senders 1 --messages 1000 --rate 100" ;;
      rooms50)  echo "--clients 1000 --rooms 50 --senders 50 --messages 100 --window 1" ;;
      login)    echo "--clients 0 --users 20 --login-burst 200 --login-concurrency 8" ;;
      solo)     echo "--clients 1 --rooms 1 --senders 1 --messages 5000 --window $WINDOW" ;;
      *) die "unknown scenario $s" ;;
    esac
  fi
}

run_one() {  # run_one SCENARIO REPEAT SIDE(A|B)
  local s="$1" r="$2" side="$3" url port label out
  case "$side" in
    A) url="$URL_A"; port="$PORT_A"; label="$LABEL_A" ;;
    B) url="$URL_B"; port="$PORT_B"; label="$LABEL_B" ;;
    C) url="$URL_C"; port="$PORT_C"; label="$LABEL_C" ;;
  esac
  out="$WORK/run-$s-$r-$side.out"
  local connect_log=()
  if [ -n "${CONNECT_LOG_DIR:-}" ]; then
    mkdir -p "$CONNECT_LOG_DIR"
    connect_log=(--connect-log "$CONNECT_LOG_DIR/$s-$r-$side.txt")
  fi
  # shellcheck disable=SC2046
  if ! timeout 900 "$BIN" --url "$url" --server-port "$port" --label "$label" $(scenario_args "$s") ${BENCH_EXTRA:-} \
      "${connect_log[@]+"${connect_log[@]}"}" > "$out" 2> "$out.err"; then
    log "run $s #$r $side ($label) failed:"; tail -n 5 "$out.err" "$out" >&2
  fi
  grep -v '^{' "$out" | sed 's/^/    /' >&2 || true
  local line; line="$(tail -n 1 "$out")"
  case "$line" in
    \{*) printf '{"scenario":"%s","repeat":%s,"side":"%s","explorer":%s,"result":%s}\n' "$s" "$r" "$side" "$EXPLORER_JSON" "$line" >> "$RAW" ;;
    *) printf '{"scenario":"%s","repeat":%s,"side":"%s","explorer":%s,"result":null}\n' "$s" "$r" "$side" "$EXPLORER_JSON" >> "$RAW" ;;
  esac
}

IFS=, read -r -a SCEN <<<"$SCENARIOS"
for s in "${SCEN[@]}"; do
  scenario_args "$s" >/dev/null
  for r in $(seq 1 "$REPEATS"); do
    # alternate the order (A B C, C B A, ...) so drift on the machine hits every side alike
    if [ $((r % 2)) = 1 ]; then order="A B${URL_C:+ C}"; else order="${URL_C:+C }B A"; fi
    for side in $order; do
      log "$s #$r/$REPEATS: $side"
      sleep_until_evicted "$LAST_RUN_END"
      wait_idle "${PGIDS[@]+"${PGIDS[@]}"}"
      run_one "$s" "$r" "$side"
      LAST_RUN_END="$(date +%s.%N)"
    done
  done
done

# ---------------------------------------------------------------------------------------------------------------
# Ratio table (node is there: wrangler needs it): bench/tools/table.mjs, which also pools runs (--pool).
node "$BENCH_DIR/tools/table.mjs" "$RAW" "$OUT" "$LABEL_A" "$LABEL_B" ${LABEL_C:+"$LABEL_C"}
