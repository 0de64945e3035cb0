// Clubhouse browser client. Plain ES module: no build step, no dependencies, strict-CSP friendly
// (no inline code, no eval, no innerHTML). Every piece of text that came from the network is put
// into the page with textContent, so markup in a message is shown as the characters it is.
//
// The protocol (HTTP requests, the socket with its reconnects, heartbeat and exact catch-up, the
// badge's refresh) is the client library's, clients/js/clubhouse.js, served at /clubhouse.js: this
// file is the page around it.
//
// The token lives in sessionStorage only (per tab, gone when the tab closes), travels in the
// Authorization header over HTTP and in Sec-WebSocket-Protocol ("bearer", <JWT>) on the socket, so
// it never appears in a URL unless the server predates that transport (then ?token= is used).
// The refresh token never reaches this script: the server keeps it in an HttpOnly cookie sent to
// /token only. The library trades it for a new token on load and a little before each token
// expires, so a person stays logged in across reloads; open sockets are not touched by a refresh.

import { Clubhouse, ClubhouseError, MAX_CONTENT_CHARS, badgeClaims } from '/clubhouse.js';

const TOKEN_KEY = 'clubhouse.token';
const USERNAME_RE = /^[A-Za-z0-9_.-]{3,32}$/;
const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
const DM_RE = /^dm\.[0-9a-f]{32}$/; // a direct-message room: the server derives it from the two names
const BLOCKED_DETAIL = 'this user does not accept your messages'; // the 403 of a DM whose other member blocked us
const MY_ROOMS_REFRESH_MS = 10000; // how often the sidebar asks GET /me/rooms for other rooms' unread counts
const MY_ROOMS_HIDDEN_REFRESH_MS = 30000; // the same while the tab is hidden (the title still counts unread)
const READ_SEND_EVERY_MS = 1000; // at most one read marker a second: read frames share the message rate limit
const SNIPPET_CHARS = 100;
const PAGE_SIZE = 50;
// The socket's reconnects and heartbeat (clubhouse.js ConnectOptions).
// batch: a busy room's burst arrives as a few frames instead of hundreds (fewer wake-ups, less battery).
const CONNECT_OPTIONS = { minDelayMs: 500, maxDelayMs: 15000, heartbeatMs: 25000, heartbeatTimeoutMs: 10000, batch: true };
const TYPING_SEND_EVERY_MS = 3200; // at most one "typing" frame this often while typing (the server forwards one per 3 s: a little over it, so none is dropped)
const TYPING_SHOW_MS = 5000; // how long "alice is typing…" stays after her last typing frame
const REACTION_PALETTE = ['👍', '❤️', '😂', '🎉', '😮', '😢'];

const $ = (id) => document.getElementById(id);

// Same origin: the refresh cookie, a badge refreshed before it expires (and when a socket finds it
// refused), and `?token=` for a server without the `bearer` subprotocol.
const club = new Clubhouse({ baseUrl: location.origin, cookie: true, autoRefresh: true, transport: 'auto' });

const state = {
  token: null,
  /** Set while a request of ours (deleting the account) is about to make the server close our sockets. */
  closingExpected: false,
  username: null,
  exp: 0,
  room: null,
  entered: null, // replaced by each enterRoom: an older one's work arriving late is dropped
  roomInfo: null,
  conn: null, // the library's Room for the room in view; its events are ignored once replaced
  status: 'idle',
  countdownTimer: 0,
  nextAttemptAt: 0,
  stopped: false, // no more reconnects in this room (removed, forbidden)
  // The view: messages by id, kept in id order.
  els: new Map(), // id -> <li>
  msgs: new Map(), // id -> { id, username, ts, rev, content, deleted, edited_ts, reactions: [[emoji, [user…]]…] }
  ids: [], // sorted ascending
  lastId: 0,
  rev: 0, // the room's revision last applied (history frame, then live frames); 0 = unknown
  typing: new Map(), // username -> timer that hides "is typing…"
  lastTypingSent: 0,
  editing: null, // { id, returnFocus } while a message is being edited in place
  popup: null, // { node, trigger } the open menu or palette
  // Pages of messages over HTTP are built at a revision we do not know: while one is on its way,
  // the changes that arrive are kept, and replayed on top of the page's copies (fetchMessages).
  view: {}, // replaced when the view is reset: an older fetch's answer is dropped
  fetches: 0, // HTTP pages of messages on their way
  changeLog: [], // edited/deleted/reactions items applied while fetches > 0, in rev order
  historyEpoch: 0, // history frames applied so far in this view
  online: new Set(),
  olderSupported: true,
  noOlder: false,
  loadingOlder: false,
  lastSent: null,
  retryUntil: 0,
  retryTimer: 0,
  // The sidebar: GET /me/rooms, bumped live for the room in view.
  myRooms: [], // [{ room_id, kind, last_message, unread, last_read_id, with }], newest activity first
  myRoomsLoaded: false, // false on servers without /me/rooms: the sidebar lists recent rooms only
  myRoomsTimer: 0,
  myRoomsGen: 0, // bumped per request: an older answer arriving late is dropped
  myRoomsAt: 0, // when the list was last asked for
  dmWith: new Map(), // DM room id -> the other person's name
  refused: new Set(), // private rooms that refused us: listed, marked, until the list shows we were added
  added: new Set(), // rooms that refused us and then appeared in GET /me/rooms: marked until visited
  unseenHere: 0, // messages from others that came into the room in view while the tab was hidden
  readSent: 0, // the newest id we sent a read marker for in this room
  readTimer: 0,
  peerRead: 0, // in a DM: the newest id the other person has read (their read receipts)
};

const isRoomId = (room) => ROOM_RE.test(room) || DM_RE.test(room);

// ------------------------------------------------------------------------------------------
// Small DOM helpers
// ------------------------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function show(node, text) {
  node.textContent = text || '';
  node.hidden = !text;
}

function clearChildren(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

// ------------------------------------------------------------------------------------------
// HTTP
// ------------------------------------------------------------------------------------------

/** Calls the API (through the library). Never throws: failures come back with their status, 0
 *  when the server could not be reached. */
async function api(method, path, { json, form, auth = true, cookie = false } = {}) {
  let out;
  try {
    const data = await club.request(method, path, { json, form, auth, cookie });
    out = { ok: true, data, detail: '', retryAfter: null };
  } catch (e) {
    if (!(e instanceof ClubhouseError)) throw e;
    const detail = e.status === 0 ? 'Cannot reach the server. Check your connection.' : e.detail;
    out = { ok: false, status: e.status, data: e.body ?? null, detail, retryAfter: e.retryAfter };
  }
  if (out.status === 401 && auth && state.token) {
    sessionEnded('Your session has ended. Please log in again.');
  }
  return out;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

// ------------------------------------------------------------------------------------------
// Session
// ------------------------------------------------------------------------------------------

/** Logged in with `token` (the library keeps it, and refreshes it before it expires). */
function setSession(token, fallbackName) {
  club.setToken(token); // onToken below
  if (!state.username) state.username = fallbackName;
}

/** A new badge from the library (log in, or a refresh): the name, expiry and this tab's copy. */
function onToken(token) {
  if (!token) return;
  const claims = badgeClaims(token) || {};
  state.token = token;
  if (typeof claims.sub === 'string') state.username = claims.sub;
  state.exp = typeof claims.exp === 'number' ? claims.exp : 0;
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    /* private mode: the session lasts as long as the page */
  }
}

function clearSession() {
  club.setToken(null);
  state.token = null;
  state.username = null;
  state.exp = 0;
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* nothing stored */
  }
}

function tokenExpired() {
  return state.exp > 0 && Date.now() / 1000 >= state.exp;
}

/** Trades the refresh cookie for a new token (clubhouse.js refresh()). True with a new token in place. */
async function refreshSession() {
  try {
    await club.refresh();
    return true;
  } catch {
    return false;
  }
}

/** The token is no longer good (401, revoked, expired): back to the login form. */
function sessionEnded(message) {
  leaveRoom();
  clearSession();
  showAuth(message);
}

async function logout(everywhere = false) {
  const token = state.token;
  leaveRoom();
  if (token) {
    // Best effort: the server revokes the token and closes its sockets. Cleared locally either way.
    await club.logOut({ all: everywhere }).catch(() => {});
  }
  clearSession();
  showAuth('You have logged out.', 'info');
}

// ------------------------------------------------------------------------------------------
// Sign up / log in
// ------------------------------------------------------------------------------------------

let authCountdown = 0;

// Names that logged in from this browser (lowercase, newest first): the card opens on "Log in" for
// a returning person and on "Sign up" for a newcomer, and a wrong password for a name never seen
// here suggests signing up. Only names are kept, never a secret.
const ACCOUNTS_KEY = 'clubhouse.accounts';
const ACCOUNTS_KEPT = 20;
let authMode = 'signup';

function knownAccounts() {
  try {
    const list = JSON.parse(localStorage.getItem(ACCOUNTS_KEY) || '[]');
    return Array.isArray(list) ? list.filter((n) => typeof n === 'string') : [];
  } catch {
    return [];
  }
}

function rememberAccount(name) {
  if (typeof name !== 'string') return;
  const key = name.toLowerCase();
  const list = [key, ...knownAccounts().filter((n) => n !== key)].slice(0, ACCOUNTS_KEPT);
  try {
    localStorage.setItem(ACCOUNTS_KEY, JSON.stringify(list));
  } catch {
    /* not persisted: the card opens on Sign up next time */
  }
}

function forgetAccount(name) {
  const key = String(name).toLowerCase();
  try {
    localStorage.setItem(ACCOUNTS_KEY, JSON.stringify(knownAccounts().filter((n) => n !== key)));
  } catch {
    /* nothing stored */
  }
}

/** Shows the card as "Create your account" or "Log in": one primary button, so Enter does what it says. */
function setAuthMode(mode) {
  authMode = mode === 'login' ? 'login' : 'signup';
  const signup = authMode === 'signup';
  $('auth-form').dataset.mode = authMode;
  $('auth-title').textContent = signup ? 'Create your account' : 'Log in';
  $('signup-btn').hidden = !signup;
  $('login-btn').hidden = signup;
  $('username-hint').hidden = !signup;
  $('password-hint').hidden = !signup;
  $('auth-password').autocomplete = signup ? 'new-password' : 'current-password';
  $('switch-text').textContent = signup ? 'Already have an account?' : 'New to Clubhouse?';
  $('auth-switch').textContent = signup ? 'Log in instead' : 'Create an account';
}

function switchAuthMode() {
  setAuthMode(authMode === 'signup' ? 'login' : 'signup');
  authError('');
  $($('auth-username').value ? 'auth-password' : 'auth-username').focus();
}

/** A 401 on login. The server does not say whether the name exists (that would list accounts),
 *  but a name that never logged in from this browser is likely new: offer to sign up with it. */
function wrongPassword(username) {
  authError('Wrong username or password.');
  if (knownAccounts().includes(username.toLowerCase()) || !USERNAME_RE.test(username)) return;
  const node = $('auth-error');
  const offer = el('button', 'link', `Sign up as “${username}”`);
  offer.type = 'button';
  offer.id = 'signup-offer';
  offer.addEventListener('click', () => {
    setAuthMode('signup');
    $('auth-form').requestSubmit($('signup-btn'));
  });
  node.append(el('span', '', ' New here? '), offer, el('span', '', ' with this password.'));
}

function authError(text, kind = 'error') {
  const node = $('auth-error');
  node.dataset.kind = kind;
  show(node, text);
}

