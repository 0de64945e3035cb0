//! The room: one Durable Object per room name, holding that room's WebSockets.
//!
//! Sockets are accepted with the Hibernation API, so an idle room costs nothing while its
//! members stay connected: the runtime evicts the object from memory and wakes it for the next
//! frame. Anything that must survive that lives in SQLite storage (messages, room metadata) or
//! in the socket's attachment and tags (who it belongs to), never only in struct fields. The
//! in-memory fields here are caches that are rebuilt, or are harmless to lose (rate buckets
//! refill within seconds, and hibernation only follows seconds of silence).
//!
//! Only the Worker talks to this object: it verifies the badge and room access first and passes
//! the identity in headers it sets itself (for a socket: one `handover` header). Paths here are
//! internal.
//!
//! Joins and leaves are announced at once in a quiet room and batched during bursts
//! (`presence.rs`); the batch and its flush timer are in memory only, like the caches.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use worker::{
    durable_object, DurableObject, Env, Method, Request, Response, Result, SqlStorage,
    SqlStorageValue, State, WebSocket, WebSocketPair,
};
use worker::{js_sys, worker_sys::web_sys};

use crate::admissions::Admissions;
use crate::config::{Config, RoomConfig};
use crate::handover::{self, Handover};
use crate::http;
use crate::log::{self, LineBatch, Step};
use crate::outbox::{Outbox, Outgoing};
use crate::presence::{Decision, PresenceBatch};
use crate::protocol::{self, error_frame, ChatMessage, ServerFrame};
use crate::ratelimit::{ConnectionLimiter, Verdict};
use crate::room_store::{ConnectWrites, Schema, SCHEMA, UPSERT_META};
use crate::sessions::Ledger;
use crate::timer::Deferred;

/// The Durable Object binding in wrangler.toml.
pub const BINDING: &str = "ROOMS";
/// Identity headers the Worker sets on the requests it builds for the room's HTTP routes
/// (reads, stats, admin); a socket's identity travels in [`handover::HEADER`].
pub const USER_HEADER: &str = "x-clubhouse-user";
pub const ROOM_HEADER: &str = "x-clubhouse-room";
/// `member` when the Worker checked membership of a private room, `public` otherwise.
pub const ACCESS_HEADER: &str = "x-clubhouse-access";
/// On the room's 403 to a request checked only as public: the room is private, and the caller
/// should look up the user's membership (D1) and ask again as `member`.
pub const PRIVATE_HEADER: &str = "x-clubhouse-private";

/// How often expired rows of `badges` are dropped (seconds).
const PRUNE_BADGES_EVERY_SECS: i64 = 60;

/// Messages sent on connect without `since`.
pub const RECENT_HISTORY: i64 = 50;
/// Most messages sent on connect with `since`; beyond that the history frame says `truncated`.
pub const MAX_CATCH_UP: i64 = 1000;
/// Largest page of `GET /rooms/{id}/messages`.
pub const MAX_PAGE: i64 = 100;

/// WebSocket close code for policy violations: removed, revoked, flooding.
pub const CLOSE_POLICY: u16 = 1008;

/// Who a socket belongs to; stored as its hibernation attachment. It is kept as one compact
/// JSON string (about 40 bytes of the 16 KB allowed): reading one JS string and parsing it in
/// WASM is cheaper, per message, than walking a JS object field by field.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Member {
    #[serde(rename = "u")]
    user: String,
    /// Connection id: keys the in-memory rate bucket.
    #[serde(rename = "c")]
    conn: u32,
}

impl Member {
    fn of(ws: &WebSocket) -> Option<Member> {
        let text = ws.deserialize_attachment::<String>().ok()??;
        serde_json::from_str(&text).ok()
    }

    fn attach_to(&self, ws: &WebSocket) -> Result<()> {
        ws.serialize_attachment(serde_json::to_string(self)?)
    }
}

fn user_tag(user: &str) -> String {
    format!("u:{user}")
}
fn jti_tag(jti: &str) -> String {
    format!("j:{jti}")
}

// The fan-out loop runs in JS: per recipient it is one `send` of a string the runtime already
// holds, with no crossing between WASM and JS and no per-socket handle for Rust to manage.
// This is the hot path of the whole service (a message to N members is N sends).
//
// The list of sockets is kept between broadcasts: `getWebSockets()` builds a new array of N
// wrapped sockets on every call, per message. It is dropped (`forgetSockets`) when a socket is
// accepted, so a new member never misses a message, and when sockets go; a socket that closed
// while listed makes its `send` throw, as it would from a fresh list, and the list is dropped.
// Keyed by the object's `DurableObjectState`, which a hibernated object gets anew on wake-up.
#[wasm_bindgen(inline_js = r#"
const listed = new WeakMap();
function sockets(state) {
  let list = listed.get(state);
  if (list === undefined) {
    list = state.getWebSockets();
    listed.set(state, list);
  }
  return list;
}
export function broadcast(state, frame, except) {
  const skip = except === undefined ? null : except;
  let sent = 0, closed = false;
  for (const ws of sockets(state)) {
    if (skip !== null && skip.includes(ws)) continue;
    // A closing socket throws: the others still get the frame, and the next list leaves it out.
    try { ws.send(frame); sent++; } catch (_) { closed = true; }
  }
  if (closed) listed.delete(state);
  return sent;
}
export function forgetSockets(state) {
  listed.delete(state);
}
export function socketCount(state, tag) {
  return state.getWebSockets(tag).length;
}"#)]
extern "C" {
    #[wasm_bindgen(js_name = broadcast)]
    fn broadcast_js(state: &JsValue, frame: &str, except: &JsValue) -> u32;
    /// Drops the list of sockets `broadcast` keeps: call after every accept and close.
    #[wasm_bindgen(js_name = forgetSockets)]
    fn forget_sockets_js(state: &JsValue);
    /// How many sockets the room holds (with `tag`: how many carry it), without a WASM
    /// handle per socket.
    #[wasm_bindgen(js_name = socketCount)]
    fn socket_count_js(state: &JsValue, tag: Option<&str>) -> u32;
}

