//! `wrangler dev` servers for the tests: each on a free port with its own inspector port, a fresh
//! `--persist-to` state folder and a generated wrangler config (the repo's `wrangler.toml` with
//! absolute paths and without `[build]`), with a `.dev.vars` beside it holding
//! [`TEST_JWT_SECRET`]. D1 migrations are applied first. If another process takes the port before
//! wrangler binds it, the server starts again on new ports.
//!
//! All tests share ONE lazily started server ([`SHARED`], [`client`]) and run in parallel threads
//! against it; servers with other settings are [`LazyServer`]s of their own, and tests that stop,
//! restart or inspect a server start one for themselves ([`start`], [`restart`]).
//!
//! wrangler runs under a small watchdog shell that leads its own process group: when the test
//! process goes away (statics are never dropped) the watchdog kills the whole group, workerd
//! included. A [`Server`] that is dropped or stopped signals its group by id.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{random_u64, Client, TEST_JWT_SECRET};

/// How long a server may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one `wrangler d1` command may take. It takes about a second, but now and then wrangler
/// stays hung after running its statements; it is then killed and run again, up to
/// [`D1_ATTEMPTS`] times.
const D1_TIMEOUT: Duration = Duration::from_secs(60);
const D1_ATTEMPTS: u32 = 3;

// ---------------------------------------------------------------------------------------------
// Paths and ports
// ---------------------------------------------------------------------------------------------

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn wrangler_bin() -> PathBuf {
    let bin = repo_root().join("node_modules/.bin/wrangler");
    assert!(
        bin.exists(),
        "{} is missing: run `bash scripts/setup` (npm ci) first",
        bin.display()
    );
    bin
}

fn built_worker() -> PathBuf {
    let entry = repo_root().join("build/entry.mjs");
    assert!(
        entry.exists(),
        "{} is missing: the end-to-end tests run the built Worker; run `bash scripts/build` first \
         (`bash scripts/test` builds, then tests)",
        entry.display()
    );
    entry
}

fn output_root() -> PathBuf {
    let root = match std::env::var_os("CLUBHOUSE_TEST_OUTPUT") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::temp_dir().join("clubhouse-e2e"),
    };
    std::fs::create_dir_all(&root).expect("create test output dir");
    root
}

/// A port nobody listens on right now and that this process has not handed out before: the
/// system can return the same free port to two `bind(0)`s in a row, and tests start servers in
/// parallel, so two servers could otherwise be given one port before either binds it.
fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind 127.0.0.1:0")
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Generated wrangler config
// ---------------------------------------------------------------------------------------------

/// Rewrites the repo's wrangler.toml for a test server: drops `[build]` (the Worker is built once,
/// beforehand; a build command would run twice at start), and makes relative paths absolute because
/// the generated config lives in a temp dir. Line-based on purpose: no TOML dev-dependency, and the
/// file is ours.
pub fn test_wrangler_config(original: &str, repo: &Path) -> String {
    let mut out = String::new();
    let mut in_build = false;
    for line in original.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            let header = trimmed
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim();
            in_build = header == "build" || header.starts_with("build.");
            if in_build {
                continue;
            }
        }
        if in_build {
            continue;
        }
        let key = trimmed.split('=').next().unwrap_or("").trim();
        if matches!(key, "main" | "migrations_dir" | "directory") && trimmed.contains('=') {
            let value = trimmed.split_once('=').unwrap().1.trim();
            let (value, comment) = match value.find('#') {
                Some(i) if value[..i].matches('"').count() % 2 == 0 => {
                    (value[..i].trim(), &value[i..])
                }
                _ => (value, ""),
            };
            let unquoted = value.trim_matches('"').trim_matches('\'');
            let path = Path::new(unquoted);
            let abs = if path.is_absolute() {
                path.to_path_buf()
            } else {
                repo.join(path)
            };
            out.push_str(&format!(
                "{key} = {}{}{}\n",
                toml_string(&abs.to_string_lossy()),
                if comment.is_empty() { "" } else { " " },
                comment
            ));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Copies a folder tree (files and folders only).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap() // a JSON string is a valid TOML basic string
}

