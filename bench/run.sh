#!/usr/bin/env bash
# Side-by-side benchmark: Clubhouse (A) vs the JavaScript Durable Object baseline (B), same scenarios, alternating
# A B / B A for N repeats, then a table of A/B ratios (median of the per-repeat ratios). See bench/README.md.
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
#   --scenarios LIST       comma list of room100,room1000,rooms50,solo,login (default: all five), or custom
#   --custom "ARGS"        the clubhouse-bench arguments of scenario "custom" (e.g. "--clients 20 --rooms 1
#                          --senders 1 --messages 2000 --window 1"); adds it to --scenarios if missing
#   --quick                smaller sizes (smoke test)
#   --no-build             don't run scripts/build before starting Clubhouse (use the existing build/)
#   --out FILE             results JSON (default bench/results/<timestamp>.json); raw runs go to FILE.jsonl
#   --window W             in-flight messages per sender in the single-sender scenarios (default 8)
#   --explorer             keep wrangler's local data explorer on, as `wrangler dev` ships (default: off for both
#                          servers; X_LOCAL_EXPLORER=true does the same; see lib.sh and bench/RESULTS.md, round 13)
#   --evict-wait S         before each run, wait until S seconds (default 11) have passed since the previous run
#                          ended, then until the servers are idle: workerd evicts a Durable Object 10 s after its
#                          last event, and the previous run's rooms closing (each a SQLite checkpoint) would
#                          otherwise land inside whichever run's window comes 10 s later (bench/RESULTS.md,
#                          round 15). 0: only wait for idle, as before round 15 (faster, biased).
# Environment: BENCH_EXTRA="..." extra flags for every clubhouse-bench run; KEEP_WORK=1 keeps the temp dir;
#   CONNECT_LOG_DIR=DIR writes each run's connect log (one line per connection: index, room, start, duration)
#   to DIR/<scenario>-<repeat>-<A|B>.txt, to see where a connect tail comes from.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BENCH_DIR/.." && pwd)"
BASELINE_SRC="${BASELINE_SRC:-$REPO_ROOT/../shared/peers/js-do}"
[ -d "$BASELINE_SRC" ] || BASELINE_SRC=/work/shared/peers/js-do
BIN="$BENCH_DIR/target/release/clubhouse-bench"

export CLOUDFLARE_CF_FETCH_ENABLED=false WRANGLER_SEND_METRICS=false CI=true
# Wrangler's local data explorer: off for both servers unless --explorer or X_LOCAL_EXPLORER=true (see lib.sh).
# With --urls the servers are someone else's: the mode is recorded only if given (ab.sh gives it).
EXPLORER_GIVEN="${X_LOCAL_EXPLORER:+yes}"
X_LOCAL_EXPLORER="${X_LOCAL_EXPLORER:-false}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

mode=both
URL_A="" URL_B=""
REPEATS=3
SCENARIOS="room100,room1000,rooms50,solo,login"
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
    --no-build) BUILD=0 ;;
    --out) OUT="$2"; shift ;;
    --evict-wait) EVICT_WAIT="$2"; shift ;;
    --window) WINDOW="$2"; shift ;;
    --custom) CUSTOM_ARGS="$2"; shift ;;
    --explorer) X_LOCAL_EXPLORER=true; EXPLORER_GIVEN=yes ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
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

