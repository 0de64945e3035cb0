//! The room: one Durable Object per room name, holding that room's WebSockets.
//!
//! Sockets are accepted with the Hibernation API, so an idle room costs nothing while its
//! members stay connected: the runtime evicts the object from memory and wakes it for the next
//! frame. Anything that must survive that lives in SQLite storage (messages, room metadata) or
//! in the socket's attachment and tags (who it belongs to), never only in struct fields. The
//! in-memory parts are caches that are rebuilt, or are harmless to lose.
//!
//! Only the Worker talks to this object (`client.rs`): it verifies the badge and room access
//! first and passes the identity in what it builds itself (for a socket: the handover header).
//!
//! This file holds the object's routes and hibernation handlers; each concern is a part it
//! owns: `sockets.rs` (attachments, tags, fan-out, who is online), `storage.rs` (every SQL
//! statement), `outbox.rs` (storing and sending the log in groups) with `pace.rs`, `changes.rs`
//! (edits, deletions, reactions), `typing.rs`, `presence.rs` (join/leave announcements),
//! `admissions.rs` (badges the ledger admitted here), `rate_limit.rs` (per-user buckets),
//! `moderation.rs` (moderators, bans, mutes, slow mode, the audit log), `reads.rs` (read
//! markers and receipts), `activity.rs` (what the room writes behind to D1 for its members'
//! lists of rooms).

pub mod activity;
pub mod admissions;
pub mod changes;
pub mod client;
pub mod handover;
pub mod moderation;
pub mod outbox;
pub mod pace;
pub mod presence;
pub mod rate_limit;
pub mod reads;
pub mod sockets;
pub mod storage;
pub mod typing;

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use worker::worker_sys::web_sys;
use worker::{durable_object, DurableObject, Env, Method, Request, Response, Result, State};
use worker::{WebSocket, WebSocketPair};

use crate::config::{self, Config, RoomConfig};
use crate::http::{self, ApiError, ApiResult, Boxed};
use crate::ledger::Ledger;
use crate::log::{self, SocketLog};
use crate::protocol::{
    self, error_frame, ChatMessage, ClientFrame, ClientMessage, CloseReason, ErrorFrame,
    HistoryItems, LogItem, ServerFrame,
};
use activity::Activity;
use admissions::{AdmittedBadges, Revoked};
use changes::{Change, Changes};
use client::{ACCESS_HEADER, PRIVATE_HEADER, USER_HEADER};
use handover::Handover;
use moderation::{Effect, Moderation, PostRefusal, Role};
use outbox::{Outbox, Outgoing};
use presence::Presence;
use rate_limit::{RateLimits, Verdict};
use reads::Reads;
use sockets::{send_quietly, server_close, Member, Sockets};
use storage::{ConnectWrites, RoomMeta, RoomStorage};
use typing::{AfterTyping, Typing};

/// Messages sent on connect without `since`.
pub const RECENT_HISTORY: i64 = 50;
/// Most messages sent on connect with `since`; beyond that the history frame says `truncated`.
pub const MAX_CATCH_UP: i64 = 1000;
/// Largest page of `GET /rooms/{id}/messages`.
pub const MAX_PAGE: i64 = 100;
/// How long a message's `client_id` makes a resend of it idempotent (milliseconds).
pub const DEDUPE_WINDOW_MS: i64 = 10 * 60 * 1000;

#[durable_object(fetch)]
pub struct ChatRoom {
    env: Env,
    /// The room's name (`id_from_name`), known to the runtime even after hibernation.
    name: String,
    config: Rc<RoomConfig>,
    storage: Rc<RoomStorage>,
    /// The `meta` table, read once per wake-up: only this object writes it.
    meta: RefCell<RoomMeta>,
    sockets: Sockets,
    /// Accepted messages on their way to storage and to the members, in groups; owns the
    /// message ids (the newest is reloaded from storage on every wake-up).
    outbox: Rc<Outbox>,
    changes: Changes,
    moderation: Moderation,
    typing: Typing,
    presence: Rc<Presence>,
    badges: AdmittedBadges,
    /// What the first connect of a burst leaves for a moment later.
    writes: Rc<ConnectWrites>,
    rate_limits: RateLimits,
    /// Members' read markers (`reads.rs`).
    reads: Rc<Reads>,
    /// What the room writes behind to D1 for the members' lists of rooms (`activity.rs`).
    activity: Rc<Activity>,
    /// `ws_connect` and `ws_close` entries waiting for their line.
    connect_log: Rc<SocketLog>,
    close_log: Rc<SocketLog>,
}

