#!/usr/bin/env bash
# How many WebSockets one Clubhouse room holds under `wrangler dev` before something gives, and memory per socket.
#
#   bash bench/probes/capacity.sh [--steps 500,1000,...] [--users U] [--no-cap-check] [--baseline] [--client undici|raw]
#        defaults: steps 500,1000,1500,2000,2500,3000,3500,4000,5000,6000,8000,10000; U=12 users (sockets share them round-robin)
#
# One server (uses the existing build/) with MAX_SOCKETS_PER_ROOM 32768, MAX_SOCKETS_PER_USER 1000 (the most
# src/config.rs accepts: a larger value is refused with a config_invalid warning and the default 5 is used, so U
# users hold at most 1000*U sockets), the rate limits at 100000 and SIGNUP_MAX_PER_IP 1000000. Sockets are opened
# into ONE room in steps (32 handshakes in flight); at each step, once both workerd processes are idle: VmRSS of the Worker's workerd and of the proxy, fds of both, then one
# message from the first socket, counted on every open socket (lost = open sockets that did not get it in 30 s).
# It stops at the first step where handshakes fail (>= 200), fewer than 90 % of the sockets are open, or sockets
# closed. KB per socket = slope of RSS between steps. Then the per-room cap: a second server with
# MAX_SOCKETS_PER_ROOM=100, 100 sockets, and a raw upgrade request for the 101st (status and body printed).
# The wrangler log's error lines are printed. Few users on purpose: each new user online makes a presence broadcast
# to the whole room (O(N^2) frames if every socket were a new user), which is not what this measures.
# --client: undici (default) = node's WebSocket, which offers permessage-deflate as browsers do (the server accepts it:
# the summary prints the negotiated extensions); raw = a minimal client offering no extension, as clubhouse-bench.
# --baseline: the same probe against the JS baseline instead (no per-room cap check), for a like-for-like KB/socket.
# Environment: KEEP_WORK=1 keeps the temp dir.
set -euo pipefail
WORK_PREFIX=clubhouse-capacity
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

STEPS="500,1000,1500,2000,2500,3000,3500,4000,5000,6000,8000,10000"
USERS=12 CAP_CHECK=1 BASELINE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) STEPS="$2"; shift ;;
    --users) USERS="$2"; shift ;;
    --no-cap-check) CAP_CHECK=0 ;;
    --baseline) BASELINE=1; CAP_CHECK=0 ;;
    --client) export PROBE_CLIENT="$2"; shift ;;
    *) other_arg "$1" ;;
  esac
  shift
done
log "load average before: $(loadavg); open-file limit here: soft $(ulimit -Sn), hard $(ulimit -Hn)"
if [ "$BASELINE" = 1 ]; then
  prepare_baseline baseline
  spawn_server baseline "$BASE_DIR" "$BASE_WRANGLER"; wait_http
else
  prepare_clubhouse clubhouse
  spawn_clubhouse capacity "MAX_SOCKETS_PER_ROOM:32768 $LOAD_TEST_VARS"; wait_http
  sleep 1
  if grep -q config_invalid "$SERVER_LOG"; then grep config_invalid "$SERVER_LOG" >&2; die "a --var was refused"; fi
fi
workerd_pids "$SERVER_PID" "$SERVER_PORT"
[ -n "$WORKER_PID" ] && [ -n "$PROXY_PID" ] || die "workerd processes not found"
log "server $SERVER_URL: worker pid $WORKER_PID (fd limit $(awk '/open files/ { print $4 }' /proc/$WORKER_PID/limits)), proxy pid $PROXY_PID (fd limit $(awk '/open files/ { print $4 }' /proc/$PROXY_PID/limits))"
CAP_LOG="$SERVER_LOG"
RAW="$WORK/capacity.jsonl"
node --experimental-websocket --no-warnings "$NODE_HELPER" capacity "$SERVER_URL" "$STEPS" "$USERS" "$WORKER_PID" "$PROXY_PID" \
  > "$RAW" || log "probe exited with an error"
alive_w=no alive_p=no
kill -0 "$WORKER_PID" 2>/dev/null && alive_w=yes
kill -0 "$PROXY_PID" 2>/dev/null && alive_p=yes
log "after the run: worker workerd alive: $alive_w, proxy alive: $alive_p; load $(loadavg)"
sleep 1
kill_group "$SERVER_PID"

