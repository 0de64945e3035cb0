//! D1 access: the only place with SQL for accounts, private rooms and memberships.

use worker::wasm_bindgen::JsValue;
use worker::{D1Database, Env};

use crate::http::ApiResult;
use crate::protocol::Username;

pub struct Store {
    db: D1Database,
}

/// A stored account as login needs it.
#[derive(Debug, serde::Deserialize)]
pub struct UserRecord {
    /// The name as it was registered (lookups ignore case).
    pub username: String,
    pub password_hash: String,
}

impl Store {
    pub fn from_env(env: &Env) -> ApiResult<Self> {
        Ok(Self { db: env.d1("DB")? })
    }

    /// Creates an account; `false` when the name is taken. The UNIQUE constraint decides, so two
    /// concurrent signups for one name cannot both succeed.
    pub async fn create_user(
        &self,
        username: &Username,
        password_hash: &str,
        now_ms: f64,
    ) -> ApiResult<bool> {
        let result = self
            .db
            .prepare(
                "INSERT INTO users (username, password_hash, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(username) DO NOTHING",
            )
            .bind(&[
                username.as_str().into(),
                password_hash.into(),
                JsValue::from_f64(now_ms),
            ])?
            .run()
            .await?;
        let changes = result.meta()?.and_then(|m| m.changes).unwrap_or(0);
        Ok(changes == 1)
    }

    pub async fn find_user(&self, username: &Username) -> ApiResult<Option<UserRecord>> {
        Ok(self
            .db
            .prepare(
                "SELECT username, password_hash FROM users \
                 WHERE username = ?1 AND deleted_at IS NULL",
            )
            .bind(&[username.as_str().into()])?
            .first::<UserRecord>(None)
            .await?)
    }

    /// Deletes an account: it can no longer log in, is in no room, lists no rooms and blocks
    /// nobody, but its row stays, so the name stays reserved (signup's UNIQUE constraint) and
    /// its messages keep naming it.
    pub async fn delete_user(&self, username: &str, now_ms: f64) -> ApiResult<()> {
        self.db
            .batch(vec![
                self.db
                    .prepare(
                        "UPDATE users SET deleted_at = ?1, password_hash = '' WHERE username = ?2",
                    )
                    .bind(&[JsValue::from_f64(now_ms), username.into()])?,
                self.db
                    .prepare("DELETE FROM room_members WHERE username = ?1")
                    .bind(&[username.into()])?,
                // Its list of rooms (`directory.rs`) and its blocks, both ways.
                self.db
                    .prepare("DELETE FROM joined_rooms WHERE username = ?1")
                    .bind(&[username.into()])?,
                self.db
                    .prepare("DELETE FROM read_markers WHERE username = ?1")
                    .bind(&[username.into()])?,
                self.db
                    .prepare("DELETE FROM blocks WHERE blocker = ?1 OR blocked = ?1")
                    .bind(&[username.into()])?,
            ])
            .await?;
        Ok(())
    }

    /// Replaces a user's password hash (a password change, or a login re-hashing with new
    /// parameters).
    pub async fn update_password_hash(&self, username: &str, password_hash: &str) -> ApiResult<()> {
        self.db
            .prepare("UPDATE users SET password_hash = ?1 WHERE username = ?2")
            .bind(&[password_hash.into(), username.into()])?
            .run()
            .await?;
        Ok(())
    }
}

/// What a user may do in a room, from D1's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomAccess {
    /// No private room of that name: any valid badge may enter.
    Public,
    /// A private room the user owns or is a member of.
    Member { owner: String },
    /// A private room the user is not in.
    Denied,
}

impl Store {
    pub async fn room_access(&self, room: &str, username: &str) -> ApiResult<RoomAccess> {
        #[derive(serde::Deserialize)]
        struct Row {
            owner: String,
            member: Option<i64>,
        }
        let row = self
            .db
            .prepare(
                "SELECT r.owner AS owner, \
                 (SELECT 1 FROM room_members m WHERE m.room_id = r.room_id AND m.username = ?2) AS member \
                 FROM rooms r WHERE r.room_id = ?1 AND r.private = 1",
            )
            .bind(&[room.into(), username.into()])?
            .first::<Row>(None)
            .await?;
        Ok(match row {
            None => RoomAccess::Public,
            Some(r) if r.member.is_some() || r.owner.eq_ignore_ascii_case(username) => {
                RoomAccess::Member { owner: r.owner }
            }
            Some(_) => RoomAccess::Denied,
        })
    }

    /// Records an owned room (private, or public) and its owner as its first member.
    pub async fn create_room(
        &self,
        room: &str,
        owner: &str,
        private: bool,
        now_ms: f64,
    ) -> ApiResult<()> {
        let now = JsValue::from_f64(now_ms);
        let private = JsValue::from_f64(if private { 1.0 } else { 0.0 });
        self.db
            .batch(vec![
                self.db
                    .prepare("INSERT INTO rooms (room_id, owner, private, created_at) VALUES (?1, ?2, ?3, ?4)")
                    .bind(&[room.into(), owner.into(), private, now.clone()])?,
                self.db
                    .prepare("INSERT OR IGNORE INTO room_members (room_id, username, added_at) VALUES (?1, ?2, ?3)")
                    .bind(&[room.into(), owner.into(), now])?,
            ])
            .await?;
        Ok(())
    }

    pub async fn room_members(&self, room: &str) -> ApiResult<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Row {
            username: String,
        }
        let rows = self
            .db
            .prepare("SELECT username FROM room_members WHERE room_id = ?1 ORDER BY username")
            .bind(&[room.into()])?
            .all()
            .await?
            .results::<Row>()?;
        Ok(rows.into_iter().map(|r| r.username).collect())
    }

    /// The registered spelling of a username, if it exists.
    pub async fn canonical_username(&self, username: &Username) -> ApiResult<Option<String>> {
        Ok(self.find_user(username).await?.map(|r| r.username))
    }

    pub async fn add_member(&self, room: &str, username: &str, now_ms: f64) -> ApiResult<()> {
        self.db
            .prepare("INSERT OR IGNORE INTO room_members (room_id, username, added_at) VALUES (?1, ?2, ?3)")
            .bind(&[room.into(), username.into(), JsValue::from_f64(now_ms)])?
            .run()
            .await?;
        Ok(())
    }

    /// Removes a member; `false` if they were not one.
    pub async fn remove_member(&self, room: &str, username: &str) -> ApiResult<bool> {
        let result = self
            .db
            .prepare("DELETE FROM room_members WHERE room_id = ?1 AND username = ?2")
            .bind(&[room.into(), username.into()])?
            .run()
            .await?;
        Ok(result.meta()?.and_then(|m| m.changes).unwrap_or(0) > 0)
    }

    /// `SELECT 1` against D1, for the health check.
    pub async fn ping(&self) -> ApiResult<()> {
        self.db
            .prepare("SELECT 1 AS ok")
            .first::<serde_json::Value>(None)
            .await?;
        Ok(())
    }
}