function rateLimited(seconds) {
  clearInterval(authCountdown);
  const buttons = [$('login-btn'), $('signup-btn')];
  if (seconds === null || seconds === undefined) {
    authError('Too many attempts. Please wait a while and try again.');
    return;
  }
  let left = seconds;
  const tick = () => {
    if (left <= 0) {
      clearInterval(authCountdown);
      buttons.forEach((b) => (b.disabled = false));
      authError('You can try again now.', 'info');
      return;
    }
    authError(`Too many attempts. Try again in ${plural(left, 'second')} (Retry-After: ${seconds}).`);
    left -= 1;
  };
  buttons.forEach((b) => (b.disabled = true));
  tick();
  authCountdown = setInterval(tick, 1000);
}

async function doLogin(username, password) {
  if (!username || !password) return authError('Enter a username and a password.');
  const res = await api('POST', '/token', { form: { username, password }, auth: false, cookie: true });
  if (res.ok && res.data && typeof res.data.access_token === 'string') {
    setSession(res.data.access_token, username);
    $('auth-password').value = '';
    authError('');
    rememberAccount(state.username);
    wantComposerFocus();
    enterChat();
    return;
  }
  if (res.status === 401) return wrongPassword(username);
  if (res.status === 429) return rateLimited(res.retryAfter);
  authError(res.status === 0 ? res.detail : `Could not log in: ${res.detail}`);
}

function signupProblem(username, password) {
  if (!USERNAME_RE.test(username)) {
    return 'Username must be 3–32 characters of letters, digits, "_", "." or "-".';
  }
  const chars = [...password].length;
  if (chars < 8) return 'Password is too weak: use at least 8 characters.';
  if (chars > 128) return 'Password is too long: use at most 128 characters.';
  if (password.toLowerCase() === username.toLowerCase()) return 'Password is too weak: it must not be your username.';
  return null;
}

async function doSignup(username, password) {
  const problem = signupProblem(username, password);
  if (problem) return authError(problem);
  const res = await api('POST', '/users/', { json: { username, password }, auth: false });
  if (res.ok) return doLogin(username, password);
  if (res.status === 409) return authError(`The username "${username}" is already taken.`);
  if (res.status === 422) return authError(`Cannot sign up: ${res.detail}`);
  if (res.status === 429) return rateLimited(res.retryAfter);
  authError(res.status === 0 ? res.detail : `Could not sign up: ${res.detail}`);
}

let authBusy = false;

async function onAuthSubmit(event) {
  event.preventDefault();
  if (authBusy) return;
  const action = authMode;
  const username = $('auth-username').value.trim();
  const password = $('auth-password').value;
  authBusy = true;
  authError('');
  try {
    if (action === 'signup') await doSignup(username, password);
    else await doLogin(username, password);
  } finally {
    authBusy = false;
  }
}

// ------------------------------------------------------------------------------------------
// Settings: change the password, delete the account
// ------------------------------------------------------------------------------------------

function settingsMessage(id, text, kind = 'error') {
  const node = $(id);
  node.dataset.kind = kind;
  show(node, text);
}

function openSettings() {
  $('chat-view').hidden = true;
  $('settings-view').hidden = false;
  settingsMessage('password-result', '');
  settingsMessage('delete-result', '');
  $('delete-confirm').hidden = true;
  $('current-password').focus();
}

function closeSettings() {
  $('settings-view').hidden = true;
  for (const id of ['current-password', 'new-password', 'delete-password']) $(id).value = '';
  if (state.token) $('chat-view').hidden = false;
}

async function changePassword(event) {
  event.preventDefault();
  const current = $('current-password').value;
  const next = $('new-password').value;
  const problem = signupProblem(state.username, next);
  if (!current) return settingsMessage('password-result', 'Enter your current password.');
  if (problem) return settingsMessage('password-result', problem.replace('Password', 'New password'));
  const res = await api('POST', '/users/me/password', { json: { current_password: current, new_password: next } });
  if (!state.token) return; // the session ended meanwhile
  if (res.ok) {
    $('current-password').value = '';
    $('new-password').value = '';
    return settingsMessage('password-result', 'Password changed. Your other sessions were logged out.', 'info');
  }
  if (res.status === 403) return settingsMessage('password-result', 'Your current password is not right.');
  if (res.status === 429) return settingsMessage('password-result', 'Too many wrong passwords. Please wait and try again.');
  settingsMessage('password-result', `Could not change the password: ${res.detail}`);
}

async function deleteAccount(event) {
  event.preventDefault();
  const password = $('delete-password').value;
  if (!password) return settingsMessage('delete-result', 'Enter your password to confirm.');
  // On success the server closes our sockets before it answers: that close is ours, not news.
  state.closingExpected = true;
  const res = await api('DELETE', '/users/me', { json: { password }, cookie: true }).finally(() => {
    state.closingExpected = false;
  });
  if (!state.token) return;
  if (res.ok) {
    $('delete-password').value = '';
    forgetAccount(state.username);
    closeSettings();
    leaveRoom();
    clearSession();
    showAuth('Your account was deleted.', 'info');
    return;
  }
  if (res.status === 403) return settingsMessage('delete-result', 'That password is not right.');
  if (res.status === 429) return settingsMessage('delete-result', 'Too many wrong passwords. Please wait and try again.');
  settingsMessage('delete-result', `Could not delete the account: ${res.detail}`);
}

// ------------------------------------------------------------------------------------------
// Views
// ------------------------------------------------------------------------------------------

function showAuth(message, kind = 'error') {
  stopMyRoomsRefresh();
  $('chat-view').hidden = true;
  $('settings-view').hidden = true;
  $('session').hidden = true;
  $('auth-view').hidden = false;
  setAuthMode(knownAccounts().length > 0 ? 'login' : 'signup');
  authError(message || '', kind);
  document.title = 'Clubhouse';
  $('auth-username').focus();
}

function enterChat() {
  $('auth-view').hidden = true;
  $('chat-view').hidden = false;
  $('session').hidden = false;
  $('whoami').textContent = state.username;
  renderRoomList();
  startMyRoomsRefresh(); // entering the room below loads the list the first time
  const fromHash = roomFromHash();
  const target = fromHash || recentRooms()[0] || 'lobby';
  if (fromHash === target) enterRoom(target);
  else location.hash = `#room=${target}`; // hashchange enters the room
}

// ------------------------------------------------------------------------------------------
// Rooms
// ------------------------------------------------------------------------------------------

function roomsKey() {
  return `clubhouse.rooms.${state.username}`;
}

function recentRooms() {
  try {
    const list = JSON.parse(localStorage.getItem(roomsKey()) || '[]');
    return Array.isArray(list) ? list.filter((r) => typeof r === 'string' && isRoomId(r)) : [];
  } catch {
    return [];
  }
}

function rememberRoom(room) {
  const list = [room, ...recentRooms().filter((r) => r !== room)].slice(0, 20);
  try {
    localStorage.setItem(roomsKey(), JSON.stringify(list));
  } catch {
    /* not persisted */
  }
  renderRoomList();
}

function forgetRoom(room) {
  try {
    localStorage.setItem(roomsKey(), JSON.stringify(recentRooms().filter((r) => r !== room)));
  } catch {
    /* not persisted */
  }
  renderRoomList();
}

/** How a room is named in the sidebar and title: `@ bob` for a DM, `# lobby` otherwise. */
function roomLabel(room) {
  if (DM_RE.test(room)) return `@ ${state.dmWith.get(room) || 'direct message'}`;
  return `# ${room}`;
}

/** The sidebar: my rooms from the server (newest activity first, with unread counts and the
 *  last message), then rooms visited here that the server does not list (public rooms joined
 *  before, the lobby, private rooms that refused us); rooms and direct messages apart. */
function renderRoomList() {
  const list = $('room-list');
  clearChildren(list);
  const listed = state.myRoomsLoaded ? state.myRooms : [];
  const seen = new Set(listed.map((r) => r.room_id));
  const rooms = [...listed];
  for (const room of [...recentRooms(), 'lobby']) {
    if (!seen.has(room)) {
      seen.add(room);
      rooms.push({ room_id: room, kind: DM_RE.test(room) ? 'dm' : 'public', last_message: null, unread: 0 });
    }
  }
  const groups = [
    ['rooms', 'Rooms', rooms.filter((r) => r.kind !== 'dm')],
    ['dms', 'Direct messages', rooms.filter((r) => r.kind === 'dm')],
  ];
  for (const [key, title, members] of groups) {
    if (members.length === 0) continue;
    const group = el('li', 'room-group');
    group.dataset.group = key;
    const label = el('span', 'group-label', title);
    label.id = `room-group-${key}`;
    const ul = el('ul', 'room-list');
    ul.setAttribute('aria-labelledby', label.id);
    for (const r of members) ul.append(roomEntry(r));
    group.append(label, ul);
    list.append(group);
  }
  updateTitle();
}

/** One room of the sidebar: its name, unread badge, last message, and whether it refused us or
 *  we were added since. */
function roomEntry(r) {
  const li = el('li');
  li.dataset.room = r.room_id;
  li.dataset.kind = r.kind;
  const a = el('a');
  a.href = `#room=${r.room_id}`;
  a.append(el('span', 'room-name', roomLabel(r.room_id)));
  const unread = r.room_id === state.room ? 0 : r.unread;
  if (unread > 0) {
    const count = el('span', 'unread', unread >= 999 ? '999+' : String(unread));
    count.setAttribute('aria-label', `${unread} unread`);
    a.append(count);
    a.dataset.unread = String(unread);
  }
  const mark = state.added.has(r.room_id) ? ['added', 'you were added'] : state.refused.has(r.room_id) ? ['refused', 'private: not a member'] : null;
  if (mark) {
    li.dataset.access = mark[0];
    a.append(el('span', `access ${mark[0]}`, mark[1]));
  }
  const last = r.last_message;
  if (last) {
    const text = last.deleted ? 'message deleted' : last.content;
    a.append(el('span', 'last', `${last.username}: ${text}`));
  }
  if (r.room_id === state.room) a.setAttribute('aria-current', 'true');
  li.append(a);
  return li;
}

/** The tab's title: the room in view, after the count of unread messages elsewhere (and here,
 *  while the tab is hidden), e.g. "(3) # lobby · Clubhouse". */
function updateTitle() {
  if (!state.token || !state.room) return;
  let unread = state.unseenHere;
  for (const r of state.myRoomsLoaded ? state.myRooms : []) {
    if (r.room_id !== state.room) unread += r.unread;
  }
  const name = `${roomLabel(state.room)} · Clubhouse`;
  document.title = unread > 0 ? `(${unread > 999 ? '999+' : unread}) ${name}` : name;
}

/** A room of GET /me/rooms as the sidebar keeps it, or null if malformed. */
function listedRoom(r) {
  if (!r || typeof r.room_id !== 'string' || !isRoomId(r.room_id)) return null;
  const last = r.last_message && Number.isSafeInteger(r.last_message.id) ? r.last_message : null;
  return {
    room_id: r.room_id,
    kind: ['public', 'private', 'dm'].includes(r.kind) ? r.kind : 'public',
    last_message: last && {
      id: last.id,
      username: String(last.username),
      content: typeof last.content === 'string' ? last.content : '',
      deleted: last.deleted === true,
      ts: last.ts,
    },
    unread: Number.isSafeInteger(r.unread) ? r.unread : 0,
    last_read_id: Number.isSafeInteger(r.last_read_id) ? r.last_read_id : 0,
  };
}