/// Sends one serialised frame to every socket of the room (`state`: the runtime's
/// `DurableObjectState`); returns how many got it.
pub(crate) fn broadcast_to_all(state: &JsValue, frame: &str) -> u32 {
    broadcast_js(state, frame, &JsValue::UNDEFINED)
}

#[durable_object(fetch)]
pub struct ChatRoom {
    state: State,
    env: Env,
    /// The object's SQLite handle, looked up once rather than per message.
    sql: SqlStorage,
    /// The room's name (`id_from_name`), known to the runtime even after hibernation.
    name: String,
    config: Rc<RoomConfig>,
    /// Accepted messages on their way to storage and to the members, in groups; owns the
    /// message ids (the newest is reloaded from storage on every wake-up).
    outbox: Rc<Outbox>,
    /// Usernames online, built from the live sockets on first use after a wake-up.
    online: RefCell<Option<BTreeSet<String>>>,
    /// Per-connection rate buckets.
    limiters: RefCell<HashMap<u32, ConnectionLimiter>>,
    /// The `meta` table, read once per wake-up: only this object writes it.
    meta: RefCell<RoomMeta>,
    /// Join/leave announcements: when the last went out, and the batch waiting for its flush.
    presence: Rc<Presence>,
    /// `ws_connect` and `ws_close` entries waiting for their line.
    connect_log: Rc<SocketLog>,
    close_log: Rc<SocketLog>,
    /// Badges the session ledger has admitted here (`admissions.rs`), loaded from the `badges`
    /// table on the first connect after a wake-up (message wake-ups never need it).
    admissions: RefCell<Option<Admissions>>,
    /// When expired `badges` rows were last dropped (seconds).
    badges_pruned_at: Cell<i64>,
    /// What the first connect of a burst leaves for a moment later (`room_store.rs`).
    writes: Rc<ConnectWrites>,
    /// Whether the room's tables exist (`room_store.rs`).
    schema: Rc<Schema>,
    /// How many sockets the room holds: counted once per wake-up (the runtime builds its list
    /// of sockets anew on every call, so counting on every connect would cost O(n) each), then
    /// kept by accepts; any socket closing or failing makes the next use count again.
    open_sockets: Cell<Option<usize>>,
    /// The next connection id (random start per wake-up, then sequential: unique per room).
    next_conn: Cell<Option<u32>>,
}

/// Whether the room has been used or claimed, and by whom. Stored as key/value rows in `meta`.
#[derive(Debug, Default)]
struct RoomMeta {
    used: bool,
    private: bool,
    owner: Option<String>,
}

impl RoomMeta {
    fn apply(&mut self, key: &str, value: &str) {
        match key {
            "used" => self.used = value == "1",
            "private" => self.private = value == "1",
            "owner" => self.owner = Some(value.to_owned()),
            _ => {}
        }
    }
}

#[derive(Deserialize)]
struct MessageRow {
    id: i64,
    username: String,
    content: String,
    ts: i64,
}

