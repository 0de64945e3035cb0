//! Moderation of owned rooms over HTTP: the owner appoints moderators; the owner and
//! moderators kick, ban, mute and set slow mode, and read the audit log.
//!
//! The Worker checks the badge, that the target is an account (its canonical name) and, in a
//! private room, that the caller may see it; the room decides who may act (`room/moderation.rs`):
//! it is the authority on its owner and moderators.

use serde::Deserialize;
use worker::{Env, Method, Request, Response};

use super::guard;
use super::rooms::parse_room;
use crate::auth::badge::Badge;
use crate::http::{self, ApiError, ApiResult};
use crate::protocol::{RoomId, Username};
use crate::room::client::RoomStub;
use crate::store::{RoomAccess, Store};

/// What the caller checked before the room is asked: a valid badge that may see the room.
async fn caller(req: &Request, env: &Env, raw_room: &str) -> ApiResult<(Badge, RoomId)> {
    let badge = guard::bearer(req, env).await?;
    let room = parse_room(raw_room)?;
    guard::room_access(env, &room, &badge).await?;
    Ok((badge, room))
}

/// The target's canonical name, or 404.
async fn account(env: &Env, raw_user: &str) -> ApiResult<String> {
    let username = Username::parse(raw_user).map_err(|e| ApiError::unprocessable(e.0))?;
    Store::from_env(env)?
        .canonical_username(&username)
        .await?
        .ok_or_else(|| ApiError::new(404, "no such user"))
}

/// Forwards one action to the room; its refusal (403, 404, 422) as the room gave it.
async fn forward(
    env: &Env,
    room: &RoomId,
    badge: &Badge,
    action: &str,
    target: Option<&str>,
    until: Option<i64>,
    slow_mode_secs: Option<i64>,
) -> ApiResult<Response> {
    let request = serde_json::json!({
        "actor": badge.username.as_str(),
        "action": action,
        "target": target,
        "until": until,
        "slow_mode_secs": slow_mode_secs,
    });
    let mut answer = RoomStub::new(env, room).moderate(&request).await?;
    if answer.status_code() != 200 {
        return Ok(answer);
    }
    #[derive(Deserialize)]
    struct Done {
        closed: usize,
    }
    let done: Done = answer.json().await?;
    let mut body = serde_json::json!({ "room_id": room, "action": action });
    if let Some(target) = target {
        body["username"] = target.into();
        body["sockets_closed"] = done.closed.into();
    }
    if let Some(until) = until {
        body["until"] = until.into();
    }
    if let Some(secs) = slow_mode_secs {
        body["slow_mode_secs"] = secs.into();
    }
    Ok(http::json(200, &body))
}

/// Reads an optional small JSON object body; `None` when there is none.
async fn optional_body<T: for<'de> Deserialize<'de>>(
    req: &mut Request,
    shape: &'static str,
) -> ApiResult<Option<T>> {
    let body = http::read_body(req).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if req.headers().has("Content-Type")? {
        http::require_content_type(req, "application/json")?;
    }
    if !crate::protocol::looks_like_object(&body) {
        return Err(ApiError::unprocessable(format!("body must be {shape}")));
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| ApiError::unprocessable(format!("body must be {shape} ({e})")))
}

/// `PUT` / `DELETE /rooms/{room_id}/moderators/{username}` (the owner). In a private room a
/// moderator must be a member first.
pub async fn moderator(
    req: Request,
    env: &Env,
    raw_room: &str,
    raw_user: &str,
) -> ApiResult<Response> {
    let (badge, room) = caller(&req, env, raw_room).await?;
    let target = account(env, raw_user).await?;
    let adding = req.method() == Method::Put;
    if adding {
        let store = Store::from_env(env)?;
        if let RoomAccess::Denied = store.room_access(room.as_str(), &target).await? {
            return Err(ApiError::unprocessable(
                "add them to the private room's members first",
            ));
        }
    }
    let action = if adding {
        "moderator_added"
    } else {
        "moderator_removed"
    };
    forward(env, &room, &badge, action, Some(&target), None, None).await
}

/// `POST /rooms/{room_id}/kick/{username}`: closes the user's sockets in the room (4001); they
/// may come back at once.
pub async fn kick(req: Request, env: &Env, raw_room: &str, raw_user: &str) -> ApiResult<Response> {
    let (badge, room) = caller(&req, env, raw_room).await?;
    let target = account(env, raw_user).await?;
    forward(env, &room, &badge, "kick", Some(&target), None, None).await
}

