//! clubhouse-storm: the reconnect storm. Every socket of a server drops at once and comes back at once (what a
//! deploy does to every socket on Cloudflare) while one sender per room keeps talking.
//!
//! Phases: sign up U users and get a token each -> connect one sender per room and C receivers over R rooms
//! (receiver k in room k % R, user k % U) -> settle -> senders talk at `--rate` messages/s each (open loop) ->
//! after `--before` s every receiver's TCP connection is dropped at once (no close handshake) and all reconnect at
//! once, with `?since=<last id it read>` under `--since` (Clubhouse) or plainly (the JS baseline has no `since`) ->
//! senders keep talking until every receiver has its first live message and `--after` s more -> drain -> check.
//!
//! A receiver is caught up at its first live `message` frame after the reconnect: with `since` the room sends the
//! `history` frame (every message after `since`) first, so by then the socket has everything; without `since` it is
//! the moment the socket is back and receiving. Checked per receiver on its second connection: the ids it got
//! (history, then live) must be exactly the room's ids after `since` up to the room's last, in order (`lost`,
//! `dup`, `out_of_order`). Without `since` the messages sent while it was away are missed by design and counted
//! apart (`gap_missed`), and the check starts at its first live message.
//!
//! Worker CPU (the Worker's workerd, from /proc) over the storm: from the drop to every receiver caught up, plus
//! `--tail-ms` (closes and deferred writes that land just after), less the senders' steady cost over the same time
//! (measured over the second half of `--before`), per reconnect.
//!
//! Output: progress on stderr (-v), a summary on stdout, then ONE JSON line (the last line of stdout).

#[path = "../net.rs"]
mod net;
#[path = "../procs.rs"]
#[allow(dead_code)]
mod procs;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use net::Ws;
type Sink = SplitSink<Ws, Message>;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "clubhouse-storm",
    about = "Reconnect storm against the Clubhouse chat API"
)]
struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:8788
    #[arg(long)]
    url: String,
    /// Free-form label copied into the JSON.
    #[arg(long, default_value = "")]
    label: String,
    /// Users signed up; sockets share them round-robin.
    #[arg(long, default_value_t = 50)]
    users: usize,
    #[arg(long, default_value = "bench-password-123")]
    password: String,
    /// Receivers: the sockets that drop and reconnect.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Rooms (one sender each, besides the receivers).
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    /// Messages per second per room (each room's sender, open loop).
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Reconnect with `?since=<last id read>` (Clubhouse); without it, a plain reconnect.
    #[arg(long)]
    since: bool,
    /// Seconds of traffic before the drop (the second half measures the senders' steady CPU).
    #[arg(long, default_value_t = 4.0)]
    before: f64,
    /// Seconds the senders keep talking after every receiver caught up.
    #[arg(long, default_value_t = 2.0)]
    after: f64,
    /// CPU window after the last receiver caught up (closes and deferred writes), ms.
    #[arg(long, default_value_t = 1000)]
    tail_ms: u64,
    /// Concurrent connects of the first connection burst (not the storm).
    #[arg(long, default_value_t = 32)]
    connect_concurrency: usize,
    /// Concurrent reconnects in the storm (0 = all at once).
    #[arg(long, default_value_t = 0)]
    storm_concurrency: usize,
    /// Give up waiting for every receiver to catch up after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    catch_up_timeout: f64,
    /// After the senders stop: wait at most this long for every receiver to reach its room's last id (s).
    #[arg(long, default_value_t = 15.0)]
    drain_timeout: f64,
    /// Find the server's processes from the port wrangler dev listens on (CPU figures).
    #[arg(long)]
    server_port: Option<u16>,
    /// Name prefix for users and rooms (default: random).
    #[arg(long)]
    prefix: Option<String>,
    #[arg(long, short)]
    verbose: bool,
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    std::process::exit(rt.block_on(run(args)));
}

/// What every task reads: the clock (ns since the start), the arguments and the progress printer.
struct Ctx {
    args: Args,
    base: String,
    base_ws: String,
    prefix: String,
    t0: Instant,
}

impl Ctx {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
    fn progress(&self, s: &str) {
        if self.args.verbose {
            eprintln!("[{:>7.2}s] {s}", self.t0.elapsed().as_secs_f64());
        }
    }
    fn room(&self, r: usize) -> String {
        format!("{}-r{r}", self.prefix)
    }
}