impl DurableObject for ChatRoom {
    fn new(state: State, env: Env) -> Self {
        crate::log::set_level_from_env(&env);
        let sql = state.storage().sql();
        // Read-only on a wake-up. A new room creates its tables only with its first write
        // (`room_store.rs`): tables created here would be a commit of their own before the
        // first request runs.
        #[derive(Deserialize)]
        struct Table {
            name: String,
        }
        let tables: Vec<String> = sql
            .exec(
                "SELECT name FROM sqlite_master WHERE type = 'table'
                 AND name IN ('messages', 'meta', 'badges')",
                None,
            )
            .and_then(|c| c.to_array::<Table>())
            .expect("listing the room's tables")
            .into_iter()
            .map(|t| t.name)
            .collect();
        let has = |name: &str| tables.iter().any(|t| t == name);
        #[derive(Deserialize)]
        struct MaxId {
            last: i64,
        }
        let last = if has("messages") {
            sql.exec("SELECT COALESCE(MAX(id), 0) AS last FROM messages", None)
                .and_then(|c| c.one::<MaxId>())
                .map(|r| r.last)
                .expect("reading the last message id")
        } else {
            0
        };
        #[derive(Deserialize)]
        struct MetaRow {
            key: String,
            value: String,
        }
        let mut meta = RoomMeta::default();
        if has("meta") {
            let rows = sql
                .exec("SELECT key, value FROM meta", None)
                .and_then(|c| c.to_array::<MetaRow>())
                .expect("reading the room's metadata");
            for row in rows {
                meta.apply(&row.key, &row.value);
            }
        }
        let schema = Schema::new(sql.clone(), SCHEMA.iter().all(|(name, _)| has(name)));
        // Answer heartbeats without waking the object (and without billing a wake-up).
        if let Ok(pair) = worker::worker_sys::WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        let config = RoomConfig::from_env(&env);
        let raw_state = AsRef::<JsValue>::as_ref(state.as_raw()).clone();
        let name = state.id().name().unwrap_or_default();
        Self {
            outbox: Outbox::new(sql.clone(), raw_state.clone(), config.history_cap, last),
            writes: ConnectWrites::new(sql.clone(), Rc::clone(&schema)),
            presence: Rc::new(Presence {
                batch: RefCell::new(PresenceBatch::new(config.presence_batch_ms)),
                state: raw_state,
                broadcast_max: config.presence_broadcast_max,
                flush: Deferred::default(),
            }),
            connect_log: SocketLog::new("ws_connect", &name),
            close_log: SocketLog::new("ws_close", &name),
            name,
            sql,
            state,
            config,
            online: RefCell::new(None),
            limiters: RefCell::new(HashMap::new()),
            meta: RefCell::new(meta),
            admissions: RefCell::new(None),
            badges_pruned_at: Cell::new(0),
            schema,
            open_sockets: Cell::new(None),
            next_conn: Cell::new(None),
            env,
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        if req.method() == Method::Get && req.path() == "/connect" {
            // The hot path: everything it needs is in the handover, no URL to parse.
            return match req
                .headers()
                .get(handover::HEADER)?
                .as_deref()
                .and_then(Handover::decode)
            {
                Some(handover) => self.connect(handover).await,
                None => refuse(400, "missing identity"),
            };
        }
        let url = req.url()?;
        let query = |name: &str| http::query_param(&url, name);
        match (req.method(), url.path()) {
            (Method::Post, "/claim") => Ok(self.claim(query("owner").unwrap_or_default())),
            (Method::Get, "/info") => Ok(http::json(200, &self.info())),
            (Method::Get, "/messages" | "/members") if self.private_and_not_member(&req) => {
                refuse(403, "this room is private")
            }
            (Method::Get, "/messages") => Ok(self.page(query("before"), query("limit"))),
            (Method::Get, "/members") => Ok(http::json(
                200,
                &serde_json::json!({ "room_id": self.name, "users": self.online_users() }),
            )),
            (Method::Post, "/kick") => {
                let user = query("user").unwrap_or_default();
                let closed = self.close_tagged(&user_tag(&user), "removed from room");
                Ok(http::json(200, &serde_json::json!({ "closed": closed })))
            }
            (Method::Post, "/revoke") => {
                let closed = match (query("jti"), query("user")) {
                    (Some(jti), _) => {
                        self.forget_badges(Revoked::Badge(&jti))?;
                        self.close_tagged(&jti_tag(&jti), "token revoked")
                    }
                    (None, Some(user)) => {
                        self.forget_badges(Revoked::User(&user))?;
                        self.close_tagged(&user_tag(&user), "token revoked")
                    }
                    _ => 0,
                };
                Ok(http::json(200, &serde_json::json!({ "closed": closed })))
            }
            (Method::Get, "/stats") => Ok(http::json(200, &self.stats())),
            _ => Ok(http::json(
                404,
                &serde_json::json!({ "detail": "Not Found" }),
            )),
        }
    }
}

// The Hibernation API handlers, exported by hand instead of by `#[durable_object(websocket)]`.
// That macro wraps every handler in a Rust future and a JS promise (a promise, a microtask and a
// task per frame), about 15 % of a message's CPU in the room's profile (`bench/profile.sh`
// with one client). Nothing here awaits, so the handlers run to completion synchronously; the
// only deferred work (the presence and log flushes, the outbox) goes on timers (`timer.rs`).
#[wasm_bindgen]
impl ChatRoom {
    #[wasm_bindgen(js_name = webSocketMessage)]
    pub fn on_socket_message(
        &self,
        ws: web_sys::WebSocket,
        message: JsValue,
    ) -> std::result::Result<(), JsValue> {
        let ws = WebSocket::from(ws);
        match message.as_string() {
            Some(text) => self.on_text(&ws, text).map_err(JsValue::from),
            None => {
                send_quietly(
                    &ws,
                    &error_frame("binary frames are not supported; send JSON text"),
                );
                Ok(())
            }
        }
    }

    #[wasm_bindgen(js_name = webSocketClose)]
    pub fn on_socket_close(
        &self,
        ws: web_sys::WebSocket,
        code: u16,
        _reason: JsValue,
        _was_clean: JsValue,
    ) {
        let ws = WebSocket::from(ws);
        // Complete the closing handshake. 1005/1006 are reserved and cannot be sent back.
        let code = match code {
            1005 | 1006 => 1000,
            c => c,
        };
        let _ = ws.close(Some(code), Some("closing"));
        self.forget(std::slice::from_ref(&ws), code);
    }

