//! Private rooms: claiming a name (`POST /rooms`), its info, members managed by the owner,
//! who gets in, removal closing sockets, and all of it after a restart.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::harness::*;

/// `PUT` (add) or `DELETE` (remove) `user` in `room` as its owner: asserts the 200 answer naming
/// both.
async fn change_member_ok(c: &Client, method: Method, owner: &str, room: &str, user: &str) {
    let what = format!("{method} {user} in {room}");
    let (status, v) = status_json(c.change_member(method, owner, room, user).await, &what).await;
    assert_eq!(status, 200, "{what}: {v}");
    assert_eq!(v, json!({"room_id": room, "username": user}), "{what}");
}

/// Uses `room` as a public room: a socket is admitted, read, and closed.
async fn use_publicly(c: &Client, room: &str, token: &str) {
    c.ws_ready(room, token).await.close().await;
}

/// Asserts that the public room `room`, once used, cannot be claimed by `claimer` and stays
/// public for `reader`.
async fn assert_stays_public(c: &Client, room: &str, claimer: &str, reader: &str, what: &str) {
    expect_json_error(c.create_private_room(claimer, room).await, 409, what).await;
    let info = c.get_ok(&format!("/rooms/{room}"), reader).await;
    assert_eq!(info["private"], false, "{what}: {info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_private_room_and_reading_its_info() {
    let c = client();
    let (room, [(owner, to), (member, tm)]) = c.room_with_users("priv", ["owner", "member"]).await;

    let resp = c
        .post("/rooms")
        .json(&json!({"room_id": room, "private": true}))
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 401, "POST /rooms without a badge").await;

    let (status, v) = status_json(c.create_private_room(&to, &room).await, "create").await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v, json!({"room_id": room, "private": true, "owner": owner}));

    let info_path = format!("/rooms/{room}");
    let info = c.get_ok(&info_path, &to).await;
    assert_eq!(info["room_id"], room.as_str());
    assert_eq!(info["private"], true);
    assert_eq!(info["owner"], owner.as_str());
    assert_eq!(
        info["members"],
        json!([owner]),
        "owner sees the members: {info}"
    );

    change_member_ok(&c, Method::PUT, &to, &room, &member).await;
    let info = c.get_ok(&info_path, &to).await;
    let mut both = vec![owner.clone(), member.clone()];
    both.sort();
    assert_eq!(info["members"], json!(both), "{info}");

    let info = c.get_ok(&info_path, &tm).await;
    assert_eq!(info["private"], true);
    assert_eq!(info["owner"], owner.as_str());
    assert!(
        info.get("members").is_none_or(|m| m.is_null()),
        "members only for the owner: {info}"
    );

    // Someone who is not a member learns nothing about the members.
    let (_, tx) = c.new_user("outsider").await;
    let (status, v) = status_json(c.get_bearer(&info_path, &tx).await, "outsider info").await;
    assert!(
        status == 403 || (status == 200 && v.get("members").is_none_or(|m| m.is_null())),
        "outsider GET /rooms/{{room}}: {status} {v}"
    );

    // A public room's info.
    let public = unique_name("pub");
    let info = c.get_ok(&format!("/rooms/{public}"), &tm).await;
    assert_eq!(info["private"], false, "{info}");
    assert_eq!(info["room_id"], public.as_str());
}

/// Room ids of `POST /rooms` follow the rules of `/ws/{room}`; the 65-character one is in
/// `length_limits_and_content_types`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_name_can_be_claimed_once_and_never_after_public_use() {
    let c = client();
    let (room, [(_, ta), (_, tb)]) = c.room_with_users("claim", ["claimer", "rival"]).await;
    assert_eq!(c.create_private_room(&ta, &room).await.status(), 201);
    expect_json_error(
        c.create_private_room(&ta, &room).await,
        409,
        "claimed twice, same owner",
    )
    .await;
    expect_json_error(
        c.create_private_room(&tb, &room).await,
        409,
        "claimed twice, other user",
    )
    .await;

    // A public room someone has connected to cannot be taken over, and stays public.
    let used = unique_name("used");
    use_publicly(&c, &used, &tb).await;
    assert_stays_public(&c, &used, &ta, &tb, "used public room").await;

    for bad in [
        json!({"room_id": unique_name("notbool"), "private": "yes"}),
        json!({"room_id": "a b", "private": true}),
        json!({"private": true}),
        json!([]),
    ] {
        let resp = c
            .post("/rooms")
            .bearer_auth(&ta)
            .json(&bad)
            .send()
            .await
            .unwrap();
        expect_json_error(resp, 422, &bad.to_string()).await;
    }
}

