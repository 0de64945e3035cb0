//! `GET /healthz`: is the service able to work? Checks D1, Durable Objects (a session
//! ledger) and the signing key.

use worker::{Env, Response};

use crate::config;
use crate::http;
use crate::ledger::Ledger;
use crate::store::Store;

/// A ledger name no account can have (usernames are letters, digits, `_`, `.` and `-`:
/// `protocol::Username`) and that needs no escaping in the ledger's query; used only to prove
/// Durable Objects answer.
const HEALTH_PROBE_USER: &str = "~health";

pub async fn healthz(env: &Env) -> Response {
    let d1 = match Store::from_env(env) {
        Ok(store) => store.ping().await.map_err(|e| e.detail.into_owned()),
        Err(e) => Err(e.detail.into_owned()),
    };
    let sessions = match Ledger::for_user(env, HEALTH_PROBE_USER) {
        Ok(ledger) => ledger.ping().await.map_err(|e| e.detail.into_owned()),
        Err(e) => Err(e.detail.into_owned()),
    };
    let jwt = config::badge_keys(env)
        .map(|_| ())
        .map_err(|e| e.to_string());
    let checks = [
        ("d1", &d1),
        ("durable_objects", &sessions),
        ("jwt_secret", &jwt),
    ];
    let healthy = checks.iter().all(|(_, r)| r.is_ok());
    let mut detail = serde_json::Map::new();
    for (name, result) in checks {
        let value = match result {
            Ok(()) => "ok".to_owned(),
            // Internal errors are already generic ("Internal Server Error"); the cause is logged.
            Err(e) => format!("failing: {e}"),
        };
        detail.insert(name.into(), value.into());
    }
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "version": env!("CARGO_PKG_VERSION"),
        "checks": detail,
    });
    http::json(if healthy { 200 } else { 503 }, &body)
}
