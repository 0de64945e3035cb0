//! `GET /me/rooms` and read markers: private rooms, DMs and joined public rooms listed newest
//! activity first with their newest message, unread count and marker; markers moving forward
//! only, broadcast as read receipts, refused past the newest message and rate limited; unread
//! exact after a burst from several senders and a reconnect, capped at 999; pages with a
//! cursor; leaving a public room.
//!
//! Rooms write the list's data behind their messages (at most every quarter second), so tests
//! poll the list until it shows what they expect.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::dms::{dm_room, SMALL_LIMITS};
use crate::harness::*;

/// How long the list may take to follow a room (its write-behind, on a busy test machine).
const LIST_CATCH_UP: Duration = Duration::from_secs(10);

async fn my_rooms(c: &Client, token: &str) -> Value {
    c.get_ok("/me/rooms", token).await
}

/// The list's first page once `ready` holds for it; panics with the last page after
/// [`LIST_CATCH_UP`].
async fn rooms_once(c: &Client, token: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let list = my_rooms(c, token).await;
        if ready(&list) {
            return list;
        }
        assert!(
            started.elapsed() < LIST_CATCH_UP,
            "{what}: the list did not catch up: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The entry of `room` in a page, if listed.
fn entry<'a>(list: &'a Value, room: &str) -> Option<&'a Value> {
    list["rooms"]
        .as_array()
        .expect("a rooms array")
        .iter()
        .find(|r| r["room_id"] == room)
}

fn room_ids(list: &Value) -> Vec<String> {
    list["rooms"]
        .as_array()
        .expect("a rooms array")
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_string())
        .collect()
}

