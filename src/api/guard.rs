//! Checks shared by every authenticated route: the badge (signature, claims, revocation) and
//! room access (private rooms admit only members).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use worker::{Env, Request};

use crate::auth::badge::{Badge, BadgeKeys};
use crate::config;
use crate::error::{ApiError, ApiResult};
use crate::http;
use crate::protocol::RoomId;
use crate::store::{Revocations, RoomAccess, Store};

thread_local! {
    /// Rooms D1 has no private record of. A name that is public stays public (a used room
    /// cannot be claimed), and the room object re-checks privacy itself, so a stale entry can
    /// never let anyone into a private room; it only saves a D1 query per connection.
    static KNOWN_PUBLIC: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}
const KNOWN_PUBLIC_MAX: usize = 10_000;

thread_local! {
    /// Badges this isolate found not revoked, with when it looked (ms). KV is read at most once
    /// per badge per `CLEAN_BADGE_TTL_MS`: KV itself is eventually consistent across locations
    /// (its edge caches hold a read for 60 s), so this adds no staleness there, and a logout in
    /// this isolate updates the cache at once.
    static CLEAN_BADGES: RefCell<HashMap<String, f64>> = RefCell::new(HashMap::new());
    /// Where this isolate has already recorded a badge's socket (jti, room) for logout.
    static RECORDED_SESSIONS: RefCell<HashSet<(String, String)>> = RefCell::new(HashSet::new());
}
const CLEAN_BADGE_TTL_MS: f64 = 5_000.0;
const CACHE_MAX: usize = 10_000;

fn now_ms() -> f64 {
    worker::Date::now().as_millis() as f64
}

/// Forgets cached "not revoked" verdicts after a logout in this isolate: one badge, or with
/// `jti = None` every badge (logout everywhere: cheaper than tracking badges per user).
pub fn forget_clean(jti: Option<&str>) {
    CLEAN_BADGES.with(|c| match jti {
        Some(j) => {
            c.borrow_mut().remove(j);
        }
        None => c.borrow_mut().clear(),
    });
}

/// True the first time this isolate sees a badge's socket in a room: the caller records it.
pub fn first_session_in_room(jti: &str, room: &str) -> bool {
    RECORDED_SESSIONS.with(|r| {
        let mut recorded = r.borrow_mut();
        if recorded.len() >= CACHE_MAX {
            recorded.clear();
        }
        recorded.insert((jti.to_owned(), room.to_owned()))
    })
}

pub fn badge_keys(env: &Env) -> ApiResult<BadgeKeys> {
    config::badge_keys(env).map_err(|why| {
        crate::log::event("error", "config_invalid", &[("problem", &why.to_string())]);
        ApiError::new(
            503,
            "authentication unavailable: server signing key is not configured",
        )
    })
}

/// Verifies a badge completely, including revocation. Every failure is the same 401 to the
/// client; the reason goes to the log.
pub async fn authenticate(env: &Env, token: Option<&str>) -> ApiResult<Badge> {
    let keys = badge_keys(env)?;
    let token = token.ok_or_else(|| ApiError::unauthorized("Not authenticated"))?;
    let badge = keys.verify(token, super::now_secs()).map_err(|why| {
        crate::log::event("info", "auth_refused", &[("reason", &format!("{why:?}"))]);
        ApiError::unauthorized("Could not validate credentials")
    })?;
    let fresh = CLEAN_BADGES.with(|c| {
        c.borrow()
            .get(&badge.jti)
            .is_some_and(|checked| now_ms() - checked < CLEAN_BADGE_TTL_MS)
    });
    if fresh {
        return Ok(badge);
    }
    let revocations = Revocations::from_env(env)?;
    if revocations
        .is_revoked(&badge.jti, badge.username.as_str(), badge.issued_at)
        .await?
    {
        crate::log::event(
            "info",
            "auth_refused",
            &[("reason", "revoked"), ("username", badge.username.as_str())],
        );
        return Err(ApiError::unauthorized("Could not validate credentials"));
    }
    CLEAN_BADGES.with(|c| {
        let mut clean = c.borrow_mut();
        if clean.len() >= CACHE_MAX {
            clean.clear();
        }
        clean.insert(badge.jti.clone(), now_ms());
    });
    Ok(badge)
}

/// The badge from `Authorization: Bearer`.
pub async fn bearer(req: &Request, env: &Env) -> ApiResult<Badge> {
    authenticate(env, http::bearer_token(req)?.as_deref()).await
}

/// What `badge` may do in `room`: 403 for a private room it is not a member of.
pub async fn room_access(env: &Env, room: &RoomId, badge: &Badge) -> ApiResult<RoomAccess> {
    if KNOWN_PUBLIC.with(|k| k.borrow().contains(room.as_str())) {
        return Ok(RoomAccess::Public);
    }
    let access = Store::from_env(env)?
        .room_access(room.as_str(), badge.username.as_str())
        .await?;
    match access {
        RoomAccess::Denied => Err(ApiError::new(403, "this room is private")),
        RoomAccess::Public => {
            KNOWN_PUBLIC.with(|k| {
                let mut known = k.borrow_mut();
                if known.len() >= KNOWN_PUBLIC_MAX {
                    known.clear();
                }
                known.insert(room.as_str().to_owned());
            });
            Ok(access)
        }
        RoomAccess::Member { .. } => Ok(access),
    }
}

/// Forgets a cached "public" verdict (the room has just been made private).
pub fn forget_public(room: &RoomId) {
    KNOWN_PUBLIC.with(|k| k.borrow_mut().remove(room.as_str()));
}

/// The client's IP as Cloudflare reports it; locally, whatever the dev proxy says.
/// Cloudflare sets the header on the edge; locally a client can, so it is cut to an IPv6's length.
pub fn client_ip(req: &Request) -> String {
    let ip = req
        .headers()
        .get("CF-Connecting-IP")
        .ok()
        .flatten()
        .unwrap_or_else(|| "unknown".into());
    ip.chars().take(45).collect()
}
