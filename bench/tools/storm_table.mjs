// The reconnect storm's table (bench/storm.sh): per side the medians over repeats, and Clubhouse/baseline as the
// median of the per-repeat ratios; lost, duplicated, out of order and failed reconnects summed.
//
//   node bench/tools/storm_table.mjs RAW.jsonl OUT.json
//   node bench/tools/storm_table.mjs --pool OUT.json IN.jsonl [IN.jsonl ...]
//       runs of the same build pooled: each file's repeats renumbered after the previous file's, into OUT.json.jsonl
import fs from "node:fs";

const readRows = (f) => fs.readFileSync(f, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
let [raw, outFile, ...inputs] = process.argv.slice(2);
if (raw === "--pool") {
  raw = `${outFile}.jsonl`;
  const pooled = [];
  let offset = 0;
  for (const f of inputs) {
    const rs = readRows(f);
    for (const r of rs) pooled.push({ ...r, repeat: r.repeat + offset });
    offset += Math.max(0, ...rs.map((r) => r.repeat));
  }
  fs.writeFileSync(raw, pooled.map((r) => JSON.stringify(r)).join("\n") + "\n");
}
const rows = readRows(raw);
const get = (o, p) => p.split(".").reduce((x, k) => (x == null ? undefined : x[k]), o);
const median = (v) => {
  const s = v.filter((x) => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const round = (x) => (x == null ? null : Math.round(x * 1000) / 1000);

const metrics = [
  ["every socket caught up (ms after the drop)", "storm.all_caught_up_ms"],
  ["caught up p50 (ms)", "storm.caught_up_after_drop.p50_ms"],
  ["caught up p99 (ms)", "storm.caught_up_after_drop.p99_ms"],
  ["every socket reconnected (ms after the drop)", "storm.connected_after_drop.max_ms"],
  ["handshake p99 (ms)", "storm.connect_ms.p99_ms"],
  ["first live message latency p50 (ms)", "storm.first_live_latency.p50_ms"],
  ["first live message latency p99 (ms)", "storm.first_live_latency.p99_ms"],
  ["Worker CPU per reconnect, drop to caught up (µs)", "cpu.to_caught_up.worker_us_per_reconnect"],
  ["Worker CPU per reconnect, with 1 s tail (µs)", "cpu.with_tail.worker_us_per_reconnect"],
  ["Worker CPU over the storm, drop to caught up (ms)", "cpu.to_caught_up.worker_ms"],
  ["Worker CPU before the drop, senders only (ms/s)", "cpu.steady_worker_ms_per_s"],
];
const bySide = (s) => rows.filter((r) => r.side === s && r.result);
const repeats = [...new Set(rows.map((r) => r.repeat))].sort((a, b) => a - b);
const table = metrics.map(([name, path]) => {
  const a = bySide("A").map((r) => get(r.result, path));
  const b = bySide("B").map((r) => get(r.result, path));
  const ratios = repeats.map((rep) => {
    const x = get(rows.find((r) => r.side === "A" && r.repeat === rep)?.result, path);
    const y = get(rows.find((r) => r.side === "B" && r.repeat === rep)?.result, path);
    return typeof x === "number" && typeof y === "number" && y !== 0 ? x / y : null;
  });
  return { metric: name, path, clubhouse: round(median(a)), baseline: round(median(b)),
    ratio: round(median(ratios)), per_repeat: ratios.map(round), clubhouse_runs: a, baseline_runs: b };
});
// The target: Clubhouse's every-socket-caught-up within 2x the baseline's plain reconnect (every socket back and
// receiving), per repeat.
const target = repeats.map((rep) => {
  const a = get(rows.find((r) => r.side === "A" && r.repeat === rep)?.result, "storm.all_caught_up_ms");
  const b = get(rows.find((r) => r.side === "B" && r.repeat === rep)?.result, "storm.all_caught_up_ms");
  return typeof a === "number" && typeof b === "number" ? round(a / b) : null;
});
const sum = (s, p) => bySide(s).reduce((t, r) => t + (get(r.result, p) ?? 0), 0);
const checks = {};
for (const s of ["A", "B"]) {
  checks[s] = {
    runs: bySide(s).length, failed_runs: rows.filter((r) => r.side === s && !r.result).length,
    lost: sum(s, "check.lost"), dup: sum(s, "check.dup"), out_of_order: sum(s, "check.out_of_order"),
    missed_while_away: sum(s, "check.gap_missed"), reconnect_failures: sum(s, "storm.failed"),
    not_caught_up: bySide(s).filter((r) => !get(r.result, "storm.all_caught_up")).length,
    truth_gaps: sum(s, "truth_gaps"), history_items: sum(s, "storm.history_items"),
  };
}
const first = rows.find((r) => r.result)?.result ?? {};
const out = { sizes: { clients: first.clients, rooms: first.rooms, users: first.users, rate_per_room: first.rate_per_room },
  repeats: repeats.length, table, caught_up_ratio_per_repeat: target, checks };
fs.writeFileSync(outFile, JSON.stringify(out, null, 2) + "\n");

console.log(`\nReconnect storm: ${first.clients} sockets in ${first.rooms} rooms, ${first.rate_per_room} msg/s per room, ${repeats.length} repeats`);
console.log(`A = Clubhouse (since), B = baseline (plain reconnect); ratio = median of per-repeat A/B\n`);
const w = Math.max(...table.map((t) => t.metric.length));
console.log(`${"metric".padEnd(w)}  ${"A".padStart(10)}  ${"B".padStart(10)}  ${"A/B".padStart(7)}  per repeat`);
for (const t of table) {
  console.log(`${t.metric.padEnd(w)}  ${String(t.clubhouse).padStart(10)}  ${String(t.baseline).padStart(10)}  ${String(t.ratio).padStart(7)}  ${t.per_repeat.join(" ")}`);
}
console.log(`\ntarget (A caught up <= 2x B reconnected), per repeat: ${target.join(" ")}`);
for (const s of ["A", "B"]) console.log(`${s}: ${JSON.stringify(checks[s])}`);
console.log(`\nwritten: ${outFile} (raw runs: ${raw})`);
