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
// `?rev=` (and `?since=`) and drop messages already seen by id, so every message is delivered once;
// a catch-up the server cut short is completed over HTTP before live frames go on. Changes (edits,
// deletions, reactions, reads) carry a client_id too, only so that the `error` event refusing one
// says which (`change`); they are not resent.
//
// The browser page (public/app.js) uses this module as it is, served by the Worker at /clubhouse.js.

/** Longest message content, in characters (Unicode code points). */
export const MAX_CONTENT_CHARS = 4000;

const FRAME_TYPES = new Set([
  'history', 'presence', 'message', 'edited', 'deleted', 'reactions', 'typing', 'join', 'leave',
  'presence_changes', 'error', 'read', 'closing',
]);

/** Changes (edits, deletions, reactions, reads) remembered by client_id for their errors (the newest are kept). */
const CHANGES_KEPT = 64;
/** Message ids remembered for de-duplication (the newest are kept). */
const SEEN_IDS_KEPT = 10_000;
/** Messages per HTTP page when a cut-short catch-up is completed (the API's largest page). */
const PAGE_LIMIT = 100;
/** Pages fetched at most to fill the gap before a `since` catch-up the server cut short. */
const GAP_FILL_MAX_PAGES = 10;
/** Pages fetched at most to reload what a `rev` catch-up the server cut short could not update. */
const RELOAD_MAX_PAGES = 30;
/** A scheduled refresh runs this long before the badge expires (or at half its life, if shorter). */
const REFRESH_LEAD_MS = 60_000;
/** After a refresh that could not reach the server (or was told to wait). */
const REFRESH_RETRY_MS = 10_000;

/** An HTTP refusal or an error frame. */
export class ClubhouseError extends Error {
  /**
   * @param {string} detail
   * @param {{ status?: number, retryAfter?: number | null, frame?: object, body?: any }} [info]
   */
  constructor(detail, { status, retryAfter = null, frame, body } = {}) {
    super(detail);
    this.name = 'ClubhouseError';
    this.detail = detail;
    this.status = status;
    this.retryAfter = retryAfter;
    this.frame = frame;
    this.body = body;
  }
}

