//! The WebSocket client of the tests, and the steps they repeat on sockets: waiting for a frame of
//! a given type or content, history and presence on connect, a run of messages, a close.

use std::fmt::Display;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

use super::{bounded_join, expect_json_error, ws_path, Client};

/// How long a single frame or response may take before a test fails.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Quiet period in which a frame that should not come would have come.
pub const QUIET: Duration = Duration::from_millis(700);
/// How soon a socket is closed with 1008 once its badge is revoked or its user removed.
pub const POLICY_CLOSE_WAIT: Duration = Duration::from_millis(1500);

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What arrived on a socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A text frame that parsed as JSON.
    Json(Value),
    /// A text frame that is not JSON (e.g. `pong`).
    Text(String),
    Binary(Vec<u8>),
    /// The server closed (code, reason), or the stream ended (None).
    Closed(Option<(u16, String)>),
}

/// A test WebSocket: reads frames with timeouts and skips frame types a test does not look at.
pub struct WsClient {
    stream: WsStream,
    /// The headers of the server's handshake answer.
    handshake: HeaderMap,
    /// Every frame read so far, for failure messages.
    pub seen: Vec<Incoming>,
}

impl WsClient {
    /// Connects to a full `ws://` URL. A refused upgrade is `Err(tungstenite::Error::Http(resp))`
    /// (see [`handshake_refusal`]).
    pub async fn connect(url: &str) -> Result<WsClient, tungstenite::Error> {
        WsClient::connect_with(url, &[]).await
    }

