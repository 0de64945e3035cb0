//! The session ledger: which badges are revoked and in which rooms each badge has opened
//! sockets, kept in Durable Objects (`Sessions`), each owning a fixed shard of the users.
//!
//! Why a Durable Object rather than KV + D1: a socket's admission needs both "is this badge
//! revoked?" and "remember this socket's room for a later logout". Here that is ONE call (made
//! by the room, once per badge: `admissions.rs`) answered from the object's own SQLite, and it
//! is exact and immediate everywhere (KV is eventually consistent across locations, so a
//! revoked badge could still get in elsewhere for a while). Logout asks the same object, which
//! hands back the rooms to close sockets in.
//!
//! Why shards rather than one object per user: a new Durable Object costs far more to start
//! than a call to a running one (measured locally: ~2 ms of CPU against ~0.3 ms), and most
//! connects come from users the service has not seen for a while. `SHARDS` objects stay warm
//! and each handles 1/`SHARDS` of the connects. Changing `SHARDS` moves users to other shards
//! and forgets their revocations: it is a constant, not a setting.

use std::cell::Cell;

use serde::Deserialize;
use wasm_bindgen::prelude::*;
use worker::js_sys;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{durable_object, DurableObject, Env, Method, Request, Response, Result, State};

use crate::auth::badge::Badge;
use crate::error::{ApiError, ApiResult};
use crate::http;

pub const BINDING: &str = "SESSIONS";

/// Ledger shards; a user's shard is a hash of the lowercased username.
pub const SHARDS: u32 = 16;

/// How often a shard drops rows of expired badges (seconds).
const PRUNE_EVERY_SECS: i64 = 60;

#[durable_object(fetch)]
pub struct Sessions {
    /// The object's SQLite handle, looked up once rather than per call.
    sql: worker::SqlStorage,
    /// When expired rows were last dropped (seconds).
    pruned_at: Cell<i64>,
}

impl DurableObject for Sessions {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        for ddl in [
            "CREATE TABLE IF NOT EXISTS not_before (
                username TEXT PRIMARY KEY, at INTEGER NOT NULL, exp INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS revoked (jti TEXT PRIMARY KEY, exp INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS sockets (
                username TEXT NOT NULL, jti TEXT NOT NULL, room TEXT NOT NULL, exp INTEGER NOT NULL,
                PRIMARY KEY (username, jti, room))",
        ] {
            sql.exec(ddl, None).expect("creating the ledger tables");
        }
        Self {
            sql,
            pruned_at: Cell::new(0),
        }
    }

    /// Internal routes, called only by the Worker (a Durable Object is not reachable from
    /// outside). `user` is the lowercased username. (A room's admissions come over RPC:
    /// [`Sessions::admit_socket`].)
    /// - `/admit?user&jti&iat&exp`: an empty answer whose status is the verdict
    ///   (`Verdict::status`).
    /// - `/revoke?user&jti&exp`: revokes one badge; `{"rooms"}` where it had sockets.
    /// - `/revoke_all?user&at&exp`: revokes the user's badges issued up to `at`; `{"rooms"}`.
    /// - `/ping`: `{"ok": true}` (health check).
    ///
    /// Every route runs without an `await`, so a logout and a connect are ordered one way or
    /// the other: a connect admitted first is in the rooms the logout returns.
    async fn fetch(&self, req: Request) -> Result<Response> {
        let url = req.url()?;
        let text = |name: &str| http::query_param(&url, name).unwrap_or_default();
        let number = |name: &str| text(name).parse::<i64>().unwrap_or(0);
        let now = (worker::Date::now().as_millis() / 1000) as i64;
        let (user, jti) = (text("user"), text("jti"));
        let body = match url.path() {
            "/admit" => {
                let verdict = self.admit(now, &user, &jti, number("iat"), number("exp"), None)?;
                // The answer is the status alone: no body for the Worker to stream and parse.
                return Response::empty().map(|r| r.with_status(verdict.status()));
            }
            "/revoke" => {
                let rooms = self.take_rooms(&user, Some(&jti))?;
                self.sql.exec(
                    "INSERT OR REPLACE INTO revoked (jti, exp) VALUES (?, ?)",
                    vec![jti.into(), number("exp").into()],
                )?;
                serde_json::json!({ "rooms": rooms })
            }
            "/revoke_all" => {
                self.sql.exec(
                    "INSERT INTO not_before (username, at, exp) VALUES (?, ?, ?)
                     ON CONFLICT (username) DO UPDATE
                     SET at = MAX(at, excluded.at), exp = MAX(exp, excluded.exp)",
                    vec![
                        user.as_str().into(),
                        number("at").into(),
                        number("exp").into(),
                    ],
                )?;
                serde_json::json!({ "rooms": self.take_rooms(&user, None)? })
            }
            "/ping" => serde_json::json!({ "ok": true }),
            _ => {
                return Ok(http::json(
                    404,
                    &serde_json::json!({ "detail": "Not Found" }),
                ))
            }
        };
        Ok(http::json(200, &body))
    }
}

