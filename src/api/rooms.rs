//! Room administration and reads over HTTP: create an owned room (private or public), manage a
//! private room's members, page through history, see who is online, and the operators' stats.
//! Moderation of owned rooms is `moderation.rs`.

use serde::Deserialize;
use worker::{Env, Method, Request, Response};

use super::guard;
use crate::auth::badge::Badge;
use crate::http;
use crate::http::{ApiError, ApiResult};
use crate::log;
use crate::protocol::{RoomId, Username};
use crate::room::client::{Claim, RoomStub};
use crate::store::{RoomAccess, Store};

#[derive(Deserialize)]
struct CreateRoom {
    room_id: String,
    #[serde(default = "default_private")]
    private: bool,
}
fn default_private() -> bool {
    true
}

pub fn parse_room(raw: &str) -> ApiResult<RoomId> {
    RoomId::parse(raw).map_err(|e| ApiError::unprocessable(e.0))
}

/// `POST /rooms` `{"room_id", "private": true|false}`: claims an unused room name for the caller,
/// as a private room (members only) or an owned public room (anyone may join; the owner
/// moderates).
pub async fn create(mut req: Request, env: &Env) -> ApiResult<Response> {
    let badge = guard::bearer(&req, env).await?;
    if req.headers().has("Content-Type")? {
        http::require_content_type(&req, "application/json")?;
    }
    let body = http::read_body(&mut req).await?;
    if !crate::protocol::looks_like_object(&body) {
        return Err(ApiError::unprocessable(
            "body must be a JSON object {\"room_id\": string, \"private\": boolean}",
        ));
    }
    let body: CreateRoom = serde_json::from_slice(&body).map_err(|e| {
        ApiError::unprocessable(format!(
            "body must be JSON {{\"room_id\": string, \"private\": boolean}} ({e})"
        ))
    })?;
    let room = parse_room(&body.room_id)?;
    if room.is_dm() {
        return Err(ApiError::unprocessable(
            "room names starting with \"dm.\" are direct messages: POST /dm/{username}",
        ));
    }
    let owner = badge.username.as_str();
    if RoomStub::new(env, &room).claim(owner, body.private).await? == Claim::Taken {
        return Err(ApiError::new(409, "room already exists"));
    }
    Store::from_env(env)?
        .create_room(
            room.as_str(),
            owner,
            body.private,
            worker::Date::now().as_millis() as f64,
        )
        .await?;
    if body.private {
        guard::mark_private(&room);
    }
    log::info(
        "room_created",
        &[("username", owner), ("room", room.as_str())],
    );
    Ok(http::json(
        201,
        &serde_json::json!({ "room_id": room, "private": body.private, "owner": owner }),
    ))
}

/// `GET /rooms/{room_id}`: whether the room is private, its owner (null for an ad-hoc public
/// room), its moderators and slow mode, (for a private room's owner) its members, and the
/// caller's role and whether they are banned or muted.
pub async fn info(req: Request, env: &Env, raw_room: &str) -> ApiResult<Response> {
    let badge = guard::bearer(&req, env).await?;
    let room = parse_room(raw_room)?;
    let access = guard::room_access(env, &room, &badge).await?;
    if room.is_dm() {
        // A DM has no owner, and its two members may both see who they are.
        let members = Store::from_env(env)?.room_members(room.as_str()).await?;
        return Ok(http::json(
            200,
            &serde_json::json!({ "room_id": room, "private": true, "owner": null, "dm": true, "members": members }),
        ));
    }
    let members = match &access {
        RoomAccess::Member { owner } if owner.eq_ignore_ascii_case(badge.username.as_str()) => {
            Some(Store::from_env(env)?.room_members(room.as_str()).await?)
        }
        _ => None,
    };
    let info = RoomStub::new(env, &room)
        .info(badge.username.as_str())
        .await?;
    Ok(http::json(
        200,
        &serde_json::json!({
            "room_id": room,
            "private": matches!(access, RoomAccess::Member { .. }),
            "owner": info.owner,
            "moderators": info.moderators,
            "slow_mode_secs": info.slow_mode_secs,
            "members": members,
            "your_role": info.your_role,
            "banned": info.banned,
            "muted": info.muted,
        }),
    ))
}

