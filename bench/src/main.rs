//! clubhouse-bench: a native load generator for the Clubhouse chat API (and anything with the same API, such as
//! the JavaScript Durable Object baseline in shared/peers/js-do).
//!
//! Phases: sign up U users -> get U tokens (timed) -> optional login burst (N logins, concurrency K, timed) ->
//! open C WebSockets over R rooms (connect+handshake timed) -> settle -> S senders send M messages each
//! (open loop at a rate, or closed loop on their own echo with a window W) -> drain -> report.
//!
//! Every message's content is `b|<sender>|<seq>|<send_ns>`; receivers keep a bitset per expected (sender, seq)
//! so lost and duplicated deliveries are counted exactly. Optional server CPU (utime+stime from /proc) is read
//! just before the first send and just after the last delivery, and divided by the deliveries.
//!
//! Output: a human summary on stderr-ish lines, then ONE JSON line (the last line of stdout).

mod procs;

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "clubhouse-bench",
    about = "Load generator for the Clubhouse chat API"
)]
struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:8788
    #[arg(long)]
    url: String,
    /// Free-form label copied into the JSON (e.g. "clubhouse" or "baseline").
    #[arg(long, default_value = "")]
    label: String,
    /// Users to sign up (default: min(clients, 100), at least 1). Connections reuse users round-robin.
    #[arg(long)]
    users: Option<usize>,
    /// Password used for every bench user (8..128 chars).
    #[arg(long, default_value = "bench-password-123")]
    password: String,
    /// Concurrency of the signup and token phases.
    #[arg(long, default_value_t = 8)]
    setup_concurrency: usize,
    /// Login burst: number of extra POST /token requests (0 = none).
    #[arg(long, default_value_t = 0)]
    login_burst: usize,
    /// Concurrency K of the login burst.
    #[arg(long, default_value_t = 8)]
    login_concurrency: usize,
    /// WebSocket connections (0 = no WebSocket phase).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Rooms the connections are spread over (connection k joins room k % rooms).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Senders (sender j is connection j, so senders spread over the rooms round-robin).
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Messages per sender.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Messages per second per sender (open loop). 0 = closed loop: send when own echoes come back (window).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Closed loop: messages in flight per sender (awaiting their own echo).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Closed loop: give up waiting for an echo after this many seconds (counted as ack_timeouts).
    #[arg(long, default_value_t = 5.0)]
    ack_timeout: f64,
    /// Concurrent WebSocket connects.
    #[arg(long, default_value_t = 32)]
    connect_concurrency: usize,
    /// Writes one line per connection of the burst to this file: index, room, start and
    /// duration in ms since the burst began (where a connect tail comes from).
    #[arg(long)]
    connect_log: Option<String>,
    /// After all sockets are connected, wait until no frame arrived for this long (join/presence storms).
    #[arg(long, default_value_t = 300)]
    settle_ms: u64,
    /// Cap on the settle wait, seconds.
    #[arg(long, default_value_t = 60.0)]
    settle_max: f64,
    /// After the last send, wait at most this long for outstanding deliveries (seconds).
    #[arg(long, default_value_t = 10.0)]
    drain_timeout: f64,
    /// Server processes to read CPU from (comma separated). Descendants are included.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Find the server processes from the port wrangler dev listens on (its process group).
    #[arg(long)]
    server_port: Option<u16>,
    /// Run prefix for user and room names (default: random).
    #[arg(long)]
    prefix: Option<String>,
    /// After the last expected delivery (or the drain timeout), keep reading this long to catch late duplicates.
    #[arg(long, default_value_t = 300)]
    linger_ms: u64,
    /// Tokio worker threads (1 = current-thread runtime; the server needs the other core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print progress lines.
    #[arg(long, short)]
    verbose: bool,
}

