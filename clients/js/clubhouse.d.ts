// Types for clubhouse.js. The frames are those of docs/api/asyncapi.json.

/** Longest message content, in characters (Unicode code points). */
export const MAX_CONTENT_CHARS: 4000;

/** An HTTP refusal (`status`, `retryAfter` seconds for 429) or an error frame (`frame`). */
export class ClubhouseError extends Error {
  readonly name: 'ClubhouseError';
  readonly detail: string;
  readonly status?: number;
  readonly retryAfter: number | null;
  readonly frame?: ErrorFrame;
}

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
}

export interface ConnectOptions {
  /** Start after this message id (`?since=`). */
  since?: number;
  /** Start after this revision (`?rev=`): exact catch-up of messages and changes. */
  rev?: number;
  /** Reconnect delays: full jitter between 0 and min(maxDelayMs, minDelayMs · 2^attempt). */
  minDelayMs?: number;
  maxDelayMs?: number;
  /** A `ping` this often while open (default 30000; 0: none). */
  heartbeatMs?: number;
  /** A socket silent this long after a ping is given up and replaced (default 10000). */
  heartbeatTimeoutMs?: number;
  /** Called when the badge is refused (expired or revoked): a new badge to go on with. Without it, the room closes. */
  refreshToken?: () => string | Promise<string>;
}

export class Clubhouse {
  constructor(options: ClubhouseOptions);
  readonly baseUrl: string;
  /** The badge `connect()` uses. */
  token: string | null;
  /** `POST /users/`. */
  signUp(username: string, password: string): Promise<{ username: string }>;
  /** `POST /token`: keeps and returns the badge. */
  logIn(username: string, password: string): Promise<string>;
  /** `POST /logout` (`all`: every badge of the user). */
  logOut(options?: { all?: boolean }): Promise<{ detail: string; all: boolean }>;
  /** A `GET` of an API path with the badge, e.g. `/rooms/lobby/messages?before=100`. */
  get<T = unknown>(path: string): Promise<T>;
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
  truncated: boolean;
  rev: number;
  /** A reconnect (or a connect with `since`/`rev`): its items were delivered one by one. */
  resumed: boolean;
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
  /** Every message once (by id), your own echoes included. */
  message: MessageFrame;
  edited: EditedFrame;
  deleted: DeletedFrame;
  reactions: ReactionsFrame;
  typing: TypingFrame;
  join: JoinFrame;
  leave: LeaveFrame;
  presence_changes: PresenceChangesFrame;
  /** Error frames that are not the answer to a `send()` (which rejects instead). */
  error: ErrorFrame;
  read: ReadFrame;
  /** The server is closing the socket: a kick (4001) ends the room; otherwise as a drop. */
  closing: ClosingFrame;
  pong: 'pong';
  /** The room has the socket (after its history). */
  open: { resumed: boolean };
  /** The socket dropped; the next attempt is in `delayMs`. */
  reconnecting: { attempt: number; delayMs: number; code: number; reason: string };
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
  on<K extends keyof RoomEvents>(type: K, listener: (event: RoomEvents[K]) => void): () => void;
  off<K extends keyof RoomEvents>(type: K, listener: (event: RoomEvents[K]) => void): void;
  /**
   * Sends a message (`client_id` set for you, or yours): resolves with its echo once stored,
   * exactly once however often the connection drops meanwhile; rejects with a ClubhouseError
   * carrying the error frame, or when the room closes first.
   */
  send(content: string, options?: { clientId?: string }): Promise<MessageFrame>;
  edit(id: number, content: string): void;
  delete(id: number): void;
  react(id: number, emoji: string): void;
  unreact(id: number, emoji: string): void;
  typing(): void;
  /** While waiting to reconnect: tries now instead of after the backoff. */
  reconnectNow(): void;
  /** Leaves for good; pending sends reject. */
  close(): void;
}
