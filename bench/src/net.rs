//! What both load tools (`clubhouse-bench` and `storm`) need to reach a server: a WebSocket with
//! its connect time, and a name prefix for a run's users and rooms.

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