// Called by rooms over RPC rather than fetch: an admission is a few numbers and names each
// way, and a fetch between two objects costs a whole HTTP request and response (headers, URL,
// body stream) on both sides. The class is made a `DurableObject` subclass for this by the
// build (scripts/build, build/entry.mjs): the runtime serves RPC only on those.
#[wasm_bindgen]
impl Sessions {
    /// A room asks whether a badge may open a socket in `room` (`user` lowercased): the
    /// verdict's status (`Verdict::status`). Refused if revoked, or if the user already has
    /// sockets in `max_rooms` rooms; otherwise the room is recorded for a later logout. Runs
    /// without an `await`, like the routes above.
    #[wasm_bindgen(js_name = admitSocket)]
    pub fn admit_socket(
        &self,
        user: &str,
        jti: &str,
        issued_at: f64,
        expires_at: f64,
        room: &str,
        max_rooms: f64,
    ) -> std::result::Result<u16, JsValue> {
        let now = (worker::Date::now().as_millis() / 1000) as i64;
        self.admit(
            now,
            user,
            jti,
            issued_at as i64,
            expires_at as i64,
            Some((room, max_rooms as i64)),
        )
        .map(Verdict::status)
        .map_err(|e| JsValue::from_str(&e.to_string()))
    }
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
        issued_at: f64,
        expires_at: f64,
        room: &str,
        max_rooms: f64,
    ) -> std::result::Result<js_sys::Promise, JsValue>;
}

/// A shard's answer to an admission, carried as a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Admitted,
    Revoked,
    TooManyRooms,
}

impl Verdict {
    const ALL: [Verdict; 3] = [Verdict::Admitted, Verdict::Revoked, Verdict::TooManyRooms];

