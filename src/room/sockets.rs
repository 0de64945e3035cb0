//! A room's WebSockets: who each belongs to (its attachment and tags), the fan-out of a frame
//! to all of them, and who is online.
//!
//! Sockets are accepted with the Hibernation API, so everything here survives an eviction
//! through the runtime (its list of sockets, their tags and attachments); the in-memory fields
//! are caches rebuilt on first use after a wake-up.

use std::cell::{Cell, RefCell, RefMut};
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use worker::{js_sys, Result, State, WebSocket};

use crate::protocol::{self, CloseReason};

/// Who a socket belongs to; stored as its hibernation attachment. It is kept as one compact
/// JSON string (about 40 bytes of the 16 KB allowed): reading one JS string and parsing it in
/// WASM is cheaper, per message, than walking a JS object field by field.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    #[serde(rename = "u")]
    pub user: String,
    /// Connection id: keys the connection's rate bucket and pace.
    #[serde(rename = "c")]
    pub conn: u32,
}

impl Member {
    pub fn of(ws: &WebSocket) -> Option<Member> {
        let text = ws.deserialize_attachment::<String>().ok()??;
        serde_json::from_str(&text).ok()
    }

    fn attach_to(&self, ws: &WebSocket) -> Result<()> {
        ws.serialize_attachment(serde_json::to_string(self)?)
    }
}

/// The tag every socket of `user` carries.
fn user_tag(user: &str) -> String {
    format!("u:{user}")
}

/// The tag every socket opened with badge `jti` carries.
fn badge_tag(jti: &str) -> String {
    format!("j:{jti}")
}

// The fan-out loop runs in JS: per recipient it is one `send` of a string the runtime already
// holds, with no crossing between WASM and JS and no per-socket handle for Rust to manage.
// This is the hot path of the whole service (a message to N members is N sends).
//
// The lists of sockets are kept between broadcasts: `getWebSockets()` builds a new array of N
// wrapped sockets on every call, per message. They are dropped (`forgetSockets`) when a socket
// is accepted, so a new member never misses a message, and when sockets go; a socket that closed
// while listed makes its `send` throw, as it would from a fresh list, and the lists are dropped.
// Keyed by the object's `DurableObjectState`, which a hibernated object gets anew on wake-up.
//
// Sockets that opted into batched delivery carry the tag `BATCH_TAG`: the runtime lists them
// in one call, so a room splits its sockets into plain and batched once per list, without
// reading any socket's attachment. With none batched, `plain` is `all` itself.
#[wasm_bindgen(inline_js = r#"
const listed = new WeakMap();
function lists(state) {
  let lists = listed.get(state);
  if (lists === undefined) {
    const all = state.getWebSockets();
    const batched = state.getWebSockets("batch");
    let plain = all;
    if (batched.length > 0) {
      const skip = new Set(batched);
      plain = all.filter((ws) => !skip.has(ws));
    }
    lists = { all, plain, batched };
    listed.set(state, lists);
  }
  return lists;
}
function sendEach(state, list, frame, skip) {
  let sent = 0, closed = false;
  for (const ws of list) {
    if (skip !== null && skip.includes(ws)) continue;
    // A closing socket throws: the others still get the frame, and the next list leaves it out.
    try { ws.send(frame); sent++; } catch (_) { closed = true; }
  }
  if (closed) listed.delete(state);
  return sent;
}
export function broadcast(state, frame, except) {
  return sendEach(state, lists(state).all, frame, except === undefined ? null : except);
}
export function broadcastPlain(state, frame) {
  return sendEach(state, lists(state).plain, frame, null);
}
export function broadcastBatched(state, frame) {
  return sendEach(state, lists(state).batched, frame, null);
}
export function batchedCount(state) {
  return lists(state).batched.length;
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
    /// Sends to the sockets that did not opt into batched delivery.
    #[wasm_bindgen(js_name = broadcastPlain)]
    fn broadcast_plain_js(state: &JsValue, frame: &str) -> u32;
    /// Sends to the sockets that opted into batched delivery.
    #[wasm_bindgen(js_name = broadcastBatched)]
    fn broadcast_batched_js(state: &JsValue, frame: &str) -> u32;
    #[wasm_bindgen(js_name = batchedCount)]
    fn batched_count_js(state: &JsValue) -> u32;
    /// Drops the lists of sockets `broadcast` keeps: call after every accept and close.
    #[wasm_bindgen(js_name = forgetSockets)]
    fn forget_sockets_js(state: &JsValue);
    /// How many sockets the room holds (with `tag`: how many carry it), without a WASM
    /// handle per socket.
    #[wasm_bindgen(js_name = socketCount)]
    fn socket_count_js(state: &JsValue, tag: Option<&str>) -> u32;
}