node - "$RAW" <<'EOF'
const fs = require("fs");
const rows = fs.readFileSync(process.argv[2], "utf8").split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
const f = (x, d = 0) => (x == null ? "-" : Number(x).toFixed(d));
console.log(`\none room, sockets opened in steps (RSS in MB; KB/socket = slope from the previous step); client ${rows[1]?.client}, negotiated extensions: ${JSON.stringify(rows[1]?.extensions ?? null)}`);
console.log(`${"step".padStart(6)} ${"open".padStart(6)} ${"hs fail".padStart(7)} ${"closed".padStart(6)} ${"bcast got/exp".padStart(13)} ${"conn p50".padStart(8)} ${"worker MB".padStart(9)} ${"proxy MB".padStart(8)} ${"proxy fds".padStart(9)} ${"wrk fds".padStart(7)} ${"KB/s wrk".padStart(8)} ${"KB/s prx".padStart(8)}`);
let prev = null;
const slopes = [];
for (const r of rows) {
  const sum = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);
  let sw = null, sp = null;
  if (prev && r.open > prev.open && r.worker_rss_kb && prev.worker_rss_kb) {
    sw = (r.worker_rss_kb - prev.worker_rss_kb) / (r.open - prev.open);
    sp = (r.proxy_rss_kb - prev.proxy_rss_kb) / (r.open - prev.open);
    if (r.broadcast?.lost === 0 && r.open_after_broadcast === r.open) slopes.push({ from: prev.open, to: r.open, sw, sp });
  }
  console.log(`${String(r.step).padStart(6)} ${String(r.open).padStart(6)} ${String(sum(r.handshake_failures)).padStart(7)} ${String(sum(r.closes)).padStart(6)} ${(r.broadcast ? `${r.broadcast.delivered}/${r.broadcast.expected}` : "-").padStart(13)} ${f(r.connect_p50_ms, 1).padStart(8)} ${f(r.worker_rss_kb / 1024, 1).padStart(9)} ${f(r.proxy_rss_kb / 1024, 1).padStart(8)} ${String(r.proxy_fds).padStart(9)} ${String(r.worker_fds).padStart(7)} ${f(sw, 1).padStart(8)} ${f(sp, 1).padStart(8)}`);
  for (const [k, v] of Object.entries(r.handshake_failures || {})) if (v) console.log(`         handshake failures: ${v} x ${k}`);
  for (const [k, v] of Object.entries(r.closes || {})) if (v) console.log(`         closes: ${v} x ${k}`);
  if (r.open > 0) prev = r;
}
const good = rows.filter((r) => r.open > 0 && r.broadcast?.lost === 0 && r.open_after_broadcast === r.open);
const first = rows.find((r) => r.step === 0), last = good[good.length - 1];
if (first && last) {
  const kw = (last.worker_rss_kb - first.worker_rss_kb) / last.open, kp = (last.proxy_rss_kb - first.proxy_rss_kb) / last.open;
  const fdp = (last.proxy_fds - first.proxy_fds) / last.open;
  console.log(`\nlargest healthy step: ${last.open} sockets, broadcast reached all of them`);
  console.log(`overall 0 -> ${last.open}: worker ${kw.toFixed(1)} KB/socket, proxy ${kp.toFixed(1)} KB/socket, proxy ${fdp.toFixed(2)} fds/socket`);
  const med = (v) => { v = [...v].sort((a, b) => a - b); const m = v.length >> 1; return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2; };
  if (slopes.length) console.log(`median step slope: worker ${med(slopes.map((s) => s.sw)).toFixed(1)} KB/socket, proxy ${med(slopes.map((s) => s.sp)).toFixed(1)} KB/socket (${slopes.length} healthy steps)`);
  const kb = slopes.length ? med(slopes.map((s) => s.sw)) : kw;
  console.log(`extrapolation: 128 MB / ${kb.toFixed(1)} KB = ~${Math.floor(128 * 1024 / kb)} sockets if all of that process's growth counted against the isolate (upper bound on the cost; edge cap 32768 hibernatable sockets per object)`);
}
EOF

log "wrangler log of the capacity server: lines that look like errors (first 30 of $(grep -ciE 'error|fail|EMFILE|too many|refus|reset' "$CAP_LOG" || true))"
grep -iE 'error|fail|EMFILE|too many|refus|reset' "$CAP_LOG" | cut -c1-300 | sort | uniq -c | sort -rn | head -30 >&2 || true

if [ "$CAP_CHECK" = 1 ]; then
  log "per-room cap: MAX_SOCKETS_PER_ROOM=100"
  spawn_clubhouse roomcap "MAX_SOCKETS_PER_ROOM:100 MAX_SOCKETS_PER_USER:1000 SIGNUP_MAX_PER_IP:1000000"; wait_http
  node --experimental-websocket --no-warnings "$NODE_HELPER" roomcap "$SERVER_URL" 100 || log "roomcap probe failed"
  kill_group "$SERVER_PID"
fi

# The hibernation attachment and tags per socket (src/room/sockets.rs: Member {"u":..,"c":u32} as one JSON string, tags
# "u:<user>" and "j:<32-hex jti>"), for the longest username (32 chars) and the largest u32.
node -e '
const u = "x".repeat(32);
const att = JSON.stringify(JSON.stringify({ u, c: 4294967295 }));   // the attachment is a JS string holding the JSON
const inner = JSON.stringify({ u, c: 4294967295 }).length;
const tags = ("u:" + u).length + ("j:" + "0".repeat(32)).length;
console.log(`\nattachment per socket (32-char username): ${inner} bytes of JSON (${att.length} bytes as a serialised string); tags ${tags} bytes; limit 16384 bytes for the attachment (${(100 * inner / 16384).toFixed(2)} %)`);
'
log "load average after: $(loadavg)"
if [ "${KEEP_WORK:-0}" = 1 ]; then log "raw: $RAW, logs in $WORK"; fi
