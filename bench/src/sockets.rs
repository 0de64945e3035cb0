//! The WebSocket phases: connect every socket, warm up (a reader per socket, then settle), send, drain, and
//! collect what each socket counted.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::accounts::Accounts;
use crate::{run_pool, Args, Ctx};

use crate::net::{connect_ws, Ws};
type Sink = SplitSink<Ws, Message>;

/// Who is where, fixed for the run: connection k is in room k % rooms; sender j is connection j.
pub struct Layout {
    messages: usize,
    room_names: Vec<String>,
    /// room of connection k
    conn_room: Vec<usize>,
    /// global sender -> room
    sender_room: Vec<usize>,
    /// global sender -> index among the senders of its room
    sender_local: Vec<usize>,
    /// senders per room
    room_nsenders: Vec<usize>,
}

impl Layout {
    pub fn new(ctx: &Ctx) -> Layout {
        let (clients, rooms, senders) = (ctx.clients, ctx.rooms, ctx.senders);
        let conn_room: Vec<usize> = (0..clients).map(|k| k % rooms).collect();
        let sender_room: Vec<usize> = (0..senders).map(|j| conn_room[j]).collect();
        let mut room_nsenders = vec![0usize; rooms];
        let mut sender_local = vec![0usize; senders];
        for j in 0..senders {
            sender_local[j] = room_nsenders[sender_room[j]];
            room_nsenders[sender_room[j]] += 1;
        }
        Layout {
            messages: ctx.args.messages,
            room_names: (0..rooms).map(|r| format!("{}-r{r}", ctx.prefix)).collect(),
            conn_room,
            sender_room,
            sender_local,
            room_nsenders,
        }
    }
}

/// Counters every reader and sender task updates, and the clock message timestamps are taken on.
pub struct Shared {
    base: Instant,
    /// unique in-run deliveries so far
    unique: AtomicU64,
    /// expected unique deliveries (set once all sockets are connected)
    expected: AtomicU64,
    all_delivered: Notify,
    /// any frame received (for settle detection)
    frames: AtomicU64,
    pub last_delivery_ns: AtomicU64,
    pub first_send_ns: AtomicU64,
    pub last_send_ns: AtomicU64,
    measuring: AtomicBool,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            base: Instant::now(),
            unique: AtomicU64::new(0),
            expected: AtomicU64::new(u64::MAX),
            all_delivered: Notify::new(),
            frames: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            first_send_ns: AtomicU64::new(u64::MAX),
            last_send_ns: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
        }
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

// ---------------------------------------------------------------------------------------------------------------
// connect

/// The connect burst: the open sockets (by connection index) and how long each handshake took.
pub struct Connects {
    pub sockets: Vec<Option<Ws>>,
    pub ms: Vec<f64>,
    pub fail: usize,
    pub first_error: Option<String>,
    pub wall_s: f64,
}

impl Connects {
    /// Sockets opened (each success left its handshake time).
    pub fn ok(&self) -> usize {
        self.ms.len()
    }
}

