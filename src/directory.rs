//! D1: the data behind direct messages, blocks and `GET /me/rooms`, the only place with their
//! SQL (`migrations/0005_my_rooms_and_dms.sql`). The Worker reads it per request; rooms write
//! it behind their messages (`room/activity.rs`), so listing a user's rooms never wakes a room.
//!
//! Who belongs to a private room or DM stays in `room_members` (`store.rs` writes it); this
//! adds the public rooms a user joined, read markers, each room's newest message, and blocks.

use sha2::{Digest, Sha256};
use worker::wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Env};

use crate::http::ApiResult;
use crate::protocol::{RoomId, DM_ROOM_HEX, DM_ROOM_PREFIX};

/// Most public rooms a user's list keeps; joins past it are not recorded until they leave some.
pub const MAX_JOINED_PUBLIC_ROOMS: i64 = 1000;

/// The SQL condition that user `?1` has fewer than `?4` (`MAX_JOINED_PUBLIC_ROOMS`) public rooms
/// on their list: a join and the read marker it sets are written under the same cap.
macro_rules! under_joined_cap {
    () => {
        "(SELECT COUNT(*) FROM joined_rooms WHERE username = ?1) < ?4"
    };
}
/// Characters of a room's newest message kept for the list.
pub const SNIPPET_CHARS: usize = 100;
/// Unread counts are exact up to this, and shown as this above it.
pub const MAX_UNREAD: i64 = 999;

/// The DM room of two users: the same whichever of them asks, from their names ignoring case
/// (as usernames are unique ignoring case), in the `dm.` namespace no other room can take.
pub fn dm_room(a: &str, b: &str) -> RoomId {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    // A newline is in no username, so the pair is read back unambiguously.
    let digest = Sha256::digest(format!("{first}\n{second}").as_bytes());
    let hex: String = digest
        .iter()
        .take(DM_ROOM_HEX / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    RoomId::parse(&format!("{DM_ROOM_PREFIX}{hex}")).expect("a DM id is a valid room id")
}

/// The first [`SNIPPET_CHARS`] characters of a message.
pub fn snippet(content: &str) -> String {
    content.chars().take(SNIPPET_CHARS).collect()
}

/// Messages after a read marker, exact up to [`MAX_UNREAD`]. Ids in a room have no gaps (a
/// deleted message keeps its id and counts), so this is a subtraction, not a count.
pub fn unread(last_id: i64, last_read_id: i64) -> i64 {
    (last_id - last_read_id).clamp(0, MAX_UNREAD)
}

/// Whether a user may connect to a DM.
#[derive(Debug, PartialEq, Eq)]
pub enum DmAccess {
    Member,
    /// A member whom the other member blocked.
    Blocked,
    NotMember,
}

/// What `PUT /users/me/blocks/{username}` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Blocked {
    Added,
    Already,
    /// The blocker is at their limit (`MAX_BLOCKS_PER_USER`).
    Full,
}

/// One room of a user's list, as stored.
#[derive(Debug, serde::Deserialize)]
pub struct ListedRoom {
    pub room_id: String,
    pub kind: String,
    /// Newest activity (the last message's time, or when the user joined): the list's order.
    pub sort_ts: i64,
    pub last_read_id: i64,
    pub last_id: Option<i64>,
    pub last_username: Option<String>,
    pub snippet: Option<String>,
    pub last_ts: Option<i64>,
    /// For a DM, the other member.
    pub with_user: Option<String>,
}

/// What a room writes behind its messages in one D1 batch.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RoomWrites {
    /// Users who connected (public rooms only).
    pub joins: Vec<Join>,
    /// Read markers to move forward: user, message id.
    pub markers: Vec<(String, i64)>,
    /// The room's newest message.
    pub last: Option<Newest>,
}

/// A user who connected to a public room: it goes on their list.
#[derive(Debug, Clone, PartialEq)]
pub struct Join {
    pub user: String,
    pub at_ms: i64,
    /// The room's newest message id when they connected: their read marker, if the room was
    /// not on their list yet.
    pub newest_id: i64,
}

/// The room's newest message, as members' lists show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Newest {
    pub id: i64,
    pub username: String,
    pub snippet: String,
    pub ts_ms: i64,
}

