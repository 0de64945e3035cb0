// Clubhouse client: accounts, badges and rooms over WebSocket, with reconnects that lose nothing.
// A plain ES module with no dependencies, for browsers, Node 20+ and Workers; types in clubhouse.d.ts.
// The protocol it speaks is docs/api/asyncapi.json (frames) and docs/api/openapi.json (HTTP).
//
//   const club = new Clubhouse({ baseUrl: 'https://chat.example' });
//   await club.logIn('alice', 'correct horse');
//   const room = club.connect('lobby');
//   room.on('message', (m) => console.log(m.username, m.content));
//   const echo = await room.send('hello');   // resolves with the stored message
//
// Delivery: every message is sent with a `client_id`; until its echo comes back it is resent after
// each reconnect, and the server stores a `client_id` once (per user and room, for 10 minutes), so
// a message is stored exactly once however often the connection drops. Reconnects catch up with
// `?rev=` (or `?since=`) and drop messages already seen by id, so every message is delivered once.

/** Longest message content, in characters (Unicode code points). */
export const MAX_CONTENT_CHARS = 4000;

const FRAME_TYPES = new Set([
  'history', 'presence', 'message', 'edited', 'deleted', 'reactions', 'typing', 'join', 'leave',
  'presence_changes', 'error', 'read', 'closing',
]);

/** Error frames about edits, deletions and reactions: never the answer to a `send()`. */
const CHANGE_ERRORS = [
  'unknown message id', 'not your message', 'message already deleted', 'emoji', 'too many reactions',
  'id must be', '`emoji`',
];

/** Message ids remembered for de-duplication (the newest are kept). */
const SEEN_IDS_KEPT = 10_000;

/** An HTTP refusal or an error frame. */
export class ClubhouseError extends Error {
  /**
   * @param {string} detail
   * @param {{ status?: number, retryAfter?: number | null, frame?: object }} [info]
   */
  constructor(detail, { status, retryAfter = null, frame } = {}) {
    super(detail);
    this.name = 'ClubhouseError';
    this.detail = detail;
    this.status = status;
    this.retryAfter = retryAfter;
    this.frame = frame;
  }
}

export class Clubhouse {
  /**
   * @param {{ baseUrl: string, token?: string | null, fetch?: typeof fetch, WebSocket?: any }} options
   */
  constructor({ baseUrl, token = null, fetch: fetchImpl, WebSocket: WebSocketImpl } = {}) {
    if (!baseUrl) throw new TypeError('baseUrl is required');
    this.baseUrl = String(baseUrl).replace(/\/+$/, '');
    this.token = token;
    this.fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
    this.WebSocket = WebSocketImpl ?? globalThis.WebSocket;
  }

  /** `POST /users/`: creates an account. */
  async signUp(username, password) {
    return this.#request('POST', '/users/', {
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password }),
    });
  }

  /** `POST /token`: logs in; the badge is kept for `connect()` and returned. */
  async logIn(username, password) {
    const { access_token: token } = await this.#request('POST', '/token', {
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ username, password }).toString(),
    });
    this.token = token;
    return token;
  }

  /** `POST /logout` (`all`: every badge of the user); the badge is forgotten. */
  async logOut({ all = false } = {}) {
    const answer = await this.#request('POST', `/logout${all ? '?all=true' : ''}`, { auth: true });
    this.token = null;
    return answer;
  }

  /** A JSON request to the API; throws a ClubhouseError on any answer but 2xx. */
  async #request(method, path, { headers = {}, body, auth = false } = {}) {
    const all = { ...headers };
    if (auth) all.Authorization = `Bearer ${this.token}`;
    const response = await this.fetch(`${this.baseUrl}${path}`, { method, headers: all, body });
    return readJson(response);
  }

  /** `GET` an API path with the badge (for history pages, room info). */
  async get(path) {
    return this.#request('GET', path, { auth: true });
  }

  /**
   * Joins a room: a socket that reconnects by itself until `close()`.
   * @param {string} room
   * @param {object} [options] see clubhouse.d.ts, ConnectOptions
   */
  connect(room, options = {}) {
    if (!this.WebSocket) {
      throw new TypeError('no WebSocket implementation: pass one as `WebSocket` (Node 20: the `ws` package)');
    }
    return new Room(this, room, options);
  }
}

async function readJson(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const retry = response.headers.get('Retry-After');
    throw new ClubhouseError(body?.detail ?? `HTTP ${response.status}`, {
      status: response.status,
      retryAfter: retry === null ? null : Number(retry),
    });
  }
  return body;
}

