// The ratio table of bench/run.sh: A/B (and A/C with a third server) medians over repeats from the raw runs
// (one JSON line per run), then batched Clubhouse against unbatched (scenario Xb against X, A's runs of the same
// repeat).
//
//   node bench/tools/table.mjs RAW.jsonl OUT.json LABEL_A LABEL_B [LABEL_C]
//       the table of one run.sh run (run.sh calls this at its end)
//   node bench/tools/table.mjs --pool OUT.json IN.jsonl [IN.jsonl ...]
//       several runs of the same code pooled: each file's repeats renumbered after the previous
//       file's, written to OUT.json.jsonl, then the table over all of them (labels from the runs)
import fs from "node:fs";

// Pools the runs in `inputs` into `${outFile}.jsonl`; returns table arguments for them.
function pool(outFile, inputs) {
  const pooled = [];
  let offset = 0;
  for (const file of inputs) {
    const rows = fs.readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
    let top = 0;
    for (const r of rows) { top = Math.max(top, r.repeat); pooled.push({ ...r, repeat: r.repeat + offset }); }
    offset += top;
  }
  fs.writeFileSync(`${outFile}.jsonl`, pooled.map((r) => JSON.stringify(r)).join("\n") + "\n");
  const label = (side) => pooled.find((r) => r.side === side && r.result)?.result?.label ?? side;
  const third = pooled.some((r) => r.side === "C") ? [label("C")] : [];
  return [`${outFile}.jsonl`, outFile, label("A"), label("B"), ...third];
}

