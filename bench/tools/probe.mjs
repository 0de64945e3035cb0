// Node helper for bench/coldstart.sh, bench/probes/auth_cpu.sh and bench/probes/capacity.sh (run with
// `node --experimental-websocket bench/tools/probe.mjs MODE ...`; node 20). Prints one JSON line on stdout (capacity:
// one per step), progress on stderr.
//
//   coldstart HOST PORT SPAWN_NS PATH...   poll TCP until the port accepts (time since SPAWN_NS), then GET each PATH in
//                                          order on a fresh connection, timing each (ms); with PROBE_PGID set, also
//                                          the CPU that process group had used when the first response came
//   auth URL K PREFIX CLK_TCK WORKER_PID PROXY_PID   K sequential signups, then K sequential logins; CPU of the pids
//                                          (utime+stime from /proc/PID/stat) before/after each phase; wall p50/p90
//   capacity URL STEPS USERS WORKER_PID PROXY_PID     open sockets into one room up to each step (comma list), then at
//                                          each: settle, RSS/fds of the pids, one broadcast counted on every socket
//   roomcap URL CAP                        CAP sockets into one room (one user), then a raw upgrade request for one
//                                          more: prints its status and body
import http from "node:http";
import net from "node:net";
import fs from "node:fs";

const [mode, ...args] = process.argv.slice(2);
const err = (...a) => console.error(...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
// wall-clock ms since the epoch with sub-ms resolution (to compare with `date +%s%N` from the shell)
const epochOffset = Date.now() - nowMs();
const epochMs = () => epochOffset + nowMs();

function request(url, { method = "GET", headers = {}, body = null } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    // agent: false = a fresh connection every time (comparable first / later requests)
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString(), ms: nowMs() - t0 }));
    });
    req.on("error", reject);
    req.setTimeout(120000, () => req.destroy(new Error("timeout")));
    if (body != null) req.write(body);
    req.end();
  });
}

function procStat(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return Number(f[11]) + Number(f[12]); // fields 14, 15 (utime, stime)
  } catch { return null; }
}
function procStatus(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    const m = s.match(/VmRSS:\s+(\d+) kB/);
    return m ? Number(m[1]) : null;
  } catch { return null; }
}
function fdCount(pid) {
  try { return fs.readdirSync(`/proc/${pid}/fd`).length; } catch { return null; }
}
const pct = (v, p) => { const s = [...v].sort((a, b) => a - b); return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : null; };
const median = (v) => { const s = [...v].sort((a, b) => a - b); const m = s.length >> 1; return s.length ? (s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2) : null; };

async function signup(url, username, password) {
  return request(`${url}/users/`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username, password }) });
}
async function login(url, username, password) {
  const body = new URLSearchParams({ username, password }).toString();
  return request(`${url}/token`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body });
}

