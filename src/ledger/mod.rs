//! The session ledger: which badges are revoked and in which rooms each badge has opened
//! sockets, and the refresh families logins start (`families.rs`), kept in Durable Objects,
//! each owning a fixed shard of the users. The object's class is
//! [`Sessions`] (its deployed name); [`Ledger`] (`client.rs`) is how the Worker and the rooms call it.
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

mod client;
mod families;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;

use serde::Deserialize;
use wasm_bindgen::prelude::*;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use crate::config::Config;
use crate::defer::Deferred;
use crate::http::{self, ApiError};
use crate::log;

use client::Verdict;
pub use client::{
    shard_of, BadgeSockets, FamilyStart, Ledger, Refreshed, Started, BINDING, SHARDS,
};
use families::{Families, FamilyStanding, NewFamily, Presentation, RefreshLimits, Rotation};

/// How often a shard drops rows of expired badges (seconds).
const PRUNE_EVERY_SECS: i64 = 60;

/// How long an admitted socket's record waits in memory before it is written, with the others
/// admitted meanwhile, in one commit (milliseconds). See [`SocketWrites`].
const WRITE_SOCKETS_AFTER_MS: u32 = 100;

/// The "log out everywhere" stamp of a closed account (milliseconds, and its row's expiry in
/// seconds): later than any badge will be issued, and never pruned.
const CLOSED_ACCOUNT: i64 = 1 << 52;

#[durable_object(fetch)]
pub struct Sessions {
    /// The object's SQLite handle, looked up once rather than per call.
    sql: worker::SqlStorage,
    /// Admitted sockets whose records are not written yet.
    writes: Rc<SocketWrites>,
    /// How far one refresh family may grow (`families.rs`).
    refresh_limits: RefreshLimits,
    /// Live logins (families) one user may hold (`MAX_LOGINS_PER_USER`, `families.rs`).
    max_logins: i64,
}

