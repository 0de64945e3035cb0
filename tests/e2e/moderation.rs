//! Moderation of owned rooms: owned public rooms, moderators appointed by the owner, kicks,
//! bans (before the upgrade, and from history), mutes, slow mode, moderators' deletions, the
//! audit log, and every refusal.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

/// `POST /rooms` `{"room_id", "private": false}`: an owned public room; asserts the 201.
async fn owned_public_room(c: &Client, token: &str, room: &str, owner: &str) {
    let resp = c
        .post("/rooms")
        .bearer_auth(token)
        .json(&json!({"room_id": room, "private": false}))
        .send()
        .await
        .unwrap();
    let (status, v) = status_json(resp, "create an owned public room").await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        v,
        json!({"room_id": room, "private": false, "owner": owner})
    );
}

/// An owned public room of `owner` (name, badge) with `moderator` appointed; asserts both.
async fn owned_room_with_moderator(c: &Client, room: &str, owner: (&str, &str), moderator: &str) {
    let (owner, token) = owner;
    owned_public_room(c, token, room, owner).await;
    let path = format!("/rooms/{room}/moderators/{moderator}");
    act_ok(c, Method::PUT, &path, token, None).await;
}

/// `method path` as `token` with an optional JSON body: the response.
async fn act(
    c: &Client,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = c.request(method, path).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

/// Asserts a 200 for `method path` as `token`; the JSON body.
async fn act_ok(c: &Client, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
    let what = format!("{method} {path}");
    let (status, v) = status_json(act(c, method, path, token, body).await, &what).await;
    assert_eq!(status, 200, "{what}: {v}");
    v
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The audit entries' `action`s, newest first.
async fn audit_actions(c: &Client, room: &str, token: &str) -> Vec<String> {
    let v = c.get_ok(&format!("/rooms/{room}/audit"), token).await;
    assert_eq!(v["room_id"], room);
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn owned_public_rooms_anyone_joins_and_ad_hoc_rooms_have_no_moderators() {
    let c = client();
    let (room, [(owner, to), (_guest, tg)]) = c.room_with_users("owned", ["owner", "guest"]).await;
    owned_public_room(&c, &to, &room, &owner).await;
    expect_json_error(
        act(
            &c,
            Method::POST,
            "/rooms",
            &tg,
            Some(json!({"room_id": room, "private": false})),
        )
        .await,
        409,
        "claiming a taken name",
    )
    .await;

    let mut wg = c.ws_ready(&room, &tg).await;
    wg.send_message(&room, "a guest speaks").await;
    wg.next_message_with("a guest speaks").await;
    let info = c.get_ok(&format!("/rooms/{room}"), &tg).await;
    assert_eq!(info["private"], false, "{info}");
    assert_eq!(info["owner"], owner.as_str(), "{info}");
    assert_eq!(info["moderators"], json!([]), "{info}");
    assert_eq!(info["slow_mode_secs"], 0, "{info}");
    assert_eq!(info["your_role"], "member", "{info}");
    assert_eq!(info["banned"], false, "{info}");
    assert_eq!(info["muted"], false, "{info}");
    assert_eq!(
        c.get_ok(&format!("/rooms/{room}"), &to).await["your_role"],
        "owner"
    );

    // A room nobody created: no owner, so nobody moderates it.
    let ad_hoc = unique_name("adhoc");
    c.ws_ready(&ad_hoc, &tg).await.close().await;
    let info = c.get_ok(&format!("/rooms/{ad_hoc}"), &tg).await;
    assert_eq!(info["owner"], Value::Null, "{info}");
    assert_eq!(
        info["your_role"],
        Value::Null,
        "no roles without an owner: {info}"
    );
    for (method, path) in [
        (Method::PUT, format!("/rooms/{ad_hoc}/bans/{owner}")),
        (Method::POST, format!("/rooms/{ad_hoc}/kick/{owner}")),
        (Method::PUT, format!("/rooms/{ad_hoc}/moderators/{owner}")),
        (Method::GET, format!("/rooms/{ad_hoc}/audit")),
    ] {
        let e =
            expect_json_error(act(&c, method.clone(), &path, &tg, None).await, 403, &path).await;
        assert!(
            e["detail"].as_str().unwrap().contains("no owner"),
            "{path}: {e}"
        );
    }
}

#[tokio::test]
async fn only_the_owner_appoints_and_moderators_cannot_touch_the_owner_or_each_other() {
    let c = client();
    let (room, [(owner, to), (m1, t1), (m2, t2), (user, tu)]) = c
        .room_with_users("mods", ["owner", "mod1", "mod2", "user"])
        .await;
    owned_public_room(&c, &to, &room, &owner).await;
    let moderator_path = |who: &str| format!("/rooms/{room}/moderators/{who}");

    // Only the owner appoints; not a member, not a moderator.
    expect_json_error(
        act(&c, Method::PUT, &moderator_path(&m1), &tu, None).await,
        403,
        "member appoints",
    )
    .await;
    let v = act_ok(&c, Method::PUT, &moderator_path(&m1), &to, None).await;
    assert_eq!(v["action"], "moderator_added");
    assert_eq!(v["username"], m1.as_str());
    act_ok(&c, Method::PUT, &moderator_path(&m2), &to, None).await;
    expect_json_error(
        act(&c, Method::PUT, &moderator_path(&user), &t1, None).await,
        403,
        "a moderator appoints",
    )
    .await;
    expect_json_error(
        act(&c, Method::DELETE, &moderator_path(&m2), &t1, None).await,
        403,
        "a moderator removes another",
    )
    .await;
    expect_json_error(
        act(&c, Method::PUT, &moderator_path(&owner), &to, None).await,
        422,
        "the owner as moderator",
    )
    .await;
    expect_json_error(
        act(
            &c,
            Method::PUT,
            &moderator_path("nobody_at_all_x"),
            &to,
            None,
        )
        .await,
        404,
        "unknown user",
    )
    .await;
    expect_json_error(
        act(&c, Method::PUT, &moderator_path("bad%20name"), &to, None).await,
        422,
        "bad username",
    )
    .await;
    let info = c.get_ok(&format!("/rooms/{room}"), &tu).await;
    let mut mods = vec![m1.clone(), m2.clone()];
    mods.sort_by_key(|m| m.to_lowercase());
    assert_eq!(info["moderators"], json!(mods), "{info}");
    assert_eq!(
        c.get_ok(&format!("/rooms/{room}"), &t1).await["your_role"],
        "moderator"
    );

    // A moderator acts on members only.
    for (method, path) in [
        (Method::PUT, format!("/rooms/{room}/bans/{owner}")),
        (Method::POST, format!("/rooms/{room}/kick/{owner}")),
        (Method::PUT, format!("/rooms/{room}/mutes/{owner}")),
        (Method::PUT, format!("/rooms/{room}/bans/{m2}")),
        (Method::POST, format!("/rooms/{room}/kick/{m2}")),
    ] {
        expect_json_error(act(&c, method, &path, &t1, None).await, 403, &path).await;
    }
    // Nobody moderates without the role, or on themselves.
    expect_json_error(
        act(
            &c,
            Method::POST,
            &format!("/rooms/{room}/kick/{m1}"),
            &tu,
            None,
        )
        .await,
        403,
        "member kicks",
    )
    .await;
    expect_json_error(
        act(
            &c,
            Method::PUT,
            &format!("/rooms/{room}/mutes/{m1}"),
            &t1,
            None,
        )
        .await,
        422,
        "self-mute",
    )
    .await;

    // Removed, a moderator is a member again.
    act_ok(&c, Method::DELETE, &moderator_path(&m2), &to, None).await;
    act_ok(
        &c,
        Method::PUT,
        &format!("/rooms/{room}/mutes/{m2}"),
        &t1,
        None,
    )
    .await;
    // Without a badge: 401.
    let resp = c
        .request(Method::PUT, &moderator_path(&user))
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 401, "no badge").await;
    let _ = t2;
}

#[tokio::test]
async fn a_kick_closes_with_4001_and_the_user_may_come_back() {
    let c = client();
    let (room, [(owner, to), (user, tu)]) = c.room_with_users("kick", ["owner", "user"]).await;
    owned_public_room(&c, &to, &room, &owner).await;
    let mut wu = c.ws_ready(&room, &tu).await;
    let v = act_ok(
        &c,
        Method::POST,
        &format!("/rooms/{room}/kick/{user}"),
        &to,
        None,
    )
    .await;
    assert_eq!(v["sockets_closed"], 1, "{v}");
    wu.expect_closed_with(4001, Duration::from_secs(3), "kicked")
        .await;
    let mut again = c.ws_ready(&room, &tu).await;
    again.send_message(&room, "back").await;
    again.next_message_with("back").await;
    expect_json_error(
        act(
            &c,
            Method::GET,
            &format!("/rooms/{room}/kick/{user}"),
            &to,
            None,
        )
        .await,
        405,
        "GET on kick",
    )
    .await;
}

#[tokio::test]
async fn a_ban_closes_refuses_the_upgrade_and_history_until_lifted_or_over() {
    let c = client();
    let (room, [(owner, to), (m, tm), (user, tu)]) =
        c.room_with_users("ban", ["owner", "mod", "user"]).await;
    owned_room_with_moderator(&c, &room, (&owner, &to), &m).await;
    let mut wu = c.ws_ready(&room, &tu).await;
    let ban_path = format!("/rooms/{room}/bans/{user}");

    // Bad `until`s are refused, and nothing happens.
    for body in [
        json!({"until": now_ms() - 1000}),
        json!({"until": "soon"}),
        json!({"for": 5}),
    ] {
        expect_json_error(
            act(&c, Method::PUT, &ban_path, &tm, Some(body.clone())).await,
            422,
            &body.to_string(),
        )
        .await;
    }
    wu.roundtrip_ping().await;

    act_ok(&c, Method::PUT, &ban_path, &tm, None).await;
    wu.expect_policy_close("banned").await;
    c.expect_upgrade_refused(&room, &tu, &[], 403, "a banned user's upgrade")
        .await;
    // The room's info tells the banned user why.
    assert_eq!(
        c.get_ok(&format!("/rooms/{room}"), &tu).await["banned"],
        true
    );
    expect_json_error(
        c.get_bearer(&format!("/rooms/{room}/messages"), &tu).await,
        403,
        "a banned user's paging",
    )
    .await;
    // Others are unaffected.
    c.get_ok(&format!("/rooms/{room}/messages"), &tm).await;

    act_ok(&c, Method::DELETE, &ban_path, &tm, None).await;
    expect_json_error(
        act(&c, Method::DELETE, &ban_path, &tm, None).await,
        404,
        "lifting a lifted ban",
    )
    .await;
    c.ws_ready(&room, &tu).await.close().await;

    // A ban with `until` ends by itself.
    let until = now_ms() + 3000;
    let v = act_ok(
        &c,
        Method::PUT,
        &ban_path,
        &to,
        Some(json!({"until": until})),
    )
    .await;
    assert_eq!(v["until"], until);
    assert_eq!(
        c.get_ok(&format!("/rooms/{room}"), &tu).await["banned"],
        json!({ "until": until })
    );
    c.expect_upgrade_refused(&room, &tu, &[], 403, "banned until")
        .await;
    tokio::time::sleep(Duration::from_millis(
        (until - now_ms()).max(0) as u64 + 500,
    ))
    .await;
    c.ws_ready(&room, &tu).await.close().await;

    let actions = audit_actions(&c, &room, &to).await;
    assert_eq!(
        actions,
        ["ban", "unban", "ban", "moderator_added"],
        "newest first"
    );
}

#[tokio::test]
async fn bans_work_in_private_rooms_too() {
    let c = client();
    let (room, [(_owner, to), (member, tm)]) =
        c.room_with_users("privban", ["owner", "member"]).await;
    c.private_room_with_member(&to, &room, &member).await;
    let mut wm = c.ws_ready(&room, &tm).await;
    act_ok(
        &c,
        Method::PUT,
        &format!("/rooms/{room}/bans/{member}"),
        &to,
        None,
    )
    .await;
    wm.expect_policy_close("banned from a private room").await;
    c.expect_upgrade_refused(&room, &tm, &[], 403, "banned member's upgrade")
        .await;
    expect_json_error(
        c.get_bearer(&format!("/rooms/{room}/messages"), &tm).await,
        403,
        "banned member's paging",
    )
    .await;
}

#[tokio::test]
async fn a_muted_user_reads_but_cannot_post_edit_or_react() {
    let c = client();
    let (room, [(owner, to), (user, tu)]) = c.room_with_users("mute", ["owner", "user"]).await;
    owned_public_room(&c, &to, &room, &owner).await;
    let mut wo = c.ws_ready(&room, &to).await;
    let mut wu = c.ws_ready(&room, &tu).await;
    wu.send_message(&room, "before the mute").await;
    let id = wu.next_message_with("before the mute").await["id"]
        .as_i64()
        .unwrap();
    wo.next_message_with("before the mute").await;

    act_ok(
        &c,
        Method::PUT,
        &format!("/rooms/{room}/mutes/{user}"),
        &to,
        None,
    )
    .await;
    assert_eq!(
        c.get_ok(&format!("/rooms/{room}"), &tu).await["muted"],
        true
    );
    let muted = |client_id: Option<&str>| {
        let mut e = json!({"type": "error", "code": "muted", "detail": "you are muted in this room", "until": null});
        if let Some(client_id) = client_id {
            e["client_id"] = json!(client_id);
        }
        e
    };
    for (frame, want) in [
        (
            json!({"content": "muted words", "room_id": room, "client_id": "m-1"}),
            muted(Some("m-1")),
        ),
        (
            json!({"content": "muted words", "room_id": room}),
            muted(None),
        ),
        (
            json!({"type": "edit", "id": id, "content": "sneaky"}),
            muted(None),
        ),
        (
            json!({"type": "edit", "id": id, "content": "sneaky", "client_id": "e-1"}),
            muted(Some("e-1")),
        ),
        (
            json!({"type": "react", "id": id, "emoji": "👍"}),
            muted(None),
        ),
    ] {
        wu.send_json(&frame).await;
        let e = wu.next_of_type("error").await;
        assert_eq!(e, want, "{frame}");
    }
    wo.expect_none_of_types(&["message", "edited", "reactions"], QUIET)
        .await;
    // Still reading.
    wo.send_message(&room, "owner speaks").await;
    wu.next_message_with("owner speaks").await;

    act_ok(
        &c,
        Method::DELETE,
        &format!("/rooms/{room}/mutes/{user}"),
        &to,
        None,
    )
    .await;
    wu.send_message(&room, "free again").await;
    wo.next_message_with("free again").await;
    assert_eq!(audit_actions(&c, &room, &to).await, ["unmute", "mute"]);
}

#[tokio::test]
async fn slow_mode_spaces_a_members_posts_but_not_the_owners() {
    let c = client();
    let (room, [(owner, to), (_user, tu)]) = c.room_with_users("slow", ["owner", "user"]).await;
    owned_public_room(&c, &to, &room, &owner).await;
    let path = format!("/rooms/{room}");
    for body in [
        json!({"slow_mode_secs": -1}),
        json!({"slow_mode_secs": 100000}),
        json!({"slow_mode_secs": "5"}),
        json!({}),
    ] {
        expect_json_error(
            act(&c, Method::PATCH, &path, &to, Some(body.clone())).await,
            422,
            &body.to_string(),
        )
        .await;
    }
    expect_json_error(
        act(
            &c,
            Method::PATCH,
            &path,
            &tu,
            Some(json!({"slow_mode_secs": 5})),
        )
        .await,
        403,
        "a member sets slow mode",
    )
    .await;
    let v = act_ok(
        &c,
        Method::PATCH,
        &path,
        &to,
        Some(json!({"slow_mode_secs": 3})),
    )
    .await;
    assert_eq!(v["slow_mode_secs"], 3);
    assert_eq!(c.get_ok(&path, &tu).await["slow_mode_secs"], 3);

    let mut wu = c.ws_ready(&room, &tu).await;
    let mut wo = c.ws_ready(&room, &to).await;
    wu.send_message(&room, "one").await;
    wu.next_message_with("one").await;
    wu.send_json(&json!({"content": "two too soon", "room_id": room, "client_id": "s-2"}))
        .await;
    let e = wu.next_of_type("error").await;
    let wait = e["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(wait > 0 && wait <= 3000, "{e}");
    assert_eq!(
        e,
        json!({"type": "error", "code": "slow_mode", "detail": "slow mode: wait before sending another message",
            "retry_after_ms": wait, "client_id": "s-2"})
    );
    // The owner is not slowed.
    for text in ["o1", "o2", "o3"] {
        wo.send_message(&room, text).await;
        wo.next_message_with(text).await;
    }
    tokio::time::sleep(Duration::from_millis(wait + 200)).await;
    wu.send_message(&room, "two in time").await;
    wu.next_message_with("two in time").await;

    act_ok(
        &c,
        Method::PATCH,
        &path,
        &to,
        Some(json!({"slow_mode_secs": 0})),
    )
    .await;
    wu.send_message(&room, "three").await;
    wu.next_message_with("three").await;
    wu.send_message(&room, "four").await;
    wu.next_message_with("four").await;
    let v = c.get_ok(&format!("/rooms/{room}/audit"), &to).await;
    assert_eq!(v["entries"][0]["action"], "slow_mode");
    assert_eq!(v["entries"][0]["slow_mode_secs"], 0);
    assert_eq!(v["entries"][1]["slow_mode_secs"], 3);
}

#[tokio::test]
async fn moderators_delete_members_messages_not_the_owners_and_the_audit_says_so() {
    let c = client();
    let (room, [(owner, to), (m, tm), (user, tu)]) =
        c.room_with_users("moddel", ["owner", "mod", "user"]).await;
    owned_room_with_moderator(&c, &room, (&owner, &to), &m).await;
    let mut wo = c.ws_ready(&room, &to).await;
    let mut wm = c.ws_ready(&room, &tm).await;
    let mut wu = c.ws_ready(&room, &tu).await;
    wu.send_message(&room, "troll").await;
    let troll = wu.next_message_with("troll").await["id"].as_i64().unwrap();
    wo.send_message(&room, "owner's word").await;
    let owners = wo.next_message_with("owner's word").await["id"]
        .as_i64()
        .unwrap();
    wm.next_message_with("owner's word").await;

    wm.send_json(&json!({"type": "delete", "id": owners})).await;
    assert_eq!(wm.next_of_type("error").await["detail"], "not your message");
    wu.send_json(&json!({"type": "delete", "id": owners})).await;
    assert_eq!(wu.next_of_type("error").await["detail"], "not your message");

    wm.send_json(&json!({"type": "delete", "id": troll})).await;
    for ws in [&mut wo, &mut wm, &mut wu] {
        let d = ws.next_of_type("deleted").await;
        assert_eq!(d["id"], troll);
        assert_eq!(d["by"], m.as_str());
    }
    let v = c.get_ok(&format!("/rooms/{room}/audit"), &tm).await;
    let entry = &v["entries"][0];
    assert_eq!(entry["action"], "delete", "{v}");
    assert_eq!(entry["actor"], m.as_str());
    assert_eq!(entry["target"], user.as_str());
    assert_eq!(entry["message_id"], troll);
    assert!(entry["ts"].as_i64().unwrap() > 0);
    assert_eq!(v["entries"][1]["action"], "moderator_added");

    // The audit log: owner and moderators only; paged.
    expect_json_error(
        c.get_bearer(&format!("/rooms/{room}/audit"), &tu).await,
        403,
        "a member reads the audit",
    )
    .await;
    let page = c.get_ok(&format!("/rooms/{room}/audit?limit=1"), &to).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page["has_more"], true);
    let older = page["entries"][0]["id"].as_i64().unwrap();
    let rest = c
        .get_ok(&format!("/rooms/{room}/audit?before={older}"), &to)
        .await;
    assert_eq!(rest["entries"][0]["action"], "moderator_added");
    assert_eq!(rest["has_more"], false);
    for bad in ["?limit=0", "?limit=101", "?before=-1", "?before=x"] {
        expect_json_error(
            c.get_bearer(&format!("/rooms/{room}/audit{bad}"), &to)
                .await,
            422,
            bad,
        )
        .await;
    }
}
