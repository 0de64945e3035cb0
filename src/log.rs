//! Structured logs: one JSON object per line. Callers pass only fields that are safe to keep:
//! never a token, a password or a message's content.

/// Formats one log line as JSON: `{"level", "event", ...fields}`.
pub fn line(level: &str, event: &str, fields: &[(&str, &str)]) -> String {
    let mut map = serde_json::Map::new();
    map.insert("level".into(), level.into());
    map.insert("event".into(), event.into());
    for (k, v) in fields {
        map.insert((*k).into(), (*v).into());
    }
    serde_json::Value::Object(map).to_string()
}

/// Writes one structured log line to the Worker's console, stamped with the time.
pub fn event(level: &str, event: &str, fields: &[(&str, &str)]) {
    let ts = worker::Date::now().to_string();
    let mut all = Vec::with_capacity(fields.len() + 1);
    all.push(("ts", ts.as_str()));
    all.extend_from_slice(fields);
    let text = line(level, event, &all);
    match level {
        "error" => worker::console_error!("{text}"),
        "warn" => worker::console_warn!("{text}"),
        _ => worker::console_log!("{text}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_lines_are_json() {
        let l = super::line("warn", "ws_refused", &[("reason", "bad \"token\"")]);
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["event"], "ws_refused");
        assert_eq!(v["reason"], "bad \"token\"");
    }
}
