// Driver of bench/probes/workerd_coldstart.sh: node bench/tools/workerd_coldstart.mjs WORKERD N DIR...
// Starts `workerd serve DIR/config.capnp` N times per DIR, alternating (the order reversed every other repeat), on a
// free port; per start: spawn -> the port accepts (polled every 2 ms) and workerd's CPU by then, then GET /nope
// twice on fresh connections, wall and CPU each. CPU: the sum over workerd's threads of /proc/PID/task/*/schedstat
// (ns on CPU), so a loaded machine stretches the walls more than it does these. Prints medians, one row per DIR.
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";

const [workerd, repeats, ...dirs] = process.argv.slice(2);
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const cpuMs = (pid) => {
  let ns = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try { ns += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]); } catch { /* thread gone */ }
  }
  return ns / 1e6;
};
const freePort = () => new Promise((resolve) => {
  const s = net.createServer();
  s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
});
const accepts = (port) => new Promise((resolve) => {
  const s = net.connect({ host: "127.0.0.1", port });
  s.once("connect", () => { s.destroy(); resolve(true); });
  s.once("error", () => resolve(false));
});
const get = (port, p) => new Promise((resolve, reject) => {
  const t0 = nowMs();
  http.get({ host: "127.0.0.1", port, path: p, agent: false }, (res) => {
    res.resume();
    res.on("end", () => resolve({ status: res.statusCode, ms: nowMs() - t0 }));
  }).on("error", reject);
});

async function start(dir) {
  const port = await freePort();
  const t0 = nowMs();
  const child = spawn(workerd, ["serve", path.join(dir, "config.capnp"), "--socket-addr", `http=127.0.0.1:${port}`],
    { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  const exited = new Promise((r) => child.once("exit", r));
  try {
    let listening = null;
    while (nowMs() - t0 < 30000 && child.exitCode == null) {
      if (await accepts(port)) { listening = nowMs() - t0; break; }
      await sleep(2);
    }
    if (listening == null) throw new Error(`${path.basename(dir)} never listened: ${stderr.slice(0, 500)}`);
    const c0 = cpuMs(child.pid);
    const first = await get(port, "/nope");
    const c1 = cpuMs(child.pid);
    const second = await get(port, "/nope");
    const c2 = cpuMs(child.pid);
    return { listening, cpuListening: c0, first: first.ms, cpuFirst: c1 - c0, second: second.ms, cpuSecond: c2 - c1,
      status: first.status };
  } finally {
    child.kill("SIGKILL");
    await exited;
  }
}

const rows = new Map(dirs.map((d) => [d, []]));
for (let r = 0; r < Number(repeats); r++) {
  for (const dir of r % 2 ? [...dirs].reverse() : dirs) rows.get(dir).push(await start(dir));
  process.stderr.write(`repeat ${r + 1}/${repeats} (load ${fs.readFileSync("/proc/loadavg", "utf8").split(" ")[0]})\n`);
}
const median = (v) => { const s = [...v].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const cols = [["listening", "spawn->listen"], ["cpuListening", "CPU"], ["first", "1st /nope"], ["cpuFirst", "CPU"],
  ["second", "2nd /nope"], ["cpuSecond", "CPU"]];
console.log(`\nworkerd alone, medians of ${repeats} starts (ms; CPU = workerd's, all threads)`);
console.log(`${"".padEnd(14)} ${cols.map(([, h]) => h.padStart(13)).join(" ")}  status  spawn->1st response`);
for (const [dir, rs] of rows) {
  const cells = cols.map(([k]) => median(rs.map((x) => x[k])).toFixed(1).padStart(13)).join(" ");
  const total = median(rs.map((x) => x.listening + x.first)).toFixed(1);
  console.log(`${path.basename(dir).padEnd(14)} ${cells}  ${[...new Set(rs.map((x) => x.status))].join("/").padEnd(6)}  ${total}`);
}