/** A badge's claims (`sub`, `exp`, `iat`, …), read without checking its signature; null if unreadable. */
export function badgeClaims(token) {
  try {
    const part = String(token).split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = part + '='.repeat((4 - (part.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/** Listeners by event name; a listener that throws does not stop the others. */
class Emitter {
  #listeners = new Map();

  /** Listens for an event; returns a function that stops listening. */
  on(type, listener) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(listener);
    return () => this.off(type, listener);
  }

  off(type, listener) {
    this.#listeners.get(type)?.delete(listener);
  }

  emit(type, value) {
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
}

/** Whether a failed refresh is worth trying again soon (unreachable, busy, or told to wait). */
function transient(error) {
  const status = error?.status;
  return status === undefined || status === 0 || status === 429 || status >= 500;
}

export class Clubhouse extends Emitter {
  /** The refresh token, when the server gave it in the JSON (not in cookie mode). */
  #refreshToken = null;
  #cookie;
  #autoRefresh;
  #refreshTimer = null;
  #refreshing = null;
  #transportMode;

  /**
   * @param {object} options see clubhouse.d.ts, ClubhouseOptions
   */
  constructor({
    baseUrl, token = null, fetch: fetchImpl, WebSocket: WebSocketImpl, cookie = false, autoRefresh = false,
    transport = 'bearer',
  } = {}) {
    super();
    if (!baseUrl) throw new TypeError('baseUrl is required');
    if (!['bearer', 'query', 'auto'].includes(transport)) throw new TypeError('transport is bearer, query or auto');
    this.baseUrl = String(baseUrl).replace(/\/+$/, '');
    this.token = token;
    this.fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
    this.WebSocket = WebSocketImpl ?? globalThis.WebSocket;
    this.#cookie = Boolean(cookie);
    this.#autoRefresh = Boolean(autoRefresh);
    this.#transportMode = transport;
    /** How sockets carry the badge: 'bearer', 'query', or 'unknown' until an `auto` socket opened. */
    this.transport = transport === 'auto' ? 'unknown' : transport;
    if (token) this.#schedule();
  }

  /** Whether a refused or expired badge can be replaced by `refresh()` on its own. */
  get autoRefresh() {
    return this.#autoRefresh;
  }

  /** `POST /users/`: creates an account. */
  async signUp(username, password) {
    return this.request('POST', '/users/', { json: { username, password }, auth: false });
  }

  /** `POST /token`: logs in; the badge is kept for `connect()` and returned. */
  async logIn(username, password) {
    const body = await this.request('POST', '/token', {
      form: { username, password },
      auth: false,
      cookie: this.#cookie,
    });
    this.#accept(body);
    return this.token;
  }

  /**
   * `POST /token` with `grant_type=refresh_token`: a new badge for the refresh token (kept from
   * `logIn()`, or the browser's HttpOnly cookie in cookie mode). Browser tabs share the cookie and
   * a refresh token presented twice ends the session, so tabs take turns (Web Locks): each sends
   * the cookie the previous one got back. A refresh that could not reach the server is tried again
   * in 10 s when `autoRefresh` is on; one the server asked to wait (429, `Retry-After`) when it
   * says.
   */
  async refresh() {
    if (this.#refreshing) return this.#refreshing;
    const run = async () => {
      const form = { grant_type: 'refresh_token' };
      if (!this.#cookie) {
        if (!this.#refreshToken) throw new ClubhouseError('no refresh token: log in first', { status: 401 });
        form.refresh_token = this.#refreshToken;
      }
      const body = await this.request('POST', '/token', { form, auth: false, cookie: this.#cookie });
      this.#accept(body);
      return this.token;
    };
    const locks = this.#cookie ? globalThis.navigator?.locks : undefined;
    this.#refreshing = (locks ? locks.request('clubhouse-refresh', run) : run())
      .catch((e) => {
        if (this.#autoRefresh && transient(e)) {
          this.#schedule(Math.max(REFRESH_RETRY_MS, (Number(e?.retryAfter) || 0) * 1000));
        }
        throw e;
      })
      .finally(() => {
        this.#refreshing = null;
      });
    return this.#refreshing;
  }

  /** `POST /logout` (`all`: every badge of the user); the badge is forgotten either way. */
  async logOut({ all = false } = {}) {
    try {
      return await this.request('POST', `/logout${all ? '?all=true' : ''}`, { cookie: this.#cookie });
    } finally {
      this.setToken(null);
    }
  }

  /**
   * Uses `token` as the badge from now on (null: none; the refresh token is forgotten too), plans
   * its refresh when `autoRefresh` is on, and tells the `token` listeners.
   */
  setToken(token) {
    this.token = token || null;
    if (!this.token) this.#refreshToken = null;
    this.#schedule();
    this.emit('token', this.token);
  }

  #accept(body) {
    if (!body || typeof body.access_token !== 'string') {
      throw new ClubhouseError('the server answered without a badge', { status: 502, body });
    }
    if (typeof body.refresh_token === 'string') this.#refreshToken = body.refresh_token;
    this.setToken(body.access_token);
  }

  /** Plans the next refresh: a minute before the badge expires, or at half its life if that is shorter. */
  #schedule(delay = null) {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    if (!this.#autoRefresh || !this.token) return;
    const claims = badgeClaims(this.token);
    if (!claims || typeof claims.exp !== 'number') return;
    const iat = typeof claims.iat === 'number' ? claims.iat : claims.exp;
    const lead = Math.min(REFRESH_LEAD_MS, ((claims.exp - iat) * 1000) / 2);
    const wait = delay ?? Math.max(1000, claims.exp * 1000 - lead - Date.now());
    this.#refreshTimer = setTimeout(() => {
      this.#refreshTimer = null;
      this.refresh().catch((e) => this.emit('refresherror', e));
    }, wait);
    // In Node a planned refresh alone does not keep the process running.
    this.#refreshTimer?.unref?.();
  }

  /** Whether the badge in use has expired (by its own `exp`). */
  get expired() {
    const claims = this.token ? badgeClaims(this.token) : null;
    return Boolean(claims && typeof claims.exp === 'number' && Date.now() / 1000 >= claims.exp);
  }

  /**
   * A request to the API: `json` or `form` as the body, the badge unless `auth: false`, the
   * refresh cookie with `cookie: true` (cookie mode). Resolves with the parsed JSON answer (null
   * without a body); throws a ClubhouseError on any answer but 2xx (`status` 0: unreachable).
   */
  async request(method, path, { json, form, auth = true, cookie = false } = {}) {
    const headers = { Accept: 'application/json' };
    // Asks for the refresh token as a cookie (login), or lets the cookie refresh: a header no
    // cross-site form can send.
    if (cookie) headers['X-Refresh-Cookie'] = '1';
    let body;
    if (json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      headers['Content-Type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(form).toString();
    }
    if (auth && this.token) headers.Authorization = `Bearer ${this.token}`;
    const init = { method, headers, body };
    if (this.#cookie) {
      // Browser options (Workers' fetch refuses some of them): the cookie goes only where asked.
      Object.assign(init, { credentials: cookie ? 'same-origin' : 'omit', cache: 'no-store', redirect: 'error' });
    }
    let response;
    try {
      response = await this.fetch(`${this.baseUrl}${path}`, init);
    } catch {
      throw new ClubhouseError('cannot reach the server', { status: 0 });
    }
    return readJson(response);
  }

  /** `GET` an API path with the badge (history pages, room info, my rooms). */
  async get(path) {
    return this.request('GET', path);
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

  /** For Room: whether a socket refused before opening should be tried again with `?token=`. */
  shouldTryQuery() {
    return this.#transportMode === 'auto' && this.transport === 'unknown';
  }
}

/** Retry-After in seconds (delta-seconds or an HTTP date), or null. */
function parseRetryAfter(value) {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, Math.ceil((when - Date.now()) / 1000));
}

async function readJson(response) {
  let text = '';
  try {
    text = await response.text();
  } catch {
    text = '';
  }
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const detail = typeof body?.detail === 'string' ? body.detail : `HTTP ${response.status}`;
    throw new ClubhouseError(detail, {
      status: response.status,
      retryAfter: parseRetryAfter(response.headers.get('Retry-After')),
      body,
    });
  }
  return body;
}

/** A random id for a message (crypto.randomUUID where there is one). */
function newClientId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}

const CHANGE_TYPES = new Set(['edited', 'deleted', 'reactions']);

export class Room extends Emitter {
  /** @type {'connecting' | 'open' | 'reconnecting' | 'closed'} */
  state = 'connecting';
  /** The newest message id seen (0: none). */
  lastId = 0;
  /** The newest revision applied (0: none yet). */
  lastRev = 0;
  /** The oldest message id delivered (0: none): a cut-short `rev` catch-up reloads back to it. */
  oldestId = 0;

  #club;
  #options;
  #socket = null;
  #seen = new Set();
  /** Sends waiting for their echo, by client_id, in the order they were made. */
  #pending = new Map();
  /**
   * Change frames sent lately, by the client_id they carried (the newest CHANGES_KEPT): an error
   * frame naming one is about that change. Ids are `change-<n>`, apart from sends' ids.
   */
  #changes = new Map();
  #changeCount = 0;
  /** The send whose frame went out last and whose answer is not in: the next goes after it. */
  #inFlight = null;
  #attempt = 0;
  #timer = null;
  #everOpened = false;
  #heartbeat = null;
  #silence = null;
  /** Bumped by every new socket, pause and close: work started for an older one is dropped. */
  #epoch = 0;
  /** The current socket was opened with `rev=` (an exact catch-up). */
  #byRev = false;
  /** Frames that came while a cut-short catch-up is completed over HTTP: handled after it. */
  #held = null;
  #paused = false;

  constructor(club, room, options) {
    super();
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

  /**
   * Replaces a message's content (only its author). False when not open. A refusal arrives as an
   * `error` event whose `change` is this edit (`{type, id, content}`); so for the other changes.
   */
  edit(id, content) {
    return this.#sendChange({ type: 'edit', id, content });
  }

  /** Deletes a message (its author, the room's owner or a moderator). */
  delete(id) {
    return this.#sendChange({ type: 'delete', id });
  }

  react(id, emoji) {
    return this.#sendChange({ type: 'react', id, emoji });
  }

  unreact(id, emoji) {
    return this.#sendChange({ type: 'unreact', id, emoji });
  }

  /** "I am typing": dropped when the socket is not open (it is ephemeral). */
  typing() {
    return this.#sendNow({ type: 'typing' });
  }

  /** Moves my read marker to message `id` (the server keeps forward moves only). */
  read(id) {
    return this.#sendChange({ type: 'read', id });
  }

  /**
   * The app shows messages back to `id` (pages it loaded over HTTP): a `rev` catch-up the server
   * cut short reloads them too.
   */
  keepFrom(id) {
    if (Number.isSafeInteger(id) && id > 0 && (this.oldestId === 0 || id < this.oldestId)) this.oldestId = id;
  }

  /** While waiting to reconnect: tries now instead of after the backoff. */
  reconnectNow() {
    if (this.state !== 'reconnecting' || this.#timer === null || this.#paused) return;
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#open();
  }

  /**
   * Closes the socket and stays away until `resume()` (going offline on purpose); pending sends
   * wait, and the catch-up after `resume()` brings what was missed.
   */
  pause() {
    if (this.state === 'closed' || this.#paused) return;
    this.#paused = true;
    this.#epoch += 1;
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#inFlight = null;
    this.#held = null;
    const socket = this.#socket;
    this.#socket = null;
    this.#stopHeartbeat();
    try {
      socket?.close(4000, 'paused');
    } catch {
      /* already closing */
    }
    this.state = 'reconnecting';
    this.emit('reconnecting', { attempt: this.#attempt, delayMs: null, code: 4000, reason: 'paused' });
  }

  /** Connects again after `pause()`, at once. */
  resume() {
    if (!this.#paused) return;
    this.#paused = false;
    if (this.state === 'closed') return;
    this.#attempt = 0;
    this.#open();
  }

  /** Leaves the room for good: pending sends are rejected. */
  close() {
    this.#finish({ code: 1000, reason: 'closed by the client' });
  }

  /**
   * Sends a change with a fresh client_id and remembers it under that id, so that an error frame
   * naming it says which change was refused. The id only tags errors: a change is not resent.
   */
  #sendChange(change) {
    let clientId;
    do clientId = `change-${++this.#changeCount}`;
    while (this.#pending.has(clientId));
    if (!this.#sendNow({ ...change, room_id: this.room, client_id: clientId })) return false;
    this.#changes.set(clientId, change);
    if (this.#changes.size > CHANGES_KEPT) this.#changes.delete(this.#changes.keys().next().value);
    return true;
  }

  #sendNow(frame) {
    if (this.state !== 'open' || !this.#socket) return false;
    try {
      this.#socket.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Sends the oldest unsent message, one at a time: the next goes out once its echo, or an error
   * frame naming its client_id, came back.
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

  #url(viaQuery) {
    const base = this.#club.baseUrl.replace(/^http/, 'ws');
    const query = [];
    // `since` for servers that predate revisions; `rev` asks for an exact catch-up (messages and
    // every change since), and wins where both are known.
    if (this.lastId > 0) query.push(`since=${this.lastId}`);
    this.#byRev = this.lastRev > 0 || (Number.isInteger(this.#options.rev) && !this.#everOpened);
    if (this.#byRev) query.push(`rev=${this.lastRev}`);
    if (this.#options.batch) query.push('batch=1');
    if (viaQuery) query.push(`token=${encodeURIComponent(this.#club.token ?? '')}`);
    return `${base}/ws/${encodeURIComponent(this.room)}${query.length ? `?${query.join('&')}` : ''}`;
  }

  /** The refresh to use when the badge is refused or expired, if any. */
  #refresher() {
    if (this.#options.refreshToken) return this.#options.refreshToken;
    if (this.#club.autoRefresh) return () => this.#club.refresh();
    return null;
  }

  #open({ viaQuery = this.#club.transport === 'query' } = {}) {
    if (this.state === 'closed' || this.#paused) return;
    const epoch = ++this.#epoch;
    const refresh = this.#refresher();
    if (refresh && this.#club.expired) {
      // Asleep past the planned refresh (a laptop lid): a new badge first, if the login holds.
      Promise.resolve()
        .then(refresh)
        .then(
          (token) => {
            if (typeof token === 'string' && token !== this.#club.token) this.#club.setToken(token);
            if (epoch === this.#epoch) this.#open({ viaQuery });
          },
          (e) => {
            if (epoch !== this.#epoch) return;
            if (transient(e)) this.#dropped({ code: 1006, reason: 'refresh failed' });
            else this.#finish({ code: 1008, reason: 'badge expired', error: e });
          },
        );
      return;
    }
    let socket;
    try {
      socket = viaQuery
        ? new this.#club.WebSocket(this.#url(true))
        : new this.#club.WebSocket(this.#url(false), ['bearer', this.#club.token]);
    } catch (e) {
      this.#dropped({ code: 1006, reason: String(e?.message ?? e), opened: false, viaQuery });
      return;
    }
    this.#socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      if (this.#socket === socket && this.#club.transport === 'unknown') this.#club.transport = viaQuery ? 'query' : 'bearer';
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
      this.#dropped({ code: event.code, reason: event.reason, opened, viaQuery });
    };
    socket.onerror = () => {
      // A close event follows.
    };
  }

  #receive(data) {
    if (typeof data !== 'string') return;
    if (data === 'pong') {
      this.emit('pong', 'pong');
      return;
    }
    if (this.#held) {
      this.#held.push(data);
      return;
    }
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    // A batch (`batch: true`) holds the frames of one of the room's commits, in order: each is
    // handled as if it had come on its own.
    if (frame?.type === 'batch' && Array.isArray(frame.frames)) {
      for (const inner of frame.frames) this.#dispatch(inner);
      return;
    }
    this.#dispatch(frame);
  }

  #dispatch(frame) {
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
    this.emit('closing', frame);
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
    this.#dropped({ code, reason, opened: true });
  }

  /**
   * The first frame of every connection. The first time, listeners get the whole history; after a
   * reconnect (or a connect with `since`/`rev`) each item is delivered as its own event instead
   * (`message` items not seen before, `edited`, `deleted`, `reactions`), in order, and the
   * `history` event carries what was left (`resumed: true`). When the server cut the catch-up
   * short (`truncated`), it is completed over HTTP first (#complete), frames that come meanwhile
   * waiting their turn.
   */
  #history(frame) {
    const resumed = this.#everOpened || this.lastRev > 0 || this.lastId > 0;
    const before = this.lastId;
    this.#everOpened = true;
    this.#attempt = 0;
    this.state = 'open';
    const items = Array.isArray(frame.messages) ? frame.messages : [];
    if (!resumed) {
      for (const m of items) this.#remember(m.id);
      this.#raiseRev(frame.rev);
      this.#opened({ ...frame, messages: items, resumed, complete: true });
      return;
    }
    if (frame.truncated === true && before > 0) {
      this.#held = [];
      this.#complete(frame, items, before);
      return;
    }
    this.#deliver(items);
    this.#raiseRev(frame.rev);
    this.#opened({ ...frame, messages: [], resumed, complete: true });
  }

  /**
   * Catch-up items, in order, each as its own event. `overHttp`: pages read at some revision we do
   * not know, so their messages' `rev` does not say how far the room's changes were applied.
   */
  #deliver(items, { overHttp = false } = {}) {
    for (const item of items) {
      const type = item?.type ?? 'message';
      if (type === 'message') this.#message({ ...item, type }, { overHttp });
      else this.#change(item);
    }
  }

  /**
   * A catch-up the server cut short. With `since`: the messages between what we had and the first
   * one sent are paged in over HTTP and delivered first, in id order. With `rev`: the items say
   * only the newest part, and what we had may have changed: the room's messages are reloaded over
   * HTTP back to `oldestId` and handed over in their current state (`reload`).
   */
  async #complete(frame, items, before) {
    const epoch = this.#epoch;
    const byRev = this.#byRev;
    let complete = false;
    try {
      if (byRev) {
        this.#deliver(items);
        const { messages, complete: all } = await this.#pages(RELOAD_MAX_PAGES, (list) => list[0].id <= this.oldestId);
        if (epoch !== this.#epoch) return;
        for (const m of messages) this.#remember(m.id);
        this.emit('reload', { messages, complete: all });
        complete = all;
      } else {
        const upTo = items.length && Number.isSafeInteger(items[0].id) ? items[0].id : Number.MAX_SAFE_INTEGER;
        const { messages, complete: all } = await this.#pages(
          GAP_FILL_MAX_PAGES,
          (list) => list[0].id <= before,
          upTo,
        );
        if (epoch !== this.#epoch) return;
        this.#deliver(messages.filter((m) => m.id > before), { overHttp: true });
        this.#deliver(items);
        complete = all;
      }
    } catch {
      if (epoch !== this.#epoch) return;
      if (!byRev) this.#deliver(items);
    }
    this.#raiseRev(frame.rev);
    const held = this.#held ?? [];
    this.#held = null;
    this.#opened({ ...frame, messages: [], resumed: true, complete });
    for (const data of held) this.#receive(data);
  }

  /**
   * Pages of the room's messages over HTTP, newest first from `before` (exclusive), until `enough`
   * says a page reaches far enough or `maxPages` were read; all of them, oldest first.
   */
  async #pages(maxPages, enough, before = 0) {
    const found = [];
    let cursor = before;
    for (let n = 0; n < maxPages; n += 1) {
      const query = cursor > 0 && cursor < Number.MAX_SAFE_INTEGER ? `before=${cursor}&limit=${PAGE_LIMIT}` : `limit=${PAGE_LIMIT}`;
      const page = await this.#club.get(`/rooms/${encodeURIComponent(this.room)}/messages?${query}`);
      const list = (Array.isArray(page?.messages) ? page.messages : []).filter((m) => Number.isSafeInteger(m?.id));
      found.unshift(...list);
      if (!page?.has_more || list.length === 0 || enough(list)) return { messages: found, complete: true };
      cursor = list[0].id;
    }
    return { messages: found, complete: false };
  }

  /** The connection is ready: `history`, then `open`, then the messages waiting to go. */
  #opened(history) {
    this.emit('history', history);
    this.emit('open', { resumed: history.resumed });
    this.#startHeartbeat();
    // Messages sent before a drop go again with the same client_id: stored once.
    this.#flush();
  }

  #raiseRev(rev) {
    if (typeof rev === 'number' && rev > this.lastRev) this.lastRev = rev;
  }

  #remember(id) {
    if (typeof id !== 'number') return;
    this.#seen.add(id);
    if (id > this.lastId) this.lastId = id;
    if (this.oldestId === 0 || id < this.oldestId) this.oldestId = id;
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

  #message(frame, { overHttp = false } = {}) {
    const fresh = !this.#seen.has(frame.id);
    this.#remember(frame.id);
    if (!overHttp) this.#raiseRev(frame.rev);
    const mine = frame.client_id !== undefined ? this.#pending.get(frame.client_id) : undefined;
    if (mine) {
      this.#pending.delete(frame.client_id);
      mine.acked = true;
      if (this.#inFlight === mine) this.#inFlight = null;
      mine.resolve(frame);
    }
    if (fresh) this.emit('message', frame);
    this.#flush();
  }

  /**
   * Changes carry the revision they made: one at or below the newest applied is already reflected
   * (in the history, or applied before), so it is not delivered again.
   */
  #change(frame) {
    if (CHANGE_TYPES.has(frame.type) && typeof frame.rev === 'number') {
      if (frame.rev <= this.lastRev) return;
      this.lastRev = frame.rev;
    }
    this.emit(frame.type, frame);
  }

  /**
   * An error frame is a send's answer only when it names that send's client_id (the server names
   * the frame it answers); any other (a change refused, or a send we no longer hold) is an `error`
   * event and leaves the message in flight alone. One naming a change we sent carries that change
   * as `change`.
   */
  #error(frame) {
    const named = typeof frame.client_id === 'string' ? frame.client_id : undefined;
    const mine = named !== undefined ? this.#pending.get(named) : undefined;
    if (!mine) {
      const change = named !== undefined ? this.#changes.get(named) : undefined;
      if (!change) {
        this.emit('error', frame);
        return;
      }
      // A frame is answered by one error at most.
      this.#changes.delete(named);
      this.emit('error', { ...frame, change: { ...change } });
      return;
    }
    if (this.#inFlight === mine) this.#inFlight = null;
    const detail = String(frame.detail ?? '');
    if (detail === 'rate limited' || detail.startsWith('message not stored')) {
      // Not applied: the same frame (same client_id) goes again after the server's pause.
      const wait = Math.max(Number(frame.retry_after_ms) || 0, 50);
      setTimeout(() => this.#flush(), wait);
      return;
    }
    this.#pending.delete(mine.clientId);
    mine.reject(new ClubhouseError(detail, { frame }));
    this.emit('error', frame);
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
        this.#dropped({ code: 4000, reason: 'heartbeat timeout', opened: true });
      }, this.#options.heartbeatTimeoutMs);
    }, this.#options.heartbeatMs);
  }

  #stopHeartbeat() {
    clearInterval(this.#heartbeat);
    clearTimeout(this.#silence);
    this.#silence = null;
  }

  /** The socket closed (or never opened): find out whether to retry, and when. */
  async #dropped({ code, reason, opened = false, viaQuery = false }) {
    if (this.state === 'closed') return;
    const epoch = this.#epoch;
    this.#inFlight = null;
    this.#held = null;
    this.state = 'reconnecting';
    // A browser hides why an upgrade was refused; asking the API with the same badge tells a
    // refusal for good (401 expired or revoked, 403 private or banned, 422 bad name) from a
    // passing drop.
    if (code === 1008 || code === 1006 || code === 1002 || !opened) {
      const { refusal, reachable } = await this.#probe();
      if (this.state === 'closed' || epoch !== this.#epoch) return;
      const refresh = this.#refresher();
      if (refusal?.status === 401 && refresh) {
        try {
          const token = await refresh();
          if (typeof token === 'string' && token !== this.#club.token) this.#club.setToken(token);
        } catch (e) {
          if (epoch === this.#epoch) this.#finish({ code, reason, error: refusal });
          return;
        }
        if (this.state === 'closed' || epoch !== this.#epoch) return;
      } else if (refusal) {
        this.#finish({ code, reason, error: refusal });
        return;
      } else if (!opened && reachable && !viaQuery && this.#club.shouldTryQuery()) {
        // The server is up, the badge is good and the room lets us in, yet the handshake failed:
        // a server without the `bearer` subprotocol. The badge goes in the query instead.
        this.#open({ viaQuery: true });
        return;
      }
    }
    if (this.#paused) return;
    const ceiling = Math.min(this.#options.maxDelayMs, this.#options.minDelayMs * 2 ** this.#attempt);
    // Full jitter: clients dropped together do not come back together.
    const delayMs = Math.round(Math.random() * ceiling);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    this.emit('reconnecting', { attempt: this.#attempt, delayMs, code, reason });
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#open();
    }, delayMs);
  }

  /**
   * The API's answer for this badge and room: `refusal` when it refuses for good (with the room's
   * info as the body for a ban), `reachable` when the server answered at all.
   */
  async #probe() {
    try {
      const info = await this.#club.get(`/rooms/${encodeURIComponent(this.room)}`);
      if (info && info.banned) {
        return { refusal: new ClubhouseError(`banned from ${this.room}`, { status: 403, body: info }), reachable: true };
      }
      return { refusal: null, reachable: true };
    } catch (e) {
      if (e instanceof ClubhouseError && [401, 403, 404, 422].includes(e.status)) return { refusal: e, reachable: true };
      return { refusal: null, reachable: e instanceof ClubhouseError && e.status > 0 };
    }
  }

  #finish({ code, reason, error }) {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.#epoch += 1;
    this.#held = null;
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
    this.emit('close', { code, reason, error });
  }
}
