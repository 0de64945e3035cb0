#!/usr/bin/env bash
# How many SQLite commits each chat message (or, with --connect, each connection) costs, Clubhouse and the JS
# baseline: counts the fsync calls of the workerd that runs the Worker (every commit of a Durable Object's SQLite
# fsyncs, on the thread that runs every object and the Worker) during the message phase (or the connect burst) of
# one load run per side, after an unmeasured warm-up run.
#
#   bash bench/probes/commits.sh [--connect] [--files] [-- BENCH ARGS...]
#   default load: --clients 1 --rooms 1 --senders 1 --messages 500 --window 8   (the `solo` scenario, shorter)
#   with --connect: --clients 100 --rooms 1 --senders 1 --messages 10           (a burst of 100 new badges)
#   --files (message phase only): also which databases those fsyncs (and ftruncates: an object closing checkpoints its WAL and
#            truncates its database) were for, per kind of object, and their time in the call
#
# For messages it also counts the other system calls a message costs the process: pwrite64 and pread64 (SQLite
# pages written, and read back: a closing object's checkpoint reads its WAL) and writev (one per WebSocket frame
# sent), each per message sent.
#
# Needs strace and build/ (bash scripts/build). strace slows the process it watches: the counts are what this
# is for, not the speed (bench/run.sh measures that). Clubhouse's own count of its groups is in its room stats
# (`since_wake`, README).
set -euo pipefail
WORK_PREFIX=clubhouse-commits
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PHASE=messages BENCH_ARGS=(--clients 1 --rooms 1 --senders 1 --messages 500 --window 8) FILES=0
while [ $# -gt 0 ]; do
  case "$1" in
    --connect) PHASE=connect BENCH_ARGS=(--clients 100 --rooms 1 --senders 1 --messages 10) ;;
    --files) FILES=1 ;;
    --) shift; BENCH_ARGS=("$@"); break ;;
    *) other_arg "$1" ;;
  esac
  shift
done
[ "$PHASE:$FILES" != connect:1 ] || die "--files is for the message phase (without --connect)"
command -v strace >/dev/null || die "strace is not installed"
load_tool

count_side() {  # count_side SIDE: prints "SIDE: M messages, F fsyncs, F/M per message"
  local side="$1"
  spawn_profiled "$side"
  wait_http
  workerd_pids "$SERVER_PID" "$SERVER_PORT"
  [ -n "$WORKER_PID" ] || die "no workerd running the Worker found"
  warm_up "${BENCH_ARGS[@]}"
  local trace="$WORK/strace-$side.txt" pidfile="$WORK/strace-$side.pid" window="$WORK/window-$side.txt"
  local files="$WORK/files-$side.txt"
  rm -f "$pidfile"; : > "$window"
  # Messages: strace starts when the bench starts sending (its "senders x messages" progress line) and counts
  # until the end. Connects: strace attaches during the token phase (attaching takes longer than a burst of 100
  # connects lasts) with timestamps, and only the calls between "connecting" and "connected" count.
  "$BIN" -v --url "$SERVER_URL" --server-port "$SERVER_PORT" "${BENCH_ARGS[@]}" 2>&1 >"$WORK/bench-$side.txt" \
    | while IFS= read -r line; do
        case "$PHASE:$line" in
          messages:*" senders x "*)
            if [ "$FILES" = 1 ]; then
              # One line per call (a process has one tracer): -y names each call's file, -T its time in the call.
              strace -f -y -T -e trace=fsync,fdatasync,ftruncate,pwrite64,pread64,writev -p "$WORKER_PID" \
                -o "$files" 2>/dev/null &
            else
              strace -f -c -e trace=fsync,fdatasync,pwrite64,pread64,writev -p "$WORKER_PID" -o "$trace" 2>/dev/null &
            fi
            echo $! > "$pidfile" ;;
          connect:*"getting tokens"*)
            strace -f -tt -e trace=fsync,fdatasync -p "$WORKER_PID" -o "$trace" 2>/dev/null &
            echo $! > "$pidfile" ;;
          connect:*connecting*|connect:*connected*) date +%H:%M:%S.%6N >> "$window" ;;
        esac
      done
  [ -f "$pidfile" ] || die "the run never reached its $PHASE phase"
  kill -INT "$(cat "$pidfile")" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
  # --files: the same summary as strace -c's (% time, seconds, usecs/call, calls, syscall), from the lines.
  if [ "$FILES" = 1 ]; then
    sed -nE 's/^[0-9]+ +([a-z0-9]+)\(.*/\1/p' "$files" | sort | uniq -c | awk '{ print "- - -", $1, $2 }' > "$trace"
  fi
  local units fsyncs unit
  if [ "$PHASE" = messages ]; then
    unit=message
    units="$(sed -nE 's/^ *run *: sent ([0-9]+).*/\1/p' "$WORK/bench-$side.txt" | head -1)"
    fsyncs="$(awk '$NF ~ /^f(data)?sync$/ { n += $4 } END { print n + 0 }' "$trace")"
  else
    unit=connection
    [ "$(wc -l < "$window")" -ge 2 ] || die "$side: the run never reached \"connected\""
    units="$(sed -nE 's/^ *connect: ok ([0-9]+).*/\1/p' "$WORK/bench-$side.txt" | head -1)"
    # strace -f lines: "PID HH:MM:SS.micro fsync(...)"; same day, so the times compare as text.
    fsyncs="$(awk -v from="$(sed -n 1p "$window")" -v to="$(sed -n 2p "$window")" \
      '$3 ~ /^f(data)?sync\(/ && $2 >= from && $2 <= to { n++ } END { print n + 0 }' "$trace")"
  fi
  [ -n "$units" ] && [ "$units" -gt 0 ] || die "$side: no $unit measured"
  printf '%s: %s %ss, %s fsyncs, %s per %s\n' "$side" "$units" "$unit" "$fsyncs" \
    "$(awk -v f="$fsyncs" -v m="$units" 'BEGIN { printf "%.3f", f / m }')" "$unit"
  if [ "$PHASE" = messages ]; then
    # strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall
    awk -v m="$units" '$NF ~ /^(pwrite64|pread64|writev)$/ { printf "  %-9s %8d calls, %.3f per message\n", $NF, $4, $4 / m }' "$trace"
  fi
  if [ "$FILES" = 1 ]; then by_file "$files"; fi
  kill_group "$SERVER_PID"
}

# by_file TRACE: strace -f -y -T lines ("PID call(FD</path/v3/do/CLASS/HASH.sqlite-wal>...) = 0 <0.000123>")
# summed per call, kind of object (the directory under v3/: do/CLASS, d1/..., kv/...) and file (database or WAL).
by_file() {
  sed -nE 's#^[0-9]+ +(fsync|fdatasync|ftruncate)\([0-9]+<[^>]*/v3/([^/]+/[^/]+)/[^/>]*(\.sqlite(-wal)?)>.*<([0-9.]+)>$#\1 \2\3 \5#p' "$1" \
    | awk '{ n[$1 " " $2]++; t[$1 " " $2] += $3 }
           END { for (k in n) printf "  %6d %-10s in %8.1f ms  %s\n", n[k], substr(k, 1, index(k, " ") - 1), t[k] * 1000, substr(k, index(k, " ") + 1) }' \
    | sort -k1,1nr
}

count_side clubhouse
count_side baseline
