# Shared helpers for bench/run.sh, ab.sh, coldstart.sh and the probes in bench/probes/ (sourced, not run):
# every wrangler dev in its own process group (killed by group on exit), its own --persist-to state dir in a temp
# dir, free ports (never 8787), Clubhouse from a snapshot of build/ + public/ under a generated wrangler.toml without
# [build], a random JWT_SECRET in .dev.vars, D1 migrated with `wrangler d1 migrations apply DB --local`.
# The caller sets: set -euo pipefail, and may set WORK_PREFIX before sourcing.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BENCH_DIR/.." && pwd)"
BASELINE_SRC="${BASELINE_SRC:-$REPO_ROOT/../shared/peers/js-do}"
[ -d "$BASELINE_SRC" ] || BASELINE_SRC=/work/shared/peers/js-do
FLOOR_SRC="${FLOOR_SRC:-$REPO_ROOT/../shared/peers/js-floor}"
[ -d "$FLOOR_SRC" ] || FLOOR_SRC=/work/shared/peers/js-floor
NODE_HELPER="$BENCH_DIR/tools/probe.mjs"
WRANGLER="$REPO_ROOT/node_modules/.bin/wrangler"
# The limits a load test must lift on Clubhouse (`--var` flags): the per-connection rate limit at its maximum
# (src/config.rs accepts 1..=100000) so a benchmark measures the room rather than the limiter; MAX_SOCKETS_PER_USER
# (default 5) because the tool signs up at most 100 users (argon2 makes sign-ups costly) and shares them
# round-robin, so 1000 sockets means 10 per user; SIGNUP_MAX_PER_IP (default 20 an hour) because every run signs up
# to 100 users from 127.0.0.1.
LOAD_TEST_VARS="RATE_LIMIT_PER_SEC:100000 RATE_LIMIT_BURST:100000 MAX_SOCKETS_PER_USER:1000 SIGNUP_MAX_PER_IP:1000000"

export CLOUDFLARE_CF_FETCH_ENABLED=false WRANGLER_SEND_METRICS=false CI=true
# Wrangler's local data explorer off, for both sides, unless the caller sets X_LOCAL_EXPLORER=true: it wraps every
# SQLite-backed Durable Object class in a subclass whose constructor writes a row (CREATE TABLE + INSERT OR REPLACE
# __miniflare_do_name, under blockConcurrencyWhile) at every start of every named object. That is a dev-only write
# neither server makes at the edge, and it holds a starting room's first outgoing call behind a commit (the output
# gate). bench/RESULTS.md, "Method".
export X_LOCAL_EXPLORER="${X_LOCAL_EXPLORER:-false}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
# usage: prints the calling script's header (its comment lines after the shebang), which is its documentation.
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }
# other_arg ARG: for an argument no option of the script matched: -h/--help prints the usage, anything else stops.
other_arg() {
  case "$1" in
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (--help)" ;;
  esac
}

WORK="$(mktemp -d "/tmp/${WORK_PREFIX:-clubhouse-bench}.XXXXXX")"
PGIDS=()

