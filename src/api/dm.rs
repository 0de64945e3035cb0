//! Direct messages and blocks: `POST /dm/{username}` opens (or finds) the private room of two
//! people, and `PUT` / `DELETE` / `GET /users/me/blocks[/{username}]` manage whom a user blocks.
//!
//! A DM is a private room whose id (`dm.` + 32 hex digits, `directory::dm_room`) follows from
//! the two names, so it is the same whichever of them asks; `.` is in no other room name, so no
//! user can create, claim or use it as their own room, and the room refuses anyone it was not
//! handed as a member (`room/mod.rs`). Its members are exactly the two: the member routes refuse
//! DMs (`rooms.rs`).
//!
//! A blocked user cannot open a DM with the blocker (403), nor connect to it (403 before the
//! upgrade, `ws.rs`), nor read it over HTTP (`guard::room_access`); blocking someone closes
//! their sockets in the DM at once (1008), so they cannot post in it either. The blocker keeps
//! the DM.

use worker::{Env, Method, Request, Response};

use super::guard;
use crate::auth::badge::Badge;
use crate::config::Config;
use crate::directory::{dm_room, Blocked, Directory};
use crate::http::{self, ApiError, ApiResult};
use crate::log;
use crate::protocol::Username;
use crate::room::client::RoomStub;
use crate::store::Store;

/// The registered spelling of the other user named in the path: 422 for a bad name or
/// yourself, 404 for nobody.
async fn other_user(env: &Env, badge: &Badge, raw: &str, what: &str) -> ApiResult<String> {
    let name = Username::parse(raw).map_err(|e| ApiError::unprocessable(e.0))?;
    if name.as_str().eq_ignore_ascii_case(badge.username.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "you cannot {what} yourself"
        )));
    }
    Store::from_env(env)?
        .canonical_username(&name)
        .await?
        .ok_or_else(|| ApiError::new(404, "no such user"))
}

/// `POST /dm/{username}` → `{"room_id","with"}`: the DM of the caller and `username`, created
/// on first use.
pub async fn open(req: Request, env: &Env, raw_user: &str) -> ApiResult<Response> {
    let badge = guard::bearer(&req, env).await?;
    let me = badge.username.as_str();
    let other = other_user(env, &badge, raw_user, "open a direct message with").await?;
    let directory = Directory::from_env(env)?;
    if directory.has_blocked(&other, me).await? {
        return Err(ApiError::new(
            403,
            "this user does not accept your messages",
        ));
    }
    let room = dm_room(me, &other);
    if !directory.dm_exists(&room).await? {
        let max = Config::from_env(env).max_dms_per_user;
        if directory.dm_count(me).await? >= max {
            return Err(ApiError::new(
                409,
                format!("too many direct message rooms (limit {max})"),
            ));
        }
        let now = worker::Date::now().as_millis() as i64;
        directory.open_dm(&room, me, &other, now).await?;
        log::info("dm_created", &[("room", room.as_str())]);
    }
    Ok(http::json(
        200,
        &serde_json::json!({ "room_id": room, "with": other }),
    ))
}

/// `PUT` / `DELETE /users/me/blocks/{username}`.
pub async fn change_block(req: Request, env: &Env, raw_user: &str) -> ApiResult<Response> {
    let badge = guard::bearer(&req, env).await?;
    let me = badge.username.as_str();
    let other = other_user(env, &badge, raw_user, "block").await?;
    let directory = Directory::from_env(env)?;
    if req.method() == Method::Delete {
        if !directory.unblock(me, &other).await? {
            return Err(ApiError::new(404, "not blocked"));
        }
        return Ok(http::json(
            200,
            &serde_json::json!({ "username": other, "blocked": false }),
        ));
    }
    let now = worker::Date::now().as_millis() as i64;
    let max = Config::from_env(env).max_blocks_per_user;
    if directory.block(me, &other, now, max).await? == Blocked::Full {
        return Err(ApiError::new(
            409,
            format!("too many blocked users (limit {max})"),
        ));
    }
    // Their open sockets in the DM close now (1008); their next connect is refused.
    let room = dm_room(me, &other);
    if directory.dm_exists(&room).await? {
        RoomStub::new(env, &room).kick(&other).await?;
    }
    Ok(http::json(
        200,
        &serde_json::json!({ "username": other, "blocked": true }),
    ))
}

/// `GET /users/me/blocks` → `{"blocks":[...]}` (at most `MAX_BLOCKS_PER_USER`, by name).
pub async fn list_blocks(req: Request, env: &Env) -> ApiResult<Response> {
    let badge = guard::bearer(&req, env).await?;
    let blocks = Directory::from_env(env)?
        .blocks_of(badge.username.as_str())
        .await?;
    Ok(http::json(200, &serde_json::json!({ "blocks": blocks })))
}