impl DurableObject for ChatRoom {
    fn new(state: State, env: Env) -> Self {
        config::set_log_level(&env);
        let name = state.id().name().unwrap_or_default();
        let (storage, wake) =
            RoomStorage::open(state.storage().sql(), &name).expect("reading the room's storage");
        // Answer heartbeats without waking the object (and without billing a wake-up).
        if let Ok(pair) = worker::worker_sys::WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        let moderation = Moderation::open(
            state.storage().sql(),
            wake.meta.moderated,
            wake.meta.slow_mode_secs,
        )
        .expect("reading the room's moderation");
        let config = RoomConfig::from_env(&env);
        let raw_state = AsRef::<JsValue>::as_ref(state.as_raw()).clone();
        let sockets = Sockets::new(state);
        let writes = ConnectWrites::new(Rc::clone(&storage));
        let activity = Activity::new(&name, env.clone(), Rc::clone(&storage));
        let reads = Reads::new(
            Rc::clone(&storage),
            Rc::clone(&activity),
            sockets.fanout().clone(),
            config.presence_broadcast_max,
        );
        let outbox = Outbox::new(
            Rc::clone(&storage),
            raw_state,
            sockets.fanout().clone(),
            config.history_cap,
            (wake.last_id, wake.last_rev),
            Rc::clone(&reads),
        );
        Self {
            changes: Changes::new(Rc::clone(&storage), Rc::clone(&outbox), &name),
            moderation,
            typing: Typing::new(sockets.fanout().clone(), config.presence_broadcast_max),
            outbox,
            presence: Presence::new(
                config.presence_batch_ms,
                config.presence_broadcast_max,
                sockets.fanout().clone(),
            ),
            badges: AdmittedBadges::new(Rc::clone(&storage), Rc::clone(&writes)),
            rate_limits: RateLimits::new(config.rate_per_sec, config.rate_burst),
            reads,
            activity,
            connect_log: SocketLog::new("ws_connect", &name),
            close_log: SocketLog::new("ws_close", &name),
            meta: RefCell::new(wake.meta),
            writes,
            sockets,
            storage,
            config,
            name,
            env,
        }
    }

    /// Internal routes, called only by the Worker (`client.rs`).
    async fn fetch(&self, req: Request) -> Result<Response> {
        Ok(self
            .route(req)
            .await
            .unwrap_or_else(ApiError::into_response))
    }
}

// The Hibernation API handlers, exported by hand instead of by `#[durable_object(websocket)]`.
// That macro wraps every handler in a Rust future and a JS promise (a promise, a microtask and a
// task per frame), about 15 % of a message's CPU in the room's profile with one client. Nothing
// here awaits, so the handlers run to completion synchronously; the only deferred work (the
// presence and log flushes, the outbox) goes on timers (`defer.rs`).
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
        log::warn("ws_error", &[("error", &error.to_string())]);
        server_close(&ws, CloseReason::SocketError);
        self.forget(std::slice::from_ref(&ws), CloseReason::SocketError.code());
    }
}

/// What a new socket's history frame lists.
enum Backlog {
    /// Messages in their current state.
    Messages(Vec<ChatMessage>),
    /// For a catch-up by revision: what changed, in revision order.
    Changes(Vec<LogItem>),
}

/// What the checks before an accept found out.
struct Opening {
    /// Sockets in the room before this one.
    room_sockets: usize,
    /// Whether the user already had a socket here.
    was_online: bool,
}

impl ChatRoom {
    async fn route(&self, req: Request) -> ApiResult<Response> {
        if req.method() == Method::Get && req.path() == "/connect" {
            // The hot path: everything it needs is in the handover, no URL to parse.
            let handover = req
                .headers()
                .get(handover::HEADER)?
                .as_deref()
                .and_then(Handover::decode)
                .ok_or_else(missing_identity)?;
            // Boxed apart from the other routes (`http::Boxed`): a room's first socket compiles
            // only the connect path.
            let connect: Boxed<'_, Response> = Box::pin(self.connect(handover));
            return connect.await;
        }
        let others: Boxed<'_, Response> = Box::pin(self.other_route(req));
        others.await
    }

