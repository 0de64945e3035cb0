//! Structured logs: one JSON object per line (`console.log`), so `wrangler tail` and Workers Logs
//! can filter on fields. Callers pass only fields that are safe to keep: never a token, a
//! password or a message's content. Lines below the level set from `LOG_LEVEL` (`config.rs`)
//! are dropped.
//!
//! Per-socket lines (`ws_connect`, `ws_close`) are written by the room through a [`SocketLog`]:
//! one line per socket in a quiet room, one line per room and half second during a burst. Each
//! `console.log` is a log event to ship and store (Workers Logs bills per event; under
//! `wrangler dev` each one is a message to the dev server's node process), and a reconnect storm
//! is exactly when a per-socket line costs most.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::{Map, Value};

use crate::defer::{BurstWindow, Deferred, Flush};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

impl Level {
    pub fn parse(raw: &str) -> Option<Level> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" | "warning" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// The isolate-wide threshold (`LOG_LEVEL`, set by `config.rs`).
static THRESHOLD: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Drops lines below `level` from now on, for the whole isolate.
pub fn set_level(level: Level) {
    THRESHOLD.store(level as u8, Ordering::Relaxed);
}

/// Whether lines at `level` pass `LOG_LEVEL`.
pub fn enabled(level: Level) -> bool {
    level as u8 >= THRESHOLD.load(Ordering::Relaxed)
}

/// `{"level", "event", ...fields}`. Every field is text, whatever it looks like: a username
/// `3784` stays the string a log filter compares with; numbers are passed as numbers.
fn fields_map(level: &str, event: &str, fields: &[(&str, &str)]) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("level".into(), level.into());
    map.insert("event".into(), event.into());
    for (k, v) in fields {
        map.insert((*k).into(), (*v).into());
    }
    map
}

/// Formats one log line as JSON: `{"level", "event", ...fields}`.
pub fn line(level: &str, event: &str, fields: &[(&str, &str)]) -> String {
    build(level, event, fields, Map::new())
}

/// `{"level", "event", ...fields, ...extra}` as one line of JSON.
fn build(level: &str, event: &str, fields: &[(&str, &str)], extra: Map<String, Value>) -> String {
    let mut map = fields_map(level, event, fields);
    map.extend(extra);
    Value::Object(map).to_string()
}

/// What a batch of per-socket entries adds to its line: `"count"` and `"sockets": [...]`.
fn batch_fields(sockets: Vec<Value>) -> Map<String, Value> {
    let mut extra = Map::new();
    extra.insert("count".into(), sockets.len().into());
    extra.insert("sockets".into(), Value::Array(sockets));
    extra
}

/// Writes one structured log line at `level`, stamped with the time, if it passes `LOG_LEVEL`.
pub fn event(level: Level, event: &str, fields: &[(&str, &str)]) {
    if enabled(level) {
        write_stamped(level, event, fields, Map::new());
    }
}

pub fn debug(event: &str, fields: &[(&str, &str)]) {
    self::event(Level::Debug, event, fields);
}

pub fn info(event: &str, fields: &[(&str, &str)]) {
    self::event(Level::Info, event, fields);
}

pub fn warn(event: &str, fields: &[(&str, &str)]) {
    self::event(Level::Warn, event, fields);
}

pub fn error(event: &str, fields: &[(&str, &str)]) {
    self::event(Level::Error, event, fields);
}

/// [`event`] with number fields too (a status, a duration), written as JSON numbers.
pub fn event_with_numbers(
    level: Level,
    event: &str,
    fields: &[(&str, &str)],
    numbers: &[(&str, i64)],
) {
    if enabled(level) {
        let numbers = numbers
            .iter()
            .map(|(k, n)| ((*k).to_owned(), Value::from(*n)))
            .collect();
        write_stamped(level, event, fields, numbers);
    }
}

/// Writes a [`LineBatch`]'s entries as one `info` line (nothing if there are none).
fn socket_batch(event: &str, fields: &[(&str, &str)], sockets: Vec<Value>) {
    if sockets.is_empty() || !enabled(Level::Info) {
        return;
    }
    write_stamped(Level::Info, event, fields, batch_fields(sockets));
}

