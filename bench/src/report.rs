//! The report: the run's JSON (one line, the last of stdout; bench/run.sh and bench/tools/table.mjs read it) and
//! the human summary before it (whose `connect: ok N` and `run : ... delivered N` lines the probes read).

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::accounts::Accounts;
use crate::procs::{Sample, ServerProcs};
use crate::sockets::{Connects, RecvStats, SendStats, Shared};
use crate::Ctx;

/// The JSON up to the WebSocket phases: the run's settings and the authenticate phase.
pub fn header(ctx: &Ctx, accounts: &Accounts, login_burst: Value) -> Value {
    let a = &ctx.args;
    json!({
        "tool": "clubhouse-bench",
        "label": a.label,
        "url": ctx.base,
        "prefix": ctx.prefix,
        "config": {
            "users": ctx.users, "clients": ctx.clients, "rooms": ctx.rooms, "senders": ctx.senders,
            "messages": a.messages, "rate": a.rate, "window": a.window, "drain_timeout": a.drain_timeout,
            "login_burst": a.login_burst, "login_concurrency": a.login_concurrency, "threads": a.threads,
        },
        "signup": accounts.signup.to_json(),
        "token": accounts.token.to_json(),
        "login_burst": login_burst,
    })
}

/// The connect phase: handshake times, failures, and the server's CPU and memory per socket over the burst and
/// the settle after it.
pub fn connect(ctx: &Ctx, c: Connects, settle_s: f64, cpu0: &Sample, cpu1: &Sample) -> Value {
    let ok = c.ok();
    let mut j = lat_summary(c.ms);
    j["ok"] = json!(ok);
    j["fail"] = json!(c.fail);
    j["first_error"] = json!(c.first_error);
    j["wall_s"] = num(c.wall_s);
    j["settle_s"] = num(settle_s);
    j["cpu"] = ctx.server.cpu_json(cpu0, cpu1, ok as u64, "connection");
    j["rss_kb_per_socket"] = ctx.server.rss_delta_json(cpu0, cpu1, ok as u64);
    j
}

/// What every socket received, summed, and all delivery latencies (µs, sorted).
pub struct Tally {
    pub unique: u64,
    dups: u64,
    misrouted: u64,
    foreign: u64,
    errors: u64,
    other: u64,
    frames: u64,
    closed_early: u64,
    close_reason: Option<String>,
    lat_us: Vec<u32>,
}

impl Tally {
    pub fn of(stats: Vec<RecvStats>) -> Tally {
        let mut t = Tally {
            unique: 0,
            dups: 0,
            misrouted: 0,
            foreign: 0,
            errors: 0,
            other: 0,
            frames: 0,
            closed_early: 0,
            close_reason: None,
            lat_us: Vec::new(),
        };
        for mut s in stats {
            t.unique += s.unique;
            t.dups += s.dups;
            t.misrouted += s.misrouted;
            t.foreign += s.foreign;
            t.errors += s.errors;
            t.other += s.other_types;
            t.frames += s.frames;
            if s.closed_early {
                t.closed_early += 1;
                if t.close_reason.is_none() {
                    t.close_reason = s.close_reason.clone();
                }
            }
            t.lat_us.append(&mut s.lat_us);
        }
        t.lat_us.sort_unstable();
        t
    }
}

/// The message phase: what was sent, delivered, lost and duplicated, the rate (unique deliveries over first send
/// to last delivery), latency, and the tool's own CPU per delivery.
pub fn messages(
    t: &Tally,
    sent: &SendStats,
    senders_active: usize,
    expected: u64,
    drained: bool,
    shared: &Shared,
    client_cpu_us: u64,
) -> Value {
    let first = shared.first_send_ns.load(Ordering::Relaxed);
    let since_first = |end: u64| {
        if first != u64::MAX && end > first {
            (end - first) as f64 / 1e9
        } else {
            f64::NAN
        }
    };
    let dur_s = since_first(shared.last_delivery_ns.load(Ordering::Relaxed));
    let send_dur_s = since_first(shared.last_send_ns.load(Ordering::Relaxed));
    let lat_ms = |q: f64| pct_sorted(&t.lat_us, q) / 1000.0;
    let lat_mean = if t.lat_us.is_empty() {
        f64::NAN
    } else {
        t.lat_us.iter().map(|&x| x as f64).sum::<f64>() / t.lat_us.len() as f64 / 1000.0
    };
    json!({
        "senders_active": senders_active,
        "sent": sent.sent,
        "send_errors": sent.send_errors,
        "ack_timeouts": sent.ack_timeouts,
        "expected": expected,
        "delivered": t.unique,
        "lost": expected.saturating_sub(t.unique),
        "dup": t.dups,
        "misrouted": t.misrouted,
        "foreign": t.foreign,
        "error_frames": t.errors,
        "other_frames": t.other,
        "frames": t.frames,
        "closed_early": t.closed_early,
        "close_reason": t.close_reason,
        "drained": drained,
        "duration_s": num(dur_s),
        "send_duration_s": num(send_dur_s),
        "deliveries_per_s": num(t.unique as f64 / dur_s),
        "messages_per_s": num(sent.sent as f64 / dur_s),
        "latency_ms": {
            "p50": num(lat_ms(0.5)), "p90": num(lat_ms(0.9)), "p99": num(lat_ms(0.99)), "max": num(lat_ms(1.0)),
            "mean": num(lat_mean),
        },
        "client_cpu_us": client_cpu_us,
        "client_cpu_us_per_delivery": num(client_cpu_us as f64 / t.unique.max(1) as f64),
    })
}

/// Adds the server's processes, prints the summary, then the JSON line.
pub fn print(out: &mut Value, server: &ServerProcs) {
    out["server"] = server.describe();
    print_summary(out);
    println!("{}", out);
}

/// The q-quantile of sorted values (nearest rank), NaN if there are none.
pub fn pct_sorted<T: Copy + Into<f64>>(v: &[T], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let idx = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[idx].into()
}

/// Summary of latencies in milliseconds.
pub fn lat_summary(mut v: Vec<f64>) -> Value {
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
pub fn num(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
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