    /// Every internal route but `/connect` (`route`).
    async fn other_route(&self, req: Request) -> ApiResult<Response> {
        let url = req.inner().url();
        let query = |name: &str| http::raw_query_param(&url, name);
        let member = req.headers().get(ACCESS_HEADER)?.as_deref() == Some("member");
        let caller = req.headers().get(USER_HEADER)?.unwrap_or_default();
        let now_ms = worker::Date::now().as_millis() as i64;
        match (req.method(), http::path_of(&url)) {
            (Method::Post, "/claim") => self.claim(
                query("owner").unwrap_or_default(),
                query("private").as_deref() != Some("0"),
            ),
            (Method::Get, "/info") => Ok(self.info(&caller, now_ms)),
            (Method::Get, "/messages" | "/members") if self.refuses_outsiders(member) => {
                Err(ApiError::new(403, "this room is private"))
            }
            (Method::Get, "/messages" | "/members")
                if self.moderation.banned(&caller, now_ms).is_some() =>
            {
                Err(banned())
            }
            (Method::Post, "/moderate") => self.moderate(req, now_ms).await,
            (Method::Get, "/audit") => self.audit(&caller, query("before"), query("limit")),
            (Method::Get, "/messages") => self.page(query("before"), query("limit")),
            (Method::Get, "/members") => Ok(http::json(
                200,
                &serde_json::json!({ "room_id": self.name, "users": self.sockets.online_users() }),
            )),
            (Method::Post, "/kick") => {
                let user = query("user").unwrap_or_default();
                let closed = self.sockets.close_user(&user, CloseReason::Removed);
                self.forget(&closed, CloseReason::Removed.code());
                Ok(closed_count(closed.len()))
            }
            (Method::Post, "/revoke") => {
                let closed = match (query("jti"), query("user")) {
                    (Some(jti), _) => {
                        self.badges.forget(Revoked::Badge(&jti))?;
                        self.sockets.close_badge(&jti, CloseReason::Revoked)
                    }
                    (None, Some(user)) => {
                        self.badges.forget(Revoked::User(&user))?;
                        self.sockets.close_user(&user, CloseReason::Revoked)
                    }
                    _ => Vec::new(),
                };
                self.forget(&closed, CloseReason::Revoked.code());
                Ok(closed_count(closed.len()))
            }
            (Method::Get, "/stats") => Ok(http::json(200, &self.stats()?)),
            (Method::Post, "/left") => {
                // The user took this public room off their list: their next connect joins again.
                self.activity
                    .forget_join(&query("user").unwrap_or_default());
                Ok(http::json(200, &serde_json::json!({ "left": true })))
            }
            _ => Err(ApiError::not_found()),
        }
    }

