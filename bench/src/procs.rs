//! Server process discovery and CPU / RSS sampling from /proc.
//!
//! `wrangler dev` runs two workerd processes: a proxy on the public port (command line holds
//! `--socket-addr=entry=127.0.0.1:<port>`) and the workerd that runs the Worker (`entry=127.0.0.1:0`). Node
//! (wrangler itself), npm and esbuild are reported as "other".

use serde_json::{json, Value};
use std::collections::BTreeSet;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    Proxy,
    Worker,
    Other,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Proxy => "proxy",
            Role::Worker => "worker",
            Role::Other => "other",
        }
    }
}

pub struct Proc {
    pub pid: u32,
    pub role: Role,
    pub cmd: String,
}

pub struct ServerProcs {
    pub procs: Vec<Proc>,
    pub error: Option<String>,
    clk_tck: u64,
    page_kb: u64,
}

/// One sample: per process (ticks utime+stime, rss pages), None if the process is gone.
pub type Sample = Vec<Option<(u64, u64)>>;

fn read_cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// (ppid, pgid, utime+stime ticks, rss pages) from /proc/PID/stat.
fn read_stat(pid: u32) -> Option<(u32, u32, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parentheses: split after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): field N is f[N-3].
    let ppid = f.get(4 - 3)?.parse().ok()?;
    let pgid = f.get(5 - 3)?.parse().ok()?;
    let ut: u64 = f.get(14 - 3)?.parse().ok()?;
    let st: u64 = f.get(15 - 3)?.parse().ok()?;
    let rss: u64 = f.get(24 - 3)?.parse().ok()?;
    Some((ppid, pgid, ut + st, rss))
}

fn all_pids() -> Vec<u32> {
    let mut v = vec![];
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
                v.push(p);
            }
        }
    }
    v
}

/// The pid owning a listening TCP socket on `port` (any local address), via /proc/net/tcp{,6} inodes.
fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = BTreeSet::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(s) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in s.lines().skip(1) {
            let c: Vec<&str> = line.split_whitespace().collect();
            if c.len() < 10 || c[3] != "0A" {
                continue; // 0A = LISTEN
            }
            let Some(p) = c[1]
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok())
            else {
                continue;
            };
            if p == port {
                inodes.insert(c[9].to_string());
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for pid in all_pids() {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in rd.flatten() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                let t = t.to_string_lossy();
                if let Some(ino) = t.strip_prefix("socket:[").and_then(|x| x.strip_suffix(']')) {
                    if inodes.contains(ino) {
                        return Some(pid);
                    }
                }
            }
        }
    }
    None
}

fn classify(cmd: &str, port: Option<u16>) -> Role {
    let first = cmd.split(' ').next().unwrap_or("");
    if !first.ends_with("workerd") {
        return Role::Other;
    }
    // proxy: entry socket on a real port (the public one)
    for tok in cmd.split(' ') {
        if let Some(addr) = tok.strip_prefix("--socket-addr=entry=") {
            let p = addr
                .rsplit(':')
                .next()
                .and_then(|x| x.parse::<u16>().ok())
                .unwrap_or(0);
            if p != 0 && port.is_none_or(|want| want == p) {
                return Role::Proxy;
            }
        }
    }
    Role::Worker
}

impl ServerProcs {
    pub fn find(pids: &[u32], port: Option<u16>) -> ServerProcs {
        let clk_tck = {
            let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
            if v > 0 {
                v as u64
            } else {
                100
            }
        };
        let page_kb = {
            let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            if v > 0 {
                v as u64 / 1024
            } else {
                4
            }
        };
        let mut sp = ServerProcs {
            procs: vec![],
            error: None,
            clk_tck,
            page_kb,
        };
        if pids.is_empty() && port.is_none() {
            return sp;
        }
        // snapshot of the process table
        let table: Vec<(u32, u32, u32)> = all_pids()
            .into_iter()
            .filter_map(|p| read_stat(p).map(|(pp, pg, _, _)| (p, pp, pg)))
            .collect();
        let mut chosen: BTreeSet<u32> = BTreeSet::new();
        if let Some(port) = port {
            let needle = format!("--socket-addr=entry=127.0.0.1:{port}");
            let mut anchor = table
                .iter()
                .find(|(p, _, _)| {
                    read_cmdline(*p).is_some_and(|c| c.split(' ').any(|t| t == needle))
                })
                .map(|t| t.0);
            if anchor.is_none() {
                anchor = listener_pid(port);
            }
            match anchor {
                Some(a) => {
                    let pgid = table.iter().find(|t| t.0 == a).map(|t| t.2).unwrap_or(a);
                    for (p, _, pg) in &table {
                        if *pg == pgid {
                            chosen.insert(*p);
                        }
                    }
                    chosen.insert(a);
                }
                None => sp.error = Some(format!("no process found listening on port {port}")),
            }
        }
        // explicit pids + all their descendants
        let mut frontier: Vec<u32> = pids.to_vec();
        while let Some(p) = frontier.pop() {
            if chosen.insert(p) || pids.contains(&p) {
                for (c, pp, _) in &table {
                    if *pp == p && !chosen.contains(c) {
                        frontier.push(*c);
                    }
                }
            }
        }
        for p in chosen {
            let Some(cmd) = read_cmdline(p) else { continue };
            if read_stat(p).is_none() {
                continue;
            }
            let role = classify(&cmd, port);
            sp.procs.push(Proc { pid: p, role, cmd });
        }
        if sp.error.is_none() && !sp.procs.iter().any(|p| p.role == Role::Worker) {
            sp.error = Some("no Worker workerd process identified".into());
        }
        sp
    }