    #[wasm_bindgen(js_name = webSocketError)]
    pub fn on_socket_error(&self, ws: web_sys::WebSocket, error: JsValue) {
        let ws = WebSocket::from(ws);
        let error = worker::Error::from(error);
        crate::log::event("warn", "ws_error", &[("error", &error.to_string())]);
        let _ = ws.close(Some(1011), Some("socket error"));
        self.forget(std::slice::from_ref(&ws), 1011);
    }
}

/// The room's join/leave batch (`presence.rs`), and the timer that sends it. Lost on eviction
/// (see `presence.rs`).
struct Presence {
    batch: RefCell<PresenceBatch>,
    /// The runtime's `DurableObjectState`, whose sockets a batch goes to.
    state: JsValue,
    broadcast_max: usize,
    flush: Deferred,
}

impl Presence {
    /// The flush timer fired: sends the batched joins and leaves as one `presence_changes` frame
    /// to every socket (none if they all cancelled out, or if the room has grown past
    /// `PRESENCE_BROADCAST_MAX` meanwhile: above it nothing is announced).
    fn send_batch(self: &Rc<Self>) {
        self.flush.fired();
        let changes = self.batch.borrow_mut().flush();
        if changes.is_empty() || socket_count_js(&self.state, None) as usize > self.broadcast_max {
            return;
        }
        let frame = ServerFrame::PresenceChanges {
            joined: &changes.joined,
            left: &changes.left,
        }
        .to_json();
        if broadcast_to_all(&self.state, &frame) > 0 {
            self.batch
                .borrow_mut()
                .announced(worker::Date::now().as_millis() as f64);
        }
    }
}

/// The room's `ws_connect` or `ws_close` entries waiting for their line (`log::LineBatch`), and
/// the timer that writes it.
struct SocketLog {
    event: &'static str,
    room: String,
    batch: RefCell<LineBatch>,
    flush: Deferred,
}

impl SocketLog {
    fn new(event: &'static str, room: &str) -> Rc<Self> {
        Rc::new(Self {
            event,
            room: room.to_owned(),
            batch: RefCell::new(LineBatch::new(log::BATCH_WINDOW_MS)),
            flush: Deferred::default(),
        })
    }

    /// Logs one socket's line, or queues it for the room's next line of this event, whose
    /// flush this may schedule. The entry gets `at`, the time now.
    fn add(self: &Rc<Self>, entry: impl FnOnce() -> serde_json::Value) {
        if !log::enabled(log::Level::Info) {
            return;
        }
        let now = worker::Date::now().as_millis() as f64;
        let mut entry = entry();
        entry["at"] = (now as u64).into();
        let step = self.batch.borrow_mut().add(entry, now);
        match step {
            Step::Write(entries) => log::socket_batch(self.event, &[("room", &self.room)], entries),
            Step::Wait => {}
            Step::Schedule { delay_ms } => {
                self.flush
                    .schedule(self, delay_ms.ceil() as u32, Self::write_due)
            }
        }
    }