/** Reloads the sidebar from GET /me/rooms (its first page: the 50 rooms with the newest activity). */
async function refreshMyRooms() {
  if (!state.token) return;
  const gen = ++state.myRoomsGen;
  state.myRoomsAt = Date.now();
  const res = await api('GET', '/me/rooms');
  if (gen !== state.myRoomsGen || !state.token) return;
  if (!res.ok || !res.data || !Array.isArray(res.data.rooms)) return;
  for (const r of res.data.rooms) {
    if (r && r.kind === 'dm' && typeof r.with === 'string' && DM_RE.test(r.room_id)) state.dmWith.set(r.room_id, r.with);
  }
  state.myRooms = res.data.rooms.map(listedRoom).filter(Boolean);
  state.myRoomsLoaded = true;
  // A room that refused us and is now on our list: the owner added us.
  for (const r of state.myRooms) {
    if (state.refused.delete(r.room_id)) {
      state.added.add(r.room_id);
      if (r.room_id === state.room && state.stopped) youWereAdded();
    }
  }
  renderRoomList();
  if (state.room && DM_RE.test(state.room)) {
    showRoomTitle();
    renderReceipt();
  }
}

/** The room in view refused us, and the list now has it: say so, with a button to join. */
function youWereAdded() {
  banner(`You were added to #${state.room}.`, 'info', true);
  $('retry-now').textContent = 'Join';
  notice(`You were added to #${state.room}. Press Join to enter.`);
}

/** The list is polled (one D1 query, docs/architecture.md "The page's sidebar"), less often
 *  while the tab is hidden; a tab coming back asks at once (wire). */
function startMyRoomsRefresh() {
  clearInterval(state.myRoomsTimer);
  state.myRoomsTimer = setInterval(() => {
    const hidden = document.visibilityState !== 'visible';
    if (hidden && Date.now() - state.myRoomsAt < MY_ROOMS_HIDDEN_REFRESH_MS - 1000) return;
    refreshMyRooms();
  }, MY_ROOMS_REFRESH_MS);
}

function stopMyRoomsRefresh() {
  clearInterval(state.myRoomsTimer);
  state.myRoomsGen += 1;
  state.myRooms = [];
  state.myRoomsLoaded = false;
}

/** A message arrived in the room in view: its sidebar entry shows it, moves to the top, and has
 *  nothing unread (we are reading it). */
function bumpRoom(frame) {
  const room = state.room;
  if (!room || !Number.isSafeInteger(frame.id) || typeof frame.content !== 'string') return;
  let entry = state.myRooms.find((r) => r.room_id === room);
  if (entry && entry.last_message && entry.last_message.id >= frame.id) return;
  if (!entry) {
    const kind = DM_RE.test(room) ? 'dm' : state.roomInfo && state.roomInfo.private ? 'private' : 'public';
    entry = { room_id: room, kind, last_message: null, unread: 0, last_read_id: 0 };
  }
  entry.last_message = {
    id: frame.id,
    username: String(frame.username),
    content: [...frame.content].slice(0, SNIPPET_CHARS).join(''),
    deleted: false,
    ts: frame.ts,
  };
  entry.unread = 0;
  state.myRooms = [entry, ...state.myRooms.filter((r) => r.room_id !== room)];
  renderRoomList();
}

function showRoomTitle() {
  $('room-title').textContent = roomLabel(state.room);
  updateTitle();
}

function roomFromHash() {
  const m = /^#room=([A-Za-z0-9_.-]{1,64})$/.exec(location.hash);
  return m && isRoomId(m[1]) ? m[1] : null;
}

// ------------------------------------------------------------------------------------------
// Direct messages, read markers and receipts
// ------------------------------------------------------------------------------------------

function dmError(text) {
  show($('dm-error'), text);
}

async function onDmSubmit(event) {
  event.preventDefault();
  const name = $('dm-input').value.trim();
  if (!USERNAME_RE.test(name)) return dmError('Usernames are 3–32 letters, digits, "_", "." or "-".');
  if (name.toLowerCase() === String(state.username).toLowerCase()) return dmError('That is you: pick someone else.');
  dmError('');
  const res = await api('POST', `/dm/${encodeURIComponent(name)}`);
  if (res.ok && res.data && typeof res.data.room_id === 'string' && DM_RE.test(res.data.room_id)) {
    const room = res.data.room_id;
    state.dmWith.set(room, typeof res.data.with === 'string' ? res.data.with : name);
    $('dm-input').value = '';
    refreshMyRooms();
    if (state.room === room) return;
    location.hash = `#room=${room}`;
    return;
  }
  if (res.status === 404) return dmError(`Nobody is called "${name}".`);
  if (res.status === 403) return dmError(`${name} does not accept your messages.`);
  if (res.status !== 401) dmError(`Could not start the conversation: ${res.detail}`);
}

/** Sends our read marker for the room in view, a moment after the newest message shown, while
 *  the page is visible. The server keeps only forward moves; our own messages are read already. */
function scheduleRead(delay = READ_SEND_EVERY_MS) {
  if (document.visibilityState !== 'visible' || state.lastId <= state.readSent || state.readTimer) return;
  // Not pushed back by each new message: in a busy room the marker still moves once a second.
  state.readTimer = setTimeout(sendRead, delay);
}

function sendRead() {
  state.readTimer = 0;
  const conn = state.conn;
  const id = state.lastId;
  if (!conn || conn.state !== 'open' || id <= state.readSent) return;
  state.readSent = id;
  const newest = state.msgs.get(id);
  if (newest && sameUser(newest.username, state.username)) return; // marked read when we sent it
  conn.read(id);
}

/** Someone's read marker moved: in a DM, the other person's shows as "Seen" under our last
 *  message once it reaches it. */
function onRead(frame) {
  if (!Number.isSafeInteger(frame.id) || typeof frame.username !== 'string') return;
  if (!DM_RE.test(state.room || '') || sameUser(frame.username, state.username)) return;
  state.peerRead = Math.max(state.peerRead, frame.id);
  renderReceipt();
}

function renderReceipt() {
  const receipt = $('receipt');
  let ownLast = 0;
  for (let i = state.ids.length - 1; i >= 0; i -= 1) {
    const m = state.msgs.get(state.ids[i]);
    if (m && sameUser(m.username, state.username)) {
      ownLast = m.id;
      break;
    }
  }
  const seen = DM_RE.test(state.room || '') && ownLast > 0 && state.peerRead >= ownLast;
  receipt.hidden = !seen;
  receipt.textContent = seen ? `Seen by ${state.dmWith.get(state.room) || 'them'}` : '';
}

function roomError(text) {
  show($('room-error'), text);
}

async function onRoomSubmit(event) {
  event.preventDefault();
  const room = $('room-input').value.trim();
  if (!ROOM_RE.test(room)) return roomError('Room names are 1–64 letters, digits, "_" or "-".');
  roomError('');
  const action = event.submitter && event.submitter.dataset.action;
  if (action === 'private') {
    const res = await api('POST', '/rooms', { json: { room_id: room, private: true } });
    if (res.ok) {
      $('room-input').value = '';
      location.hash = `#room=${room}`;
      if (state.room === room) enterRoom(room);
      return;
    }
    if (res.status === 409) return roomError(`A room named "${room}" already exists. Join it, or pick another name.`);
    if (res.status === 404 || res.status === 405) return roomError('This server does not support private rooms yet.');
    if (res.status !== 401) roomError(`Could not create the room: ${res.detail}`);
    return;
  }
  $('room-input').value = '';
  if (state.room === room) {
    // Join on the room in view tries again for real when it is not connected (refused before,
    // removed, kicked): the owner may have added us since.
    if (state.stopped) enterRoom(room);
    return;
  }
  location.hash = `#room=${room}`;
}

function onHashChange() {
  if (!state.token) return;
  const room = roomFromHash();
  if (room && room !== state.room) enterRoom(room);
}

/** Closes the current socket for good (room switch, logout): its late events are ignored. */
function leaveRoom() {
  // A read marker still waiting goes now: a room glanced at for less than a second is read too.
  if (state.readTimer) {
    clearTimeout(state.readTimer);
    sendRead();
  }
  const conn = state.conn;
  state.conn = null; // first: the close event below is not news
  clearInterval(state.countdownTimer);
  if (conn) conn.close();
  state.room = null;
  setStatus('idle');
}

function resetView() {
  clearChildren($('messages'));
  state.els = new Map();
  state.msgs = new Map();
  state.ids = [];
  state.lastId = 0;
  state.rev = 0;
  for (const timer of state.typing.values()) clearTimeout(timer);
  state.typing = new Map();
  state.lastTypingSent = 0;
  state.editing = null;
  state.popup = null;
  state.view = {};
  state.fetches = 0;
  state.changeLog = [];
  renderTyping();
  state.online = new Set();
  state.olderSupported = true;
  state.noOlder = false;
  state.lastSent = null;
  clearTimeout(state.readTimer);
  state.readTimer = 0;
  state.readSent = 0;
  state.peerRead = 0;
  renderReceipt();
  renderOnline();
  updateOlder();
  resetReading();
  show($('send-error'), '');
  banner('');
  $('retry-now').textContent = 'Retry now';
}

async function enterRoom(room) {
  leaveRoom();
  state.room = room;
  state.stopped = false;
  state.roomInfo = null;
  state.unseenHere = 0;
  const entered = {};
  state.entered = entered;
  resetView();
  showRoomTitle();
  $('room-badge').hidden = true;
  $('members-panel').hidden = true;
  setComposerEnabled(false);
  setStatus('connecting');
  rememberRoom(room);
  refreshMyRooms();
  const info = await loadRoomInfo();
  if (state.entered !== entered || state.room !== room) return; // switched again meanwhile
  if (info === 'forbidden') return;
  if (state.refused.delete(room) || state.added.delete(room)) renderRoomList();
  connect();
}

/** Room metadata; 'forbidden' for a private room we are not in. Absent on older servers. */
async function loadRoomInfo() {
  const room = state.room;
  const res = await api('GET', `/rooms/${room}`);
  if (room !== state.room) return null;
  if (res.status === 403) {
    roomForbidden(res.detail);
    return 'forbidden';
  }
  if (!res.ok || !res.data) return null;
  const info = res.data;
  state.roomInfo = info;
  const badge = $('room-badge');
  if (info.dm === true) {
    badge.textContent = 'direct message';
  } else {
    const kind = info.private ? 'private' : 'public';
    const parts = [info.owner ? `${kind} · owner ${info.owner}` : kind];
    if (info.slow_mode_secs > 0) parts.push(`slow mode ${info.slow_mode_secs} s`);
    badge.textContent = parts.join(' · ');
  }
  badge.hidden = false;
  renderOnline();
  const isOwner = info.private && typeof info.owner === 'string' && info.owner.toLowerCase() === String(state.username).toLowerCase();
  $('members-panel').hidden = !isOwner;
  if (isOwner) renderMembers(Array.isArray(info.members) ? info.members : []);
  return info;
}

/** A private room we are not in: said here, and kept in the list marked as refused, so that the
 *  list can tell when the owner adds us (refreshMyRooms). A DM whose other member blocked us says
 *  that instead (the server's `detail`). */
function roomForbidden(detail) {
  state.stopped = true;
  setStatus('closed');
  setComposerEnabled(false);
  if (DM_RE.test(state.room || '') && detail === BLOCKED_DETAIL) {
    // Still on our list (we remain a member), so not tracked as refused: that would read as added.
    banner(`${state.dmWith.get(state.room) || 'This person'} does not accept your messages.`, 'error');
    return;
  }
  banner(`#${state.room} is a private room and you are not a member.`, 'error');
  notice('This room is private. Ask its owner to add you.', 'error');
  state.added.delete(state.room);
  state.refused.add(state.room);
  renderRoomList();
}

