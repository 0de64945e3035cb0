//! `GET /ws/{room_id}`: check the origin, the badge's signature and room access before any
//! upgrade, then hand the socket to the room's Durable Object with the verified identity in a
//! request the Worker builds from scratch (`room/handover.rs`, `room/client.rs`). The room has the session ledger
//! admit the badge (revocation).
//!
//! This is the one route that reads the runtime's request directly rather than through
//! `worker::Request`, whose conversion reads the method, URL, headers and `cf` object up
//! front: a connect needs three headers and the URL, and a reconnect storm is all connects.
//!
//! A DM's id (`dm.<hex>`) always has its membership and blocks read from D1 first (`dm.rs`).
//!
//! The badge comes from `Sec-WebSocket-Protocol: bearer, <JWT>` (browsers cannot set headers on
//! a WebSocket, and a URL ends up in logs and history) or, for older clients, `?token=<JWT>`.

use worker::{worker_sys::web_sys, Env};

use super::{guard, rooms};
use crate::auth::badge::Badge;
use crate::config::Config;
use crate::http::{self, ApiError, ApiResult};
use crate::log;
use crate::protocol::RoomId;
use crate::room::client::{refused_as_private, RoomStub};
use crate::room::handover::Handover;
use crate::store::RoomAccess;

/// Longest `Sec-WebSocket-Protocol` header read.
const MAX_PROTOCOL_HEADER: usize = 4200;

pub async fn connect(
    req: &web_sys::Request,
    url: &str,
    env: &Env,
    raw_room: &str,
    request_id: &str,
) -> ApiResult<web_sys::Response> {
    let room = rooms::parse_room(raw_room)?;
    let headers = req.headers();
    let wants_upgrade =
        header(&headers, "Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !wants_upgrade {
        return Err(
            ApiError::new(426, "expected a WebSocket upgrade").with_header("Upgrade", "websocket")
        );
    }
    check_origin(&headers, url, &Config::from_env(env))?;

    // The query read once: a reconnect storm is all connects.
    let [query_token, since, rev, batch] =
        http::raw_query_params(url, ["token", "since", "rev", "batch"]);
    let (token, via_subprotocol) = match subprotocol_token(&headers)? {
        Some(token) => (Some(token), true),
        None => (query_token, false),
    };
    // The signature and times only: the room asks the session ledger about revocation, and
    // only for a badge it has not had admitted before (`room/admissions.rs`).
    let badge = guard::verify_signature(env, token.as_deref())?;
    let since = position(since, "since")?;
    let rev = position(rev, "rev")?;
    let batch = batch_option(batch)?;
    // Handed over as a public room's socket first; `member` changes if the room says private.
    let mut handover = Handover {
        user: badge.username.as_str().to_owned(),
        room: room.as_str().to_owned(),
        jti: badge.jti.clone(),
        iat: badge.issued_at,
        iat_ms: badge.issued_at_ms,
        exp: badge.expires_at,
        member: false,
        request_id: request_id.to_owned(),
        bearer: via_subprotocol,
        since,
        rev,
        batch,
    };

    // Public rooms, the common case, need no D1 query: the room is the authority on privacy
    // and answers a socket checked only as public with a marked 403 when it is private. Only
    // then, or for a room this isolate already knows to be private, are memberships read.
    let mut access = if room.is_dm() || guard::known_private(&room) {
        // Membership (and for a DM, blocks), from D1, before any upgrade.
        member_access(env, &room, &badge).await?
    } else {
        RoomAccess::Public
    };
    let stub = RoomStub::new(env, &room);
    loop {
        handover.member = matches!(access, RoomAccess::Member { .. });
        // The room's answer goes back as it came (see `super::Reply`).
        let answer = stub.connect(&handover).await?;
        if !refused_as_private(&answer) {
            return Ok(answer);
        }
        if matches!(access, RoomAccess::Public) {
            guard::mark_private(&room);
            access = member_access(env, &room, &badge).await?;
            if matches!(access, RoomAccess::Member { .. }) {
                continue; // ask again, as a member
            }
        }
        // D1 has no record of the room yet (it is being claimed), or the room still refuses.
        return Err(ApiError::new(403, "this room is private"));
    }
}

/// The user's standing in a private room or DM, from D1; a 403 (logged) when not a member or
/// blocked by the DM's other member.
async fn member_access(env: &Env, room: &RoomId, badge: &Badge) -> ApiResult<RoomAccess> {
    guard::room_access(env, room, badge).await.inspect_err(|e| {
        let reason = if e.detail == guard::BLOCKED_IN_DM {
            "blocked"
        } else {
            "not_a_member"
        };
        log::info(
            "ws_refused",
            &[
                ("reason", reason),
                ("username", badge.username.as_str()),
                ("room", room.as_str()),
            ],
        );
    })
}