/// The `binding` of the first `[[d1_databases]]` entry, if any.
fn d1_binding(config: &str) -> Option<String> {
    let mut in_d1 = false;
    for line in config.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_d1 = t == "[[d1_databases]]";
            continue;
        }
        if in_d1 {
            if let Some((k, v)) = t.split_once('=') {
                if k.trim() == "binding" {
                    return Some(v.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// Options of a test server. `vars` go to `.dev.vars` (they override `[vars]`).
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    pub vars: Vec<(String, String)>,
}

impl ServerOptions {
    /// The repo's `[vars]` with the abuse limits (signups and login failures per IP, messages per
    /// second, sockets per user) raised out of the way: every test client comes from 127.0.0.1 and
    /// the shared server serves every test of the suite at once. The limits left at their defaults
    /// are far above what any test reaches (10 000 sockets per room, 5 000 rooms per user). Tests
    /// OF the limits use servers of their own.
    pub fn relaxed_limits() -> Self {
        ServerOptions::default()
            .var("SIGNUP_MAX_PER_IP", "1000000")
            .var("LOGIN_MAX_FAILURES_PER_IP", "1000000")
            .var("LOGIN_MAX_FAILURES_PER_USER", "1000000")
            .var("RATE_LIMIT_PER_SEC", "100000")
            .var("RATE_LIMIT_BURST", "100000")
            .var("MAX_SOCKETS_PER_USER", "1000")
    }

    pub fn var(mut self, key: &str, value: &str) -> Self {
        self.vars.push((key.to_string(), value.to_string()));
        self
    }
}

/// One `wrangler dev` serving the built Worker, with its own port and state folder.
pub struct Server {
    pub port: u16,
    pub inspector_port: u16,
    /// Everything of this server: config, `.dev.vars`, state, logs.
    pub dir: PathBuf,
    /// `--persist-to` folder (D1, KV, Durable Object storage); kept across [`Server::restart`].
    pub persist_dir: PathBuf,
    /// wrangler's stdout and stderr (the Worker's `console.log` lines land here).
    pub log_path: PathBuf,
    config_path: PathBuf,
    /// The watchdog shell, leader of the process group holding wrangler and workerd.
    child: Mutex<Option<Child>>,
}

static SERVER_SEQ: AtomicU64 = AtomicU64::new(0);

/// Starts of one server before giving up on finding a port nobody else takes first.
const START_ATTEMPTS: u32 = 3;
/// What wrangler dev prints, and exits on, when its port or inspector port is in use.
const PORT_TAKEN: &str = "Address already in use";

/// wrangler dev exited because another process had bound one of its ports.
struct PortTaken;

impl Server {
    /// Starts a new independent server (fresh state) and waits until it answers HTTP.
    pub fn start(options: ServerOptions) -> Server {
        let entry = built_worker();
        let repo = repo_root();
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "test".into());
        let dir = output_root().join(format!(
            "{exe}-{}-{}-{:06x}",
            std::process::id(),
            SERVER_SEQ.fetch_add(1, Ordering::Relaxed),
            random_u64() & 0xff_ffff
        ));
        let persist_dir = dir.join("state");
        std::fs::create_dir_all(&persist_dir).expect("create server dir");

        let original = std::fs::read_to_string(repo.join("wrangler.toml"))
            .expect("read wrangler.toml at the repo root");
        // Serve a snapshot of the built Worker (the page is compiled in) and the migrations:
        // wrangler dev watches `main` and reloads (dropping every socket) when it changes, so an
        // edit or a rebuild in the repo during a test run must not reach a running server.
        let snapshot = dir.join("snapshot");
        for part in ["build", "migrations"] {
            if repo.join(part).is_dir() {
                copy_dir(&repo.join(part), &snapshot.join(part)).expect("snapshot the build");
            }
        }
        let entry = snapshot.join(entry.strip_prefix(&repo).unwrap_or(&entry));
        let mut config = test_wrangler_config(&original, &snapshot);
        if !config.contains(&entry.to_string_lossy().to_string()) {
            eprintln!(
                "warning: the test wrangler config does not point at {}; check `main` in wrangler.toml",
                entry.display()
            );
        }
        config.insert_str(
            0,
            "# GENERATED by tests/e2e/harness/server.rs from wrangler.toml for one test server; do not edit.\n",
        );
        let config_path = dir.join("wrangler.toml");
        std::fs::write(&config_path, &config).expect("write test wrangler config");

        // .dev.vars beside the config: wrangler reads it from the config's folder.
        let mut dev_vars = format!("JWT_SECRET={TEST_JWT_SECRET}\n");
        for (k, v) in &options.vars {
            dev_vars.push_str(&format!("{k}={v}\n"));
        }
        std::fs::write(dir.join(".dev.vars"), dev_vars).expect("write .dev.vars");

        let mut server = Server {
            port: free_port(),
            inspector_port: free_port(),
            log_path: dir.join("wrangler.log"),
            dir,
            persist_dir,
            config_path,
            child: Mutex::new(None),
        };
        if let Some(binding) = d1_binding(&config) {
            server.apply_migrations(&binding);
        }
        // A free port can still be taken by another process before wrangler binds it: then
        // wrangler exits at once, and the server starts again on new ports.
        for attempt in 1.. {
            match server.try_spawn() {
                Ok(()) => break,
                Err(PortTaken) if attempt < START_ATTEMPTS => {
                    eprintln!(
                        "[harness] 127.0.0.1:{} or :{} was taken before wrangler bound it; new ports",
                        server.port, server.inspector_port
                    );
                    // wrangler has exited; its watchdog ends the group and exits after it.
                    if let Some(mut watchdog) = server.child.lock().unwrap().take() {
                        let _ = watchdog.wait();
                    }
                    server.port = free_port();
                    server.inspector_port = free_port();
                }
                Err(PortTaken) => panic!(
                    "wrangler dev found its port taken {START_ATTEMPTS} times; log {}:\n{}",
                    server.log_path.display(),
                    server.log_tail(60)
                ),
            }
        }
        server
    }

    fn wrangler_env(&self, cmd: &mut Command) {
        cmd.env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CI", "true")
            .env("NO_COLOR", "1")
            .env("FORCE_COLOR", "0")
            .env("WRANGLER_LOG_PATH", self.dir.join("wrangler-logs"))
            .current_dir(&self.dir);
    }

    /// Runs `wrangler d1 <args> --local` on this server's config and state folder, in a process
    /// group of its own, killed and run again if it hangs (see [`D1_TIMEOUT`]). Its exit status,
    /// stdout and stderr.
    fn run_d1(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let (out_path, err_path) = (self.dir.join("d1.stdout"), self.dir.join("d1.stderr"));
        for attempt in 1..=D1_ATTEMPTS {
            let mut cmd = Command::new(wrangler_bin());
            cmd.arg("d1")
                .args(args)
                .args(["--local", "--config"])
                .arg(&self.config_path)
                .arg("--persist-to")
                .arg(&self.persist_dir)
                .stdin(Stdio::null())
                .stdout(File::create(&out_path).expect("create d1.stdout"))
                .stderr(File::create(&err_path).expect("create d1.stderr"))
                .process_group(0);
            self.wrangler_env(&mut cmd);
            let mut child = cmd.spawn().expect("spawn wrangler d1");
            let deadline = Instant::now() + D1_TIMEOUT;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().expect("wait for wrangler d1") {
                    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
                    return (status, read(&out_path), read(&err_path));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            signal_group("KILL", child.id());
            let _ = child.wait();
            eprintln!(
                "[harness] `wrangler d1 {}` hung for {D1_TIMEOUT:?} (attempt {attempt} of \
                 {D1_ATTEMPTS}); killed its process group",
                args.join(" ")
            );
        }
        panic!(
            "`wrangler d1 {}` hung {D1_ATTEMPTS} times; see {}",
            args.join(" "),
            self.dir.display()
        );
    }

    fn apply_migrations(&self, binding: &str) {
        let started = Instant::now();
        let (status, stdout, stderr) = self.run_d1(&["migrations", "apply", binding]);
        let log = format!(
            "$ wrangler d1 migrations apply {binding} --local ({:?})\n{stdout}{stderr}\n",
            started.elapsed(),
        );
        let _ = std::fs::write(self.dir.join("migrations.log"), &log);
        assert!(
            status.success(),
            "wrangler d1 migrations apply failed ({status}):\n{log}"
        );
    }

    /// Starts wrangler dev and waits until it answers; panics if it cannot start, unless its
    /// port was taken.
    fn spawn(&self) {
        if self.try_spawn().is_err() {
            panic!(
                "wrangler dev found 127.0.0.1:{} (or its inspector port) taken; log {}:\n{}",
                self.port,
                self.log_path.display(),
                self.log_tail(60)
            );
        }
    }

    fn try_spawn(&self) -> Result<(), PortTaken> {
        // The watchdog leads a new process group (process_group(0)); wrangler and workerd inherit
        // it. When wrangler exits or the test process (TEST_PID) is gone, it kills the group: TERM,
        // then KILL (it ignores TERM itself so that it is still there to send the KILL).
        const WATCHDOG: &str = r#"
"$WRANGLER" "$@" </dev/null >>"$LOG" 2>&1 &
child=$!
trap '' TERM  # only after the fork: an ignored signal would be inherited by wrangler
while kill -0 "$TEST_PID" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
kill -TERM -- -$$ 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$child" 2>/dev/null || break; sleep 0.2; done
kill -KILL -- -$$ 2>/dev/null
"#;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open wrangler log");
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .args(["dev", "--config"])
            .arg(&self.config_path)
            .args(["--ip", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .arg("--inspector-port")
            .arg(self.inspector_port.to_string())
            .arg("--persist-to")
            .arg(&self.persist_dir)
            .args(["--show-interactive-dev-session=false", "--log-level", "log"])
            .env("WRANGLER", wrangler_bin())
            .env("LOG", &self.log_path)
            .env("TEST_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        self.wrangler_env(&mut cmd);
        // Only what this start writes counts: a restart appends to the same log.
        let log_from = self.log().len();
        let child = cmd.spawn().expect("spawn wrangler dev watchdog");
        *self.child.lock().unwrap() = Some(child);
        self.wait_ready(log_from)
    }

    fn wait_ready(&self, log_from: usize) -> Result<(), PortTaken> {
        let started = Instant::now();
        // Something else may answer on the port (another process bound it first): only a probe
        // after this wrangler said it listens there counts, and its "port taken" line wins even
        // before it has exited.
        let ready_line = format!("Ready on http://127.0.0.1:{}", self.port);
        loop {
            let (said_ready, port_taken) = {
                let log = self.log();
                let this_start = log.get(log_from..).unwrap_or("");
                (
                    this_start.contains(&ready_line),
                    this_start.contains(PORT_TAKEN),
                )
            };
            if port_taken {
                self.stop();
                return Err(PortTaken);
            }
            if let Some(status) = self.child_exit_status() {
                panic!(
                    "wrangler dev exited ({status}) before answering; its log {}:\n{}",
                    self.log_path.display(),
                    self.log_tail(60)
                );
            }
            if said_ready && http_probe(self.port).is_some() {
                eprintln!(
                    "[harness] wrangler dev ready on 127.0.0.1:{} in {:.1?} (log {})",
                    self.port,
                    started.elapsed(),
                    self.log_path.display()
                );
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                self.stop();
                panic!(
                    "wrangler dev did not answer on 127.0.0.1:{} within {READY_TIMEOUT:?}; log {}:\n{}",
                    self.port,
                    self.log_path.display(),
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn child_exit_status(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.child.lock().unwrap();
        guard.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether the server's process group is still running.
    pub fn is_running(&self) -> bool {
        self.child.lock().unwrap().is_some() && self.child_exit_status().is_none()
    }

    /// Stops the server (TERM, then KILL, to its whole process group) and waits for it. State in
    /// [`Server::persist_dir`] stays. Idempotent.
    pub fn stop(&self) {
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return;
        };
        let started = Instant::now();
        let pgid = child.id();
        // TERM reaches wrangler and workerd; the watchdog (immune to TERM) sees wrangler go, then
        // KILLs whatever is left of the group and itself.
        signal_group("TERM", pgid);
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        signal_group("KILL", pgid);
        let _ = child.wait();
        // The port must be free again before a restart reuses it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "[harness] stopped wrangler dev on 127.0.0.1:{} in {:.1?}",
            self.port,
            started.elapsed()
        );
    }

    /// Stops and starts the server again on the same port and the same state folder.
    pub fn restart(&self) {
        self.stop();
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .and_then(|mut f| writeln!(f, "\n[harness] ---- restart ----"));
        if let Some(binding) = d1_binding(&std::fs::read_to_string(&self.config_path).unwrap()) {
            self.apply_migrations(&binding);
        }
        self.spawn();
    }

    /// A crash: SIGKILL to the workerd process that runs the Worker and its Durable Objects (found
    /// by pid in this server's process group; the group's other workerd is the dev proxy, bound to
    /// the public port), then the rest of the group stopped and the server started again on the
    /// same port and state folder. Returns the pid killed.
    pub fn kill9_and_restart(&self) -> u32 {
        let pgid = self
            .child
            .lock()
            .unwrap()
            .as_ref()
            .map(|c| c.id())
            .expect("a running server");
        let proxy = format!("entry=127.0.0.1:{}", self.port);
        let worker = group_processes(pgid)
            .into_iter()
            .find(|(_, comm, cmdline)| comm == "workerd" && !cmdline.contains(&proxy))
            .map(|(pid, _, _)| pid)
            .expect("the Worker's workerd in the server's process group");
        let _ = Command::new("kill")
            .args(["-KILL", &worker.to_string()])
            .status();
        eprintln!(
            "[harness] kill -9 workerd {worker} of 127.0.0.1:{}",
            self.port
        );
        self.restart();
        worker
    }

    /// The rows of one SQL statement run on the local D1 database (`wrangler d1 execute`). Only
    /// while the server is stopped: the running server holds the database.
    pub fn d1_rows(&self, sql: &str) -> Value {
        assert!(
            !self.is_running(),
            "read D1 only while the server is stopped"
        );
        let binding = d1_binding(&std::fs::read_to_string(&self.config_path).unwrap())
            .expect("a [[d1_databases]] binding in wrangler.toml");
        let (status, stdout, stderr) =
            self.run_d1(&["execute", &binding, "--json", "--command", sql]);
        assert!(status.success(), "d1 execute failed: {stdout}{stderr}");
        let v: Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("d1 JSON ({e}): {stdout}"));
        v[0]["results"].clone()
    }

    /// Replaces the server's `.dev.vars` (its secrets and settings; read again on restart).
    pub fn write_dev_vars(&self, vars: &[(&str, &str)]) {
        let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(self.dir.join(".dev.vars"), text).expect("write .dev.vars");
    }

    /// The whole wrangler log so far (stdout and stderr of wrangler and the Worker).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A new HTTP client for this server (no pooled connection left over from before a restart).
    pub fn client(&self) -> Client {
        Client::new(self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal_group(signal: &str, pgid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// (pid, comm, cmdline) of every process in process group `pgid`, from /proc.
fn group_processes(pgid: u32) -> Vec<(u32, String, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            let comm = stat[open + 1..close].to_owned();
            let group: u32 = stat[close + 2..].split_whitespace().nth(2)?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (group == pgid).then_some((pid, comm, cmdline))
        })
        .collect()
}

/// One blocking HTTP/1.0 request to an unknown path; `Some(status)` once anything answers.
fn http_probe(port: u16) -> Option<u16> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(b"GET /__harness_ready_probe HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).ok()?;
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Servers shared by many tests, and servers of one test
// ---------------------------------------------------------------------------------------------

/// A server started on first use and kept for the whole run (statics are never dropped: the
/// watchdog stops it when the test process is gone). Many tests use it at once.
pub struct LazyServer {
    server: OnceLock<Server>,
    options: fn() -> ServerOptions,
}

impl LazyServer {
    pub const fn new(options: fn() -> ServerOptions) -> LazyServer {
        LazyServer {
            server: OnceLock::new(),
            options,
        }
    }

    /// The server, started now if nobody has yet (the first caller waits for it to answer).
    pub fn get(&self) -> &Server {
        self.server.get_or_init(|| Server::start((self.options)()))
    }

    pub fn client(&self) -> Client {
        self.get().client()
    }
}

/// The server of every test that needs no settings of its own, with
/// [`ServerOptions::relaxed_limits`].
pub static SHARED: LazyServer = LazyServer::new(ServerOptions::relaxed_limits);

/// A client of the [`SHARED`] server.
pub fn client() -> Client {
    SHARED.client()
}

/// The origin the [`STRICT`] server allows besides its own.
pub const ALLOWED_ORIGIN: &str = "https://chat.example.com";

/// A server with strict abuse limits: 3 failed logins per user and per IP, 2 signups per IP,
/// and one extra allowed origin ([`ALLOWED_ORIGIN`]). For the throttling tests and the origin
/// allowlist test; they send their requests from random addresses
/// ([`Client::with_random_ips`]) so as not to count against each other.
pub static STRICT: LazyServer = LazyServer::new(|| {
    ServerOptions::default()
        .var("LOGIN_MAX_FAILURES_PER_USER", "3")
        .var("LOGIN_MAX_FAILURES_PER_IP", "3")
        .var("SIGNUP_MAX_PER_IP", "2")
        .var("ALLOWED_ORIGINS", ALLOWED_ORIGIN)
});

/// Starts a server of its own (fresh state) from async code: starting blocks until it answers.
pub async fn start(options: ServerOptions) -> Server {
    tokio::task::spawn_blocking(move || Server::start(options))
        .await
        .unwrap()
}

/// Runs `step` on `server` off the async runtime (it blocks while wrangler stops or starts).
async fn off_runtime(server: Server, step: fn(&Server)) -> Server {
    tokio::task::spawn_blocking(move || {
        step(&server);
        server
    })
    .await
    .unwrap()
}

/// Stops `server` and starts it again on the same port and state folder. Take a new
/// [`Server::client`] afterwards.
pub async fn restart(server: Server) -> Server {
    off_runtime(server, Server::restart).await
}

/// [`Server::kill9_and_restart`] off the async runtime.
pub async fn kill9_and_restart(server: Server) -> Server {
    off_runtime(server, |s| {
        s.kill9_and_restart();
    })
    .await
}

/// Stops `server`, keeping its state folder (for [`Server::d1_rows`], then [`restart`]).
pub async fn stop(server: Server) -> Server {
    off_runtime(server, Server::stop).await
}

#[test]
fn harness_test_config_drops_build_and_makes_paths_absolute() {
    let original = r#"name = "clubhouse"
main = "build/index.js" # entry
compatibility_date = "2025-09-01"

[build]
command = "worker-build --release"

[build.upload]
format = "modules"

[[d1_databases]]
binding = "DB"
database_name = "clubhouse"
migrations_dir = "migrations"

[vars]
TOKEN_TTL_SECS = "3600"
"#;
    let out = test_wrangler_config(original, Path::new("/repo"));
    assert!(!out.contains("[build"), "{out}");
    assert!(!out.contains("worker-build"), "{out}");
    assert!(
        out.contains("main = \"/repo/build/index.js\" # entry"),
        "{out}"
    );
    assert!(
        out.contains("migrations_dir = \"/repo/migrations\""),
        "{out}"
    );
    assert!(out.contains("[vars]\nTOKEN_TTL_SECS = \"3600\""), "{out}");
}