impl RoomWrites {
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.markers.is_empty() && self.last.is_none()
    }
}

pub struct Directory {
    db: D1Database,
}

fn num(n: i64) -> JsValue {
    JsValue::from_f64(n as f64)
}

impl Directory {
    pub fn from_env(env: &Env) -> ApiResult<Self> {
        Ok(Self { db: env.d1("DB")? })
    }

    /// Records the DM of `a` and `b` (registered spellings) if it is new: a private room with
    /// no owner and exactly those two members. Idempotent, so two first requests cannot clash.
    pub async fn open_dm(&self, room: &RoomId, a: &str, b: &str, now_ms: i64) -> ApiResult<()> {
        let member =
            "INSERT OR IGNORE INTO room_members (room_id, username, added_at) VALUES (?1, ?2, ?3)";
        self.db
            .batch(vec![
                self.db
                    .prepare("INSERT OR IGNORE INTO rooms (room_id, owner, private, created_at) VALUES (?1, '', 1, ?2)")
                    .bind(&[room.as_str().into(), num(now_ms)])?,
                self.db
                    .prepare(member)
                    .bind(&[room.as_str().into(), a.into(), num(now_ms)])?,
                self.db
                    .prepare(member)
                    .bind(&[room.as_str().into(), b.into(), num(now_ms)])?,
            ])
            .await?;
        Ok(())
    }

    /// How many DMs `user` is in.
    pub async fn dm_count(&self, user: &str) -> ApiResult<i64> {
        self.count(
            "SELECT COUNT(*) AS n FROM room_members WHERE username = ?1 AND room_id LIKE 'dm.%'",
            &[user.into()],
        )
        .await
    }

    /// Whether the DM `room` exists (has its members).
    pub async fn dm_exists(&self, room: &RoomId) -> ApiResult<bool> {
        Ok(self
            .count(
                "SELECT COUNT(*) AS n FROM room_members WHERE room_id = ?1",
                &[room.as_str().into()],
            )
            .await?
            > 0)
    }

    /// Whether `blocker` has blocked `blocked`.
    pub async fn has_blocked(&self, blocker: &str, blocked: &str) -> ApiResult<bool> {
        Ok(self
            .count(
                "SELECT COUNT(*) AS n FROM blocks WHERE blocker = ?1 AND blocked = ?2",
                &[blocker.into(), blocked.into()],
            )
            .await?
            > 0)
    }

    /// `user`'s standing in the DM `room`: a member, a member the other one blocked, or not a
    /// member. One query.
    pub async fn dm_access(&self, room: &RoomId, user: &str) -> ApiResult<DmAccess> {
        #[derive(serde::Deserialize)]
        struct Row {
            member: i64,
            blocked: i64,
        }
        let row = self
            .db
            .prepare(
                "SELECT EXISTS (SELECT 1 FROM room_members WHERE room_id = ?1 AND username = ?2) AS member,
                        EXISTS (SELECT 1 FROM room_members o JOIN blocks b
                                  ON b.blocker = o.username AND b.blocked = ?2
                                WHERE o.room_id = ?1 AND o.username <> ?2) AS blocked",
            )
            .bind(&[room.as_str().into(), user.into()])?
            .first::<Row>(None)
            .await?;
        Ok(match row {
            Some(r) if r.member != 0 && r.blocked != 0 => DmAccess::Blocked,
            Some(r) if r.member != 0 => DmAccess::Member,
            _ => DmAccess::NotMember,
        })
    }

    /// `blocker` blocks `blocked` (registered spellings), if they have blocked fewer than `max`.
    pub async fn block(
        &self,
        blocker: &str,
        blocked: &str,
        now_ms: i64,
        max: i64,
    ) -> ApiResult<Blocked> {
        let result = self
            .db
            .prepare(
                "INSERT INTO blocks (blocker, blocked, created_at) SELECT ?1, ?2, ?3
                 WHERE (SELECT COUNT(*) FROM blocks WHERE blocker = ?1) < ?4
                 ON CONFLICT (blocker, blocked) DO NOTHING",
            )
            .bind(&[blocker.into(), blocked.into(), num(now_ms), num(max)])?
            .run()
            .await?;
        if result.meta()?.and_then(|m| m.changes).unwrap_or(0) > 0 {
            return Ok(Blocked::Added);
        }
        Ok(if self.has_blocked(blocker, blocked).await? {
            Blocked::Already
        } else {
            Blocked::Full
        })
    }