    pub fn sample(&self) -> Sample {
        self.procs
            .iter()
            .map(|p| read_stat(p.pid).map(|(_, _, t, r)| (t, r)))
            .collect()
    }

    fn ticks_us(&self, t: u64) -> u64 {
        t * 1_000_000 / self.clk_tck
    }

    pub fn ticks_to_us(&self, t: u64) -> u64 {
        self.ticks_us(t)
    }

    /// utime+stime ticks of the workerd processes (proxy + worker), summed.
    pub fn total_ticks(&self) -> u64 {
        self.procs
            .iter()
            .filter(|p| p.role != Role::Other)
            .filter_map(|p| read_stat(p.pid).map(|(_, _, t, _)| t))
            .sum()
    }

    /// CPU between two samples: per process and per role, absolute µs and per `n` units.
    pub fn cpu_json(&self, a: &Sample, b: &Sample, n: u64, unit: &str) -> Value {
        if self.procs.is_empty() {
            return json!({"available": false});
        }
        let mut per = vec![];
        let (mut w, mut px, mut o) = (0u64, 0u64, 0u64);
        let mut gone = vec![];
        for (i, p) in self.procs.iter().enumerate() {
            let d = match (a[i], b[i]) {
                (Some((x, _)), Some((y, _))) => self.ticks_us(y.saturating_sub(x)),
                _ => {
                    if p.role != Role::Other {
                        gone.push(p.pid);
                    }
                    0
                }
            };
            match p.role {
                Role::Worker => w += d,
                Role::Proxy => px += d,
                Role::Other => o += d,
            }
            per.push(json!({"pid": p.pid, "role": p.role.name(), "cpu_us": d}));
        }
        let per_n = |x: u64| -> Value {
            if n == 0 {
                Value::Null
            } else {
                json!(((x as f64 / n as f64) * 1000.0).round() / 1000.0)
            }
        };
        // A workerd that vanished (wrangler restarted the Worker, e.g. on a rebuild) makes these figures wrong.
        let mut j = json!({
            "available": gone.is_empty(),
            "stale_pids": gone,
            "clk_tck": self.clk_tck,
            "units": n,
            "worker_us": w,
            "proxy_us": px,
            "total_us": w + px,
            "other_us": o,
            "procs": per,
        });
        j[format!("worker_us_per_{unit}")] = per_n(w);
        j[format!("proxy_us_per_{unit}")] = per_n(px);
        j[format!("total_us_per_{unit}")] = per_n(w + px);
        j[format!("other_us_per_{unit}")] = per_n(o);
        j
    }

    /// Resident memory growth between two samples, KB per unit, worker and proxy.
    pub fn rss_delta_json(&self, a: &Sample, b: &Sample, n: u64) -> Value {
        if self.procs.is_empty() || n == 0 {
            return Value::Null;
        }
        let (mut w, mut px) = (0i64, 0i64);
        for (i, p) in self.procs.iter().enumerate() {
            if let (Some((_, x)), Some((_, y))) = (a[i], b[i]) {
                let d = (y as i64 - x as i64) * self.page_kb as i64;
                match p.role {
                    Role::Worker => w += d,
                    Role::Proxy => px += d,
                    Role::Other => {}
                }
            }
        }
        json!({"worker": ((w as f64 / n as f64) * 10.0).round() / 10.0, "proxy": ((px as f64 / n as f64) * 10.0).round() / 10.0})
    }

    pub fn describe(&self) -> Value {
        json!({
            "procs": self.procs.iter().map(|p| json!({
                "pid": p.pid, "role": p.role.name(),
                "cmd": p.cmd.chars().take(160).collect::<String>(),
            })).collect::<Vec<_>>(),
            "error": self.error,
        })
    }
}