/** Banned from the room in view: stop, say so (and until when), forget it from the list. */
function roomBanned(banned = true) {
  state.stopped = true;
  setStatus('closed');
  setComposerEnabled(false);
  const until = banned && typeof banned.until === 'number' ? ` until ${new Date(banned.until).toLocaleString()}` : '';
  banner(`You are banned from #${state.room}${until}.`, 'error');
  forgetRoom(state.room);
}

/** After a kick: one button to come back. */
function showRejoin() {
  const retry = $('retry-now');
  retry.textContent = 'Rejoin';
  retry.hidden = false;
}

function renderMembers(members) {
  const list = $('member-list');
  clearChildren(list);
  for (const name of members) {
    const li = el('li');
    li.append(el('span', '', name));
    if (String(name).toLowerCase() !== String(state.username).toLowerCase()) {
      const remove = el('button', 'secondary small', 'Remove');
      remove.type = 'button';
      remove.dataset.member = name;
      remove.setAttribute('aria-label', `Remove ${name}`);
      li.append(remove);
    } else {
      li.append(el('span', 'hint', 'owner'));
    }
    list.append(li);
  }
}

async function changeMember(method, name) {
  const room = state.room;
  if (!USERNAME_RE.test(name)) return show($('member-error'), 'Not a valid username.');
  const res = await api(method, `/rooms/${room}/members/${encodeURIComponent(name)}`);
  if (room !== state.room) return;
  if (res.ok) {
    show($('member-error'), '');
    if (method === 'PUT') $('member-input').value = '';
    await loadRoomInfo();
    return;
  }
  if (res.status !== 401) {
    const what = res.status === 404 ? (method === 'PUT' ? 'No such user.' : res.detail) : res.detail;
    show($('member-error'), what);
  }
}

// ------------------------------------------------------------------------------------------
// Connection status and banner
// ------------------------------------------------------------------------------------------

const STATUS_TEXT = {
  idle: 'Not connected',
  connecting: 'Connecting…',
  open: 'Connected',
  reconnecting: 'Reconnecting…',
  closed: 'Disconnected',
};

function setStatus(status) {
  state.status = status;
  const node = $('conn-status');
  node.dataset.state = status;
  node.textContent = STATUS_TEXT[status] || status;
  document.body.dataset.connection = status;
}

function banner(text, kind = 'warn', retry = false) {
  const node = $('banner');
  node.dataset.kind = kind;
  $('banner-text').textContent = text || '';
  node.hidden = !text;
  $('retry-now').hidden = !retry;
}

function setComposerEnabled(on) {
  $('message-input').disabled = !on;
  $('send-btn').disabled = !on;
  if (on) focusComposerIfWanted();
}

// ------------------------------------------------------------------------------------------
// WebSocket: connect, catch up, reconnect
// ------------------------------------------------------------------------------------------

/**
 * Opens the room in view through the library (clubhouse.js Room), which reconnects, catches up and
 * refreshes the badge by itself; this wires its events to the view. `resume`: the view is kept
 * (Rejoin after a kick), so the socket catches up from what is shown instead of starting over.
 */
function connect(resume = false) {
  clearInterval(state.countdownTimer);
  if (!state.room || !state.token || state.stopped) return;
  const old = state.conn;
  state.conn = null;
  if (old) old.close();
  const options = { ...CONNECT_OPTIONS };
  if (resume && state.lastId > 0) options.since = state.lastId;
  if (resume && state.rev > 0) options.rev = state.rev;
  const conn = club.connect(state.room, options);
  state.conn = conn;
  if (state.ids.length) conn.keepFrom(state.ids[0]);
  setStatus('connecting');
  // Events of a Room that is no longer the one in view are not news.
  const on = (type, handler) => conn.on(type, (event) => {
    if (state.conn === conn) handler(event);
  });
  on('history', onHistory);
  on('open', onOpen);
  for (const type of ['message', 'edited', 'deleted', 'reactions']) on(type, onLiveChange);
  on('reload', onReload);
  on('typing', onTyping);
  on('read', onRead);
  on('presence', onPresence);
  on('join', onJoin);
  on('leave', onLeave);
  on('presence_changes', onPresenceChanges);
  on('error', onErrorFrame);
  on('reconnecting', onReconnecting);
  on('close', onClosed);
}

/** The room has the socket, caught up. */
function onOpen() {
  clearInterval(state.countdownTimer);
  setStatus('open');
  banner('');
  setComposerEnabled(true);
}

/** The socket dropped: say so, and count down to the library's next try (none while paused). */
function onReconnecting({ attempt, delayMs, code, reason }) {
  clearInterval(state.countdownTimer);
  setComposerEnabled(false);
  setStatus('reconnecting');
  if (code === 1008 && reason) notice(`Disconnected by the server: ${reason}`, 'warn');
  if (delayMs === null) {
    banner('Connection lost. Reconnecting…');
    return;
  }
  state.nextAttemptAt = Date.now() + delayMs;
  const tick = () => {
    const secs = Math.max(0, Math.ceil((state.nextAttemptAt - Date.now()) / 1000));
    banner(`Connection lost. Reconnecting… ${secs > 0 ? `next try in ${plural(secs, 'second')}` : 'now'} (attempt ${attempt})`, 'warn', true);
  };
  tick();
  state.countdownTimer = setInterval(tick, 1000);
}

/** The library gave up on the room for good: a kick, a refusal (401, 403, 422), or our own close. */
function onClosed({ code, reason, error }) {
  state.conn = null;
  clearInterval(state.countdownTimer);
  setComposerEnabled(false);
  // Deleting the account closes our sockets before the request answers: that close is ours.
  if (state.closingExpected) return;
  const why = `${reason || ''} ${error ? error.detail : ''}`.toLowerCase();
  if (code === 4001) {
    // Kicked: may come back, but not by itself (that would undo the kick).
    state.stopped = true;
    setStatus('closed');
    banner(`A moderator removed you from #${state.room}. You may rejoin.`, 'error');
    showRejoin();
    return;
  }
  if (error && error.status === 401) {
    sessionEnded(tokenExpired()
      ? 'Your session expired. Please log in again.'
      : 'You were logged out (your session was revoked). Please log in again.');
    return;
  }
  if (error && error.status === 403) {
    if (error.detail === BLOCKED_DETAIL) roomForbidden(error.detail);
    else if (error.body && error.body.banned) roomBanned(error.body.banned);
    else if (/banned/.test(why)) roomBanned();
    else if (/removed|member|kick/.test(reason || '')) {
      state.stopped = true;
      setStatus('closed');
      banner(`You were removed from #${state.room}.`, 'error');
      notice(`You were removed from #${state.room} by its owner.`, 'error');
      forgetRoom(state.room);
    } else roomForbidden(error.detail);
    return;
  }
  state.stopped = true;
  setStatus('closed');
  banner(error ? `Cannot connect to #${state.room}: ${error.detail}` : `Disconnected from #${state.room}.`, 'error');
}

function reconnectNow() {
  const retry = $('retry-now');
  if (retry.textContent === 'Rejoin') {
    retry.textContent = 'Retry now';
    state.stopped = false;
    banner('');
    connect(true);
    return;
  }
  if (retry.textContent === 'Join') {
    retry.textContent = 'Retry now';
    if (state.room) enterRoom(state.room);
    return;
  }
  if (state.conn) state.conn.reconnectNow();
}

// ------------------------------------------------------------------------------------------
// Frames
// ------------------------------------------------------------------------------------------

function onPresence(frame) {
  state.online = new Set((Array.isArray(frame.users) ? frame.users : []).map(String));
  renderOnline();
}

function onJoin(frame) {
  if (typeof frame.username !== 'string') return;
  state.online.add(frame.username);
  renderOnline();
  notice(`${frame.username} joined`);
}

function onLeave(frame) {
  if (typeof frame.username !== 'string') return;
  state.online.delete(frame.username);
  stopTyping(frame.username);
  renderOnline();
  notice(`${frame.username} left`);
}

/** A message (live, or caught up after a drop in its current state) or a change. The library
 *  delivers each message once and skips changes already reflected (by their `rev`). */
function onLiveChange(frame) {
  if (frame.room_id !== undefined && frame.room_id !== state.room) return;
  applyItems([frame]);
  if (state.conn) state.rev = state.conn.lastRev;
  // Whoever just posted has stopped typing.
  if (frame.type === 'message' && typeof frame.username === 'string') stopTyping(frame.username);
  if (frame.type === 'message') {
    bumpRoom(frame);
    renderReceipt();
    if (document.visibilityState !== 'visible' && !sameUser(frame.username, state.username)) {
      state.unseenHere += 1;
      updateTitle();
    }
  }
  scheduleRead();
}

/** Joins and leaves the server batched during a burst: changes since its previous announcement,
 *  applied as set operations on top of what we know (a name we already have, say our own or one
 *  from the `presence` frame on connect, changes nothing), with one notice per kind for the
 *  names that really changed here. */
function onPresenceChanges(frame) {
  const names = (list) => (Array.isArray(list) ? list.filter((u) => typeof u === 'string') : []);
  const came = names(frame.joined).filter((u) => !state.online.has(u));
  const went = names(frame.left).filter((u) => state.online.has(u));
  for (const u of came) state.online.add(u);
  for (const u of went) {
    state.online.delete(u);
    stopTyping(u);
  }
  if (came.length === 0 && went.length === 0) return;
  renderOnline();
  if (came.length > 0) notice(`${nameList(came)} joined`);
  if (went.length > 0) notice(`${nameList(went)} left`);
}

/** "alice", "alice, bob", or "alice, bob, carol, dave, erin and 7 others" for long bursts. */
function nameList(names, shown = 5) {
  if (names.length <= shown + 1) return names.join(', ');
  return `${names.slice(0, shown).join(', ')} and ${names.length - shown} others`;
}

/** The history on connect: the latest messages in their current state (a first connect), or,
 *  after a reconnect, the end of a catch-up whose items came as events before it. Either way the
 *  live frames take over from here. */
function onHistory(frame) {
  state.historyEpoch += 1;
  if (!frame.resumed) applyItems(Array.isArray(frame.messages) ? frame.messages : []);
  if (state.conn) state.rev = state.conn.lastRev;
  updateOlder();
  renderReceipt();
  scheduleRead();
  if (!frame.complete) notice('Some messages from while you were away may be missing or out of date. Reload the page to see them.', 'warn');
}

/** A catch-up the server cut short, completed by the library over HTTP: the room's messages in
 *  their current state, back to the oldest one shown. */
function onReload({ messages }) {
  applyItems(messages);
  renderReceipt();
}

/** GETs a page of the room's messages and hands its messages to `apply(list, page)` while the
 *  changes that arrived meanwhile are still kept (see applyItems). Answers the response, or null
 *  when the view was reset meanwhile (another room). */
async function fetchMessages(query, apply) {
  const view = state.view;
  const page = { rev: state.rev, epoch: state.historyEpoch };
  state.fetches += 1;
  try {
    const res = await api('GET', `/rooms/${state.room}/messages?${query}`);
    if (view !== state.view) return null;
    if (res.ok && res.data && Array.isArray(res.data.messages)) apply(res.data.messages, page);
    return res;
  } finally {
    if (view === state.view) {
      state.fetches -= 1;
      if (state.fetches === 0) state.changeLog = [];
    }
  }
}

const okPage = (res) => Boolean(res && res.ok && res.data && Array.isArray(res.data.messages));

const ACTION_WORDS = {
  message: 'Message not sent',
  edit: 'Could not edit the message',
  delete: 'Could not delete the message',
  react: 'Could not change the reaction',
};

/** An edit or a reaction refused says which message it was about, by these words and its start. */
const QUOTED_ACTION_WORDS = {
  edit: 'Could not edit',
  react: 'Could not change the reaction on',
};
const QUOTE_CHARS = 40;