/// The tag of a socket that opted into batched delivery (`?batch=1`). A tag rather than a field
/// of the attachment: it survives hibernation the same way, and the fan-out finds every batched
/// socket with one runtime call instead of reading each socket's attachment. User tags start
/// with `u:` and badge tags with `j:`, so no other tag is ever this one.
const BATCH_TAG: &str = "batch";

/// Sends frames to every socket of the room; a cheap handle for the parts of the room that
/// broadcast (the outbox, presence) without owning the sockets.
#[derive(Clone)]
pub struct Fanout {
    /// The runtime's `DurableObjectState`, whose sockets a frame goes to.
    state: JsValue,
}

impl Fanout {
    /// Sends one serialised frame to every socket; returns how many got it. The frame crosses
    /// from Rust to JS once, whatever the number of recipients.
    pub fn to_all(&self, frame: &str) -> u32 {
        broadcast_js(&self.state, frame, &JsValue::UNDEFINED)
    }

    /// Sends the frames of one outbox flush, in order: each frame to every socket that did not
    /// opt into batched delivery, and [`protocol::batch_frames`] of them to every socket that
    /// did (serialised once for all of them).
    pub fn to_all_grouped<S: AsRef<str>>(&self, frames: &[S]) {
        if let [only] = frames {
            self.to_all(only.as_ref());
            return;
        }
        if batched_count_js(&self.state) == 0 {
            for frame in frames {
                self.to_all(frame.as_ref());
            }
            return;
        }
        for frame in frames {
            broadcast_plain_js(&self.state, frame.as_ref());
        }
        for batch in protocol::batch_frames(frames) {
            broadcast_batched_js(&self.state, &batch);
        }
    }

    /// [`Fanout::to_all`] but `except`.
    pub fn to_all_except(&self, frame: &str, except: &[WebSocket]) -> u32 {
        if except.is_empty() {
            return self.to_all(frame);
        }
        let except: js_sys::Array = except.iter().map(|ws| JsValue::from(ws.as_ref())).collect();
        broadcast_js(&self.state, frame, &except.into())
    }

    /// The sockets the runtime lists now, closing ones included; O(n), not cached.
    pub fn listed(&self) -> usize {
        socket_count_js(&self.state, None) as usize
    }
}

/// The room's sockets.
pub struct Sockets {
    state: State,
    fanout: Fanout,
    /// Usernames online, built from the live sockets on first use after a wake-up.
    online: RefCell<Option<BTreeSet<String>>>,
    /// How many sockets the room holds: counted once per wake-up (the runtime builds its list
    /// of sockets anew on every call, so counting on every connect would cost O(n) each), then
    /// kept by accepts; any socket closing or failing makes the next use count again.
    open: Cell<Option<usize>>,
    /// The next connection id (random start per wake-up, then sequential: unique per room).
    next_conn: Cell<Option<u32>>,
}

impl Sockets {
    pub fn new(state: State) -> Self {
        let fanout = Fanout {
            state: AsRef::<JsValue>::as_ref(state.as_raw()).clone(),
        };
        Self {
            state,
            fanout,
            online: RefCell::new(None),
            open: Cell::new(None),
            next_conn: Cell::new(None),
        }
    }

    pub fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// How many sockets the room holds.
    pub fn count(&self) -> usize {
        if let Some(n) = self.open.get() {
            return n;
        }
        let n = self.fanout.listed();
        self.open.set(Some(n));
        n
    }

    /// How many sockets `user` holds here.
    pub fn count_of(&self, user: &str) -> usize {
        socket_count_js(&self.fanout.state, Some(&user_tag(user))) as usize
    }