kill_group() {  # kill_group PGID: TERM, wait up to 5 s, KILL; forget it
  local pg="$1" i
  kill -TERM -- "-$pg" 2>/dev/null || true
  for i in $(seq 1 50); do kill -0 -- "-$pg" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pg" 2>/dev/null || true
  local keep=() p
  for p in "${PGIDS[@]}"; do [ "$p" = "$pg" ] || keep+=("$p"); done
  PGIDS=("${keep[@]+"${keep[@]}"}")
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pg
  for pg in "${PGIDS[@]+"${PGIDS[@]}"}"; do kill -TERM -- "-$pg" 2>/dev/null || true; done
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

free_port() {
  local p
  while :; do
    p="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
    [ "$p" != 8787 ] && { echo "$p"; return; }
  done
}

# spawn_server NAME DIR WRANGLER [extra `wrangler dev` args...]: starts wrangler dev in DIR in its own process group
# (setsid: its pid is the group id) with a fresh state dir; does NOT wait. Sets SERVER_PID (= pgid), SERVER_PORT,
# SERVER_URL, SERVER_INSPECTOR (its inspector port), SERVER_LOG, SPAWN_NS (date +%s%N just before the spawn).
spawn_server() {
  local name="$1" dir="$2" wr="$3"; shift 3
  local port insp
  port="$(free_port)"; insp="$(free_port)"
  while [ "$insp" = "$port" ]; do insp="$(free_port)"; done
  # fresh state dir for every start: a copy of $STATE_FROM (default $WORK/state-NAME; Clubhouse: its migrated D1)
  local from="${STATE_FROM:-$WORK/state-$name}"
  rm -rf "$WORK/state-$name.run"; mkdir -p "$WORK/state-$name.run"
  [ -d "$from" ] && cp -r "$from/." "$WORK/state-$name.run/"
  SERVER_LOG="$WORK/$name.$port.log"
  SPAWN_NS="$(date +%s%N)"
  ( cd "$dir" && exec setsid "$wr" dev --ip 127.0.0.1 --port "$port" --inspector-port "$insp" \
      --persist-to "$WORK/state-$name.run" --show-interactive-dev-session=false "$@" \
      > "$SERVER_LOG" 2>&1 < /dev/null ) &
  SERVER_PID=$!
  PGIDS+=("$SERVER_PID")
  SERVER_PORT="$port"
  SERVER_INSPECTOR="$insp"
  SERVER_URL="http://127.0.0.1:$port"
}

# wait_http: waits until SERVER_URL answers HTTP (any status), at most 180 s.
wait_http() {
  local deadline=$((SECONDS + 180))
  until curl -s -o /dev/null --max-time 2 "$SERVER_URL/nope" 2>/dev/null; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      tail -n 40 "$SERVER_LOG" >&2
      die "server did not come up on port $SERVER_PORT"
    fi
    sleep 0.3
  done
}

# workerd_pids PGID PORT: sets PROXY_PID (workerd with --socket-addr=entry=127.0.0.1:PORT) and WORKER_PID (the other
# workerd of the group: the one running the Worker and its Durable Objects). Empty if not found.
workerd_pids() {
  local pg="$1" port="$2" p cmd
  PROXY_PID="" WORKER_PID=""
  for p in $(ps -e -o pid=,pgid=,comm= | awk -v g="$pg" '$2 == g && $3 == "workerd" { print $1 }'); do
    cmd="$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null || true)"
    case "$cmd" in
      *"--socket-addr=entry=127.0.0.1:$port "*|*"--socket-addr=entry=127.0.0.1:$port") PROXY_PID="$p" ;;
      *) WORKER_PID="$p" ;;
    esac
  done
}

# group_ticks PGID: utime+stime (clock ticks) summed over every process of the group.
group_ticks() {
  local t
  t="$( { cat /proc/[0-9]*/stat 2>/dev/null || true; } \
    | awk -v pg="$1" '{ sub(/^.*\) /, ""); if ($3 == pg) t += $12 + $13 } END { print t + 0 }' )" || true
  echo "${t:-0}"
}