    /// The flush timer fired: writes the entries that are due.
    fn write_due(self: &Rc<Self>) {
        self.flush.fired();
        let entries = self
            .batch
            .borrow_mut()
            .take(worker::Date::now().as_millis() as f64);
        log::socket_batch(self.event, &[("room", &self.room)], entries);
    }
}

/// What the checks before an accept found out.
struct Opening {
    /// Sockets in the room before this one.
    room_sockets: usize,
    /// Whether the user already had a socket here.
    was_online: bool,
}

/// What a `/revoke` from a logout covers.
#[derive(Clone, Copy)]
enum Revoked<'a> {
    /// One badge, by its `jti`.
    Badge(&'a str),
    /// Every badge of the user issued so far.
    User(&'a str),
}

fn header(req: &Request, name: &str) -> String {
    req.headers().get(name).ok().flatten().unwrap_or_default()
}

fn refuse(status: u16, detail: &str) -> Result<Response> {
    Ok(http::json(status, &serde_json::json!({ "detail": detail })))
}

/// Sends to one socket, ignoring a socket that is already closing.
fn send_quietly(ws: &WebSocket, text: &str) {
    let _ = ws.send_with_str(text);
}

impl ChatRoom {
    /// One text frame from a member: rate limit, validate, store, broadcast. Whatever the frame,
    /// the connection and the room keep working; a bad frame gets an error frame back.
    fn on_text(&self, ws: &WebSocket, text: String) -> Result<()> {
        if text == "ping" {
            // Normally the auto-response answers; this covers a frame that reached us anyway.
            send_quietly(ws, "pong");
            return Ok(());
        }
        let Some(member) = Member::of(ws) else {
            send_quietly(ws, &error_frame("connection has no identity"));
            return Ok(());
        };
        let now = worker::Date::now().as_millis();
        match self.rate_check(member.conn, now as f64) {
            Verdict::Allow => {}
            Verdict::Refuse { retry_after_ms } => {
                let frame = ServerFrame::Error {
                    detail: "rate limited",
                    retry_after_ms: Some(retry_after_ms),
                };
                send_quietly(ws, &frame.to_json());
                return Ok(());
            }
            Verdict::Disconnect => {
                crate::log::event(
                    "warn",
                    "rate_limited",
                    &[
                        ("username", &member.user),
                        ("room", &self.name),
                        ("action", "closed"),
                    ],
                );
                let _ = ws.close(Some(CLOSE_POLICY), Some("rate limit exceeded"));
                return Ok(());
            }
        }
        let message = match protocol::parse_client_message(&text, &self.name) {
            Ok(m) => m,
            Err(invalid) => {
                send_quietly(ws, &error_frame(&invalid.0));
                return Ok(());
            }
        };
        // The first write ever creates the tables, in this event's commit.
        self.schema.ensure()?;
        let id = self.outbox.next_id();
        let ts = now as i64;
        let frame = ServerFrame::Message {
            id,
            room_id: &self.name,
            username: &member.user,
            content: &message.content,
            ts,
        }
        .to_json();
        self.outbox.accept(
            Outgoing {
                id,
                username: member.user,
                content: message.content.into_owned(),
                ts,
                frame,
                sender: ws.clone(),
            },
            member.conn,
        );
        Ok(())
    }

    /// The object is the authority on privacy: a room claimed private after the Worker looked
    /// it up still refuses a request that was only checked as public.
    fn private_and_not_member(&self, req: &Request) -> bool {
        self.refuses_outsiders(header(req, ACCESS_HEADER) == "member")
    }

    fn refuses_outsiders(&self, member: bool) -> bool {
        self.meta.borrow().private && !member
    }

    /// Writes one metadata entry to storage and to the in-memory copy.
    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.schema.ensure()?;
        self.sql.exec(UPSERT_META, vec![key.into(), value.into()])?;
        self.meta.borrow_mut().apply(key, value);
        Ok(())
    }

    /// Accepts a WebSocket for a member whose badge signature the Worker has verified: asks the
    /// session ledger to admit the badge here unless it already did (`admissions.rs`). Everything
    /// from the last check to the return runs without an `await`, so no message can slip in
    /// between the history we send and the live frames that follow: nothing lost, nothing twice.
    async fn connect(&self, handover: Handover) -> Result<Response> {
        let Some(badge) = handover.badge() else {
            return refuse(400, "missing identity");
        };
        let (user, room, jti, member) = (
            handover.user.as_str(),
            handover.room.as_str(),
            handover.jti.as_str(),
            handover.member,
        );
        if room.is_empty() || jti.is_empty() {
            return refuse(400, "missing identity");
        }
        let since = match handover.since.map(i64::try_from) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => return refuse(422, "since must be a non-negative integer"),
        };
        let mut opening = match self.may_open(user, room, member)? {
            Ok(opening) => opening,
            Err(refusal) => return Ok(refusal),
        };
        let now_secs = (worker::Date::now().as_millis() / 1000) as i64;
        if !self.with_admissions(|a| a.knows(jti, now_secs))? {
            let asked_at = worker::Date::now().as_millis() as f64;
            let max_rooms = Config::from_env(&self.env).max_rooms_per_user;
            let admission = async {
                Ledger::for_user(&self.env, user)?
                    .admit_socket(&badge, room, max_rooms)
                    .await
            };
            if let Err(refusal) = admission.await {
                return Ok(refusal.into_response());
            }
            // A logout may have reached the room while the ledger answered (it listed this room
            // only because the ledger had just recorded it).
            if self.with_admissions(|a| a.revoked_since(jti, user, asked_at))? {
                return refuse(401, "Could not validate credentials");
            }
            self.remember_badge(jti, user, badge.expires_at, now_secs)?;
            // And the room may have filled up, or been made private, meanwhile.
            opening = match self.may_open(user, room, member)? {
                Ok(opening) => opening,
                Err(refusal) => return Ok(refusal),
            };
        }
        let Opening {
            room_sockets,
            was_online,
        } = opening;
        if !self.meta.borrow().used {
            // Refused claims from now on; stored a moment later (`room_store.rs`).
            self.meta.borrow_mut().used = true;
            self.writes.mark_used();
        }

        let pair = WebSocketPair::new()?;
        let socket_member = Member {
            user: user.to_owned(),
            conn: self.new_conn_id()?,
        };
        self.state
            .accept_websocket_with_tags(&pair.server, &[&user_tag(user), &jti_tag(jti)]);
        forget_sockets_js(self.state.as_raw());
        if let Some(n) = self.open_sockets.get() {
            self.open_sockets.set(Some(n + 1));
        }
        socket_member.attach_to(&pair.server)?;

        let (messages, truncated) = self.history(since)?;
        send_quietly(
            &pair.server,
            &ServerFrame::History {
                messages: &messages,
                truncated,
            }
            .to_json(),
        );
        let users = {
            let mut online = self.online_set();
            online.insert(user.to_owned());
            online.iter().cloned().collect::<Vec<_>>()
        };
        send_quietly(
            &pair.server,
            &ServerFrame::Presence { users: &users }.to_json(),
        );
        if !was_online && room_sockets < self.config.presence_broadcast_max {
            self.announce(user, true, std::slice::from_ref(&pair.server));
        }
        // After its own join: the new socket saw its user online, the state after that join.
        self.presence.batch.borrow_mut().snapshot_sent(user);
        self.connect_log.add(|| {
            serde_json::json!({
                "username": user,
                "request_id": handover.request_id,
            })
        });

        let mut response = Response::from_websocket(pair.client)?;
        if handover.bearer {
            response
                .headers_mut()
                .set("Sec-WebSocket-Protocol", "bearer")?;
        }
        Ok(response)
    }