    /// One text frame from a member: validate, rate limit, then a message, a change or typing.
    /// Whatever the frame, the connection and the room keep working; a bad frame gets an error
    /// frame back.
    fn on_text(&self, ws: &WebSocket, text: String) -> Result<()> {
        if text == "ping" {
            // Normally the auto-response answers; this covers a frame that reached us anyway.
            send_quietly(ws, "pong");
            return Ok(());
        }
        // The frame's own id, named in every error frame answering it: a client with several
        // frames out (messages, edits, reactions, ...) tells which one was refused.
        let (parsed, answering) = match protocol::parse_client_frame(&text, &self.name) {
            Ok(ok) => (Ok(ok.frame), ok.client_id),
            Err(bad) => (Err(bad.why), bad.client_id),
        };
        let answering = answering.as_deref();
        let refuse = |error: ErrorFrame| send_quietly(ws, &error.answering(answering).to_json());
        let Some(member) = Member::of(ws) else {
            refuse(ErrorFrame::new("connection has no identity"));
            return Ok(());
        };
        let now = worker::Date::now().as_millis();
        if let Ok(ClientFrame::Typing) = parsed {
            if self.moderation.muted(&member.user, now as i64).is_some() {
                return Ok(());
            }
            let after = self.typing.typing(
                &member.user,
                || self.sockets.of_user(&member.user),
                self.sockets.count(),
                now as f64,
            );
            if after == AfterTyping::Close {
                self.close_flooding(ws, &member.user);
            }
            return Ok(());
        }
        // Messages, changes and bad frames share the message limit.
        match self.rate_limits.check(&member.user, now as f64) {
            Verdict::Allow => {}
            Verdict::Refuse { retry_after_ms } => {
                refuse(ErrorFrame::new("rate limited").retry_after_ms(retry_after_ms));
                return Ok(());
            }
            Verdict::Disconnect => {
                self.close_flooding(ws, &member.user);
                return Ok(());
            }
        }
        let frame = match &parsed {
            Ok(frame) => frame,
            Err(why) => {
                refuse(ErrorFrame::new(&why.0));
                return Ok(());
            }
        };
        let owner = self.meta.borrow().owner.clone();
        let change = match frame {
            ClientFrame::Message(message) => {
                if let Err(refusal) =
                    self.moderation
                        .may_post(&member.user, owner.as_deref(), now as i64)
                {
                    refuse(post_refusal(refusal));
                    return Ok(());
                }
                return self.post(ws, member, message, answering, now as i64);
            }
            // Handled above, before the message limit.
            ClientFrame::Typing => return Ok(()),
            ClientFrame::Read { id } => {
                let verdict = self.reads.read(
                    ws,
                    &member.user,
                    *id,
                    self.outbox.last_id(),
                    self.sockets.count(),
                )?;
                if let Err(detail) = verdict {
                    refuse(ErrorFrame::new(detail));
                }
                return Ok(());
            }
            ClientFrame::Edit { id, content } => Change::Edit { id: *id, content },
            ClientFrame::Delete { id } => Change::Delete { id: *id },
            ClientFrame::React { id, emoji, add } => Change::React {
                id: *id,
                emoji,
                add: *add,
            },
        };
        // An edit or deletion of the newest message changes what members' lists show of it.
        let rewrites_newest = match &change {
            Change::Edit { id, .. } | Change::Delete { id } => *id == self.outbox.last_id(),
            Change::React { .. } => false,
        };
        let is_delete = matches!(change, Change::Delete { .. });
        if !is_delete {
            if let Some(until) = self.moderation.muted(&member.user, now as i64) {
                refuse(post_refusal(PostRefusal::Muted { until }));
                return Ok(());
            }
        }
        let may_remove = |author: &str| {
            self.moderation
                .may_remove(&member.user, author, owner.as_deref())
        };
        match self
            .changes
            .apply(&member.user, &may_remove, change, now as i64)?
        {
            Err(refusal) => {
                refuse(ErrorFrame::new(refusal.detail()));
                return Ok(());
            }
            Ok(author) if is_delete && !author.eq_ignore_ascii_case(&member.user) => {
                if let ClientFrame::Delete { id } = frame {
                    self.moderation.record_delete(
                        &member.user,
                        &author,
                        *id,
                        now as i64,
                        |k, v| self.storage.set_meta(k, v),
                    )?;
                }
            }
            Ok(_) => {}
        }
        if rewrites_newest {
            self.newest_rewritten()?;
        }
        Ok(())
    }

    /// The newest message was edited or deleted: the members' lists get its current state (a
    /// deleted message's content leaves D1 too).
    fn newest_rewritten(&self) -> Result<()> {
        if let Some(newest) = self.storage.message_by_id(self.outbox.last_id())? {
            let content = newest.content.as_deref().unwrap_or("");
            self.reads
                .newest(newest.id, &newest.username, content, newest.ts);
        }
        Ok(())
    }

    /// A new message from `member`: given its id and revision, and handed to the outbox.
    /// `client_id` makes a resend of it within `DEDUPE_WINDOW_MS` idempotent.
    fn post(
        &self,
        ws: &WebSocket,
        member: Member,
        message: &ClientMessage,
        client_id: Option<&str>,
        ts: i64,
    ) -> Result<()> {
        if let Some(client_id) = client_id {
            if self.answer_resend(ws, &member.user, client_id, ts)? {
                return Ok(());
            }
        }
        // The first write ever creates the tables, in this event's commit.
        self.storage.ensure_tables()?;
        let (id, rev) = (self.outbox.next_id(), self.outbox.next_rev());
        let frame = ServerFrame::Message {
            id,
            room_id: &self.name,
            username: &member.user,
            content: &message.content,
            ts,
            rev,
            client_id,
        }
        .to_json();
        self.outbox.accept(
            Outgoing {
                id,
                rev,
                username: member.user,
                content: message.content.to_string(),
                ts,
                client_id: client_id.map(str::to_owned),
                frame,
                sender: ws.clone(),
            },
            member.conn,
        );
        Ok(())
    }