/// The unread count of `room` in the list, once its newest message is `last_id`.
async fn unread_once(c: &Client, token: &str, room: &str, last_id: i64, unread: i64) -> Value {
    let list = rooms_once(c, token, "unread", |l| {
        entry(l, room).is_some_and(|r| r["last_message"]["id"] == last_id && r["unread"] == unread)
    })
    .await;
    entry(&list, room).unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_rooms_dms_and_joined_public_rooms_are_listed_newest_activity_first() {
    let c = client();
    let [(me, tm), (friend, tf)] = c.new_users("mine", 2).await.try_into().expect("two users");
    assert_eq!(
        my_rooms(&c, &tm).await,
        json!({"rooms": [], "next_cursor": null})
    );
    let private = unique_name("mypriv");
    assert_eq!(c.create_private_room(&tm, &private).await.status(), 201);
    let public = unique_name("mypub");
    c.ws_ready(&public, &tm).await.close().await;
    let dm = dm_room(&c, &tf, &me).await;

    let list = rooms_once(&c, &tm, "three rooms", |l| room_ids(l).len() == 3).await;
    for (room, kind) in [(&private, "private"), (&public, "public"), (&dm, "dm")] {
        let r = entry(&list, room).unwrap_or_else(|| panic!("{room} listed: {list}"));
        assert_eq!(r["kind"], kind, "{r}");
        assert_eq!(r["last_message"], Value::Null, "{r}");
        assert_eq!(
            (r["unread"].as_i64(), r["last_read_id"].as_i64()),
            (Some(0), Some(0))
        );
    }
    assert_eq!(entry(&list, &dm).unwrap()["with"], friend.as_str());

    // My long message in the public room, then my friend's in the DM.
    let long: String = "0123456789".repeat(15);
    let mut wp = c.ws(&public, &tm).await;
    wp.history_and_presence().await;
    wp.send_message(&public, &long).await;
    let mine = wp.next_message().await["id"].as_i64().unwrap();
    wp.close().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut wf = c.ws(&dm, &tf).await;
    wf.history_and_presence().await;
    wf.send_message(&dm, "hello <b>you</b>").await;
    let theirs = wf.next_message().await;
    wf.close().await;

    let list = rooms_once(&c, &tm, "after two messages", |l| {
        room_ids(l).first() == Some(&dm)
            && entry(l, &public).is_some_and(|r| r["last_message"]["id"] == mine)
    })
    .await;
    assert_eq!(
        room_ids(&list),
        vec![dm.clone(), public.clone(), private.clone()]
    );
    assert_eq!(
        entry(&list, &dm).unwrap()["last_message"],
        json!({"id": theirs["id"], "username": friend, "content": "hello <b>you</b>", "ts": theirs["ts"]})
    );
    assert_eq!(entry(&list, &dm).unwrap()["unread"], 1);
    let p = entry(&list, &public).unwrap();
    assert_eq!(p["last_message"]["content"], long[..100], "100 characters");
    assert_eq!(p["last_message"]["username"], me.as_str());
    assert_eq!(
        (p["unread"].as_i64(), p["last_read_id"].as_i64()),
        (Some(0), Some(mine)),
        "sending a message marks it read for its author: {p}"
    );
    // My friend's list has the DM only, read up to their own message.
    let theirs_list = rooms_once(&c, &tf, "friend", |l| {
        entry(l, &dm).is_some_and(|r| r["last_read_id"] == theirs["id"])
    })
    .await;
    assert_eq!(room_ids(&theirs_list), vec![dm.clone()]);

    let resp = c.get("/me/rooms").send().await.unwrap();
    expect_json_error(resp, 401, "no badge").await;
    let resp = c
        .request(Method::POST, "/me/rooms")
        .bearer_auth(&tm)
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 405, "POST /me/rooms").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_markers_move_forward_only_and_are_broadcast_as_receipts() {
    let c = client();
    let (room, [(reader, tr, mut wr), (writer, tw, mut ww)]) =
        c.room_with_members("reads", ["reader", "writer"]).await;
    let ids = ww.send_n(&room, "news", 3).await;
    for _ in 0..3 {
        wr.next_message().await;
    }
    wr.send_json(&json!({"type": "read", "id": ids[1]})).await;
    let receipt = ww.next_of_type("read").await;
    assert_eq!(
        receipt,
        json!({"type": "read", "username": reader, "id": ids[1]})
    );
    wr.expect_none_of_types(&["read", "error"], QUIET).await;

    // Back or the same: nothing changes, nobody is told.
    for id in [ids[0], ids[1]] {
        wr.send_json(&json!({"type": "read", "id": id})).await;
    }
    ww.expect_none_of_types(&["read"], QUIET).await;
    // Past the newest message, or not a positive id: an error frame, the socket keeps working.
    for bad in [
        json!({"type": "read", "id": ids[2] + 1}),
        json!({"type": "read", "id": 0}),
        json!({"type": "read", "id": "2"}),
        json!({"type": "read"}),
    ] {
        wr.send_json(&bad).await;
        let err = wr.next_of_type("error").await;
        assert!(err["detail"].is_string(), "{bad}: {err}");
    }
    ww.expect_none_of_types(&["read"], QUIET).await;

    // Durable: the list shows it, and a new socket cannot move it back either.
    let r = unread_once(&c, &tr, &room, ids[2], 1).await;
    assert_eq!(r["last_read_id"], ids[1]);
    wr.close().await;
    let mut again = c.ws(&room, &tr).await;
    again.history_and_presence().await;
    again
        .send_json(&json!({"type": "read", "id": ids[0]}))
        .await;
    ww.expect_none_of_types(&["read"], QUIET).await;
    again
        .send_json(&json!({"type": "read", "id": ids[2]}))
        .await;
    assert_eq!(
        ww.next_of_type("read").await,
        json!({"type": "read", "username": reader, "id": ids[2]})
    );
    unread_once(&c, &tr, &room, ids[2], 0).await;
    let _ = writer;
    again.close().await;
    ww.close().await;
    let _ = tw;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_is_exact_after_a_burst_from_several_senders_and_a_reconnect() {
    let c = client();
    let (room, users) = c.room_with_users("burst", ["rd", "s1", "s2", "s3"]).await;
    let [(_, tr), senders @ ..] = users;
    // The reader joins (connects once) and goes away.
    c.ws_ready(&room, &tr).await.close().await;
    let mut sockets = Vec::new();
    for (_, token) in &senders {
        let mut ws = c.ws(&room, token).await;
        ws.history_and_presence().await;
        sockets.push(ws);
    }
    let per_sender = 40;
    let prefixes: Vec<String> = (0..sockets.len()).map(|i| format!("from{i}")).collect();
    let ids = futures_util::future::join_all(
        sockets
            .iter_mut()
            .zip(&prefixes)
            .map(|(ws, prefix)| ws.send_n(&room, prefix, per_sender)),
    )
    .await;
    let newest = ids.iter().flatten().copied().max().unwrap();
    let total = (per_sender * senders.len()) as i64;
    unread_once(&c, &tr, &room, newest, total).await;

    // Reconnecting changes nothing; reading up to a point leaves exactly the rest.
    let mut wr = c.ws_since(&room, &tr, newest - 10).await;
    let (history, _) = wr.history_and_presence().await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 10);
    unread_once(&c, &tr, &room, newest, total).await;
    wr.send_json(&json!({"type": "read", "id": newest - 7}))
        .await;
    unread_once(&c, &tr, &room, newest, 7).await;
    // More arrive; then the reader's own message marks everything before it read.
    sockets[0].send_n(&room, "more", 5).await;
    unread_once(&c, &tr, &room, newest + 5, 12).await;
    wr.send_message(&room, "caught up").await;
    let mine = wr.next_message_with("caught up").await["id"]
        .as_i64()
        .unwrap();
    let r = unread_once(&c, &tr, &room, mine, 0).await;
    assert_eq!(r["last_read_id"], mine);
    wr.close().await;
    for ws in sockets {
        ws.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_room_joined_late_counts_only_what_came_after_the_join() {
    let c = client();
    let (room, [(_, tr), (_, tw)]) = c.room_with_users("late", ["rd", "wr"]).await;
    let mut ww = c.ws(&room, &tw).await;
    ww.history_and_presence().await;
    let before = ww.send_n(&room, "before", 5).await;
    let newest = *before.last().unwrap();
    // The reader's first connect: the room joins their list read up to its newest message.
    c.ws_ready(&room, &tr).await.close().await;
    let r = unread_once(&c, &tr, &room, newest, 0).await;
    assert_eq!(r["last_read_id"], newest, "{r}");
    // What comes after the join is unread.
    let after = ww.send_n(&room, "after", 2).await;
    let r = unread_once(&c, &tr, &room, *after.last().unwrap(), 2).await;
    assert_eq!(r["last_read_id"], newest, "{r}");
    // Leaving and coming back: read up to the room's newest message again.
    let resp = c
        .request(Method::DELETE, &format!("/me/rooms/{room}"))
        .bearer_auth(&tr)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    rooms_once(&c, &tr, "left", |l| entry(l, &room).is_none()).await;
    c.ws_ready(&room, &tr).await.close().await;
    unread_once(&c, &tr, &room, *after.last().unwrap(), 0).await;
    ww.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_stop_at_999() {
    let c = client();
    let (room, [(_, tr), (_, tw)]) = c.room_with_users("many", ["rd", "wr"]).await;
    c.ws_ready(&room, &tr).await.close().await;
    let mut ww = c.ws(&room, &tw).await;
    ww.history_and_presence().await;
    let ids = ww.send_n(&room, "m", 1001).await;
    let newest = *ids.last().unwrap();
    unread_once(&c, &tr, &room, newest, 999).await;
    // One read frame later the count is exact again.
    let mut wr = c.ws(&room, &tr).await;
    wr.history_and_presence().await;
    wr.send_json(&json!({"type": "read", "id": newest - 998}))
        .await;
    unread_once(&c, &tr, &room, newest, 998).await;
    wr.close().await;
    ww.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_come_in_pages_of_fifty_with_an_opaque_cursor() {
    let c = client();
    let (_, token) = c.new_user("pages").await;
    let rooms: Vec<String> = (0..60).map(|_| unique_name("page")).collect();
    let created = bounded_join(rooms.clone(), 6, |room| {
        let (c, token) = (c.clone(), token.clone());
        async move { c.create_private_room(&token, &room).await.status() }
    })
    .await;
    assert!(created.iter().all(|s| *s == 201), "{created:?}");
    // A message moves the oldest room to the top.
    let oldest = &rooms[0];
    let mut ws = c.ws(oldest, &token).await;
    ws.history_and_presence().await;
    ws.send_message(oldest, "bump").await;
    let bumped = ws.next_message().await["id"].as_i64().unwrap();
    ws.close().await;

    let first = rooms_once(&c, &token, "bumped", |l| {
        l["rooms"][0]["room_id"] == oldest.as_str() && l["rooms"][0]["last_message"]["id"] == bumped
    })
    .await;
    assert_eq!(first["rooms"].as_array().unwrap().len(), 50);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next_cursor")
        .to_string();
    let second = c
        .get_ok(&format!("/me/rooms?cursor={cursor}"), &token)
        .await;
    assert_eq!(second["rooms"].as_array().unwrap().len(), 10, "{second}");
    assert_eq!(second["next_cursor"], Value::Null);
    let mut all = room_ids(&first);
    all.extend(room_ids(&second));
    let mut expected = rooms.clone();
    expected.sort();
    let mut got = all.clone();
    got.sort();
    got.dedup();
    assert_eq!(got, expected, "every room exactly once over the pages");

    for bad in ["zz", "abc", "3a6c6f626279", &"61".repeat(200), "%00"] {
        let resp = c
            .get_bearer(&format!("/me/rooms?cursor={bad}"), &token)
            .await;
        expect_json_error(resp, 422, &format!("cursor {bad}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_a_public_room_takes_it_off_the_list_until_the_next_connect() {
    let c = client();
    let [(me, tm), (friend, tf)] = c.new_users("leave", 2).await.try_into().expect("two users");
    let public = unique_name("leavepub");
    c.ws_ready(&public, &tm).await.close().await;
    rooms_once(&c, &tm, "joined", |l| entry(l, &public).is_some()).await;

    let path = format!("/me/rooms/{public}");
    let (status, v) = status_json(
        c.request(Method::DELETE, &path)
            .bearer_auth(&tm)
            .send()
            .await
            .unwrap(),
        "leave",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"room_id": public, "left": true}));
    assert!(entry(&my_rooms(&c, &tm).await, &public).is_none());
    let leave = |room: String, token: String| {
        let c = c.clone();
        async move {
            c.request(Method::DELETE, &format!("/me/rooms/{room}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
        }
    };
    expect_json_error(
        leave(public.clone(), tm.clone()).await,
        404,
        "leaving twice",
    )
    .await;
    expect_json_error(leave(public.clone(), tf.clone()).await, 404, "never joined").await;

    // Private rooms and DMs are not left this way.
    let private = unique_name("leavepriv");
    assert_eq!(c.create_private_room(&tm, &private).await.status(), 201);
    expect_json_error(
        leave(private.clone(), tm.clone()).await,
        403,
        "a private room",
    )
    .await;
    let dm = dm_room(&c, &tm, &friend).await;
    expect_json_error(leave(dm, tm.clone()).await, 403, "a DM").await;
    expect_json_error(leave("bad!room".into(), tm.clone()).await, 422, "a bad id").await;
    let resp = c.request(Method::DELETE, &path).send().await.unwrap();
    expect_json_error(resp, 401, "no badge").await;

    // Connecting again joins again.
    c.ws_ready(&public, &tm).await.close().await;
    rooms_once(&c, &tm, "rejoined", |l| entry(l, &public).is_some()).await;
    let _ = me;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_or_deleting_the_newest_message_updates_the_list() {
    let c = client();
    let (room, [(_, tr, wr), (_, _tw, mut ww)]) =
        c.room_with_members("rewrite", ["rd", "wr"]).await;
    ww.send_message(&room, "first draft").await;
    let id = ww.next_message().await["id"].as_i64().unwrap();
    unread_once(&c, &tr, &room, id, 1).await;
    ww.send_json(&json!({"type": "edit", "id": id, "content": "final"}))
        .await;
    ww.next_of_type("edited").await;
    rooms_once(&c, &tr, "edited", |l| {
        entry(l, &room).is_some_and(|r| r["last_message"]["content"] == "final")
    })
    .await;
    ww.send_json(&json!({"type": "delete", "id": id})).await;
    ww.next_of_type("deleted").await;
    let list = rooms_once(&c, &tr, "deleted", |l| {
        entry(l, &room).is_some_and(|r| r["last_message"]["deleted"] == true)
    })
    .await;
    let r = entry(&list, &room).unwrap();
    assert_eq!(
        r["last_message"]["content"],
        Value::Null,
        "no content kept: {r}"
    );
    wr.close().await;
    ww.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_frames_share_the_message_rate_limit() {
    let c = SMALL_LIMITS.client();
    let (room, [(_, _tr, mut wr), (_, _tw, mut ww)]) =
        c.room_with_members("readrate", ["rd", "wr"]).await;
    ww.send_message(&room, "one").await;
    let id = wr.next_message().await["id"].as_i64().unwrap();
    // The burst (5) less the message the writer's socket did not spend: the reader's sixth
    // frame within a second is refused.
    let mut refused = 0;
    for _ in 0..8 {
        wr.send_json(&json!({"type": "read", "id": id})).await;
    }
    while let Ok(err) = wr.try_next_of_types(&["error"], QUIET).await {
        assert_eq!(err["detail"], "rate limited", "{err}");
        refused += 1;
    }
    assert_eq!(refused, 3, "8 read frames against a burst of 5");
    // Only the first moved the marker: one receipt.
    ww.next_of_type("read").await;
    ww.expect_none_of_types(&["read"], QUIET).await;
    wr.close().await;
    ww.close().await;
}