/** A random id for a message (crypto.randomUUID where there is one). */
function newClientId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}

export class Room {
  /** @type {'connecting' | 'open' | 'reconnecting' | 'closed'} */
  state = 'connecting';
  /** The newest message id seen (0: none). */
  lastId = 0;
  /** The newest revision applied (0: none yet). */
  lastRev = 0;

  #club;
  #options;
  #socket = null;
  #listeners = new Map();
  #seen = new Set();
  /** Sends waiting for their echo, by client_id, in the order they were made. */
  #pending = new Map();
  /** The send whose frame went out last and whose answer is not in: error frames are its. */
  #inFlight = null;
  #attempt = 0;
  #timer = null;
  #everOpened = false;
  #heartbeat = null;
  #silence = null;

  constructor(club, room, options) {
    this.#club = club;
    this.room = room;
    this.#options = {
      minDelayMs: 250,
      maxDelayMs: 10_000,
      heartbeatMs: 30_000,
      heartbeatTimeoutMs: 10_000,
      ...options,
    };
    if (Number.isInteger(options.rev)) this.lastRev = options.rev;
    if (Number.isInteger(options.since)) this.lastId = options.since;
    this.#open();
  }

  /**
   * Listens for a frame type (`message`, `history`, …) or a connection event (`open`,
   * `reconnecting`, `close`); returns a function that stops listening.
   */
  on(type, listener) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(listener);
    return () => this.off(type, listener);
  }

  off(type, listener) {
    this.#listeners.get(type)?.delete(listener);
  }

  #emit(type, value) {
    for (const listener of [...(this.#listeners.get(type) ?? [])]) {
      try {
        listener(value);
      } catch (e) {
        // A listener's mistake must not break delivery to the others or the socket.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  /**
   * Sends a message; resolves with its `message` frame once stored (the echo), rejects with a
   * ClubhouseError for an error frame about it, or when the room is closed first.
   */
  send(content, { clientId = newClientId() } = {}) {
    if (this.state === 'closed') return Promise.reject(new ClubhouseError('room closed'));
    if (typeof content !== 'string' || !content.trim()) {
      return Promise.reject(new ClubhouseError('content must not be empty'));
    }
    if ([...content].length > MAX_CONTENT_CHARS) {
      return Promise.reject(new ClubhouseError(`content too long (limit ${MAX_CONTENT_CHARS} characters)`));
    }
    const existing = this.#pending.get(clientId);
    if (existing) return existing.promise;
    let settle;
    const promise = new Promise((resolve, reject) => {
      settle = { resolve, reject };
    });
    const entry = { clientId, frame: { content, room_id: this.room, client_id: clientId }, promise, ...settle, sent: false };
    this.#pending.set(clientId, entry);
    this.#flush();
    return promise;
  }

  /** Replaces a message's content (only its author); errors arrive as `error` events. */
  edit(id, content) {
    this.#sendNow({ type: 'edit', id, content, room_id: this.room });
  }

  /** Deletes a message (its author or the room's owner). */
  delete(id) {
    this.#sendNow({ type: 'delete', id, room_id: this.room });
  }

  react(id, emoji) {
    this.#sendNow({ type: 'react', id, emoji, room_id: this.room });
  }

  unreact(id, emoji) {
    this.#sendNow({ type: 'unreact', id, emoji, room_id: this.room });
  }

  /** "I am typing": dropped when the socket is not open (it is ephemeral). */
  typing() {
    this.#sendNow({ type: 'typing' });
  }

  /** While waiting to reconnect: tries now instead of after the backoff. */
  reconnectNow() {
    if (this.state !== 'reconnecting' || this.#timer === null) return;
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#open();
  }

  /** Leaves the room for good: pending sends are rejected. */
  close() {
    this.#finish({ code: 1000, reason: 'closed by the client' });
  }

  #sendNow(frame) {
    if (this.state !== 'open') return false;
    try {
      this.#socket.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Sends the oldest unsent message, one at a time: its echo or its error frame comes back
   * before the next goes out, so an error frame always belongs to the message in flight.
   */
  #flush() {
    if (this.state !== 'open' || this.#inFlight) return;
    const next = [...this.#pending.values()].find((p) => !p.acked);
    if (!next) return;
    if (this.#sendNow(next.frame)) {
      this.#inFlight = next;
      next.sent = true;
    }
  }

  #url() {
    const base = this.#club.baseUrl.replace(/^http/, 'ws');
    const query = [];
    if (this.lastRev > 0 || (Number.isInteger(this.#options.rev) && !this.#everOpened)) {
      query.push(`rev=${this.lastRev}`);
    } else if (this.lastId > 0) {
      query.push(`since=${this.lastId}`);
    }
    return `${base}/ws/${encodeURIComponent(this.room)}${query.length ? `?${query.join('&')}` : ''}`;
  }

  #open() {
    if (this.state === 'closed') return;
    let socket;
    try {
      socket = new this.#club.WebSocket(this.#url(), ['bearer', this.#club.token]);
    } catch (e) {
      this.#dropped({ code: 1006, reason: String(e?.message ?? e) });
      return;
    }
    this.#socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
    };
    socket.onmessage = (event) => {
      if (this.#socket !== socket) return;
      clearTimeout(this.#silence);
      this.#silence = null;
      this.#receive(event.data);
    };
    socket.onclose = (event) => {
      if (this.#socket !== socket) return;
      this.#socket = null;
      this.#stopHeartbeat();
      this.#dropped({ code: event.code, reason: event.reason, opened });
    };
    socket.onerror = () => {
      // A close event follows.
    };
  }

  #receive(data) {
    if (typeof data !== 'string') return;
    if (data === 'pong') {
      this.#emit('pong', 'pong');
      return;
    }
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== 'object' || !FRAME_TYPES.has(frame.type)) return;
    switch (frame.type) {
      case 'history':
        this.#history(frame);
        return;
      case 'message':
        this.#message(frame);
        return;
      case 'error':
        this.#error(frame);
        return;
      case 'closing':
        this.#closing(frame);
        return;
      default:
        this.#change(frame);
    }
  }

  /**
   * The server's last frame before it closes the socket: acted on at once, because the close
   * itself may reach a client late (a runtime that keeps the connection open after its close
   * frame: docs/runtime). A kick (4001) ends the room here, so it is not undone by a reconnect.
   */
  #closing(frame) {
    this.#emit('closing', frame);
    const socket = this.#socket;
    this.#socket = null;
    this.#stopHeartbeat();
    try {
      socket?.close(1000);
    } catch {
      /* already closing */
    }
    const code = Number(frame.code) || 1008;
    const reason = String(frame.reason ?? '');
    if (code === 4001) {
      this.#finish({ code, reason, error: new ClubhouseError(`kicked from ${this.room}`, { status: 403 }) });
      return;
    }
    this.#dropped({ code, reason });
  }

  /**
   * The first frame of every connection. The first time, listeners get the whole history; after a
   * reconnect (or a connect with `since`/`rev`) each item is delivered as its own event instead
   * (`message` items not seen before, `edited`, `deleted`, `reactions`), in order, and the
   * `history` event carries what was left (`resumed: true`).
   */
  #history(frame) {
    const resumed = this.#everOpened || this.lastRev > 0 || this.lastId > 0;
    this.#everOpened = true;
    this.#attempt = 0;
    this.state = 'open';
    const items = Array.isArray(frame.messages) ? frame.messages : [];
    if (resumed) {
      for (const item of items) {
        const type = item.type ?? 'message';
        if (type === 'message') this.#message({ ...item, type });
        else this.#change(item);
      }
    } else {
      for (const m of items) this.#remember(m.id);
    }
    if (frame.rev > this.lastRev) this.lastRev = frame.rev;
    this.#emit('history', { ...frame, messages: resumed ? [] : items, resumed });
    this.#emit('open', { resumed });
    this.#startHeartbeat();
    // Messages sent before a drop go again with the same client_id: stored once.
    this.#flush();
  }

  #remember(id) {
    if (typeof id !== 'number') return;
    this.#seen.add(id);
    if (id > this.lastId) this.lastId = id;
    if (this.#seen.size > SEEN_IDS_KEPT) {
      // Ids arrive in increasing order, so the Set's first entries are the oldest; a catch-up
      // never goes back past `lastId`, so forgetting them cannot let a repeat through.
      let excess = this.#seen.size - SEEN_IDS_KEPT + 100;
      for (const old of this.#seen) {
        if (excess-- <= 0) break;
        this.#seen.delete(old);
      }
    }
  }

  #message(frame) {
    const fresh = !this.#seen.has(frame.id);
    this.#remember(frame.id);
    if (typeof frame.rev === 'number' && frame.rev > this.lastRev) this.lastRev = frame.rev;
    const mine = frame.client_id !== undefined ? this.#pending.get(frame.client_id) : undefined;
    if (mine) {
      this.#pending.delete(frame.client_id);
      mine.acked = true;
      if (this.#inFlight === mine) this.#inFlight = null;
      mine.resolve(frame);
    }
    if (fresh) this.#emit('message', frame);
    this.#flush();
  }

  #change(frame) {
    if (typeof frame.rev === 'number' && frame.rev > this.lastRev) this.lastRev = frame.rev;
    this.#emit(frame.type, frame);
  }

  #error(frame) {
    const detail = String(frame.detail ?? '');
    const ours = this.#inFlight;
    const aboutChange = CHANGE_ERRORS.some((d) => detail.includes(d));
    if (!ours || aboutChange) {
      this.#emit('error', frame);
      return;
    }
    this.#inFlight = null;
    if (detail === 'rate limited' || detail.startsWith('message not stored')) {
      // Not applied: the same frame (same client_id) goes again after the server's pause.
      const wait = Math.max(Number(frame.retry_after_ms) || 0, 50);
      setTimeout(() => this.#flush(), wait);
      return;
    }
    this.#pending.delete(ours.clientId);
    ours.reject(new ClubhouseError(detail, { frame }));
    this.#emit('error', frame);
    this.#flush();
  }

  /**
   * A `ping` every `heartbeatMs` while open; a socket that then stays silent for
   * `heartbeatTimeoutMs` (a connection that died without a close) is given up and replaced.
   */
  #startHeartbeat() {
    this.#stopHeartbeat();
    if (!(this.#options.heartbeatMs > 0)) return;
    const socket = this.#socket;
    this.#heartbeat = setInterval(() => {
      if (this.#socket !== socket || this.state !== 'open') return;
      try {
        socket.send('ping');
      } catch {
        return;
      }
      // The first unanswered ping starts the clock; later pings do not restart it.
      if (this.#silence !== null) return;
      this.#silence = setTimeout(() => {
        if (this.#socket !== socket) return;
        this.#socket = null;
        this.#stopHeartbeat();
        try {
          socket.close(4000, 'heartbeat timeout');
        } catch {
          /* already closing */
        }
        this.#dropped({ code: 4000, reason: 'heartbeat timeout' });
      }, this.#options.heartbeatTimeoutMs);
    }, this.#options.heartbeatMs);
  }

  #stopHeartbeat() {
    clearInterval(this.#heartbeat);
    clearTimeout(this.#silence);
    this.#silence = null;
  }

  /** The socket closed (or never opened): find out whether to retry, and when. */
  async #dropped({ code, reason }) {
    if (this.state === 'closed') return;
    this.#inFlight = null;
    this.state = 'reconnecting';
    // A browser hides why an upgrade was refused; asking the API with the same badge tells a
    // refusal for good (401 expired or revoked, 403 private, 422 bad name) from a passing drop.
    if (code === 1008 || code === 1006 || code === 1002) {
      const refusal = await this.#refusal();
      if (this.state === 'closed') return;
      if (refusal?.status === 401 && this.#options.refreshToken) {
        try {
          this.#club.token = await this.#options.refreshToken();
        } catch (e) {
          this.#finish({ code, reason, error: refusal });
          return;
        }
      } else if (refusal) {
        this.#finish({ code, reason, error: refusal });
        return;
      }
    }
    const ceiling = Math.min(this.#options.maxDelayMs, this.#options.minDelayMs * 2 ** this.#attempt);
    // Full jitter: clients dropped together do not come back together.
    const delayMs = Math.round(Math.random() * ceiling);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    this.#emit('reconnecting', { attempt: this.#attempt, delayMs, code, reason });
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#open();
    }, delayMs);
  }

  /** The API's answer for this badge and room when it is a refusal for good, else null. */
  async #refusal() {
    try {
      const info = await this.#club.get(`/rooms/${encodeURIComponent(this.room)}`);
      if (info && info.banned) return new ClubhouseError(`banned from ${this.room}`, { status: 403 });
      return null;
    } catch (e) {
      if (e instanceof ClubhouseError && [401, 403, 404, 422].includes(e.status)) return e;
      return null;
    }
  }

  #finish({ code, reason, error }) {
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearTimeout(this.#timer);
    this.#stopHeartbeat();
    const socket = this.#socket;
    this.#socket = null;
    try {
      socket?.close(1000);
    } catch {
      /* already closing */
    }
    const why = error ?? new ClubhouseError('room closed');
    for (const pending of this.#pending.values()) pending.reject(why);
    this.#pending.clear();
    this.#emit('close', { code, reason, error });
  }
}