    /// Lifts a block; `false` if there was none.
    pub async fn unblock(&self, blocker: &str, blocked: &str) -> ApiResult<bool> {
        let result = self
            .db
            .prepare("DELETE FROM blocks WHERE blocker = ?1 AND blocked = ?2")
            .bind(&[blocker.into(), blocked.into()])?
            .run()
            .await?;
        Ok(result.meta()?.and_then(|m| m.changes).unwrap_or(0) > 0)
    }

    /// Everyone `blocker` blocked, by name.
    pub async fn blocks_of(&self, blocker: &str) -> ApiResult<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Row {
            blocked: String,
        }
        Ok(self
            .db
            .prepare(
                "SELECT blocked FROM blocks WHERE blocker = ?1 ORDER BY blocked COLLATE NOCASE",
            )
            .bind(&[blocker.into()])?
            .all()
            .await?
            .results::<Row>()?
            .into_iter()
            .map(|r| r.blocked)
            .collect())
    }

    /// Up to `limit` of `user`'s rooms (private rooms and DMs they are a member of, public
    /// rooms they joined), newest activity first, after `after` (the last row of the previous
    /// page: its `sort_ts` and `room_id`).
    pub async fn my_rooms(
        &self,
        user: &str,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> ApiResult<Vec<ListedRoom>> {
        let (after_ts, after_room) = match after {
            Some((ts, room)) => (num(ts), JsValue::from(room)),
            None => (JsValue::NULL, JsValue::NULL),
        };
        Ok(self
            .db
            .prepare(
                "SELECT * FROM (
                   SELECT m.room_id AS room_id, m.kind AS kind,
                          COALESCE(a.last_ts, m.joined_at) AS sort_ts,
                          COALESCE(r.last_read_id, 0) AS last_read_id,
                          a.last_id AS last_id, a.last_username AS last_username,
                          a.snippet AS snippet, a.last_ts AS last_ts,
                          CASE WHEN m.kind = 'dm' THEN
                            (SELECT o.username FROM room_members o
                              WHERE o.room_id = m.room_id AND o.username <> ?1 LIMIT 1)
                          END AS with_user
                   FROM (
                     SELECT room_id, CASE WHEN room_id LIKE 'dm.%' THEN 'dm' ELSE 'private' END AS kind,
                            added_at AS joined_at
                       FROM room_members WHERE username = ?1
                     UNION ALL
                     SELECT room_id, 'public', joined_at FROM joined_rooms WHERE username = ?1
                   ) m
                   LEFT JOIN room_activity a ON a.room_id = m.room_id
                   LEFT JOIN read_markers r ON r.username = ?1 AND r.room_id = m.room_id
                 )
                 WHERE ?2 IS NULL OR sort_ts < ?2 OR (sort_ts = ?2 AND room_id > ?3)
                 ORDER BY sort_ts DESC, room_id ASC
                 LIMIT ?4",
            )
            .bind(&[user.into(), after_ts, after_room, num(limit)])?
            .all()
            .await?
            .results::<ListedRoom>()?)
    }

    /// `user` leaves the public room `room`: it leaves their list with its read marker.
    /// `false` if they had not joined it.
    pub async fn leave_public(&self, user: &str, room: &RoomId) -> ApiResult<bool> {
        let results = self
            .db
            .batch(vec![
                self.db
                    .prepare("DELETE FROM joined_rooms WHERE username = ?1 AND room_id = ?2")
                    .bind(&[user.into(), room.as_str().into()])?,
                self.db
                    .prepare("DELETE FROM read_markers WHERE username = ?1 AND room_id = ?2")
                    .bind(&[user.into(), room.as_str().into()])?,
            ])
            .await?;
        let left = results
            .first()
            .and_then(|r| r.meta().ok().flatten())
            .and_then(|m| m.changes)
            .unwrap_or(0);
        Ok(left > 0)
    }

    /// A room's writes behind its messages, in one D1 batch: joins first (a marker or message
    /// of the same batch belongs to a listed room; a first join also sets the marker at the
    /// room's newest message), markers only forward, and the newest message
    /// only if it is not older than the one stored (batches may finish out of order).
    pub async fn write_room(&self, room: &str, writes: &RoomWrites) -> ApiResult<()> {
        let mut statements: Vec<D1PreparedStatement> = Vec::new();
        for join in &writes.joins {
            // Before the join itself: only a user the room is new to starts read up to its
            // newest message (nothing before they joined counts as unread).
            statements.push(
                self.db
                    .prepare(
                        concat!(
                            "INSERT INTO read_markers (username, room_id, last_read_id) SELECT ?1, ?2, ?3
                             WHERE NOT EXISTS
                                 (SELECT 1 FROM joined_rooms WHERE username = ?1 AND room_id = ?2)
                               AND ",
                            under_joined_cap!(),
                            " ON CONFLICT (username, room_id)
                             DO UPDATE SET last_read_id = MAX(last_read_id, excluded.last_read_id)"
                        ),
                    )
                    .bind(&[
                        join.user.as_str().into(),
                        room.into(),
                        num(join.newest_id),
                        num(MAX_JOINED_PUBLIC_ROOMS),
                    ])?,
            );
            statements.push(
                self.db
                    .prepare(concat!(
                        "INSERT INTO joined_rooms (username, room_id, joined_at) SELECT ?1, ?2, ?3
                             WHERE ",
                        under_joined_cap!(),
                        " ON CONFLICT (username, room_id) DO NOTHING"
                    ))
                    .bind(&[
                        join.user.as_str().into(),
                        room.into(),
                        num(join.at_ms),
                        num(MAX_JOINED_PUBLIC_ROOMS),
                    ])?,
            );
        }
        for (user, id) in &writes.markers {
            statements.push(
                self.db
                    .prepare(
                        "INSERT INTO read_markers (username, room_id, last_read_id) VALUES (?1, ?2, ?3)
                         ON CONFLICT (username, room_id)
                         DO UPDATE SET last_read_id = MAX(last_read_id, excluded.last_read_id)",
                    )
                    .bind(&[user.as_str().into(), room.into(), num(*id)])?,
            );
        }
        if let Some(newest) = &writes.last {
            statements.push(
                self.db
                    .prepare(
                        "INSERT INTO room_activity (room_id, last_id, last_username, snippet, last_ts)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (room_id) DO UPDATE SET last_id = excluded.last_id,
                           last_username = excluded.last_username, snippet = excluded.snippet,
                           last_ts = excluded.last_ts
                         WHERE excluded.last_id >= room_activity.last_id",
                    )
                    .bind(&[
                        room.into(),
                        num(newest.id),
                        newest.username.as_str().into(),
                        newest.snippet.as_str().into(),
                        num(newest.ts_ms),
                    ])?,
            );
        }
        if !statements.is_empty() {
            self.db.batch(statements).await?;
        }
        Ok(())
    }

    async fn count(&self, sql: &str, bindings: &[JsValue]) -> ApiResult<i64> {
        #[derive(serde::Deserialize)]
        struct Row {
            n: i64,
        }
        Ok(self
            .db
            .prepare(sql)
            .bind(bindings)?
            .first::<Row>(None)
            .await?
            .map_or(0, |r| r.n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dm_room_is_the_same_whoever_asks_and_ignores_case() {
        let ab = dm_room("alice", "Bob");
        assert_eq!(ab, dm_room("bob", "ALICE"));
        assert!(ab.is_dm());
        assert_ne!(ab, dm_room("alice", "carol"));
        // Names with dots cannot be re-split into another pair.
        assert_ne!(dm_room("a.b", "cde"), dm_room("a.bc", "de"));
    }

    #[test]
    fn unread_is_exact_up_to_999() {
        assert_eq!(unread(10, 4), 6);
        assert_eq!(unread(4, 10), 0);
        assert_eq!(unread(5000, 1), 999);
        assert_eq!(unread(1000, 1), 999);
        assert_eq!(unread(999, 1), 998);
    }

    #[test]
    fn snippets_are_100_characters() {
        let long = "é".repeat(150);
        assert_eq!(snippet(&long).chars().count(), 100);
        assert_eq!(snippet("hi"), "hi");
    }
}