# wait_idle PGID...: until the groups use <= 2 ticks (20 ms) over 0.5 s, at most 30 s: a server still closing the
# last run's sockets would otherwise steal CPU from the next run. With no group (servers someone else started) it
# only sleeps 1 s.
wait_idle() {
  [ $# -gt 0 ] || { sleep 1; return 0; }
  local t0 t1 start=$SECONDS end=$((SECONDS + 30)) pg
  t0=0; for pg in "$@"; do t0=$((t0 + $(group_ticks "$pg"))); done
  while [ $SECONDS -lt $end ]; do
    sleep 0.5
    t1=0; for pg in "$@"; do t1=$((t1 + $(group_ticks "$pg"))); done
    if [ $((t1 - t0)) -le 2 ]; then
      [ $((SECONDS - start)) -lt 2 ] || log "waited $((SECONDS - start)) s for the servers to go idle"
      return 0
    fi
    t0="$t1"
  done
  log "servers still busy after 30 s; going on"
}

# sleep_until_evicted SINCE: sleeps until EVICT_WAIT (default 11) seconds after SINCE (epoch seconds, as from
# `date +%s.%N`; empty: no wait), 0 skips it. workerd evicts a Durable Object 10 s after its last event, and an
# object with SQLite storage checkpoints its WAL as it closes: without this wait the objects a run used close
# inside the next measured window (bench/RESULTS.md, "Method").
sleep_until_evicted() {
  local wait="${EVICT_WAIT:-11}"
  [ -n "$1" ] && [ "$wait" != 0 ] || return 0
  sleep "$(awk -v end="$1" -v wait="$wait" -v now="$(date +%s.%N)" \
    'BEGIN { l = end + wait - now; printf "%.2f", (l > 0 ? l : 0) }')"
}

# load_tool: sets BIN to the release build of the load tool (bench/src), building it first if it is missing or
# older than its sources.
load_tool() {
  BIN="$BENCH_DIR/target/release/clubhouse-bench"
  if [ ! -x "$BIN" ] || [ -n "$(find "$BENCH_DIR/src" "$BENCH_DIR/Cargo.toml" -newer "$BIN" 2>/dev/null | head -1)" ]; then
    log "cargo build --release (bench)"
    cargo build --release --quiet --manifest-path "$BENCH_DIR/Cargo.toml"
  fi
}

# warm_up ARGS...: one unmeasured run of the load tool (BIN) with ARGS against the server last spawned, then
# wait_evicted, so that the measured run after it finds the isolate's code compiled and none of the warm-up's
# objects closing in its window.
warm_up() {
  local out="$WORK/warm-$SERVER_PORT.txt"
  "$BIN" --url "$SERVER_URL" --server-port "$SERVER_PORT" "$@" > "$out" 2>&1 \
    || { tail -n 5 "$out" >&2; die "warm-up run failed"; }
  wait_evicted "$SERVER_PID"
}

# wait_evicted PGID: after a warm-up run, until its objects are evicted (sleep_until_evicted) and the server is idle
# again. EVICT_WAIT=0 skips both.
wait_evicted() {
  [ "${EVICT_WAIT:-11}" != 0 ] || return 0
  log "waiting ${EVICT_WAIT:-11} s for the warm-up's objects to be evicted"
  sleep_until_evicted "$(date +%s.%N)"
  wait_idle "$1"
}

install_baseline() {  # install_baseline DEST
  local dest="$1"
  if [ -z "${BASELINE_READY:-}" ]; then
    log "installing the JS baseline into $WORK/js-do (npm install)"
    cp -r "$BASELINE_SRC" "$WORK/js-do"
    chmod -R u+w "$WORK/js-do"
    rm -rf "$WORK/js-do/node_modules" "$WORK/js-do/.wrangler"
    ( cd "$WORK/js-do" && npm install --no-audit --no-fund --loglevel=error >"$WORK/npm.log" 2>&1 ) \
      || { cat "$WORK/npm.log" >&2; die "npm install of the baseline failed"; }
    BASELINE_READY="$WORK/js-do"
  fi
  [ "$dest" = "$BASELINE_READY" ] || [ -d "$dest" ] || cp -a "$BASELINE_READY" "$dest"
}

# prepare_baseline NAME: installs it (once) and sets BASE_DIR / BASE_WRANGLER. State dir: $WORK/state-NAME (empty).
prepare_baseline() {
  local name="$1"
  install_baseline "$WORK/$name-src"
  mkdir -p "$WORK/state-$name"
  BASE_DIR="$WORK/$name-src"
  BASE_WRANGLER="$WORK/$name-src/node_modules/.bin/wrangler"
}

# prepare_floor NAME: the relay floor (shared/peers/js-floor) beside the baseline's install (same wrangler, so its
# node_modules are copied rather than installed again); sets FLOOR_DIR / FLOOR_WRANGLER. State dir: $WORK/state-NAME.
prepare_floor() {
  local name="$1"
  install_baseline "$WORK/js-do"
  rm -rf "$WORK/$name-src"
  cp -r "$FLOOR_SRC" "$WORK/$name-src"
  chmod -R u+w "$WORK/$name-src"
  rm -rf "$WORK/$name-src/node_modules" "$WORK/$name-src/.wrangler"
  cp -a "$BASELINE_READY/node_modules" "$WORK/$name-src/node_modules"
  mkdir -p "$WORK/state-$name"
  FLOOR_DIR="$WORK/$name-src"
  FLOOR_WRANGLER="$WORK/$name-src/node_modules/.bin/wrangler"
}

# prepare_clubhouse NAME: snapshot of build/ (+ asset dirs) beside a generated wrangler.toml (absolute paths, no
# [build]), a random JWT_SECRET in .dev.vars, and a state dir $WORK/state-NAME with D1 migrated (spawn_server copies
# it to a fresh .run dir for every start). Sets CH_CFGDIR. Never rebuilds: build/ must exist (BUILD_FROM=DIR: that
# snapshot of a build/ instead).
prepare_clubhouse() {
  local name="$1" build="${BUILD_FROM:-$REPO_ROOT/build}"
  [ -f "$build/entry.mjs" ] || die "$build/entry.mjs missing (run bash scripts/build once)"
  [ -x "$WRANGLER" ] || die "$WRANGLER missing (bash scripts/setup)"
  local cfgdir="$WORK/$name-cfg"
  mkdir -p "$cfgdir"
  cp -r "$build" "$cfgdir/build"
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
  mkdir -p "$WORK/state-$name"
  if grep -q '^\[\[d1_databases\]\]' "$cfgdir/wrangler.toml"; then
    ( cd "$cfgdir" && "$WRANGLER" d1 migrations apply DB --local --config "$cfgdir/wrangler.toml" \
        --persist-to "$WORK/state-$name" ) > "$WORK/$name-migrate.log" 2>&1 \
      || { tail -n 30 "$WORK/$name-migrate.log" >&2; die "clubhouse D1 migrations failed"; }
  fi
  CH_CFGDIR="$cfgdir"
  CH_STATE="$WORK/state-$name"
}

# spawn_clubhouse NAME "VAR:VALUE ...": spawn_server with the generated config and --var flags (no wait).
spawn_clubhouse() {
  local name="$1" vars=() kv
  for kv in $2; do vars+=(--var "$kv"); done
  STATE_FROM="$CH_STATE" spawn_server "$name" "$CH_CFGDIR" "$WRANGLER" --config "$CH_CFGDIR/wrangler.toml" "${vars[@]+"${vars[@]}"}"
}

# spawn_profiled SIDE (clubhouse|baseline): starts the server a probe looks at (no wait). Clubhouse gets the
# limits a load test must lift and LOG_LEVEL=error; CLUBHOUSE_EXTRA_VARS adds more.
spawn_profiled() {
  if [ "$1" = baseline ]; then
    prepare_baseline base
    spawn_server base "$BASE_DIR" "$BASE_WRANGLER"
  else
    prepare_clubhouse ch
    spawn_clubhouse ch "$LOAD_TEST_VARS LOG_LEVEL:error ${CLUBHOUSE_EXTRA_VARS:-}"
  fi
}

# median of numbers on stdin (one per line)
median() { sort -g | awk '{ v[NR] = $1 } END { if (!NR) { print "nan"; exit } if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