/// `GET /rooms/{room_id}/messages?before=&limit=` and `GET /rooms/{room_id}/members`.
pub async fn read(req: Request, env: &Env, raw_room: &str, what: &str) -> ApiResult<Response> {
    let badge = guard::bearer(&req, env).await?;
    let room = parse_room(raw_room)?;
    let access = guard::room_access(env, &room, &badge).await?;
    let query = http::query_suffix(&req.inner().url());
    if query.len() > 256 {
        return Err(ApiError::new(414, "query string too long"));
    }
    let member = matches!(access, RoomAccess::Member { .. });
    RoomStub::new(env, &room)
        .read(what, &query, member, badge.username.as_str())
        .await
}

/// The owner of a private room, or 403/404.
async fn require_owner(env: &Env, room: &RoomId, badge: &Badge) -> ApiResult<()> {
    match guard::room_access(env, room, badge).await? {
        RoomAccess::Member { owner } if owner.eq_ignore_ascii_case(badge.username.as_str()) => {
            Ok(())
        }
        RoomAccess::Member { .. } => Err(ApiError::new(
            403,
            "only the room's owner can change its members",
        )),
        _ => Err(ApiError::new(404, "no private room of that name")),
    }
}

/// `PUT` / `DELETE /rooms/{room_id}/members/{username}`: the owner adds or removes a member.
/// Removal closes the member's open sockets in the room (1008).
pub async fn change_member(
    req: Request,
    env: &Env,
    raw_room: &str,
    raw_user: &str,
) -> ApiResult<Response> {
    let badge = guard::bearer(&req, env).await?;
    let room = parse_room(raw_room)?;
    if room.is_dm() {
        return Err(ApiError::new(
            403,
            "a direct message room has exactly its two members: nobody can be added or removed",
        ));
    }
    require_owner(env, &room, &badge).await?;
    let username = Username::parse(raw_user).map_err(|e| ApiError::unprocessable(e.0))?;
    let store = Store::from_env(env)?;
    let canonical = store
        .canonical_username(&username)
        .await?
        .ok_or_else(|| ApiError::new(404, "no such user"))?;
    if req.method() == Method::Put {
        store
            .add_member(
                room.as_str(),
                &canonical,
                worker::Date::now().as_millis() as f64,
            )
            .await?;
        log::info(
            "member_added",
            &[("room", room.as_str()), ("username", &canonical)],
        );
        return Ok(http::json(
            200,
            &serde_json::json!({ "room_id": room, "username": canonical }),
        ));
    }
    if canonical.eq_ignore_ascii_case(badge.username.as_str()) {
        return Err(ApiError::unprocessable("the owner cannot be removed"));
    }
    if !store.remove_member(room.as_str(), &canonical).await? {
        return Err(ApiError::new(404, "not a member of this room"));
    }
    RoomStub::new(env, &room).kick(&canonical).await?;
    log::info(
        "member_removed",
        &[("room", room.as_str()), ("username", &canonical)],
    );
    Ok(http::json(
        200,
        &serde_json::json!({ "room_id": room, "username": canonical }),
    ))
}

/// `GET /rooms/{room_id}/stats` for operators: `Authorization: Bearer <ADMIN_TOKEN>`.
/// Without an `ADMIN_TOKEN` secret the endpoint does not exist (404).
pub async fn stats(req: Request, env: &Env, raw_room: &str) -> ApiResult<Response> {
    let Some(admin_token) = crate::config::admin_token(env) else {
        return Err(ApiError::not_found());
    };
    let presented = http::bearer_token(&req)?.unwrap_or_default();
    if !constant_time_eq(presented.as_bytes(), admin_token.as_bytes()) {
        return Err(ApiError::unauthorized("admin token required"));
    }
    let room = parse_room(raw_room)?;
    RoomStub::new(env, &room).stats().await
}

/// Compares secrets without an early exit, so timing does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_eq() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"abcd"));
        assert!(!super::constant_time_eq(b"", b"a"));
    }
}