/// A received frame, as far as the storm needs it: message ids (live, in a batch, or in a history frame) and
/// the bench content of live messages.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow, default)]
    t: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(default)]
    messages: Vec<HistoryItem>,
    #[serde(borrow, default)]
    frames: Vec<Frame<'a>>,
}

#[derive(Deserialize)]
struct HistoryItem {
    #[serde(default)]
    id: Option<u64>,
}

/// `s|<room>|<seq>|<send_ns>` -> (room, send_ns).
fn parse_content(c: &str) -> Option<(usize, u64)> {
    let mut it = c.strip_prefix("s|")?.split('|');
    let room = it.next()?.parse().ok()?;
    let _seq: u64 = it.next()?.parse().ok()?;
    let ns = it.next()?.parse().ok()?;
    Some((room, ns))
}

/// What one connection of one socket received.
#[derive(Default, Debug)]
struct ConnLog {
    /// every message id in the order it arrived: history items first, then live frames
    ids: Vec<u64>,
    history_items: usize,
    history_frames: usize,
    /// first live message: when (ns on the run's clock), its id and its send-to-receive latency (µs)
    first_live: Option<(u64, u64, u64)>,
    closed_early: Option<String>,
}

/// Reads one connection until `stop` (or the connection ends). `last_id` follows the newest id read; the first
/// live message bumps `caught_up` (reconnects only) and wakes the waiter once all `want` are.
#[allow(clippy::too_many_arguments)]
async fn reader(
    ctx: Arc<Ctx>,
    mut stream: SplitStream<Ws>,
    room: usize,
    last_id: Arc<AtomicU64>,
    caught_up: Option<(Arc<AtomicUsize>, usize, Arc<Notify>)>,
    mut stop: watch::Receiver<bool>,
) -> ConnLog {
    let mut log = ConnLog::default();
    loop {
        let Some(msg) = net::next_unless_stopped(&mut stream, &mut stop).await else {
            break;
        };
        let now = ctx.now_ns();
        let text = match msg {
            None => {
                log.closed_early = Some("stream ended".into());
                break;
            }
            Some(Err(e)) => {
                log.closed_early = Some(e.to_string());
                break;
            }
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(c))) => {
                log.closed_early = Some(format!("close frame {c:?}"));
                break;
            }
            Some(Ok(_)) => continue,
        };
        let Ok(f) = serde_json::from_str::<Frame>(&text) else {
            continue;
        };
        match f.t.as_deref() {
            Some("history") => {
                log.history_frames += 1;
                for m in &f.messages {
                    if let Some(id) = m.id {
                        log.ids.push(id);
                        log.history_items += 1;
                        last_id.fetch_max(id, Ordering::Relaxed);
                    }
                }
            }
            Some("message") => live(&f, room, now, &mut log, &last_id, &caught_up),
            Some("batch") => {
                for inner in &f.frames {
                    if inner.t.as_deref() == Some("message") {
                        live(inner, room, now, &mut log, &last_id, &caught_up);
                    }
                }
            }
            _ => {}
        }
    }
    log
}

/// One live message frame received at `now`.
fn live(
    f: &Frame,
    room: usize,
    now: u64,
    log: &mut ConnLog,
    last_id: &AtomicU64,
    caught_up: &Option<(Arc<AtomicUsize>, usize, Arc<Notify>)>,
) {
    let Some(id) = f.id else { return };
    let Some((r, send_ns)) = f.content.as_deref().and_then(parse_content) else {
        return;
    };
    if r != room {
        return;
    }
    log.ids.push(id);
    last_id.fetch_max(id, Ordering::Relaxed);
    if log.first_live.is_none() {
        log.first_live = Some((now, id, now.saturating_sub(send_ns) / 1000));
        if let Some((n, want, notify)) = caught_up {
            if n.fetch_add(1, Ordering::AcqRel) + 1 == *want {
                notify.notify_one();
            }
        }
    }
}

