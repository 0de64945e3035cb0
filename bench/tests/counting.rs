//! End-to-end check of the lost / duplicate / error-frame counting against a deliberately faulty mock chat server:
//! for a message with seq % 10 == 3 one member (not the sender) never gets it, seq % 10 == 5 is delivered twice to
//! everyone, seq % 10 == 7 is rejected with an `error` frame to the sender and never broadcast. Every member also
//! gets a `presence` frame on connect, which the tool must ignore.

#![allow(clippy::result_large_err)] // the tungstenite handshake callback's signature

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

type Members = Arc<Mutex<HashMap<String, Vec<(usize, mpsc::UnboundedSender<String>)>>>>;

async fn http(mut s: TcpStream) {
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    // read headers + body (content-length)
    loop {
        let r = s.read(&mut buf[n..]).await.unwrap_or(0);
        if r == 0 {
            return;
        }
        n += r;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if let Some(h) = text.find("\r\n\r\n") {
            let cl = text[..h]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if n >= h + 4 + cl {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let (status, body) = if text.starts_with("POST /users/") {
        ("201 Created", r#"{"username":"x"}"#)
    } else if text.starts_with("POST /token") {
        ("200 OK", r#"{"access_token":"tok","token_type":"bearer"}"#)
    } else {
        ("404 Not Found", r#"{"detail":"Not Found"}"#)
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

async fn ws(s: TcpStream, members: Members, next_id: Arc<Mutex<usize>>) {
    let mut room = String::new();
    let cb = |req: &Request, resp: Response| {
        let p = req.uri().path();
        room = p.trim_start_matches("/ws/").to_string();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(s, cb).await else {
        return;
    };
    let me = {
        let mut g = next_id.lock().unwrap();
        *g += 1;
        *g
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    members
        .lock()
        .unwrap()
        .entry(room.clone())
        .or_default()
        .push((me, tx.clone()));
    let _ = tx.send(r#"{"type":"presence","users":["a"]}"#.to_string());
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(Message::Text(m)).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(m)) = stream.next().await {
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        let content = v["content"].as_str().unwrap().to_string();
        let seq: usize = content.split('|').nth(2).unwrap().parse().unwrap();
        let out = serde_json::json!({"type":"message","id":1,"room_id":room,"username":"u","content":content,"ts":0})
            .to_string();
        if seq % 10 == 7 {
            let _ = tx.send(r#"{"type":"error","detail":"rate limited"}"#.to_string());
            continue;
        }
        let list = members
            .lock()
            .unwrap()
            .get(&room)
            .cloned()
            .unwrap_or_default();
        let victim = list.iter().find(|(id, _)| *id != me).map(|(id, _)| *id);
        for (id, peer) in &list {
            if seq % 10 == 3 && Some(*id) == victim {
                continue;
            }
            let _ = peer.send(out.clone());
            if seq % 10 == 5 {
                let _ = peer.send(out.clone());
            }
        }
    }
    writer.abort();
}

async fn serve(l: TcpListener) {
    let members: Members = Default::default();
    let next_id = Arc::new(Mutex::new(0usize));
    loop {
        let (s, _) = l.accept().await.unwrap();
        let (members, next_id) = (members.clone(), next_id.clone());
        tokio::spawn(async move {
            let mut peek = [0u8; 8];
            let n = s.peek(&mut peek).await.unwrap_or(0);
            if n >= 4 && &peek[..4] == b"GET " {
                ws(s, members, next_id).await;
            } else {
                http(s).await;
            }
        });
    }
}

/// Starts the mock server on a free port; it runs as long as the returned runtime lives.
fn start_mock() -> (tokio::runtime::Runtime, u16) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let l = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = l.local_addr().unwrap().port();
    rt.spawn(serve(l));
    (rt, port)
}

/// Runs the tool against the mock with `extra` (space-separated arguments); its JSON line.
fn run_bench(port: u16, extra: &str) -> Value {
    let url = format!("http://127.0.0.1:{port}");
    let out = Command::new(env!("CARGO_BIN_EXE_clubhouse-bench"))
        .args(["--url", &url])
        .args("--drain-timeout 1 --ack-timeout 1 --settle-ms 100".split_whitespace())
        .args(extra.split_whitespace())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// The counts every run against the mock must show: `expected` deliveries, of which `lost`, `dup` and
/// `error_frames` as the mock's faults make them, and nothing misrouted.
fn assert_counts(r: &Value, expected: u64, lost: u64, dup: u64, error_frames: u64) {
    assert_eq!(r["expected"], expected, "{r}");
    assert_eq!(r["lost"], lost, "{r}");
    assert_eq!(r["dup"], dup, "{r}");
    assert_eq!(r["error_frames"], error_frames, "{r}");
    assert_eq!(r["misrouted"], 0, "{r}");
}

#[test]
fn counts_lost_duplicated_and_error_frames() {
    let (_rt, port) = start_mock();

    // one room, 5 clients, 1 sender, 100 messages, closed loop window 2
    let j = run_bench(port, "--clients 5 --messages 100 --window 2");
    let r = &j["run"];
    let c = 5u64;
    // seq%10==3: 10 messages miss one member; seq%10==7: 10 messages reach nobody
    assert_counts(r, 100 * c, 10 + 10 * c, 10 * c, 10);
    assert_eq!(r["delivered"], 100 * c - (10 + 10 * c));
    assert_eq!(r["other_frames"], c, "one presence frame per client");
    assert_eq!(
        r["ack_timeouts"], 0,
        "error frames and echoes must release the window: {r}"
    );
    assert_eq!(r["sent"], 100);

    // 3 rooms x 4 clients, 3 senders (one per room), open loop at 2000 msgs/s
    let j = run_bench(
        port,
        "--clients 12 --rooms 3 --senders 3 --messages 50 --rate 2000",
    );
    let r = &j["run"];
    let per_room = 4u64;
    assert_counts(
        r,
        3 * 50 * per_room,
        3 * (5 + 5 * per_room),
        3 * 5 * per_room,
        3 * 5,
    );
    assert!(r["latency_ms"]["p99"].as_f64().unwrap() >= 0.0);
}

#[test]
fn parses_login_burst() {
    let (_rt, port) = start_mock();
    let j = run_bench(
        port,
        "--clients 0 --users 3 --login-burst 20 --login-concurrency 4",
    );
    assert_eq!(j["signup"]["ok"], 3);
    assert_eq!(j["token"]["ok"], 3);
    assert_eq!(j["login_burst"]["ok"], 20);
    assert_eq!(j["login_burst"]["fail"], 0);
    assert!(j["login_burst"]["p99_ms"].as_f64().is_some());
}