/// Opens `clients` sockets, `--connect-concurrency` handshakes in flight, each with its user's token
/// (round-robin over the usable users); with `--connect-log`, writes one line per connection.
pub async fn connect(ctx: &Ctx, layout: &Layout, accounts: &Accounts) -> Connects {
    let t_conn = Instant::now();
    let usable = &accounts.usable;
    let conns = run_pool(ctx.clients, ctx.args.connect_concurrency, |k| async move {
        let tok = accounts.tokens[usable[k % usable.len()]]
            .as_deref()
            .unwrap();
        let started_ms = t_conn.elapsed().as_secs_f64() * 1e3;
        let room = &layout.room_names[layout.conn_room[k]];
        let batch = ctx.args.batch;
        (
            k,
            started_ms,
            connect_ws(&ctx.base_ws, room, tok, if batch { "&batch=1" } else { "" }).await,
        )
    })
    .await;
    let wall_s = t_conn.elapsed().as_secs_f64();
    if let Some(path) = &ctx.args.connect_log {
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
    let mut c = Connects {
        sockets: (0..ctx.clients).map(|_| None).collect(),
        ms: vec![],
        fail: 0,
        first_error: None,
        wall_s,
    };
    for (k, _, r) in conns {
        match r {
            Ok((ws, ms)) => {
                c.ms.push(ms);
                c.sockets[k] = Some(ws);
            }
            Err(e) => {
                c.fail += 1;
                c.first_error.get_or_insert(e);
            }
        }
    }
    c
}

// ---------------------------------------------------------------------------------------------------------------
// warm up

/// The open sockets once their readers run: the write halves (a sender's is lent to its send task), the senders'
/// windows, the members per room, and the switch that stops the readers.
pub struct Members {
    readers: Vec<JoinHandle<RecvStats>>,
    sinks: Vec<Option<Sink>>,
    acks: Vec<Option<Arc<Semaphore>>>,
    per_room: Vec<u64>,
    stop: watch::Sender<bool>,
}

/// Starts a reader on every open socket (each counts its frames from now on) and keeps the write halves.
pub fn warm_up(
    ctx: &Ctx,
    layout: &Arc<Layout>,
    shared: &Arc<Shared>,
    sockets: Vec<Option<Ws>>,
) -> Members {
    let (stop, stop_rx) = watch::channel(false);
    let mut m = Members {
        readers: Vec::with_capacity(sockets.len()),
        sinks: Vec::with_capacity(sockets.len()),
        acks: vec![None; sockets.len()],
        per_room: vec![0u64; ctx.rooms],
        stop,
    };
    for (k, s) in sockets.into_iter().enumerate() {
        let Some(ws) = s else {
            m.sinks.push(None);
            continue;
        };
        m.per_room[layout.conn_room[k]] += 1;
        let (sink, stream) = ws.split();
        m.sinks.push(Some(sink));
        let my_sender = (k < ctx.senders).then_some(k);
        let ack = (my_sender.is_some() && ctx.args.rate <= 0.0)
            .then(|| Arc::new(Semaphore::new(ctx.args.window.max(1))));
        m.acks[k] = ack.clone();
        m.readers.push(tokio::spawn(reader(
            stream,
            k,
            my_sender,
            ack,
            layout.clone(),
            shared.clone(),
            stop_rx.clone(),
        )));
    }
    m
}

/// Waits until no frame arrived for `--settle-ms` (the join, presence and history frames of the connects) and,
/// when the server's processes are known, until they are idle too (< 10% of one core over the interval); at most
/// `--settle-max` seconds. Returns the time waited (s).
pub async fn settle(ctx: &Ctx, shared: &Shared) -> f64 {
    let server = &ctx.server;
    let t_settle = Instant::now();
    let mut last = shared.frames.load(Ordering::Relaxed);
    let mut last_cpu = server.total_ticks();
    loop {
        let iv = Duration::from_millis(ctx.args.settle_ms.max(10));
        tokio::time::sleep(iv).await;
        let now = shared.frames.load(Ordering::Relaxed);
        let cpu = server.total_ticks();
        let busy_us = server.ticks_to_us(cpu.saturating_sub(last_cpu));
        let idle = busy_us as f64 <= iv.as_micros() as f64 * 0.10;
        if (now == last && idle) || t_settle.elapsed().as_secs_f64() > ctx.args.settle_max {
            break;
        }
        last = now;
        last_cpu = cpu;
    }
    t_settle.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------------------------------------------------------
// send

impl Members {
    /// Arms the count: every message of a connected sender goes to every connected member of its room. Returns
    /// the senders whose socket is open and the deliveries expected.
    pub fn expect(&self, layout: &Layout, shared: &Shared, messages: usize) -> (Vec<usize>, u64) {
        let active: Vec<usize> = (0..layout.sender_room.len())
            .filter(|&j| self.sinks[j].is_some())
            .collect();
        let expected: u64 = active
            .iter()
            .map(|&j| self.per_room[layout.sender_room[j]] * messages as u64)
            .sum();
        shared.expected.store(expected, Ordering::Release);
        shared.unique.store(0, Ordering::Release); // nothing bench-tagged has been sent yet
        shared.measuring.store(true, Ordering::Release);
        (active, expected)
    }
}

#[derive(Default)]
pub struct SendStats {
    pub sent: u64,
    pub send_errors: u64,
    pub ack_timeouts: u64,
}

/// Runs every active sender at once, each on its own socket, and sums what they did.
pub async fn send(
    ctx: &Ctx,
    layout: &Layout,
    shared: &Arc<Shared>,
    members: &mut Members,
    active: &[usize],
) -> SendStats {
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    let args = Arc::new(ctx.args.clone());
    for &j in active {
        let mut sink = members.sinks[j].take().unwrap();
        let ack = members.acks[j].clone();
        let shared = shared.clone();
        let room = layout.room_names[layout.sender_room[j]].clone();
        let a = args.clone();
        tasks.push(tokio::spawn(async move {
            let st = sender(&mut sink, j, &room, &a, ack, &shared, start).await;
            (j, sink, st)
        }));
    }
    let mut total = SendStats::default();
    for t in tasks {
        let (j, sink, st) = t.await.expect("sender task");
        members.sinks[j] = Some(sink);
        total.sent += st.sent;
        total.send_errors += st.send_errors;
        total.ack_timeouts += st.ack_timeouts;
    }
    total
}

/// One sender: `--messages` messages, paced by `--rate` (open loop) or by its own echoes (closed loop: at most
/// `--window` in flight; an echo or an error frame frees a slot).
async fn sender(
    sink: &mut Sink,
    sender_id: usize,
    room_name: &str,
    args: &Args,
    ack: Option<Arc<Semaphore>>,
    shared: &Shared,
    start: tokio::time::Instant,
) -> SendStats {
    let mut st = SendStats::default();
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

// ---------------------------------------------------------------------------------------------------------------
// drain and collect

/// After the last send: waits until every expected delivery arrived, at most `timeout_s`. True if all did.
pub async fn drain(shared: &Shared, expected: u64, timeout_s: f64) -> bool {
    if shared.unique.load(Ordering::Acquire) >= expected {
        return true;
    }
    tokio::time::timeout(
        Duration::from_secs_f64(timeout_s),
        shared.all_delivered.notified(),
    )
    .await
    .is_ok()
        || shared.unique.load(Ordering::Acquire) >= expected
}

/// Keeps reading `linger_ms` more (late duplicates still count), then stops the readers, takes what each
/// counted, and closes every socket.
pub async fn collect(members: Members, linger_ms: u64) -> Vec<RecvStats> {
    tokio::time::sleep(Duration::from_millis(linger_ms)).await;
    let _ = members.stop.send(true);
    let mut stats = Vec::with_capacity(members.readers.len());
    for r in members.readers {
        stats.push(r.await.expect("reader task"));
    }
    let closes = futures_util::future::join_all(members.sinks.into_iter().flatten().map(
        |mut s| async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = s.send(Message::Close(None)).await;
                let _ = s.close().await;
            })
            .await;
        },
    ));
    closes.await;
    stats
}