    /// Connects to `url` adding `headers` to the handshake (subprotocol, Origin, …).
    pub async fn connect_with(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<WsClient, tungstenite::Error> {
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            req.headers_mut().insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let (stream, response) = tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::connect_async(req),
        )
        .await
        .map_err(|_| tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into()))??;
        Ok(WsClient {
            stream,
            handshake: response.headers().clone(),
            seen: Vec::new(),
        })
    }

    /// A header of the server's handshake answer.
    pub fn response_header(&self, name: &str) -> Option<String> {
        self.handshake
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("send text frame");
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(value.to_string()).await;
    }

    /// Sends a chat message `{"content", "room_id"}`.
    pub async fn send_message(&mut self, room: &str, content: &str) {
        self.send_json(&json!({"content": content, "room_id": room}))
            .await;
    }

    pub async fn send_binary(&mut self, data: Vec<u8>) {
        self.stream
            .send(Message::Binary(data))
            .await
            .expect("send binary frame");
    }

    /// Sends, tolerating a socket the server already closed (returns whether it was sent).
    pub async fn try_send_text(&mut self, text: impl Into<String>) -> bool {
        self.stream.send(Message::Text(text.into())).await.is_ok()
    }

    /// The next data frame or close, or `None` after `wait`. Pings/pongs are handled and skipped.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Incoming> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) => Incoming::Closed(None),
                Ok(Some(Err(e))) => {
                    let inc = Incoming::Closed(None);
                    self.seen.push(inc.clone());
                    eprintln!("[harness] websocket read error: {e}");
                    return Some(inc);
                }
                Ok(Some(Ok(m))) => match m {
                    Message::Text(t) => match serde_json::from_str::<Value>(&t) {
                        Ok(v) if v.is_object() => Incoming::Json(v),
                        _ => Incoming::Text(t),
                    },
                    Message::Binary(b) => Incoming::Binary(b),
                    Message::Close(frame) => Incoming::Closed(
                        frame.map(|f: CloseFrame| (u16::from(f.code), f.reason.to_string())),
                    ),
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                },
            };
            self.seen.push(msg.clone());
            return Some(msg);
        }
    }

    /// The next data frame; panics on timeout.
    pub async fn next(&mut self) -> Incoming {
        match self.next_within(FRAME_TIMEOUT).await {
            Some(i) => i,
            None => panic!("no frame within {FRAME_TIMEOUT:?}; seen: {:?}", self.seen),
        }
    }

    /// The next JSON frame whose `type` is one of `types`, skipping all other frames; panics on
    /// timeout or close.
    pub async fn next_of_types(&mut self, types: &[&str]) -> Value {
        match self.try_next_of_types(types, FRAME_TIMEOUT).await {
            Ok(v) => v,
            Err(why) => panic!(
                "waiting for a frame of type {types:?}: {why}; seen: {}",
                self.seen_summary()
            ),
        }
    }

    /// The next JSON frame of `type` (e.g. "message", "join"), skipping all others.
    pub async fn next_of_type(&mut self, ty: &str) -> Value {
        self.next_of_types(&[ty]).await
    }

    /// The next `message` frame.
    pub async fn next_message(&mut self) -> Value {
        self.next_of_type("message").await
    }

    /// The next `message` frame with `content`, skipping other messages; panics on an `error`
    /// frame meanwhile.
    pub async fn next_message_with(&mut self, content: &str) -> Value {
        loop {
            let m = self.next_of_types(&["message", "error"]).await;
            assert_eq!(m["type"], "message", "waiting for {content:?}: {m}");
            if m["content"] == content {
                return m;
            }
        }
    }

    /// The id of the next `message` frame.
    pub async fn next_message_id(&mut self) -> i64 {
        let m = self.next_message().await;
        m["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("integer id: {m}"))
    }

    /// The next `n` messages as (id, content), in arrival order; asserts that their ids go up by
    /// one.
    pub async fn next_messages_consecutive(&mut self, n: usize) -> Vec<(i64, String)> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let m = self.next_message().await;
            got.push((
                m["id"].as_i64().expect("integer id"),
                m["content"].as_str().expect("string content").to_owned(),
            ));
        }
        let ids: Vec<i64> = got.iter().map(|(id, _)| *id).collect();
        assert_consecutive(&ids, "messages read in a row");
        got
    }

    /// Waits until this socket is told that `user` left: a `leave` frame, or a
    /// `presence_changes` listing them under `left` (a leave soon after another announcement is
    /// batched). Returns that frame.
    pub async fn next_leave_of(&mut self, user: &str) -> Value {
        loop {
            let v = self.next_of_types(&["leave", "presence_changes"]).await;
            let listed = if v["type"] == "leave" {
                v["username"] == user
            } else {
                v["left"]
                    .as_array()
                    .is_some_and(|left| left.iter().any(|u| u == user))
            };
            if listed {
                return v;
            }
        }
    }

    /// Like [`WsClient::next_of_types`] but returns why it found none instead of panicking.
    pub async fn try_next_of_types(
        &mut self,
        types: &[&str],
        wait: Duration,
    ) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                None => return Err(format!("timed out after {wait:?}")),
                Some(Incoming::Closed(c)) => return Err(format!("socket closed: {c:?}")),
                Some(Incoming::Json(v)) if types.iter().any(|t| v["type"] == *t) => return Ok(v),
                Some(_) => continue,
            }
        }
    }

    /// Asserts that no frame of any of `types` arrives within `wait` (other types are skipped).
    pub async fn expect_none_of_types(&mut self, types: &[&str], wait: Duration) {
        if let Ok(v) = self.try_next_of_types(types, wait).await {
            panic!("expected no frame of type {types:?}, got {v}");
        }
    }

    /// Reads and drops frames of `types` until none comes for `wait`.
    pub async fn drain(&mut self, types: &[&str], wait: Duration) {
        while self.try_next_of_types(types, wait).await.is_ok() {}
    }

    /// The next non-JSON text frame (e.g. the `pong` of the heartbeat), skipping JSON frames.
    pub async fn next_plain_text(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(Incoming::Text(t)) => return t,
                Some(Incoming::Closed(c)) => panic!("socket closed while waiting for text: {c:?}"),
                Some(_) => continue,
                None => panic!(
                    "no plain text frame within {FRAME_TIMEOUT:?}; seen: {}",
                    self.seen_summary()
                ),
            }
        }
    }

    /// Sends `ping` and waits for `pong`: proves the socket is open and the server reads it.
    pub async fn roundtrip_ping(&mut self) {
        self.send_text("ping").await;
        let got = self.next_plain_text().await;
        assert_eq!(got, "pong", "heartbeat answer");
    }

    /// The first two frames after connecting: `history` then `presence` (asserted in that order).
    pub async fn history_and_presence(&mut self) -> (Value, Value) {
        let frame = |ty: &'static str, incoming: Incoming| -> Value {
            let Incoming::Json(v) = incoming else {
                panic!("the {ty} JSON must come first, got {incoming:?}")
            };
            assert_eq!(v["type"], ty, "{v}");
            v
        };
        let history = frame("history", self.next().await);
        let presence = frame("presence", self.next().await);
        (history, presence)
    }

    /// Sends `n` messages `"{prefix} {i}"` and waits for each echo; returns the echoed ids.
    pub async fn send_n(&mut self, room: &str, prefix: &str, n: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            self.send_message(room, &format!("{prefix} {i}")).await;
        }
        while out.len() < n {
            let m = self.next_message().await;
            if m["content"]
                .as_str()
                .is_some_and(|c| c.starts_with(&format!("{prefix} ")))
            {
                out.push(m["id"].as_i64().unwrap());
            }
        }
        out
    }

    /// The close within `wait` (data frames are skipped): its code and reason, `None` for a
    /// stream that ended without a close frame. `Err` says what happened instead.
    pub async fn wait_close(&mut self, wait: Duration) -> Result<Option<(u16, String)>, String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                None => {
                    return Err(format!(
                        "not closed within {wait:?}; seen {}",
                        self.seen_summary()
                    ))
                }
                Some(Incoming::Closed(c)) => return Ok(c),
                Some(_) => continue,
            }
        }
    }

    /// Asserts that the server closes this socket with `code` within `wait`.
    pub async fn expect_closed_with(&mut self, code: u16, wait: Duration, what: &str) {
        match self.wait_close(wait).await {
            Ok(Some((got, reason))) => assert_eq!(got, code, "{what}: close reason {reason:?}"),
            Ok(None) => panic!("{what}: stream ended without a close frame (expected {code})"),
            Err(e) => panic!("{what}: {e}"),
        }
    }

    /// Asserts the close of a socket whose badge was revoked or whose user was removed: 1008
    /// (policy) within [`POLICY_CLOSE_WAIT`].
    pub async fn expect_policy_close(&mut self, what: &str) {
        self.expect_closed_with(1008, POLICY_CLOSE_WAIT, what).await;
    }

    pub fn seen_summary(&self) -> String {
        let items: Vec<String> = self
            .seen
            .iter()
            .rev()
            .take(20)
            .rev()
            .map(|i| match i {
                Incoming::Json(v) => {
                    let s = v.to_string();
                    if s.len() > 200 {
                        format!("{}…", &s[..s.floor_char_boundary(200)])
                    } else {
                        s
                    }
                }
                other => format!("{other:?}"),
            })
            .collect();
        format!("[{}]", items.join(", "))
    }

    pub async fn close(mut self) {
        let _ = self
            .stream
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

/// Status of a refused WebSocket handshake, with its body.
pub fn handshake_refusal(err: &tungstenite::Error) -> Option<(u16, String)> {
    match err {
        tungstenite::Error::Http(resp) => Some((
            resp.status().as_u16(),
            resp.body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        )),
        _ => None,
    }
}

/// Asserts that a WebSocket handshake was refused with HTTP `status`.
pub fn assert_refused(attempt: Result<WsClient, tungstenite::Error>, status: u16, what: &str) {
    match attempt {
        Ok(_) => panic!("{what}: the upgrade was accepted (expected {status})"),
        Err(err) => assert_eq!(
            handshake_refusal(&err).map(|r| r.0),
            Some(status),
            "{what}: {err}"
        ),
    }
}

/// Asserts `m` is a broadcast message frame from `username` in `room` with `content`, stamped
/// now; returns its id.
pub fn assert_message(m: &Value, room: &str, username: &str, content: &str) -> i64 {
    assert_eq!(m["type"], "message", "{m}");
    assert_eq!(m["room_id"], room, "{m}");
    assert_eq!(m["username"], username, "{m}");
    assert_eq!(m["content"], content, "{m}");
    let ts = m["ts"]
        .as_i64()
        .unwrap_or_else(|| panic!("integer ts (ms): {m}"));
    assert!(
        (ts - super::now_millis()).abs() < 120_000,
        "ts must be epoch milliseconds near now: {m}"
    );
    m["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("integer id: {m}"))
}

/// Asserts that `ids` go up by one, without gaps.
pub fn assert_consecutive(ids: &[i64], what: &str) {
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "{what}: ids must increase by one: {ids:?}"
    );
}

/// Asserts that the messages of one sender (`sent`, in the order it sent them) are among `got`
/// (contents, in arrival order) in that same order, whatever came in between.
pub fn assert_in_sent_order(got: &[String], sent: &[String], what: &str) {
    let own: Vec<&String> = got.iter().filter(|c| sent.contains(c)).collect();
    assert_eq!(own, sent.iter().collect::<Vec<_>>(), "{what}");
}

/// The ids of a `messages` array.
pub fn ids(messages: &Value) -> Vec<i64> {
    messages
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {messages}"))
        .iter()
        .map(|m| m["id"].as_i64().unwrap_or_else(|| panic!("no id in {m}")))
        .collect()
}

/// Connects to `url`; panics if the upgrade is refused.
async fn admitted(url: &str) -> WsClient {
    WsClient::connect(url)
        .await
        .unwrap_or_else(|e| panic!("WebSocket upgrade to {url} refused: {e}"))
}

/// Sockets of one server.
impl Client {
    /// The WebSocket URL of `room`, with the badge in the query.
    pub fn ws_url(&self, room: &str, token: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, ws_path(room, token))
    }

    /// [`Client::ws_url`] asking for the messages after id `since` on connect.
    pub fn ws_url_since(&self, room: &str, token: &str, since: impl Display) -> String {
        format!("{}&since={since}", self.ws_url(room, token))
    }

    /// `ws://…/ws/{room}` without a token (for the subprotocol transport).
    pub fn ws_url_bare(&self, room: &str) -> String {
        format!("ws://127.0.0.1:{}/ws/{room}", self.port)
    }

    /// Tries to connect a WebSocket to `room` with `token` (see [`assert_refused`]).
    pub async fn try_ws(&self, room: &str, token: &str) -> Result<WsClient, tungstenite::Error> {
        WsClient::connect(&self.ws_url(room, token)).await
    }

    /// Connects a WebSocket to `room` with `token`; panics if the upgrade is refused.
    pub async fn ws(&self, room: &str, token: &str) -> WsClient {
        admitted(&self.ws_url(room, token)).await
    }

    /// Asserts that an upgrade to `room` with `token` and the handshake `headers` is refused
    /// with `status`, both as a JSON error over plain HTTP and as a failed WebSocket handshake.
    pub async fn expect_upgrade_refused(
        &self,
        room: &str,
        token: &str,
        headers: &[(&str, &str)],
        status: u16,
        what: &str,
    ) {
        let resp = self
            .upgrade_attempt_with(&ws_path(room, token), headers)
            .await;
        expect_json_error(resp, status, &format!("{what} (plain HTTP)")).await;
        let attempt = WsClient::connect_with(&self.ws_url(room, token), headers).await;
        assert_refused(attempt, status, &format!("{what} (WebSocket)"));
    }

    /// [`Client::ws`], then a ping answered: the socket is in the room and read by the server.
    pub async fn ws_ready(&self, room: &str, token: &str) -> WsClient {
        let mut ws = self.ws(room, token).await;
        ws.roundtrip_ping().await;
        ws
    }

    /// [`Client::ws`] with `since` (see [`Client::ws_url_since`]).
    pub async fn ws_since(&self, room: &str, token: &str, since: impl Display) -> WsClient {
        admitted(&self.ws_url_since(room, token, since)).await
    }

    /// A socket to `room` with the badge as the `bearer` subprotocol instead of in the URL.
    pub async fn ws_subprotocol(
        &self,
        room: &str,
        token: &str,
    ) -> Result<WsClient, tungstenite::Error> {
        let protocol = format!("bearer, {token}");
        WsClient::connect_with(
            &self.ws_url_bare(room),
            &[("Sec-WebSocket-Protocol", &protocol)],
        )
        .await
    }

    /// A fresh room and one new user per prefix, each with a socket in the room that the server
    /// has read ([`Client::ws_ready`]), opened in that order: `(room, [(name, badge, socket)])`.
    pub async fn room_with_members<const N: usize>(
        &self,
        room_prefix: &str,
        user_prefixes: [&str; N],
    ) -> (String, [(String, String, WsClient); N]) {
        let (room, users) = self.room_with_users(room_prefix, user_prefixes).await;
        let mut members = Vec::with_capacity(N);
        for (name, token) in users {
            let ws = self.ws_ready(&room, &token).await;
            members.push((name, token, ws));
        }
        let Ok(members) = members.try_into() else {
            unreachable!("one member per prefix")
        };
        (room, members)
    }

    /// One socket to `room` per token, `at_once` opening at a time.
    pub async fn ws_all(&self, room: &str, tokens: Vec<String>, at_once: usize) -> Vec<WsClient> {
        bounded_join(tokens, at_once, |t| async move { self.ws(room, &t).await }).await
    }

    /// A ready socket to `room` once the server admits it (a slot freed by a close is freed a
    /// moment later); `None` if it still refuses after two seconds.
    pub async fn ws_once_admitted(&self, room: &str, token: &str) -> Option<WsClient> {
        for _ in 0..20 {
            if let Ok(mut ws) = self.try_ws(room, token).await {
                ws.roundtrip_ping().await;
                return Some(ws);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}