/// Signs up every user and logs each in once: the tokens (None where either failed).
async fn authenticate(ctx: &Ctx, client: &reqwest::Client) -> Vec<Option<String>> {
    let n = ctx.args.users.max(1);
    let one = |i: usize| async move {
        let user = format!("{}_u{i}", ctx.prefix);
        let password = &ctx.args.password;
        let (status, _) = net::sign_up(client, &ctx.base, &user, password)
            .await
            .ok()?;
        if !(200..300).contains(&status) {
            return None;
        }
        net::log_in(client, &ctx.base, &user, password)
            .await
            .ok()?
            .2
    };
    futures_util::stream::iter(0..n)
        .map(one)
        .buffered(8)
        .collect()
        .await
}

/// One room's sender: a message every 1/rate s until `stop`; returns how many it sent.
async fn sender(
    ctx: Arc<Ctx>,
    mut sink: Sink,
    room: usize,
    mut stop: watch::Receiver<bool>,
) -> (Sink, u64) {
    let name = ctx.room(room);
    let start = tokio::time::Instant::now();
    let mut seq = 0u64;
    loop {
        let at = start + Duration::from_secs_f64(seq as f64 / ctx.args.rate);
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(at) => {}
        }
        if *stop.borrow() {
            break;
        }
        let txt = format!(
            "{{\"content\":\"s|{room}|{seq}|{}\",\"room_id\":\"{name}\"}}",
            ctx.now_ns()
        );
        if sink.send(Message::Text(txt)).await.is_err() {
            break;
        }
        seq += 1;
    }
    (sink, seq)
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn num(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    json!({"n": v.len(), "p50_ms": num(pct(&v, 0.5)), "p99_ms": num(pct(&v, 0.99)),
           "max_ms": num(v.last().copied().unwrap_or(f64::NAN))})
}

/// Worker and proxy CPU (µs) between two samples.
fn cpu_us(server: &procs::ServerProcs, a: &procs::Sample, b: &procs::Sample) -> (u64, u64) {
    let (mut w, mut p) = (0, 0);
    for (i, pr) in server.procs.iter().enumerate() {
        if let (Some((x, _)), Some((y, _))) = (a[i], b[i]) {
            let d = server.ticks_to_us(y.saturating_sub(x));
            match pr.role {
                procs::Role::Worker => w += d,
                procs::Role::Proxy => p += d,
                procs::Role::Other => {}
            }
        }
    }
    (w, p)
}

/// Until the server's workerds use under 10% of a core over 300 ms, at most `max_s`.
async fn wait_idle(server: &procs::ServerProcs, max_s: f64) {
    let t = Instant::now();
    let mut last = server.total_ticks();
    while t.elapsed().as_secs_f64() < max_s {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = server.total_ticks();
        if server.ticks_to_us(now.saturating_sub(last)) <= 30_000 {
            return;
        }
        last = now;
    }
}

