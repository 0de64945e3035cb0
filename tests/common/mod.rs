//! End-to-end test harness: runs the built Worker under `wrangler dev` and drives it over HTTP and
//! WebSockets.
//!
//! - The Worker must already be built in `build/` (`bash scripts/build`; `scripts/test` does it first).
//! - Each test binary shares ONE lazily started server ([`shared`], [`base_url`]); tests that need
//!   their own state start a [`Server`] of their own, and can stop and restart it on the same state.
//! - Every server gets a free port, its own inspector port, a fresh `--persist-to` state folder and a
//!   generated wrangler config (the repo's `wrangler.toml` with absolute paths and without `[build]`)
//!   with a `.dev.vars` beside it holding [`TEST_JWT_SECRET`]. D1 migrations are applied first. If
//!   another process takes the port before wrangler binds it, the server starts again on new ports.
//! - wrangler runs under a small watchdog shell that leads its own process group: when the test
//!   process goes away (statics are never dropped) the watchdog kills the whole group, workerd included.
//!
//! Artefacts go under `$CLUBHOUSE_TEST_OUTPUT` (scripts/test sets `test-output/`) or the system temp dir.
#![allow(dead_code)] // each test binary uses a different subset of the helpers

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

/// The `JWT_SECRET` every test server runs with (written to its `.dev.vars`), so tests can craft
/// tokens the server must accept, and tokens it must reject.
pub const TEST_JWT_SECRET: &str = "clubhouse-e2e-test-secret-0123456789abcdef-do-not-use";
/// Token issuer and audience the Worker puts in and requires.
pub const JWT_ISS: &str = "clubhouse";
pub const JWT_AUD: &str = "clubhouse";
/// How long a single frame or response may take before a test fails.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// Paths and names
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