// ---------------------------------------------------------------------------------------------------------------
// reading

/// What one socket received.
#[derive(Default)]
pub struct RecvStats {
    pub frames: u64,
    pub deliveries: u64,
    pub unique: u64,
    pub dups: u64,
    pub misrouted: u64,
    pub foreign: u64,
    pub errors: u64,
    pub other_types: u64,
    pub closed_early: bool,
    pub close_reason: Option<String>,
    pub lat_us: Vec<u32>,
}

/// A received frame, as far as counting needs it. `type` is absent only from the relay floor
/// (`shared/peers/js-floor`), which sends the client's own frame back as it came; a `batch`
/// frame holds frames of its own.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow, default)]
    t: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    frames: Vec<Frame<'a>>,
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

/// Reads one socket until stopped or closed: each (sender, seq) of its room is counted once in a bitset (again:
/// a duplicate; from another room: misrouted); `error` frames are counted and free the sender's window slot.
async fn reader(
    mut stream: SplitStream<Ws>,
    conn: usize,
    my_sender: Option<usize>,
    ack: Option<Arc<Semaphore>>,
    layout: Arc<Layout>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> RecvStats {
    let room = layout.conn_room[conn];
    let nbits = layout.room_nsenders[room] * layout.messages;
    let mut seen = vec![0u64; nbits.div_ceil(64)];
    let mut st = RecvStats {
        lat_us: Vec::with_capacity(nbits),
        ..Default::default()
    };
    let mine = Mine {
        room,
        my_sender,
        ack,
        layout,
        shared: shared.clone(),
    };
    loop {
        let Some(msg) = crate::net::next_unless_stopped(&mut stream, &mut stop).await else {
            break;
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
        if f.t.as_deref() == Some("batch") {
            for inner in &f.frames {
                count(inner, now_ns, &mut seen, &mut st, &mine);
            }
        } else {
            count(&f, now_ns, &mut seen, &mut st, &mine);
        }
    }
    st
}

/// What a reader counts against: its socket's room and sender, and the run's counters.
struct Mine {
    room: usize,
    my_sender: Option<usize>,
    ack: Option<Arc<Semaphore>>,
    layout: Arc<Layout>,
    shared: Arc<Shared>,
}

/// Counts one frame (on its own, or from a batch) received at `now_ns`: each (sender, seq) of the
/// socket's room once in `seen` (again: a duplicate; from another room: misrouted); an `error`
/// frame frees the sender's window slot.
fn count(f: &Frame, now_ns: u64, seen: &mut [u64], st: &mut RecvStats, mine: &Mine) {
    match f.t.as_deref() {
        // The relay floor's frames are the client's own, with no type.
        Some("message") | None => {}
        Some("error") => {
            st.errors += 1;
            // A rejected send never echoes: release the sender's window slot.
            if let Some(a) = &mine.ack {
                a.add_permits(1);
            }
            return;
        }
        Some(_) => {
            st.other_types += 1;
            return;
        }
    }
    let layout = &mine.layout;
    let m = layout.messages;
    let Some((s, q, send_ns)) = f.content.as_deref().and_then(parse_content) else {
        if f.t.is_none() {
            st.other_types += 1;
        } else {
            st.foreign += 1;
        }
        return;
    };
    st.deliveries += 1;
    if s >= layout.sender_room.len() || q >= m {
        st.foreign += 1;
        return;
    }
    if layout.sender_room[s] != mine.room {
        st.misrouted += 1;
        return;
    }
    let bit = layout.sender_local[s] * m + q;
    let (w, b) = (bit / 64, 1u64 << (bit % 64));
    if seen[w] & b != 0 {
        st.dups += 1;
        return;
    }
    seen[w] |= b;
    st.unique += 1;
    st.lat_us
        .push((now_ns.saturating_sub(send_ns) / 1000).min(u32::MAX as u64) as u32);
    let shared = &mine.shared;
    shared.last_delivery_ns.fetch_max(now_ns, Ordering::Relaxed);
    if mine.my_sender == Some(s) {
        if let Some(a) = &mine.ack {
            a.add_permits(1);
        }
    }
    let u = shared.unique.fetch_add(1, Ordering::AcqRel) + 1;
    if shared.measuring.load(Ordering::Acquire) && u == shared.expected.load(Ordering::Acquire) {
        shared.all_delivered.notify_one();
    }
}