impl DurableObject for Sessions {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        for ddl in [
            // Logouts everywhere, in milliseconds (`revoked_before`), and from before badges
            // carried milliseconds, in seconds (`not_before`: read until its rows expire).
            "CREATE TABLE IF NOT EXISTS revoked_before (
                username TEXT PRIMARY KEY, at_ms INTEGER NOT NULL, exp INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS not_before (
                username TEXT PRIMARY KEY, at INTEGER NOT NULL, exp INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS revoked (jti TEXT PRIMARY KEY, exp INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS sockets (
                username TEXT NOT NULL, jti TEXT NOT NULL, room TEXT NOT NULL, exp INTEGER NOT NULL,
                PRIMARY KEY (username, jti, room))",
        ]
        .into_iter()
        .chain(families::TABLES)
        {
            sql.exec(ddl, None).expect("creating the ledger tables");
        }
        let config = Config::from_env(&env);
        Self {
            refresh_limits: RefreshLimits {
                max_badges: config.max_badges_per_login,
                used_kept: config.used_refresh_tokens_kept,
            },
            max_logins: config.max_logins_per_user,
            writes: Rc::new(SocketWrites {
                sql: sql.clone(),
                unwritten: RefCell::new(Unwritten::default()),
                pruned_at: Cell::new(0),
                timer: Deferred::default(),
            }),
            sql,
        }
    }

    /// Internal routes, called only by the Worker (a Durable Object is not reachable from
    /// outside). `user` is the lowercased username. (A room's admissions come over RPC:
    /// [`Sessions::admit_socket`].)
    /// - `/admit?user&jti&iat_ms&exp`: an empty answer whose status is the verdict
    ///   (`Verdict::status`).
    /// - `/revoke?user&jti&exp`: revokes one badge and its refresh family (below).
    /// - `/revoke_all?user&at_ms&exp`: revokes the user's badges issued up to `at_ms`;
    ///   `{"rooms"}`.
    /// - `/ping`: `{"ok": true}` (health check).
    /// - `/family/start?user&name&family&hash&jti&exp&badge_exp`: a login's refresh
    ///   family with its first token (hash) and badge; `{"ended", "sockets"}`: how many of the
    ///   user's oldest live families it revoked to stay within `MAX_LOGINS_PER_USER`, and
    ///   the (room, jti) pairs of their badges' sockets; 403 for a closed account.
    /// - `/family/rotate?user&hash&new_hash&jti&badge_exp`: `{"outcome", "name",
    ///   "expires_at", "sockets", "retry_after"}` ([`Rotation`]; `sockets` of a family revoked
    ///   for reuse; `retry_after`, seconds, of a family at its limit of badges).
    /// - `/revoke_others?user&jti&at_ms&exp`: a password change; `{"sockets"}`.
    /// - `/close?user`: the account is deleted: every badge and family, now and later;
    ///   `{"rooms"}`.
    ///
    /// `/revoke` also revokes the badge's family, and answers `{"sockets"}` instead: the
    /// (room, jti) pairs of the badge and of every badge of its family; `/revoke_all` revokes
    /// every family.
    ///
    /// Every route runs without an `await`, so a logout and a connect are ordered one way or
    /// the other: a connect admitted first is in the rooms the logout returns.
    async fn fetch(&self, req: Request) -> Result<Response> {
        let url = req.inner().url();
        let text = |name: &str| http::raw_query_param(&url, name).unwrap_or_default();
        let number = |name: &str| text(name).parse::<i64>().unwrap_or(0);
        let now = (worker::Date::now().as_millis() / 1000) as i64;
        let (user, jti) = (text("user"), text("jti"));
        let body = match http::path_of(&url) {
            "/admit" => {
                let verdict =
                    self.admit(now, &user, &jti, number("iat_ms"), number("exp"), None)?;
                // The answer is the status alone: no body for the Worker to stream and parse.
                return Response::empty().map(|r| r.with_status(verdict.status()));
            }
            "/revoke" => {
                let rooms = self.take_rooms(&user, Some(&jti))?;
                self.sql.exec(
                    "INSERT OR REPLACE INTO revoked (jti, exp) VALUES (?, ?)",
                    vec![jti.as_str().into(), number("exp").into()],
                )?;
                let families = self.families();
                let mut sockets: Vec<(String, String)> =
                    rooms.iter().map(|r| (r.clone(), jti.clone())).collect();
                if let Some(family) = families.of_badge(&jti)? {
                    families.revoke(&family)?;
                    sockets.extend(self.take_family_sockets(&user, &[family])?);
                }
                serde_json::json!({ "sockets": sockets })
            }
            "/revoke_all" => {
                self.sql.exec(
                    "INSERT INTO revoked_before (username, at_ms, exp) VALUES (?, ?, ?)
                     ON CONFLICT (username) DO UPDATE
                     SET at_ms = MAX(at_ms, excluded.at_ms), exp = MAX(exp, excluded.exp)",
                    vec![
                        user.as_str().into(),
                        number("at_ms").into(),
                        number("exp").into(),
                    ],
                )?;
                self.families().revoke_all(&user, None)?;
                serde_json::json!({ "rooms": self.take_rooms(&user, None)? })
            }
            "/close" => {
                self.sql.exec(
                    "INSERT OR REPLACE INTO revoked_before (username, at_ms, exp) VALUES (?, ?, ?)",
                    vec![
                        user.as_str().into(),
                        CLOSED_ACCOUNT.into(),
                        CLOSED_ACCOUNT.into(),
                    ],
                )?;
                self.families().revoke_all(&user, None)?;
                serde_json::json!({ "rooms": self.take_rooms(&user, None)? })
            }
            "/revoke_others" => {
                let families = self.families();
                let keep_family = families.of_badge(&jti)?;
                families.revoke_others(
                    &user,
                    number("at_ms"),
                    &jti,
                    keep_family.as_deref(),
                    number("exp"),
                )?;
                let kept = match &keep_family {
                    Some(family) => families.badges(family)?,
                    None => Default::default(),
                };
                let sockets = self.take_sockets(&user, |j| j != jti && !kept.contains(j))?;
                serde_json::json!({ "sockets": sockets })
            }
            "/family/start" => {
                if self.closed(&user)? {
                    return Response::empty().map(|r| r.with_status(403));
                }
                let families = self.families();
                let ended = families.start(
                    &NewFamily {
                        user: &user,
                        name: &text("name"),
                        family: &text("family"),
                        hash: &text("hash"),
                        jti: &jti,
                        expires_at: number("exp"),
                        badge_keep_until: number("badge_exp"),
                    },
                    self.max_logins,
                    now,
                )?;
                let sockets = self.take_family_sockets(&user, &ended)?;
                serde_json::json!({ "ended": ended.len(), "sockets": sockets })
            }
            "/family/rotate" => {
                let families = self.families();
                let presented = families.rotate(
                    &Presentation {
                        user: &user,
                        hash: &text("hash"),
                        new_hash: &text("new_hash"),
                        jti: &jti,
                        badge_keep_until: number("badge_exp"),
                    },
                    self.refresh_limits,
                    now,
                )?;
                let sockets = match (presented.rotation, &presented.family) {
                    (Rotation::Reused, Some(family)) => {
                        self.take_family_sockets(&user, std::slice::from_ref(family))?
                    }
                    _ => Vec::new(),
                };
                let (outcome, retry_after) = match presented.rotation {
                    Rotation::Invalid => ("invalid", 0),
                    Rotation::Reused => ("reused", 0),
                    Rotation::Throttled { retry_after } => ("throttled", retry_after),
                    Rotation::Rotate => ("rotated", 0),
                };
                serde_json::json!({
                    "outcome": outcome,
                    "name": presented.name,
                    "expires_at": presented.expires_at,
                    "sockets": sockets,
                    "retry_after": retry_after,
                })
            }
            "/ping" => serde_json::json!({ "ok": true }),
            _ => return Ok(ApiError::not_found().into_response()),
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
        issued_at_ms: f64,
        expires_at: f64,
        room: &str,
        max_rooms: f64,
    ) -> std::result::Result<u16, JsValue> {
        let now = (worker::Date::now().as_millis() / 1000) as i64;
        self.admit(
            now,
            user,
            jti,
            issued_at_ms as i64,
            expires_at as i64,
            Some((room, max_rooms as i64)),
        )
        .map(Verdict::status)
        .map_err(|e| JsValue::from_str(&e.to_string()))
    }
}

#[derive(Deserialize)]
struct Standing {
    not_before: Option<i64>,
    revoked_before: Option<i64>,
    revoked: i64,
    /// Unexpired (badge, room) records of the user, written ones only.
    rooms: i64,
    /// Whether this (badge, room) is among them.
    recorded: i64,
    // The columns of `FamilyStanding::COLUMNS`, read here (a flattened struct would go through
    // serde's buffered path, which reads SQLite's numbers less exactly).
    family: Option<String>,
    family_revoked: Option<i64>,
    others_before: Option<i64>,
    keep_jti: Option<String>,
    keep_family: Option<String>,
}

impl Standing {
    fn family(self) -> FamilyStanding {
        FamilyStanding {
            family: self.family,
            family_revoked: self.family_revoked,
            others_before: self.others_before,
            keep_jti: self.keep_jti,
            keep_family: self.keep_family,
        }
    }
}

#[derive(Deserialize)]
struct RoomRow {
    room: String,
}

impl Sessions {
    /// The verdict on a badge at `now` (seconds); with `socket` (room, max_rooms), an admitted
    /// badge is recorded as having a socket there. Reads only: the record is written a moment
    /// later ([`SocketWrites`]), so the answer is not held until a commit is durable.
    fn admit(
        &self,
        now: i64,
        user: &str,
        jti: &str,
        issued_at_ms: i64,
        expires_at: i64,
        socket: Option<(&str, i64)>,
    ) -> Result<Verdict> {
        let standing = self
            .sql
            .exec(
                &"SELECT (SELECT at FROM not_before WHERE username = ?1) AS not_before,
                        (SELECT at_ms FROM revoked_before WHERE username = ?1) AS revoked_before,
                        EXISTS (SELECT 1 FROM revoked WHERE jti = ?2) AS revoked,
                        (SELECT COUNT(*) FROM sockets WHERE username = ?1 AND exp >= ?4) AS rooms,
                        EXISTS (SELECT 1 FROM sockets
                                WHERE username = ?1 AND jti = ?2 AND room = ?3) AS recorded,
                        FAMILY_COLUMNS"
                    .replace("FAMILY_COLUMNS", FamilyStanding::COLUMNS),
                vec![
                    user.into(),
                    jti.into(),
                    socket.map_or("", |(room, _)| room).into(),
                    now.into(),
                ],
            )?
            .one::<Standing>()?;
        let everywhere =
            logged_out_everywhere(issued_at_ms, standing.not_before, standing.revoked_before);
        let (revoked, rooms, recorded) = (standing.revoked, standing.rooms, standing.recorded);
        if revoked != 0 || everywhere || standing.family().refuses(jti, issued_at_ms) {
            return Ok(Verdict::Revoked);
        }
        let Some((room, max_rooms)) = socket else {
            return Ok(Verdict::Admitted);
        };
        let record = SocketRecord {
            user: user.to_owned(),
            jti: jti.to_owned(),
            room: room.to_owned(),
            exp: expires_at,
        };
        let mut unwritten = self.writes.unwritten.borrow_mut();
        // Counted per badge and room; a badge reopening a room it is recorded in adds nothing.
        if recorded != 0 || unwritten.contains(&record) {
            return Ok(Verdict::Admitted);
        }
        if rooms + unwritten.count_for(user) >= max_rooms {
            return Ok(Verdict::TooManyRooms);
        }
        unwritten.add(record);
        drop(unwritten);
        self.writes.schedule();
        Ok(Verdict::Admitted)
    }

    fn families(&self) -> Families<'_> {
        Families { sql: &self.sql }
    }

    /// Whether the user's account was closed (`/close`).
    fn closed(&self, user: &str) -> Result<bool> {
        #[derive(Deserialize)]
        struct Row {
            at_ms: i64,
        }
        let rows = self
            .sql
            .exec(
                "SELECT at_ms FROM revoked_before WHERE username = ?",
                vec![user.into()],
            )?
            .to_array::<Row>()?;
        Ok(rows.iter().any(|r| r.at_ms >= CLOSED_ACCOUNT))
    }

    /// [`Self::take_sockets`] of every badge of `families` (revoked ones: their sockets close).
    fn take_family_sockets(
        &self,
        user: &str,
        families: &[String],
    ) -> Result<Vec<(String, String)>> {
        let store = self.families();
        let mut badges = HashSet::new();
        for family in families {
            badges.extend(store.badges(family)?);
        }
        if badges.is_empty() {
            return Ok(Vec::new());
        }
        self.take_sockets(user, |j| badges.contains(j))
    }

    /// The (room, jti) pairs of the user's badges that `covers`, written or not yet; forgets
    /// those records, since the caller is about to close the sockets.
    fn take_sockets(
        &self,
        user: &str,
        covers: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, String)>> {
        #[derive(Deserialize)]
        struct Row {
            room: String,
            jti: String,
        }
        let rows = self
            .sql
            .exec(
                "SELECT room, jti FROM sockets WHERE username = ?",
                vec![user.into()],
            )?
            .to_array::<Row>()?;
        let mut taken = Vec::new();
        for row in rows.into_iter().filter(|r| covers(&r.jti)) {
            self.sql.exec(
                "DELETE FROM sockets WHERE username = ? AND jti = ? AND room = ?",
                vec![
                    user.into(),
                    row.jti.as_str().into(),
                    row.room.as_str().into(),
                ],
            )?;
            taken.push((row.room, row.jti));
        }
        for pair in self.writes.unwritten.borrow_mut().take_where(user, &covers) {
            if !taken.contains(&pair) {
                taken.push(pair);
            }
        }
        Ok(taken)
    }

    /// Rooms where one of the user's badges (or, with `None`, any of them) has sockets,
    /// written or not yet; forgets those records, since the caller is about to close the
    /// sockets.
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
        let mut rooms: Vec<String> = rows.into_iter().map(|r| r.room).collect();
        for room in self.writes.unwritten.borrow_mut().take(user, jti) {
            if !rooms.contains(&room) {
                rooms.push(room);
            }
        }
        Ok(rooms)
    }
}