    /// Whether `user` may open one more socket here now: the room's privacy, and its limits.
    fn may_open(
        &self,
        user: &str,
        room: &str,
        member: bool,
    ) -> Result<std::result::Result<Opening, Response>> {
        if self.refuses_outsiders(member) {
            let mut refusal = refuse(403, "this room is private")?;
            refusal.headers_mut().set(PRIVATE_HEADER, "1")?;
            return Ok(Err(refusal));
        }
        let room_sockets = self.socket_count();
        if room_sockets >= self.config.max_sockets_per_room {
            crate::log::event(
                "warn",
                "ws_refused",
                &[("reason", "room_full"), ("room", room)],
            );
            return refuse(503, "room is full").map(Err);
        }
        let user_sockets = socket_count_js(self.state.as_raw(), Some(&user_tag(user))) as usize;
        if user_sockets >= self.config.max_sockets_per_user {
            crate::log::event(
                "warn",
                "ws_refused",
                &[
                    ("reason", "too_many_sockets"),
                    ("username", user),
                    ("room", room),
                ],
            );
            return refuse(429, "too many connections to this room for this user").map(Err);
        }
        Ok(Ok(Opening {
            room_sockets,
            was_online: user_sockets > 0,
        }))
    }

    /// Runs `f` on the room's admitted badges, loading them from storage first if needed.
    fn with_admissions<T>(&self, f: impl FnOnce(&mut Admissions) -> T) -> Result<T> {
        let mut admissions = self.admissions.borrow_mut();
        if admissions.is_none() {
            *admissions = Some(self.load_admissions()?);
        }
        Ok(f(admissions.as_mut().expect("loaded above")))
    }

    fn load_admissions(&self) -> Result<Admissions> {
        if !self.schema.ready() {
            // No `badges` table yet: nothing was ever admitted here (and no write now, which
            // would hold the ledger call back until it is committed).
            return Ok(Admissions::default());
        }
        #[derive(Deserialize)]
        struct Row {
            jti: String,
            username: String,
            exp: i64,
        }
        let rows = self
            .sql
            .exec("SELECT jti, username, exp FROM badges", None)?
            .to_array::<Row>()?;
        Ok(Admissions::from_rows(
            rows.into_iter().map(|r| (r.jti, r.username, r.exp)),
        ))
    }

    /// The ledger admitted `jti` here: remembered in memory at once and in storage shortly
    /// after (`room_store.rs`), where expired rows are dropped now and then.
    fn remember_badge(&self, jti: &str, user: &str, expires_at: i64, now_secs: i64) -> Result<()> {
        self.writes.save_badge(jti, user, expires_at);
        self.with_admissions(|a| a.admitted(jti, user, expires_at))?;
        if now_secs - self.badges_pruned_at.get() >= PRUNE_BADGES_EVERY_SECS {
            self.writes.prune_badges(now_secs);
            self.with_admissions(|a| a.prune(now_secs))?;
            self.badges_pruned_at.set(now_secs);
        }
        Ok(())
    }

    /// A revocation reached the room: forgets the badge or every badge of the user, so their
    /// next socket goes to the ledger.
    fn forget_badges(&self, revoked: Revoked) -> Result<()> {
        let (column, value) = match revoked {
            Revoked::Badge(jti) => ("jti", jti),
            Revoked::User(user) => ("username", user),
        };
        // Not written later either.
        self.writes.drop_badges(|jti, user| match revoked {
            Revoked::Badge(j) => jti == j,
            Revoked::User(u) => user == u,
        });
        // Without the table nothing was ever admitted here; no need to create it now.
        if self.schema.ready() {
            self.sql.exec(
                &format!("DELETE FROM badges WHERE {column} = ?"),
                vec![value.into()],
            )?;
        }
        let now_ms = worker::Date::now().as_millis() as f64;
        self.with_admissions(|a| match revoked {
            Revoked::Badge(jti) => a.revoke_badge(jti, now_ms),
            Revoked::User(user) => a.revoke_user(user, now_ms),
        })
    }

    /// History sent on connect: the last 50 messages, or every message after `since` (the
    /// newest 1000 if more were missed, with `truncated` so the client can page back).
    fn history(&self, since: Option<i64>) -> Result<(Vec<ChatMessage>, bool)> {
        let (after, limit) = match since {
            Some(s) => (s, MAX_CATCH_UP),
            None => (0, RECENT_HISTORY),
        };
        // Nothing newer than `after` exists (an empty room, or a client that is up to date on
        // reconnect): no query, and nothing missed.
        if after >= self.outbox.last_id() {
            return Ok((Vec::new(), false));
        }
        // Stored messages not yet sent reach the new socket live (`outbox.rs`).
        let mut rows = self.query_messages(
            "id > ? AND id <= ? ORDER BY id DESC LIMIT ?",
            vec![
                after.into(),
                self.outbox.sent_id().into(),
                (limit + 1).into(),
            ],
        )?;
        let mut truncated = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        rows.reverse();
        // Ids have no gaps, so a first id past `since + 1` means the history cap already
        // dropped messages the client missed: it must know.
        if let (Some(since), Some(first)) = (since, rows.first()) {
            truncated |= first.id > since + 1;
        }
        Ok((rows, truncated))
    }

