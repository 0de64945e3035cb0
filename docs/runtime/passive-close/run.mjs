// Runs worker.mjs under the repo's `wrangler dev` and reports, per close mode, what a client that
// never sent a data frame gets after the server closes its socket: the `closing` frame (where the
// mode sends one), the close frame (code, ms after the close was asked for), and whether the
// runtime then ends the TCP connection after the client echoes the close, as RFC 6455 7.1.1
// expects of a server. The client is a raw TCP socket so that each of these is seen on its own
// (browser and library clients fire `close` only once the TCP connection ends).
//   node docs/runtime/passive-close/run.mjs [mode ...]
// Modes are listed in worker.mjs; `active` is the control: the same close from a fetch, to a
// client that sent one frame first; `auto-ping` the same with the frame `ping`, which the runtime
// answers itself; `client-close` is a passive client closing by itself.
// Exit status 0 when every mode ended the TCP connection within 2 s; 1 otherwise.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../../..");
const ALL = ["fetch", "frame", "list", "attach", "timeout", "alarm", "ping-first", "event", "active", "auto-ping",
  "client-close"];
const modes = process.argv.slice(2).length ? process.argv.slice(2) : ALL;
const WAIT_MS = 2000;

const freePort = () =>
  new Promise((ok) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const port = await freePort();
const inspector = await freePort();
const state = mkdtempSync(join(tmpdir(), "passive-close-"));
const wrangler = spawn(
  join(repo, "node_modules/.bin/wrangler"),
  ["dev", "--config", join(here, "wrangler.toml"), "--ip", "127.0.0.1", "--port", String(port),
   "--inspector-port", String(inspector), "--persist-to", state, "--show-interactive-dev-session=false"],
  { cwd: here, detached: true, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, CI: "true" } },
);
let log = "";
wrangler.stdout.on("data", (d) => (log += d));
wrangler.stderr.on("data", (d) => (log += d));
process.on("exit", () => {
  try { process.kill(-wrangler.pid, "SIGTERM"); } catch (_) {}
  rmSync(state, { recursive: true, force: true });
});

const base = `http://127.0.0.1:${port}`;
for (let i = 0; ; i++) {
  try { if ((await fetch(`${base}/nothing`)).status === 404) break; } catch (_) {}
  if (i > 600) { console.error("wrangler dev did not start:\n" + log); process.exit(2); }
  await sleep(100);
}

// A client frame: FIN + opcode, masked as RFC 6455 requires of clients (payloads < 126 bytes).
function clientFrame(opcode, payload) {
  const mask = randomBytes(4);
  const body = Buffer.from(payload);
  const masked = body.map((b, i) => b ^ mask[i % 4]);
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | body.length]), mask, masked]);
}

// Opens a socket; `seen` collects text frames, the close frame and the TCP end, with times.
function open(room, tag) {
  return new Promise((ok, fail) => {
    const sock = connect(port, "127.0.0.1");
    const seen = { texts: [], close: null, ended: null };
    let buf = Buffer.alloc(0), upgraded = false;
    sock.on("connect", () =>
      sock.write(`GET /ws?room=${room}&tag=${tag} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\n\r\n`));
    sock.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        upgraded = true;
        buf = buf.subarray(end + 4);
      }
      while (buf.length >= 2) {
        const opcode = buf[0] & 15, len = buf[1] & 127; // server frames here are < 126 bytes
        if (buf.length < 2 + len) break;
        const payload = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        if (opcode === 1) {
          seen.texts.push(payload.toString());
          if (seen.texts.length === 1) ok({ sock, seen });
        } else if (opcode === 8) {
          seen.close = { code: payload.readUInt16BE(0), at: Date.now() };
          if (!seen.sentClose) sock.write(clientFrame(8, payload)); // echo, as a client must
        }
      }
    });
    sock.on("close", () => (seen.ended = Date.now()));
    sock.on("error", fail);
  });
}

let ended = 0;
console.log(`port ${port}; each close asked for 300 ms after the socket opened; wait ${WAIT_MS} ms`);
console.log("mode          closing frame  close frame      TCP ended after the client's echo");
for (const mode of modes) {
  const room = `${mode}-${Date.now()}`;
  const passive = await open(room, "passive");
  const active = mode === "event" ? await open(room, "active") : null;
  if (mode === "active") passive.sock.write(clientFrame(1, "any frame"));
  if (mode === "auto-ping") passive.sock.write(clientFrame(1, "ping"));
  await sleep(300);
  const started = Date.now();
  if (mode === "event") active.sock.write(clientFrame(1, "close-passive"));
  else if (mode === "client-close") {
    passive.seen.sentClose = true;
    passive.sock.write(clientFrame(8, Buffer.from([0x03, 0xe8])));
  } else {
    const asked = mode === "active" || mode === "auto-ping" ? "fetch" : mode;
    await fetch(`${base}/close?room=${room}&mode=${asked}`, { method: "POST" });
  }
  while (passive.seen.ended === null && Date.now() - started < WAIT_MS) await sleep(20);
  const { close, ended: end, texts } = passive.seen;
  if (end !== null) ended++;
  console.log(
    mode.padEnd(13),
    (texts.some((t) => t.includes('"closing"')) ? "yes" : "no").padEnd(14),
    (close ? `${close.code} in ${close.at - started} ms` : "none").padEnd(16),
    end !== null ? `yes, ${end - started} ms` : `NO (still open after ${WAIT_MS} ms)`,
  );
  passive.sock.destroy();
  active?.sock.destroy();
}
console.log(`${ended}/${modes.length} modes ended the passive client's connection`);
process.exit(ended === modes.length ? 0 : 1);
