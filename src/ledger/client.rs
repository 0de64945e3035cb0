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

/// (room, jti): a badge with sockets in a room, for the Worker to close.
pub type BadgeSockets = Vec<(String, String)>;

#[derive(Deserialize)]
struct Sockets {
    sockets: BadgeSockets,
}

/// What presenting a refresh token came to (`Ledger::rotate`).
#[derive(Debug)]
pub enum Refreshed {
    /// Consumed and replaced; the family's registered spelling of the name and when it ends
    /// (seconds).
    Rotated { name: String, expires_at: i64 },
    /// Consumed before: the family is revoked; its badges' sockets are to be closed.
    Reused { sockets: BadgeSockets },
    /// Valid, but its family holds `MAX_BADGES_PER_LOGIN` unexpired badges: not consumed, and
    /// a refresh may succeed in `retry_after` seconds.
    Throttled { retry_after: i64 },
    /// Unknown, expired or revoked.
    Invalid,
}

#[derive(Deserialize)]
struct Rotation {
    outcome: String,
    name: String,
    expires_at: i64,
    sockets: BadgeSockets,
    retry_after: i64,
}

/// A login's family started (`Ledger::start_family`): the user's oldest live logins it ended
/// to stay within `MAX_LOGINS_PER_USER`, and their badges' sockets, for the Worker to close.
#[derive(Debug, Deserialize)]
pub struct Started {
    pub ended: usize,
    pub sockets: BadgeSockets,
}

/// A login's refresh family as the Worker made it; every field is hex it generated, a
/// validated name or a number.
pub struct FamilyStart<'a> {
    pub name: &'a str,
    pub family: &'a str,
    pub token_hash: &'a str,
    pub jti: &'a str,
    /// When the family's refresh tokens expire (seconds).
    pub expires_at: i64,
    /// When its first badge can matter no more (seconds).
    pub badge_keep_until: i64,
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

    /// Refuses a revoked badge (401).
    pub async fn admit(&self, badge: &Badge) -> ApiResult<()> {
        let query = format!(
            "jti={}&iat_ms={}&exp={}",
            badge.jti, badge.issued_at_ms, badge.expires_at
        );
        let status = self.call("/admit", &query).await?.status_code();
        verdict_result(status, badge)
    }

    /// Revokes one badge, remembered until `keep_until` (when it would have expired anyway),
    /// and its refresh family; the sockets of the badge and of every badge of the family.
    pub async fn revoke(&self, jti: &str, keep_until: i64) -> ApiResult<BadgeSockets> {
        let query = format!("jti={jti}&exp={keep_until}");
        let sockets: Sockets = self.call("/revoke", &query).await?.json().await?;
        Ok(sockets.sockets)
    }

    /// Starts a login's refresh family, ending the user's oldest live ones past
    /// `MAX_LOGINS_PER_USER`; `None` if the account was closed meanwhile.
    pub async fn start_family(&self, start: &FamilyStart<'_>) -> ApiResult<Option<Started>> {
        let query = format!(
            "name={}&family={}&hash={}&jti={}&exp={}&badge_exp={}",
            start.name,
            start.family,
            start.token_hash,
            start.jti,
            start.expires_at,
            start.badge_keep_until
        );
        let mut answer = self.call("/family/start", &query).await?;
        match answer.status_code() {
            200 => Ok(Some(answer.json().await?)),
            403 => Ok(None),
            other => Err(ApiError::internal(format!(
                "session ledger answered {other} to a family start"
            ))),
        }
    }

    /// Presents a refresh token (its hash): consumed and replaced by `new_hash` with badge
    /// `jti` recorded in its family, or refused.
    pub async fn rotate(
        &self,
        hash: &str,
        new_hash: &str,
        jti: &str,
        badge_keep_until: i64,
    ) -> ApiResult<Refreshed> {
        let query =
            format!("hash={hash}&new_hash={new_hash}&jti={jti}&badge_exp={badge_keep_until}");
        let answer: Rotation = self.call("/family/rotate", &query).await?.json().await?;
        Ok(match answer.outcome.as_str() {
            "rotated" => Refreshed::Rotated {
                name: answer.name,
                expires_at: answer.expires_at,
            },
            "reused" => Refreshed::Reused {
                sockets: answer.sockets,
            },
            "throttled" => Refreshed::Throttled {
                retry_after: answer.retry_after,
            },
            _ => Refreshed::Invalid,
        })
    }

    /// A password change: revokes every badge and family of the user but badge `jti` and its
    /// family, for badges issued up to `at_ms` (remembered until `keep_until`); the sockets
    /// of the revoked badges.
    pub async fn revoke_others(
        &self,
        jti: &str,
        at_ms: i64,
        keep_until: i64,
    ) -> ApiResult<BadgeSockets> {
        let query = format!("jti={jti}&at_ms={at_ms}&exp={keep_until}");
        let sockets: Sockets = self.call("/revoke_others", &query).await?.json().await?;
        Ok(sockets.sockets)
    }

    /// The account is deleted: every badge and family of the user is refused from now on,
    /// including any issued later; the rooms where the user had sockets.
    pub async fn close_account(&self) -> ApiResult<Vec<String>> {
        let rooms: Rooms = self.call("/close", "").await?.json().await?;
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
