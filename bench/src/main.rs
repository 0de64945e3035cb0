//! clubhouse-bench: a native load generator for the Clubhouse chat API (and anything with the same API, such as
//! the JavaScript Durable Object baseline in shared/peers/js-do).
//!
//! Phases, each a function below: authenticate (sign up U users, get U tokens, both timed; optional login burst
//! of N logins at concurrency K, timed) -> connect C WebSockets over R rooms (connect+handshake timed) -> warm up
//! (start the readers, settle) -> send (S senders x M messages, open loop at a rate, or closed loop on their own
//! echo with a window W) -> drain and collect -> report.
//!
//! Every message's content is `b|<sender>|<seq>|<send_ns>`; receivers keep a bitset per expected (sender, seq)
//! so lost and duplicated deliveries are counted exactly. Optional server CPU (utime+stime from /proc) is read
//! just before the first send and just after the last delivery, and divided by the deliveries.
//!
//! Output: progress lines on stderr (-v; other scripts wait for their words), a human summary on stdout, then ONE
//! JSON line (the last line of stdout).

mod accounts;
mod net;
mod procs;
mod report;
mod sockets;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;

use accounts::Accounts;
use sockets::{Layout, Shared};

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
    /// Opt into batched delivery (`/ws/{room}?batch=1`): the frames of one flush arrive as one
    /// `batch` frame, each message in it counted as a delivery. A server without batches
    /// ignores the parameter.
    #[arg(long)]
    batch: bool,
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

/// What every phase reads: the arguments, the server's addresses, the run's name prefix, the sizes derived from
/// the arguments, the HTTP client, the server's processes (for CPU) and the clock progress lines are stamped with.
struct Ctx {
    args: Args,
    base: String,
    base_ws: String,
    prefix: String,
    users: usize,
    clients: usize,
    rooms: usize,
    senders: usize,
    client: reqwest::Client,
    server: procs::ServerProcs,
    t_start: Instant,
}

impl Ctx {
    /// Checks the URL (plain http only: the tool is for local `wrangler dev`) and finds the server's processes.
    /// Err is the exit code.
    fn new(args: Args) -> Result<Ctx, i32> {
        let base = args.url.trim_end_matches('/').to_string();
        let base_ws = if let Some(r) = base.strip_prefix("https://") {
            format!("wss://{r}")
        } else if let Some(r) = base.strip_prefix("http://") {
            format!("ws://{r}")
        } else {
            eprintln!("--url must start with http://");
            return Err(2);
        };
        if base_ws.starts_with("wss://") {
            eprintln!("TLS is not supported by this tool (local wrangler dev only)");
            return Err(2);
        }
        let prefix = args
            .prefix
            .clone()
            .unwrap_or_else(|| net::random_prefix('b'));
        let clients = args.clients;
        let rooms = args.rooms.max(1);
        let senders = if clients == 0 {
            0
        } else {
            args.senders.min(clients)
        };
        let users = args.users.unwrap_or(clients.clamp(1, 100)).max(1);
        let t_start = Instant::now();
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
        Ok(Ctx {
            args,
            base,
            base_ws,
            prefix,
            users,
            clients,
            rooms,
            senders,
            client,
            server,
            t_start,
        })
    }

    /// A progress line (with -v). The probes in bench/probes/ start and stop their tracers on some of these words
    /// ("getting tokens", "connecting", "connected", "senders x", "all sent"): keep them.
    fn progress(&self, s: &str) {
        if self.args.verbose {
            eprintln!("[{:>7.2}s] {s}", self.t_start.elapsed().as_secs_f64());
        }
    }
}

/// The whole run: the phases in order, then the report. Returns the exit code (1: no user got a token).
async fn run(args: Args) -> i32 {
    let ctx = match Ctx::new(args) {
        Ok(ctx) => ctx,
        Err(code) => return code,
    };
    let accounts = accounts::authenticate(&ctx).await;
    let burst = accounts::login_burst(&ctx, &accounts).await;
    let mut out = report::header(&ctx, &accounts, burst);
    if ctx.clients == 0 || accounts.usable.is_empty() {
        if ctx.clients > 0 {
            eprintln!("no usable token: cannot open WebSockets");
        }
        report::print(&mut out, &ctx.server);
        return if accounts.usable.is_empty() { 1 } else { 0 };
    }
    run_sockets(&ctx, &accounts, &mut out).await;
    report::print(&mut out, &ctx.server);
    0
}

/// The WebSocket phases: connect, warm up, send, drain and collect; their figures go into `out`. The server's CPU
/// is read over two windows: the connect burst with the settle after it (per connection), and first send to last
/// delivery (per delivery).
async fn run_sockets(ctx: &Ctx, accounts: &Accounts, out: &mut serde_json::Value) {
    let layout = Arc::new(Layout::new(ctx));
    let shared = Arc::new(Shared::new());

    ctx.progress(&format!(
        "connecting {} sockets over {} rooms",
        ctx.clients, ctx.rooms
    ));
    let cpu_conn0 = ctx.server.sample();
    let mut connects = sockets::connect(ctx, &layout, accounts).await;
    ctx.progress(&format!(
        "connected {} / {} in {:.2}s",
        connects.ok(),
        ctx.clients,
        connects.wall_s
    ));

    let open = std::mem::take(&mut connects.sockets);
    let mut members = sockets::warm_up(ctx, &layout, &shared, open);
    let settle_s = sockets::settle(ctx, &shared).await;
    let cpu_conn1 = ctx.server.sample();

    let (active, expected) = members.expect(&layout, &shared, ctx.args.messages);
    ctx.progress(&format!(
        "{} senders x {} messages, expecting {expected} deliveries",
        active.len(),
        ctx.args.messages
    ));
    let cpu_send0 = ctx.server.sample();
    let self_cpu0 = self_cpu_us();
    let sent = sockets::send(ctx, &layout, &shared, &mut members, &active).await;
    ctx.progress("all sent; draining");
    let drained = sockets::drain(&shared, expected, ctx.args.drain_timeout).await;
    let cpu_send1 = ctx.server.sample();
    let self_cpu1 = self_cpu_us();

    let received = sockets::collect(members, ctx.args.linger_ms).await;

    out["connect"] = report::connect(ctx, connects, settle_s, &cpu_conn0, &cpu_conn1);
    let tally = report::Tally::of(received);
    out["run"] = report::messages(
        &tally,
        &sent,
        active.len(),
        expected,
        drained,
        &shared,
        self_cpu1 - self_cpu0,
    );
    out["cpu"] = ctx
        .server
        .cpu_json(&cpu_send0, &cpu_send1, tally.unique, "delivery");
}

/// Runs `n` jobs with at most `k` in flight; job i gets index i.
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

/// This process's own CPU (user + system), µs: if it nears the server's per delivery, the client is the limit.
fn self_cpu_us() -> u64 {
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}
