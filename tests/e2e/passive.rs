//! Server-initiated closes reach a client that never sent a frame (a read-only tab, a bot that
//! only listens): first the `closing` frame saying why, then the close frame with its code, both
//! within 2 s. The sockets here are opened with [`Client::ws`] and only read; nothing (not even a
//! ping) is sent on them before the close. Why this needs its own tests: `docs/runtime/`.

use std::time::{Duration, Instant};

use reqwest::Method;

use crate::harness::*;

/// How soon a passive client must learn of the close.
const PASSIVE_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Opens a socket that only listens: it reads its `history` and `presence` and sends nothing.
async fn passive(c: &Client, room: &str, token: &str) -> WsClient {
    let mut ws = c.ws(room, token).await;
    ws.history_and_presence().await;
    ws
}

/// Asserts that `ws` gets `{"type":"closing","code":1008,"reason"}` and then a close with 1008
/// and the same reason, within [`PASSIVE_CLOSE_WAIT`] of `started`.
async fn expect_closing_then_close(ws: &mut WsClient, reason: &str, started: Instant, what: &str) {
    expect_closing_then_close_with(ws, 1008, reason, started, what).await;
}

/// [`expect_closing_then_close`] with another close code.
async fn expect_closing_then_close_with(
    ws: &mut WsClient,
    code: u16,
    reason: &str,
    started: Instant,
    what: &str,
) {
    let closing = ws
        .try_next_of_types(&["closing"], PASSIVE_CLOSE_WAIT)
        .await
        .unwrap_or_else(|e| panic!("{what}: no closing frame: {e}; seen {}", ws.seen_summary()));
    assert_eq!(
        closing,
        serde_json::json!({"type": "closing", "code": code, "reason": reason}),
        "{what}"
    );
    let left = PASSIVE_CLOSE_WAIT.saturating_sub(started.elapsed());
    match ws.wait_close(left).await {
        Ok(Some((got_code, got))) => {
            assert_eq!((got_code, got.as_str()), (code, reason), "{what}")
        }
        other => panic!("{what}: no close frame within {PASSIVE_CLOSE_WAIT:?}: {other:?}"),
    }
    assert!(
        started.elapsed() <= PASSIVE_CLOSE_WAIT,
        "{what}: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn logout_closes_a_passive_socket_with_a_closing_frame_first() {
    let c = client();
    let (_, token) = c.new_user("passout").await;
    let room = unique_name("passout");
    let mut ws = passive(&c, &room, &token).await;

    let started = Instant::now();
    assert_eq!(c.logout(&token, false).await.status(), 200);
    expect_closing_then_close(&mut ws, "token revoked", started, "logout").await;
}

#[tokio::test]
async fn logout_everywhere_closes_every_passive_socket_of_the_user() {
    let c = client();
    let (name, first) = c.new_user("passall").await;
    let second = c.login(&name, DEFAULT_PASSWORD).await;
    let (room_a, room_b) = (unique_name("passall"), unique_name("passall"));
    let mut a = passive(&c, &room_a, &first).await;
    let mut b = passive(&c, &room_b, &second).await;

    let started = Instant::now();
    assert_eq!(c.logout(&first, true).await.status(), 200);
    expect_closing_then_close(&mut a, "token revoked", started, "everywhere, this badge").await;
    expect_closing_then_close(&mut b, "token revoked", started, "everywhere, other badge").await;
}

#[tokio::test]
async fn removal_from_a_private_room_closes_the_members_passive_socket() {
    let c = client();
    let (room, [(_, owner), (member, member_token)]) =
        c.room_with_users("passkick", ["owner", "member"]).await;
    c.private_room_with_member(&owner, &room, &member).await;
    let mut ws = passive(&c, &room, &member_token).await;
    let mut watcher = c.ws_ready(&room, &owner).await;

    let started = Instant::now();
    let resp = c
        .change_member(Method::DELETE, &owner, &room, &member)
        .await;
    assert_eq!(resp.status(), 200, "DELETE member");
    expect_closing_then_close(&mut ws, "removed from room", started, "removed").await;
    // Only the removed member is told to go.
    watcher.expect_none_of_types(&["closing"], QUIET).await;
}

/// An owned public room with `user` connected passively; the owner's badge.
async fn owned_room_with_passive(c: &Client, prefix: &str) -> (String, String, String, WsClient) {
    let (room, [(_, owner), (user, token)]) = c.room_with_users(prefix, ["owner", "user"]).await;
    let resp = c
        .post("/rooms")
        .bearer_auth(&owner)
        .json(&serde_json::json!({"room_id": room, "private": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "owned public room");
    let ws = passive(c, &room, &token).await;
    (room, owner, user, ws)
}

#[tokio::test]
async fn a_kick_closes_a_passive_socket_with_4001_and_a_closing_frame_first() {
    let c = client();
    let (room, owner, user, mut ws) = owned_room_with_passive(&c, "passkick").await;
    let started = Instant::now();
    let resp = c
        .post(&format!("/rooms/{room}/kick/{user}"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "kick");
    expect_closing_then_close_with(&mut ws, 4001, "kicked", started, "kicked").await;
}

#[tokio::test]
async fn a_ban_closes_a_passive_socket_with_a_closing_frame_first() {
    let c = client();
    let (room, owner, user, mut ws) = owned_room_with_passive(&c, "passban").await;
    let started = Instant::now();
    let resp = c
        .request(Method::PUT, &format!("/rooms/{room}/bans/{user}"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "ban");
    expect_closing_then_close(&mut ws, "banned", started, "banned").await;
}

/// A login's whole answer: (badge, refresh token).
async fn login_with_refresh(c: &Client, user: &str) -> (String, String) {
    let (status, v) = status_json(c.login_response(user, DEFAULT_PASSWORD).await, "login").await;
    assert_eq!(status, 200, "{v}");
    let field = |f: &str| {
        v[f].as_str()
            .unwrap_or_else(|| panic!("{f}: {v}"))
            .to_owned()
    };
    (field("access_token"), field("refresh_token"))
}

async fn refresh(c: &Client, token: &str) -> reqwest::Response {
    let form = form_encode(&[("grant_type", "refresh_token"), ("refresh_token", token)]);
    c.post_body("/token", FORM, form).await
}

#[tokio::test]
async fn a_reused_refresh_token_closes_the_familys_passive_sockets() {
    let c = client();
    let (name, _) = c.new_user("passreuse").await;
    let (badge, token) = login_with_refresh(&c, &name).await;
    let room = unique_name("passreuse");
    let mut ws = passive(&c, &room, &badge).await;
    assert_eq!(refresh(&c, &token).await.status(), 200, "first use");

    let started = Instant::now();
    assert_eq!(refresh(&c, &token).await.status(), 400, "reuse");
    expect_closing_then_close(&mut ws, "token revoked", started, "refresh reuse").await;
}

#[tokio::test]
async fn a_password_change_closes_the_other_sessions_passive_sockets() {
    let c = client();
    let (name, current) = c.new_user("passpw").await;
    let other = c.login(&name, DEFAULT_PASSWORD).await;
    let room = unique_name("passpw");
    let mut theirs = passive(&c, &room, &other).await;
    let mut mine = passive(&c, &room, &current).await;

    let started = Instant::now();
    let resp = c
        .post("/users/me/password")
        .bearer_auth(&current)
        .json(&serde_json::json!({"current_password": DEFAULT_PASSWORD, "new_password": "another long passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "password change");
    expect_closing_then_close(&mut theirs, "token revoked", started, "the other session").await;
    mine.expect_none_of_types(&["closing"], QUIET).await;
}

#[tokio::test]
async fn deleting_the_account_closes_its_passive_sockets() {
    let c = client();
    let (_, badge) = c.new_user("passdel").await;
    let room = unique_name("passdel");
    let mut ws = passive(&c, &room, &badge).await;

    let started = Instant::now();
    let resp = c
        .request(Method::DELETE, "/users/me")
        .bearer_auth(&badge)
        .json(&serde_json::json!({ "password": DEFAULT_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "account deletion");
    expect_closing_then_close(&mut ws, "token revoked", started, "account deleted").await;
}