/// Random 64-bit value (std only: `RandomState` is seeded randomly per process; mixed with a
/// counter and the clock so successive calls differ).
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A username/room id unique within the run: `prefix_<12 hex>` (valid for both: `[A-Za-z0-9_-]`),
/// at most 32 chars if `prefix` has at most 19.
pub fn unique_name(prefix: &str) -> String {
    let name = format!("{prefix}_{:012x}", random_u64() & 0xffff_ffff_ffff);
    assert!(name.len() <= 32, "prefix too long for a username: {prefix}");
    name
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
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
    /// the shared server serves a whole test binary. Tests OF the limits start their own server.
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
            "# GENERATED by tests/common/mod.rs from wrangler.toml for one test server; do not edit.\n",
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

    fn apply_migrations(&self, binding: &str) {
        let started = Instant::now();
        let mut cmd = Command::new(wrangler_bin());
        cmd.args(["d1", "migrations", "apply", binding, "--local", "--config"])
            .arg(&self.config_path)
            .arg("--persist-to")
            .arg(&self.persist_dir)
            .stdin(Stdio::null());
        self.wrangler_env(&mut cmd);
        let out = cmd.output().expect("run wrangler d1 migrations apply");
        let log = format!(
            "$ wrangler d1 migrations apply {binding} --local ({:?})\n{}{}\n",
            started.elapsed(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::write(self.dir.join("migrations.log"), &log);
        assert!(
            out.status.success(),
            "wrangler d1 migrations apply failed ({}):\n{log}",
            out.status
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
        loop {
            if let Some(status) = self.child_exit_status() {
                if self
                    .log()
                    .get(log_from..)
                    .unwrap_or("")
                    .contains(PORT_TAKEN)
                {
                    return Err(PortTaken);
                }
                panic!(
                    "wrangler dev exited ({status}) before answering; its log {}:\n{}",
                    self.log_path.display(),
                    self.log_tail(60)
                );
            }
            if http_probe(self.port).is_some() {
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

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self, room: &str, token: &str) -> String {
        ws_url_on(self.port, room, token)
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

    pub fn client(&self) -> Client {
        Client {
            base: self.base_url(),
            port: self.port,
            http: http_client(),
        }
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

static SHARED: OnceLock<Server> = OnceLock::new();

/// The server shared by all tests of this test binary, started on first use, with
/// [`ServerOptions::relaxed_limits`].
pub fn shared() -> &'static Server {
    SHARED.get_or_init(|| Server::start(ServerOptions::relaxed_limits()))
}

pub fn base_url() -> String {
    shared().base_url()
}

pub fn ws_url(room: &str, token: &str) -> String {
    shared().ws_url(room, token)
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------------------

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// HTTP and WebSocket helpers bound to one server.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub port: u16,
    pub http: reqwest::Client,
}

/// Helpers bound to the shared server.
pub fn client() -> Client {
    shared().client()
}

impl Client {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn ws_url(&self, room: &str, token: &str) -> String {
        ws_url_on(self.port, room, token)
    }

    pub async fn signup(&self, username: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/users/"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("POST /users/")
    }

    /// `POST /token` (form-encoded); the raw response.
    pub async fn login_response(&self, username: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_encode(&[
                ("username", username),
                ("password", password),
            ]))
            .send()
            .await
            .expect("POST /token")
    }

    /// Logs in and returns the access token; panics unless the answer is 200 with a token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let resp = self.login_response(username, password).await;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(status, 200, "POST /token for {username}: {body}");
        let v: Value = serde_json::from_str(&body).expect("token response is JSON");
        v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {body}"))
            .to_string()
    }

    /// Signs up a fresh user (`unique_name(prefix)`, a fixed good password) and logs in.
    pub async fn new_user(&self, prefix: &str) -> (String, String) {
        let name = unique_name(prefix);
        let resp = self.signup(&name, DEFAULT_PASSWORD).await;
        let status = resp.status();
        assert_eq!(
            status,
            201,
            "signup {name}: {}",
            resp.text().await.unwrap_or_default()
        );
        let token = self.login(&name, DEFAULT_PASSWORD).await;
        (name, token)
    }

    /// GET `path` with the headers of a WebSocket upgrade (so the Worker sees an upgrade attempt),
    /// over plain HTTP: for asserting the answers to refused upgrades.
    pub async fn upgrade_attempt(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .expect("GET with upgrade headers")
    }

    /// Connects a WebSocket to `room` with `token`; panics if the upgrade is refused.
    pub async fn ws(&self, room: &str, token: &str) -> WsClient {
        WsClient::connect(&self.ws_url(room, token))
            .await
            .unwrap_or_else(|e| panic!("WebSocket upgrade to room {room} refused: {e}"))
    }
}

pub const DEFAULT_PASSWORD: &str = "correct horse battery staple";

pub async fn signup(username: &str, password: &str) -> reqwest::Response {
    client().signup(username, password).await
}

pub async fn login(username: &str, password: &str) -> String {
    client().login(username, password).await
}

pub async fn new_user(prefix: &str) -> (String, String) {
    client().new_user(prefix).await
}

/// Asserts `resp` has `status` and a JSON body `{"detail": "<non-empty string>", ...}`; returns
/// the body.
pub async fn expect_json_error(resp: reqwest::Response, status: u16, what: &str) -> Value {
    expect_json_error_in(resp, &[status], what).await
}

/// Like [`expect_json_error`] but any of `statuses` is accepted.
pub async fn expect_json_error_in(resp: reqwest::Response, statuses: &[u16], what: &str) -> Value {
    let got = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.text().await.unwrap_or_default();
    assert!(
        statuses.contains(&got),
        "{what}: expected status in {statuses:?}, got {got}: {body}"
    );
    assert!(
        ctype.starts_with("application/json"),
        "{what}: expected a JSON content-type, got {ctype:?} ({body})"
    );
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body}"));
    let detail = v["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no string `detail` in {body}"));
    assert!(!detail.is_empty(), "{what}: empty detail");
    v
}

/// The WebSocket URL of `room` on a local server, with the badge in the query.
pub fn ws_url_on(port: u16, room: &str, token: &str) -> String {
    format!("ws://127.0.0.1:{port}/ws/{room}?token={}", urlencode(token))
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

// ---------------------------------------------------------------------------------------------
// JWTs: decoding and crafting tokens (good and bad) with the test secret
// ---------------------------------------------------------------------------------------------

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub fn b64url_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64URL[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = B64URL.iter().position(|&x| x == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The (header, claims) of a compact JWT, without verifying anything.
pub fn decode_jwt(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWT: {token}");
    let part = |s: &str| -> Value {
        serde_json::from_slice(&b64url_decode(s).expect("base64url")).expect("JSON JWT part")
    };
    (part(parts[0]), part(parts[1]))
}

/// Claims of a token the Worker would issue for `sub`, valid now for an hour.
pub fn good_claims(sub: &str) -> Value {
    let now = now_secs();
    json!({
        "sub": sub,
        "iat": now,
        "exp": now + 3600,
        "iss": JWT_ISS,
        "aud": JWT_AUD,
        "jti": format!("{:016x}", random_u64()),
    })
}

/// Signs `claims` (any JSON) as an HS256 JWT with `secret`, header `{"alg":"HS256","typ":"JWT"}`.
pub fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    sign_with_header(&json!({"alg": "HS256", "typ": "JWT"}), claims, secret)
}

/// Signs `header.claims` with HMAC-SHA256 whatever the header says (for lying headers).
pub fn sign_with_header(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        b64url_encode(header.to_string().as_bytes()),
        b64url_encode(claims.to_string().as_bytes())
    );
    let mac = hmac_sha256(secret, signing_input.as_bytes());
    format!("{signing_input}.{}", b64url_encode(&mac))
}

/// An unsigned token: header `{"alg":"none"}` and an empty signature.
pub fn unsigned_token(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url_encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64url_encode(claims.to_string().as_bytes())
    )
}

/// A token signed by the test server's own secret.
pub fn test_token(claims: &Value) -> String {
    sign_hs256(claims, TEST_JWT_SECRET.as_bytes())
}

/// Verifies an HS256 JWT's signature against `secret` (through `jwt-compact`, the crate the Worker
/// uses, as a cross-check of the harness's own HMAC).
pub fn hs256_signature_valid(token: &str, secret: &[u8]) -> bool {
    use jwt_compact::alg::{Hs256, Hs256Key};
    use jwt_compact::{AlgorithmExt, UntrustedToken};
    let Ok(untrusted) = UntrustedToken::new(token) else {
        return false;
    };
    Hs256
        .validator::<Value>(&Hs256Key::new(secret))
        .validate(&untrusted)
        .is_ok()
}

// SHA-256 and HMAC (RFC 6234 / RFC 2104), so the harness needs no crypto dev-dependency.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&sha256(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(msg);
    let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&sha256(&inner));
    sha256(&outer)
}

// ---------------------------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------------------------

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What arrived on a socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A text frame that parsed as JSON.
    Json(Value),
    /// A text frame that is not JSON (e.g. `pong`).
    Text(String),
    Binary(Vec<u8>),
    /// The server closed (code, reason), or the stream ended (None).
    Closed(Option<(u16, String)>),
}