async fn run(args: Args) -> i32 {
    let base = args.url.trim_end_matches('/').to_string();
    let Some(rest) = base.strip_prefix("http://") else {
        eprintln!("--url must start with http://");
        return 2;
    };
    let base_ws = format!("ws://{rest}");
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| net::random_prefix('s'));
    let server = procs::ServerProcs::find(&[], args.server_port);
    if let Some(e) = &server.error {
        eprintln!("warning: server processes: {e}");
    }
    let ctx = Arc::new(Ctx {
        args: args.clone(),
        base,
        base_ws,
        prefix,
        t0: Instant::now(),
    });
    let (n, rooms) = (args.clients, args.rooms.max(1));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");

    ctx.progress(&format!("signing up {} users", args.users));
    let tokens = authenticate(&ctx, &client).await;
    let usable: Vec<&String> = tokens.iter().flatten().collect();
    if usable.is_empty() {
        eprintln!("no user got a token");
        return 1;
    }
    let token_of = |k: usize| usable[k % usable.len()].as_str();

    // First connections: one sender per room, then the receivers.
    ctx.progress(&format!("connecting {rooms} senders and {n} receivers"));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (truth_stop_tx, truth_stop_rx) = watch::channel(false);
    let mut senders_ws = Vec::new();
    for r in 0..rooms {
        match net::connect_ws(&ctx.base_ws, &ctx.room(r), token_of(r), "").await {
            Ok((ws, _)) => senders_ws.push(ws),
            Err(e) => {
                eprintln!("sender {r}: {e}");
                return 1;
            }
        }
    }
    let first: Vec<Result<(Ws, f64), String>> = futures_util::stream::iter(0..n)
        .map(|k| {
            let ctx = ctx.clone();
            let tok = token_of(k).to_string();
            async move { net::connect_ws(&ctx.base_ws, &ctx.room(k % rooms), &tok, "").await }
        })
        .buffered(args.connect_concurrency.max(1))
        .collect()
        .await;
    let first_fail = first.iter().filter(|r| r.is_err()).count();
    if first_fail > 0 {
        let e = first.iter().find_map(|r| r.as_ref().err()).unwrap();
        eprintln!("{first_fail} first connects failed, e.g. {e}");
        return 1;
    }

    // Sender sockets: their readers keep the room's truth (every id, in order) through the whole run.
    let sender_last: Vec<Arc<AtomicU64>> =
        (0..rooms).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut sender_sinks = Vec::new();
    let mut sender_readers = Vec::new();
    for (r, ws) in senders_ws.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        sender_sinks.push(sink);
        sender_readers.push(tokio::spawn(reader(
            ctx.clone(),
            stream,
            r,
            sender_last[r].clone(),
            None,
            truth_stop_rx.clone(),
        )));
    }
    // Receivers' first connections.
    let last_id: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let (drop_tx, drop_rx) = watch::channel(false);
    let mut sinks1 = Vec::with_capacity(n);
    let mut readers1 = Vec::with_capacity(n);
    for (k, r) in first.into_iter().enumerate() {
        let (ws, _) = r.unwrap();
        let (sink, stream) = ws.split();
        sinks1.push(sink);
        readers1.push(tokio::spawn(reader(
            ctx.clone(),
            stream,
            k % rooms,
            last_id[k].clone(),
            None,
            drop_rx.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_idle(&server, 30.0).await;

    // Traffic, then the steady CPU over the second half of `--before`.
    ctx.progress(&format!("senders talking at {}/s per room", args.rate));
    let mut sender_tasks = Vec::new();
    for (r, sink) in sender_sinks.into_iter().enumerate() {
        sender_tasks.push(tokio::spawn(sender(ctx.clone(), sink, r, stop_rx.clone())));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.before / 2.0)).await;
    let cpu_steady0 = server.sample();
    let t_steady0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.before / 2.0)).await;

    // The drop: every receiver's reader stops and its connection is dropped without a close handshake.
    let cpu_drop = server.sample();
    let t_drop = Instant::now();
    let steady_s = t_drop.duration_since(t_steady0).as_secs_f64();
    let drop_ns = ctx.now_ns();
    ctx.progress("dropping every receiver");
    let _ = drop_tx.send(true);
    let mut since = Vec::with_capacity(n);
    let mut logs1 = Vec::with_capacity(n);
    for h in readers1 {
        logs1.push(h.await.expect("reader"));
    }
    drop(sinks1);
    for l in &last_id {
        since.push(l.load(Ordering::Relaxed));
    }

    // The storm: every receiver reconnects at once.
    let caught = Arc::new(AtomicUsize::new(0));
    let all_caught = Arc::new(Notify::new());
    let (stop2_tx, stop2_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(if args.storm_concurrency == 0 {
        Semaphore::MAX_PERMITS
    } else {
        args.storm_concurrency
    }));
    let connected_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let mut readers2 = Vec::with_capacity(n);
    for k in 0..n {
        let ctx = ctx.clone();
        let tok = token_of(k).to_string();
        let s = args.since.then_some(since[k]);
        let last = last_id[k].clone();
        let cu = Some((caught.clone(), n, all_caught.clone()));
        let stop = stop2_rx.clone();
        let gate = gate.clone();
        let connected_at = connected_at.clone();
        readers2.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("gate");
            let since = s.map(|s| format!("&since={s}")).unwrap_or_default();
            let r = net::connect_ws(&ctx.base_ws, &ctx.room(k % rooms), &tok, &since).await;
            drop(permit);
            match r {
                Ok((ws, ms)) => {
                    connected_at[k].store(ctx.now_ns(), Ordering::Relaxed);
                    let (sink, stream) = ws.split();
                    let log = reader(ctx, stream, k % rooms, last, cu, stop).await;
                    (Ok(ms), log, Some(sink))
                }
                Err(e) => {
                    // never catches up: count it so the wait below does not hang on it
                    (Err(e), ConnLog::default(), None)
                }
            }
        }));
    }
    let caught_all = tokio::time::timeout(
        Duration::from_secs_f64(args.catch_up_timeout),
        all_caught.notified(),
    )
    .await
    .is_ok()
        || caught.load(Ordering::Acquire) >= n;
    let cpu_caught = server.sample();
    let t_caught = Instant::now();
    ctx.progress(&format!(
        "{} / {n} caught up in {:.0} ms",
        caught.load(Ordering::Acquire),
        t_caught.duration_since(t_drop).as_secs_f64() * 1e3
    ));
    tokio::time::sleep(Duration::from_millis(args.tail_ms)).await;
    let cpu_tail = server.sample();
    let t_tail = Instant::now();

    // Keep talking, stop the senders, wait for their last echoes, then for every receiver to reach them.
    tokio::time::sleep(Duration::from_secs_f64(args.after)).await;
    let _ = stop_tx.send(true);
    let mut sent_per_room = Vec::new();
    let mut sinks_s = Vec::new();
    for t in sender_tasks {
        let (sink, s) = t.await.expect("sender");
        sent_per_room.push(s);
        sinks_s.push(sink);
    }
    let sent: u64 = sent_per_room.iter().sum();
    ctx.progress(&format!("senders stopped after {sent} messages; draining"));
    // The truth is what each room's sender socket saw: wait until it has the echo of its last message (ids
    // start at 1 in a fresh room and only the sender writes there, so its last echo's id is what it sent).
    let deadline = Instant::now() + Duration::from_secs_f64(args.drain_timeout);
    while Instant::now() < deadline
        && (0..rooms).any(|r| sender_last[r].load(Ordering::Relaxed) < sent_per_room[r])
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = truth_stop_tx.send(true);
    let mut truth_logs = Vec::new();
    for h in sender_readers {
        truth_logs.push(h.await.expect("sender reader"));
    }
    let room_last: Vec<u64> = truth_logs
        .iter()
        .map(|l| l.ids.iter().copied().max().unwrap_or(0))
        .collect();
    let deadline = Instant::now() + Duration::from_secs_f64(args.drain_timeout);
    while Instant::now() < deadline {
        if (0..n).all(|k| last_id[k].load(Ordering::Relaxed) >= room_last[k % rooms]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop2_tx.send(true);
    let mut results = Vec::with_capacity(n);
    for h in readers2 {
        results.push(h.await.expect("storm task"));
    }
    for mut s in sinks_s {
        let _ = tokio::time::timeout(Duration::from_secs(1), s.close()).await;
    }

    // Check and report.
    let truth_gaps: u64 = truth_logs
        .iter()
        .map(|l| {
            let mut v = l.ids.clone();
            v.sort_unstable();
            v.dedup();
            v.windows(2).map(|w| w[1] - w[0] - 1).sum::<u64>()
        })
        .sum();
    let truth_first: Vec<u64> = truth_logs
        .iter()
        .map(|l| l.ids.iter().copied().min().unwrap_or(0))
        .collect();
    let (mut lost, mut dup, mut ooo, mut gap_missed, mut hist_items, mut failed) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut first_error = None;
    let mut connect_ms = Vec::new();
    let mut connected_ms = Vec::new();
    let mut caught_ms = Vec::new();
    let mut first_lat_ms = Vec::new();
    let mut closed_early = 0u64;
    for (k, (r, log, _sink)) in results.into_iter().enumerate() {
        match r {
            Ok(ms) => connect_ms.push(ms),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
                continue;
            }
        }
        let at = connected_at[k].load(Ordering::Relaxed);
        connected_ms.push(at.saturating_sub(drop_ns) as f64 / 1e6);
        if log.closed_early.is_some() {
            closed_early += 1;
        }
        hist_items += log.history_items as u64;
        if let Some((t, _, lat)) = log.first_live {
            caught_ms.push(t.saturating_sub(drop_ns) as f64 / 1e6);
            first_lat_ms.push(lat as f64 / 1e3);
        }
        // The ids this connection must have, in order: every id after `since` (plain reconnect: from its first
        // live message on) up to the room's last.
        let last = room_last[k % rooms];
        let from = if args.since {
            since[k] + 1
        } else {
            match log.first_live {
                Some((_, id, _)) => {
                    gap_missed += id.saturating_sub(since[k] + 1);
                    id
                }
                None => last + 1,
            }
        };
        let want = (last + 1).saturating_sub(from);
        let mut seen = vec![false; want as usize];
        let mut prev = 0u64;
        for &id in &log.ids {
            if id <= prev {
                ooo += 1;
            }
            prev = prev.max(id);
            if id < from {
                if args.since {
                    dup += 1; // it had this one before the drop
                }
                continue;
            }
            if id > last {
                continue;
            }
            let i = (id - from) as usize;
            if seen[i] {
                dup += 1;
            } else {
                seen[i] = true;
            }
        }
        lost += seen.iter().filter(|s| !**s).count() as u64;
    }
    let (sw, sp) = cpu_us(&server, &cpu_steady0, &cpu_drop);
    let (cw, cp) = cpu_us(&server, &cpu_drop, &cpu_caught);
    let (tw, tp) = cpu_us(&server, &cpu_drop, &cpu_tail);
    let caught_s = t_caught.duration_since(t_drop).as_secs_f64();
    let tail_s = t_tail.duration_since(t_drop).as_secs_f64();
    let net = |storm: u64, steady: u64, over_s: f64| -> Value {
        num((storm as f64 - steady as f64 / steady_s * over_s) / n as f64)
    };
    let cpu = if server.procs.is_empty() {
        json!({"available": false})
    } else {
        json!({
            "available": true,
            "steady_worker_ms_per_s": num(sw as f64 / steady_s / 1e3),
            "steady_proxy_ms_per_s": num(sp as f64 / steady_s / 1e3),
            "to_caught_up": {"s": num(caught_s), "worker_us": cw, "proxy_us": cp,
                "worker_ms": num(cw as f64 / 1e3),
                "worker_us_per_reconnect": num(cw as f64 / n as f64),
                "worker_us_per_reconnect_net": net(cw, sw, caught_s),
                "total_us_per_reconnect_net": net(cw + cp, sw + sp, caught_s)},
            "with_tail": {"s": num(tail_s), "worker_us": tw, "proxy_us": tp,
                "worker_us_per_reconnect": num(tw as f64 / n as f64),
                "worker_us_per_reconnect_net": net(tw, sw, tail_s),
                "total_us_per_reconnect_net": net(tw + tp, sw + sp, tail_s)},
        })
    };
    let phase1_ids: u64 = logs1.iter().map(|l| l.ids.len() as u64).sum();
    let out = json!({
        "tool": "clubhouse-storm",
        "label": args.label,
        "mode": if args.since { "since" } else { "plain" },
        "clients": n, "rooms": rooms, "users": usable.len(), "rate_per_room": args.rate,
        "sent": sent, "truth_gaps": truth_gaps, "truth_first_ids": truth_first, "phase1_deliveries": phase1_ids,
        "storm": {
            "reconnected": n as u64 - failed, "failed": failed, "first_error": first_error,
            "caught_up": caught.load(Ordering::Acquire), "all_caught_up": caught_all,
            "all_caught_up_ms": num(caught_s * 1e3),
            "connect_ms": summary(connect_ms),
            "connected_after_drop": summary(connected_ms),
            "caught_up_after_drop": summary(caught_ms),
            "first_live_latency": summary(first_lat_ms),
            "history_items": hist_items,
            "closed_early": closed_early,
        },
        "check": {"lost": lost, "dup": dup, "out_of_order": ooo, "gap_missed": gap_missed},
        "cpu": cpu,
        "server": server.describe(),
    });
    println!(
        "{} ({}): {n} sockets / {rooms} rooms: all caught up in {:.0} ms ({}), first live p99 {} ms; \
         lost {lost} dup {dup} out of order {ooo} (missed while away, plain: {gap_missed}); \
         Worker CPU per reconnect (drop to caught up) {} us",
        args.label,
        out["mode"],
        caught_s * 1e3,
        if caught_all { "all" } else { "NOT all" },
        out["storm"]["first_live_latency"]["p99_ms"],
        out["cpu"]["to_caught_up"]["worker_us_per_reconnect"],
    );
    println!("{out}");
    0
}
