// Clubhouse browser client. Plain ES module: no build step, no dependencies, strict-CSP friendly
// (no inline code, no eval, no innerHTML). Every piece of text that came from the network is put
// into the page with textContent, so markup in a message is shown as the characters it is.
//
// The token lives in sessionStorage only (per tab, gone when the tab closes), travels in the
// Authorization header over HTTP and in Sec-WebSocket-Protocol ("bearer", <JWT>) on the socket, so
// it never appears in a URL unless the server predates that transport (then ?token= is used).

const TOKEN_KEY = 'clubhouse.token';
const USERNAME_RE = /^[A-Za-z0-9_.-]{3,32}$/;
const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_CONTENT_CHARS = 4000;
const PAGE_SIZE = 50;
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;
const HEARTBEAT_MS = 25000;
const HEARTBEAT_TIMEOUT_MS = 10000;
const GAP_FILL_MAX_PAGES = 10;

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  username: null,
  exp: 0,
  room: null,
  roomInfo: null,
  ws: null,
  gen: 0, // bumped whenever the current socket is abandoned on purpose; stale events are ignored
  status: 'idle',
  transport: 'unknown', // 'bearer' once the subprotocol worked, 'query' if only ?token= did
  attempt: 0,
  reconnectTimer: 0,
  countdownTimer: 0,
  nextAttemptAt: 0,
  held: false, // test hook: keep the socket down until resume()
  stopped: false, // no more reconnects in this room (removed, forbidden)
  heartbeatTimer: 0,
  pongTimer: 0,
  // The view: messages by id, kept in id order.
  els: new Map(),
  ids: [], // sorted ascending
  lastId: 0,
  online: new Set(),
  olderSupported: true,
  noOlder: false,
  loadingOlder: false,
  lastSent: null,
  retryUntil: 0,
  retryTimer: 0,
};

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

/** Calls the API. Never throws: network failures come back as status 0. */
async function api(method, path, { json, form, auth = true } = {}) {
  const headers = { Accept: 'application/json' };
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    headers['Content-Type'] = 'application/x-www-form-urlencoded';
    body = new URLSearchParams(form).toString();
  }
  if (auth && state.token) headers.Authorization = `Bearer ${state.token}`;
  let res;
  try {
    res = await fetch(path, { method, headers, body, credentials: 'omit', cache: 'no-store', redirect: 'error' });
  } catch {
    return { ok: false, status: 0, data: null, detail: 'Cannot reach the server. Check your connection.' };
  }
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  const detail = data && typeof data.detail === 'string' ? data.detail : `${res.status} ${res.statusText}`;
  const out = { ok: res.ok, status: res.status, data, detail, retryAfter: parseRetryAfter(res.headers.get('Retry-After')) };
  if (res.status === 401 && auth && state.token) {
    sessionEnded('Your session has ended. Please log in again.');
  }
  return out;
}

/** Retry-After in seconds (delta-seconds or an HTTP date), or null. */
function parseRetryAfter(value) {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, Math.ceil((when - Date.now()) / 1000));
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

// ------------------------------------------------------------------------------------------
// Session
// ------------------------------------------------------------------------------------------

