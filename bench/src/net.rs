//! What both load tools (`clubhouse-bench` and `storm`) need to reach a server: sign-up and login,
//! a WebSocket with its connect time, and a name prefix for a run's users and rooms.

use std::time::Instant;

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// One socket to `/ws/{room}?token=…` plus `extra_query` (e.g. `&since=5`): TCP connect and
/// WebSocket handshake, and the time both took (ms).
pub async fn connect_ws(
    base_ws: &str,
    room: &str,
    token: &str,
    extra_query: &str,
) -> Result<(Ws, f64), String> {
    let url = format!("{base_ws}/ws/{room}?token={token}{extra_query}");
    let req = url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let host = req.uri().host().ok_or("no host")?.to_string();
    let port = req.uri().port_u16().unwrap_or(80);
    let t0 = Instant::now();
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("tcp: {e}"))?;
    tcp.set_nodelay(true).ok();
    let (ws, _response) = tokio_tungstenite::client_async(req, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok((ws, t0.elapsed().as_secs_f64() * 1e3))
}

/// The next frame a reader gets (`Some(None)`: the stream ended), or `None` once `stop` is set;
/// a set `stop` wins over frames already waiting.
pub async fn next_unless_stopped(
    stream: &mut SplitStream<Ws>,
    stop: &mut watch::Receiver<bool>,
) -> Option<Option<Result<Message, Error>>> {
    if *stop.borrow_and_update() {
        return None;
    }
    tokio::select! {
        biased;
        _ = stop.changed() => None,
        m = stream.next() => Some(m),
    }
}

/// A name prefix starting with `first`, unlikely to collide with an earlier run's users and rooms
/// on the same server.
pub fn random_prefix(first: char) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut x = t ^ ((std::process::id() as u64) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    // xorshift to mix
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::from(first);
    for _ in 0..7 {
        s.push(A[(x % 36) as usize] as char);
        x /= 36;
    }
    s
}

/// A login: status, ms and the access token if one came back; or the transport error.
pub type Login = Result<(u16, f64, Option<String>), String>;

/// `POST /users/`: status and ms.
pub async fn sign_up(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> Result<(u16, f64), String> {
    let body = serde_json::json!({"username": user, "password": password}).to_string();
    let (status, _, ms) = post(client, base, "/users/", "application/json", body).await?;
    Ok((status, ms))
}

/// `POST /token` (a form, as OAuth2's password flow): status, ms and the access token if one came
/// back.
pub async fn log_in(client: &reqwest::Client, base: &str, user: &str, password: &str) -> Login {
    let body = format!(
        "username={}&password={}",
        form_enc(user),
        form_enc(password)
    );
    let (status, bytes, ms) = post(
        client,
        base,
        "/token",
        "application/x-www-form-urlencoded",
        body,
    )
    .await?;
    let bytes = bytes.map_err(|e| e.to_string())?;
    let token = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("access_token")?.as_str().map(str::to_owned));
    Ok((status, ms, token))
}

/// POSTs `body` to the server's `path`: the status, the answer's body (a failed read is the caller's to judge)
/// and the time until the whole answer was read, in ms.
async fn post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    content_type: &str,
    body: String,
) -> Result<(u16, reqwest::Result<Vec<u8>>, f64), String> {
    let t0 = Instant::now();
    let r = client
        .post(format!("{base}{path}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let bytes = r.bytes().await.map(|b| b.to_vec());
    Ok((status, bytes, t0.elapsed().as_secs_f64() * 1e3))
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
