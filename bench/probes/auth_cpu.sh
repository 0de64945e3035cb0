#!/usr/bin/env bash
# CPU per `POST /users/` (sign up) and per `POST /token` (log in), in the Worker's workerd process and with the dev
# proxy, for three servers side by side: Clubhouse at its default argon2id (m=19456 KiB, t=2, p=1), Clubhouse with
# ARGON2_M_KIB=4096 ARGON2_T=1, and the JS baseline (PBKDF2-SHA256, 100k iterations, WebCrypto).
#
#   bash bench/probes/auth_cpu.sh [--k K] [--repeats R]     (defaults K=30, R=3; uses the existing build/)
#
# Per repeat and server (order rotated): K sequential signups, then K sequential logins of those users, one request
# at a time on a fresh connection; utime+stime of the Worker's workerd and of the proxy (/proc/PID/stat) read before
# and after each phase, divided by K; wall p50. Prints the medians over repeats. Clubhouse runs with
# SIGNUP_MAX_PER_IP and LOGIN_MAX_FAILURES_PER_IP at 1000000 (the per-IP throttles would refuse the signups).
# Environment: KEEP_WORK=1 keeps the temp dir.
set -euo pipefail
WORK_PREFIX=clubhouse-authcpu
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

K=30 REPEATS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --k) K="$2"; shift ;;
    --repeats) REPEATS="$2"; shift ;;
    *) other_arg "$1" ;;
  esac
  shift
done
CLK_TCK="$(getconf CLK_TCK)"
RAW="$WORK/auth.jsonl"
: > "$RAW"
log "load average before: $(loadavg)"

THROTTLES="SIGNUP_MAX_PER_IP:1000000 LOGIN_MAX_FAILURES_PER_IP:1000000"
declare -A URL PG PORTS
prepare_clubhouse clubhouse
spawn_clubhouse ch-default "$THROTTLES"; wait_http
URL[ch-default]="$SERVER_URL"; PG[ch-default]="$SERVER_PID"; PORTS[ch-default]="$SERVER_PORT"
spawn_clubhouse ch-m4096-t1 "$THROTTLES ARGON2_M_KIB:4096 ARGON2_T:1"; wait_http
URL[ch-m4096-t1]="$SERVER_URL"; PG[ch-m4096-t1]="$SERVER_PID"; PORTS[ch-m4096-t1]="$SERVER_PORT"
prepare_baseline baseline
spawn_server baseline "$BASE_DIR" "$BASE_WRANGLER"; wait_http
URL[baseline]="$SERVER_URL"; PG[baseline]="$SERVER_PID"; PORTS[baseline]="$SERVER_PORT"

SERVERS=(ch-default ch-m4096-t1 baseline)
for s in "${SERVERS[@]}"; do
  workerd_pids "${PG[$s]}" "${PORTS[$s]}"
  [ -n "$WORKER_PID" ] && [ -n "$PROXY_PID" ] || die "$s: workerd processes not found in group ${PG[$s]}"
  log "$s: ${URL[$s]} worker pid $WORKER_PID, proxy pid $PROXY_PID"
  # warm up: one signup + login (first-request compile and D1/KV/DO start are not what we measure)
  node "$NODE_HELPER" auth "${URL[$s]}" 1 "warm$RANDOM" "$CLK_TCK" "$WORKER_PID" "$PROXY_PID" > /dev/null
done

for r in $(seq 1 "$REPEATS"); do
  n=${#SERVERS[@]}
  for i in $(seq 0 $((n - 1))); do
    s="${SERVERS[$(((i + r - 1) % n))]}"
    wait_idle "${PG[@]}"
    workerd_pids "${PG[$s]}" "${PORTS[$s]}"
    load="$(loadavg)"
    log "repeat $r/$REPEATS: $s (load $load)"
    out="$(node "$NODE_HELPER" auth "${URL[$s]}" "$K" "r${r}x$RANDOM" "$CLK_TCK" "$WORKER_PID" "$PROXY_PID")" \
      || die "$s: probe failed"
    printf '{"server":"%s","repeat":%s,"load":"%s","r":%s}\n' "$s" "$r" "$load" "$out" >> "$RAW"
    printf '  %s\n' "$out" | cut -c1-400 >&2
  done
done
log "load average after: $(loadavg)"

node - "$RAW" "$K" <<'EOF'
const fs = require("fs");
const [raw, k] = process.argv.slice(2);
const rows = fs.readFileSync(raw, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
const med = (v) => { v = v.filter((x) => typeof x === "number").sort((a, b) => a - b); if (!v.length) return null; const m = v.length >> 1; return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2; };
const f = (x) => (x == null ? "-" : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const servers = [...new Set(rows.map((r) => r.server))];
console.log(`\nCPU per request (ms), medians over ${Math.max(...rows.map((r) => r.repeat))} repeats of ${k} sequential requests`);
console.log(`${"server".padEnd(14)} ${"phase".padEnd(7)} ${"worker".padStart(7)} ${"proxy".padStart(6)} ${"total".padStart(7)} ${"wall p50".padStart(9)} ${"wall p90".padStart(9)}  failures  per-repeat worker`);
const by = {};
for (const s of servers) for (const ph of ["signup", "login"]) {
  const rs = rows.filter((r) => r.server === s).map((r) => r.r[ph]);
  const m = (key) => med(rs.map((x) => x[key]));
  const fails = rs.reduce((a, x) => a + Object.values(x.failures).reduce((p, q) => p + q, 0), 0);
  by[`${s}/${ph}`] = m("cpu_ms_per_req_worker");
  console.log(`${s.padEnd(14)} ${ph.padEnd(7)} ${f(m("cpu_ms_per_req_worker")).padStart(7)} ${f(m("cpu_ms_per_req_proxy")).padStart(6)} ${f(m("cpu_ms_per_req_total")).padStart(7)} ${f(m("p50_ms")).padStart(9)} ${f(m("p90_ms")).padStart(9)}  ${String(fails).padStart(8)}  ${rs.map((x) => f(x.cpu_ms_per_req_worker)).join(" ")}`);
  for (const x of rs) for (const [e, n] of Object.entries(x.failures)) console.log(`    ${n} x ${e}`);
}
console.log(`\nWorker-process CPU ratios vs baseline: ` + servers.filter((s) => s !== "baseline").map((s) =>
  `${s} signup ${(by[`${s}/signup`] / by["baseline/signup"]).toFixed(2)}, login ${(by[`${s}/login`] / by["baseline/login"]).toFixed(2)}`).join("; "));
console.log(`Workers limits: Free plan 10 ms CPU per request; Standard 30 s (default) per request.`);
console.log(`The Worker-process figure includes everything that process does for the request (the Worker, the Limiter and`);
console.log(`room Durable Objects it calls, local D1/KV simulation); the edge bills only the Worker's own CPU.`);
console.log(`load averages seen: ${rows.map((r) => r.load.split(" ")[0]).join(" ")}`);
EOF
if [ "${KEEP_WORK:-0}" = 1 ]; then log "raw: $RAW"; fi
