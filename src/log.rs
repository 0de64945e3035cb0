//! Structured logs: one JSON object per line (`console.log`), so `wrangler tail` and Workers Logs
//! can filter on fields. Callers pass only fields that are safe to keep: never a token, a
//! password or a message's content. `LOG_LEVEL` (`debug`, `info`, `warn`, `error`; default
//! `info`) drops lines below it.

use std::sync::atomic::{AtomicU8, Ordering};

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

/// The isolate-wide threshold, set from `LOG_LEVEL` by each entry point.
static THRESHOLD: AtomicU8 = AtomicU8::new(Level::Info as u8);

pub fn set_level_from_env(env: &worker::Env) {
    let level = crate::config::env_string(env, "LOG_LEVEL")
        .and_then(|v| Level::parse(&v))
        .unwrap_or(Level::Info);
    THRESHOLD.store(level as u8, Ordering::Relaxed);
}

/// Formats one log line as JSON: `{"level", "event", ...fields}`. A field whose value is an
/// integer is written as a number.
pub fn line(level: &str, event: &str, fields: &[(&str, &str)]) -> String {
    let mut map = serde_json::Map::new();
    map.insert("level".into(), level.into());
    map.insert("event".into(), event.into());
    for (k, v) in fields {
        // "007" or "+7" stay text: only a number's own spelling becomes a number.
        let value = match v.parse::<i64>() {
            Ok(n) if n.to_string() == *v => n.into(),
            _ => (*v).into(),
        };
        map.insert((*k).into(), value);
    }
    serde_json::Value::Object(map).to_string()
}

/// Writes one structured log line, stamped with the time, if `level` passes `LOG_LEVEL`.
pub fn event(level: &str, event: &str, fields: &[(&str, &str)]) {
    let level = Level::parse(level).unwrap_or(Level::Info);
    if (level as u8) < THRESHOLD.load(Ordering::Relaxed) {
        return;
    }
    let ts: String = worker::js_sys::Date::new_0().to_iso_string().into();
    let mut all = Vec::with_capacity(fields.len() + 1);
    all.push(("ts", ts.as_str()));
    all.extend_from_slice(fields);
    let text = line(level.name(), event, &all);
    match level {
        Level::Error => worker::console_error!("{text}"),
        Level::Warn => worker::console_warn!("{text}"),
        _ => worker::console_log!("{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_json() {
        let l = line(
            "warn",
            "ws_refused",
            &[
                ("reason", "bad \"token\""),
                ("status", "401"),
                ("code", "007"),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["event"], "ws_refused");
        assert_eq!(v["reason"], "bad \"token\"");
        assert_eq!(v["status"], 401);
        assert_eq!(v["code"], "007", "not a plain integer: kept as text");
    }

    #[test]
    fn levels() {
        assert_eq!(Level::parse("WARN"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Debug < Level::Info && Level::Warn < Level::Error);
    }
}
