//! The throttle on login and signup attempts: counts attempts per key (`login-user:bob`,
//! `login-ip:1.2.3.4`, `signup-ip:…`) in a sliding window, in Durable Objects (class
//! [`Limiter`], its deployed name). A Durable Object, not KV, because the count must be exact
//! and immediate: KV is eventually consistent and would let a burst through. The Worker-facing
//! side ([`Throttle`]) turns a full window into a 429 with `Retry-After`.
//!
//! Why `SHARDS` objects holding many keys each, rather than an object per key: every new
//! object is a new SQLite database on disk, so a key per object let anyone create databases
//! by trying usernames, and each login of a new user started an object (and created its files)
//! before any password work. A fixed set stays warm and bounded.

use std::cell::Cell;

use serde::Deserialize;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use crate::http;
use crate::http::{ApiError, ApiResult};

pub const BINDING: &str = "LIMITER";

/// Limiter objects; a key's object is a hash of the key (`shard.rs`). Changing it forgets the
/// attempts counted so far: a constant, not a setting.
pub const SHARDS: u32 = 16;

/// Each row is one attempt, kept until it leaves its window (`expires`, ms).
const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS attempts (key TEXT NOT NULL, expires INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS attempts_by_key ON attempts (key, expires)",
    "CREATE INDEX IF NOT EXISTS attempts_by_expiry ON attempts (expires)",
];

/// How often a shard drops every key's expired attempts, not only the asking key's (ms).
const PRUNE_ALL_EVERY_MS: i64 = 60_000;

#[durable_object(fetch)]
pub struct Limiter {
    state: State,
    /// When expired attempts of all keys were last dropped (ms, since this wake-up).
    pruned_at: Cell<i64>,
}

impl DurableObject for Limiter {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        for ddl in SCHEMA {
            sql.exec(ddl, None).expect("creating the attempts table");
        }
        Self {
            state,
            pruned_at: Cell::new(0),
        }
    }

    /// `/check` says whether the key's window is full; `/hit` also records one attempt if it is
    /// not; `/release` takes back the key's newest attempt (a login that turned out to be
    /// right). Query: `key`, `limit` (attempts per window) and `window_ms`. Answers
    /// `{"retry_after_ms"}`, 0 if allowed. Runs without an `await`, so concurrent attempts are
    /// counted one at a time.
    async fn fetch(&self, req: Request) -> Result<Response> {
        let url = req.inner().url();
        let number = |name: &str| {
            http::raw_query_param(&url, name)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let (limit, window_ms) = (number("limit"), number("window_ms"));
        let Some(key) = http::raw_query_param(&url, "key").filter(|k| !k.is_empty()) else {
            return Ok(ApiError::bad_request("missing key").into_response());
        };
        let now = worker::Date::now().as_millis() as i64;
        let sql = self.state.storage().sql();
        if http::path_of(&url) == "/release" {
            sql.exec(
                "DELETE FROM attempts WHERE rowid =
                   (SELECT MAX(rowid) FROM attempts WHERE key = ?)",
                vec![key.into()],
            )?;
            return Ok(http::json(200, &serde_json::json!({ "retry_after_ms": 0 })));
        }
        if now - self.pruned_at.get() >= PRUNE_ALL_EVERY_MS {
            sql.exec("DELETE FROM attempts WHERE expires <= ?", vec![now.into()])?;
            self.pruned_at.set(now);
        }
        #[derive(Deserialize)]
        struct Window {
            count: i64,
            first_expiry: Option<i64>,
        }
        let window = sql
            .exec(
                "SELECT COUNT(*) AS count, MIN(expires) AS first_expiry FROM attempts
                 WHERE key = ? AND expires > ?",
                vec![key.as_str().into(), now.into()],
            )?
            .one::<Window>()?;
        let retry_after_ms = if window.count >= limit {
            (window.first_expiry.unwrap_or(now + window_ms) - now).max(1)
        } else {
            if http::path_of(&url) == "/hit" {
                sql.exec(
                    "INSERT INTO attempts (key, expires) VALUES (?, ?)",
                    vec![key.into(), (now + window_ms).into()],
                )?;
            }
            0
        };
        Ok(http::json(
            200,
            &serde_json::json!({ "retry_after_ms": retry_after_ms }),
        ))
    }
}

/// A limit on attempts of one kind: at most `limit` per `window_secs`.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub kind: &'static str,
    pub limit: i64,
    pub window_secs: i64,
}

/// One limiter key under a policy, e.g. failed logins for `bob`.
pub struct Throttle<'a> {
    env: &'a Env,
    policy: Policy,
    key: String,
}

#[derive(Deserialize)]
struct Answer {
    retry_after_ms: i64,
}

impl<'a> Throttle<'a> {
    pub fn new(env: &'a Env, policy: Policy, key: &str) -> Self {
        Self {
            env,
            policy,
            key: format!("{}:{}", policy.kind, key.to_ascii_lowercase()),
        }
    }

    async fn call(&self, action: &str) -> ApiResult<i64> {
        let shard = crate::shard::index(&self.key, SHARDS);
        let stub = self
            .env
            .durable_object(BINDING)?
            .id_from_name(&format!("limiter-shard-{shard}"))?
            .get_stub()?;
        let query = serde_urlencoded::to_string([
            ("key", self.key.as_str()),
            ("limit", self.policy.limit.to_string().as_str()),
            (
                "window_ms",
                (self.policy.window_secs * 1000).to_string().as_str(),
            ),
        ])
        .map_err(|e| ApiError::internal(e.to_string()))?;
        let url = format!("https://limiter.internal/{action}?{query}");
        let mut response = stub
            .fetch_with_request(Request::new(&url, worker::Method::Post)?)
            .await?;
        Ok(response.json::<Answer>().await?.retry_after_ms)
    }

    /// Refuses (429) when the window is already full; otherwise records nothing.
    pub async fn check(&self) -> ApiResult<()> {
        too_many(self.call("check").await?)
    }

    /// Records an attempt, refusing (429) when the window was already full.
    pub async fn hit(&self) -> ApiResult<()> {
        too_many(self.call("hit").await?)
    }

    /// Gives back the newest attempt.
    pub async fn release(&self) -> ApiResult<()> {
        self.call("release").await.map(|_| ())
    }
}

/// The 429 for a full window. The body is the same whoever is asking, so it reveals nothing.
fn too_many(retry_after_ms: i64) -> ApiResult<()> {
    if retry_after_ms <= 0 {
        return Ok(());
    }
    let secs = (retry_after_ms + 999) / 1000;
    Err(ApiError::new(429, "Too many attempts; try again later")
        .with_header("Retry-After", secs.to_string()))
}