    fn status(self) -> u16 {
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

#[derive(Deserialize)]
struct Standing {
    not_before: Option<i64>,
    revoked: i64,
    rooms: i64,
}

#[derive(Deserialize)]
struct RoomRow {
    room: String,
}

impl Sessions {
    /// Drops rows that can no longer matter: badges past their expiry can open nothing.
    fn prune(&self, now: i64) -> Result<()> {
        if now - self.pruned_at.get() < PRUNE_EVERY_SECS {
            return Ok(());
        }
        let sql = &self.sql;
        for table in ["sockets", "revoked", "not_before"] {
            sql.exec(
                &format!("DELETE FROM {table} WHERE exp < ?"),
                vec![now.into()],
            )?;
        }
        self.pruned_at.set(now);
        Ok(())
    }

    /// The verdict on a badge at `now` (seconds), after dropping rows expired by then; with
    /// `socket` (room, max_rooms), an admitted badge is recorded as having a socket there.
    fn admit(
        &self,
        now: i64,
        user: &str,
        jti: &str,
        issued_at: i64,
        expires_at: i64,
        socket: Option<(&str, i64)>,
    ) -> Result<Verdict> {
        self.prune(now)?;
        let sql = &self.sql;
        let standing = sql
            .exec(
                "SELECT (SELECT at FROM not_before WHERE username = ?1) AS not_before,
                        EXISTS (SELECT 1 FROM revoked WHERE jti = ?2) AS revoked,
                        (SELECT COUNT(*) FROM sockets WHERE username = ?1) AS rooms",
                vec![user.into(), jti.into()],
            )?
            .one::<Standing>()?;
        // `<=`: the stamp has one-second resolution, so a badge from the same second as a
        // "log out everywhere" is refused too (a login right after it simply logs in again).
        if standing.revoked != 0 || standing.not_before.is_some_and(|nb| issued_at <= nb) {
            return Ok(Verdict::Revoked);
        }
        let Some((room, max_rooms)) = socket else {
            return Ok(Verdict::Admitted);
        };
        // Counted per badge and room; a badge reopening a room it is recorded in adds nothing.
        if standing.rooms >= max_rooms && !self.recorded(user, jti, room)? {
            return Ok(Verdict::TooManyRooms);
        }
        sql.exec(
            "INSERT OR IGNORE INTO sockets (username, jti, room, exp) VALUES (?, ?, ?, ?)",
            vec![user.into(), jti.into(), room.into(), expires_at.into()],
        )?;
        Ok(Verdict::Admitted)
    }

    fn recorded(&self, user: &str, jti: &str, room: &str) -> Result<bool> {
        #[derive(Deserialize)]
        struct Known {
            known: i64,
        }
        let known = self
            .sql
            .exec(
                "SELECT EXISTS (SELECT 1 FROM sockets WHERE username = ? AND jti = ? AND room = ?) AS known",
                vec![user.into(), jti.into(), room.into()],
            )?
            .one::<Known>()?;
        Ok(known.known != 0)
    }

    /// Rooms where one of the user's badges (or, with `None`, any of them) has sockets;
    /// forgets those records, since the caller is about to close the sockets.
    fn take_rooms(&self, user: &str, jti: Option<&str>) -> Result<Vec<String>> {
        let sql = &self.sql;
        let (filter, binds): (&str, Vec<worker::SqlStorageValue>) = match jti {
            Some(j) => ("username = ? AND jti = ?", vec![user.into(), j.into()]),
            None => ("username = ?", vec![user.into()]),
        };
        let rows = sql
            .exec(
                &format!("SELECT DISTINCT room FROM sockets WHERE {filter}"),
                binds.clone(),
            )?
            .to_array::<RoomRow>()?;
        sql.exec(&format!("DELETE FROM sockets WHERE {filter}"), binds)?;
        Ok(rows.into_iter().map(|r| r.room).collect())
    }
}

/// The shard holding `user` (lowercased): FNV-1a, stable across builds and platforms.
pub fn shard_of(user: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in user.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % SHARDS
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
    /// ([`Sessions::admit_socket`]); `room` is a validated room id.
    pub async fn admit_socket(self, badge: &Badge, room: &str, max_rooms: i64) -> ApiResult<()> {
        let shard: ShardRpc = self.stub.into_rpc();
        let call = shard
            .admit_socket(
                &self.user,
                &badge.jti,
                badge.issued_at as f64,
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
            "jti={}&iat={}&exp={}",
            badge.jti, badge.issued_at, badge.expires_at
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

    /// Revokes every badge of the user issued up to `at`, remembered until `keep_until` (when
    /// the newest of them would have expired); the rooms where any of them had sockets.
    pub async fn revoke_all(&self, at: i64, keep_until: i64) -> ApiResult<Vec<String>> {
        let query = format!("at={at}&exp={keep_until}");
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
            crate::log::event(
                "info",
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
