#!/usr/bin/env bash
# Cold start to first response under `wrangler dev`, Clubhouse vs the JS baseline, alternating, N repeats.
#
#   bash bench/coldstart.sh [--repeats N]        (default 5; uses the existing build/, never rebuilds)
#   bash bench/coldstart.sh --old DIR            also a saved build/ (cp -r build DIR at the old commit), started
#                                                like the current one with GET /nope first: new/old in one run
#   bash bench/coldstart.sh --worker DIR         also another Worker project (DIR/wrangler.toml, ready to run: no
#                                                [build]; repeatable), under the repo's wrangler with GET /nope
#                                                first: e.g. the workers-rs floor (bench/floor-rs, its build.sh)
#
# Every start is a fresh `wrangler dev` (new state dir; Clubhouse's D1 is migrated beforehand, not timed) in its own
# process group, killed after its requests. Per start: (a) spawn -> the TCP port accepts (polled every 5 ms),
# (b) the very first HTTP request, then the 2nd and 3rd of the same path, each on a fresh connection; (a)+(b) is
# spawn -> 1st response. wrangler's proxy accepts before the Worker's own workerd is ready, so the 1st request also
# waits out the rest of that start: (a) and (b) trade time between them, their sum does not. Also the CPU the
# server's whole process group (wrangler, its esbuild, both workerd) had used by the first response (/proc, 10 ms
# ticks): less moved by the machine's load than the walls. Clubhouse is
# started twice per repeat: once with GET /nope (a plain 404, comparable with the baseline's) first, once with
# GET /healthz (touches D1 and a session-ledger Durable Object) first; the baseline once with GET /nope first; the
# order rotates by one every repeat. Prints medians, ratios, and the
# WASM size (raw, gzip -9) and build/index.js size. Environment: KEEP_WORK=1 keeps the temp dir.
set -euo pipefail
WORK_PREFIX=clubhouse-coldstart
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPEATS=5
OLD_BUILD=
OTHER_DIRS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --repeats) REPEATS="$2"; shift ;;
    --old) OLD_BUILD="$2"; shift ;;
    --worker) OTHER_DIRS+=("$(cd "$2" && pwd)"); shift ;;
    *) other_arg "$1" ;;
  esac
  shift
done

RAW="$WORK/coldstart.jsonl"
: > "$RAW"
log "load average before: $(loadavg)"
if [ -n "$OLD_BUILD" ]; then
  BUILD_FROM="$OLD_BUILD" prepare_clubhouse old
  OLD_CFGDIR="$CH_CFGDIR" OLD_STATE="$CH_STATE"
fi
prepare_clubhouse clubhouse
NEW_CFGDIR="$CH_CFGDIR" NEW_STATE="$CH_STATE"
prepare_baseline baseline

# one_start SIDE KIND PATH...: fresh server, probe, kill. Appends a JSON line to $RAW.
one_start() {
  local side="$1" kind="$2"; shift 2
  if [ "$side" = clubhouse ]; then
    CH_CFGDIR="$NEW_CFGDIR" CH_STATE="$NEW_STATE" spawn_clubhouse clubhouse ""
  elif [ "${side#worker}" != "$side" ]; then
    local dir="${OTHER_DIRS[${side#worker}]}"
    spawn_server "$side" "$dir" "$WRANGLER" --config "$dir/wrangler.toml"
  elif [ "$side" = old ]; then
    CH_CFGDIR="$OLD_CFGDIR" CH_STATE="$OLD_STATE" spawn_clubhouse old ""
  else spawn_server baseline "$BASE_DIR" "$BASE_WRANGLER"; fi
  local out
  out="$(PROBE_PGID="$SERVER_PID" node "$NODE_HELPER" coldstart 127.0.0.1 "$SERVER_PORT" "$SPAWN_NS" "$@" 2>>"$WORK/probe.err")" || out='{"error":"probe failed"}'
  kill_group "$SERVER_PID"
  printf '{"side":"%s","kind":"%s","load":"%s","r":%s}\n' "$side" "$kind" "$(loadavg)" "$out" >> "$RAW"
  printf '  %-9s %-13s %s\n' "$side" "$kind" "$out" | cut -c1-220 >&2
}