/** A message's first characters, quoted ('' when it is not shown or has no text). */
function quoteOf(id) {
  const m = state.msgs.get(id);
  if (!m || m.deleted || typeof m.content !== 'string') return '';
  const chars = [...m.content.replace(/\s+/g, ' ').trim()];
  return chars.length ? `“${chars.slice(0, QUOTE_CHARS).join('')}${chars.length > QUOTE_CHARS ? '…' : ''}”` : '';
}

/** What an error frame answers: the change the library says it refused, else one of our messages
 *  when it names a client_id (the server serving this page names every frame the page sends),
 *  else nothing we can tell. */
function refusedAction(frame) {
  const change = frame.change;
  if (change && typeof change.type === 'string') return change.type === 'unreact' ? 'react' : change.type;
  return typeof frame.client_id === 'string' ? 'message' : null;
}

function onErrorFrame(frame) {
  const detail = typeof frame.detail === 'string' ? frame.detail : 'error';
  const action = refusedAction(frame);
  if (action === 'read') {
    // Our read marker was refused (most likely rate limited): nothing to show, send it again later.
    state.readSent = 0;
    scheduleRead(typeof frame.retry_after_ms === 'number' ? frame.retry_after_ms : READ_SEND_EVERY_MS);
    return;
  }
  // What was refused is not lost: an edit goes back in its editor, a message refused for now
  // (muted, slow mode, too fast) back in the message box.
  if (action === 'edit' && frame.change) reopenRefusedEdit(frame.change);
  if (action === 'message' && (frame.code === 'muted' || typeof frame.retry_after_ms === 'number')) giveBackDraft();
  if (frame.code === 'muted') {
    const until = typeof frame.until === 'number' ? ` until ${new Date(frame.until).toLocaleTimeString()}` : '';
    sendError(`A moderator muted you in this room${until}: you can read, not post.`);
    return;
  }
  if (frame.code === 'slow_mode' && typeof frame.retry_after_ms === 'number') {
    const secs = Math.max(1, Math.ceil(frame.retry_after_ms / 1000));
    sendError(`Slow mode is on: you can send again in ${plural(secs, 'second')}.`);
    return;
  }
  if (typeof frame.retry_after_ms === 'number') {
    const secs = Math.max(1, Math.ceil(frame.retry_after_ms / 1000));
    state.retryUntil = Date.now() + frame.retry_after_ms;
    sendError(`You are sending too fast. Wait ${plural(secs, 'second')} and try again.`);
    return;
  }
  const quote = frame.change && QUOTED_ACTION_WORDS[action] ? quoteOf(frame.change.id) : '';
  sendError(quote
    ? `${QUOTED_ACTION_WORDS[action]} ${quote}: ${detail}`
    : `${ACTION_WORDS[action] || ACTION_WORDS.message}: ${detail}`);
}

/** The last message we sent goes back in the message box, if that is empty. */
function giveBackDraft() {
  const input = $('message-input');
  if (state.lastSent && !input.value) {
    input.value = state.lastSent;
    autosize();
  }
}

/** A refused edit is not lost either: its message's editor opens again with the refused text,
 *  unless an editor is open (the reader has moved on) or the message can no longer be edited. */
function reopenRefusedEdit(change) {
  if (state.editing || typeof change.content !== 'string') return;
  const m = state.msgs.get(change.id);
  if (!m || !canEdit(m) || m.content === change.content) return;
  startEdit(m.id, null, change.content);
}

function sendError(text) {
  clearTimeout(state.retryTimer);
  show($('send-error'), text);
  if (text) state.retryTimer = setTimeout(() => show($('send-error'), ''), 8000);
}

// ------------------------------------------------------------------------------------------
// "alice is typing…"
// ------------------------------------------------------------------------------------------

function onTyping(frame) {
  const who = frame.username;
  if (typeof who !== 'string' || !who || sameUser(who, state.username)) return;
  if (frame.room_id !== undefined && frame.room_id !== state.room) return;
  clearTimeout(state.typing.get(who));
  state.typing.delete(who); // re-inserted last: names show in the order people started
  state.typing.set(who, setTimeout(() => stopTyping(who), TYPING_SHOW_MS));
  renderTyping();
}

function stopTyping(who) {
  if (!state.typing.has(who)) return;
  clearTimeout(state.typing.get(who));
  state.typing.delete(who);
  renderTyping();
}

function renderTyping() {
  const names = [...state.typing.keys()];
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length > 1 && names.length <= 3) text = `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]} are typing…`;
  else if (names.length > 3) text = 'Several people are typing…';
  const node = $('typing');
  if (node.textContent !== text) node.textContent = text;
}

/** Tells the room we are typing: at most once every few seconds, only with something in the box. */
function typed() {
  const conn = state.conn;
  if (!conn || conn.state !== 'open' || !$('message-input').value.trim()) return;
  const now = Date.now();
  if (now - state.lastTypingSent < TYPING_SEND_EVERY_MS) return;
  state.lastTypingSent = now;
  conn.typing();
}

// ------------------------------------------------------------------------------------------
// Messages: deduplicated by id, in id order, kept in their current state
// ------------------------------------------------------------------------------------------

function sameUser(a, b) {
  return typeof a === 'string' && typeof b === 'string' && a.toLowerCase() === b.toLowerCase();
}

function isRoomOwner() {
  const info = state.roomInfo;
  return Boolean(info && typeof info.owner === 'string' && sameUser(info.owner, state.username));
}

/** `owner`, `moderator` or `member` for `name` in the room in view; null in a room without an owner. */
function roleOf(name) {
  const info = state.roomInfo;
  if (!info || typeof info.owner !== 'string') return null;
  if (sameUser(info.owner, name)) return 'owner';
  const mods = Array.isArray(info.moderators) ? info.moderators : [];
  return mods.some((m) => sameUser(m, name)) ? 'moderator' : 'member';
}

/** Whether I may moderate `name` here: the owner anyone else, a moderator plain members. */
function mayModerate(name) {
  if (sameUser(name, state.username)) return false;
  const mine = roleOf(state.username);
  const theirs = roleOf(name);
  return mine === 'owner' || (mine === 'moderator' && theirs === 'member');
}

function validMessage(m) {
  return (
    m &&
    Number.isSafeInteger(m.id) &&
    m.id > 0 &&
    typeof m.username === 'string' &&
    (m.deleted === true || typeof m.content === 'string') &&
    (m.room_id === undefined || m.room_id === state.room)
  );
}

/** A reaction map from the server ({"👍": ["alice", …]}) as [[emoji, users]] in its order. */
function cleanReactions(value) {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return [];
  const out = [];
  for (const [emoji, users] of Object.entries(value)) {
    if (!emoji || !Array.isArray(users)) continue;
    const names = users.filter((u) => typeof u === 'string');
    if (names.length > 0) out.push([emoji, names]);
  }
  return out;
}

function toModel(m) {
  const deleted = m.deleted === true;
  return {
    id: m.id,
    username: m.username,
    ts: m.ts,
    rev: Number.isSafeInteger(m.rev) ? m.rev : 0,
    deleted,
    content: deleted ? '' : m.content,
    edited_ts: !deleted && m.edited_ts !== undefined && m.edited_ts !== null ? m.edited_ts : null,
    reactions: deleted ? [] : cleanReactions(m.reactions),
  };
}

/** A time in the reader's zone and locale: `short` the hour ("4:36 PM", no leading zero; the day is
 *  on the separator above), `full` the tooltip, `iso` for <time datetime>. */
function formatTime(ts) {
  const d = new Date(Number(ts));
  if (Number.isNaN(d.getTime())) return { short: '', full: '', iso: '' };
  return {
    short: d.toLocaleTimeString([], { hour: 'numeric', minute: '2-digit' }),
    full: d.toLocaleString([], { dateStyle: 'full', timeStyle: 'short' }),
    iso: d.toISOString(),
  };
}

