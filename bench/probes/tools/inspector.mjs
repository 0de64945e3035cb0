// A DevTools-protocol session with each inspector target of a `wrangler dev` (its --inspector-port),
// shared by bench/probes/tools/cpuprofile.mjs and bench/probes/tools/heap.mjs.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const WebSocket = require("ws"); // a wrangler dependency, in the project's node_modules

/** The inspector targets listening on `port` (workerd lists one per Worker). */
export async function inspectorTargets(port) {
  return (await fetch(`http://127.0.0.1:${port}/json`)).json();
}

/**
 * Opens a session with `target`. `call(method, params)` resolves with the protocol's reply;
 * `onEvent(msg)` sees every message without an id (events such as heap snapshot chunks).
 */
export async function openSession(target, onEvent = () => {}) {
  const ws = new WebSocket(target.webSocketDebuggerUrl, { maxPayload: 1 << 30 });
  await new Promise((resolve, reject) => { ws.on("open", resolve); ws.on("error", reject); });
  let next = 0;
  const pending = new Map();
  ws.on("message", (raw) => {
    const msg = JSON.parse(raw);
    if (msg.id && pending.has(msg.id)) { pending.get(msg.id)(msg); pending.delete(msg.id); }
    else if (!msg.id) onEvent(msg);
  });
  const call = (method, params = {}) => new Promise((resolve) => {
    const id = ++next;
    pending.set(id, resolve);
    ws.send(JSON.stringify({ id, method, params }));
  });
  return { call, close: () => ws.close() };
}
