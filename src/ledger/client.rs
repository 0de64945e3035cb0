//! How the Worker and the rooms call the session ledger: [`Ledger`], a handle on one user's
//! entries in the user's shard, over fetch for the Worker's calls and over RPC for a room's
//! admissions.

use serde::Deserialize;
use wasm_bindgen::prelude::*;
use worker::js_sys;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Env, Method, Request, Response};

use crate::auth::badge::Badge;
use crate::http::{ApiError, ApiResult};
use crate::log;

pub const BINDING: &str = "SESSIONS";

/// Ledger shards; a user's shard is a hash of the lowercased username.
pub const SHARDS: u32 = 16;

/// The shard holding `user` (lowercased).
pub fn shard_of(user: &str) -> u32 {
    crate::shard::index(user, SHARDS)
}

#[wasm_bindgen]
extern "C" {
    /// A ledger shard's stub, as an RPC target.
    type ShardRpc;
    #[wasm_bindgen(method, catch, js_name = admitSocket)]
    fn admit_socket(
        this: &ShardRpc,
        user: &str,
        jti: &str,
        issued_at_ms: f64,
        expires_at: f64,
        room: &str,
        max_rooms: f64,
    ) -> std::result::Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn warm(this: &ShardRpc) -> std::result::Result<js_sys::Promise, JsValue>;
}

/// A shard's answer to an admission, carried as a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Admitted,
    Revoked,
    TooManyRooms,
}

impl Verdict {
    const ALL: [Verdict; 3] = [Verdict::Admitted, Verdict::Revoked, Verdict::TooManyRooms];

    pub(super) fn status(self) -> u16 {
        match self {
            Verdict::Admitted => 204,
            Verdict::Revoked => 403,
            Verdict::TooManyRooms => 429,
        }
    }

    fn from_status(status: u16) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.status() == status)
    }
}

/// A handle on one user's entries in the ledger, for the Worker (requests, logout) and the
/// rooms (socket admissions).
pub struct Ledger {
    stub: worker::Stub,
    /// Lowercased: names are unique ignoring case.
    user: String,
}

#[derive(Deserialize)]
struct Rooms {
    rooms: Vec<String>,
}

impl Ledger {
    pub fn for_user(env: &Env, username: &str) -> ApiResult<Self> {
        let user = username.to_ascii_lowercase();
        let stub = env
            .durable_object(BINDING)?
            .id_from_name(&format!("shard-{}", shard_of(&user)))?
            .get_stub()?;
        Ok(Self { stub, user })
    }

    /// `query` is made of names the Worker validated (usernames, room ids: [A-Za-z0-9_.-])
    /// and hex ids and numbers it generated, so nothing in it needs escaping.
    async fn call(&self, path: &str, query: &str) -> ApiResult<Response> {
        let url = format!("https://sessions.internal{path}?user={}&{query}", self.user);
        Ok(self
            .stub
            .fetch_with_request(Request::new(&url, Method::Post)?)
            .await?)
    }

    /// Refuses a revoked badge (401), or one whose user already has sockets in `max_rooms`
    /// rooms (429); otherwise records that the badge opens a socket in `room`. Over RPC
    /// (`Sessions::admit_socket`, `mod.rs`); `room` is a validated room id.
    pub async fn admit_socket(self, badge: &Badge, room: &str, max_rooms: i64) -> ApiResult<()> {
        let shard: ShardRpc = self.stub.into_rpc();
        let call = shard
            .admit_socket(
                &self.user,
                &badge.jti,
                badge.issued_at_ms as f64,
                badge.expires_at as f64,
                room,
                max_rooms as f64,
            )
            .map_err(worker::Error::from)?;
        let answer = JsFuture::from(call).await.map_err(worker::Error::from)?;
        let status = answer.as_f64().map_or(0, |s| s as u16);
        verdict_result(status, badge)
    }

    /// Starts the user's shard if it is not running (`Sessions::warm`, `mod.rs`).
    pub async fn warm(self) -> ApiResult<()> {
        let shard: ShardRpc = self.stub.into_rpc();
        let call = shard.warm().map_err(worker::Error::from)?;
        JsFuture::from(call).await.map_err(worker::Error::from)?;
        Ok(())
    }

    /// Refuses a revoked badge (401).
    pub async fn admit(&self, badge: &Badge) -> ApiResult<()> {
        let query = format!(
            "jti={}&iat_ms={}&exp={}",
            badge.jti, badge.issued_at_ms, badge.expires_at
        );
        let status = self.call("/admit", &query).await?.status_code();
        verdict_result(status, badge)
    }

    /// Revokes one badge, remembered until `keep_until` (when it would have expired anyway);
    /// the rooms where it had sockets.
    pub async fn revoke(&self, jti: &str, keep_until: i64) -> ApiResult<Vec<String>> {
        let query = format!("jti={jti}&exp={keep_until}");
        let rooms: Rooms = self.call("/revoke", &query).await?.json().await?;
        Ok(rooms.rooms)
    }

    /// Revokes every badge of the user issued up to `at_ms` (milliseconds), remembered until
    /// `keep_until` (seconds: when the newest of them would have expired); the rooms where any
    /// of them had sockets.
    pub async fn revoke_all(&self, at_ms: i64, keep_until: i64) -> ApiResult<Vec<String>> {
        let query = format!("at_ms={at_ms}&exp={keep_until}");
        let rooms: Rooms = self.call("/revoke_all", &query).await?.json().await?;
        Ok(rooms.rooms)
    }

    /// Proves the shard answers (the health check).
    pub async fn ping(&self) -> ApiResult<()> {
        let response = self.call("/ping", "").await?;
        if response.status_code() == 200 {
            Ok(())
        } else {
            Err(ApiError::internal(format!(
                "session ledger answered {}",
                response.status_code()
            )))
        }
    }
}

/// What a shard's verdict (as a status) means for the badge's request.
fn verdict_result(status: u16, badge: &Badge) -> ApiResult<()> {
    match Verdict::from_status(status) {
        Some(Verdict::Admitted) => Ok(()),
        Some(Verdict::TooManyRooms) => Err(ApiError::new(
            429,
            "too many rooms open with this account; log out or wait for older badges to expire",
        )),
        None => Err(ApiError::internal(format!(
            "session ledger answered {status} to an admission"
        ))),
        Some(Verdict::Revoked) => {
            log::info(
                "auth_refused",
                &[("reason", "revoked"), ("username", badge.username.as_str())],
            );
            Err(ApiError::unauthorized("Could not validate credentials"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        // Pinned: a change here would move users to other shards and forget their revocations.
        assert_eq!(shard_of("alice"), shard_of("alice"));
        let expected: Vec<u32> = ["alice", "bob", "carol"]
            .iter()
            .map(|u| shard_of(u))
            .collect();
        assert_eq!(expected, vec![7, 4, 2]);
        let mut used = std::collections::HashSet::new();
        for i in 0..1000 {
            used.insert(shard_of(&format!("user{i}")));
        }
        assert_eq!(
            used.len() as u32,
            SHARDS,
            "1000 users should land on every shard"
        );
        assert!((0..1000).all(|i| shard_of(&format!("u{i}")) < SHARDS));
    }

    #[test]
    fn every_verdict_reads_back_from_its_status() {
        for verdict in Verdict::ALL {
            assert_eq!(Verdict::from_status(verdict.status()), Some(verdict));
        }
        assert_eq!(Verdict::from_status(200), None);
        assert_eq!(Verdict::from_status(500), None);
    }
}