/// Writes `fields` after `"ts"`, the time now, then `extra`.
fn write_stamped(level: Level, event: &str, fields: &[(&str, &str)], extra: Map<String, Value>) {
    let ts: String = worker::js_sys::Date::new_0().to_iso_string().into();
    let mut all = Vec::with_capacity(fields.len() + 1);
    all.push(("ts", ts.as_str()));
    all.extend_from_slice(fields);
    let text = build(level.name(), event, &all, extra);
    match level {
        Level::Error => worker::console_error!("{text}"),
        Level::Warn => worker::console_warn!("{text}"),
        _ => worker::console_log!("{text}"),
    }
}

/// How long a room gathers per-socket entries after writing a line, once sockets come faster
/// than that (milliseconds).
pub const BATCH_WINDOW_MS: f64 = 500.0;
/// Most entries in one line: a fuller batch is written at once (a line stays under ~16 KB).
pub const BATCH_MAX_ENTRIES: usize = 100;

/// Per-socket log entries of one event in one room, with the same leading-edge rule as
/// presence (`room/presence.rs`): the first entry after a quiet window is written at once,
/// later ones wait for one flush at (last line + window). Pure, so it is unit-tested natively;
/// [`SocketLog`] runs the timer. In memory only: entries waiting when the runtime evicts the
/// room are lost (it does not evict an object with a timer pending).
#[derive(Debug)]
pub struct LineBatch {
    /// When the last line was written, and the scheduled flush (`burst.rs`).
    window: BurstWindow,
    pending: Vec<Value>,
}

impl LineBatch {
    pub fn new(window_ms: f64) -> Self {
        Self {
            window: BurstWindow::new(window_ms),
            pending: Vec::new(),
        }
    }

    /// Takes one entry at `now`: the entries to write as one line now, or when to flush.
    pub fn add(&mut self, entry: Value, now: f64) -> Flush<Vec<Value>> {
        if self.pending.is_empty() && self.window.quiet(now) {
            self.window.sent(now);
            return Flush::Now(vec![entry]);
        }
        self.pending.push(entry);
        if self.pending.len() >= BATCH_MAX_ENTRIES {
            // The scheduled flush, if any, stays scheduled and writes whatever comes next.
            return Flush::Now(self.drain(now));
        }
        Flush::queued(&mut self.window, now)
    }

    /// The flush timer fired: everything waiting, to write as one line now (possibly empty).
    pub fn take(&mut self, now: f64) -> Vec<Value> {
        self.window.fired();
        self.drain(now)
    }

    fn drain(&mut self, now: f64) -> Vec<Value> {
        if !self.pending.is_empty() {
            self.window.sent(now);
        }
        std::mem::take(&mut self.pending)
    }
}

/// One room's `ws_connect` or `ws_close` entries waiting for their line ([`LineBatch`]), and
/// the timer that writes it.
pub struct SocketLog {
    event: &'static str,
    room: String,
    batch: RefCell<LineBatch>,
    flush: Deferred,
}

impl SocketLog {
    pub fn new(event: &'static str, room: &str) -> Rc<Self> {
        Rc::new(Self {
            event,
            room: room.to_owned(),
            batch: RefCell::new(LineBatch::new(BATCH_WINDOW_MS)),
            flush: Deferred::default(),
        })
    }

    /// Logs one socket's entry, or queues it for the room's next line of this event, whose
    /// flush this may schedule. The entry gets `at`, the time now.
    pub fn add(self: &Rc<Self>, entry: impl FnOnce() -> Value) {
        if !enabled(Level::Info) {
            return;
        }
        let now = worker::Date::now().as_millis() as f64;
        let mut entry = entry();
        entry["at"] = (now as u64).into();
        let flush = self.batch.borrow_mut().add(entry, now);
        match flush {
            Flush::Now(entries) => socket_batch(self.event, &[("room", &self.room)], entries),
            Flush::Wait => {}
            Flush::Schedule { delay_ms } => {
                self.flush
                    .schedule(self, delay_ms.ceil() as u32, Self::write_due)
            }
        }
    }