/// `?since=` (a message id) or `?rev=` (a room revision): where the client's copy of the room
/// ends. Parsed here, so only a plain number ever reaches the room.
fn position(value: Option<String>, name: &'static str) -> ApiResult<Option<u64>> {
    match value.map(|s| s.parse::<u64>()) {
        Some(Ok(n)) => Ok(Some(n)),
        Some(Err(_)) => Err(ApiError::unprocessable(format!(
            "{name} must be a non-negative integer"
        ))),
        None => Ok(None),
    }
}

/// `?batch=`: `1` opts into batched delivery (`protocol::batch_frames`), `0` or none keeps one
/// frame per message.
fn batch_option(value: Option<String>) -> ApiResult<bool> {
    match value.as_deref() {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(_) => Err(ApiError::unprocessable("batch must be 0 or 1")),
    }
}

/// A header of the client's request; `None` if absent (or unreadable, which a valid name never is).
fn header(headers: &web_sys::Headers, name: &str) -> Option<String> {
    headers.get(name).ok().flatten()
}

/// The badge from `Sec-WebSocket-Protocol: bearer, <JWT>`, if the client used that transport.
fn subprotocol_token(headers: &web_sys::Headers) -> ApiResult<Option<String>> {
    let Some(value) = header(headers, "Sec-WebSocket-Protocol") else {
        return Ok(None);
    };
    if value.len() > MAX_PROTOCOL_HEADER {
        return Err(ApiError::new(
            431,
            "Sec-WebSocket-Protocol header too large",
        ));
    }
    Ok(parse_bearer_subprotocol(&value))
}

fn parse_bearer_subprotocol(value: &str) -> Option<String> {
    let mut parts = value.split(',').map(str::trim);
    match (parts.next(), parts.next()) {
        (Some(scheme), Some(token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() =>
        {
            Some(token.to_owned())
        }
        _ => None,
    }
}

/// Cross-site WebSocket hijacking defence: a browser always sends `Origin`, and only the
/// service's own origin and `ALLOWED_ORIGINS` may open sockets. Non-browser clients send none.
/// Browsers send `Origin`; other clients usually do not, and then the URL is not even parsed.
fn check_origin(headers: &web_sys::Headers, url: &str, config: &Config) -> ApiResult<()> {
    let Some(origin) = header(headers, "Origin") else {
        return Ok(());
    };
    let own = crate::http::origin_of(url).ok_or_else(|| ApiError::bad_request("invalid URL"))?;
    if origin_allowed(&origin, &own, &config.allowed_origins) {
        return Ok(());
    }
    log::info("ws_refused", &[("reason", "origin_not_allowed")]);
    Err(ApiError::new(403, "origin not allowed"))
}

fn origin_allowed(origin: &str, own: &str, allowed: &[String]) -> bool {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    origin == own.to_ascii_lowercase() || allowed.contains(&origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_subprotocol() {
        assert_eq!(
            parse_bearer_subprotocol("bearer, abc.def.ghi"),
            Some("abc.def.ghi".into())
        );
        assert_eq!(parse_bearer_subprotocol("Bearer,abc"), Some("abc".into()));
        assert_eq!(parse_bearer_subprotocol("bearer"), None);
        assert_eq!(parse_bearer_subprotocol("bearer, "), None);
        assert_eq!(parse_bearer_subprotocol("chat, abc"), None);
    }

    #[test]
    fn batch_is_0_or_1() {
        assert!(!batch_option(None).unwrap());
        assert!(!batch_option(Some("0".into())).unwrap());
        assert!(batch_option(Some("1".into())).unwrap());
        for bad in ["", "true", "2", "01"] {
            let err = batch_option(Some(bad.into())).unwrap_err();
            assert_eq!(err.status, 422, "{bad}");
        }
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://chat.example.com".to_string()];
        assert!(origin_allowed(
            "http://127.0.0.1:8787",
            "http://127.0.0.1:8787",
            &[]
        ));
        assert!(origin_allowed(
            "https://chat.example.com",
            "http://127.0.0.1:8787",
            &allowed
        ));
        assert!(origin_allowed(
            "HTTPS://chat.example.com/",
            "http://127.0.0.1:8787",
            &allowed
        ));
        assert!(!origin_allowed(
            "https://evil.example",
            "http://127.0.0.1:8787",
            &allowed
        ));
        assert!(!origin_allowed(
            "https://chat.example.com.evil.example",
            "http://x",
            &allowed
        ));
        assert!(!origin_allowed("null", "http://127.0.0.1:8787", &allowed));
    }
}