    fn query_messages(
        &self,
        condition: &str,
        bindings: Vec<SqlStorageValue>,
    ) -> Result<Vec<ChatMessage>> {
        if !self.schema.ready() {
            return Ok(Vec::new()); // no table yet: nothing was ever stored
        }
        let rows = self
            .sql
            .exec(
                &format!("SELECT id, username, content, ts FROM messages WHERE {condition}"),
                bindings,
            )?
            .to_array::<MessageRow>()?;
        Ok(rows
            .into_iter()
            .map(|r| ChatMessage {
                id: r.id,
                room_id: self.name.clone(),
                username: r.username,
                content: r.content,
                ts: r.ts,
            })
            .collect())
    }

    /// `GET /rooms/{id}/messages?before=&limit=`: a page of history, oldest first.
    fn page(&self, before: Option<String>, limit: Option<String>) -> Response {
        let before = match before.map(|b| b.parse::<i64>()) {
            // The largest integer JS holds exactly (ids never get near it).
            None => (1i64 << 53) - 1,
            Some(Ok(b)) if b >= 0 => b,
            Some(_) => {
                return http::json(
                    422,
                    &serde_json::json!({ "detail": "before must be a non-negative integer" }),
                )
            }
        };
        let limit = match limit.map(|l| l.parse::<i64>()) {
            None => RECENT_HISTORY,
            Some(Ok(l)) if (1..=MAX_PAGE).contains(&l) => l,
            Some(_) => {
                return http::json(
                    422,
                    &serde_json::json!({ "detail": "limit must be an integer from 1 to 100" }),
                )
            }
        };
        match self.query_messages(
            "id < ? ORDER BY id DESC LIMIT ?",
            vec![before.into(), (limit + 1).into()],
        ) {
            Ok(mut rows) => {
                let has_more = rows.len() as i64 > limit;
                rows.truncate(limit as usize);
                rows.reverse();
                http::json(
                    200,
                    &serde_json::json!({ "room_id": self.name, "messages": rows, "has_more": has_more }),
                )
            }
            Err(e) => {
                crate::log::event("error", "error", &[("cause", &e.to_string())]);
                http::json(
                    500,
                    &serde_json::json!({ "detail": "could not read history" }),
                )
            }
        }
    }

    /// Makes an unused room private to `owner`. Refused once anyone has used or claimed it.
    fn claim(&self, owner: String) -> Response {
        if owner.is_empty() {
            return http::json(400, &serde_json::json!({ "detail": "missing owner" }));
        }
        if self.meta.borrow().used || self.meta.borrow().owner.is_some() {
            return http::json(409, &serde_json::json!({ "detail": "room already exists" }));
        }
        let stored = self
            .set_meta("owner", &owner)
            .and_then(|_| self.set_meta("private", "1"))
            .and_then(|_| self.set_meta("used", "1"));
        match stored {
            Ok(()) => http::json(201, &serde_json::json!({ "owner": owner })),
            Err(e) => {
                crate::log::event("error", "error", &[("cause", &e.to_string())]);
                http::json(
                    500,
                    &serde_json::json!({ "detail": "could not create room" }),
                )
            }
        }
    }

    fn info(&self) -> serde_json::Value {
        let meta = self.meta.borrow();
        serde_json::json!({ "private": meta.private, "owner": meta.owner })
    }

    fn stats(&self) -> serde_json::Value {
        #[derive(Deserialize)]
        struct Counts {
            stored: i64,
            oldest: Option<i64>,
            newest: Option<i64>,
            last_ts: Option<i64>,
        }
        let counts = if self.schema.ready() {
            self.sql
                .exec(
                    "SELECT COUNT(*) AS stored, MIN(id) AS oldest, MAX(id) AS newest, MAX(ts) AS last_ts FROM messages",
                    None,
                )
                .and_then(|c| c.one::<Counts>())
                .ok()
        } else {
            None // no table yet: nothing was ever stored
        };
        // How well messages were grouped into commits (`outbox.rs`).
        let (stored, groups) = self.outbox.stored_and_groups();
        serde_json::json!({
            "room_id": self.name,
            "open_sockets": self.socket_count(),
            "users_online": self.online_users().len(),
            "messages_stored": counts.as_ref().map_or(0, |c| c.stored),
            "oldest_id": counts.as_ref().and_then(|c| c.oldest),
            "newest_id": counts.as_ref().and_then(|c| c.newest),
            "last_message_ts": counts.as_ref().and_then(|c| c.last_ts),
            "storage_bytes": self.sql.database_size(),
            "since_wake": { "messages_stored": stored, "message_commits": groups },
        })
    }

