//! D1 access: the only place with SQL for accounts (and, later, rooms and memberships).

use worker::wasm_bindgen::JsValue;
use worker::{D1Database, Env};

use crate::error::ApiResult;
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
    pub async fn create_user(&self, username: &Username, password_hash: &str, now_ms: f64) -> ApiResult<bool> {
        let result = self
            .db
            .prepare(
                "INSERT INTO users (username, password_hash, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(username) DO NOTHING",
            )
            .bind(&[username.as_str().into(), password_hash.into(), JsValue::from_f64(now_ms)])?
            .run()
            .await?;
        let changes = result.meta()?.and_then(|m| m.changes).unwrap_or(0);
        Ok(changes == 1)
    }

    pub async fn find_user(&self, username: &Username) -> ApiResult<Option<UserRecord>> {
        Ok(self
            .db
            .prepare("SELECT username, password_hash FROM users WHERE username = ?1")
            .bind(&[username.as_str().into()])?
            .first::<UserRecord>(None)
            .await?)
    }

    /// Replaces a hash after a successful login with outdated parameters.
    pub async fn update_password_hash(&self, username: &str, password_hash: &str) -> ApiResult<()> {
        self.db
            .prepare("UPDATE users SET password_hash = ?1 WHERE username = ?2")
            .bind(&[password_hash.into(), username.into()])?
            .run()
            .await?;
        Ok(())
    }
}