/** The local calendar day of a timestamp, as a key that day separators compare. */
function dayKey(ts) {
  const d = new Date(Number(ts));
  return Number.isNaN(d.getTime()) ? '' : `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

/** "Today", "Yesterday", or "Monday, December 7" (with the year when it is not this one). */
function dayLabel(ts) {
  const d = new Date(Number(ts));
  if (Number.isNaN(d.getTime())) return '';
  const now = new Date();
  const yesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
  if (dayKey(d) === dayKey(now)) return 'Today';
  if (dayKey(d) === dayKey(yesterday)) return 'Yesterday';
  const options = { weekday: 'long', month: 'long', day: 'numeric' };
  if (d.getFullYear() !== now.getFullYear()) options.year = 'numeric';
  return d.toLocaleDateString([], options);
}

// Links in messages: only http(s) URLs become <a>, built node by node (the rest stays text).
const URL_RE = /\bhttps?:\/\/[^\s<>"]+/gi;
const URL_TRAILING = '.,;:!?\'"';

/** A URL as typed in prose, without the punctuation that ends its sentence or closes its bracket. */
function trimUrl(text) {
  let url = text;
  for (;;) {
    const last = url[url.length - 1];
    const opens = (ch) => url.split(ch).length - 1;
    if (URL_TRAILING.includes(last)) url = url.slice(0, -1);
    else if (last === ')' && opens('(') < opens(')')) url = url.slice(0, -1);
    else if (last === ']' && opens('[') < opens(']')) url = url.slice(0, -1);
    else return url;
  }
}

function safeHref(text) {
  try {
    const url = new URL(text);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

/** Fills `node` with `content`: text nodes, and an <a> (new tab, no opener, no referrer) per web link. */
function paintText(node, content) {
  clearChildren(node);
  let at = 0;
  for (const match of content.matchAll(URL_RE)) {
    const url = trimUrl(match[0]);
    const href = safeHref(url);
    if (!href) continue;
    if (match.index > at) node.append(document.createTextNode(content.slice(at, match.index)));
    const link = el('a', '', url);
    link.href = href;
    link.rel = 'noopener noreferrer';
    link.target = '_blank';
    node.append(link);
    at = match.index + url.length;
  }
  if (at < content.length) node.append(document.createTextNode(content.slice(at)));
}

function button(className, text, label) {
  const b = el('button', className, text);
  b.type = 'button';
  if (label) b.setAttribute('aria-label', label);
  return b;
}

/** The skeleton of a message; paintMessage() fills it in and keeps it current. */
function renderMessage(m) {
  const li = el('li', 'msg');
  li.dataset.id = String(m.id);
  const meta = el('div', 'meta');
  meta.append(el('span', 'who', m.username));
  const when = formatTime(m.ts);
  const time = el('time', '', when.short);
  if (when.iso) {
    time.dateTime = when.iso;
    time.title = when.full;
  }
  const edited = el('span', 'edited', 'edited');
  edited.hidden = true;
  meta.append(time, edited);
  const reactions = el('div', 'reactions');
  reactions.setAttribute('role', 'group');
  reactions.setAttribute('aria-label', 'Reactions');
  const actions = el('div', 'actions');
  const react = button('act react-btn', '☺+', 'Add a reaction');
  react.setAttribute('aria-haspopup', 'menu');
  react.setAttribute('aria-expanded', 'false');
  react.dataset.act = 'palette';
  const more = button('act more-btn', '⋯', 'Message actions');
  more.setAttribute('aria-haspopup', 'menu');
  more.setAttribute('aria-expanded', 'false');
  more.dataset.act = 'menu';
  actions.append(react, more);
  meta.append(actions); // on the name's line, at its end
  li.append(meta, el('div', 'text'), reactions); // .text: textContent, markup stays text
  paintMessage(li, m);
  return li;
}

function canEdit(m) {
  return !m.deleted && sameUser(m.username, state.username);
}

function canDelete(m) {
  return !m.deleted && (sameUser(m.username, state.username) || mayModerate(m.username));
}

/** Brings a message's element up to date with its model, keeping what can keep focus. */
function paintMessage(li, m) {
  li.classList.toggle('mine', sameUser(m.username, state.username));
  li.classList.toggle('deleted', m.deleted);
  const text = li.querySelector('.text');
  const shown = m.deleted ? 'message deleted' : m.content;
  if (text.textContent !== shown) paintText(text, shown);
  const edited = li.querySelector('.edited');
  edited.hidden = m.deleted || m.edited_ts === null;
  if (!edited.hidden) {
    const when = formatTime(m.edited_ts);
    edited.title = when.full ? `edited ${when.full}` : 'edited';
  }
  paintReactions(li.querySelector('.reactions'), m);
  const more = li.querySelector('.more-btn');
  more.hidden = !(canEdit(m) || canDelete(m));
  li.querySelector('.actions').hidden = m.deleted;
  if (m.deleted) {
    if (state.editing && state.editing.id === m.id) closeEditor(false);
    if (state.popup && li.contains(state.popup.node)) closePopup(false);
    const confirm = li.querySelector('.confirm');
    if (confirm) closeConfirm(li, false);
  }
}

/** One chip per emoji: "👍 2", pressed when one of them is ours; chips are updated in place. */
function paintReactions(box, m) {
  const existing = new Map([...box.querySelectorAll('.chip')].map((c) => [c.dataset.emoji, c]));
  const order = [];
  for (const [emoji, users] of m.reactions) {
    let chip = existing.get(emoji);
    existing.delete(emoji);
    if (!chip) {
      chip = button('chip');
      chip.dataset.emoji = emoji;
      chip.dataset.act = 'chip';
      chip.append(el('span', 'emoji', emoji), el('span', 'count'));
    }
    const mine = users.some((u) => sameUser(u, state.username));
    chip.querySelector('.count').textContent = String(users.length);
    chip.setAttribute('aria-pressed', String(mine));
    chip.setAttribute(
      'aria-label',
      `${emoji} ${users.length}: ${users.join(', ')}. ${mine ? 'Remove your reaction' : 'React with this too'}`,
    );
    chip.title = users.join(', ');
    order.push(chip);
  }
  for (const gone of existing.values()) gone.remove();
  order.forEach((chip, i) => {
    if (box.children[i] !== chip) box.insertBefore(chip, box.children[i] || null);
  });
  box.hidden = order.length === 0;
}

/** Index of the first id greater than `id` in the sorted list. */
function upperBound(ids, id) {
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ids[mid] <= id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Applies, in order, messages (new ones inserted in id order, known ones replaced by the state
 *  they carry) and change items (`edited`, `deleted`, `reactions`, which carry the whole state of
 *  what they change).
 *
 *  Messages from the history frame are the room's state at its rev, which every later live frame
 *  follows: they replace ours as they are. Messages from an HTTP page (`page`: the rev and the
 *  history epoch when it was asked for) were read at some unknown rev at or after `page.rev`, so
 *  the changes applied since are replayed on top of them; and a page asked for before the latest
 *  history frame only adds messages, as the history may be newer. */
function applyItems(list, page = null) {
  const log = $('log');
  const wasAtBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  const oldHeight = log.scrollHeight;
  const oldTop = log.scrollTop;
  let prepended = false;
  let appended = false;
  let unseen = 0; // others' messages added below while the reader is scrolled up
  let mineLive = false; // a message of mine just arrived live: the sender wants to see it
  if (!page) reading.heardFrom = state.view; // a history or live frame: the room's history is known
  const ul = $('messages');
  for (const item of list) {
    if (!item || typeof item !== 'object') continue;
    if (item.type === 'edited' || item.type === 'deleted' || item.type === 'reactions') {
      if (state.fetches > 0) state.changeLog.push(item);
      applyChange(item);
      continue;
    }
    if (item.type !== undefined && item.type !== 'message') continue;
    if (!validMessage(item)) continue;
    const model = toModel(item);
    const had = state.msgs.get(item.id);
    if (had) {
      if (page && page.epoch !== state.historyEpoch) continue;
      state.msgs.set(item.id, model);
      paintMessage(state.els.get(item.id), model);
      if (page) replayChanges(model.id, page.rev);
      continue;
    }
    const node = renderMessage(model);
    const at = upperBound(state.ids, model.id);
    if (at === state.ids.length) {
      ul.append(node); // newest: after any notices, in arrival order
      appended = true;
      if (sameUser(model.username, state.username)) mineLive = mineLive || (!page && list.length === 1);
      else if (!wasAtBottom) unseen += 1;
    } else {
      ul.insertBefore(node, state.els.get(state.ids[at]));
      if (at === 0) prepended = true;
    }
    state.ids.splice(at, 0, model.id);
    state.els.set(model.id, node);
    state.msgs.set(model.id, model);
    if (model.id > state.lastId) state.lastId = model.id;
    if (page) replayChanges(model.id, page.rev);
  }
  arrangeConversation();
  if (appended && (wasAtBottom || mineLive)) {
    log.scrollTop = log.scrollHeight;
  } else if (prepended && !appended) {
    log.scrollTop = oldTop + (log.scrollHeight - oldHeight); // keep what the reader was looking at
  }
  if (unseen > 0 && !mineLive) reading.unseen += unseen;
  paintReading();
  updateOlder();
}

// ------------------------------------------------------------------------------------------
// Reading the conversation: groups, day separators, the welcome, "new messages ↓", focus
// ------------------------------------------------------------------------------------------

const GROUP_GAP_MS = 5 * 60 * 1000; // a message this soon after the same person's previous one joins its group

const reading = {
  unseen: 0, // messages from others that arrived below the reader's scroll position
  heardFrom: null, // the view (state.view) whose history the room has sent: an empty room is then really empty
  focusComposer: false, // move focus to the message box once it is enabled (after login or a room switch)
  focusFrom: null, // what had the focus when that was asked: focus moved since is the reader's own choice
};

/** Consecutive messages of one person (no notice between, same day, minutes apart) form a group:
 *  name and time are shown on its first message only (and stay readable to screen readers). A
 *  separator heads each day. Existing separators are kept, so a steady view is not rewritten. */
function arrangeConversation() {
  const ul = $('messages');
  const keep = new Set();
  let prev = null;
  let lastDay = null;
  for (const node of [...ul.children]) {
    if (node.classList.contains('day')) continue;
    if (!node.classList.contains('msg')) {
      prev = null; // a notice ("bob joined") ends a group
      continue;
    }
    const m = state.msgs.get(Number(node.dataset.id));
    if (!m) continue;
    const day = dayKey(m.ts);
    if (day !== lastDay) {
      let sep = node.previousElementSibling;
      if (!sep || !sep.classList.contains('day') || sep.dataset.day !== day) {
        sep = el('li', 'day');
        sep.dataset.day = day;
        ul.insertBefore(sep, node);
      }
      const label = dayLabel(m.ts);
      if (sep.textContent !== label) sep.textContent = label;
      keep.add(sep);
      lastDay = day;
      prev = null;
    }
    const gap = Number(m.ts) - Number(prev ? prev.ts : NaN);
    node.classList.toggle('cont', Boolean(prev && sameUser(prev.username, m.username) && gap >= 0 && gap < GROUP_GAP_MS));
    prev = m;
  }
  for (const sep of ul.querySelectorAll(':scope > li.day')) if (!keep.has(sep)) sep.remove();
}

function atBottom() {
  const log = $('log');
  return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
}

/** The welcome of an empty room and the "new messages ↓" button, from the state of the view. */
function paintReading() {
  const empty = Boolean(state.room) && reading.heardFrom === state.view && state.ids.length === 0;
  const welcome = $('welcome');
  if (empty) {
    const dm = DM_RE.test(state.room);
    const peer = state.dmWith.get(state.room);
    $('welcome-title').textContent = dm
      ? `This is the start of your conversation${peer ? ` with ${peer}` : ''}`
      : `Welcome to #${state.room}, ${state.username}!`;
    $('welcome-text').textContent = dm
      ? 'Only the two of you can read it. Say hello below.'
      : 'Nobody has written here yet. Say hello and start the conversation.';
    welcome.querySelector('.welcome-tips').hidden = dm;
  }
  welcome.hidden = !empty;
  if (reading.unseen > 0 && atBottom()) reading.unseen = 0;
  const jump = $('jump-new');
  jump.hidden = reading.unseen === 0;
  jump.textContent = `${reading.unseen === 1 ? '1 new message' : `${reading.unseen} new messages`} ↓`;
}

/** A new view (another room): nothing unseen, no welcome until its history comes. */
function resetReading() {
  reading.unseen = 0;
  paintReading();
}

function jumpToNewest() {
  const log = $('log');
  log.scrollTop = log.scrollHeight;
  reading.unseen = 0;
  paintReading();
  const input = $('message-input');
  (input.disabled ? log : input).focus();
}

/** After a login or a room switch the message box gets the focus once it can be used, unless the
 *  reader has moved it meanwhile (into the room box to type a name, onto a button): connecting
 *  takes a moment, and a focus jump in the middle of typing sends the keys elsewhere. */
function wantComposerFocus() {
  reading.focusComposer = true;
  reading.focusFrom = document.activeElement;
}

function focusComposerIfWanted() {
  if (!reading.focusComposer) return;
  reading.focusComposer = false;
  const active = document.activeElement;
  const idle = !active || active === document.body || active === reading.focusFrom || active.closest('#auth-view');
  if (idle) $('message-input').focus();
}

// ------------------------------------------------------------------------------------------
// The People panel: a column on wide screens, a panel over the conversation up to 900 px
// ------------------------------------------------------------------------------------------

function peoplePanelOpen() {
  return $('chat-view').classList.contains('show-side');
}

/** Opens or closes the People panel. Open, it starts below the bar that holds its toggle, so the
 *  toggle stays visible and closes it again; focus moves into it and, on Escape, back. */
function setPeoplePanel(open, refocus = false) {
  const toggle = $('toggle-side');
  const side = $('side');
  $('chat-view').classList.toggle('show-side', open);
  toggle.setAttribute('aria-expanded', String(open));
  if (open) {
    const head = toggle.closest('.room-head').getBoundingClientRect();
    side.style.top = `${Math.max(0, Math.round(head.bottom))}px`;
    if (getComputedStyle(side).position === 'fixed') $('close-side').focus();
  } else if (refocus) {
    toggle.focus();
  }
}

function replayChanges(id, after) {
  for (const change of state.changeLog) {
    if (change.id === id && Number.isSafeInteger(change.rev) && change.rev > after) applyChange(change);
  }
}

/** An `edited`, `deleted` or `reactions` change (live or in a catch-up) to a message we have. */
function applyChange(change) {
  if (change.room_id !== undefined && change.room_id !== state.room) return;
  const m = state.msgs.get(change.id);
  if (!m) return; // not loaded here: its current state comes with it if it ever is
  const rev = Number.isSafeInteger(change.rev) ? change.rev : null;
  if (rev !== null && rev < m.rev) return;
  if (change.type === 'edited') {
    if (typeof change.content !== 'string' || m.deleted) return;
    m.content = change.content;
    m.edited_ts = change.edited_ts !== undefined && change.edited_ts !== null ? change.edited_ts : Date.now();
  } else if (change.type === 'deleted') {
    m.deleted = true;
    m.content = '';
    m.edited_ts = null;
    m.reactions = [];
  } else if (change.type === 'reactions') {
    if (m.deleted) return;
    m.reactions = cleanReactions(change.reactions);
  }
  if (rev !== null) m.rev = rev;
  paintMessage(state.els.get(m.id), m);
}