    /// Accepts `ws` (hibernatable) for `user`, opened with badge `jti`, with batched delivery if
    /// `batch`; returns who it belongs to.
    pub fn accept(&self, ws: &WebSocket, user: &str, jti: &str, batch: bool) -> Result<Member> {
        let member = Member {
            user: user.to_owned(),
            conn: self.new_conn_id()?,
        };
        let (user_tag, badge_tag) = (user_tag(user), badge_tag(jti));
        let tags: &[&str] = if batch {
            &[&user_tag, &badge_tag, BATCH_TAG]
        } else {
            &[&user_tag, &badge_tag]
        };
        self.state.accept_websocket_with_tags(ws, tags);
        forget_sockets_js(&self.fanout.state);
        if let Some(n) = self.open.get() {
            self.open.set(Some(n + 1));
        }
        member.attach_to(ws)?;
        self.online_set().insert(user.to_owned());
        Ok(member)
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

    /// Sockets went (or are going): the count and the fan-out list are rebuilt on next use,
    /// by when the runtime no longer lists them (it may still list them now).
    pub fn forget(&self) {
        self.open.set(None);
        forget_sockets_js(&self.fanout.state);
    }

    /// Every socket of `user` here.
    pub fn of_user(&self, user: &str) -> Vec<WebSocket> {
        self.state.get_websockets_with_tag(&user_tag(user))
    }

    /// Whether `user` has a socket here other than those `closing`.
    pub fn has_other(&self, user: &str, closing: &[WebSocket]) -> bool {
        self.of_user(user)
            .iter()
            .any(|other| !closing.contains(other))
    }

    /// Marks `user` offline; whether they were online.
    pub fn went_offline(&self, user: &str) -> bool {
        self.online_set().remove(user)
    }

    /// The set of usernames online, rebuilt from the sockets' tags after a wake-up.
    fn online_set(&self) -> RefMut<'_, BTreeSet<String>> {
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
        RefMut::map(online, |o| o.as_mut().expect("filled above"))
    }

    pub fn online_users(&self) -> Vec<String> {
        self.online_set().iter().cloned().collect()
    }

    /// Closes every socket of `user` ([`server_close`]); the sockets closed, for the caller's
    /// bookkeeping.
    pub fn close_user(&self, user: &str, why: CloseReason) -> Vec<WebSocket> {
        self.close_tagged(&user_tag(user), why)
    }

    /// Closes every socket opened with badge `jti` ([`server_close`]).
    pub fn close_badge(&self, jti: &str, why: CloseReason) -> Vec<WebSocket> {
        self.close_tagged(&badge_tag(jti), why)
    }

    fn close_tagged(&self, tag: &str, why: CloseReason) -> Vec<WebSocket> {
        let sockets = self.state.get_websockets_with_tag(tag);
        let closing = why.closing_frame();
        for ws in &sockets {
            close_after(ws, &closing, why);
        }
        sockets
    }
}

/// Ends a socket the server decided to close: THE way every server-initiated close goes (logout,
/// removal, flooding, socket errors, and any reason added to [`CloseReason`]). It sends the last
/// frame `{"type":"closing","code","reason"}` and then closes with the same code and reason.
///
/// The frame is there because a close frame is not always enough. `wrangler dev` (workerd
/// 1.20260426) puts the close frame on the wire at once, but when the client has never sent a
/// data frame it keeps the TCP connection open after the client answers the close, and browsers
/// and most libraries report the close only once the connection ends
/// (`docs/runtime/passive-close/`). The `closing` frame arrives in every case.
///
/// The caller does the room's bookkeeping (`ChatRoom::forget`); a socket already closing is left
/// as it is.
pub fn server_close(ws: &WebSocket, why: CloseReason) {
    close_after(ws, &why.closing_frame(), why);
}

/// [`server_close`] with the `closing` frame serialised once for many sockets.
fn close_after(ws: &WebSocket, closing: &str, why: CloseReason) {
    send_quietly(ws, closing);
    let _ = ws.close(Some(why.code()), Some(why.reason()));
}

/// Sends to one socket, ignoring a socket that is already closing.
pub fn send_quietly(ws: &WebSocket, text: &str) {
    let _ = ws.send_with_str(text);
}