/// Whether a badge issued at `issued_at_ms` is refused by a "log out everywhere" at
/// `revoked_before_ms` (every badge issued up to then), or by one stamped in seconds
/// (`not_before_secs`: every badge issued up to the end of that second).
fn logged_out_everywhere(
    issued_at_ms: i64,
    not_before_secs: Option<i64>,
    revoked_before_ms: Option<i64>,
) -> bool {
    not_before_secs.is_some_and(|secs| issued_at_ms.div_euclid(1000) <= secs)
        || revoked_before_ms.is_some_and(|ms| issued_at_ms <= ms)
}

/// One admitted (badge, room): a logout of that badge or user closes its sockets there.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SocketRecord {
    user: String,
    jti: String,
    room: String,
    /// The badge's expiry: after it the record can matter no more and is dropped.
    exp: i64,
}

/// Records admitted since the last write. Every question the ledger answers (the user's
/// count of rooms, the rooms a logout closes) looks here as well as in `sockets`.
#[derive(Debug, Default)]
struct Unwritten {
    records: Vec<SocketRecord>,
}

impl Unwritten {
    fn contains(&self, record: &SocketRecord) -> bool {
        self.records
            .iter()
            .any(|r| r.user == record.user && r.jti == record.jti && r.room == record.room)
    }

