#!/usr/bin/env bash
# The reconnect storm, side by side: Clubhouse (A, reconnecting with `since`) and the JavaScript Durable Object
# baseline (B, which has no `since`: a plain reconnect), alternating A B / B A for N repeats. Per run, the load tool
# bench/src/bin/storm.rs connects C receivers over R rooms plus one sender per room, lets the senders talk, drops
# every receiver's connection at once and reconnects them all at once while the senders keep talking. See
# bench/README.md ("storm.sh") and bench/RESULTS.md ("Reconnect storm").
#
#   bash bench/storm.sh                                   1000 sockets in 20 rooms, 2 repeats
#   bash bench/storm.sh --clients 2000 --rooms 20 --repeats 3 --out bench/results/storm.json
#
# Options:
#   --clients C            receivers that drop and reconnect (default 1000)
#   --rooms R              rooms, one sender each (default 20)
#   --rate X               messages/s per room (default 5)
#   --users U              users signed up per run, shared round-robin by the sockets (default 50)
#   --repeats N            repeats (default 2)
#   --storm-concurrency K  reconnects in flight at once (default 0: all at once)
#   --out FILE             the summary JSON (default bench/results/storm-<time>.json); raw runs in FILE.jsonl
#   --evict-wait S         as run.sh: each run starts S s (default 11) after the previous one ended
# Environment: STORM_EXTRA="..." more flags for every storm run; CLUBHOUSE_EXTRA_VARS="NAME:VALUE ..." more
# `--var`s for Clubhouse; KEEP_WORK=1 keeps the temp dir (server logs).
# Needs build/ (bash scripts/build); never rebuilds it. File descriptors: each WebSocket holds about 6 in the
# servers' two workerd processes and the old sockets may still be closing while the new ones open, so keep C at or
# below about 2,500 under the 20,000 limit.
set -euo pipefail
WORK_PREFIX=clubhouse-storm
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLIENTS=1000 ROOMS=20 RATE=5 USERS=50 REPEATS=2 STORM_CONC=0 OUT="" EVICT_WAIT=11
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS="$2"; shift ;;
    --rooms) ROOMS="$2"; shift ;;
    --rate) RATE="$2"; shift ;;
    --users) USERS="$2"; shift ;;
    --repeats) REPEATS="$2"; shift ;;
    --storm-concurrency) STORM_CONC="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --evict-wait) EVICT_WAIT="$2"; shift ;;
    *) other_arg "$1" ;;
  esac
  shift
done
export EVICT_WAIT
[ -n "$OUT" ] || { mkdir -p "$BENCH_DIR/results"; OUT="$BENCH_DIR/results/storm-$(date +%Y%m%d-%H%M%S).json"; }
RAW="$OUT.jsonl"
: > "$RAW"

load_tool
STORM_BIN="$BENCH_DIR/target/release/storm"
[ -x "$STORM_BIN" ] || die "$STORM_BIN missing (cargo build --release --manifest-path bench/Cargo.toml)"

prepare_clubhouse clubhouse
log "starting clubhouse"
spawn_clubhouse clubhouse "$LOAD_TEST_VARS ${CLUBHOUSE_EXTRA_VARS:-}"
wait_http
URL_A="$SERVER_URL" PORT_A="$SERVER_PORT" PG_A="$SERVER_PID"
prepare_baseline baseline
log "starting baseline"
spawn_server baseline "$BASE_DIR" "$BASE_WRANGLER"
wait_http
URL_B="$SERVER_URL" PORT_B="$SERVER_PORT" PG_B="$SERVER_PID"

ARGS=(--clients "$CLIENTS" --rooms "$ROOMS" --rate "$RATE" --users "$USERS" --storm-concurrency "$STORM_CONC")
# One small unmeasured storm against each, so that the measured runs find the code compiled.
for side in A B; do
  if [ $side = A ]; then url="$URL_A" port="$PORT_A" since=--since; else url="$URL_B" port="$PORT_B" since=""; fi
  log "warm-up storm ($side)"
  "$STORM_BIN" --url "$url" --server-port "$port" $since --clients 100 --rooms 5 --users 5 --before 1 --after 0.5 \
    > "$WORK/warm-$side.txt" 2>&1 || { tail -n 5 "$WORK/warm-$side.txt" >&2; die "warm-up storm failed ($side)"; }
done
LAST_RUN_END="$(date +%s.%N)"

for r in $(seq 1 "$REPEATS"); do
  if [ $((r % 2)) = 1 ]; then order="A B"; else order="B A"; fi
  for side in $order; do
    if [ $side = A ]; then url="$URL_A" port="$PORT_A" since=--since label=clubhouse
    else url="$URL_B" port="$PORT_B" since="" label=baseline; fi
    sleep_until_evicted "$LAST_RUN_END"
    wait_idle "$PG_A" "$PG_B"
    log "storm #$r/$REPEATS: $side ($label), load $(loadavg)"
    out="$WORK/run-$r-$side.txt"
    # shellcheck disable=SC2086
    "$STORM_BIN" --url "$url" --server-port "$port" --label "$label" $since "${ARGS[@]}" ${STORM_EXTRA:-} -v \
      > "$out" 2> "$out.err" || { log "storm #$r $side failed:"; tail -n 5 "$out.err" "$out" >&2; }
    grep -v '^{' "$out" | sed 's/^/    /' >&2 || true
    line="$(tail -n 1 "$out")"
    case "$line" in
      \{*) printf '{"repeat":%s,"side":"%s","load":"%s","result":%s}\n' "$r" "$side" "$(loadavg)" "$line" >> "$RAW" ;;
      *) printf '{"repeat":%s,"side":"%s","result":null}\n' "$r" "$side" >> "$RAW" ;;
    esac
    LAST_RUN_END="$(date +%s.%N)"
  done
done

node "$BENCH_DIR/tools/storm_table.mjs" "$RAW" "$OUT"