function decodeJwt(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = part + '='.repeat((4 - (part.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

function setSession(token, fallbackName) {
  const claims = decodeJwt(token) || {};
  state.token = token;
  state.username = typeof claims.sub === 'string' ? claims.sub : fallbackName;
  state.exp = typeof claims.exp === 'number' ? claims.exp : 0;
  state.transport = 'unknown';
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    /* private mode: the session lasts as long as the page */
  }
}

function clearSession() {
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
    await api('POST', everywhere ? '/logout?all=true' : '/logout');
  }
  clearSession();
  showAuth('You have logged out.', 'info');
}

// ------------------------------------------------------------------------------------------
// Sign up / log in
// ------------------------------------------------------------------------------------------

let authCountdown = 0;

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
  const res = await api('POST', '/token', { form: { username, password }, auth: false });
  if (res.ok && res.data && typeof res.data.access_token === 'string') {
    setSession(res.data.access_token, username);
    $('auth-password').value = '';
    authError('');
    enterChat();
    return;
  }
  if (res.status === 401) return authError('Wrong username or password.');
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
  if (res.status === 201 || res.status === 200) return doLogin(username, password);
  if (res.status === 409) return authError(`The username "${username}" is already taken.`);
  if (res.status === 422) return authError(`Cannot sign up: ${res.detail}`);
  if (res.status === 429) return rateLimited(res.retryAfter);
  authError(res.status === 0 ? res.detail : `Could not sign up: ${res.detail}`);
}

let authBusy = false;

async function onAuthSubmit(event) {
  event.preventDefault();
  if (authBusy) return;
  const action = event.submitter && event.submitter.dataset.action === 'signup' ? 'signup' : 'login';
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
// Views
// ------------------------------------------------------------------------------------------

function showAuth(message, kind = 'error') {
  $('chat-view').hidden = true;
  $('session').hidden = true;
  $('auth-view').hidden = false;
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
    return Array.isArray(list) ? list.filter((r) => typeof r === 'string' && ROOM_RE.test(r)) : [];
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

function renderRoomList() {
  const list = $('room-list');
  clearChildren(list);
  const rooms = recentRooms();
  if (!rooms.includes('lobby')) rooms.push('lobby');
  for (const room of rooms) {
    const li = el('li');
    const a = el('a', '', `# ${room}`);
    a.href = `#room=${room}`;
    if (room === state.room) a.setAttribute('aria-current', 'true');
    li.append(a);
    list.append(li);
  }
}

function roomFromHash() {
  const m = /^#room=([A-Za-z0-9_-]{1,64})$/.exec(location.hash);
  return m ? m[1] : null;
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
    if (res.status === 201 || res.status === 200) {
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
  if (state.room === room) return;
  location.hash = `#room=${room}`;
}

function onHashChange() {
  if (!state.token) return;
  const room = roomFromHash();
  if (room && room !== state.room) enterRoom(room);
}

/** Closes the current socket for good (room switch, logout): its late events are ignored. */
function leaveRoom() {
  state.gen += 1;
  stopHeartbeat();
  clearTimeout(state.reconnectTimer);
  clearInterval(state.countdownTimer);
  if (state.ws) {
    try {
      state.ws.close(1000, 'bye');
    } catch {
      /* already closed */
    }
  }
  state.ws = null;
  state.room = null;
  state.held = false;
  setStatus('idle');
}

function resetView() {
  clearChildren($('messages'));
  state.els = new Map();
  state.ids = [];
  state.lastId = 0;
  state.online = new Set();
  state.olderSupported = true;
  state.noOlder = false;
  state.lastSent = null;
  renderOnline();
  updateOlder();
  show($('send-error'), '');
  banner('');
}

async function enterRoom(room) {
  leaveRoom();
  state.room = room;
  state.stopped = false;
  state.attempt = 0;
  state.roomInfo = null;
  resetView();
  document.title = `#${room} · Clubhouse`;
  $('room-title').textContent = `# ${room}`;
  $('room-badge').hidden = true;
  $('members-panel').hidden = true;
  setComposerEnabled(false);
  rememberRoom(room);
  const gen = state.gen;
  const info = await loadRoomInfo();
  if (gen !== state.gen || state.room !== room) return; // switched again meanwhile
  if (info === 'forbidden') return;
  connect();
}

/** Room metadata; 'forbidden' for a private room we are not in. Absent on older servers. */
async function loadRoomInfo() {
  const room = state.room;
  const res = await api('GET', `/rooms/${room}`);
  if (room !== state.room) return null;
  if (res.status === 403) {
    roomForbidden();
    return 'forbidden';
  }
  if (!res.ok || !res.data) return null;
  const info = res.data;
  state.roomInfo = info;
  const badge = $('room-badge');
  if (info.private) {
    badge.textContent = info.owner ? `private · owner ${info.owner}` : 'private';
  } else {
    badge.textContent = 'public';
  }
  badge.hidden = false;
  const isOwner = info.private && typeof info.owner === 'string' && info.owner.toLowerCase() === String(state.username).toLowerCase();
  $('members-panel').hidden = !isOwner;
  if (isOwner) renderMembers(Array.isArray(info.members) ? info.members : []);
  return info;
}

function roomForbidden() {
  state.stopped = true;
  setStatus('closed');
  setComposerEnabled(false);
  banner(`#${state.room} is a private room and you are not a member.`, 'error');
  notice('This room is private. Ask its owner to add you.', 'error');
  forgetRoom(state.room);
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
}

// ------------------------------------------------------------------------------------------
// WebSocket: connect, catch up, reconnect
// ------------------------------------------------------------------------------------------

function wsUrl(room, since, queryToken) {
  const url = new URL(`/ws/${room}`, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  if (since > 0) url.searchParams.set('since', String(since));
  if (queryToken) url.searchParams.set('token', queryToken);
  return url.href;
}

function connect(forceQuery = false) {
  clearTimeout(state.reconnectTimer);
  clearInterval(state.countdownTimer);
  if (!state.room || !state.token || state.stopped) return;
  if (tokenExpired()) {
    sessionEnded('Your session expired. Please log in again.');
    return;
  }
  if (state.held) {
    setStatus('reconnecting');
    banner('Connection lost. Reconnecting…');
    return;
  }
  state.gen += 1;
  const gen = state.gen;
  const room = state.room;
  const viaQuery = forceQuery || state.transport === 'query';
  let ws;
  try {
    ws = viaQuery
      ? new WebSocket(wsUrl(room, state.lastId, state.token))
      : new WebSocket(wsUrl(room, state.lastId, null), ['bearer', state.token]);
  } catch {
    if (!viaQuery) return connect(true);
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  setStatus(state.attempt > 0 ? 'reconnecting' : 'connecting');
  let opened = false;

  ws.addEventListener('open', () => {
    if (gen !== state.gen) return;
    opened = true;
    if (!viaQuery) state.transport = 'bearer';
    else if (state.transport !== 'bearer') state.transport = 'query';
    setStatus('open');
    banner('');
    setComposerEnabled(true);
    startHeartbeat();
    // Servers that send no history frame: count a connection that stays up as stable.
    setTimeout(() => {
      if (gen === state.gen && state.status === 'open') state.attempt = 0;
    }, 3000);
  });
  ws.addEventListener('message', (event) => {
    if (gen !== state.gen) return;
    sawTraffic();
    if (typeof event.data === 'string') handleFrame(event.data);
  });
  ws.addEventListener('close', (event) => {
    if (gen !== state.gen) return;
    onSocketClosed(event, opened, viaQuery);
  });
}

async function onSocketClosed(event, opened, viaQuery) {
  stopHeartbeat();
  state.ws = null;
  setComposerEnabled(false);
  const reason = String(event.reason || '').toLowerCase();
  if (event.code === 1008) {
    if (/token|revoked|credential|auth|session/.test(reason)) {
      sessionEnded('You were logged out (your session was revoked). Please log in again.');
      return;
    }
    if (/removed|member|kick/.test(reason)) {
      state.stopped = true;
      setStatus('closed');
      banner(`You were removed from #${state.room}.`, 'error');
      notice(`You were removed from #${state.room} by its owner.`, 'error');
      forgetRoom(state.room);
      return;
    }
    if (reason) notice(`Disconnected by the server: ${event.reason}`, 'warn');
  }
  if (!opened) {
    // A refused handshake looks the same as a dead server from here: ask over HTTP why.
    const room = state.room;
    const gen = state.gen;
    const probe = await api('GET', `/rooms/${room}`);
    if (gen !== state.gen || room !== state.room || !state.token) return; // left, or session ended (401)
    if (probe.status === 403) {
      roomForbidden();
      return;
    }
    // The server is up, our token is good and the room lets us in, yet the handshake failed:
    // a server without the Sec-WebSocket-Protocol transport. Fall back to ?token= (once per
    // failure; remembered only if it works).
    const serverUp = probe.status === 200 || probe.status === 404;
    if (serverUp && !viaQuery && state.transport !== 'bearer') {
      connect(true);
      return;
    }
  }
  scheduleReconnect();
}

/** Exponential backoff with jitter: the n-th retry waits between half and all of min(cap, base·2ⁿ). */
function backoffDelay(attempt) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

function scheduleReconnect() {
  if (!state.room || !state.token || state.stopped) return;
  clearTimeout(state.reconnectTimer);
  clearInterval(state.countdownTimer);
  setStatus('reconnecting');
  if (state.held) {
    banner('Connection lost. Reconnecting…');
    return;
  }
  const delay = backoffDelay(state.attempt);
  state.attempt += 1;
  state.nextAttemptAt = Date.now() + delay;
  const tick = () => {
    const secs = Math.max(0, Math.ceil((state.nextAttemptAt - Date.now()) / 1000));
    banner(`Connection lost. Reconnecting… ${secs > 0 ? `next try in ${plural(secs, 'second')}` : 'now'} (attempt ${state.attempt})`, 'warn', true);
  };
  tick();
  state.countdownTimer = setInterval(tick, 1000);
  state.reconnectTimer = setTimeout(() => connect(), delay);
}

function reconnectNow() {
  if (state.status !== 'reconnecting' || state.held) return;
  connect();
}

/** Gives up on a socket that stopped answering, and reconnects. */
function abandonSocket() {
  const ws = state.ws;
  state.gen += 1;
  stopHeartbeat();
  state.ws = null;
  setComposerEnabled(false);
  if (ws) {
    try {
      ws.close(4000, 'heartbeat timeout');
    } catch {
      /* already closed */
    }
  }
  scheduleReconnect();
}

function startHeartbeat() {
  stopHeartbeat();
  state.heartbeatTimer = setInterval(() => {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    try {
      ws.send('ping');
    } catch {
      return;
    }
    clearTimeout(state.pongTimer);
    state.pongTimer = setTimeout(abandonSocket, HEARTBEAT_TIMEOUT_MS);
  }, HEARTBEAT_MS);
}

function stopHeartbeat() {
  clearInterval(state.heartbeatTimer);
  clearTimeout(state.pongTimer);
}

function sawTraffic() {
  clearTimeout(state.pongTimer);
}

// ------------------------------------------------------------------------------------------
// Frames
// ------------------------------------------------------------------------------------------

function handleFrame(text) {
  if (text === 'pong') return;
  let frame;
  try {
    frame = JSON.parse(text);
  } catch {
    return;
  }
  if (!frame || typeof frame !== 'object') return;
  switch (frame.type) {
    case 'history':
      onHistory(frame);
      break;
    case 'message':
      mergeMessages([frame]);
      break;
    case 'presence':
      state.online = new Set((Array.isArray(frame.users) ? frame.users : []).map(String));
      renderOnline();
      break;
    case 'join':
      if (typeof frame.username === 'string') {
        state.online.add(frame.username);
        renderOnline();
        notice(`${frame.username} joined`);
      }
      break;
    case 'leave':
      if (typeof frame.username === 'string') {
        state.online.delete(frame.username);
        renderOnline();
        notice(`${frame.username} left`);
      }
      break;
    case 'presence_changes':
      onPresenceChanges(frame);
      break;
    case 'error':
      onErrorFrame(frame);
      break;
    default:
      break;
  }
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
  for (const u of went) state.online.delete(u);
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

async function onHistory(frame) {
  const before = state.lastId; // what we had when we asked for since=before
  const messages = Array.isArray(frame.messages) ? frame.messages : [];
  mergeMessages(messages);
  state.attempt = 0;
  updateOlder();
  if (frame.truncated && before > 0 && messages.length > 0) {
    await fillGap(before, messages[0].id);
  }
}

/** After a long outage the server sends only the newest part of what we missed: page back over
 *  HTTP until the view is contiguous again (or say where the hole is). */
async function fillGap(after, upTo) {
  const room = state.room;
  let before = upTo;
  for (let page = 0; page < GAP_FILL_MAX_PAGES; page += 1) {
    const res = await api('GET', `/rooms/${room}/messages?before=${before}&limit=100`);
    if (room !== state.room || !res.ok || !res.data || !Array.isArray(res.data.messages)) break;
    const msgs = res.data.messages.filter((m) => m && m.id > after);
    mergeMessages(msgs);
    if (msgs.length < res.data.messages.length || !res.data.has_more || res.data.messages.length === 0) return;
    before = res.data.messages[0].id;
  }
  if (room === state.room) notice('Some messages from while you were away are not shown: use “Load older messages” history.', 'warn');
}

function onErrorFrame(frame) {
  const detail = typeof frame.detail === 'string' ? frame.detail : 'error';
  if (typeof frame.retry_after_ms === 'number') {
    const secs = Math.max(1, Math.ceil(frame.retry_after_ms / 1000));
    state.retryUntil = Date.now() + frame.retry_after_ms;
    sendError(`You are sending messages too fast. Wait ${plural(secs, 'second')} and try again.`);
    // The refused message was not delivered: give it back if the box is empty.
    const input = $('message-input');
    if (state.lastSent && !input.value) {
      input.value = state.lastSent;
      autosize();
    }
    return;
  }
  sendError(`Message not sent: ${detail}`);
}

function sendError(text) {
  clearTimeout(state.retryTimer);
  show($('send-error'), text);
  if (text) state.retryTimer = setTimeout(() => show($('send-error'), ''), 8000);
}

// ------------------------------------------------------------------------------------------
// Rendering messages: deduplicated by id, in id order
// ------------------------------------------------------------------------------------------

function validMessage(m) {
  return (
    m &&
    Number.isSafeInteger(m.id) &&
    m.id > 0 &&
    typeof m.content === 'string' &&
    typeof m.username === 'string' &&
    (m.room_id === undefined || m.room_id === state.room)
  );
}

function formatTime(ts) {
  const d = new Date(Number(ts));
  if (Number.isNaN(d.getTime())) return { short: '', full: '' };
  const sameDay = d.toDateString() === new Date().toDateString();
  const short = sameDay
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  return { short, full: d.toISOString() };
}

function renderMessage(m) {
  const li = el('li', m.username === state.username ? 'msg mine' : 'msg');
  li.dataset.id = String(m.id);
  const meta = el('div', 'meta');
  meta.append(el('span', 'who', m.username));
  const when = formatTime(m.ts);
  const time = el('time', '', when.short);
  if (when.full) {
    time.dateTime = when.full;
    time.title = when.full;
  }
  meta.append(time);
  li.append(meta, el('div', 'text', m.content)); // textContent: markup stays text
  return li;
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

function mergeMessages(list) {
  const log = $('log');
  const wasAtBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  const oldHeight = log.scrollHeight;
  const oldTop = log.scrollTop;
  let prepended = false;
  let appended = false;
  const ul = $('messages');
  for (const m of list) {
    if (!validMessage(m) || state.els.has(m.id)) continue;
    const node = renderMessage(m);
    const at = upperBound(state.ids, m.id);
    if (at === state.ids.length) {
      ul.append(node); // newest: after any notices, in arrival order
      appended = true;
    } else {
      ul.insertBefore(node, state.els.get(state.ids[at]));
      if (at === 0) prepended = true;
    }
    state.ids.splice(at, 0, m.id);
    state.els.set(m.id, node);
    if (m.id > state.lastId) state.lastId = m.id;
  }
  if (appended && wasAtBottom) {
    log.scrollTop = log.scrollHeight;
  } else if (prepended && !appended) {
    log.scrollTop = oldTop + (log.scrollHeight - oldHeight); // keep what the reader was looking at
  }
  updateOlder();
}

function notice(text, kind = '') {
  const log = $('log');
  const wasAtBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  const li = el('li', kind ? `notice ${kind}` : 'notice', text);
  $('messages').append(li);
  if (wasAtBottom) log.scrollTop = log.scrollHeight;
}

function renderOnline() {
  const list = $('online-list');
  clearChildren(list);
  const users = [...state.online].sort((a, b) => a.localeCompare(b));
  for (const name of users) {
    list.append(el('li', 'online', name === state.username ? `${name} (you)` : name));
  }
  $('online-count').textContent = String(users.length);
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
  const room = state.room;
  state.loadingOlder = true;
  updateOlder();
  const res = await api('GET', `/rooms/${room}/messages?before=${state.ids[0]}&limit=${PAGE_SIZE}`);
  state.loadingOlder = false;
  if (room !== state.room) return;
  if (res.ok && res.data && Array.isArray(res.data.messages)) {
    mergeMessages(res.data.messages);
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
  const ws = state.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) {
    sendError('Not connected: your message was not sent. It will stay in the box.');
    return;
  }
  if (Date.now() < state.retryUntil) {
    const secs = Math.ceil((state.retryUntil - Date.now()) / 1000);
    sendError(`You are sending messages too fast. Wait ${plural(secs, 'second')} and try again.`);
    return;
  }
  ws.send(JSON.stringify({ content, room_id: state.room }));
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
  $('logout').addEventListener('click', () => logout(false));
  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    sendMessage();
  });
  $('message-input').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
  $('message-input').addEventListener('input', autosize);
  $('load-older').addEventListener('click', loadOlder);
  $('retry-now').addEventListener('click', reconnectNow);
  $('toggle-side').addEventListener('click', () => {
    const open = $('chat-view').classList.toggle('show-side');
    $('toggle-side').setAttribute('aria-expanded', String(open));
  });
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
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') reconnectNow();
  });
}

// Test and debugging hook. It can only do what the page itself can (drop and resume its own
// socket, read what is on screen); it exposes no token.
window.__clubhouse = Object.freeze({
  /** Closes the socket as a network drop would. With hold=true, stays down until resume(). */
  dropSocket(hold = false) {
    state.held = Boolean(hold);
    const ws = state.ws;
    if (ws) ws.close(4000, 'dropped by test hook');
    return Boolean(ws);
  },
  resume() {
    state.held = false;
    if (state.status === 'reconnecting' && !state.ws) {
      state.attempt = 0;
      connect();
    }
  },
  status: () => state.status,
  transport: () => state.transport,
  lastId: () => state.lastId,
  messageIds: () => [...state.ids],
  room: () => state.room,
});

function boot() {
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
    if (!state.username || tokenExpired()) {
      clearSession();
      showAuth('Your session expired. Please log in again.');
      return;
    }
    enterChat();
    return;
  }
  showAuth('');
}

boot();
