//! Extra helpers for tests/rooms.rs, tests/security.rs and tests/ops.rs: authenticated requests,
//! WebSockets with custom handshake headers (subprotocol, Origin), waiting for closes, pacing.
//!
//! Included with `#[path = "common/ext.rs"] mod ext;` next to `mod common;`, so tests/common/mod.rs
//! stays untouched.
#![allow(dead_code)] // each test binary uses a different subset of the helpers

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::common::*;

/// Starts a server of its own (off the async runtime: starting blocks until it answers).
pub async fn start(options: ServerOptions) -> Server {
    tokio::task::spawn_blocking(move || Server::start(options))
        .await
        .unwrap()
}

/// Stops and restarts a server on the same port and state folder.
pub async fn restart(server: Server) -> Server {
    tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap()
}

/// A random `CF-Connecting-IP` (TEST-NET-3 / documentation-style 10.x addresses), so requests of
/// one test do not count against another's per-IP limits.
pub fn random_ip() -> String {
    let r = random_u64();
    format!(
        "10.{}.{}.{}",
        (r >> 8) & 0xff,
        (r >> 16) & 0xff,
        1 + (r & 0x7f)
    )
}

/// `GET path` with `Authorization: Bearer <token>`.
pub async fn get_bearer(c: &Client, path: &str, token: &str) -> reqwest::Response {
    c.http
        .get(c.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Status and JSON body of a response (panics on a non-JSON body).
pub async fn status_json(resp: reqwest::Response, what: &str) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let v = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}), status {status}: {body}"));
    (status, v)
}

/// `GET path` with a bearer; asserts 200 and returns the JSON body.
pub async fn get_ok(c: &Client, path: &str, token: &str) -> Value {
    let (status, v) = status_json(get_bearer(c, path, token).await, path).await;
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

/// `POST /rooms` `{"room_id", "private": true}` as `token`.
pub async fn create_private_room(c: &Client, token: &str, room: &str) -> reqwest::Response {
    c.http
        .post(c.url("/rooms"))
        .bearer_auth(token)
        .json(&serde_json::json!({"room_id": room, "private": true}))
        .send()
        .await
        .expect("POST /rooms")
}

/// `PUT` or `DELETE /rooms/{room}/members/{user}` as `token`.
pub async fn change_member(
    c: &Client,
    method: reqwest::Method,
    token: &str,
    room: &str,
    user: &str,
) -> reqwest::Response {
    c.http
        .request(method, c.url(&format!("/rooms/{room}/members/{user}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("PUT/DELETE member")
}

/// A new private room owned by `owner_token`'s user, with `member` added; asserts both steps.
pub async fn private_room_with_member(c: &Client, owner_token: &str, room: &str, member: &str) {
    let created = create_private_room(c, owner_token, room).await;
    assert_eq!(created.status(), 201, "POST /rooms {room}");
    let added = change_member(c, reqwest::Method::PUT, owner_token, room, member).await;
    assert_eq!(added.status(), 200, "PUT member {member} in {room}");
}

/// `POST /logout` (optionally `?all=true`) with `token`.
pub async fn logout(c: &Client, token: &str, all: bool) -> reqwest::Response {
    let path = if all { "/logout?all=true" } else { "/logout" };
    c.http
        .post(c.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("POST /logout")
}

/// Signs up `name` with `password` from a random client IP.
pub async fn signup_from(c: &Client, name: &str, password: &str, ip: &str) -> reqwest::Response {
    c.http
        .post(c.url("/users/"))
        .header("CF-Connecting-IP", ip)
        .json(&serde_json::json!({"username": name, "password": password}))
        .send()
        .await
        .expect("POST /users/")
}

/// `POST /token` from client IP `ip`.
pub async fn login_from(c: &Client, name: &str, password: &str, ip: &str) -> reqwest::Response {
    c.http
        .post(c.url("/token"))
        .header("CF-Connecting-IP", ip)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_encode(&[("username", name), ("password", password)]))
        .send()
        .await
        .expect("POST /token")
}

/// A fresh user signed up and logged in from random IPs (for servers with strict per-IP limits).
pub async fn new_user_any_ip(c: &Client, prefix: &str) -> (String, String) {
    let name = unique_name(prefix);
    let resp = signup_from(c, &name, DEFAULT_PASSWORD, &random_ip()).await;
    assert_eq!(resp.status(), 201, "signup {name}");
    let resp = login_from(c, &name, DEFAULT_PASSWORD, &random_ip()).await;
    let (status, v) = status_json(resp, "login").await;
    assert_eq!(status, 200, "login {name}: {v}");
    (name, v["access_token"].as_str().unwrap().to_string())
}

/// Whether `ws` gets a close frame within `wait` (data frames are skipped); its code and reason.
/// `Err` says what happened instead.
pub async fn wait_close(
    ws: &mut WsClient,
    wait: Duration,
) -> Result<Option<(u16, String)>, String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.next_within(left).await {
            None => {
                return Err(format!(
                    "not closed within {wait:?}; seen {}",
                    ws.seen_summary()
                ))
            }
            Some(Incoming::Closed(c)) => return Ok(c),
            Some(_) => continue,
        }
    }
}

/// Asserts that `ws` is closed by the server with `code` within `wait`.
pub async fn expect_closed_with(ws: &mut WsClient, code: u16, wait: Duration, what: &str) {
    match wait_close(ws, wait).await {
        Ok(Some((got, reason))) => assert_eq!(got, code, "{what}: close reason {reason:?}"),
        Ok(None) => panic!("{what}: stream ended without a close frame (expected {code})"),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// The first two frames after connecting: `history` then `presence` (asserted in that order).
pub async fn history_and_presence(ws: &mut WsClient) -> (Value, Value) {
    let first = ws.next().await;
    let Incoming::Json(history) = first else {
        panic!("first frame must be the history JSON, got {first:?}")
    };
    assert_eq!(history["type"], "history", "first frame: {history}");
    let second = ws.next().await;
    let Incoming::Json(presence) = second else {
        panic!("second frame must be the presence JSON, got {second:?}")
    };
    assert_eq!(presence["type"], "presence", "second frame: {presence}");
    (history, presence)
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

/// Sends `n` messages `"{prefix} {i}"` and waits for each echo; returns the echoed ids.
pub async fn send_n(ws: &mut WsClient, room: &str, prefix: &str, n: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        ws.send_message(room, &format!("{prefix} {i}")).await;
    }
    while out.len() < n {
        let m = ws.next_message().await;
        if m["content"]
            .as_str()
            .is_some_and(|c| c.starts_with(&format!("{prefix} ")))
        {
            out.push(m["id"].as_i64().unwrap());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// WebSockets with custom handshake headers
// ---------------------------------------------------------------------------------------------

type RawStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket opened with extra handshake headers, keeping the handshake response.
pub struct RawWs {
    pub stream: RawStream,
    pub response: tungstenite::handshake::client::Response,
}

impl RawWs {
    /// Connects to `url` adding `headers` to the handshake. A refused upgrade is
    /// `Err(tungstenite::Error::Http(resp))` (see [`handshake_refusal`]).
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<RawWs, tungstenite::Error> {
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            req.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let (stream, response) = tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::connect_async(req),
        )
        .await
        .map_err(|_| tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into()))??;
        Ok(RawWs { stream, response })
    }

    pub fn response_header(&self, name: &str) -> Option<String> {
        self.response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub async fn send_text(&mut self, text: &str) -> bool {
        self.stream.send(Message::Text(text.into())).await.is_ok()
    }

    /// The next text frame (JSON or not) or the close, `None` on timeout.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Incoming> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return Some(Incoming::Closed(None)),
                Ok(Some(Ok(m))) => match m {
                    Message::Text(t) => {
                        return Some(match serde_json::from_str::<Value>(&t) {
                            Ok(v) if v.is_object() => Incoming::Json(v),
                            _ => Incoming::Text(t),
                        })
                    }
                    Message::Binary(b) => return Some(Incoming::Binary(b)),
                    Message::Close(f) => {
                        return Some(Incoming::Closed(
                            f.map(|f| (u16::from(f.code), f.reason.to_string())),
                        ))
                    }
                    _ => continue,
                },
            }
        }
    }

    /// Sends `ping`, expects `pong` (skipping JSON frames).
    pub async fn roundtrip_ping(&mut self) {
        assert!(self.send_text("ping").await, "send ping");
        loop {
            match self.next_within(FRAME_TIMEOUT).await {
                Some(Incoming::Text(t)) => {
                    assert_eq!(t, "pong");
                    return;
                }
                Some(Incoming::Json(_)) => continue,
                other => panic!("waiting for pong: {other:?}"),
            }
        }
    }

    /// The close code within `wait`, skipping data frames.
    pub async fn wait_close(&mut self, wait: Duration) -> Result<Option<(u16, String)>, String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                None => return Err(format!("not closed within {wait:?}")),
                Some(Incoming::Closed(c)) => return Ok(c),
                Some(_) => continue,
            }
        }
    }
}

