//! HTTP requests to one test server: accounts, rooms, refused upgrades, and the checks of the
//! JSON answers.

use std::time::Duration;

use reqwest::{Body, Method, RequestBuilder, Response};
use serde_json::{json, Value};

use super::{bounded_join, random_u64, unique_name};

/// Content types of request bodies.
pub const JSON: &str = "application/json";
pub const FORM: &str = "application/x-www-form-urlencoded";

/// The password of every user made by [`Client::new_user`].
pub const DEFAULT_PASSWORD: &str = "correct horse battery staple";
/// What `wrangler dev` answers (503) for a request its Worker's isolate was restarted under.
pub const RUNTIME_RESTARTED: &str = "Your worker restarted mid-request";

/// The client address a request claims (`CF-Connecting-IP`), for servers with per-IP limits.
#[derive(Clone, Debug)]
enum ClientIp {
    /// No header: the server sees 127.0.0.1, like every other test.
    Local,
    Fixed(String),
    /// A new random address for every request.
    Random,
}

/// HTTP requests bound to one server (WebSockets: see `ws.rs`).
#[derive(Clone)]
pub struct Client {
    /// `http://127.0.0.1:<port>`: the server's own origin.
    pub base: String,
    pub port: u16,
    http: reqwest::Client,
    ip: ClientIp,
}

/// A random `CF-Connecting-IP` in 10.0.0.0/8, so requests of one test do not count against
/// another's per-IP limits.
pub fn random_ip() -> String {
    let r = random_u64();
    format!(
        "10.{}.{}.{}",
        (r >> 8) & 0xff,
        (r >> 16) & 0xff,
        1 + (r & 0x7f)
    )
}

impl Client {
    pub fn new(port: u16) -> Client {
        Client {
            base: format!("http://127.0.0.1:{port}"),
            port,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            ip: ClientIp::Local,
        }
    }

    /// The same client, its requests coming from `ip`.
    pub fn with_ip(&self, ip: &str) -> Client {
        Client {
            ip: ClientIp::Fixed(ip.to_string()),
            ..self.clone()
        }
    }

    /// The same client, each request coming from a new random address ([`random_ip`]).
    pub fn with_random_ips(&self) -> Client {
        Client {
            ip: ClientIp::Random,
            ..self.clone()
        }
    }