for r in $(seq 1 "$REPEATS"); do
  log "repeat $r/$REPEATS (load $(loadavg))"
  # every kind once per repeat, the list rotated by one each repeat, so drift in the machine's load hits every kind
  # alike (each takes every position in turn; with fewer repeats than kinds, as evenly as that allows)
  kinds=(C404 B C200)
  [ -n "$OLD_BUILD" ] && kinds+=(O404)
  for i in "${!OTHER_DIRS[@]}"; do kinds+=("W$i"); done
  order=""
  for j in "${!kinds[@]}"; do order="$order ${kinds[(j + r) % ${#kinds[@]}]}"; done
  for o in $order; do
    case "$o" in
      C404) one_start clubhouse nope-first /nope /nope /nope /healthz /healthz /healthz ;;
      C200) one_start clubhouse healthz-first /healthz /healthz /healthz /nope /nope /nope ;;
      B)    one_start baseline nope-first /nope /nope /nope ;;
      O404) one_start old nope-first /nope /nope /nope ;;
      W*)   one_start "worker${o#W}" nope-first /nope /nope /nope ;;
    esac
  done
done
log "load average after: $(loadavg)"

WASM="$REPO_ROOT/build/index_bg.wasm"
node - "$RAW" "$(stat -c %s "$WASM")" "$(gzip -9 -c "$WASM" | wc -c)" "$(stat -c %s "$REPO_ROOT/build/index.js")" \
  "$(gzip -9 -c "$REPO_ROOT/build/index.js" | wc -c)" "${OTHER_DIRS[@]+"${OTHER_DIRS[@]}"}" <<'EOF'
