// Shared by tests/clients: a server per test file (tests/browser/server.mjs), accounts, badges, and
// a WebSocket for Node 20 (the `ws` package; Node 22+ and browsers have their own).
import { createHash, createHmac, randomBytes } from 'node:crypto';
import WebSocketImpl from 'ws';
import { Clubhouse } from '../../clients/js/clubhouse.js';
import { startServer, RELAXED_LIMITS } from '../browser/server.mjs';

export { Clubhouse, WebSocketImpl };

export const PASSWORD = 'client test password';

/** A JWT_SECRET the tests know, so they can make badges the server will find expired. */
export const SECRET = randomBytes(32).toString('hex');

export async function start(vars = {}) {
  return startServer({ vars: { ...RELAXED_LIMITS, ...vars, JWT_SECRET: SECRET } });
}

let seq = 0;
export function uniqueName(prefix) {
  seq += 1;
  return `${prefix}_${process.pid.toString(36)}${seq}${randomBytes(3).toString('hex')}`.slice(0, 32);
}

/** A Clubhouse client of a new account, logged in. */
export async function newClient(server, prefix, { WebSocket = WebSocketImpl } = {}) {
  const club = new Clubhouse({ baseUrl: server.baseUrl, WebSocket });
  const username = uniqueName(prefix);
  await club.signUp(username, PASSWORD);
  await club.logIn(username, PASSWORD);
  club.username = username;
  return club;
}

const b64url = (value) => Buffer.from(value).toString('base64url');

/** A badge for `username`, signed with the server's key, that expired a while ago. */
export function expiredBadge(username) {
  const kid = createHash('sha256').update(SECRET).digest().subarray(0, 6).toString('hex');
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid }));
  const claims = b64url(JSON.stringify({
    sub: username, iss: 'clubhouse', aud: 'clubhouse', jti: randomBytes(16).toString('hex'),
    iat: now - 7200, exp: now - 3600, iat_ms: (now - 7200) * 1000,
  }));
  const signature = createHmac('sha256', SECRET).update(`${header}.${claims}`).digest('base64url');
  return `${header}.${claims}.${signature}`;
}

/** Resolves with the next event of `type` on `room` (rejects after `ms`). */
export function nextEvent(room, type, ms = 15_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event within ${ms} ms`));
    }, ms);
    const off = room.on(type, (event) => {
      clearTimeout(timer);
      off();
      resolve(event);
    });
  });
}

/** Reconnect delays short enough for tests. */
export const FAST = { minDelayMs: 10, maxDelayMs: 200 };

/** Connects `club` to `room` (FAST reconnects, plus `options`) and waits for the room's history. */
export async function joined(club, room, options = {}) {
  const r = club.connect(room, { ...FAST, ...options });
  await nextEvent(r, 'open');
  return r;
}

/** Waits until `check()` is true (polling), or fails with `what`. */
export async function until(check, what, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Every message of a room over HTTP, oldest first. */
export async function allMessages(club, room) {
  const out = [];
  let before = '';
  for (;;) {
    const page = await club.get(`/rooms/${room}/messages?limit=100${before}`);
    out.unshift(...page.messages);
    if (!page.has_more || page.messages.length === 0) return out;
    before = `&before=${page.messages[0].id}`;
  }
}

/**
 * A WebSocket class that holds each message frame (JSON with `content` and no `type`) for `holdMs`
 * before it goes out, in order, and sends every other frame at once: what the app does right after
 * a send reaches the server first, so its answers come back while the message is in flight.
 */
export function slowMessagesWebSocket(holdMs) {
  const isMessage = (data) => {
    try {
      const frame = JSON.parse(data);
      return frame.type === undefined && typeof frame.content === 'string';
    } catch {
      return false;
    }
  };
  return class SlowMessagesWebSocket extends WebSocketImpl {
    #held = Promise.resolve();

    send(data) {
      if (typeof data !== 'string' || !isMessage(data)) {
        super.send(data);
        return;
      }
      this.#held = this.#held
        .then(() => new Promise((resolve) => setTimeout(resolve, holdMs)))
        .then(() => {
          if (this.readyState === WebSocketImpl.OPEN) super.send(data);
        });
    }
  };
}
