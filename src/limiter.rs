//! The attempt limiter: one small Durable Object per key (`login-user:bob`, `login-ip:1.2.3.4`,
//! `signup-ip:…`) counting attempts in a sliding window. A Durable Object, not KV, because the
//! count must be exact and immediate: KV is eventually consistent and would let a burst through.
//! The Worker-facing side (`Throttle`) turns a full window into a 429 with `Retry-After`.

use serde::Deserialize;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use crate::error::{ApiError, ApiResult};
use crate::http;

pub const BINDING: &str = "LIMITER";

#[durable_object(fetch)]
pub struct Limiter {
    state: State,
}

impl DurableObject for Limiter {
    fn new(state: State, _env: Env) -> Self {
        state
            .storage()
            .sql()
            .exec(
                "CREATE TABLE IF NOT EXISTS attempts (ts INTEGER NOT NULL)",
                None,
            )
            .expect("creating the attempts table");
        Self { state }
    }

    /// `/check` says whether the window is full; `/hit` also records one attempt if it is not;
    /// `/release` takes back the newest attempt (a login that turned out to be right).
    /// Query: `limit` (attempts per window) and `window_ms`. Answers `{"retry_after_ms"}`, 0 if
    /// allowed. Runs without an `await`, so concurrent attempts are counted one at a time.
    async fn fetch(&self, req: Request) -> Result<Response> {
        let url = req.url()?;
        let param = |name: &str| {
            http::query_param(&url, name)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let (limit, window_ms) = (param("limit"), param("window_ms"));
        let now = worker::Date::now().as_millis() as i64;
        let sql = self.state.storage().sql();
        if url.path() == "/release" {
            sql.exec(
                "DELETE FROM attempts WHERE rowid = (SELECT MAX(rowid) FROM attempts)",
                None,
            )?;
            return Ok(http::json(200, &serde_json::json!({ "retry_after_ms": 0 })));
        }
        sql.exec(
            "DELETE FROM attempts WHERE ts <= ?",
            vec![(now - window_ms).into()],
        )?;
        #[derive(Deserialize)]
        struct Window {
            count: i64,
            oldest: Option<i64>,
        }
        let window = sql
            .exec(
                "SELECT COUNT(*) AS count, MIN(ts) AS oldest FROM attempts",
                None,
            )?
            .one::<Window>()?;
        let retry_after_ms = if window.count >= limit {
            (window.oldest.unwrap_or(now) + window_ms - now).max(1)
        } else {
            if url.path() == "/hit" {
                sql.exec("INSERT INTO attempts (ts) VALUES (?)", vec![now.into()])?;
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
        let stub = self
            .env
            .durable_object(BINDING)?
            .id_from_name(&self.key)?
            .get_stub()?;
        let url = format!(
            "https://limiter.internal/{action}?limit={}&window_ms={}",
            self.policy.limit,
            self.policy.window_secs * 1000
        );
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