    /// Whether a message is a resend: `user` sent one with the same `client_id` within
    /// `DEDUPE_WINDOW_MS`. Then it is not stored again, and only the sender hears back: the stored
    /// message as its echo, or nothing while the original waits for its group (its broadcast
    /// reaches this socket too).
    fn answer_resend(&self, ws: &WebSocket, user: &str, client_id: &str, now: i64) -> Result<bool> {
        if self.outbox.is_waiting(user, client_id) {
            return Ok(true);
        }
        let Some(original) =
            self.storage
                .message_by_client_id(user, client_id, now - DEDUPE_WINDOW_MS)?
        else {
            return Ok(false);
        };
        let echo = match original.content.as_deref() {
            Some(content) => ServerFrame::Message {
                id: original.id,
                room_id: &self.name,
                username: user,
                content,
                ts: original.ts,
                rev: original.rev,
                client_id: Some(client_id),
            }
            .to_json(),
            // A resend of a message deleted since: said apart from a refused deletion.
            None => ErrorFrame::new("the message with this client_id was deleted")
                .answering(Some(client_id))
                .to_json(),
        };
        send_quietly(ws, &echo);
        Ok(true)
    }

    /// Closes a connection that keeps flooding past its limit (1008).
    fn close_flooding(&self, ws: &WebSocket, user: &str) {
        log::warn(
            "rate_limited",
            &[
                ("username", user),
                ("room", &self.name),
                ("action", "closed"),
            ],
        );
        server_close(ws, CloseReason::Flooding);
    }