    /// A request to `path` (from this client's address).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.ip {
            ClientIp::Local => req,
            ClientIp::Fixed(ip) => req.header("CF-Connecting-IP", ip),
            ClientIp::Random => req.header("CF-Connecting-IP", random_ip()),
        }
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// `POST path` with `body` as it is, declared as `content_type`.
    pub async fn post_body(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<Body>,
    ) -> Response {
        self.post(path)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    // -----------------------------------------------------------------------------------------
    // Accounts
    // -----------------------------------------------------------------------------------------

    /// `POST /users/` `{"username", "password"}`.
    pub async fn signup(&self, username: &str, password: &str) -> Response {
        self.post("/users/")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("POST /users/")
    }

    /// `POST /token` (form-encoded); the raw response. Sent again once if the local runtime
    /// answered that it restarted the Worker mid-request (its own 503, which asks the client to
    /// retry; a login is safe to repeat): under the whole suite's load `wrangler dev` does that
    /// now and then, and a login that never reached the Worker tests nothing of ours.
    pub async fn login_response(&self, username: &str, password: &str) -> Response {
        let form = form_encode(&[("username", username), ("password", password)]);
        let first = self.post_body("/token", FORM, form.clone()).await;
        // The Worker's own answers are JSON; the runtime's restart notice is plain text.
        let from_runtime = first.status() == 503
            && !first
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(JSON));
        if !from_runtime {
            return first;
        }
        let body = first.text().await.unwrap_or_default();
        assert!(
            body.contains(RUNTIME_RESTARTED),
            "POST /token: a 503 neither the Worker's nor the runtime's restart notice: {body}"
        );
        eprintln!(
            "[harness] POST /token: the runtime restarted the Worker mid-request; sent again"
        );
        self.post_body("/token", FORM, form).await
    }

    /// Logs in and returns the access token; panics unless the answer is 200 with a token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let (status, v) =
            status_json(self.login_response(username, password).await, "POST /token").await;
        assert_eq!(status, 200, "POST /token for {username}: {v}");
        v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {v}"))
            .to_string()
    }

    /// Signs up a fresh user (`unique_name(prefix)`, [`DEFAULT_PASSWORD`]) and logs in: its name
    /// and badge.
    pub async fn new_user(&self, prefix: &str) -> (String, String) {
        let name = unique_name(prefix);
        let resp = self.signup(&name, DEFAULT_PASSWORD).await;
        let status = resp.status();
        assert_eq!(
            status,
            201,
            "signup {name}: {}",
            resp.text().await.unwrap_or_default()
        );
        let token = self.login(&name, DEFAULT_PASSWORD).await;
        (name, token)
    }

    /// A fresh room name (`unique_name(room_prefix)`) and one new user per prefix (see
    /// [`Client::new_user`]): how most tests start.
    pub async fn room_with_users<const N: usize>(
        &self,
        room_prefix: &str,
        user_prefixes: [&str; N],
    ) -> (String, [(String, String); N]) {
        let users = bounded_join(user_prefixes.to_vec(), 4, |p| self.new_user(p)).await;
        (unique_name(room_prefix), users.try_into().unwrap())
    }

    /// `n` new users (prefixes `{prefix}0`, `{prefix}1`, …), a few signed up at a time.
    pub async fn new_users(&self, prefix: &str, n: usize) -> Vec<(String, String)> {
        bounded_join((0..n).collect(), 4, |i| {
            let prefix = format!("{prefix}{i}");
            async move { self.new_user(&prefix).await }
        })
        .await
    }

    /// `POST /logout` (or `?all=true`: every badge of the user) with `token`.
    pub async fn logout(&self, token: &str, all: bool) -> Response {
        let path = if all { "/logout?all=true" } else { "/logout" };
        self.post(path)
            .bearer_auth(token)
            .send()
            .await
            .expect("POST /logout")
    }

    // -----------------------------------------------------------------------------------------
    // Authenticated reads, private rooms
    // -----------------------------------------------------------------------------------------

    /// `GET path` with `Authorization: Bearer <token>`.
    pub async fn get_bearer(&self, path: &str, token: &str) -> Response {
        self.get(path)
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` with a bearer; asserts 200 and returns the JSON body.
    pub async fn get_ok(&self, path: &str, token: &str) -> Value {
        let (status, v) = status_json(self.get_bearer(path, token).await, path).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// `POST /rooms` `{"room_id", "private": true}` as `token`.
    pub async fn create_private_room(&self, token: &str, room: &str) -> Response {
        self.post("/rooms")
            .bearer_auth(token)
            .json(&json!({"room_id": room, "private": true}))
            .send()
            .await
            .expect("POST /rooms")
    }

    /// `PUT` or `DELETE /rooms/{room}/members/{user}` as `token`.
    pub async fn change_member(
        &self,
        method: Method,
        token: &str,
        room: &str,
        user: &str,
    ) -> Response {
        self.request(method, &format!("/rooms/{room}/members/{user}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("PUT/DELETE member")
    }

    /// A new private room owned by `owner_token`'s user, with `member` added; asserts both steps.
    pub async fn private_room_with_member(&self, owner_token: &str, room: &str, member: &str) {
        let created = self.create_private_room(owner_token, room).await;
        assert_eq!(created.status(), 201, "POST /rooms {room}");
        let added = self
            .change_member(Method::PUT, owner_token, room, member)
            .await;
        assert_eq!(added.status(), 200, "PUT member {member} in {room}");
    }

    /// Every stored message of `room`, oldest first, read back from the newest in pages of 100
    /// (`GET /rooms/{room}/messages?before=`).
    pub async fn all_messages(&self, room: &str, token: &str) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        let mut path = format!("/rooms/{room}/messages?limit=100");
        loop {
            let v = self.get_ok(&path, token).await;
            let mut page = v["messages"].as_array().expect("a messages array").clone();
            let oldest = page.first().map(|m| m["id"].as_i64().expect("integer id"));
            page.append(&mut all);
            all = page;
            match oldest {
                Some(id) if v["has_more"] == true => {
                    path = format!("/rooms/{room}/messages?limit=100&before={id}");
                }
                _ => return all,
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Upgrades over plain HTTP
    // -----------------------------------------------------------------------------------------

    /// GET `path` with the headers of a WebSocket upgrade (so the Worker sees an upgrade attempt)
    /// and `extra` ones, over plain HTTP: for asserting the answers to refused upgrades.
    pub async fn upgrade_attempt_with(&self, path: &str, extra: &[(&str, &str)]) -> Response {
        let mut req = self
            .get(path)
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.send().await.expect("GET with upgrade headers")
    }

    /// [`Client::upgrade_attempt_with`] with no other header.
    pub async fn upgrade_attempt(&self, path: &str) -> Response {
        self.upgrade_attempt_with(path, &[]).await
    }
}

/// `/ws/{room}?token=…`: the path of a room's socket with the badge in the query.
pub fn ws_path(room: &str, token: &str) -> String {
    format!("/ws/{room}?token={}", urlencode(token))
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

/// Status and JSON body of a response (panics on a non-JSON body).
pub async fn status_json(resp: Response, what: &str) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let v = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}), status {status}: {body}"));
    (status, v)
}

/// Asserts `resp` has `status` and a JSON body `{"detail": "<non-empty string>", ...}`; returns
/// the body.
pub async fn expect_json_error(resp: Response, status: u16, what: &str) -> Value {
    expect_json_error_in(resp, &[status], what).await
}

/// Like [`expect_json_error`] but any of `statuses` is accepted.
pub async fn expect_json_error_in(resp: Response, statuses: &[u16], what: &str) -> Value {
    let got = resp.status().as_u16();
    let ctype = header(&resp, "content-type");
    let body = resp.text().await.unwrap_or_default();
    assert!(
        statuses.contains(&got),
        "{what}: expected status in {statuses:?}, got {got}: {body}"
    );
    assert!(
        ctype.starts_with("application/json"),
        "{what}: expected a JSON content-type, got {ctype:?} ({body})"
    );
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body}"));
    let detail = v["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no string `detail` in {body}"));
    assert!(!detail.is_empty(), "{what}: empty detail");
    v
}

/// A response header as text ("" when absent).
pub fn header(resp: &Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Percent-encodes everything but the URL-safe characters.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}