    fn count_for(&self, user: &str) -> i64 {
        self.records.iter().filter(|r| r.user == user).count() as i64
    }

    fn add(&mut self, record: SocketRecord) {
        self.records.push(record);
    }

    /// Removes the records of `user`'s badges that `covers`; their (room, jti) pairs.
    fn take_where(&mut self, user: &str, covers: &impl Fn(&str) -> bool) -> Vec<(String, String)> {
        let mut taken = Vec::new();
        self.records.retain(|r| {
            let covered = r.user == user && covers(&r.jti);
            if covered {
                taken.push((r.room.clone(), r.jti.clone()));
            }
            !covered
        });
        taken
    }

    /// Removes the records of one badge of `user` (or, with `None`, all of the user's);
    /// their rooms, each once.
    fn take(&mut self, user: &str, jti: Option<&str>) -> Vec<String> {
        let mut rooms = Vec::new();
        self.records.retain(|r| {
            let covered = r.user == user && jti.is_none_or(|j| r.jti == j);
            if covered && !rooms.contains(&r.room) {
                rooms.push(r.room.clone());
            }
            !covered
        });
        rooms
    }
}

/// The records of admitted sockets on their way to the `sockets` table: all those admitted
/// within `WRITE_SOCKETS_AFTER_MS` of the first go in one commit.
///
/// Why not in the admission's own event: a write there holds the answer to the room (and so
/// the socket's 101) until the commit is durable, and locally every commit `fsync`s on the
/// thread that runs every object. Answered from memory, an admission's verdict is the same:
/// the count of rooms and a logout's list of rooms include the unwritten records.
/// What it gives up: if the shard's process dies in those milliseconds, the records are lost,
/// and a later logout does not reach those sockets (the badge itself is still refused
/// everywhere from the logout on: revocations are written before the logout is answered).
struct SocketWrites {
    sql: worker::SqlStorage,
    unwritten: RefCell<Unwritten>,
    /// When expired rows were last dropped (seconds).
    pruned_at: Cell<i64>,
    timer: Deferred,
}

