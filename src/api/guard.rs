//! Checks shared by every authenticated route: the badge (signature, claims, and revocation in
//! the user's session ledger) and room access (private rooms admit only members).

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use worker::{Env, Request};

use crate::auth::badge::{Badge, BadgeKeys};
use crate::config;
use crate::directory::{Directory, DmAccess};
use crate::http;
use crate::http::{ApiError, ApiResult};
use crate::ledger::Ledger;
use crate::log;
use crate::protocol::RoomId;
use crate::store::{RoomAccess, Store};

thread_local! {
    /// Rooms D1 has no private record of. A name that is public stays public (a used room
    /// cannot be claimed), and the room object re-checks privacy itself, so a stale entry can
    /// never let anyone into a private room; it only saves a D1 query per connection.
    static KNOWN_PUBLIC: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// Rooms this isolate has seen to be private: a socket for one of them reads the user's
    /// membership from D1 before asking the room, rather than after the room's refusal.
    static KNOWN_PRIVATE: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}
/// Most room names either cache holds; a full cache starts over rather than grow.
const KNOWN_ROOMS_MAX: usize = 10_000;

type KnownRooms = std::thread::LocalKey<RefCell<HashSet<String>>>;

fn remember(cache: &'static KnownRooms, room: &RoomId) {
    cache.with(|k| {
        let mut known = k.borrow_mut();
        if known.len() >= KNOWN_ROOMS_MAX {
            known.clear();
        }
        known.insert(room.as_str().to_owned());
    });
}

fn knows(cache: &'static KnownRooms, room: &RoomId) -> bool {
    cache.with(|k| k.borrow().contains(room.as_str()))
}

pub fn badge_keys(env: &Env) -> ApiResult<Rc<BadgeKeys>> {
    config::badge_keys(env).map_err(|why| {
        log::error("config_invalid", &[("problem", &why.to_string())]);
        ApiError::new(
            503,
            "authentication unavailable: server signing key is not configured",
        )
    })
}

/// Verifies a badge completely, including revocation. Every failure is the same 401 to the
/// client; the reason goes to the log.
pub async fn authenticate(env: &Env, token: Option<&str>) -> ApiResult<Badge> {
    let badge = verify_signature(env, token)?;
    Ledger::for_user(env, badge.username.as_str())?
        .admit(&badge)
        .await?;
    Ok(badge)
}

/// Signature, algorithm, issuer and times; no I/O. Not revocation: see [`authenticate`].
pub fn verify_signature(env: &Env, token: Option<&str>) -> ApiResult<Badge> {
    let keys = badge_keys(env)?;
    let token = token.ok_or_else(|| ApiError::unauthorized("Not authenticated"))?;
    keys.verify(token, super::now_secs()).map_err(|why| {
        log::info("auth_refused", &[("reason", &format!("{why:?}"))]);
        ApiError::unauthorized("Could not validate credentials")
    })
}

/// The badge from `Authorization: Bearer`.
pub async fn bearer(req: &Request, env: &Env) -> ApiResult<Badge> {
    authenticate(env, http::bearer_token(req)?.as_deref()).await
}

/// What `badge` may do in `room`: 403 for a private room or DM it is not a member of, and for a
/// DM whose other member blocked it.
pub async fn room_access(env: &Env, room: &RoomId, badge: &Badge) -> ApiResult<RoomAccess> {
    if room.is_dm() {
        return dm_access(env, room, badge).await;
    }
    if knows(&KNOWN_PUBLIC, room) {
        return Ok(RoomAccess::Public);
    }
    let access = Store::from_env(env)?
        .room_access(room.as_str(), badge.username.as_str())
        .await?;
    match access {
        RoomAccess::Denied => Err(ApiError::new(403, "this room is private")),
        RoomAccess::Public => {
            remember(&KNOWN_PUBLIC, room);
            Ok(access)
        }
        RoomAccess::Member { .. } => Ok(access),
    }
}

/// Why a member of a DM is refused: the other member blocked them.
pub const BLOCKED_IN_DM: &str = "this user does not accept your messages";

/// A DM's two members, but not one whom the other blocked: the same rule for its sockets and
/// its HTTP routes (history, info), so a blocked person reads nothing written after the block.
/// A DM id is never a public room: without its record nobody is a member.
async fn dm_access(env: &Env, room: &RoomId, badge: &Badge) -> ApiResult<RoomAccess> {
    match Directory::from_env(env)?
        .dm_access(room, badge.username.as_str())
        .await?
    {
        DmAccess::Member => Ok(RoomAccess::Member {
            owner: String::new(),
        }),
        DmAccess::Blocked => Err(ApiError::new(403, BLOCKED_IN_DM)),
        DmAccess::NotMember => Err(ApiError::new(403, "this room is private")),
    }
}

/// The room has just been made private, or said it is: forgets a cached "public" verdict, and
/// later sockets to it go to D1 first.
pub fn mark_private(room: &RoomId) {
    KNOWN_PUBLIC.with(|k| k.borrow_mut().remove(room.as_str()));
    remember(&KNOWN_PRIVATE, room);
}

/// Whether this isolate has seen `room` to be private.
pub fn known_private(room: &RoomId) -> bool {
    knows(&KNOWN_PRIVATE, room)
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