    /// Accepts a WebSocket for a member whose badge signature the Worker has verified: asks the
    /// session ledger to admit the badge here unless it already did (`admissions.rs`). Everything
    /// from the last check to the return runs without an `await`, so no message can slip in
    /// between the history we send and the live frames that follow: nothing lost, nothing twice.
    async fn connect(&self, handover: Handover) -> ApiResult<Response> {
        let badge = handover.badge().ok_or_else(missing_identity)?;
        let (user, room, jti, member) = (
            handover.user.as_str(),
            handover.room.as_str(),
            handover.jti.as_str(),
            handover.member,
        );
        if room.is_empty() || jti.is_empty() {
            return Err(missing_identity());
        }
        let since = match handover.since.map(i64::try_from) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                return Err(ApiError::unprocessable(
                    "since must be a non-negative integer",
                ))
            }
        };
        let mut opening = self.may_open(user, room, member)?;
        let now_secs = (worker::Date::now().as_millis() / 1000) as i64;
        if !self.badges.knows(jti, now_secs)? {
            let asked_at = worker::Date::now().as_millis() as f64;
            let max_rooms = Config::from_env(&self.env).max_rooms_per_user;
            Ledger::for_user(&self.env, user)?
                .admit_socket(&badge, room, max_rooms)
                .await?;
            // A logout may have reached the room while the ledger answered (it listed this room
            // only because the ledger had just recorded it).
            if self.badges.revoked_since(jti, user, asked_at)? {
                return Err(ApiError::unauthorized("Could not validate credentials"));
            }
            self.badges
                .remember(jti, user, badge.expires_at, now_secs)?;
            // And the room may have filled up, or been made private, meanwhile.
            opening = self.may_open(user, room, member)?;
        }
        if !self.meta.borrow().used {
            // Refused claims from now on; stored a moment later (`storage.rs`).
            self.meta.borrow_mut().used = true;
            self.writes.mark_used();
        }

        let pair = WebSocketPair::new()?;
        self.sockets
            .accept(&pair.server, user, jti, handover.batch)?;
        if !self.is_private() {
            // Joining a public room is the first successful connect (`activity.rs`).
            self.activity.joined(
                user,
                worker::Date::now().as_millis() as i64,
                self.outbox.sent_id(),
            );
        }
        let rev = match handover.rev.map(i64::try_from) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                return Err(ApiError::unprocessable(
                    "rev must be a non-negative integer",
                ))
            }
        };
        let (backlog, truncated) = self.history(since, rev)?;
        let messages = match &backlog {
            Backlog::Messages(messages) => HistoryItems::Messages(messages),
            Backlog::Changes(items) => HistoryItems::Changes(items),
        };
        send_quietly(
            &pair.server,
            &ServerFrame::History {
                messages,
                truncated,
                rev: self.outbox.sent_rev(),
            }
            .to_json(),
        );
        let users = self.sockets.online_users();
        send_quietly(
            &pair.server,
            &ServerFrame::Presence { users: &users }.to_json(),
        );
        if protocol::is_dm_room(&self.name) {
            // How far the other member has read (read receipts, also after a reconnect).
            for frame in self.reads.others_for(user)? {
                send_quietly(&pair.server, &frame);
            }
        }
        if !opening.was_online && opening.room_sockets < self.config.presence_broadcast_max {
            self.presence
                .announce(user, true, std::slice::from_ref(&pair.server));
        }
        // After its own join: the new socket saw its user online, the state after that join.
        self.presence.snapshot_sent(user);
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
    fn may_open(&self, user: &str, room: &str, member: bool) -> ApiResult<Opening> {
        if self.refuses_outsiders(member) {
            return Err(ApiError::new(403, "this room is private").with_header(PRIVATE_HEADER, "1"));
        }
        if self
            .moderation
            .banned(user, worker::Date::now().as_millis() as i64)
            .is_some()
        {
            return Err(banned());
        }
        let room_sockets = self.sockets.count();
        if room_sockets >= self.config.max_sockets_per_room {
            log::warn("ws_refused", &[("reason", "room_full"), ("room", room)]);
            return Err(ApiError::new(503, "room is full"));
        }
        let user_sockets = self.sockets.count_of(user);
        if user_sockets >= self.config.max_sockets_per_user {
            log::warn(
                "ws_refused",
                &[
                    ("reason", "too_many_sockets"),
                    ("username", user),
                    ("room", room),
                ],
            );
            return Err(ApiError::new(
                429,
                "too many connections to this room for this user",
            ));
        }
        Ok(Opening {
            room_sockets,
            was_online: user_sockets > 0,
        })
    }

    /// The object is the authority on privacy: a room claimed private after the Worker looked
    /// it up still refuses a request that was only checked as public.
    fn refuses_outsiders(&self, member: bool) -> bool {
        self.is_private() && !member
    }

    /// Claimed private, or a direct-message room, which is private by its name alone: nobody
    /// can use a DM's id before the DM exists, so its two members always can.
    fn is_private(&self) -> bool {
        self.meta.borrow().private || protocol::is_dm_room(&self.name)
    }

    /// History sent on connect: the last 50 messages, or every message after `since` (the
    /// newest 1000 if more were missed, with `truncated` so the client can page back), or with
    /// `rev` what changed after that revision (`storage.rs`, `changes_since`); `truncated` when
    /// that cannot be exact (more than 1000 items, or the history cap dropped messages after
    /// it), with the newest messages in their current state for the client to start from.
    fn history(&self, since: Option<i64>, rev: Option<i64>) -> Result<(Backlog, bool)> {
        let sent_id = self.outbox.sent_id();
        if let Some(after) = rev {
            let sent_rev = self.outbox.sent_rev();
            if after >= sent_rev {
                return Ok((Backlog::Changes(Vec::new()), false));
            }
            if after >= self.storage.dropped_rev() {
                let items = self
                    .storage
                    .changes_since(after, sent_id, sent_rev, MAX_CATCH_UP)?;
                if let Some(items) = items {
                    return Ok((Backlog::Changes(items), false));
                }
            }
            let newest = self.storage.messages_between(0, sent_id, RECENT_HISTORY)?;
            let items = newest.messages.into_iter().map(LogItem::Message).collect();
            return Ok((Backlog::Changes(items), true));
        }
        let (after, limit) = match since {
            Some(s) => (s, MAX_CATCH_UP),
            None => (0, RECENT_HISTORY),
        };
        // Nothing newer than `after` exists (an empty room, or a client that is up to date on
        // reconnect): no query, and nothing missed.
        if after >= self.outbox.last_id() {
            return Ok((Backlog::Messages(Vec::new()), false));
        }
        // Stored messages not yet sent reach the new socket live (`outbox.rs`).
        let newest = self.storage.messages_between(after, sent_id, limit)?;
        // Ids have no gaps, so a first id past `since + 1` means the history cap already
        // dropped messages the client missed: it must know.
        let dropped = match (since, newest.messages.first()) {
            (Some(since), Some(first)) => first.id > since + 1,
            _ => false,
        };
        Ok((Backlog::Messages(newest.messages), newest.more || dropped))
    }

    /// `GET /rooms/{id}/messages?before=&limit=`: a page of history, oldest first.
    fn page(&self, before: Option<String>, limit: Option<String>) -> ApiResult<Response> {
        // The largest integer JS holds exactly (ids never get near it): the default, and the
        // largest `before` a client may name (openapi.json states it).
        const MAX_BEFORE: i64 = (1i64 << 53) - 1;
        let before = match before.map(|b| b.parse::<i64>()) {
            None => MAX_BEFORE,
            Some(Ok(b)) if (0..=MAX_BEFORE).contains(&b) => b,
            Some(_) => {
                return Err(ApiError::unprocessable(
                    "before must be an integer from 0 to 9007199254740991",
                ))
            }
        };
        let limit = match limit.map(|l| l.parse::<i64>()) {
            None => RECENT_HISTORY,
            Some(Ok(l)) if (1..=MAX_PAGE).contains(&l) => l,
            Some(_) => {
                return Err(ApiError::unprocessable(
                    "limit must be an integer from 1 to 100",
                ))
            }
        };
        let page = self.storage.messages_before(before, limit)?;
        Ok(http::json(
            200,
            &serde_json::json!({ "room_id": self.name, "messages": page.messages, "has_more": page.more }),
        ))
    }

    /// Gives an unused room to `owner`, private or public. Refused once anyone has used or
    /// claimed it.
    fn claim(&self, owner: String, private: bool) -> ApiResult<Response> {
        if owner.is_empty() {
            return Err(ApiError::bad_request("missing owner"));
        }
        if self.meta.borrow().used
            || self.meta.borrow().owner.is_some()
            || protocol::is_dm_room(&self.name)
        {
            return Err(ApiError::new(409, "room already exists"));
        }
        let private = if private { "1" } else { "0" };
        for (key, value) in [
            ("owner", owner.as_str()),
            ("private", private),
            ("used", "1"),
        ] {
            self.storage.set_meta(key, value)?;
            self.meta.borrow_mut().apply(key, value);
        }
        Ok(http::json(201, &serde_json::json!({ "owner": owner })))
    }

    /// The room as `caller` sees it: its owner, moderators and slow mode, and the caller's role
    /// and sanctions (so a client knows what to offer, and why a connect is refused).
    fn info(&self, caller: &str, now_ms: i64) -> Response {
        let meta = self.meta.borrow();
        let role = match self.moderation.role_of(caller, meta.owner.as_deref()) {
            Some(Role::Owner) => Some("owner"),
            Some(Role::Moderator) => Some("moderator"),
            Some(Role::Member) => Some("member"),
            None => None,
        };
        let until = |sanction: Option<Option<i64>>| match sanction {
            None => serde_json::json!(false),
            Some(None) => serde_json::json!(true),
            Some(Some(until)) => serde_json::json!({ "until": until }),
        };
        http::json(
            200,
            &serde_json::json!({
                "private": meta.private,
                "owner": meta.owner,
                "moderators": self.moderation.moderators(),
                "slow_mode_secs": self.moderation.slow_mode_secs(),
                "your_role": role,
                "banned": until(self.moderation.banned(caller, now_ms)),
                "muted": until(self.moderation.muted(caller, now_ms)),
            }),
        )
    }

    /// `/moderate`: an action the Worker forwards, with the actor from the badge. The room
    /// decides who may take it: it is the authority on its owner and moderators.
    async fn moderate(&self, mut req: Request, now_ms: i64) -> ApiResult<Response> {
        let request: moderation::Request = req
            .json()
            .await
            .map_err(|e| ApiError::bad_request(format!("bad moderation request: {e}")))?;
        let owner = self.meta.borrow().owner.clone();
        let effect = self
            .moderation
            .apply(&request, owner.as_deref(), now_ms, |k, v| {
                self.storage.set_meta(k, v)?;
                self.meta.borrow_mut().apply(k, v);
                Ok(())
            })?;
        let mut closed = 0;
        if let (Effect::Close(why), Some(target)) = (effect, request.target.as_deref()) {
            let sockets = self.sockets.close_user(target, why);
            self.forget(&sockets, why.code());
            closed = sockets.len();
        }
        log::info(
            "moderation",
            &[
                ("room", &self.name),
                ("username", &request.actor),
                ("action", &request.action),
                ("target", request.target.as_deref().unwrap_or("")),
            ],
        );
        Ok(http::json(200, &serde_json::json!({ "closed": closed })))
    }

    /// `/audit`: the log, for the owner and moderators only.
    fn audit(
        &self,
        caller: &str,
        before: Option<String>,
        limit: Option<String>,
    ) -> ApiResult<Response> {
        let owner = self.meta.borrow().owner.clone();
        match self.moderation.role_of(caller, owner.as_deref()) {
            None => return Err(moderation::Denied::NoOwner.into()),
            Some(Role::Member) => return Err(moderation::Denied::NotModerator.into()),
            Some(_) => {}
        }
        // As for messages: the largest `before` a client may name (openapi.json states it).
        const MAX_BEFORE: i64 = (1i64 << 53) - 1;
        let before = match before.map(|b| b.parse::<i64>()) {
            None => MAX_BEFORE,
            Some(Ok(b)) if (0..=MAX_BEFORE).contains(&b) => b,
            Some(_) => {
                return Err(ApiError::unprocessable(
                    "before must be an integer from 0 to 9007199254740991",
                ))
            }
        };
        let limit = match limit.map(|l| l.parse::<i64>()) {
            None => moderation::MAX_AUDIT_PAGE,
            Some(Ok(l)) if (1..=moderation::MAX_AUDIT_PAGE).contains(&l) => l,
            Some(_) => {
                return Err(ApiError::unprocessable(
                    "limit must be an integer from 1 to 100",
                ))
            }
        };
        let (entries, more) = self.moderation.audit(before, limit)?;
        Ok(http::json(
            200,
            &serde_json::json!({ "room_id": self.name, "entries": entries, "has_more": more }),
        ))
    }

    fn stats(&self) -> ApiResult<serde_json::Value> {
        let counts = self.storage.message_counts()?;
        // How well messages were grouped into commits (`outbox.rs`).
        let (stored, groups) = self.outbox.stored_and_groups();
        Ok(serde_json::json!({
            "room_id": self.name,
            "open_sockets": self.sockets.count(),
            "users_online": self.sockets.online_users().len(),
            "messages_stored": counts.stored,
            "oldest_id": counts.oldest,
            "newest_id": counts.newest,
            "last_message_ts": counts.last_ts,
            "storage_bytes": self.storage.size_bytes(),
            "since_wake": { "messages_stored": stored, "message_commits": groups },
        }))
    }

    /// Bookkeeping when sockets go: their paces, their log lines, and a
    /// `leave` for each user who has no socket left. Sockets being closed may still be listed
    /// by the runtime, hence `closing`.
    fn forget(&self, closing: &[WebSocket], code: u16) {
        self.sockets.forget();
        let members: Vec<Member> = closing.iter().filter_map(Member::of).collect();
        for member in &members {
            self.outbox.forget(member.conn);
            self.close_log.add(|| {
                serde_json::json!({
                    "username": member.user,
                    "code": code,
                })
            });
        }
        let users: std::collections::BTreeSet<&str> =
            members.iter().map(|m| m.user.as_str()).collect();
        for user in users {
            if !self.sockets.has_other(user, closing)
                && self.sockets.went_offline(user)
                && self.sockets.fanout().listed() <= self.config.presence_broadcast_max
            {
                self.presence.announce(user, false, closing);
            }
        }
    }
}

fn banned() -> ApiError {
    ApiError::new(403, "you are banned from this room")
}

/// The error frame for a post that moderation refused; `code` tells clients which.
fn post_refusal(refusal: PostRefusal) -> ErrorFrame<'static> {
    match refusal {
        PostRefusal::Muted { until } => ErrorFrame::new("you are muted in this room")
            .code("muted")
            .until(until),
        PostRefusal::SlowMode { retry_after_ms } => {
            ErrorFrame::new("slow mode: wait before sending another message")
                .code("slow_mode")
                .retry_after_ms(retry_after_ms)
        }
    }
}

fn missing_identity() -> ApiError {
    ApiError::bad_request("missing identity")
}

/// The answer to `/kick` and `/revoke`: how many sockets were closed.
fn closed_count(closed: usize) -> Response {
    http::json(200, &serde_json::json!({ "closed": closed }))
}