impl SocketWrites {
    fn schedule(self: &Rc<Self>) {
        self.timer
            .schedule(self, WRITE_SOCKETS_AFTER_MS, Self::write);
    }

    /// Writes the waiting records in one commit (the event's implicit transaction), after
    /// dropping rows of expired badges now and then. On failure the records wait for the next
    /// try, so none is lost while the object runs.
    fn write(self: &Rc<Self>) {
        self.timer.fired();
        let records = std::mem::take(&mut self.unwritten.borrow_mut().records);
        let now = (worker::Date::now().as_millis() / 1000) as i64;
        if let Err(e) = self.prune(now) {
            log::warn("ledger_prune_failed", &[("error", &e.to_string())]);
        }
        for (i, r) in records.iter().enumerate() {
            let written = self.sql.exec(
                "INSERT OR IGNORE INTO sockets (username, jti, room, exp) VALUES (?, ?, ?, ?)",
                vec![
                    r.user.as_str().into(),
                    r.jti.as_str().into(),
                    r.room.as_str().into(),
                    r.exp.into(),
                ],
            );
            if let Err(e) = written {
                log::error("ledger_write_failed", &[("error", &e.to_string())]);
                self.unwritten
                    .borrow_mut()
                    .records
                    .extend(records[i..].iter().cloned());
                self.schedule();
                break;
            }
        }
    }