/// A connect marks the room used a moment later, with the rest of a burst's writes (the claim is
/// refused from the connect on, in memory); the mark must reach storage and outlive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_room_stays_unclaimable_after_a_restart() {
    let server = start(ServerOptions::relaxed_limits()).await;
    let c = server.client();
    let (_, ta) = c.new_user("reclaimer").await;
    let (_, tb) = c.new_user("firstuser").await;
    let used = unique_name("usedrestart");
    use_publicly(&c, &used, &tb).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // past the room's deferred write
    let server = restart(server).await;
    assert_stays_public(
        &server.client(),
        &used,
        &ta,
        &tb,
        "room used before the restart",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_of_one_name_give_exactly_one_201() {
    let c = client();
    let room = unique_name("race");
    let tokens: Vec<String> = c
        .new_users("racer", 4)
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let statuses = bounded_join(tokens.clone(), 4, |t| {
        let (c, room) = (c.clone(), room.clone());
        async move { c.create_private_room(&t, &room).await.status().as_u16() }
    })
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        3,
        "{statuses:?}"
    );
    // Exactly one of them owns it; the others are outsiders.
    let mut owners = 0;
    for t in &tokens {
        let resp = c.get_bearer(&format!("/rooms/{room}/members"), t).await;
        if resp.status() == 200 {
            owners += 1;
        }
    }
    assert_eq!(owners, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_get_in_and_only_the_owner_manages_members() {
    let c = client();
    let (room, [(_, to), (member, tm), (outsider, tx)]) = c
        .room_with_users("club", ["owner", "member", "outsider"])
        .await;
    assert_eq!(c.create_private_room(&to, &room).await.status(), 201);

    let refused = |method: Method, token: &str, user: &str, status: u16, what: &str| {
        let (c, room, what) = (c.clone(), room.clone(), what.to_string());
        let (token, user) = (token.to_string(), user.to_string());
        async move {
            let resp = c.change_member(method, &token, &room, &user).await;
            expect_json_error(resp, status, &what).await;
        }
    };
    refused(
        Method::PUT,
        &to,
        "nobody_here_at_all",
        404,
        "PUT unknown user",
    )
    .await;
    refused(Method::DELETE, &to, &member, 404, "DELETE non-member").await;
    change_member_ok(&c, Method::PUT, &to, &room, &member).await;
    refused(Method::PUT, &tm, &outsider, 403, "member (not owner) PUT").await;
    refused(Method::PUT, &tx, &outsider, 403, "outsider PUT").await;
    refused(
        Method::DELETE,
        &tm,
        &member,
        403,
        "member (not owner) DELETE",
    )
    .await;

    // The outsider: refused at the handshake and on the HTTP reads.
    c.expect_upgrade_refused(&room, &tx, &[], 403, "outsider upgrade")
        .await;
    for what in ["messages", "members"] {
        let resp = c.get_bearer(&format!("/rooms/{room}/{what}"), &tx).await;
        expect_json_error(resp, 403, &format!("outsider {what}")).await;
    }
    // Members and the owner get in.
    let mut o = c.ws(&room, &to).await;
    let mut m = c.ws(&room, &tm).await;
    m.send_message(&room, "members only").await;
    assert_eq!(o.next_message().await["content"], "members only");
    let count = |v: serde_json::Value, key: &str| v[key].as_array().unwrap().len();
    let messages = c.get_ok(&format!("/rooms/{room}/messages"), &tm).await;
    assert_eq!(count(messages, "messages"), 1);
    let members = c.get_ok(&format!("/rooms/{room}/members"), &tm).await;
    assert_eq!(count(members, "users"), 2);

    // Once added, the outsider gets in too.
    change_member_ok(&c, Method::PUT, &to, &room, &outsider).await;
    let (h, _) = c.ws(&room, &tx).await.history_and_presence().await;
    assert_eq!(h["messages"][0]["content"], "members only");
}

/// The Worker sends a socket for a room it has not seen to the room without asking D1 (public
/// rooms need no membership lookup); a private room refuses it and only then are memberships
/// read. After a restart no isolate knows which rooms are private, so every first socket takes
/// that path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_private_rooms_still_admit_only_members() {
    let server = start(ServerOptions::default()).await;
    let c = server.client();
    let (room, [(owner, to), (member, tm), (_, tx)]) = c
        .room_with_users("club", ["owner", "member", "outsider"])
        .await;
    c.private_room_with_member(&to, &room, &member).await;

    let server = restart(server).await;
    let c = server.client();

    // The outsider's socket reaches the room, which refuses it: a plain 403, nothing internal.
    let resp = c.upgrade_attempt(&ws_path(&room, &tx)).await;
    assert!(
        resp.headers()
            .keys()
            .all(|k| !k.as_str().starts_with("x-clubhouse")),
        "{:?}",
        resp.headers()
    );
    expect_json_error(resp, 403, "outsider after a restart").await;
    // The member and the owner are asked about in D1 and get in; a message goes between them.
    let mut m = c.ws(&room, &tm).await;
    let mut o = c.ws(&room, &to).await;
    o.send_message(&room, "still private").await;
    let got = m.next_message().await;
    assert_eq!(got["content"], "still private");
    assert_eq!(got["username"], owner.as_str());
    // A second outsider attempt (the room is now known private: D1 first) is refused too.
    let resp = c.upgrade_attempt(&ws_path(&room, &tx)).await;
    expect_json_error(resp, 403, "outsider, room known private").await;
    // Public rooms are unaffected.
    c.ws_ready(&unique_name("pub"), &tx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_member_closes_their_sockets_with_1008_and_keeps_them_out() {
    let c = client();
    let (room, [(_, to), (member, tm)]) = c.room_with_users("kick", ["owner", "member"]).await;
    c.private_room_with_member(&to, &room, &member).await;

    let mut o = c.ws_ready(&room, &to).await;
    let mut m1 = c.ws_ready(&room, &tm).await;
    let mut m2 = c.ws_ready(&room, &tm).await;

    let started = Instant::now();
    change_member_ok(&c, Method::DELETE, &to, &room, &member).await;
    m1.expect_policy_close("removed member, tab 1").await;
    m2.expect_policy_close("removed member, tab 2").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed {:?} after the DELETE",
        started.elapsed()
    );
    o.next_leave_of(&member).await;
    o.expect_none_of_types(&["leave", "presence_changes"], QUIET)
        .await; // one leave for two closed tabs
    o.roundtrip_ping().await; // the owner stays

    assert_refused(
        c.try_ws(&room, &tm).await,
        403,
        "removed member must be refused",
    );
    let resp = c.get_bearer(&format!("/rooms/{room}/messages"), &tm).await;
    expect_json_error(resp, 403, "removed member reads").await;
    expect_json_error(
        c.change_member(Method::DELETE, &to, &room, &member).await,
        404,
        "DELETE twice",
    )
    .await;
}