WORK="$(mktemp -d /tmp/clubhouse-bench.XXXXXX)"
PGIDS=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pg in "${PGIDS[@]}"; do kill -TERM -- "-$pg" 2>/dev/null || true; done
  if [ ${#PGIDS[@]} -gt 0 ]; then
    for _ in $(seq 1 50); do
      local alive=0
      for pg in "${PGIDS[@]}"; do kill -0 -- "-$pg" 2>/dev/null && alive=1; done
      [ $alive = 0 ] && break
      sleep 0.1
    done
    for pg in "${PGIDS[@]}"; do kill -KILL -- "-$pg" 2>/dev/null || true; done
  fi
  if [ "${KEEP_WORK:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# CPU ticks (utime+stime) of every process in the server process groups we started.
server_ticks() {
  [ ${#PGIDS[@]} -gt 0 ] || { echo 0; return; }
  local t
  # cat, not awk on the glob: processes come and go between the glob and the read (mawk stops at a missing file).
  t="$( { cat /proc/[0-9]*/stat 2>/dev/null || true; } \
    | awk -v pgs=" ${PGIDS[*]} " '{ sub(/^.*\) /, ""); if (index(pgs, " " $3 " ")) t += $12 + $13 } END { print t + 0 }' )" || true
  echo "${t:-0}"
}
# Wait until the servers are idle (<= 2 ticks = 20 ms over 0.5 s), at most 30 s: a server still closing the last
# run's sockets would otherwise steal CPU from the other side's run.
wait_idle() {
  [ ${#PGIDS[@]} -gt 0 ] || { sleep 1; return; }
  local t0 t1 start=$SECONDS end=$((SECONDS + 30))
  t0="$(server_ticks)"
  while [ $SECONDS -lt $end ]; do
    sleep 0.5
    t1="$(server_ticks)"
    if [ $((t1 - t0)) -le 2 ]; then
      [ $((SECONDS - start)) -lt 2 ] || log "waited $((SECONDS - start)) s for the servers to go idle"
      return
    fi
    t0="$t1"
  done
  log "servers still busy after 30 s; going on"
}

# Wait until EVICT_WAIT seconds after the previous run ended (LAST_RUN_END, epoch seconds), so that the rooms it
# left have been evicted (workerd: 10 s after an object's last event) before the next window opens; wait_idle
# afterwards lets the evictions' checkpoints finish.
LAST_RUN_END=""
wait_evicted() {
  [ -n "$LAST_RUN_END" ] && [ "$EVICT_WAIT" != 0 ] || return 0
  local left
  left="$(awk -v end="$LAST_RUN_END" -v wait="$EVICT_WAIT" -v now="$(date +%s.%N)" \
    'BEGIN { l = end + wait - now; printf "%.2f", (l > 0 ? l : 0) }')"
  sleep "$left"
}

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# start_server NAME DIR WRANGLER [extra `wrangler dev` args...]: runs in DIR, in its own process group (its pid is
# the group id, killed on exit); sets SERVER_PORT / SERVER_URL once the port answers HTTP.
start_server() {
  local name="$1" dir="$2" wr="$3"; shift 3
  local port insp
  port="$(free_port)"; insp="$(free_port)"
  while [ "$insp" = "$port" ]; do insp="$(free_port)"; done
  mkdir -p "$WORK/state-$name"
  log "starting $name on 127.0.0.1:$port (log $WORK/$name.log)"
  ( cd "$dir" && exec setsid "$wr" dev --ip 127.0.0.1 --port "$port" --inspector-port "$insp" \
      --persist-to "$WORK/state-$name" --show-interactive-dev-session=false "$@" \
      > "$WORK/$name.log" 2>&1 < /dev/null ) &
  local pid=$!
  PGIDS+=("$pid")
  local deadline=$((SECONDS + 180))
  until curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      tail -n 40 "$WORK/$name.log" >&2
      die "$name did not come up on port $port"
    fi
    sleep 0.5
  done
  SERVER_PORT="$port"
  SERVER_URL="http://127.0.0.1:$port"
}

install_baseline() {  # install_baseline DEST
  local dest="$1"
  if [ -z "${BASELINE_READY:-}" ]; then
    log "installing the JS baseline into $WORK/js-do (npm install)"
    cp -r "$BASELINE_SRC" "$WORK/js-do"
    chmod -R u+w "$WORK/js-do"
    ( cd "$WORK/js-do" && npm install --no-audit --no-fund --loglevel=error >"$WORK/npm.log" 2>&1 ) \
      || { cat "$WORK/npm.log" >&2; die "npm install of the baseline failed"; }
    BASELINE_READY="$WORK/js-do"
  fi
  [ "$dest" = "$BASELINE_READY" ] || cp -a "$BASELINE_READY" "$dest"
}

start_baseline() {  # start_baseline NAME -> SERVER_URL/SERVER_PORT
  local name="$1"
  install_baseline "$WORK/$name-src"
  start_server "$name" "$WORK/$name-src" "$WORK/$name-src/node_modules/.bin/wrangler"
}

# Clubhouse: build once (scripts/build), then run build/ under wrangler dev with a generated config: absolute
# paths, no [build] step (wrangler would rebuild), its own state dir, a random JWT_SECRET, D1 migrated, the
# per-connection rate limit raised to its maximum (src/config.rs accepts 1..=100000) so the benchmark measures the
# room rather than the limiter, and MAX_SOCKETS_PER_USER raised (default 5): the tool signs up at most 100 users
# (argon2 makes signups costly) and shares them round-robin, so 1000 sockets means 10 per user.
# SIGNUP_MAX_PER_IP (default 20 an hour) raised too: every run signs up to 100 users from 127.0.0.1. Ranges: see
# src/config.rs. CLUBHOUSE_EXTRA_VARS="NAME:VALUE ..." adds more (a later --var wins).
# The same list as LOAD_TEST_VARS in lib.sh (not sourced here).
CLUBHOUSE_VARS="RATE_LIMIT_PER_SEC:100000 RATE_LIMIT_BURST:100000 MAX_SOCKETS_PER_USER:1000 SIGNUP_MAX_PER_IP:1000000"
start_clubhouse() {
  local name=clubhouse
  if [ "$BUILD" = 1 ]; then
    log "bash scripts/build"
    ( cd "$REPO_ROOT" && bash scripts/build ) || die "scripts/build failed"
  fi
  [ -f "$REPO_ROOT/build/index.js" ] || die "$REPO_ROOT/build/index.js missing (run bash scripts/build)"
  [ -f "$REPO_ROOT/wrangler.toml" ] || die "$REPO_ROOT/wrangler.toml missing"
  local cfgdir="$WORK/clubhouse-cfg"
  mkdir -p "$cfgdir"
  # Snapshot build/ (and the static assets) beside the generated config: wrangler dev watches `main` and restarts
  # the Worker's workerd when it changes, so a rebuild in the repo during the run would restart the server (new
  # pids, 503s) and spoil the figures. main and [assets] directory then resolve inside $cfgdir; other relative
  # paths (migrations_dir) are made absolute. The [build] table is dropped (up to the next table header).
  cp -r "$REPO_ROOT/build" "$cfgdir/build"
  local d
  for d in $(awk -F'"' '/^directory *= *"[^\/"]/ { print $2 }' "$REPO_ROOT/wrangler.toml"); do
    [ -d "$REPO_ROOT/$d" ] && mkdir -p "$cfgdir/$(dirname "$d")" && cp -r "$REPO_ROOT/$d" "$cfgdir/$d"
  done
  awk -v root="$REPO_ROOT" '
    /^\[build\]/ { skip = 1; next }
    /^\[/ { skip = 0 }
    skip { next }
    /^(main|directory) *=/ { print; next }
    /^[A-Za-z_]*(dir|path) *= *"[^\/"]/ { sub(/"/, "\"" root "/"); print; next }
    { print }
  ' "$REPO_ROOT/wrangler.toml" > "$cfgdir/wrangler.toml"
  printf 'JWT_SECRET=%s\n' "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" > "$cfgdir/.dev.vars"
  local wr="$REPO_ROOT/node_modules/.bin/wrangler"
  [ -x "$wr" ] || die "$wr missing (bash scripts/setup)"
  mkdir -p "$WORK/state-$name"
  if grep -q '^\[\[d1_databases\]\]' "$cfgdir/wrangler.toml"; then
    log "clubhouse: d1 migrations apply DB --local"
    ( cd "$cfgdir" && "$wr" d1 migrations apply DB --local --config "$cfgdir/wrangler.toml" \
        --persist-to "$WORK/state-$name" ) > "$WORK/$name-migrate.log" 2>&1 \
      || { tail -n 30 "$WORK/$name-migrate.log" >&2; die "clubhouse D1 migrations failed"; }
  fi
  local vars=() kv
  for kv in $CLUBHOUSE_VARS ${CLUBHOUSE_EXTRA_VARS:-}; do vars+=(--var "$kv"); done
  start_server "$name" "$cfgdir" "$wr" --config "$cfgdir/wrangler.toml" "${vars[@]}"
}

# ---------------------------------------------------------------------------------------------------------------
if [ ! -x "$BIN" ] || [ -n "$(find "$BENCH_DIR/src" "$BENCH_DIR/Cargo.toml" -newer "$BIN" 2>/dev/null | head -1)" ]; then
  log "cargo build --release (bench)"
  cargo build --release --quiet --manifest-path "$BENCH_DIR/Cargo.toml"
fi

case "$mode" in
  both)
    start_clubhouse; URL_A="$SERVER_URL"; PORT_A="$SERVER_PORT"; LABEL_A=clubhouse
    start_baseline baseline; URL_B="$SERVER_URL"; PORT_B="$SERVER_PORT"; LABEL_B=baseline ;;
  baseline-only)
    start_baseline baseline-a; URL_A="$SERVER_URL"; PORT_A="$SERVER_PORT"; LABEL_A=baseline-a
    start_baseline baseline-b; URL_B="$SERVER_URL"; PORT_B="$SERVER_PORT"; LABEL_B=baseline-b ;;
  urls)
    PORT_A="$(sed -E 's#^[a-z]+://[^:/]+:?([0-9]*).*#\1#' <<<"$URL_A")"; PORT_A="${PORT_A:-80}"; LABEL_A=A
    PORT_B="$(sed -E 's#^[a-z]+://[^:/]+:?([0-9]*).*#\1#' <<<"$URL_B")"; PORT_B="${PORT_B:-80}"; LABEL_B=B ;;
esac
log "A = $LABEL_A $URL_A   B = $LABEL_B $URL_B   (local data explorer: ${EXPLORER_JSON/null/unknown}; each run starts $EVICT_WAIT s after the previous one ended, servers idle)"

scenario_args() {
  local s="$1"
  if [ "$s" = custom ]; then
    [ -n "$CUSTOM_ARGS" ] || die "scenario custom needs --custom \"ARGS\""
    echo "$CUSTOM_ARGS"; return
  fi
  if [ "$QUICK" = 1 ]; then
    case "$s" in
      room100)  echo "--clients 20 --rooms 1 --senders 1 --messages 200 --window $WINDOW" ;;
      room1000) echo "--clients 200 --rooms 1 --senders 1 --messages 50 --window $WINDOW" ;;
      rooms50)  echo "--clients 100 --rooms 10 --senders 10 --messages 50 --window 1" ;;
      login)    echo "--clients 0 --users 10 --login-burst 40 --login-concurrency 8" ;;
      solo)     echo "--clients 1 --rooms 1 --senders 1 --messages 500 --window $WINDOW" ;;
      *) die "unknown scenario $s" ;;
    esac
  else
    case "$s" in
      room100)  echo "--clients 100 --rooms 1 --senders 1 --messages 1000 --window $WINDOW" ;;
      room1000) echo "--clients 1000 --rooms 1 --senders 1 --messages 200 --window $WINDOW" ;;
      rooms50)  echo "--clients 1000 --rooms 50 --senders 50 --messages 100 --window 1" ;;
      login)    echo "--clients 0 --users 20 --login-burst 200 --login-concurrency 8" ;;
      solo)     echo "--clients 1 --rooms 1 --senders 1 --messages 5000 --window $WINDOW" ;;
      *) die "unknown scenario $s" ;;
    esac
  fi
}

run_one() {  # run_one SCENARIO REPEAT SIDE(A|B)
  local s="$1" r="$2" side="$3" url port label out
  if [ "$side" = A ]; then url="$URL_A"; port="$PORT_A"; label="$LABEL_A"; else url="$URL_B"; port="$PORT_B"; label="$LABEL_B"; fi
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
    # alternate the order (A B, B A, ...) so drift on the machine hits both sides alike
    if [ $((r % 2)) = 1 ]; then order="A B"; else order="B A"; fi
    for side in $order; do
      log "$s #$r/$REPEATS: $side"
      wait_evicted
      wait_idle
      run_one "$s" "$r" "$side"
      LAST_RUN_END="$(date +%s.%N)"
    done
  done
done

# ---------------------------------------------------------------------------------------------------------------
# Ratio table (node is there: wrangler needs it): bench/tools/table.mjs, which also pools runs (--pool).
node "$BENCH_DIR/tools/table.mjs" "$RAW" "$OUT" "$LABEL_A" "$LABEL_B"