    /// The flush timer fired: writes the entries that are due.
    fn write_due(self: &Rc<Self>) {
        self.flush.fired();
        let entries = self
            .batch
            .borrow_mut()
            .take(worker::Date::now().as_millis() as f64);
        socket_batch(self.event, &[("room", &self.room)], entries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_json_with_text_as_text_and_numbers_as_numbers() {
        let mut numbers = Map::new();
        numbers.insert("status".into(), 401.into());
        let l = build(
            "warn",
            "ws_refused",
            &[
                ("reason", "bad \"token\""),
                ("username", "3784"),
                ("code", "007"),
            ],
            numbers,
        );
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["event"], "ws_refused");
        assert_eq!(v["reason"], "bad \"token\"");
        assert_eq!(v["status"], 401);
        assert_eq!(v["username"], "3784", "a numeric username stays a string");
        assert_eq!(v["code"], "007");
        let plain: serde_json::Value =
            serde_json::from_str(&line("info", "e", &[("n", "12")])).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({"level": "info", "event": "e", "n": "12"})
        );
    }

    fn entry(n: u32) -> Value {
        serde_json::json!({ "n": n })
    }

    #[test]
    fn a_quiet_room_writes_each_socket_at_once() {
        let mut batch = LineBatch::new(500.0);
        assert_eq!(batch.add(entry(1), 0.0), Flush::Now(vec![entry(1)]));
        assert_eq!(batch.add(entry(2), 600.0), Flush::Now(vec![entry(2)]));
        assert_eq!(batch.add(entry(3), 1100.0), Flush::Now(vec![entry(3)]));
    }

    #[test]
    fn a_burst_is_one_line_per_window() {
        let mut batch = LineBatch::new(500.0);
        assert_eq!(batch.add(entry(1), 0.0), Flush::Now(vec![entry(1)]));
        assert_eq!(
            batch.add(entry(2), 10.0),
            Flush::Schedule { delay_ms: 490.0 }
        );
        assert_eq!(batch.add(entry(3), 20.0), Flush::Wait);
        assert_eq!(batch.take(500.0), vec![entry(2), entry(3)]);
        // Right after a flushed line, the next entry waits a whole window again.
        assert_eq!(
            batch.add(entry(4), 510.0),
            Flush::Schedule { delay_ms: 490.0 }
        );
        assert_eq!(batch.take(1000.0), vec![entry(4)]);
        assert_eq!(batch.take(1000.0), Vec::<Value>::new(), "nothing twice");
    }

    #[test]
    fn a_full_batch_is_written_at_once_and_nothing_is_lost() {
        let mut batch = LineBatch::new(500.0);
        let mut written = vec![];
        let mut timers = 0;
        for n in 0..(3 * BATCH_MAX_ENTRIES as u32) {
            match batch.add(entry(n), 1.0 + n as f64 / 1000.0) {
                Flush::Now(entries) => {
                    assert!(entries.len() <= BATCH_MAX_ENTRIES);
                    written.extend(entries);
                }
                Flush::Schedule { .. } => timers += 1,
                Flush::Wait => {}
            }
        }
        written.extend(batch.take(600.0));
        assert_eq!(timers, 1, "one timer for the whole burst");
        let expected: Vec<Value> = (0..(3 * BATCH_MAX_ENTRIES as u32)).map(entry).collect();
        assert_eq!(written, expected);
    }

    #[test]
    fn a_lost_timer_does_not_hold_entries_for_good() {
        let mut batch = LineBatch::new(500.0);
        batch.add(entry(1), 0.0);
        assert!(matches!(batch.add(entry(2), 1.0), Flush::Schedule { .. }));
        // The timer never fires; much later another entry schedules a new one.
        assert!(matches!(
            batch.add(entry(3), 1.0 + 500.0 + crate::defer::LOST_FLUSH_MS),
            Flush::Schedule { .. }
        ));
        assert_eq!(batch.take(6000.0), vec![entry(2), entry(3)]);
    }

    #[test]
    fn batch_lines_carry_the_count_and_the_entries() {
        let l = build(
            "info",
            "ws_connect",
            &[("room", "lobby")],
            batch_fields(vec![entry(1), entry(2)]),
        );
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["event"], "ws_connect");
        assert_eq!(v["room"], "lobby");
        assert_eq!(v["count"], 2);
        assert_eq!(v["sockets"][1]["n"], 2);
    }

    #[test]
    fn levels() {
        assert_eq!(Level::parse("WARN"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Debug < Level::Info && Level::Warn < Level::Error);
    }
}
