// V8 CPU profile of a `wrangler dev` Worker isolate through its inspector port (the same
// protocol DevTools uses): self time per function, our WASM functions by name.
//
//   node bench/probes/tools/cpuprofile.mjs INSPECTOR_PORT SECONDS OUT.json [GO_FILE]
//
// Profiles every inspector target for SECONDS; with GO_FILE, starts only once that file exists
// (bench/probes/profile.sh creates it when the load tool reaches the phase of interest). Writes the raw
// profiles to OUT.json (loadable in Chrome DevTools) and prints the top self times.
import fs from "node:fs";
import { inspectorTargets, openSession } from "./inspector.mjs";

const [port, seconds, out, goFile] = process.argv.slice(2);
if (!port || !seconds || !out) {
  console.error("usage: cpuprofile.mjs INSPECTOR_PORT SECONDS OUT.json [GO_FILE]");
  process.exit(2);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const targets = await inspectorTargets(port);
const results = await Promise.all(targets.map(async (target) => {
  const { call, close } = await openSession(target);
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: 200 }); // µs
  while (goFile && !fs.existsSync(goFile)) await sleep(20);
  await call("Profiler.start");
  await sleep(Number(seconds) * 1000);
  const stopped = await call("Profiler.stop");
  close();
  return { title: target.title, profile: stopped.result?.profile ?? null, error: stopped.error ?? null };
}));
fs.writeFileSync(out, JSON.stringify(results));

for (const { title, profile, error } of results) {
  if (!profile) { console.log(`== ${title}: no profile ${JSON.stringify(error)}`); continue; }
  // Self time per sampled node: the time delta after each sample belongs to that sample's node.
  const nodeTime = new Map();
  profile.samples.forEach((id, i) => nodeTime.set(id, (nodeTime.get(id) || 0) + (profile.timeDeltas[i + 1] || 0)));
  const byFunction = new Map();
  let total = 0;
  for (const node of profile.nodes) {
    const t = nodeTime.get(node.id) || 0;
    total += t;
    const f = node.callFrame;
    const name = (f.functionName || "(anonymous)").replace(/::h[0-9a-f]{16}$/, "");
    const where = f.url ? ` ${f.url.split("/").pop()}:${f.lineNumber}` : "";
    const key = `${name}${where}`;
    byFunction.set(key, (byFunction.get(key) || 0) + t);
  }
  console.log(`== ${title}: ${(total / 1000).toFixed(0)} ms sampled over ${seconds} s`);
  [...byFunction.entries()].sort((a, b) => b[1] - a[1]).slice(0, 40).forEach(([key, t]) =>
    console.log(`${(t / 1000).toFixed(1).padStart(9)} ms ${(100 * t / total).toFixed(1).padStart(5)} %  ${key.slice(0, 150)}`));
}