/// `ws://…/ws/{room}` without a token (for the subprotocol transport).
pub fn ws_url_bare(c: &Client, room: &str) -> String {
    format!("ws://127.0.0.1:{}/ws/{room}", c.port)
}

/// A cheap deterministic PRNG (xorshift64*), seeded from [`random_u64`] or `CLUBHOUSE_FUZZ_SEED`;
/// the seed is printed so a failing fuzz run can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn new() -> Rng {
        // CLUBHOUSE_FUZZ_SEED=0x… replays a failing run.
        let seed = std::env::var("CLUBHOUSE_FUZZ_SEED")
            .ok()
            .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
            .unwrap_or_else(random_u64)
            | 1;
        eprintln!("[fuzz] seed {seed:#x} (replay: CLUBHOUSE_FUZZ_SEED={seed:#x})");
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Up to `max - 1` random bytes.
    pub fn bytes_upto(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }
    /// A random string of `min..max` pieces.
    pub fn string_upto(&mut self, min: usize, max: usize) -> String {
        let n = min + self.below(max - min);
        self.string(n)
    }
    /// A string mixing ASCII, JSON punctuation and some multi-byte characters.
    pub fn string(&mut self, n: usize) -> String {
        const ALPHABET: &[&str] = &[
            "a", "Z", "0", "{", "}", "[", "]", "\"", ":", ",", "\\", "/", "%", "&", "=", "?", "#",
            " ", "\n", "\t", "é", "😀", "\u{0}", "\u{202e}", "content", "room_id", "null", "true",
            "-1", "1e999", "..",
        ];
        (0..n)
            .map(|_| ALPHABET[self.below(ALPHABET.len())])
            .collect()
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}