function notice(text, kind = '') {
  const log = $('log');
  const wasAtBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  const li = el('li', kind ? `notice ${kind}` : 'notice', text);
  $('messages').append(li);
  if (wasAtBottom) log.scrollTop = log.scrollHeight;
}

// ------------------------------------------------------------------------------------------
// Acting on a message: menus, edit in place, delete with a confirmation, reactions
// ------------------------------------------------------------------------------------------

/** Sends one frame about a message. False (and says why) when it cannot go now. */
function sendAction(kind, frame) {
  const conn = state.conn;
  if (!conn || conn.state !== 'open') {
    sendError('Not connected: try again when the connection is back.');
    return false;
  }
  if (Date.now() < state.retryUntil) {
    const secs = Math.ceil((state.retryUntil - Date.now()) / 1000);
    sendError(`You are sending too fast. Wait ${plural(secs, 'second')} and try again.`);
    return false;
  }
  const sent = {
    edit: () => conn.edit(frame.id, frame.content),
    delete: () => conn.delete(frame.id),
    react: () => conn.react(frame.id, frame.emoji),
    unreact: () => conn.unreact(frame.id, frame.emoji),
  }[frame.type]();
  if (!sent) {
    sendError('Not connected: try again when the connection is back.');
    return false;
  }
  sendError('');
  return true;
}

function messageOf(node) {
  const li = node && node.closest('li.msg');
  if (!li) return null;
  const m = state.msgs.get(Number(li.dataset.id));
  return m ? { li, m } : null;
}

function menuItem(text, act, label) {
  const b = button('item', text, label);
  b.setAttribute('role', 'menuitem');
  b.dataset.act = act;
  return b;
}

/** Opens the reaction palette or the Edit/Delete menu of a message, focus on its first item. */
function openPopup(trigger, kind) {
  const found = messageOf(trigger);
  if (!found) return;
  const { li, m } = found;
  const wasOpen = state.popup && state.popup.trigger === trigger;
  closePopup(false);
  if (wasOpen) return; // a second click on the same button closes it
  const popup = el('div', kind === 'palette' ? 'popup palette' : 'popup menu');
  popup.setAttribute('role', 'menu');
  popup.id = `popup-${m.id}`;
  if (kind === 'palette') {
    popup.setAttribute('aria-label', 'React with');
    popup.setAttribute('aria-orientation', 'horizontal');
    const mineNow = new Set(m.reactions.filter(([, users]) => users.some((u) => sameUser(u, state.username))).map(([e]) => e));
    for (const emoji of REACTION_PALETTE) {
      const item = menuItem(emoji, 'react', `React with ${emoji}`);
      item.setAttribute('role', 'menuitemcheckbox');
      item.setAttribute('aria-checked', String(mineNow.has(emoji)));
      item.dataset.emoji = emoji;
      popup.append(item);
    }
  } else {
    popup.setAttribute('aria-label', 'Message actions');
    if (canEdit(m)) popup.append(menuItem('Edit', 'edit'));
    if (canDelete(m)) popup.append(menuItem('Delete…', 'delete', 'Delete'));
    if (!popup.firstChild) return;
  }
  trigger.setAttribute('aria-expanded', 'true');
  trigger.setAttribute('aria-controls', popup.id);
  li.querySelector('.actions').append(popup);
  state.popup = { node: popup, trigger };
  popup.querySelector('[role^="menuitem"]').focus();
}

function closePopup(refocus = true) {
  const open = state.popup;
  if (!open) return;
  state.popup = null;
  open.trigger.setAttribute('aria-expanded', 'false');
  open.trigger.removeAttribute('aria-controls');
  const hadFocus = open.node.contains(document.activeElement);
  open.node.remove();
  if (refocus && hadFocus && open.trigger.isConnected) open.trigger.focus();
}

/** Arrow keys, Home and End move between a menu's items; Escape closes it; Tab leaves it. */
function onPopupKey(event) {
  const open = state.popup;
  if (!open || !open.node.contains(event.target)) return;
  const items = [...open.node.querySelectorAll('[role^="menuitem"]')];
  const at = items.indexOf(event.target);
  let next = -1;
  switch (event.key) {
    case 'ArrowDown':
    case 'ArrowRight':
      next = (at + 1) % items.length;
      break;
    case 'ArrowUp':
    case 'ArrowLeft':
      next = (at - 1 + items.length) % items.length;
      break;
    case 'Home':
      next = 0;
      break;
    case 'End':
      next = items.length - 1;
      break;
    case 'Escape':
      event.preventDefault();
      closePopup(true);
      return;
    case 'Tab':
      closePopup(true); // back on its button, from where Tab moves on
      return;
    default:
      return;
  }
  event.preventDefault();
  items[next].focus();
}

function toggleReaction(m, emoji) {
  const entry = m.reactions.find(([e]) => e === emoji);
  const mine = Boolean(entry && entry[1].some((u) => sameUser(u, state.username)));
  sendAction('react', { type: mine ? 'unreact' : 'react', id: m.id, emoji });
}

/** Edits a message in place: a box where its text was (or `text`); Enter saves, Escape cancels. */
function startEdit(id, returnFocus, text) {
  const m = state.msgs.get(id);
  const li = state.els.get(id);
  if (!m || !li || !canEdit(m)) return;
  closePopup(false);
  if (state.editing) closeEditor(false);
  const editor = el('div', 'editor');
  const box = el('textarea');
  box.value = typeof text === 'string' ? text : m.content;
  box.maxLength = MAX_CONTENT_CHARS;
  box.rows = Math.min(8, Math.max(1, box.value.split('\n').length));
  box.setAttribute('aria-label', 'Edit message');
  const row = el('div', 'row');
  const save = button('small', 'Save');
  save.dataset.act = 'save';
  const cancel = button('secondary small', 'Cancel');
  cancel.dataset.act = 'cancel';
  row.append(save, cancel, el('span', 'hint', 'Enter to save · Escape to cancel'));
  editor.append(box, row);
  li.querySelector('.text').hidden = true;
  li.querySelector('.text').after(editor);
  li.classList.add('editing');
  state.editing = { id, returnFocus: returnFocus || li.querySelector('.more-btn') };
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
}

function closeEditor(refocus = true) {
  const editing = state.editing;
  if (!editing) return;
  state.editing = null;
  const li = state.els.get(editing.id);
  if (li) {
    const editor = li.querySelector('.editor');
    if (editor) editor.remove();
    li.querySelector('.text').hidden = false;
    li.classList.remove('editing');
  }
  if (refocus) {
    const target = editing.returnFocus && editing.returnFocus.isConnected && !editing.returnFocus.closest('[hidden]') ? editing.returnFocus : $('message-input');
    target.focus();
  }
}

function saveEdit() {
  const editing = state.editing;
  if (!editing) return;
  const m = state.msgs.get(editing.id);
  const li = state.els.get(editing.id);
  const content = li.querySelector('.editor textarea').value;
  if (!m || m.deleted) return closeEditor();
  if (content === m.content) return closeEditor(); // nothing changed
  if (!content.trim()) {
    sendError('A message cannot be empty. To remove it, use Delete.');
    return;
  }
  if ([...content].length > MAX_CONTENT_CHARS) {
    sendError(`Message too long: at most ${MAX_CONTENT_CHARS} characters.`);
    return;
  }
  if (sendAction('edit', { type: 'edit', id: m.id, content })) closeEditor();
}

/** The Up arrow in an empty message box: edit my last message still there. */
function editLastOwn() {
  for (let i = state.ids.length - 1; i >= 0; i -= 1) {
    const m = state.msgs.get(state.ids[i]);
    if (m && canEdit(m)) {
      startEdit(m.id, $('message-input'));
      state.els.get(m.id).scrollIntoView({ block: 'nearest' });
      return true;
    }
  }
  return false;
}

/** Delete asks first, in the message itself: "Delete this message? [Delete] [Cancel]". */
function askDelete(li, m) {
  closePopup(false);
  if (li.querySelector('.confirm')) return;
  const confirm = el('div', 'confirm');
  confirm.setAttribute('role', 'group');
  confirm.setAttribute('aria-label', 'Confirm deletion');
  const yes = button('small danger', 'Delete');
  yes.dataset.act = 'confirm-delete';
  const no = button('secondary small', 'Cancel');
  no.dataset.act = 'cancel-delete';
  confirm.append(el('span', 'question', m.username && sameUser(m.username, state.username) ? 'Delete this message?' : `Delete this message by ${m.username}?`), yes, no);
  li.append(confirm);
  no.focus();
}

function closeConfirm(li, refocus = true) {
  const confirm = li.querySelector('.confirm');
  if (!confirm) return;
  const hadFocus = confirm.contains(document.activeElement);
  confirm.remove();
  if (refocus && hadFocus) {
    const more = li.querySelector('.more-btn');
    if (more && !more.hidden && !li.querySelector('.actions').hidden) more.focus();
    else $('message-input').focus();
  }
}

/** One listener for every button in the message list. */
function onMessagesClick(event) {
  const target = event.target.closest('button[data-act]');
  if (!target) return;
  const found = messageOf(target);
  if (!found) return;
  const { li, m } = found;
  switch (target.dataset.act) {
    case 'palette':
    case 'menu':
      openPopup(target, target.dataset.act);
      break;
    case 'react':
      closePopup(true);
      if (!m.deleted) toggleReaction(m, target.dataset.emoji);
      break;
    case 'chip':
      if (!m.deleted) toggleReaction(m, target.dataset.emoji);
      break;
    case 'edit':
      startEdit(m.id, li.querySelector('.more-btn'));
      break;
    case 'delete':
      askDelete(li, m);
      break;
    case 'confirm-delete':
      if (sendAction('delete', { type: 'delete', id: m.id })) closeConfirm(li, false);
      $('message-input').focus();
      break;
    case 'cancel-delete':
      closeConfirm(li, true);
      break;
    case 'save':
      saveEdit();
      break;
    case 'cancel':
      closeEditor(true);
      break;
    default:
      break;
  }
}

function onMessagesKey(event) {
  if (state.popup && state.popup.node.contains(event.target)) {
    onPopupKey(event);
    return;
  }
  if (event.target.matches('.editor textarea')) {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      saveEdit();
    } else if (event.key === 'Escape') {
      event.preventDefault();
      closeEditor(true);
    }
    return;
  }
  const confirm = event.target.closest('.confirm');
  if (confirm && event.key === 'Escape') {
    event.preventDefault();
    closeConfirm(confirm.closest('li.msg'), true);
  }
}

function renderOnline() {
  const list = $('online-list');
  const open = list.querySelector('.mod-menu');
  const openFor = open ? open.dataset.user : null;
  clearChildren(list);
  const users = [...state.online].sort((a, b) => a.localeCompare(b));
  for (const name of users) {
    const li = el('li', 'online');
    const role = roleOf(name);
    li.append(el('span', 'name', name === state.username ? `${name} (you)` : name));
    if (role === 'owner' || role === 'moderator') li.append(el('span', 'hint', role));
    if (mayModerate(name)) {
      const more = button('small secondary mod-btn', '⋯', `Moderate ${name}`);
      more.dataset.user = name;
      more.setAttribute('aria-haspopup', 'menu');
      more.setAttribute('aria-expanded', 'false');
      li.append(more);
    }
    list.append(li);
    if (openFor && name === openFor && mayModerate(name)) openModMenu(li.querySelector('.mod-btn'), false);
  }
  $('online-count').textContent = String(users.length);
}

// ------------------------------------------------------------------------------------------
// Moderation: the owner's and moderators' menu on a person
// ------------------------------------------------------------------------------------------