fn main() {
    let args = Args::parse();
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let code = rt.block_on(run(args));
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------------------------------
// small helpers

fn pct_sorted(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let idx = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[idx]
}

/// Summary of latencies in milliseconds.
fn lat_summary(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    let mean = if n > 0 {
        v.iter().sum::<f64>() / n as f64
    } else {
        f64::NAN
    };
    json!({
        "n": n,
        "p50_ms": num(pct_sorted(&v, 0.50)),
        "p90_ms": num(pct_sorted(&v, 0.90)),
        "p99_ms": num(pct_sorted(&v, 0.99)),
        "max_ms": num(v.last().copied().unwrap_or(f64::NAN)),
        "mean_ms": num(mean),
    })
}

/// JSON number rounded to 3 decimals, or null for NaN/inf.
fn num(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

fn random_prefix() -> String {
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
    let mut s = String::from("b");
    for _ in 0..7 {
        s.push(A[(x % 36) as usize] as char);
        x /= 36;
    }
    s
}

fn self_cpu_us() -> u64 {
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP phases

struct HttpOutcome {
    lat_ms: Vec<f64>,
    ok: usize,
    fail: usize,
    statuses: std::collections::BTreeMap<u16, usize>,
    first_error: Option<String>,
}

async fn signup(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> Result<(u16, f64), String> {
    let body = json!({"username": user, "password": password}).to_string();
    let t0 = Instant::now();
    let r = client
        .post(format!("{base}/users/"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    Ok((status, t0.elapsed().as_secs_f64() * 1e3))
}

async fn login(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> Result<(u16, f64, Option<String>), String> {
    // usernames are [A-Za-z0-9_.-]; the password is ours too, but encode both to be safe.
    let body = format!(
        "username={}&password={}",
        form_enc(user),
        form_enc(password)
    );
    let t0 = Instant::now();
    let r = client
        .post(format!("{base}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let bytes = r.bytes().await.map_err(|e| e.to_string())?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let token = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
        v.get("access_token")
            .and_then(|t| t.as_str())
            .map(str::to_owned)
    });
    Ok((status, ms, token))
}

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

/// Run `n` jobs with at most `k` in flight; job i gets index i.
async fn run_pool<F, Fut, T>(n: usize, k: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    futures_util::stream::iter(0..n)
        .map(f)
        .buffer_unordered(k.max(1))
        .collect()
        .await
}

// ---------------------------------------------------------------------------------------------------------------
// WebSocket phase

/// Static layout shared by all tasks.
struct Layout {
    messages: usize,
    /// room of connection k
    conn_room: Vec<usize>,
    /// global sender -> room
    sender_room: Vec<usize>,
    /// global sender -> index among the senders of its room
    sender_local: Vec<usize>,
    /// senders per room
    room_nsenders: Vec<usize>,
}

struct Shared {
    base: Instant,
    /// unique in-run deliveries so far
    unique: AtomicU64,
    /// expected unique deliveries (set once all sockets are connected)
    expected: AtomicU64,
    all_delivered: Notify,
    /// any frame received (for settle detection)
    frames: AtomicU64,
    last_delivery_ns: AtomicU64,
    first_send_ns: AtomicU64,
    last_send_ns: AtomicU64,
    measuring: AtomicBool,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

#[derive(Default)]
struct RecvStats {
    frames: u64,
    deliveries: u64,
    unique: u64,
    dups: u64,
    misrouted: u64,
    foreign: u64,
    errors: u64,
    other_types: u64,
    closed_early: bool,
    close_reason: Option<String>,
    lat_us: Vec<u32>,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    t: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

/// Parse `b|<sender>|<seq>|<send_ns>`.
fn parse_content(c: &str) -> Option<(usize, usize, u64)> {
    let mut it = c.strip_prefix("b|")?.split('|');
    let s = it.next()?.parse().ok()?;
    let q = it.next()?.parse().ok()?;
    let ns = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((s, q, ns))
}

async fn reader(
    mut stream: SplitStream<Ws>,
    conn: usize,
    my_sender: Option<usize>,
    ack: Option<Arc<Semaphore>>,
    layout: Arc<Layout>,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> RecvStats {
    let room = layout.conn_room[conn];
    let m = layout.messages;
    let nbits = layout.room_nsenders[room] * m;
    let mut seen = vec![0u64; nbits.div_ceil(64)];
    let mut st = RecvStats {
        lat_us: Vec::with_capacity(nbits),
        ..Default::default()
    };
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        let msg = tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = stream.next() => m,
        };
        let now_ns = shared.now_ns();
        let msg = match msg {
            None => {
                st.closed_early = true;
                st.close_reason.get_or_insert_with(|| "stream ended".into());
                break;
            }
            Some(Err(e)) => {
                st.closed_early = true;
                st.close_reason = Some(e.to_string());
                break;
            }
            Some(Ok(m)) => m,
        };
        let text = match &msg {
            Message::Text(t) => t.as_str(),
            Message::Close(c) => {
                st.closed_early = true;
                st.close_reason = Some(format!("close frame {:?}", c));
                break;
            }
            _ => continue,
        };
        st.frames += 1;
        shared.frames.fetch_add(1, Ordering::Relaxed);
        let f: Frame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(_) => {
                st.other_types += 1;
                continue;
            }
        };
        match f.t.as_ref() {
            "message" => {}
            "error" => {
                st.errors += 1;
                // A rejected send never echoes: release the sender's window slot.
                if let Some(a) = &ack {
                    a.add_permits(1);
                }
                continue;
            }
            _ => {
                st.other_types += 1;
                continue;
            }
        }
        let Some((s, q, send_ns)) = f.content.as_deref().and_then(parse_content) else {
            st.foreign += 1;
            continue;
        };
        st.deliveries += 1;
        if s >= layout.sender_room.len() || q >= m {
            st.foreign += 1;
            continue;
        }
        if layout.sender_room[s] != room {
            st.misrouted += 1;
            continue;
        }
        let bit = layout.sender_local[s] * m + q;
        let (w, b) = (bit / 64, 1u64 << (bit % 64));
        if seen[w] & b != 0 {
            st.dups += 1;
            continue;
        }
        seen[w] |= b;
        st.unique += 1;
        st.lat_us
            .push((now_ns.saturating_sub(send_ns) / 1000).min(u32::MAX as u64) as u32);
        shared.last_delivery_ns.fetch_max(now_ns, Ordering::Relaxed);
        if my_sender == Some(s) {
            if let Some(a) = &ack {
                a.add_permits(1);
            }
        }
        let u = shared.unique.fetch_add(1, Ordering::AcqRel) + 1;
        if shared.measuring.load(Ordering::Acquire) && u == shared.expected.load(Ordering::Acquire)
        {
            shared.all_delivered.notify_one();
        }
    }
    st
}

struct SendStats {
    sent: u64,
    send_errors: u64,
    ack_timeouts: u64,
}

#[allow(clippy::too_many_arguments)]
async fn sender(
    sink: &mut SplitSink<Ws, Message>,
    sender_id: usize,
    room_name: &str,
    args: &Args,
    ack: Option<Arc<Semaphore>>,
    shared: &Shared,
    start: tokio::time::Instant,
) -> SendStats {
    let mut st = SendStats {
        sent: 0,
        send_errors: 0,
        ack_timeouts: 0,
    };
    let ack_to = Duration::from_secs_f64(args.ack_timeout);
    for seq in 0..args.messages {
        if args.rate > 0.0 {
            let at = start + Duration::from_secs_f64(seq as f64 / args.rate);
            tokio::time::sleep_until(at).await;
        } else if let Some(a) = &ack {
            match tokio::time::timeout(ack_to, a.acquire()).await {
                Ok(Ok(p)) => p.forget(),
                _ => st.ack_timeouts += 1,
            }
        }
        let ns = shared.now_ns();
        let txt =
            format!("{{\"content\":\"b|{sender_id}|{seq}|{ns}\",\"room_id\":\"{room_name}\"}}");
        if seq == 0 {
            shared.first_send_ns.fetch_min(ns, Ordering::Relaxed);
        }
        match sink.send(Message::Text(txt)).await {
            Ok(()) => st.sent += 1,
            Err(_) => {
                st.send_errors += 1;
                break;
            }
        }
    }
    shared
        .last_send_ns
        .fetch_max(shared.now_ns(), Ordering::Relaxed);
    st
}

async fn connect_ws(base_ws: &str, room: &str, token: &str) -> Result<(Ws, f64), String> {
    let url = format!("{base_ws}/ws/{room}?token={token}");
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
    let (ws, _resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok((ws, t0.elapsed().as_secs_f64() * 1e3))
}

// ---------------------------------------------------------------------------------------------------------------

async fn run(args: Args) -> i32 {
    let base = args.url.trim_end_matches('/').to_string();
    let base_ws = if let Some(r) = base.strip_prefix("https://") {
        format!("wss://{r}")
    } else if let Some(r) = base.strip_prefix("http://") {
        format!("ws://{r}")
    } else {
        eprintln!("--url must start with http://");
        return 2;
    };
    if base_ws.starts_with("wss://") {
        eprintln!("TLS is not supported by this tool (local wrangler dev only)");
        return 2;
    }
    let prefix = args.prefix.clone().unwrap_or_else(random_prefix);
    let clients = args.clients;
    let rooms = args.rooms.max(1);
    let senders = if clients == 0 {
        0
    } else {
        args.senders.min(clients)
    };
    let n_users = args.users.unwrap_or(clients.clamp(1, 100)).max(1);
    let t_start = Instant::now();
    let progress = |s: &str| {
        if args.verbose {
            eprintln!("[{:>7.2}s] {s}", t_start.elapsed().as_secs_f64());
        }
    };

    // Server processes (for CPU).
    let server = procs::ServerProcs::find(&args.server_pids, args.server_port);
    if let Some(e) = &server.error {
        eprintln!("warning: server processes: {e}");
    }

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");

    // --- signup
    progress(&format!("signing up {n_users} users (prefix {prefix})"));
    let names: Vec<String> = (0..n_users).map(|i| format!("{prefix}_u{i}")).collect();
    let su = {
        let client = &client;
        let base = &base;
        let names = &names;
        let pw = &args.password;
        run_pool(n_users, args.setup_concurrency, |i| async move {
            signup(client, base, &names[i], pw).await
        })
        .await
    };
    let mut signup_o = HttpOutcome {
        lat_ms: vec![],
        ok: 0,
        fail: 0,
        statuses: Default::default(),
        first_error: None,
    };
    for r in su {
        match r {
            Ok((s, ms)) => {
                *signup_o.statuses.entry(s).or_default() += 1;
                if s == 201 {
                    signup_o.ok += 1;
                    signup_o.lat_ms.push(ms);
                } else {
                    signup_o.fail += 1;
                }
            }
            Err(e) => {
                signup_o.fail += 1;
                signup_o.first_error.get_or_insert(e);
            }
        }
    }

    // --- tokens
    progress("getting tokens");
    let tk = {
        let client = &client;
        let base = &base;
        let names = &names;
        let pw = &args.password;
        run_pool(n_users, args.setup_concurrency, |i| async move {
            (i, login(client, base, &names[i], pw).await)
        })
        .await
    };
    let mut tokens: Vec<Option<String>> = vec![None; n_users];
    let mut token_o = HttpOutcome {
        lat_ms: vec![],
        ok: 0,
        fail: 0,
        statuses: Default::default(),
        first_error: None,
    };
    for (i, r) in tk {
        match r {
            Ok((s, ms, tok)) => {
                *token_o.statuses.entry(s).or_default() += 1;
                if s == 200 && tok.is_some() {
                    token_o.ok += 1;
                    token_o.lat_ms.push(ms);
                    tokens[i] = tok;
                } else {
                    token_o.fail += 1;
                }
            }
            Err(e) => {
                token_o.fail += 1;
                token_o.first_error.get_or_insert(e);
            }
        }
    }
    let good_users: Vec<usize> = (0..n_users).filter(|&i| tokens[i].is_some()).collect();

    // --- login burst
    let mut burst_json = Value::Null;
    if args.login_burst > 0 && !good_users.is_empty() {
        progress(&format!(
            "login burst: {} logins, concurrency {}",
            args.login_burst, args.login_concurrency
        ));
        let cpu0 = server.sample();
        let t0 = Instant::now();
        let res = {
            let client = &client;
            let base = &base;
            let names = &names;
            let pw = &args.password;
            let gu = &good_users;
            run_pool(args.login_burst, args.login_concurrency, |i| async move {
                login(client, base, &names[gu[i % gu.len()]], pw).await
            })
            .await
        };
        let wall = t0.elapsed().as_secs_f64();
        let cpu1 = server.sample();
        let mut o = HttpOutcome {
            lat_ms: vec![],
            ok: 0,
            fail: 0,
            statuses: Default::default(),
            first_error: None,
        };
        for r in res {
            match r {
                Ok((s, ms, tok)) => {
                    *o.statuses.entry(s).or_default() += 1;
                    if s == 200 && tok.is_some() {
                        o.ok += 1;
                        o.lat_ms.push(ms);
                    } else {
                        o.fail += 1;
                    }
                }
                Err(e) => {
                    o.fail += 1;
                    o.first_error.get_or_insert(e);
                }
            }
        }
        let ok = o.ok;
        let mut j = http_json(o);
        j["concurrency"] = json!(args.login_concurrency);
        j["wall_s"] = num(wall);
        j["logins_per_s"] = num(ok as f64 / wall);
        j["cpu"] = server.cpu_json(&cpu0, &cpu1, ok as u64, "login");
        burst_json = j;
    }

    let mut out = json!({
        "tool": "clubhouse-bench",
        "label": args.label,
        "url": base,
        "prefix": prefix,
        "config": {
            "users": n_users, "clients": clients, "rooms": rooms, "senders": senders, "messages": args.messages,
            "rate": args.rate, "window": args.window, "drain_timeout": args.drain_timeout, "login_burst": args.login_burst,
            "login_concurrency": args.login_concurrency, "threads": args.threads,
        },
        "signup": http_json(signup_o),
        "token": http_json(token_o),
        "login_burst": burst_json,
    });

    if clients == 0 || good_users.is_empty() {
        if clients > 0 {
            eprintln!("no usable token: cannot open WebSockets");
        }
        out["server"] = server.describe();
        print_summary(&out);
        println!("{}", out);
        return if good_users.is_empty() { 1 } else { 0 };
    }

    // --- layout
    let conn_room: Vec<usize> = (0..clients).map(|k| k % rooms).collect();
    let sender_room: Vec<usize> = (0..senders).map(|j| conn_room[j]).collect();
    let mut room_nsenders = vec![0usize; rooms];
    let mut sender_local = vec![0usize; senders];
    for j in 0..senders {
        sender_local[j] = room_nsenders[sender_room[j]];
        room_nsenders[sender_room[j]] += 1;
    }
    let room_names: Vec<String> = (0..rooms).map(|r| format!("{prefix}-r{r}")).collect();
    let layout = Arc::new(Layout {
        messages: args.messages,
        conn_room,
        sender_room,
        sender_local,
        room_nsenders,
    });
    let shared = Arc::new(Shared {
        base: Instant::now(),
        unique: AtomicU64::new(0),
        expected: AtomicU64::new(u64::MAX),
        all_delivered: Notify::new(),
        frames: AtomicU64::new(0),
        last_delivery_ns: AtomicU64::new(0),
        first_send_ns: AtomicU64::new(u64::MAX),
        last_send_ns: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
    });

    // --- connect
    progress(&format!("connecting {clients} sockets over {rooms} rooms"));
    let cpu_conn0 = server.sample();
    let t_conn = Instant::now();
    let conns = {
        let base_ws = &base_ws;
        let room_names = &room_names;
        let tokens = &tokens;
        let gu = &good_users;
        let layout = &layout;
        run_pool(clients, args.connect_concurrency, |k| async move {
            let tok = tokens[gu[k % gu.len()]].as_deref().unwrap();
            let started_ms = t_conn.elapsed().as_secs_f64() * 1e3;
            (
                k,
                started_ms,
                connect_ws(base_ws, &room_names[layout.conn_room[k]], tok).await,
            )
        })
        .await
    };
    let connect_wall = t_conn.elapsed().as_secs_f64();
    let mut connect_ms = vec![];
    let mut connect_fail = 0usize;
    let mut connect_first_err: Option<String> = None;
    let mut sockets: Vec<Option<Ws>> = (0..clients).map(|_| None).collect();
    if let Some(path) = &args.connect_log {
        let lines: String = conns
            .iter()
            .map(|(k, started, r)| {
                let ms = r.as_ref().map(|(_, ms)| *ms).unwrap_or(f64::NAN);
                format!("{k} {} {started:.3} {ms:.3}\n", layout.conn_room[*k])
            })
            .collect();
        if let Err(e) = std::fs::write(path, lines) {
            eprintln!("warning: --connect-log {path}: {e}");
        }
    }
    for (k, _, r) in conns {
        match r {
            Ok((ws, ms)) => {
                connect_ms.push(ms);
                sockets[k] = Some(ws);
            }
            Err(e) => {
                connect_fail += 1;
                connect_first_err.get_or_insert(e);
            }
        }
    }
    progress(&format!(
        "connected {} / {clients} in {connect_wall:.2}s",
        clients - connect_fail
    ));

    // --- start readers; keep sinks
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut readers = Vec::with_capacity(clients);
    let mut sinks: Vec<Option<SplitSink<Ws, Message>>> = Vec::with_capacity(clients);
    let mut acks: Vec<Option<Arc<Semaphore>>> = vec![None; clients];
    let mut members = vec![0u64; rooms];
    for (k, s) in sockets.into_iter().enumerate() {
        let Some(ws) = s else {
            sinks.push(None);
            continue;
        };
        members[layout.conn_room[k]] += 1;
        let (sink, stream) = ws.split();
        sinks.push(Some(sink));
        let my_sender = (k < senders).then_some(k);
        let ack = (my_sender.is_some() && args.rate <= 0.0)
            .then(|| Arc::new(Semaphore::new(args.window.max(1))));
        acks[k] = ack.clone();
        readers.push(tokio::spawn(reader(
            stream,
            k,
            my_sender,
            ack,
            layout.clone(),
            shared.clone(),
            stop_rx.clone(),
        )));
    }

    // --- settle: wait until no frame arrived for settle_ms (join/presence/history storms) and, when the server's
    // processes are known, until they are idle too (< 10% of one core over the interval); capped at settle_max.
    let t_settle = Instant::now();
    let mut last = shared.frames.load(Ordering::Relaxed);
    let mut last_cpu = server.total_ticks();
    loop {
        let iv = Duration::from_millis(args.settle_ms.max(10));
        tokio::time::sleep(iv).await;
        let now = shared.frames.load(Ordering::Relaxed);
        let cpu = server.total_ticks();
        let busy_us = server.ticks_to_us(cpu.saturating_sub(last_cpu));
        let idle = busy_us as f64 <= iv.as_micros() as f64 * 0.10;
        if (now == last && idle) || t_settle.elapsed().as_secs_f64() > args.settle_max {
            break;
        }
        last = now;
        last_cpu = cpu;
    }
    let settle_s = t_settle.elapsed().as_secs_f64();
    let cpu_conn1 = server.sample();
    let connected = clients - connect_fail;

    // Expected deliveries: every message of a connected sender goes to every connected member of its room.
    let active_senders: Vec<usize> = (0..senders).filter(|&j| sinks[j].is_some()).collect();
    let expected: u64 = active_senders
        .iter()
        .map(|&j| members[layout.sender_room[j]] * args.messages as u64)
        .sum();
    shared.expected.store(expected, Ordering::Release);
    shared.unique.store(0, Ordering::Release); // nothing bench-tagged has been sent yet
    shared.measuring.store(true, Ordering::Release);

    // --- send
    progress(&format!(
        "{} senders x {} messages, expecting {expected} deliveries",
        active_senders.len(),
        args.messages
    ));
    let cpu_send0 = server.sample();
    let self_cpu0 = self_cpu_us();
    let start = tokio::time::Instant::now();
    let mut send_tasks = Vec::new();
    let args_arc = Arc::new(args.clone());
    for &j in &active_senders {
        let mut sink = sinks[j].take().unwrap();
        let ack = acks[j].clone();
        let shared = shared.clone();
        let room = room_names[layout.sender_room[j]].clone();
        let a = args_arc.clone();
        send_tasks.push(tokio::spawn(async move {
            let st = sender(&mut sink, j, &room, &a, ack, &shared, start).await;
            (j, sink, st)
        }));
    }
    let mut sent = 0u64;
    let mut send_errors = 0u64;
    let mut ack_timeouts = 0u64;
    for t in send_tasks {
        let (j, sink, st) = t.await.expect("sender task");
        sinks[j] = Some(sink);
        sent += st.sent;
        send_errors += st.send_errors;
        ack_timeouts += st.ack_timeouts;
    }
    progress("all sent; draining");
    let drained = if shared.unique.load(Ordering::Acquire) >= expected {
        true
    } else {
        tokio::time::timeout(
            Duration::from_secs_f64(args.drain_timeout),
            shared.all_delivered.notified(),
        )
        .await
        .is_ok()
            || shared.unique.load(Ordering::Acquire) >= expected
    };
    let cpu_send1 = server.sample();
    let self_cpu1 = self_cpu_us();

    // --- linger (late duplicates are still counted), then stop readers and close sockets
    tokio::time::sleep(Duration::from_millis(args.linger_ms)).await;
    let _ = stop_tx.send(true);
    let mut stats = Vec::with_capacity(readers.len());
    for r in readers {
        stats.push(r.await.expect("reader task"));
    }
    let closes =
        futures_util::future::join_all(sinks.into_iter().flatten().map(|mut s| async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = s.send(Message::Close(None)).await;
                let _ = s.close().await;
            })
            .await;
        }));
    closes.await;

    // --- aggregate
    let mut lat: Vec<u32> = Vec::new();
    let (
        mut unique,
        mut dups,
        mut misrouted,
        mut foreign,
        mut errors,
        mut other,
        mut frames,
        mut closed_early,
    ) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut close_reason = None;
    for s in &mut stats {
        unique += s.unique;
        dups += s.dups;
        misrouted += s.misrouted;
        foreign += s.foreign;
        errors += s.errors;
        other += s.other_types;
        frames += s.frames;
        if s.closed_early {
            closed_early += 1;
            if close_reason.is_none() {
                close_reason = s.close_reason.clone();
            }
        }
        lat.append(&mut s.lat_us);
    }
    lat.sort_unstable();
    let lost = expected.saturating_sub(unique);
    let first = shared.first_send_ns.load(Ordering::Relaxed);
    let lastd = shared.last_delivery_ns.load(Ordering::Relaxed);
    let dur_s = if first != u64::MAX && lastd > first {
        (lastd - first) as f64 / 1e9
    } else {
        f64::NAN
    };
    let send_dur_s = {
        let ls = shared.last_send_ns.load(Ordering::Relaxed);
        if first != u64::MAX && ls > first {
            (ls - first) as f64 / 1e9
        } else {
            f64::NAN
        }
    };
    let lp = |q: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let idx = ((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[idx] as f64 / 1000.0
    };
    let lat_mean = if lat.is_empty() {
        f64::NAN
    } else {
        lat.iter().map(|&x| x as f64).sum::<f64>() / lat.len() as f64 / 1000.0
    };

    let mut conn_j = lat_summary(connect_ms);
    conn_j["ok"] = json!(connected);
    conn_j["fail"] = json!(connect_fail);
    conn_j["first_error"] = json!(connect_first_err);
    conn_j["wall_s"] = num(connect_wall);
    conn_j["settle_s"] = num(settle_s);
    conn_j["cpu"] = server.cpu_json(&cpu_conn0, &cpu_conn1, connected as u64, "connection");
    conn_j["rss_kb_per_socket"] = server.rss_delta_json(&cpu_conn0, &cpu_conn1, connected as u64);

    out["connect"] = conn_j;
    out["run"] = json!({
        "senders_active": active_senders.len(),
        "sent": sent,
        "send_errors": send_errors,
        "ack_timeouts": ack_timeouts,
        "expected": expected,
        "delivered": unique,
        "lost": lost,
        "dup": dups,
        "misrouted": misrouted,
        "foreign": foreign,
        "error_frames": errors,
        "other_frames": other,
        "frames": frames,
        "closed_early": closed_early,
        "close_reason": close_reason,
        "drained": drained,
        "duration_s": num(dur_s),
        "send_duration_s": num(send_dur_s),
        "deliveries_per_s": num(unique as f64 / dur_s),
        "messages_per_s": num(sent as f64 / dur_s),
        "latency_ms": {
            "p50": num(lp(0.5)), "p90": num(lp(0.9)), "p99": num(lp(0.99)), "max": num(lp(1.0)), "mean": num(lat_mean),
        },
        "client_cpu_us": self_cpu1 - self_cpu0,
        "client_cpu_us_per_delivery": num((self_cpu1 - self_cpu0) as f64 / unique.max(1) as f64),
    });
    out["cpu"] = server.cpu_json(&cpu_send0, &cpu_send1, unique, "delivery");
    out["server"] = server.describe();
    print_summary(&out);
    println!("{}", out);
    0
}

fn http_json(o: HttpOutcome) -> Value {
    let mut j = lat_summary(o.lat_ms);
    j["ok"] = json!(o.ok);
    j["fail"] = json!(o.fail);
    j["statuses"] = json!(o
        .statuses
        .iter()
        .map(|(k, v)| (k.to_string(), json!(*v)))
        .collect::<serde_json::Map<_, _>>());
    j["first_error"] = json!(o.first_error);
    j
}

fn g<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for p in path.split('.') {
        cur = &cur[p];
    }
    cur
}

fn print_summary(o: &Value) {
    let f = |p: &str| -> String {
        match g(o, p) {
            Value::Null => "-".into(),
            v => v.to_string(),
        }
    };
    println!(
        "== clubhouse-bench {} {} (prefix {})",
        f("label"),
        f("url"),
        f("prefix")
    );
    println!(
        "signup : ok {} fail {}  p50 {} ms  p99 {} ms",
        f("signup.ok"),
        f("signup.fail"),
        f("signup.p50_ms"),
        f("signup.p99_ms")
    );
    println!(
        "token  : ok {} fail {}  p50 {} ms  p99 {} ms",
        f("token.ok"),
        f("token.fail"),
        f("token.p50_ms"),
        f("token.p99_ms")
    );
    if !o["login_burst"].is_null() {
        println!(
            "burst  : ok {} fail {}  conc {}  p50 {} ms  p99 {} ms  {} logins/s  server CPU {} us/login (worker {})",
            f("login_burst.ok"),
            f("login_burst.fail"),
            f("login_burst.concurrency"),
            f("login_burst.p50_ms"),
            f("login_burst.p99_ms"),
            f("login_burst.logins_per_s"),
            f("login_burst.cpu.total_us_per_login"),
            f("login_burst.cpu.worker_us_per_login"),
        );
    }
    if !o["connect"].is_null() {
        println!(
            "connect: ok {} fail {}  p50 {} ms  p99 {} ms  max {} ms  (wall {} s, settle {} s)",
            f("connect.ok"),
            f("connect.fail"),
            f("connect.p50_ms"),
            f("connect.p99_ms"),
            f("connect.max_ms"),
            f("connect.wall_s"),
            f("connect.settle_s")
        );
        println!(
            "run    : sent {}  expected {}  delivered {}  lost {}  dup {}  misrouted {}  error frames {}  closed {}",
            f("run.sent"),
            f("run.expected"),
            f("run.delivered"),
            f("run.lost"),
            f("run.dup"),
            f("run.misrouted"),
            f("run.error_frames"),
            f("run.closed_early")
        );
        println!(
            "rate   : {} deliveries/s over {} s  ({} msgs/s)",
            f("run.deliveries_per_s"),
            f("run.duration_s"),
            f("run.messages_per_s")
        );
        println!(
            "latency: p50 {} ms  p90 {} ms  p99 {} ms  max {} ms",
            f("run.latency_ms.p50"),
            f("run.latency_ms.p90"),
            f("run.latency_ms.p99"),
            f("run.latency_ms.max")
        );
        if let Some(g) = o["cpu"]["stale_pids"].as_array().filter(|g| !g.is_empty()) {
            println!("cpu    : INVALID: server process(es) {g:?} exited during the run (wrangler restarted the Worker?)");
        }
        if o["cpu"]["available"] == json!(true) {
            println!(
                "cpu    : {} us/delivery total  worker {}  proxy {}  other {}  (client {} us/delivery)",
                f("cpu.total_us_per_delivery"),
                f("cpu.worker_us_per_delivery"),
                f("cpu.proxy_us_per_delivery"),
                f("cpu.other_us_per_delivery"),
                f("run.client_cpu_us_per_delivery")
            );
        }
    }
}
