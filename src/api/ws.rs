//! `GET /ws/{room_id}?token=<JWT>`: check the badge before any upgrade, then hand the socket to
//! the room's Durable Object with the verified identity in headers only the Worker sets.

use worker::{Env, Headers, Request, RequestInit, Response};

use crate::auth::badge::Badge;
use crate::config;
use crate::error::{ApiError, ApiResult};
use crate::protocol::RoomId;
use crate::room;

pub async fn connect(req: Request, env: &Env, raw_room: &str) -> ApiResult<Response> {
    let room = RoomId::parse(raw_room).map_err(|e| ApiError::unprocessable(e.0))?;
    let wants_upgrade = req
        .headers()
        .get("Upgrade")?
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !wants_upgrade {
        return Err(ApiError::new(426, "expected a WebSocket upgrade").with_header("Upgrade", "websocket"));
    }
    let url = req.url()?;
    let token = url
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned());
    let badge = verify_badge(env, token.as_deref())?;

    // Rebuild the request for the room: the client's headers minus any identity headers it tried
    // to set, plus the identity we verified.
    let headers = Headers::new();
    for (name, value) in req.headers().entries() {
        if !name.to_ascii_lowercase().starts_with(room::IDENTITY_HEADER_PREFIX) {
            headers.append(&name, &value)?;
        }
    }
    headers.set(room::USER_HEADER, badge.username.as_str())?;
    headers.set(room::ROOM_HEADER, room.as_str())?;
    headers.set(room::JTI_HEADER, &badge.jti)?;
    let mut init = RequestInit::new();
    init.with_headers(headers);
    let forwarded = Request::new_with_init("https://room.internal/connect", &init)?;

    let namespace = env.durable_object(room::BINDING)?;
    let stub = namespace.id_from_name(room.as_str())?.get_stub()?;
    Ok(stub.fetch_with_request(forwarded).await?)
}

/// Verifies a badge, turning every failure into the same 401 (the reason goes to the log).
pub fn verify_badge(env: &Env, token: Option<&str>) -> ApiResult<Badge> {
    let keys = config::badge_keys(env).map_err(|why| {
        worker::console_error!(
            "{}",
            crate::log::line("error", "config_invalid", &[("problem", &why.to_string())])
        );
        ApiError::new(503, "authentication unavailable: server signing key is not configured")
    })?;
    let token = token.ok_or_else(|| ApiError::unauthorized("Not authenticated"))?;
    keys.verify(token, super::now_secs()).map_err(|why| {
        worker::console_log!(
            "{}",
            crate::log::line("info", "ws_refused", &[("reason", &format!("{why:?}"))])
        );
        ApiError::unauthorized("Could not validate credentials")
    })
}