    /// Drops rows that can no longer matter: badges past their expiry can open nothing.
    fn prune(&self, now: i64) -> Result<()> {
        if now - self.pruned_at.get() < PRUNE_EVERY_SECS {
            return Ok(());
        }
        families::Families { sql: &self.sql }.prune(now)?;
        let tables = ["sockets", "revoked", "revoked_before", "not_before"];
        for table in tables.into_iter().chain(families::EXPIRING) {
            self.sql.exec(
                &format!("DELETE FROM {table} WHERE exp < ?"),
                vec![now.into()],
            )?;
        }
        self.pruned_at.set(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: &str, jti: &str, room: &str) -> SocketRecord {
        SocketRecord {
            user: user.into(),
            jti: jti.into(),
            room: room.into(),
            exp: 100,
        }
    }

    #[test]
    fn logging_out_everywhere_refuses_badges_up_to_its_millisecond_only() {
        let at = 1_700_000_000_500;
        assert!(
            logged_out_everywhere(at - 400, None, Some(at)),
            "earlier in the second"
        );
        assert!(logged_out_everywhere(at, None, Some(at)));
        assert!(
            !logged_out_everywhere(at + 1, None, Some(at)),
            "a login right after"
        );
        assert!(!logged_out_everywhere(at, None, None));
        // A stamp in seconds covers its whole second.
        assert!(logged_out_everywhere(
            1_700_000_000_999,
            Some(1_700_000_000),
            None
        ));
        assert!(!logged_out_everywhere(
            1_700_000_001_000,
            Some(1_700_000_000),
            None
        ));
    }

    #[test]
    fn unwritten_records_count_per_user_and_are_known_by_badge_and_room() {
        let mut unwritten = Unwritten::default();
        unwritten.add(record("ann", "j1", "a"));
        unwritten.add(record("ann", "j1", "b"));
        unwritten.add(record("bob", "j2", "a"));
        assert_eq!(unwritten.count_for("ann"), 2);
        assert_eq!(unwritten.count_for("bob"), 1);
        assert_eq!(unwritten.count_for("cat"), 0);
        assert!(unwritten.contains(&record("ann", "j1", "b")));
        assert!(!unwritten.contains(&record("ann", "j9", "b")));
        assert!(!unwritten.contains(&record("bob", "j2", "b")));
    }

    #[test]
    fn a_family_revocation_takes_the_unwritten_records_of_its_badges_only() {
        let mut unwritten = Unwritten::default();
        for (user, jti, room) in [
            ("ann", "f1", "a"),
            ("ann", "f2", "b"),
            ("ann", "other", "a"),
            ("bob", "f1", "c"),
        ] {
            unwritten.add(record(user, jti, room));
        }
        let family = ["f1", "f2"];
        let taken = unwritten.take_where("ann", &|jti: &str| family.contains(&jti));
        assert_eq!(
            taken,
            vec![
                ("a".to_owned(), "f1".to_owned()),
                ("b".to_owned(), "f2".to_owned())
            ]
        );
        assert_eq!(
            unwritten.count_for("ann"),
            1,
            "the badge outside the family stays"
        );
        assert_eq!(unwritten.count_for("bob"), 1, "another user's records stay");
    }

    #[test]
    fn a_logout_takes_the_unwritten_records_it_covers_and_only_those() {
        let mut unwritten = Unwritten::default();
        for (user, jti, room) in [
            ("ann", "j1", "a"),
            ("ann", "j1", "b"),
            ("ann", "j2", "a"),
            ("ann", "j2", "c"),
            ("bob", "j3", "a"),
        ] {
            unwritten.add(record(user, jti, room));
        }
        // One badge: its rooms, once each; the user's other badge and other users stay.
        assert_eq!(unwritten.take("ann", Some("j1")), vec!["a", "b"]);
        assert_eq!(unwritten.count_for("ann"), 2);
        assert_eq!(unwritten.take("ann", Some("j1")), Vec::<String>::new());
        // Every badge of the user: "a" listed once although two records name it.
        unwritten.add(record("ann", "j4", "a"));
        assert_eq!(unwritten.take("ann", None), vec!["a", "c"]);
        assert_eq!(unwritten.count_for("ann"), 0);
        assert_eq!(unwritten.count_for("bob"), 1);
    }
}