    fn socket_count(&self) -> usize {
        if let Some(n) = self.open_sockets.get() {
            return n;
        }
        let n = self.listed_sockets();
        self.open_sockets.set(Some(n));
        n
    }

    /// The sockets the runtime lists now, closing ones included; O(n), not cached.
    fn listed_sockets(&self) -> usize {
        socket_count_js(self.state.as_raw(), None) as usize
    }

    /// A connection id for a new socket: keys its rate bucket, so it must not repeat in the
    /// room. A random start per wake-up (one call for random bytes, not one per connect), then
    /// sequential.
    fn new_conn_id(&self) -> Result<u32> {
        let id = match self.next_conn.get() {
            Some(id) => id,
            None => {
                let mut bytes = [0u8; 4];
                getrandom::getrandom(&mut bytes)
                    .map_err(|e| worker::Error::RustError(e.to_string()))?;
                u32::from_le_bytes(bytes)
            }
        };
        self.next_conn.set(Some(id.wrapping_add(1)));
        Ok(id)
    }

    /// Sends one serialised frame to every socket in the room but `except`; returns how many
    /// got it. The frame crosses from Rust to JS once, whatever the number of recipients.
    fn broadcast_except(&self, frame: &str, except: &[WebSocket]) -> u32 {
        let except = if except.is_empty() {
            JsValue::UNDEFINED
        } else {
            except
                .iter()
                .map(|ws| JsValue::from(ws.as_ref()))
                .collect::<js_sys::Array>()
                .into()
        };
        broadcast_js(self.state.as_raw(), frame, &except)
    }

    /// Announces that `user` joined (their first socket opened) or left (their last closed):
    /// at once as a `join`/`leave` frame to everyone but `except` in a quiet room, otherwise in
    /// the next `presence_changes` batch (`presence.rs`), whose flush this may schedule.
    fn announce(&self, user: &str, joined: bool, except: &[WebSocket]) {
        let now = worker::Date::now().as_millis() as f64;
        let decision = self.presence.batch.borrow_mut().record(user, joined, now);
        match decision {
            Decision::SendNow => {
                let frame = if joined {
                    ServerFrame::Join { username: user }
                } else {
                    ServerFrame::Leave { username: user }
                };
                if self.broadcast_except(&frame.to_json(), except) > 0 {
                    self.presence.batch.borrow_mut().announced(now);
                }
            }
            Decision::Queued => {}
            Decision::Schedule { delay_ms } => {
                self.presence.flush.schedule(
                    &self.presence,
                    delay_ms.ceil() as u32,
                    Presence::send_batch,
                );
            }
        }
    }

    fn rate_check(&self, conn: u32, now: f64) -> Verdict {
        let mut limiters = self.limiters.borrow_mut();
        limiters
            .entry(conn)
            .or_insert_with(|| {
                ConnectionLimiter::new(self.config.rate_per_sec, self.config.rate_burst, now)
            })
            .check(now)
    }

    /// The set of usernames online, rebuilt from the sockets' tags after a wake-up.
    fn online_set(&self) -> std::cell::RefMut<'_, BTreeSet<String>> {
        let mut online = self.online.borrow_mut();
        if online.is_none() {
            let users = self
                .state
                .get_websockets()
                .iter()
                .flat_map(|ws| self.state.get_tags(ws))
                .filter_map(|tag| tag.strip_prefix("u:").map(str::to_owned))
                .collect();
            *online = Some(users);
        }
        std::cell::RefMut::map(online, |o| o.as_mut().expect("filled above"))
    }

    fn online_users(&self) -> Vec<String> {
        self.online_set().iter().cloned().collect()
    }

    /// Bookkeeping when sockets go: their rate buckets, and a `leave` for each user who has no
    /// socket left. Sockets being closed may still be listed by the runtime, hence `closing`.
    fn forget(&self, closing: &[WebSocket], code: u16) {
        // Counted and listed again on next use, by when the runtime no longer lists these
        // sockets (it may still list them now: the count below is not kept).
        self.open_sockets.set(None);
        forget_sockets_js(self.state.as_raw());
        let members: Vec<Member> = closing.iter().filter_map(Member::of).collect();
        for member in &members {
            self.limiters.borrow_mut().remove(&member.conn);
            self.outbox.forget(member.conn);
            self.close_log.add(|| {
                serde_json::json!({
                    "username": member.user,
                    "code": code,
                })
            });
        }
        let users: BTreeSet<&str> = members.iter().map(|m| m.user.as_str()).collect();
        for user in users {
            let still_online = self
                .state
                .get_websockets_with_tag(&user_tag(user))
                .iter()
                .any(|other| !closing.contains(other));
            if !still_online
                && self.online_set().remove(user)
                && self.listed_sockets() <= self.config.presence_broadcast_max
            {
                self.announce(user, false, closing);
            }
        }
    }

    /// Closes every socket with `tag` (1008), e.g. a removed member's or a revoked badge's.
    fn close_tagged(&self, tag: &str, reason: &str) -> usize {
        let sockets = self.state.get_websockets_with_tag(tag);
        for ws in &sockets {
            let _ = ws.close(Some(CLOSE_POLICY), Some(reason));
        }
        self.forget(&sockets, CLOSE_POLICY);
        sockets.len()
    }
}
