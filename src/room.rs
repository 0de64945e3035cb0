//! The room: one Durable Object per room name, holding that room's WebSockets.
//!
//! Sockets are accepted with the Hibernation API, so an idle room costs nothing while its
//! members stay connected: the runtime evicts the object from memory and wakes it for the next
//! frame. Anything that must survive that lives in SQLite storage (messages) or in the socket's
//! attachment (who it belongs to), never only in struct fields.

use std::cell::Cell;

use serde::{Deserialize, Serialize};
use worker::{
    durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, SqlStorageValue, State,
    WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::config::RoomConfig;
use crate::protocol::{self, error_frame, ServerFrame};

/// The Durable Object binding in wrangler.toml.
pub const BINDING: &str = "ROOMS";
/// Identity headers set by the Worker after it verified the badge. Any client-sent header with
/// this prefix is stripped before forwarding.
pub const IDENTITY_HEADER_PREFIX: &str = "x-clubhouse-";
pub const USER_HEADER: &str = "x-clubhouse-user";
pub const ROOM_HEADER: &str = "x-clubhouse-room";
pub const JTI_HEADER: &str = "x-clubhouse-jti";

/// Who a socket belongs to; stored as its hibernation attachment (well under the 16 KB cap).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Member {
    user: String,
    room: String,
    jti: String,
}

#[durable_object(websocket)]
pub struct ChatRoom {
    state: State,
    config: RoomConfig,
    /// Id of the newest stored message. Reloaded from storage on every wake-up.
    last_id: Cell<i64>,
}

impl DurableObject for ChatRoom {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        sql.exec(
            "CREATE TABLE IF NOT EXISTS messages (
                id INTEGER PRIMARY KEY, username TEXT NOT NULL, content TEXT NOT NULL, ts INTEGER NOT NULL)",
            None,
        )
        .expect("creating the messages table");
        #[derive(Deserialize)]
        struct MaxId {
            last: i64,
        }
        let last = sql
            .exec("SELECT COALESCE(MAX(id), 0) AS last FROM messages", None)
            .and_then(|c| c.one::<MaxId>())
            .map(|r| r.last)
            .expect("reading the last message id");
        Self {
            state,
            config: RoomConfig::from_env(&env),
            last_id: Cell::new(last),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let header = |name: &str| req.headers().get(name).ok().flatten().unwrap_or_default();
        let member = Member {
            user: header(USER_HEADER),
            room: header(ROOM_HEADER),
            jti: header(JTI_HEADER),
        };
        if member.user.is_empty() || member.room.is_empty() {
            // Only the Worker talks to this object, and it always sets these.
            return Response::error("missing identity", 400);
        }
        let pair = WebSocketPair::new()?;
        let user_tag = format!("u:{}", member.user);
        self.state.accept_websocket_with_tags(&pair.server, &[&user_tag]);
        pair.server.serialize_attachment(&member)?;
        Response::from_websocket(pair.client)
    }

    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
        let text = match message {
            WebSocketIncomingMessage::String(text) => text,
            WebSocketIncomingMessage::Binary(_) => {
                return send_quietly(&ws, &error_frame("binary frames are not supported; send JSON text"));
            }
        };
        if text == "ping" {
            // Normally answered by the auto-response without waking us; answer here too.
            return send_quietly(&ws, "pong");
        }
        let Some(member) = ws.deserialize_attachment::<Member>()? else {
            return send_quietly(&ws, &error_frame("connection has no identity"));
        };
        let message = match protocol::parse_client_message(&text, &member.room) {
            Ok(m) => m,
            Err(invalid) => return send_quietly(&ws, &error_frame(&invalid.0)),
        };
        let id = self.last_id.get() + 1;
        let ts = worker::Date::now().as_millis() as i64;
        self.store_message(id, &member.user, &message.content, ts)?;
        self.last_id.set(id);
        let frame = ServerFrame::Message {
            id,
            room_id: &member.room,
            username: &member.user,
            content: &message.content,
            ts,
        }
        .to_json();
        self.broadcast(&frame);
        Ok(())
    }

    async fn websocket_close(&self, ws: WebSocket, code: usize, _reason: String, _was_clean: bool) -> Result<()> {
        // Complete the closing handshake. 1005/1006 are reserved and cannot be sent back.
        let code = match code {
            1005 | 1006 => 1000,
            c => c as u16,
        };
        let _ = ws.close(Some(code), Some("closing"));
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> Result<()> {
        worker::console_warn!(
            "{}",
            crate::log::line("warn", "ws_error", &[("error", &error.to_string())])
        );
        let _ = ws.close(Some(1011), Some("socket error"));
        Ok(())
    }
}

impl ChatRoom {
    fn sql(&self) -> SqlStorage {
        self.state.storage().sql()
    }

    /// Stores one message and drops the oldest beyond the history cap. SQLite calls on the
    /// object's own storage are synchronous, so ids are assigned and stored in arrival order.
    fn store_message(&self, id: i64, username: &str, content: &str, ts: i64) -> Result<()> {
        let sql = self.sql();
        sql.exec(
            "INSERT INTO messages (id, username, content, ts) VALUES (?, ?, ?, ?)",
            vec![
                SqlStorageValue::Integer(id),
                SqlStorageValue::String(username.to_owned()),
                SqlStorageValue::String(content.to_owned()),
                SqlStorageValue::Integer(ts),
            ],
        )?;
        // Trim in batches of 1% rather than one row per insert.
        let cap = self.config.history_cap;
        if id > cap && id % (cap / 100).max(1) == 0 {
            sql.exec("DELETE FROM messages WHERE id <= ?", vec![SqlStorageValue::Integer(id - cap)])?;
        }
        Ok(())
    }

    /// Sends one serialised frame to every socket in the room.
    fn broadcast(&self, frame: &str) {
        for socket in self.state.get_websockets() {
            // A socket that is closing may refuse; the others must still get the frame.
            let _ = socket.send_with_str(frame);
        }
    }
}

/// Sends to one socket, ignoring a socket that is already closing.
fn send_quietly(ws: &WebSocket, text: &str) -> Result<()> {
    let _ = ws.send_with_str(text);
    Ok(())
}