const MUTE_MS = 60 * 60 * 1000;

function openModMenu(trigger, focus = true) {
  const list = $('online-list');
  const name = trigger.dataset.user;
  const existing = list.querySelector('.mod-menu');
  if (existing) {
    const same = existing.dataset.user === name;
    closeModMenu(false);
    if (same && focus) return; // a second click closes it
  }
  const menu = el('div', 'popup menu mod-menu');
  menu.setAttribute('role', 'menu');
  menu.setAttribute('aria-label', `Moderate ${name}`);
  menu.dataset.user = name;
  const item = (text, act) => {
    const b = menuItem(text, act);
    b.dataset.user = name;
    return b;
  };
  menu.append(item('Kick', 'kick'), item('Mute for 1 hour', 'mute'), item('Unmute', 'unmute'), item('Ban…', 'ban'));
  if (roleOf(state.username) === 'owner') {
    menu.append(roleOf(name) === 'moderator' ? item('Remove moderator', 'unmod') : item('Make moderator', 'mod'));
  }
  trigger.setAttribute('aria-expanded', 'true');
  trigger.closest('li').append(menu);
  if (focus) menu.querySelector('[role="menuitem"]').focus();
}

function closeModMenu(refocus = true) {
  const menu = $('online-list').querySelector('.mod-menu');
  if (!menu) return;
  const trigger = menu.closest('li').querySelector('.mod-btn');
  menu.remove();
  if (trigger) {
    trigger.setAttribute('aria-expanded', 'false');
    if (refocus) trigger.focus();
  }
}

/** Sends a moderation request for `name` and says how it went. */
async function moderate(act, name) {
  const room = state.room;
  const user = encodeURIComponent(name);
  const requests = {
    kick: ['POST', `/rooms/${room}/kick/${user}`, null, `${name} was kicked.`],
    mute: ['PUT', `/rooms/${room}/mutes/${user}`, { until: Date.now() + MUTE_MS }, `${name} is muted for an hour.`],
    unmute: ['DELETE', `/rooms/${room}/mutes/${user}`, null, `${name} may post again.`],
    ban: ['PUT', `/rooms/${room}/bans/${user}`, null, `${name} is banned from #${room}.`],
    mod: ['PUT', `/rooms/${room}/moderators/${user}`, null, `${name} is now a moderator.`],
    unmod: ['DELETE', `/rooms/${room}/moderators/${user}`, null, `${name} is no longer a moderator.`],
  };
  const [method, path, json, done] = requests[act];
  const res = await api(method, path, json ? { json } : {});
  if (room !== state.room || res.status === 401) return;
  notice(res.ok ? done : `Could not do that: ${res.detail}`, res.ok ? '' : 'error');
  if (res.ok && (act === 'mod' || act === 'unmod' || act === 'ban')) await loadRoomInfo();
}

function onOnlineClick(event) {
  const target = event.target.closest('button');
  if (!target) return;
  if (target.classList.contains('mod-btn')) {
    openModMenu(target);
    return;
  }
  const act = target.dataset.act;
  if (!act) return;
  const name = target.dataset.user;
  if (act === 'ban') {
    // A ban closes the person's sockets and keeps them out: one more click to be sure.
    target.dataset.act = 'confirm-ban';
    target.textContent = `Confirm: ban ${name}`;
    return;
  }
  closeModMenu(true);
  moderate(act === 'confirm-ban' ? 'ban' : act, name);
}

function onOnlineKey(event) {
  const menu = $('online-list').querySelector('.mod-menu');
  if (!menu || !menu.contains(event.target)) return;
  const items = [...menu.querySelectorAll('[role="menuitem"]')];
  const at = items.indexOf(event.target);
  if (event.key === 'Escape') {
    event.preventDefault();
    closeModMenu(true);
  } else if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
    event.preventDefault();
    const step = event.key === 'ArrowDown' ? 1 : items.length - 1;
    items[(at + step) % items.length].focus();
  }
}

// ------------------------------------------------------------------------------------------
// Older history over HTTP
// ------------------------------------------------------------------------------------------

function updateOlder() {
  const button = $('load-older');
  const oldest = state.ids.length ? state.ids[0] : 0;
  const maybeMore = state.olderSupported && !state.noOlder && oldest > 1;
  button.hidden = !maybeMore;
  button.disabled = state.loadingOlder;
  $('older-status').textContent = state.noOlder && state.ids.length ? 'This is the beginning of the room.' : '';
}

async function loadOlder() {
  if (state.loadingOlder || !state.ids.length) return;
  state.loadingOlder = true;
  updateOlder();
  const res = await fetchMessages(`before=${state.ids[0]}&limit=${PAGE_SIZE}`, (list, page) => applyItems(list, page));
  state.loadingOlder = false;
  if (!res) return; // another room meanwhile
  if (okPage(res)) {
    if (!res.data.has_more) state.noOlder = true;
  } else if (res.status === 404 || res.status === 405) {
    state.olderSupported = false; // server without the history endpoint
  } else if (res.status !== 401) {
    notice(`Could not load older messages: ${res.detail}`, 'warn');
  }
  updateOlder();
}

// ------------------------------------------------------------------------------------------
// Sending
// ------------------------------------------------------------------------------------------

function autosize() {
  const input = $('message-input');
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight + 2, 160)}px`;
}

function sendMessage() {
  const input = $('message-input');
  const content = input.value;
  if (!content.trim()) return;
  if ([...content].length > MAX_CONTENT_CHARS) {
    sendError(`Message too long: at most ${MAX_CONTENT_CHARS} characters.`);
    return;
  }
  const conn = state.conn;
  if (!conn || conn.state !== 'open') {
    sendError('Not connected: your message was not sent. It will stay in the box.');
    return;
  }
  if (Date.now() < state.retryUntil) {
    const secs = Math.ceil((state.retryUntil - Date.now()) / 1000);
    sendError(`You are sending messages too fast. Wait ${plural(secs, 'second')} and try again.`);
    return;
  }
  // Resolves with the echo (resent with its client_id after a drop: stored once); a refusal
  // comes back with the server's error frame.
  conn.send(content).catch((e) => {
    if (state.conn !== conn || !e || !e.frame) return; // left the room, or it closed (said apart)
    state.lastSent = content;
    onErrorFrame(e.frame);
  });
  state.lastTypingSent = 0; // the next keystroke says "typing" again at once
  state.lastSent = content;
  input.value = '';
  autosize();
  sendError('');
}

// ------------------------------------------------------------------------------------------
// Wiring
// ------------------------------------------------------------------------------------------

function wire() {
  $('auth-form').addEventListener('submit', onAuthSubmit);
  $('room-form').addEventListener('submit', onRoomSubmit);
  $('dm-form').addEventListener('submit', onDmSubmit);
  $('logout').addEventListener('click', () => logout(false));
  $('open-settings').addEventListener('click', openSettings);
  $('close-settings').addEventListener('click', closeSettings);
  $('password-form').addEventListener('submit', changePassword);
  $('delete-start').addEventListener('click', () => {
    $('delete-confirm').hidden = false;
    $('delete-password').focus();
  });
  $('delete-cancel').addEventListener('click', () => {
    $('delete-confirm').hidden = true;
    $('delete-password').value = '';
  });
  $('delete-form').addEventListener('submit', deleteAccount);
  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    sendMessage();
  });
  $('message-input').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    } else if (
      event.key === 'ArrowUp' && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey &&
      !event.isComposing && event.target.value === ''
    ) {
      if (editLastOwn()) event.preventDefault();
    }
  });
  $('message-input').addEventListener('input', () => {
    autosize();
    typed();
  });
  $('messages').addEventListener('click', onMessagesClick);
  $('messages').addEventListener('keydown', onMessagesKey);
  // A click anywhere outside the open menu closes it.
  document.addEventListener('mousedown', (event) => {
    const open = state.popup;
    if (open && !open.node.contains(event.target) && !open.trigger.contains(event.target)) closePopup(false);
  });
  $('load-older').addEventListener('click', loadOlder);
  $('retry-now').addEventListener('click', reconnectNow);
  $('online-list').addEventListener('click', onOnlineClick);
  $('online-list').addEventListener('keydown', onOnlineKey);
  $('toggle-side').addEventListener('click', () => setPeoplePanel(!peoplePanelOpen()));
  $('close-side').addEventListener('click', () => setPeoplePanel(false, true));
  document.addEventListener('keydown', (event) => {
    // Menus inside the panel take their own Escape first (they prevent the default).
    if (event.key !== 'Escape' || event.defaultPrevented || !peoplePanelOpen()) return;
    setPeoplePanel(false, $('side').contains(document.activeElement));
  });
  document.addEventListener('pointerdown', (event) => {
    if (!peoplePanelOpen()) return;
    if ($('side').contains(event.target) || $('toggle-side').contains(event.target)) return;
    setPeoplePanel(false);
  });
  $('auth-switch').addEventListener('click', switchAuthMode);
  $('jump-new').addEventListener('click', jumpToNewest);
  $('log').addEventListener('scroll', () => {
    if (reading.unseen > 0 && atBottom()) paintReading();
  });
  // A room switch (the sidebar, Join, a DM, the address bar) brings the focus to the message box.
  window.addEventListener('hashchange', wantComposerFocus);
  $('member-form').addEventListener('submit', (event) => {
    event.preventDefault();
    changeMember('PUT', $('member-input').value.trim());
  });
  $('member-list').addEventListener('click', (event) => {
    const button = event.target.closest('button[data-member]');
    if (button) changeMember('DELETE', button.dataset.member);
  });
  window.addEventListener('hashchange', onHashChange);
  window.addEventListener('online', reconnectNow);
  // Back on the tab: reconnect at once if waiting, read what came, and a fresh list (it was
  // polled less often while hidden).
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') {
      reconnectNow();
      state.unseenHere = 0;
      updateTitle();
      scheduleRead();
      refreshMyRooms();
    }
  });
  window.addEventListener('focus', () => {
    if (Date.now() - state.myRoomsAt > 2000) refreshMyRooms();
  });
  club.on('token', onToken);
}

// Test and debugging hook. It can only do what the page itself can (drop and resume its own
// socket, read what is on screen); it exposes no token.
window.__clubhouse = Object.freeze({
  /** Closes the socket as a network drop would. With hold=true, stays down until resume(). */
  dropSocket(hold = false) {
    const conn = state.conn;
    if (!conn || conn.state === 'closed') return false;
    conn.pause();
    if (!hold) conn.resume();
    return true;
  },
  resume() {
    if (state.conn) state.conn.resume();
  },
  status: () => state.status,
  transport: () => club.transport,
  lastId: () => state.lastId,
  rev: () => (state.conn ? state.conn.lastRev : state.rev),
  messageIds: () => [...state.ids],
  /** The sidebar's rooms as the page shows them: id, kind, unread. */
  sidebar: () => state.myRooms.map((r) => ({ room_id: r.room_id, kind: r.kind, unread: r.unread })),
  room: () => state.room,
});

async function boot() {
  wire();
  setStatus('idle');
  let token = null;
  try {
    token = sessionStorage.getItem(TOKEN_KEY);
  } catch {
    token = null;
  }
  if (token) {
    setSession(token, null);
    if (state.username && !tokenExpired()) {
      enterChat();
      refreshSession(); // on load too: the token in storage may be close to its end
      return;
    }
    clearSession();
  }
  // A new tab or a reload after the tab's token is gone: the refresh cookie, if the login holds.
  if (await refreshSession()) {
    enterChat();
    return;
  }
  clearSession();
  showAuth(token ? 'Your session expired. Please log in again.' : '');
}

boot();
