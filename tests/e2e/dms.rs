//! Direct messages and blocks: `POST /dm/{username}` gives the same private room to both people,
//! with exactly those two members; its id cannot be used before the DM exists; refusals (401,
//! 404, 403 blocked, 422 yourself or a bad name); blocks (`PUT` / `DELETE` / `GET
//! /users/me/blocks`) refuse the blocked user at connect and close their open sockets; limits.

use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::*;

/// A server whose per-user limits on blocks and DMs, and whose message rate (which read frames
/// share), are small enough to reach; the other abuse limits are out of the way.
pub static SMALL_LIMITS: LazyServer = LazyServer::new(|| {
    ServerOptions::default()
        .var("SIGNUP_MAX_PER_IP", "1000000")
        .var("LOGIN_MAX_FAILURES_PER_IP", "1000000")
        .var("LOGIN_MAX_FAILURES_PER_USER", "1000000")
        .var("MAX_SOCKETS_PER_USER", "1000")
        .var("RATE_LIMIT_PER_SEC", "1")
        .var("RATE_LIMIT_BURST", "5")
        .var("MAX_BLOCKS_PER_USER", "2")
        .var("MAX_DMS_PER_USER", "2")
});

/// `POST /dm/{other}` as `token`: status and body.
async fn open_dm(c: &Client, token: &str, other: &str) -> (u16, Value) {
    let resp = c
        .post(&format!("/dm/{other}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("POST /dm");
    status_json(resp, &format!("POST /dm/{other}")).await
}

/// `POST /dm/{other}` as `token`, asserted 200: the room id.
pub async fn dm_room(c: &Client, token: &str, other: &str) -> String {
    let (status, v) = open_dm(c, token, other).await;
    assert_eq!(status, 200, "POST /dm/{other}: {v}");
    v["room_id"].as_str().expect("a room_id").to_string()
}

/// `PUT` or `DELETE /users/me/blocks/{user}` as `token`.
async fn block(c: &Client, method: Method, token: &str, user: &str) -> reqwest::Response {
    c.request(method, &format!("/users/me/blocks/{user}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("PUT/DELETE block")
}

/// The documented DM id: `dm.` and the first 32 hex digits of SHA-256 of the two lowercased
/// names, sorted, joined by a newline.
fn expected_dm_id(a: &str, b: &str) -> String {
    let mut names = [a.to_ascii_lowercase(), b.to_ascii_lowercase()];
    names.sort();
    let digest = Sha256::digest(format!("{}\n{}", names[0], names[1]).as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("dm.{hex}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_is_the_same_room_whoever_asks_with_exactly_its_two_members() {
    let c = client();
    let [(alice, ta), (bob, tb), (_carol, tc)] =
        c.new_users("dm", 3).await.try_into().expect("three users");

    let room = dm_room(&c, &ta, &bob).await;
    assert_eq!(room, expected_dm_id(&alice, &bob));
    let (status, v) = open_dm(&c, &tb, &alice.to_uppercase()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"room_id": room, "with": alice}), "bob's side");
    assert_eq!(dm_room(&c, &ta, &bob).await, room, "asking again");

    // Both chat there; a third user cannot get in or read.
    let mut wa = c.ws(&room, &ta).await;
    wa.history_and_presence().await;
    let mut wb = c.ws(&room, &tb).await;
    wb.history_and_presence().await;
    wa.send_message(&room, "hi bob").await;
    assert_message(&wb.next_message().await, &room, &alice, "hi bob");
    c.expect_upgrade_refused(&room, &tc, &[], 403, "a third user connects to a DM")
        .await;
    for path in [
        format!("/rooms/{room}/messages"),
        format!("/rooms/{room}/members"),
        format!("/rooms/{room}"),
    ] {
        expect_json_error(c.get_bearer(&path, &tc).await, 403, &path).await;
    }

    // Its info names both members and no owner.
    let info = c.get_ok(&format!("/rooms/{room}"), &tb).await;
    let mut members: Vec<String> = serde_json::from_value(info["members"].clone()).unwrap();
    members.sort();
    let mut both = vec![alice.clone(), bob.clone()];
    both.sort();
    assert_eq!(members, both, "{info}");
    assert_eq!(info["owner"], Value::Null, "{info}");
    assert_eq!(info["dm"], true, "{info}");

    // Nobody can be added or removed, by either member.
    for (method, token, user) in [
        (Method::PUT, &ta, "carol"),
        (Method::PUT, &tb, alice.as_str()),
        (Method::DELETE, &ta, bob.as_str()),
        (Method::DELETE, &tc, alice.as_str()),
    ] {
        let what = format!("{method} member {user} of a DM");
        let resp = c.change_member(method, token, &room, user).await;
        expect_json_error(resp, 403, &what).await;
    }
    // Its name cannot be claimed as a private room either.
    expect_json_error(
        c.create_private_room(&tc, &room).await,
        422,
        "POST /rooms with a DM's id",
    )
    .await;
    wa.close().await;
    wb.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_id_cannot_be_used_or_squatted_before_the_dm_exists() {
    let c = client();
    let [(alice, ta), (bob, tb), (_eve, te)] = c
        .new_users("squat", 3)
        .await
        .try_into()
        .expect("three users");
    let future = expected_dm_id(&alice, &bob);
    // Before the DM exists nobody is its member: not even the two it will belong to.
    for (token, who) in [(&te, "eve"), (&ta, "alice")] {
        c.expect_upgrade_refused(&future, token, &[], 403, &format!("{who} before the DM"))
            .await;
        let path = format!("/rooms/{future}/messages");
        expect_json_error(c.get_bearer(&path, token).await, 403, &path).await;
    }
    // Other dotted names are simply invalid.
    for bad in ["dm.alice", "dm.ABCDEF0123456789ABCDEF0123456789", "a.b"] {
        let resp = c.upgrade_attempt(&ws_path(bad, &te)).await;
        expect_json_error(resp, 422, bad).await;
    }
    // Once opened, both members get in and start from an empty room.
    assert_eq!(dm_room(&c, &tb, &alice).await, future);
    let mut wa = c.ws(&future, &ta).await;
    let (history, _) = wa.history_and_presence().await;
    assert_eq!(history["messages"], json!([]), "{history}");
    wa.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_dm_refuses_nobody_yourself_bad_names_and_no_badge() {
    let c = client();
    let (me, token) = c.new_user("dmref").await;
    let (status, v) = open_dm(&c, &token, &unique_name("ghost")).await;
    assert_eq!(status, 404, "unknown user: {v}");
    for myself in [me.clone(), me.to_uppercase()] {
        let (status, v) = open_dm(&c, &token, &myself).await;
        assert_eq!(status, 422, "a DM with yourself ({myself}): {v}");
    }
    for bad in ["ab", "has%20space", &"x".repeat(33)] {
        let (status, v) = open_dm(&c, &token, bad).await;
        assert_eq!(status, 422, "bad name {bad}: {v}");
    }
    let resp = c.post(&format!("/dm/{me}")).send().await.unwrap();
    expect_json_error(resp, 401, "no badge").await;
    let resp = c
        .post(&format!("/dm/{me}"))
        .bearer_auth("not.a.badge")
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 401, "a bad badge").await;
    let resp = c.get_bearer(&format!("/dm/{me}"), &token).await;
    expect_json_error(resp, 405, "GET /dm/x").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_user_cannot_open_connect_to_read_or_post_in_the_dm() {
    let c = client();
    let [(alice, ta), (bob, tb)] = c.new_users("blk", 2).await.try_into().expect("two users");
    let room = dm_room(&c, &ta, &bob).await;
    let mut wa = c.ws(&room, &ta).await;
    wa.history_and_presence().await;
    let mut wb = c.ws(&room, &tb).await;
    wb.history_and_presence().await;

    // Bob blocks Alice (by any spelling): her open socket closes at once.
    let (status, v) = status_json(
        block(&c, Method::PUT, &tb, &alice.to_uppercase()).await,
        "PUT block",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"username": alice, "blocked": true}));
    wa.expect_policy_close("the blocked user's socket in the DM")
        .await;
    // What she tries to send does not reach Bob.
    let _ = wa
        .try_send_text(json!({"content": "let me in"}).to_string())
        .await;
    wb.expect_none_of_types(&["message"], QUIET).await;

    // She can neither open the DM again nor connect to it, before any upgrade.
    let (status, v) = open_dm(&c, &ta, &bob).await;
    assert_eq!(
        status, 403,
        "opening a DM with someone who blocked you: {v}"
    );
    c.expect_upgrade_refused(&room, &ta, &[], 403, "the blocked user connects")
        .await;
    // Bob keeps the DM, and may still open it and write in it.
    assert_eq!(dm_room(&c, &tb, &alice).await, room);
    let mut wb2 = c.ws(&room, &tb).await;
    wb2.history_and_presence().await;
    wb2.send_message(&room, "written after the block").await;
    wb2.close().await;
    assert_message(
        &wb.next_message().await,
        &room,
        &bob,
        "written after the block",
    );
    // Nor can she read it over HTTP: nothing Bob writes after the block reaches her.
    for what in ["", "/messages", "/members"] {
        let path = format!("/rooms/{room}{what}");
        let resp = c.get_bearer(&path, &ta).await;
        let body = expect_json_error(resp, 403, &path).await;
        assert_eq!(
            body["detail"], "this user does not accept your messages",
            "{path}: {body}"
        );
    }
    let history = c.get_ok(&format!("/rooms/{room}/messages"), &tb).await;
    let contents: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(contents, ["written after the block"], "{history}");

    // Blocking twice is the same block; the list names it once.
    let resp = block(&c, Method::PUT, &tb, &alice).await;
    assert_eq!(resp.status(), 200);
    let blocks = c.get_ok("/users/me/blocks", &tb).await;
    assert_eq!(blocks, json!({"blocks": [alice]}));
    assert_eq!(
        c.get_ok("/users/me/blocks", &ta).await,
        json!({"blocks": []}),
        "blocks are the blocker's"
    );

    // Unblocked, she gets back in; unblocking again is 404.
    let (status, v) = status_json(block(&c, Method::DELETE, &tb, &alice).await, "DELETE").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"username": alice, "blocked": false}));
    expect_json_error(
        block(&c, Method::DELETE, &tb, &alice).await,
        404,
        "unblocking someone not blocked",
    )
    .await;
    let history = c.get_ok(&format!("/rooms/{room}/messages"), &ta).await;
    assert_eq!(
        history["messages"][0]["content"], "written after the block",
        "unblocked, she reads the DM again: {history}"
    );
    let mut wa = c.ws(&room, &ta).await;
    wa.history_and_presence().await;
    wa.send_message(&room, "thanks").await;
    assert_message(&wb.next_message().await, &room, &alice, "thanks");
    wa.close().await;
    wb.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_routes_refuse_bad_input() {
    let c = client();
    let (me, token) = c.new_user("blkref").await;
    expect_json_error(
        block(&c, Method::PUT, &token, &unique_name("ghost")).await,
        404,
        "blocking nobody",
    )
    .await;
    expect_json_error(
        block(&c, Method::PUT, &token, &me).await,
        422,
        "blocking yourself",
    )
    .await;
    expect_json_error(
        block(&c, Method::PUT, &token, "a!b").await,
        422,
        "a bad name",
    )
    .await;
    let resp = c
        .request(Method::PUT, &format!("/users/me/blocks/{me}"))
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 401, "no badge").await;
    let resp = c.get("/users/me/blocks").send().await.unwrap();
    expect_json_error(resp, 401, "listing without a badge").await;
    let resp = c
        .request(Method::POST, "/users/me/blocks/someone")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 405, "POST a block").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_and_dms_per_user_are_limited() {
    let c = SMALL_LIMITS.client();
    let users = c.new_users("lim", 5).await;
    let (_, token) = &users[0];
    // Blocks: two, then 409; lifting one makes room.
    for (name, _) in &users[1..3] {
        assert_eq!(block(&c, Method::PUT, token, name).await.status(), 200);
    }
    let third = &users[3].0;
    expect_json_error(
        block(&c, Method::PUT, token, third).await,
        409,
        "a third block",
    )
    .await;
    assert_eq!(
        block(&c, Method::PUT, token, &users[1].0).await.status(),
        200,
        "an existing block is not a new one"
    );
    assert_eq!(
        block(&c, Method::DELETE, token, &users[1].0).await.status(),
        200
    );
    assert_eq!(block(&c, Method::PUT, token, third).await.status(), 200);

    // DMs: two, then 409; an existing one still opens.
    let (_, t4) = &users[4];
    let first = dm_room(&c, t4, &users[0].0).await;
    dm_room(&c, t4, &users[1].0).await;
    let (status, v) = open_dm(&c, t4, &users[2].0).await;
    assert_eq!(status, 409, "a third DM: {v}");
    assert_eq!(dm_room(&c, t4, &users[0].0).await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_socket_in_a_dm_learns_how_far_the_other_member_has_read() {
    let c = client();
    let [(alice, ta), (bob, tb)] = c.new_users("seen", 2).await.try_into().expect("two users");
    let room = dm_room(&c, &ta, &bob).await;
    let mut wa = c.ws(&room, &ta).await;
    let (_, _) = wa.history_and_presence().await;
    let mut wb = c.ws(&room, &tb).await;
    wb.history_and_presence().await;
    // Nobody has read anything yet: no receipt on connect.
    let mut fresh = c.ws(&room, &tb).await;
    fresh.history_and_presence().await;
    fresh.expect_none_of_types(&["read"], QUIET).await;
    fresh.close().await;

    let ids = wb.send_n(&room, "note", 2).await;
    for _ in 0..2 {
        wa.next_message().await;
    }
    wa.send_json(&json!({"type": "read", "id": ids[0]})).await;
    assert_eq!(
        wb.next_of_type("read").await,
        json!({"type": "read", "username": alice, "id": ids[0]})
    );
    // Bob's next socket is told at once, after history and presence.
    let mut again = c.ws(&room, &tb).await;
    again.history_and_presence().await;
    assert_eq!(
        again.next_of_type("read").await,
        json!({"type": "read", "username": alice, "id": ids[0]})
    );
    // Alice's is told Bob's: his own messages marked him read up to the second.
    let mut hers = c.ws(&room, &ta).await;
    hers.history_and_presence().await;
    assert_eq!(
        hers.next_of_type("read").await,
        json!({"type": "read", "username": bob, "id": ids[1]})
    );
    for ws in [wa, wb, again, hers] {
        ws.close().await;
    }
}
