// Types for clubhouse.js. The frames are those of docs/api/asyncapi.json.

/** Longest message content, in characters (Unicode code points). */
export const MAX_CONTENT_CHARS: 4000;

/**
 * An HTTP refusal (`status`: 0 when the server could not be reached; `retryAfter` seconds for
 * 429; `body` the parsed answer, or for a ban the room's info) or an error frame (`frame`).
 */
export class ClubhouseError extends Error {
  readonly name: 'ClubhouseError';
  readonly detail: string;
  readonly status?: number;
  readonly retryAfter: number | null;
  readonly frame?: ErrorFrame;
  readonly body?: any;
}

/** A badge's claims, read without checking its signature (for its times and name); null if unreadable. */
export function badgeClaims(token: string): ({ sub?: string; exp?: number; iat?: number } & Record<string, unknown>) | null;

/** Anything that builds a browser-compatible WebSocket: `new WebSocket(url, protocols)`. */
export interface WebSocketConstructor {
  new (url: string, protocols?: string | string[]): WebSocketLike;
}

export interface WebSocketLike {
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface ClubhouseOptions {
  /** The service, e.g. `https://chat.example` (its `/ws/` is reached over `ws:`/`wss:`). */
  baseUrl: string;
  /** A badge from an earlier `logIn()`. */
  token?: string | null;
  /** Defaults to `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Defaults to `globalThis.WebSocket` (browsers, Workers, Node 22+); on Node 20 pass `ws`'s. */
  WebSocket?: WebSocketConstructor;
  /**
   * Browsers: the refresh token stays in the server's HttpOnly cookie (`X-Refresh-Cookie`), never
   * in script; `logIn()` asks for it, `refresh()` and `logOut()` send it. Default false: the
   * refresh token from `logIn()` is kept in memory.
   */
  cookie?: boolean;
  /**
   * Refresh the badge a minute before it expires (or at half its life), before a connect with an
   * expired badge, and when a room's badge is refused with 401; a refresh that could not reach the
   * server is tried again in 10 s, one refused with 429 after its `Retry-After`. Default false.
   */
  autoRefresh?: boolean;
  /**
   * How sockets carry the badge: `bearer` (the `bearer` subprotocol, default), `query`
   * (`?token=`, puts the badge in URLs and logs), or `auto`: the subprotocol, and `?token=` for a
   * server whose handshake fails with it while its API lets you in.
   */
  transport?: 'bearer' | 'query' | 'auto';
}

export interface ConnectOptions {
  /** Start after this message id (`?since=`). */
  since?: number;
  /** Start after this revision (`?rev=`): exact catch-up of messages and changes. */
  rev?: number;
  /**
   * Batched delivery (`?batch=1`): the server sends the frames of one of its commits as one
   * `batch` frame, fewer frames in a burst for the same events; the library hands each inner frame
   * out as its own event, so listeners see no difference. Default false.
   */
  batch?: boolean;
  /** Reconnect delays: full jitter between 0 and min(maxDelayMs, minDelayMs · 2^attempt). */
  minDelayMs?: number;
  maxDelayMs?: number;
  /** A `ping` this often while open (default 30000; 0: none). */
  heartbeatMs?: number;
  /** A socket silent this long after a ping is given up and replaced (default 10000). */
  heartbeatTimeoutMs?: number;
  /**
   * Called when the badge is refused (expired or revoked): a new badge to go on with. Without it
   * (and without `autoRefresh`), the room closes.
   */
  refreshToken?: () => string | Promise<string>;
}

export interface ClubhouseEvents {
  /** The badge changed: `logIn()`, `refresh()`, `setToken()`; null after `logOut()`. */
  token: string | null;
  /** A planned refresh failed (transient failures are tried again in 10 s). */
  refresherror: ClubhouseError;
}

export class Clubhouse {
  constructor(options: ClubhouseOptions);
  readonly baseUrl: string;
  /** The badge `connect()` uses. */
  token: string | null;
  /** How sockets carry the badge; `unknown` until an `auto` socket opened. */
  readonly transport: 'bearer' | 'query' | 'unknown';
  readonly autoRefresh: boolean;
  /** Whether the badge in use is past its `exp`. */
  readonly expired: boolean;
  on<K extends keyof ClubhouseEvents>(type: K, listener: (event: ClubhouseEvents[K]) => void): () => void;
  off<K extends keyof ClubhouseEvents>(type: K, listener: (event: ClubhouseEvents[K]) => void): void;
  /** `POST /users/`. */
  signUp(username: string, password: string): Promise<{ username: string }>;
  /** `POST /token`: keeps and returns the badge. */
  logIn(username: string, password: string): Promise<string>;
  /** `POST /logout` (`all`: every badge of the user); the badge is forgotten either way. */
  logOut(options?: { all?: boolean }): Promise<{ detail: string; all: boolean }>;
  /**
   * `POST /token` with the refresh grant (the refresh token from `logIn()`, or the cookie): keeps
   * and returns the new badge. Browser tabs take turns (Web Locks).
   */
  refresh(): Promise<string>;
  /** Uses this badge from now on (null: none), plans its refresh with `autoRefresh`. */
  setToken(token: string | null): void;
  /** A `GET` of an API path with the badge, e.g. `/rooms/lobby/messages?before=100`. */
  get<T = unknown>(path: string): Promise<T>;
  /**
   * Any API request: a JSON or form body, the badge unless `auth: false`, the refresh cookie with
   * `cookie: true`. Resolves with the parsed answer (null if empty); rejects with a ClubhouseError.
   */
  request<T = unknown>(
    method: string,
    path: string,
    options?: { json?: unknown; form?: Record<string, string>; auth?: boolean; cookie?: boolean },
  ): Promise<T>;
  /** Joins a room; it reconnects by itself until `close()`. */
  connect(room: string, options?: ConnectOptions): Room;
}

export type Reactions = Record<string, string[]>;

/** A message in its current state (history, catch-up, HTTP). */
export interface StoredMessage {
  id: number;
  room_id: string;
  username: string;
  content?: string;
  ts: number;
  rev: number;
  edited_ts?: number;
  reactions?: Reactions;
  deleted?: true;
}

export interface MessageFrame {
  type: 'message';
  id: number;
  room_id: string;
  username: string;
  content: string;
  ts: number;
  rev: number;
  /** The sender's client_id (every `send()` sets one). */
  client_id?: string;
}
export interface EditedFrame {
  type: 'edited';
  id: number;
  rev: number;
  content: string;
  edited_ts: number;
  username: string;
  room_id: string;
}
export interface DeletedFrame {
  type: 'deleted';
  id: number;
  rev: number;
  by: string;
  room_id: string;
}
export interface ReactionsFrame {
  type: 'reactions';
  id: number;
  rev: number;
  room_id: string;
  reactions: Reactions;
}
export interface HistoryFrame {
  type: 'history';
  /** The first time: the history. After a reconnect: empty, the items came as events. */
  messages: StoredMessage[];
  /** The server cut the catch-up short; it was completed over HTTP before this event. */
  truncated: boolean;
  rev: number;
  /** A reconnect (or a connect with `since`/`rev`): its items were delivered one by one. */
  resumed: boolean;
  /** False when completing a cut-short catch-up over HTTP gave up (too far behind, or it failed). */
  complete: boolean;
}
/**
 * After a `rev` catch-up the server cut short: the room's messages in their current state, over
 * HTTP, back to `oldestId` (replace what you show of them; the new ones are not also `message`s).
 */
export interface ReloadEvent {
  messages: StoredMessage[];
  /** False when it stopped before reaching back to `oldestId`. */
  complete: boolean;
}
export interface PresenceFrame {
  type: 'presence';
  users: string[];
}
export interface TypingFrame {
  type: 'typing';
  username: string;
}
export interface JoinFrame {
  type: 'join';
  username: string;
}
export interface LeaveFrame {
  type: 'leave';
  username: string;
}
export interface PresenceChangesFrame {
  type: 'presence_changes';
  joined: string[];
  left: string[];
}
export interface ErrorFrame {
  type: 'error';
  detail: string;
  /** `muted` or `slow_mode` when moderation refused the frame. */
  code?: 'muted' | 'slow_mode';
  retry_after_ms?: number;
  /** When a mute ends (ms since the epoch); null until lifted. */
  until?: number | null;
  /** The `client_id` of the frame this answers, when it carried one (a message's, or a change's). */
  client_id?: string;
}
/** A change sent by `edit`, `delete`, `react`, `unreact` or `read` (never the badge). */
export type Change =
  | { type: 'edit'; id: number; content: string }
  | { type: 'delete' | 'read'; id: number }
  | { type: 'react' | 'unreact'; id: number; emoji: string };
/** An `error` event: the frame, and the change it refused when it names one this Room sent. */
export interface RoomErrorEvent extends ErrorFrame {
  change?: Change;
}
/** Someone's read marker moved (read receipts). */
export interface ReadFrame {
  type: 'read';
  username: string;
  id: number;
}
/** The server's last frame before it closes the socket, with the close's code and reason. */
export interface ClosingFrame {
  type: 'closing';
  code: number;
  reason: string;
}

export interface RoomEvents {
  history: HistoryFrame;
  presence: PresenceFrame;
  /**
   * Every message once (by id), your own echoes included. Caught up after a drop, a message comes
   * in its current state (`StoredMessage`: perhaps edited, or `deleted`).
   */
  message: MessageFrame;
  reload: ReloadEvent;
  edited: EditedFrame;
  deleted: DeletedFrame;
  reactions: ReactionsFrame;
  typing: TypingFrame;
  join: JoinFrame;
  leave: LeaveFrame;
  presence_changes: PresenceChangesFrame;
  /**
   * Error frames: a change's refusal (with `change`: which edit, deletion, reaction or read), a
   * `send()`'s refusal (which rejects it too), and any other. A send's `rate limited` or
   * `message not stored` is not one: it is resent.
   */
  error: RoomErrorEvent;
  read: ReadFrame;
  /** The server is closing the socket: a kick (4001) ends the room; otherwise as a drop. */
  closing: ClosingFrame;
  pong: 'pong';
  /** The room has the socket (after its history). */
  open: { resumed: boolean };
  /** The socket dropped; the next attempt is in `delayMs` (null after `pause()`: at `resume()`). */
  reconnecting: { attempt: number; delayMs: number | null; code: number; reason: string };
  /** For good: `close()`, or a refusal (`error.status` 401, 403, 404 or 422). */
  close: { code: number; reason: string; error?: ClubhouseError };
}

export class Room {
  readonly room: string;
  readonly state: 'connecting' | 'open' | 'reconnecting' | 'closed';
  /** The newest message id seen. */
  readonly lastId: number;
  /** The newest revision applied. */
  readonly lastRev: number;
  /** The oldest message id delivered (or given to `keepFrom`). */
  readonly oldestId: number;
  on<K extends keyof RoomEvents>(type: K, listener: (event: RoomEvents[K]) => void): () => void;
  off<K extends keyof RoomEvents>(type: K, listener: (event: RoomEvents[K]) => void): void;
  /**
   * Sends a message (`client_id` set for you, or yours): resolves with its echo once stored,
   * exactly once however often the connection drops meanwhile; rejects with a ClubhouseError
   * carrying the error frame, or when the room closes first.
   */
  send(content: string, options?: { clientId?: string }): Promise<MessageFrame>;
  /**
   * The frames about messages and reading: false when the socket is not open (nothing sent). Each
   * goes with its own `client_id`; its refusal is an `error` event whose `change` is this change.
   */
  edit(id: number, content: string): boolean;
  delete(id: number): boolean;
  react(id: number, emoji: string): boolean;
  unreact(id: number, emoji: string): boolean;
  typing(): boolean;
  /** Moves your read marker to message `id` (the server keeps forward moves only). */
  read(id: number): boolean;
  /** You show messages back to `id` (loaded over HTTP): a cut-short `rev` catch-up reloads them too. */
  keepFrom(id: number): void;
  /** While waiting to reconnect: tries now instead of after the backoff. */
  reconnectNow(): void;
  /** Closes the socket and stays away until `resume()`; pending sends wait. */
  pause(): void;
  /** Connects again after `pause()`, at once, and catches up. */
  resume(): void;
  /** Leaves for good; pending sends reject. */
  close(): void;
}