/// A test WebSocket: reads frames with timeouts and skips frame types a test does not look at.
pub struct WsClient {
    stream: WsStream,
    /// Every frame read so far, for failure messages.
    pub seen: Vec<Incoming>,
}

impl WsClient {
    /// Connects to a full `ws://` URL. A refused upgrade is `Err(tungstenite::Error::Http(resp))`.
    pub async fn connect(url: &str) -> Result<WsClient, tungstenite::Error> {
        let (stream, _resp) = tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .map_err(|_| tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into()))??;
        Ok(WsClient {
            stream,
            seen: Vec::new(),
        })
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("send text frame");
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(value.to_string()).await;
    }

    /// Sends a chat message `{"content", "room_id"}`.
    pub async fn send_message(&mut self, room: &str, content: &str) {
        self.send_json(&json!({"content": content, "room_id": room}))
            .await;
    }

    pub async fn send_binary(&mut self, data: Vec<u8>) {
        self.stream
            .send(Message::Binary(data))
            .await
            .expect("send binary frame");
    }

    /// Sends, tolerating a socket the server already closed (returns whether it was sent).
    pub async fn try_send_text(&mut self, text: impl Into<String>) -> bool {
        self.stream.send(Message::Text(text.into())).await.is_ok()
    }

    /// The next data frame or close, or `None` after `wait`. Pings/pongs are handled and skipped.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Incoming> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) => Incoming::Closed(None),
                Ok(Some(Err(e))) => {
                    let inc = Incoming::Closed(None);
                    self.seen.push(inc.clone());
                    eprintln!("[harness] websocket read error: {e}");
                    return Some(inc);
                }
                Ok(Some(Ok(m))) => match m {
                    Message::Text(t) => match serde_json::from_str::<Value>(&t) {
                        Ok(v) if v.is_object() => Incoming::Json(v),
                        _ => Incoming::Text(t),
                    },
                    Message::Binary(b) => Incoming::Binary(b),
                    Message::Close(frame) => Incoming::Closed(
                        frame.map(|f: CloseFrame| (u16::from(f.code), f.reason.to_string())),
                    ),
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                },
            };
            self.seen.push(msg.clone());
            return Some(msg);
        }
    }

    /// The next data frame; panics on timeout.
    pub async fn next(&mut self) -> Incoming {
        match self.next_within(FRAME_TIMEOUT).await {
            Some(i) => i,
            None => panic!("no frame within {FRAME_TIMEOUT:?}; seen: {:?}", self.seen),
        }
    }

    /// The next JSON frame whose `type` is one of `types`, skipping all other frames; panics on
    /// timeout or close.
    pub async fn next_of_types(&mut self, types: &[&str]) -> Value {
        match self.try_next_of_types(types, FRAME_TIMEOUT).await {
            Ok(v) => v,
            Err(why) => panic!(
                "waiting for a frame of type {types:?}: {why}; seen: {}",
                self.seen_summary()
            ),
        }
    }

    /// The next JSON frame of `type` (e.g. "message", "error"), skipping all others.
    pub async fn next_of_type(&mut self, ty: &str) -> Value {
        self.next_of_types(&[ty]).await
    }

    /// The next `message` frame.
    pub async fn next_message(&mut self) -> Value {
        self.next_of_type("message").await
    }

    /// The next `error` frame.
    pub async fn next_error(&mut self) -> Value {
        self.next_of_type("error").await
    }

    /// Like [`WsClient::next_of_types`] but returns why it found none instead of panicking.
    pub async fn try_next_of_types(
        &mut self,
        types: &[&str],
        wait: Duration,
    ) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                None => return Err(format!("timed out after {wait:?}")),
                Some(Incoming::Closed(c)) => return Err(format!("socket closed: {c:?}")),
                Some(Incoming::Json(v)) if types.iter().any(|t| v["type"] == *t) => return Ok(v),
                Some(_) => continue,
            }
        }
    }

    /// Asserts that no frame of any of `types` arrives within `wait` (other types are skipped).
    pub async fn expect_none_of_types(&mut self, types: &[&str], wait: Duration) {
        if let Ok(v) = self.try_next_of_types(types, wait).await {
            panic!("expected no frame of type {types:?}, got {v}");
        }
    }

    /// The next non-JSON text frame (e.g. the `pong` of the heartbeat), skipping JSON frames.
    pub async fn next_plain_text(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(Incoming::Text(t)) => return t,
                Some(Incoming::Closed(c)) => panic!("socket closed while waiting for text: {c:?}"),
                Some(_) => continue,
                None => panic!(
                    "no plain text frame within {FRAME_TIMEOUT:?}; seen: {}",
                    self.seen_summary()
                ),
            }
        }
    }

    /// Sends `ping` and waits for `pong`: proves the socket is open and the server reads it.
    pub async fn roundtrip_ping(&mut self) {
        self.send_text("ping").await;
        let got = self.next_plain_text().await;
        assert_eq!(got, "pong", "heartbeat answer");
    }

    pub fn seen_summary(&self) -> String {
        let items: Vec<String> = self
            .seen
            .iter()
            .rev()
            .take(20)
            .rev()
            .map(|i| match i {
                Incoming::Json(v) => {
                    let s = v.to_string();
                    if s.len() > 200 {
                        format!("{}…", &s[..s.floor_char_boundary(200)])
                    } else {
                        s
                    }
                }
                other => format!("{other:?}"),
            })
            .collect();
        format!("[{}]", items.join(", "))
    }

    pub async fn close(mut self) {
        let _ = self
            .stream
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

/// Status of a refused WebSocket handshake, with its body.
pub fn handshake_refusal(err: &tungstenite::Error) -> Option<(u16, String)> {
    match err {
        tungstenite::Error::Http(resp) => Some((
            resp.status().as_u16(),
            resp.body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        )),
        _ => None,
    }
}

/// Runs `f` for each item with at most `limit` at a time; results in input order.
pub async fn bounded_join<T, F, Fut>(items: Vec<T>, limit: usize, f: F) -> Vec<Fut::Output>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future,
{
    futures_util::stream::iter(items.into_iter().map(f))
        .buffered(limit)
        .collect()
        .await
}