// ---------------------------------------------------------------------------------------------------------------
// CPU (ms) every process of process group PGID has used, with the children it has reaped (utime, stime, cutime,
// cstime of /proc/PID/stat; clock ticks of 10 ms).
function groupCpuMs(pgid) {
  let ticks = 0;
  for (const pid of fs.readdirSync("/proc").filter((d) => /^[0-9]+$/.test(d))) {
    try {
      const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
      if (Number(f[2]) === pgid) ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch { /* gone */ }
  }
  return ticks * 10;
}

async function coldstart([host, port, spawnNs, ...paths]) {
  // warm node's own http path first (module loading, JIT) against a throwaway local server
  const dummy = http.createServer((_, res) => res.end("x"));
  await new Promise((r) => dummy.listen(0, "127.0.0.1", r));
  for (let i = 0; i < 3; i++) await request(`http://127.0.0.1:${dummy.address().port}/`);
  dummy.close();
  const spawnMs = Number(BigInt(spawnNs) / 1000n) / 1000;
  const deadline = nowMs() + 180000;
  let acceptMs = null;
  while (nowMs() < deadline) {
    const ok = await new Promise((resolve) => {
      const s = net.connect({ host, port: Number(port) });
      s.once("connect", () => { s.destroy(); resolve(true); });
      s.once("error", () => resolve(false));
    });
    if (ok) { acceptMs = epochMs() - spawnMs; break; }
    await sleep(5);
  }
  if (acceptMs == null) { console.log(JSON.stringify({ error: "port never accepted" })); process.exit(1); }
  const reqs = [];
  let cpuMs = null;
  for (const p of paths) {
    try {
      const r = await request(`http://${host}:${port}${p}`);
      reqs.push({ path: p, status: r.status, ms: r.ms, body: r.body.slice(0, 200) });
    } catch (e) { reqs.push({ path: p, error: String(e), ms: null }); }
    if (cpuMs == null && process.env.PROBE_PGID) cpuMs = groupCpuMs(Number(process.env.PROBE_PGID));
  }
  console.log(JSON.stringify({ accept_ms: acceptMs, requests: reqs, cpu_ms: cpuMs }));
}

// ---------------------------------------------------------------------------------------------------------------
async function auth([url, k, prefix, clkTck, workerPid, proxyPid]) {
  k = Number(k); const tick_us = 1e6 / Number(clkTck);
  const pw = "bench-password-123";
  const names = Array.from({ length: k }, (_, i) => `${prefix}_a${i}`);
  const phase = async (name, fn) => {
    const w0 = procStat(workerPid), p0 = procStat(proxyPid), lat = [], bad = {};
    const t0 = nowMs();
    for (const u of names) {
      const r = await fn(u);
      lat.push(r.ms);
      const ok = name === "signup" ? r.status === 201 : r.status === 200;
      if (!ok) bad[`${r.status} ${r.body.slice(0, 120)}`] = (bad[`${r.status} ${r.body.slice(0, 120)}`] || 0) + 1;
    }
    const wall = nowMs() - t0;
    const w1 = procStat(workerPid), p1 = procStat(proxyPid);
    const wu = (w1 - w0) * tick_us / k, pu = (p1 - p0) * tick_us / k;
    return {
      n: k, failures: bad, wall_ms: wall,
      p50_ms: median(lat), p90_ms: pct(lat, 0.9), max_ms: Math.max(...lat),
      worker_ticks: w1 - w0, proxy_ticks: p1 - p0,
      cpu_ms_per_req_worker: wu / 1000, cpu_ms_per_req_proxy: pu / 1000, cpu_ms_per_req_total: (wu + pu) / 1000,
    };
  };
  const s = await phase("signup", (u) => signup(url, u, pw));
  const l = await phase("login", (u) => login(url, u, pw));
  console.log(JSON.stringify({ signup: s, login: l }));
}

// ---------------------------------------------------------------------------------------------------------------
async function tokensFor(url, n, prefix) {
  const pw = "bench-password-123", toks = [];
  for (let i = 0; i < n; i++) {
    const u = `${prefix}_c${i}`;
    const s = await signup(url, u, pw);
    if (s.status !== 201) throw new Error(`signup ${u}: ${s.status} ${s.body}`);
    const l = await login(url, u, pw);
    if (l.status !== 200) throw new Error(`login ${u}: ${l.status} ${l.body}`);
    toks.push(JSON.parse(l.body).access_token);
  }
  return toks;
}

// PROBE_CLIENT=raw: a minimal WebSocket client over node:http that offers no extension (no permessage-deflate), the
// way clubhouse-bench connects; default: node's WebSocket (undici), which offers permessage-deflate like browsers do.
function makeSocket(wsUrl, state) {
  return process.env.PROBE_CLIENT === "raw" ? makeRawSocket(wsUrl, state) : makeUndiciSocket(wsUrl, state);
}
function makeRawSocket(wsUrl, state) {
  return new Promise((resolve) => {
    const rec = { ws: null, open: false, closed: false, got: new Set(), closeInfo: null, extensions: "" };
    const t0 = nowMs();
    const fail = (k) => { state.errors[k] = (state.errors[k] || 0) + 1; resolve(null); };
    const req = http.request(wsUrl.replace(/^ws/, "http"), {
      agent: false,
      headers: { Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": Buffer.from(Math.random().toString(36).padEnd(16, "x").slice(0, 16)).toString("base64") },
    });
    req.on("response", (res) => { res.resume(); fail(`error: HTTP ${res.statusCode}`); });
    req.on("error", (e) => { if (!rec.open) fail(`error: ${e.code || e.message}`); });
    req.on("upgrade", (res, sock) => {
      rec.open = true; rec.extensions = res.headers["sec-websocket-extensions"] || "";
      state.connectMs.push(nowMs() - t0);
      let buf = Buffer.alloc(0), frag = "";
      const onText = (d) => {
        if (d.includes('"type":"message"')) {
          const m = d.match(/"content":"(probe-[0-9]+)"/);
          if (m) { rec.got.add(m[1]); state.onProbe?.(m[1]); }
        }
      };
      sock.on("data", (chunk) => {
        buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
        for (;;) {
          if (buf.length < 2) return;
          const fin = buf[0] & 0x80, op = buf[0] & 0x0f; let len = buf[1] & 0x7f, off = 2;
          if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
          else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
          if (buf.length < off + len) return;
          const payload = buf.subarray(off, off + len); buf = buf.subarray(off + len);
          if (op === 1 || op === 0) { frag += payload.toString(); if (fin) { onText(frag); frag = ""; } }
          else if (op === 8) { const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005; rec.closeCode = code; sock.end(); }
          else if (op === 9) sock.write(frame(10, payload));
        }
      });
      const onEnd = () => { if (rec.closed) return; rec.closed = true; const k = `close ${rec.closeCode ?? 1006}`; state.closes[k] = (state.closes[k] || 0) + 1; };
      sock.on("close", onEnd); sock.on("error", () => {});
      rec.ws = { send: (text) => sock.write(frame(1, Buffer.from(text))), close: () => { rec.closed = true; sock.write(frame(8, Buffer.from([3, 232]))); sock.end(); } };
      resolve(rec);
    });
    req.end();
  });
}
function frame(op, payload) {  // client frame: FIN, masked
  const mask = Buffer.from([1, 2, 3, 4]);
  const n = payload.length, head = n < 126 ? Buffer.from([0x80 | op, 0x80 | n]) : n < 65536 ? Buffer.from([0x80 | op, 0x80 | 126, n >> 8, n & 255]) : null;
  if (!head) throw new Error("frame too large");
  const body = Buffer.from(payload); for (let i = 0; i < n; i++) body[i] ^= mask[i & 3];
  return Buffer.concat([head, mask, body]);
}
function makeUndiciSocket(wsUrl, state) {
  return new Promise((resolve) => {
    const rec = { ws: null, open: false, closed: false, got: new Set(), closeInfo: null };
    let ws;
    try { ws = new WebSocket(wsUrl); } catch (e) { state.errors[String(e)] = (state.errors[String(e)] || 0) + 1; return resolve(null); }
    rec.ws = ws;
    const t0 = nowMs();
    ws.onopen = () => { rec.open = true; rec.extensions = ws.extensions; state.connectMs.push(nowMs() - t0); resolve(rec); };
    ws.onmessage = (ev) => {
      const d = typeof ev.data === "string" ? ev.data : "";
      if (d.includes('"type":"message"')) {
        const m = d.match(/"content":"(probe-[0-9]+)"/);
        if (m) { rec.got.add(m[1]); state.onProbe?.(m[1]); }
      }
    };
    ws.onerror = (ev) => {
      const k = `error: ${ev?.message || ev?.error?.message || "websocket error"}`;
      if (!rec.open) { state.errors[k] = (state.errors[k] || 0) + 1; resolve(null); }
    };
    ws.onclose = (ev) => {
      rec.closed = true;
      if (rec.open) { const k = `close ${ev.code} ${ev.reason || ""}`.trim(); state.closes[k] = (state.closes[k] || 0) + 1; }
      else resolve(null);
    };
  });
}

async function capacity([url, steps, users, workerPid, proxyPid]) {
  steps = steps.split(",").map(Number); users = Number(users);
  const prefix = `cap${Math.random().toString(36).slice(2, 8)}`;
  const room = `${prefix}-room`;
  err(`signing up ${users} users`);
  const toks = await tokensFor(url, users, prefix);
  const wsBase = url.replace(/^http/, "ws");
  const state = { errors: {}, closes: {}, connectMs: [] };
  const socks = [];
  const snap = () => ({ worker_rss_kb: procStatus(workerPid), proxy_rss_kb: procStatus(proxyPid), proxy_fds: fdCount(proxyPid), worker_fds: fdCount(workerPid), client_fds: fdCount(process.pid) });
  const ticks = () => (procStat(workerPid) ?? 0) + (procStat(proxyPid) ?? 0);
  const settle = async () => { // until both processes use < 3 ticks over 500 ms, at most 30 s
    let t0 = ticks();
    for (let i = 0; i < 60; i++) { await sleep(500); const t1 = ticks(); if (t1 - t0 <= 2) return; t0 = t1; }
  };
  await settle();
  console.log(JSON.stringify({ step: 0, open: 0, ...snap() }));
  let attempted = 0, stop = false;
  for (const target of steps) {
    const failedBefore = Object.values(state.errors).reduce((a, b) => a + b, 0);
    state.connectMs = [];
    const t0 = nowMs();
    while (attempted < target && !stop) {
      const batch = [];
      for (let j = 0; j < 32 && attempted < target; j++, attempted++) {
        const tok = toks[attempted % toks.length];
        batch.push(makeSocket(`${wsBase}/ws/${room}?token=${tok}`, state));
      }
      for (const r of await Promise.all(batch)) if (r) socks.push(r);
      const failedNow = Object.values(state.errors).reduce((a, b) => a + b, 0);
      if (failedNow - failedBefore >= 200) { err(`stopping: ${failedNow - failedBefore} failed handshakes in this step`); stop = true; }
    }
    const connectS = (nowMs() - t0) / 1000;
    await settle();
    await sleep(500);
    const mem = snap();
    const live = socks.filter((s) => s.open && !s.closed);
    // one broadcast from the first live socket; count it on every live socket
    let delivered = 0, expected = live.length, bcastMs = null;
    if (live.length) {
      const tag = `probe-${target}`;
      let n = 0; const tb = nowMs();
      const done = new Promise((resolve) => { state.onProbe = (t) => { if (t === tag && ++n >= expected) resolve(); }; });
      live[0].ws.send(JSON.stringify({ content: tag, room_id: room }));
      await Promise.race([done, sleep(30000)]);
      await sleep(300);
      bcastMs = nowMs() - tb;
      delivered = live.filter((s) => s.got.has(tag)).length;
      state.onProbe = null;
    }
    const stillLive = socks.filter((s) => s.open && !s.closed).length;
    const row = {
      step: target, client: process.env.PROBE_CLIENT === "raw" ? "raw" : "undici", extensions: live[0]?.extensions ?? null, attempted, open: live.length, open_after_broadcast: stillLive,
      handshake_failures: { ...state.errors }, closes: { ...state.closes },
      connect_s: connectS, connect_p50_ms: median(state.connectMs), connect_p99_ms: pct(state.connectMs, 0.99),
      broadcast: { expected, delivered, lost: expected - delivered, ms: bcastMs }, ...mem,
    };
    console.log(JSON.stringify(row));
    err(`step ${target}: open ${live.length} (after broadcast ${stillLive}), delivered ${delivered}/${expected}, worker ${mem.worker_rss_kb} kB, proxy ${mem.proxy_rss_kb} kB, proxy fds ${mem.proxy_fds}`);
    if (stop || live.length < target * 0.9 || stillLive < live.length) { err("stopping: the server gave out"); break; }
  }
  for (const s of socks) try { s.ws.close(); } catch {}
  await sleep(500);
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------------------------
function rawUpgrade(wsUrlHttp) {
  return new Promise((resolve, reject) => {
    const req = http.request(wsUrlHttp, {
      agent: false,
      headers: { Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": Buffer.from(Math.random().toString()).toString("base64").slice(0, 22) + "==" },
    });
    req.on("upgrade", (res, socket) => { socket.destroy(); resolve({ status: res.statusCode, body: "(upgraded)" }); });
    req.on("response", (res) => {
      const c = []; res.on("data", (d) => c.push(d));
      res.on("end", () => resolve({ status: res.statusCode, content_type: res.headers["content-type"], body: Buffer.concat(c).toString() }));
    });
    req.on("error", reject);
    req.end();
  });
}

async function roomcap([url, cap]) {
  cap = Number(cap);
  const prefix = `rc${Math.random().toString(36).slice(2, 8)}`;
  const room = `${prefix}-room`;
  const [tok] = await tokensFor(url, 1, prefix);
  const state = { errors: {}, closes: {}, connectMs: [] };
  const socks = [];
  for (let i = 0; i < cap; i += 20) {
    const b = [];
    for (let j = i; j < Math.min(cap, i + 20); j++) b.push(makeSocket(`${url.replace(/^http/, "ws")}/ws/${room}?token=${tok}`, state));
    for (const r of await Promise.all(b)) if (r) socks.push(r);
  }
  const extra = await rawUpgrade(`${url}/ws/${room}?token=${tok}`);
  console.log(JSON.stringify({ cap, opened: socks.length, handshake_failures: state.errors, next: extra }));
  for (const s of socks) try { s.ws.close(); } catch {}
  await sleep(300);
  process.exit(0);
}

const modes = { coldstart, auth, capacity, roomcap };
if (!modes[mode]) { err(`unknown mode ${mode}`); process.exit(2); }
modes[mode](args).catch((e) => { err(e?.stack || String(e)); process.exit(1); });
