// One user in N rooms, each with messages, then `GET /me/rooms` timed (bench/probes/my_rooms.sh).
//   node bench/probes/tools/my_rooms.mjs BASE_URL [--rooms N] [--requests R]
// The user is in N/4 DMs, N/4 private rooms and N/2 public rooms joined by connecting; every room gets one
// message from someone else (DMs: the other person), so each entry has a last message and an unread count.
// Prints JSON: p50/p99/max of the first page (the query sorts all N rooms) and of walking every page.
import WebSocket from 'ws';

const args = process.argv.slice(2);
const base = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i > 0 ? Number(args[i + 1]) : dflt;
};
const N = opt('--rooms', 200);
const R = opt('--requests', 200);
const tag = Math.random().toString(16).slice(2, 10);

async function call(method, path, { token, json, form } = {}) {
  const headers = {};
  let body;
  if (token) headers.Authorization = `Bearer ${token}`;
  if (json) { headers['Content-Type'] = 'application/json'; body = JSON.stringify(json); }
  if (form) { headers['Content-Type'] = 'application/x-www-form-urlencoded'; body = new URLSearchParams(form).toString(); }
  const res = await fetch(`${base}${path}`, { method, headers, body });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(data)}`);
  return data;
}

async function user(name) {
  await call('POST', '/users/', { json: { username: name, password: 'correct horse battery' } });
  return (await call('POST', '/token', { form: { username: name, password: 'correct horse battery' } })).access_token;
}

/** Opens a socket to `room`, optionally sends `content` and waits for its echo, closes. */
function visit(room, token, content) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/ws/${room}`, ['bearer', token]);
    ws.on('error', reject);
    ws.on('message', (data) => {
      const frame = JSON.parse(String(data));
      if (frame.type === 'presence' && !content) ws.close();
      if (frame.type === 'presence' && content) ws.send(JSON.stringify({ content }));
      if (frame.type === 'message' && frame.content === content) ws.close();
    });
    ws.on('close', resolve);
  });
}

async function pool(items, limit, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < items.length) await fn(items[next++]);
  }));
}

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
function summary(ms) {
  const s = [...ms].sort((a, b) => a - b);
  return { n: s.length, p50: +pct(s, 50).toFixed(1), p99: +pct(s, 99).toFixed(1), max: +s[s.length - 1].toFixed(1) };
}

const me = `bench_${tag}`;
const token = await user(me);
const other = await user(`other_${tag}`);
const peers = [];
for (let i = 0; i < N / 4; i += 1) peers.push(`p${i}_${tag}`);
const rooms = [];
await pool(peers, 4, async (peer) => {
  const t = await user(peer);
  const { room_id } = await call('POST', `/dm/${me}`, { token: t });
  rooms.push({ room: room_id, token: t });
});
await pool([...Array(N / 4).keys()], 4, async (i) => {
  const room = `priv${i}_${tag}`;
  await call('POST', '/rooms', { token, json: { room_id: room, private: true } });
  await call('PUT', `/rooms/${room}/members/other_${tag}`, { token });
  rooms.push({ room, token: other });
});
await pool([...Array(N / 2).keys()], 4, async (i) => {
  const room = `pub${i}_${tag}`;
  await visit(room, token); // joins my list
  rooms.push({ room, token: other });
});
await pool(rooms, 4, ({ room, token: t }) => visit(room, t, `hello from ${room}`));
await new Promise((r) => setTimeout(r, 1500)); // the rooms' write-behind (250 ms) and D1

const first = await call('GET', '/me/rooms', { token });
const listed = [];
let page = first;
for (;;) {
  listed.push(...page.rooms);
  if (!page.next_cursor) break;
  page = await call('GET', `/me/rooms?cursor=${page.next_cursor}`, { token });
}
const withMessage = listed.filter((r) => r.last_message && r.unread === 1).length;
if (listed.length !== N || withMessage !== N) throw new Error(`listed ${listed.length}, with a message ${withMessage}`);

const firstPage = [];
const allPages = [];
for (let i = 0; i < R; i += 1) {
  let t0 = performance.now();
  let p = await call('GET', '/me/rooms', { token });
  firstPage.push(performance.now() - t0);
  t0 = performance.now();
  while (p.next_cursor) p = await call('GET', `/me/rooms?cursor=${p.next_cursor}`, { token });
  allPages.push(performance.now() - t0 + firstPage[firstPage.length - 1]);
}
console.log(JSON.stringify({ rooms: N, requests: R, first_page_ms: summary(firstPage), all_pages_ms: summary(allPages) }));
