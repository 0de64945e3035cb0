//! After the session ledger revoked badges: the rooms where they have sockets forget them and
//! close those sockets (1008), through each room's `/revoke`. One place for logout, refresh
//! reuse, password change, account deletion and a login that ended the user's oldest one
//! (`MAX_LOGINS_PER_USER`).

use worker::Env;

use crate::ledger::BadgeSockets;
use crate::log;
use crate::protocol::RoomId;
use crate::room::client::RoomStub;

/// Closes each badge's sockets in its room. A room that cannot be reached is logged: the badge
/// is already refused everywhere, so its sockets only outlive it until they reconnect.
pub async fn close_badges(env: &Env, sockets: &BadgeSockets) {
    let closes = sockets.iter().filter_map(|(room, jti)| {
        let room = RoomId::parse(room).ok()?;
        Some(async move { RoomStub::new(env, &room).revoke_badge(jti).await })
    });
    report(futures_util::future::join_all(closes).await);
}

/// Closes every socket of `user` in `rooms`.
pub async fn close_user(env: &Env, user: &str, rooms: &[String]) {
    let closes = rooms.iter().filter_map(|room| {
        let room = RoomId::parse(room).ok()?;
        Some(async move { RoomStub::new(env, &room).revoke_user(user).await })
    });
    report(futures_util::future::join_all(closes).await);
}

fn report(results: Vec<crate::http::ApiResult<()>>) {
    for result in results {
        if let Err(e) = result {
            log::error("error", &[("cause", &e.detail)]);
        }
    }
}