/// A JSON number with no fractional part, as JSON Schema's `integer` (the API documents) reads
/// it: `300` and `300.0` (or `3e2`) alike, within the integers a double holds exactly (±(2^53 - 1)):
/// the request to the room is JSON read by JavaScript, which would turn a larger one into a float
/// the room refuses.
fn whole_number<'de, D: serde::Deserializer<'de>>(de: D) -> Result<i64, D::Error> {
    const MAX_EXACT: i64 = 9_007_199_254_740_991;
    let number = serde_json::Number::deserialize(de)?;
    if let Some(n) = number
        .as_i64()
        .filter(|n| (-MAX_EXACT..=MAX_EXACT).contains(n))
    {
        return Ok(n);
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() <= MAX_EXACT as f64 => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!(
            "expected an integer, got {number}"
        ))),
    }
}

fn optional_whole_number<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct Whole(#[serde(deserialize_with = "whole_number")] i64);
    Ok(Option::<Whole>::deserialize(de)?.map(|w| w.0))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Until {
    #[serde(default, deserialize_with = "optional_whole_number")]
    until: Option<i64>,
}

/// `PUT` / `DELETE /rooms/{room_id}/bans/{username}` and `.../mutes/{username}`; `PUT` takes an
/// optional `{"until": ms since the epoch}`.
pub async fn sanction(
    mut req: Request,
    env: &Env,
    raw_room: &str,
    kind: &str,
    raw_user: &str,
) -> ApiResult<Response> {
    let (badge, room) = caller(&req, env, raw_room).await?;
    let target = account(env, raw_user).await?;
    let adding = req.method() == Method::Put;
    let until = if adding {
        optional_body::<Until>(&mut req, "a JSON object {\"until\": integer} or empty")
            .await?
            .and_then(|u| u.until)
    } else {
        None
    };
    let action = match (kind, adding) {
        ("bans", true) => "ban",
        ("bans", false) => "unban",
        ("mutes", true) => "mute",
        _ => "unmute",
    };
    forward(env, &room, &badge, action, Some(&target), until, None).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomSettings {
    #[serde(deserialize_with = "whole_number")]
    slow_mode_secs: i64,
}

/// `PATCH /rooms/{room_id}` `{"slow_mode_secs": N}` (owner and moderators; 0 turns it off).
pub async fn settings(mut req: Request, env: &Env, raw_room: &str) -> ApiResult<Response> {
    let (badge, room) = caller(&req, env, raw_room).await?;
    let shape = "a JSON object {\"slow_mode_secs\": integer}";
    let settings = optional_body::<RoomSettings>(&mut req, shape)
        .await?
        .ok_or_else(|| ApiError::unprocessable(format!("body must be {shape}")))?;
    forward(
        env,
        &room,
        &badge,
        "slow_mode",
        None,
        None,
        Some(settings.slow_mode_secs),
    )
    .await
}

/// `GET /rooms/{room_id}/audit?before=&limit=` (owner and moderators): newest first.
pub async fn audit(req: Request, env: &Env, raw_room: &str) -> ApiResult<Response> {
    let (badge, room) = caller(&req, env, raw_room).await?;
    let query = http::query_suffix(&req.inner().url());
    if query.len() > 256 {
        return Err(ApiError::new(414, "query string too long"));
    }
    RoomStub::new(env, &room)
        .audit(&query, badge.username.as_str())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        let secs = |body: &str| {
            serde_json::from_str::<RoomSettings>(body)
                .map(|s| s.slow_mode_secs)
                .ok()
        };
        assert_eq!(secs(r#"{"slow_mode_secs": 301}"#), Some(301));
        assert_eq!(secs(r#"{"slow_mode_secs": 301.0}"#), Some(301));
        assert_eq!(secs(r#"{"slow_mode_secs": 3e2}"#), Some(300));
        for bad in [
            r#"{"slow_mode_secs": 1.5}"#,
            r#"{"slow_mode_secs": 1e300}"#,
            r#"{"slow_mode_secs": 86954318169283940}"#,
            r#"{"slow_mode_secs": -9223372036854775808}"#,
            r#"{"slow_mode_secs": "5"}"#,
            r#"{"slow_mode_secs": null}"#,
            r#"{}"#,
        ] {
            assert_eq!(secs(bad), None, "{bad}");
        }
        let until = |body: &str| serde_json::from_str::<Until>(body).map(|u| u.until).ok();
        assert_eq!(
            until(r#"{"until": 1795000000000.0}"#),
            Some(Some(1_795_000_000_000))
        );
        assert_eq!(until(r#"{"until": null}"#), Some(None));
        assert_eq!(until(r#"{}"#), Some(None));
        assert_eq!(until(r#"{"until": 0.5}"#), None);
    }
}