let args = process.argv.slice(2);
if (args[0] === "--pool") {
  const [, outFile, ...inputs] = args;
  if (!outFile || !inputs.length) {
    console.error("usage: table.mjs --pool OUT.json IN.jsonl [IN.jsonl ...]");
    process.exit(2);
  }
  args = pool(outFile, inputs);
}
const [raw, outFile, la, lb, lc] = args;
const rows = fs.readFileSync(raw, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
// a CPU block with available=false (no processes, or a workerd exited mid-run) yields no figure
const get = (o, p) => p.split(".").reduce((x, k) => (x == null || x.available === false ? undefined : x[k]), o);
const med = (v) => { v = v.filter((x) => typeof x === "number" && isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null; const m = v.length >> 1; return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2; };
const sum = (v) => v.reduce((a, x) => a + (typeof x === "number" ? x : 0), 0);
const metrics = [
  ["deliveries/s", "run.deliveries_per_s", "ratio"],
  ["latency p50 ms", "run.latency_ms.p50", "ratio"],
  ["latency p99 ms", "run.latency_ms.p99", "ratio"],
  ["cpu us/deliv worker", "cpu.worker_us_per_delivery", "ratio"],
  ["cpu us/deliv proxy", "cpu.proxy_us_per_delivery", "ratio"],
  ["cpu us/deliv total", "cpu.total_us_per_delivery", "ratio"],
  ["connect p50 ms", "connect.p50_ms", "ratio"],
  ["connect p99 ms", "connect.p99_ms", "ratio"],
  ["rss KB/socket worker", "connect.rss_kb_per_socket.worker", "ratio"],
  ["token p50 ms", "token.p50_ms", "ratio"],
  ["token p99 ms", "token.p99_ms", "ratio"],
  ["login p50 ms", "login_burst.p50_ms", "ratio"],
  ["login p99 ms", "login_burst.p99_ms", "ratio"],
  ["logins/s", "login_burst.logins_per_s", "ratio"],
  ["cpu us/login total", "login_burst.cpu.total_us_per_login", "ratio"],
  ["lost", "run.lost", "sum"],
  ["dup", "run.dup", "sum"],
  ["misrouted", "run.misrouted", "sum"],
  ["error frames", "run.error_frames", "sum"],
  ["closed early", "run.closed_early", "sum"],
  ["connect fail", "connect.fail", "sum"],
  ["login fail", "login_burst.fail", "sum"],
  ["failed runs", null, "failed"],
];
const scen = [...new Set(rows.map((r) => r.scenario))];
// Wrangler's local data explorer during the runs (a run that does not record it had it on: wrangler's default).
const modes = [...new Set(rows.map((r) => (r.explorer === undefined ? "on (not recorded)" : r.explorer === null ? "unknown" : r.explorer ? "on" : "off")))];
const hasC = rows.some((r) => r.side === "C");
const result = { a: la, b: lb, c: hasC ? lc ?? "C" : null, generated: new Date().toISOString(), local_explorer: modes.length === 1 ? modes[0] : "mixed", scenarios: {} };
const fmt = (x) => (x == null ? "-" : Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(3));
const lines = [];
lines.push(`A = ${la}, B = ${lb}${hasC ? `, C = ${result.c}` : ""}; ratio = median over repeats of (A/B); sums for counts; local data explorer ${result.local_explorer}`);
lines.push(["scenario", "metric", "A median", "B median", "A/B", "per-repeat A/B", ...(hasC ? ["C median", "A/C", "per-repeat A/C"] : [])].join("\t"));
const ratiosOf = (av, bv) => av.map((a, i) => (typeof a === "number" && typeof bv[i] === "number" && bv[i] !== 0 ? a / bv[i] : null));
const fmtRatios = (rs) => rs.map((x) => (x == null ? "-" : x.toFixed(2))).join(" ");
for (const s of scen) {
  const rs = rows.filter((r) => r.scenario === s);
  const reps = [...new Set(rs.map((r) => r.repeat))].sort((a, b) => a - b);
  const pick = (side, rep) => rs.find((r) => r.side === side && r.repeat === rep)?.result ?? null;
  const out = (result.scenarios[s] = { repeats: reps.length, config: pick("A", reps[0])?.config ?? null, metrics: {} });
  for (const [name, path, kind] of metrics) {
    if (kind === "failed") {
      const failed = (side) => rs.filter((r) => r.side === side && !r.result).length;
      const [fa, fb, fc] = [failed("A"), failed("B"), failed("C")];
      out.metrics[name] = hasC ? { a: fa, b: fb, c: fc } : { a: fa, b: fb };
      if (fa || fb || fc) lines.push([s, name, fa, fb, "", "", ...(hasC ? [fc, "", ""] : [])].join("\t"));
      continue;
    }
    const av = reps.map((r) => get(pick("A", r), path)), bv = reps.map((r) => get(pick("B", r), path));
    const cv = reps.map((r) => get(pick("C", r), path));
    if (av.every((x) => x == null) && bv.every((x) => x == null) && cv.every((x) => x == null)) continue;
    if (kind === "sum") {
      out.metrics[name] = { a: sum(av), b: sum(bv), a_runs: av, b_runs: bv, ...(hasC ? { c: sum(cv), c_runs: cv } : {}) };
      lines.push([s, name, sum(av), sum(bv), "", "", ...(hasC ? [sum(cv), "", ""] : [])].join("\t"));
      continue;
    }
    const ratios = ratiosOf(av, bv);
    const m = { a: med(av), b: med(bv), ratio: med(ratios), a_runs: av, b_runs: bv, ratios };
    const cols = [s, name, fmt(m.a), fmt(m.b), m.ratio == null ? "-" : m.ratio.toFixed(3), fmtRatios(ratios)];
    if (hasC) {
      const cr = ratiosOf(av, cv);
      Object.assign(m, { c: med(cv), c_runs: cv, ratio_c: med(cr), ratios_c: cr });
      cols.push(fmt(m.c), m.ratio_c == null ? "-" : m.ratio_c.toFixed(3), fmtRatios(cr));
    }
    out.metrics[name] = m;
    lines.push(cols.join("\t"));
  }
}
// Batched against unbatched Clubhouse: scenario "Xb" against "X", A's runs of the same repeat.
const batchedLines = [];
result.batched_vs_unbatched = {};
for (const s of scen.filter((x) => x.endsWith("b") && scen.includes(x.slice(0, -1)))) {
  const plain = s.slice(0, -1);
  const reps = [...new Set(rows.filter((r) => r.scenario === s).map((r) => r.repeat))].sort((a, b) => a - b);
  const aOf = (sc, rep) => rows.find((r) => r.scenario === sc && r.side === "A" && r.repeat === rep)?.result ?? null;
  const cmp = (result.batched_vs_unbatched[s] = {});
  for (const [name, path] of [["deliveries/s", "run.deliveries_per_s"], ["latency p50 ms", "run.latency_ms.p50"],
    ["latency p99 ms", "run.latency_ms.p99"], ["cpu us/deliv worker", "cpu.worker_us_per_delivery"],
    ["cpu us/deliv total", "cpu.total_us_per_delivery"], ["frames received", "run.frames"]]) {
    const bv = reps.map((r) => get(aOf(s, r), path)), pv = reps.map((r) => get(aOf(plain, r), path));
    const rs = ratiosOf(bv, pv);
    cmp[name] = { batched: med(bv), unbatched: med(pv), ratio: med(rs), ratios: rs };
    batchedLines.push([`${s}/${plain}`, name, fmt(med(bv)), fmt(med(pv)), med(rs) == null ? "-" : med(rs).toFixed(3), fmtRatios(rs)]);
  }
}
fs.writeFileSync(outFile, JSON.stringify(result, null, 2) + "\n");
// aligned table
const cells = lines.slice(1).map((l) => l.split("\t"));
const w = cells[0].map((_, i) => Math.max(...cells.map((c) => String(c[i] ?? "").length)));
console.log("\n" + lines[0]);
for (const c of cells) console.log(c.map((x, i) => (i < 2 ? String(x).padEnd(w[i]) : String(x).padStart(w[i]))).join("  "));
if (batchedLines.length) {
  console.log(`\n${la} batched (Xb) against unbatched (X), same repeat`);
  const bw = batchedLines[0].map((_, i) => Math.max(...batchedLines.map((c) => String(c[i]).length)));
  for (const c of batchedLines) console.log(c.map((x, i) => (i < 2 ? String(x).padEnd(bw[i]) : String(x).padStart(bw[i]))).join("  "));
}
console.log(`\nresults: ${outFile}\nraw runs: ${raw}`);