const fs = require("fs");
const [raw, wasm, wasmGz, js, jsGz, ...otherDirs] = process.argv.slice(2);
const rows = fs.readFileSync(raw, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
const med = (v) => { v = v.filter((x) => typeof x === "number").sort((a, b) => a - b); if (!v.length) return null; const m = v.length >> 1; return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2; };
const f = (x) => (x == null ? "-" : x >= 100 ? x.toFixed(0) : x.toFixed(1));
const sel = (side, kind) => rows.filter((r) => r.side === side && r.kind === kind && !r.r.error);
// nth request of PATH in a run (0 = its first)
const nth = (r, path, n) => r.r.requests.filter((q) => q.path === path)[n];
const lines = [];
const stat = (label, rs, path, first) => {
  const acc = med(rs.map((r) => r.r.accept_ms));
  const q = [0, 1, 2].map((n) => med(rs.map((r) => nth(r, path, n)?.ms)));
  const total = first ? med(rs.map((r) => r.r.accept_ms + nth(r, path, 0)?.ms)) : null;
  const cpu = first ? med(rs.map((r) => r.r.cpu_ms)) : null;
  const statuses = [...new Set(rs.flatMap((r) => r.r.requests.filter((x) => x.path === path).map((x) => x.status)))].join("/");
  lines.push({ label, n: rs.length, acc, q, statuses, first, total, cpu });
  return { acc, q, total, cpu };
};
const cN = sel("clubhouse", "nope-first"), cH = sel("clubhouse", "healthz-first"), bN = sel("baseline", "nope-first");
const a = stat("clubhouse  GET /nope (first request)", cN, "/nope", true);
stat("clubhouse  GET /healthz after 3x /nope", cN, "/healthz", false);
const h = stat("clubhouse  GET /healthz (first request)", cH, "/healthz", true);
stat("clubhouse  GET /nope after 3x /healthz", cH, "/nope", false);
const b = stat("baseline   GET /nope (first request)", bN, "/nope", true);
const oN = sel("old", "nope-first");
const o = oN.length ? stat("old build  GET /nope (first request)", oN, "/nope", true) : null;
const others = otherDirs.map((dir, i) => {
  const label = require("path").basename(dir).slice(0, 13);
  return { label, s: stat(`${label.padEnd(13)} GET /nope (first request)`, sel(`worker${i}`, "nope-first"), "/nope", true) };
});
console.log(`\ncold start under wrangler dev, medians over ${bN.length} baseline / ${cN.length}+${cH.length} Clubhouse starts (ms)`);
console.log(`${"".padEnd(42)} ${"n".padStart(2)}  ${"spawn->accept".padStart(13)}  ${"1st".padStart(7)}  ${"2nd".padStart(7)}  ${"3rd".padStart(7)}  ${"spawn->1st response".padStart(19)}  ${"CPU by then".padStart(11)}  status`);
for (const l of lines) console.log(`${l.label.padEnd(42)} ${String(l.n).padStart(2)}  ${(l.first ? f(l.acc) : "").padStart(13)}  ${f(l.q[0]).padStart(7)}  ${f(l.q[1]).padStart(7)}  ${f(l.q[2]).padStart(7)}  ${(l.first ? f(l.total) : "").padStart(19)}  ${(l.first ? f(l.cpu) : "").padStart(11)}  ${l.statuses}`);
const acc = med([...cN, ...cH].map((r) => r.r.accept_ms));
// per-repeat ratios are not paired (separate starts); ratio of medians
console.log(`\nratios Clubhouse / baseline (ratio of medians):`);
console.log(`  spawn->accept            ${(acc / b.acc).toFixed(2)}  (${f(acc)} vs ${f(b.acc)} ms; all ${cN.length + cH.length} Clubhouse starts)`);
console.log(`  1st GET /nope            ${(a.q[0] / b.q[0]).toFixed(2)}  (${f(a.q[0])} vs ${f(b.q[0])} ms)`);
console.log(`  2nd GET /nope            ${(a.q[1] / b.q[1]).toFixed(2)}  (${f(a.q[1])} vs ${f(b.q[1])} ms)`);
console.log(`  1st GET /healthz vs baseline's 1st /nope  ${(h.q[0] / b.q[0]).toFixed(2)}`);
if (o) console.log(`  old build's 1st GET /nope ${(o.q[0] / b.q[0]).toFixed(2)}  (${f(o.q[0])} ms); new/old ${(a.q[0] / o.q[0]).toFixed(2)}, spawn->1st response ${(a.total / o.total).toFixed(2)}`);
for (const w of others) {
  console.log(`  ${w.label}: 1st GET /nope / baseline's ${(w.s.q[0] / b.q[0]).toFixed(2)}, Clubhouse's / its ${(a.q[0] / w.s.q[0]).toFixed(2)};` +
    ` spawn->1st response / baseline's ${(w.s.total / b.total).toFixed(2)}, Clubhouse's / its ${(a.total / w.s.total).toFixed(2)}`);
}
console.log(`  spawn->1st response /nope  ${(a.total / b.total).toFixed(2)}  (${f(a.total)} vs ${f(b.total)} ms)`);
console.log(`  CPU by the 1st response    ${(a.cpu / b.cpu).toFixed(2)}  (${f(a.cpu)} vs ${f(b.cpu)} ms; +${f(a.cpu - b.cpu)} ms)`);
if (o) console.log(`  CPU by the 1st response, new - old  ${f(a.cpu - o.cpu)} ms (${f(a.cpu)} vs ${f(o.cpu)})`);
for (const w of others) console.log(`  CPU by the 1st response, Clubhouse - ${w.label}  ${f(a.cpu - w.s.cpu)} ms (${w.label} ${f(w.s.cpu)})`);
console.log(`\nbuild/index_bg.wasm ${wasm} bytes raw, ${wasmGz} gzip -9;  build/index.js ${js} bytes raw, ${jsGz} gzip -9`);
console.log(`load averages seen: ${[...new Set(rows.map((r) => r.load.split(" ")[0]))].join(" ")}`);
EOF
if [ "${KEEP_WORK:-0}" = 1 ]; then log "raw: $RAW"; fi
