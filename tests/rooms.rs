//! End-to-end tests of rooms: history and presence on connect, catch-up with `since`, paging,
//! online members, private rooms, rate limits, socket caps, heartbeat, the history cap,
//! presence batching. Against `wrangler dev` (see tests/common).

mod common;
#[path = "common/ext.rs"]
mod ext;

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use ext::*;
use reqwest::Method;
use serde_json::{json, Value};

/// Quiet period in which a frame that should not come would have come.
const QUIET: Duration = Duration::from_millis(700);

/// A server with the default message rate limit (10/s, burst 20) and small socket caps
/// (2 per user per room, 3 per room); signups relaxed since every client is 127.0.0.1.
fn limits_server() -> &'static Server {
    static LIMITS: OnceLock<Server> = OnceLock::new();
    LIMITS.get_or_init(|| {
        Server::start(
            ServerOptions::default()
                .var("SIGNUP_MAX_PER_IP", "1000000")
                .var("LOGIN_MAX_FAILURES_PER_IP", "1000000")
                .var("MAX_SOCKETS_PER_USER", "2")
                .var("MAX_SOCKETS_PER_ROOM", "3"),
        )
    })
}

async fn limits_client() -> Client {
    tokio::task::spawn_blocking(|| limits_server().client())
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// History, presence, join, leave
// ---------------------------------------------------------------------------------------------

/// Waits until `ws` is told that `user` left: a `leave` frame, or a `presence_changes` listing
/// them under `left` (a leave soon after another announcement is batched). Returns that frame.
async fn next_leave_of(ws: &mut WsClient, user: &str) -> Value {
    loop {
        let v = ws.next_of_types(&["leave", "presence_changes"]).await;
        let listed = if v["type"] == "leave" {
            v["username"] == user
        } else {
            v["left"]
                .as_array()
                .is_some_and(|left| left.iter().any(|u| u == user))
        };
        if listed {
            return v;
        }
    }
}

/// Who a socket believes is online, kept as the browser client does: the `presence` frame on
/// connect, then `join`/`leave` and `presence_changes` applied as set additions and removals.
/// Also logs every announced name, to check that nobody is missed or wrongly announced.
struct PresenceView {
    online: BTreeSet<String>,
    /// Names announced as joined / left, from single frames and batches alike.
    joined: Vec<String>,
    left: Vec<String>,
    /// The type of each presence announcement, in arrival order.
    frames: Vec<String>,
}

impl PresenceView {
    fn new(presence: &Value) -> Self {
        assert_eq!(presence["type"], "presence", "{presence}");
        PresenceView {
            online: names_in(&presence["users"]).into_iter().collect(),
            joined: Vec::new(),
            left: Vec::new(),
            frames: Vec::new(),
        }
    }

    /// Forgets what was announced so far (keeps who is online).
    fn clear_log(&mut self) {
        self.joined.clear();
        self.left.clear();
        self.frames.clear();
    }

    fn batches(&self) -> usize {
        self.frames
            .iter()
            .filter(|t| *t == "presence_changes")
            .count()
    }

    fn apply(&mut self, v: &Value) {
        let (joined, left) = match v["type"].as_str() {
            Some("join") => (vec![v["username"].as_str().unwrap().to_string()], vec![]),
            Some("leave") => (vec![], vec![v["username"].as_str().unwrap().to_string()]),
            Some("presence_changes") => {
                let (joined, left) = (names_in(&v["joined"]), names_in(&v["left"]));
                assert!(
                    joined.iter().all(|j| !left.contains(j)),
                    "a name in both lists: {v}"
                );
                (joined, left)
            }
            _ => return,
        };
        self.frames.push(v["type"].as_str().unwrap().to_string());
        for name in joined {
            self.online.insert(name.clone());
            self.joined.push(name);
        }
        for name in left {
            self.online.remove(&name);
            self.left.push(name);
        }
    }

    /// Reads presence announcements from `ws` until `done` holds; fails after `wait`.
    async fn read_until(
        &mut self,
        ws: &mut WsClient,
        wait: Duration,
        done: impl Fn(&Self) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + wait;
        while !done(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match ws
                .try_next_of_types(&["join", "leave", "presence_changes"], left)
                .await
            {
                Ok(v) => self.apply(&v),
                Err(why) => panic!(
                    "presence never converged ({why}): online {:?}, announced joined {:?} left {:?}; seen: {}",
                    self.online,
                    self.joined,
                    self.left,
                    ws.seen_summary()
                ),
            }
        }
    }
}

fn names_in(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|u| {
            u.as_str()
                .unwrap_or_else(|| panic!("not a name: {u}"))
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_sends_history_then_presence_and_others_see_join_and_leave() {
    let c = client();
    let room = unique_name("hist");
    let (alice, ta) = c.new_user("alice").await;
    let (bob, tb) = c.new_user("bob").await;

    let mut a = c.ws(&room, &ta).await;
    let (h, p) = history_and_presence(&mut a).await;
    assert_eq!(h["messages"], json!([]), "new room: {h}");
    assert_eq!(h["truncated"], false, "{h}");
    assert_eq!(p["users"], json!([alice]), "presence includes self: {p}");

    let sent = send_n(&mut a, &room, "before bob", 3).await;

    let mut b = c.ws(&room, &tb).await;
    let (h, p) = history_and_presence(&mut b).await;
    assert_eq!(ids(&h["messages"]), sent, "history oldest first: {h}");
    assert_eq!(h["truncated"], false, "{h}");
    for (i, m) in h["messages"].as_array().unwrap().iter().enumerate() {
        let keys: Vec<&str> = m.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        for k in ["id", "room_id", "username", "content", "ts"] {
            assert!(keys.contains(&k), "history message lacks {k}: {m}");
        }
        assert_eq!(m["room_id"], room.as_str());
        assert_eq!(m["username"], alice.as_str());
        assert_eq!(m["content"], format!("before bob {i}"));
        assert!(
            m["ts"]
                .as_i64()
                .is_some_and(|ts| (ts - now_millis()).abs() < 120_000),
            "{m}"
        );
    }
    let mut expected = vec![alice.clone(), bob.clone()];
    expected.sort();
    assert_eq!(p["users"], json!(expected), "presence sorted: {p}");

    let join = a.next_of_type("join").await;
    assert_eq!(join["username"], bob.as_str(), "{join}");
    b.expect_none_of_types(&["join"], QUIET).await; // no join about oneself

    b.close().await;
    let leave = a.next_of_type("leave").await;
    assert_eq!(leave, json!({"type": "leave", "username": bob}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_on_connect_is_the_last_50_oldest_first_with_truncated() {
    let c = client();
    let room = unique_name("hist50");
    let (_, t) = c.new_user("hist50").await;
    let mut a = c.ws(&room, &t).await;
    let sent = send_n(&mut a, &room, "m", 50).await;
    let mut b = c.ws(&room, &t).await;
    let (h, _) = history_and_presence(&mut b).await;
    assert_eq!(ids(&h["messages"]), sent, "exactly 50 stored, all sent");
    assert_eq!(
        h["truncated"], false,
        "50 messages, none older: {}",
        h["truncated"]
    );

    let more = send_n(&mut a, &room, "n", 5).await;
    let mut b2 = c.ws(&room, &t).await;
    let (h, _) = history_and_presence(&mut b2).await;
    let mut all = sent.clone();
    all.extend(&more);
    assert_eq!(ids(&h["messages"]), all[all.len() - 50..].to_vec());
    assert_eq!(h["truncated"], true, "55 stored, 50 sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_of_one_user_are_one_presence_one_join_and_no_leave_until_both_close() {
    let c = client();
    let room = unique_name("tabs");
    let (_, ta) = c.new_user("watcher").await;
    let (bob, tb) = c.new_user("tabby").await;
    let mut a = c.ws(&room, &ta).await;
    a.roundtrip_ping().await;

    let mut tab1 = c.ws(&room, &tb).await;
    history_and_presence(&mut tab1).await;
    assert_eq!(a.next_of_type("join").await["username"], bob.as_str());

    let mut tab2 = c.ws(&room, &tb).await;
    let (_, p) = history_and_presence(&mut tab2).await;
    let users: Vec<&str> = p["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(
        users.iter().filter(|u| **u == bob).count(),
        1,
        "one presence entry for two tabs: {p}"
    );
    a.expect_none_of_types(&["join"], QUIET).await;
    let members = get_ok(&c, &format!("/rooms/{room}/members"), &ta).await;
    assert_eq!(
        members["users"].as_array().unwrap().len(),
        2,
        "members: {members}"
    );

    tab1.close().await;
    a.expect_none_of_types(&["leave"], QUIET * 2).await;
    tab2.roundtrip_ping().await; // the other tab is unaffected
    tab2.close().await;
    let leave = a.next_of_type("leave").await;
    assert_eq!(leave["username"], bob.as_str());
}

// ---------------------------------------------------------------------------------------------
// since
// ---------------------------------------------------------------------------------------------

fn since_url(c: &Client, room: &str, token: &str, since: &str) -> String {
    format!("{}&since={since}", c.ws_url(room, token))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_returns_exactly_the_messages_after_the_id() {
    let c = client();
    let room = unique_name("since");
    let (_, t) = c.new_user("since").await;
    let mut a = c.ws(&room, &t).await;
    let sent = send_n(&mut a, &room, "s", 60).await;

    for (since, want) in [
        (sent[2], sent[3..].to_vec()),
        (0, sent.clone()), // beyond the 50 of a plain connect
        (sent[59], vec![]),
        (sent[59] + 1000, vec![]),
    ] {
        let mut b = WsClient::connect(&since_url(&c, &room, &t, &since.to_string()))
            .await
            .unwrap();
        let (h, _) = history_and_presence(&mut b).await;
        assert_eq!(ids(&h["messages"]), want, "since={since}");
        assert_eq!(h["truncated"], false, "since={since}");
        b.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_catch_up_is_capped_at_the_newest_1000_with_truncated() {
    let c = client();
    let room = unique_name("since1k");
    let (_, t) = c.new_user("since1k").await;
    let mut a = c.ws(&room, &t).await;
    let mut sent = Vec::new();
    for chunk in 0..7 {
        sent.extend(send_n(&mut a, &room, &format!("c{chunk}"), 150).await);
    }
    assert_eq!(sent.len(), 1050);
    let mut b = WsClient::connect(&since_url(&c, &room, &t, "0"))
        .await
        .unwrap();
    let (h, _) = history_and_presence(&mut b).await;
    assert_eq!(ids(&h["messages"]), sent[50..].to_vec(), "newest 1000");
    assert_eq!(h["truncated"], true);
    // Exactly 1000 missed: everything, not truncated.
    let mut b = WsClient::connect(&since_url(&c, &room, &t, &sent[49].to_string()))
        .await
        .unwrap();
    let (h, _) = history_and_presence(&mut b).await;
    assert_eq!(ids(&h["messages"]).len(), 1000);
    assert_eq!(h["truncated"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_that_is_not_a_non_negative_integer_is_refused_with_422() {
    let c = client();
    let room = unique_name("sincebad");
    let (_, t) = c.new_user("sincebad").await;
    for bad in ["abc", "-1", "1.5", "", "99999999999999999999999"] {
        let resp = c
            .upgrade_attempt(&format!("/ws/{room}?token={}&since={bad}", urlencode(&t)))
            .await;
        expect_json_error(resp, 422, &format!("since={bad:?}")).await;
    }
    let err = WsClient::connect(&since_url(&c, &room, &t, "abc"))
        .await
        .err()
        .expect("since=abc must be refused");
    assert_eq!(handshake_refusal(&err).map(|r| r.0), Some(422), "{err}");
}

/// The key property of `since`: a receiver that keeps disconnecting and reconnecting with the
/// last id it saw, while a sender keeps sending, ends with every message exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_since_under_concurrent_traffic_loses_and_repeats_nothing() {
    let c = client();
    let room = unique_name("resume");
    let (_, ts) = c.new_user("sender").await;
    let (_, tr) = c.new_user("receiver").await;
    const N: usize = 300;

    let sender = {
        let (c, room, ts) = (c.clone(), room.clone(), ts.clone());
        tokio::spawn(async move {
            let mut s = c.ws(&room, &ts).await;
            let mut echoed = Vec::new();
            for i in 0..N {
                s.send_message(&room, &format!("seq {i}")).await;
                if i % 3 == 2 {
                    // Pace (~100 messages/s) so the traffic spans many of the receiver's
                    // reconnects.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
            while echoed.len() < N {
                let m = s.next_message().await;
                echoed.push(m["id"].as_i64().unwrap());
            }
            echoed
        })
    };

    let mut got: Vec<i64> = Vec::new();
    let mut contents: Vec<String> = Vec::new();
    let mut reconnects = 0;
    let mut rng = Rng::new();
    loop {
        let last = got.last().copied().unwrap_or(0);
        let mut r = WsClient::connect(&since_url(&c, &room, &tr, &last.to_string()))
            .await
            .expect("reconnect");
        reconnects += 1;
        let (h, _) = history_and_presence(&mut r).await;
        assert_eq!(h["truncated"], false);
        for m in h["messages"].as_array().unwrap() {
            got.push(m["id"].as_i64().unwrap());
            contents.push(m["content"].as_str().unwrap().to_owned());
        }
        // Read live frames for a random while, then drop the connection.
        let stay = Duration::from_millis(50 + rng.below(250) as u64);
        let deadline = tokio::time::Instant::now() + stay;
        let finished = sender.is_finished();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match r.try_next_of_types(&["message"], left).await {
                Ok(m) => {
                    got.push(m["id"].as_i64().unwrap());
                    contents.push(m["content"].as_str().unwrap().to_owned());
                }
                Err(_) => break,
            }
        }
        if rng.below(2) == 0 {
            r.close().await;
        } else {
            drop(r); // abrupt: no close handshake
        }
        if finished && got.len() >= N {
            break;
        }
        assert!(
            reconnects < 500,
            "too many reconnects; got {} of {N}",
            got.len()
        );
    }
    let echoed = sender.await.unwrap();
    assert!(
        reconnects >= 3,
        "the test must reconnect several times ({reconnects})"
    );
    assert_eq!(
        got, echoed,
        "receiver's ids vs sender's echoes ({reconnects} reconnects)"
    );
    let want: Vec<String> = (0..N).map(|i| format!("seq {i}")).collect();
    assert_eq!(contents, want);
    eprintln!("[resume] {reconnects} reconnects, {} messages", got.len());
}

// ---------------------------------------------------------------------------------------------
// GET /rooms/{room}/messages and /members
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_backwards_from_the_newest_yields_every_message_once() {
    let c = client();
    let room = unique_name("page");
    let (_, t) = c.new_user("pager").await;
    let mut a = c.ws(&room, &t).await;
    let sent = send_n(&mut a, &room, "p", 45).await;

    // Default page: the newest 50 (all 45 here).
    let v = get_ok(&c, &format!("/rooms/{room}/messages"), &t).await;
    assert_eq!(v["room_id"], room.as_str());
    assert_eq!(ids(&v["messages"]), sent);
    assert_eq!(v["has_more"], false);

    let mut collected: Vec<Value> = Vec::new();
    let mut before: Option<i64> = None;
    let mut pages = 0;
    loop {
        let path = match before {
            Some(b) => format!("/rooms/{room}/messages?before={b}&limit=7"),
            None => format!("/rooms/{room}/messages?limit=7"),
        };
        let v = get_ok(&c, &path, &t).await;
        pages += 1;
        let page = v["messages"].as_array().unwrap().clone();
        let page_ids = ids(&v["messages"]);
        assert!(page.len() <= 7, "{path}: {v}");
        assert!(
            page_ids.windows(2).all(|w| w[0] < w[1]),
            "oldest first: {page_ids:?}"
        );
        if let Some(b) = before {
            assert!(page_ids.iter().all(|id| *id < b), "{path}: {page_ids:?}");
        }
        for m in &page {
            assert_eq!(m["room_id"], room.as_str(), "{m}");
            assert!(m["content"].as_str().unwrap().starts_with("p "), "{m}");
        }
        let has_more = v["has_more"].as_bool().expect("has_more bool");
        let mut next = page.clone();
        next.extend(collected);
        collected = next;
        if !has_more {
            break;
        }
        assert_eq!(page.len(), 7, "a page before the last is full: {path}");
        before = Some(page_ids[0]);
        assert!(pages < 20);
    }
    assert_eq!(pages, 7, "45 messages in pages of 7");
    let all: Vec<i64> = collected
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(all, sent, "every message exactly once, in order");
    // Consistent with history: the same frames as the WebSocket's history.
    let mut b = c.ws(&room, &t).await;
    let (h, _) = history_and_presence(&mut b).await;
    assert_eq!(h["messages"], json!(collected));

    // An exact `before`: the 3 before sent[10] are sent[7..10].
    let v = get_ok(
        &c,
        &format!("/rooms/{room}/messages?before={}&limit=3", sent[10]),
        &t,
    )
    .await;
    assert_eq!(ids(&v["messages"]), sent[7..10].to_vec());
    assert_eq!(v["has_more"], true);
    let v = get_ok(
        &c,
        &format!("/rooms/{room}/messages?before={}&limit=100", sent[0]),
        &t,
    )
    .await;
    assert_eq!(v["messages"], json!([]));
    assert_eq!(v["has_more"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_refuses_bad_limits_and_missing_or_invalid_badges() {
    let c = client();
    let room = unique_name("pagebad");
    let (_, t) = c.new_user("pagebad").await;
    for q in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=-5",
        "before=abc",
        "before=-1",
    ] {
        let resp = get_bearer(&c, &format!("/rooms/{room}/messages?{q}"), &t).await;
        expect_json_error(resp, 422, q).await;
    }
    let v = get_ok(&c, &format!("/rooms/{room}/messages?limit=100"), &t).await;
    assert_eq!(v["messages"], json!([]));
    for path in [
        format!("/rooms/{room}/messages"),
        format!("/rooms/{room}/members"),
    ] {
        let resp = c.http.get(c.url(&path)).send().await.unwrap();
        expect_json_error(resp, 401, &format!("{path} without a badge")).await;
        let forged = sign_hs256(
            &good_claims("someone"),
            b"not-the-server-secret-not-the-server",
        );
        for bad in ["garbage", forged.as_str()] {
            let resp = get_bearer(&c, &path, bad).await;
            expect_json_error(resp, 401, &format!("{path} with a bad badge")).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_lists_the_users_online() {
    let c = client();
    let room = unique_name("members");
    let (alice, ta) = c.new_user("alice").await;
    let (bob, tb) = c.new_user("bob").await;
    let path = format!("/rooms/{room}/members");
    assert_eq!(
        get_ok(&c, &path, &ta).await,
        json!({"room_id": room, "users": []})
    );
    let mut a = c.ws(&room, &ta).await;
    let mut b = c.ws(&room, &tb).await;
    b.roundtrip_ping().await;
    let mut both = vec![alice.clone(), bob.clone()];
    both.sort();
    assert_eq!(
        get_ok(&c, &path, &ta).await,
        json!({"room_id": room, "users": both})
    );
    b.close().await;
    next_leave_of(&mut a, &bob).await;
    assert_eq!(
        get_ok(&c, &path, &tb).await,
        json!({"room_id": room, "users": [alice]})
    );
}

// ---------------------------------------------------------------------------------------------
// Private rooms
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_private_room_and_reading_its_info() {
    let c = client();
    let room = unique_name("priv");
    let (owner, to) = c.new_user("owner").await;
    let (member, tm) = c.new_user("member").await;

    let resp = c
        .http
        .post(c.url("/rooms"))
        .json(&json!({"room_id": room, "private": true}))
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 401, "POST /rooms without a badge").await;

    let (status, v) = status_json(create_private_room(&c, &to, &room).await, "create").await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v, json!({"room_id": room, "private": true, "owner": owner}));

    let info = get_ok(&c, &format!("/rooms/{room}"), &to).await;
    assert_eq!(info["room_id"], room.as_str());
    assert_eq!(info["private"], true);
    assert_eq!(info["owner"], owner.as_str());
    assert_eq!(
        info["members"],
        json!([owner]),
        "owner sees the members: {info}"
    );

    let (status, v) = status_json(
        change_member(&c, Method::PUT, &to, &room, &member).await,
        "PUT",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"room_id": room, "username": member}));
    let info = get_ok(&c, &format!("/rooms/{room}"), &to).await;
    let mut both = vec![owner.clone(), member.clone()];
    both.sort();
    assert_eq!(info["members"], json!(both), "{info}");

    let info = get_ok(&c, &format!("/rooms/{room}"), &tm).await;
    assert_eq!(info["private"], true);
    assert_eq!(info["owner"], owner.as_str());
    assert!(
        info.get("members").is_none_or(|m| m.is_null()),
        "members only for the owner: {info}"
    );

    // Someone who is not a member learns nothing about the members.
    let (_, tx) = c.new_user("outsider").await;
    let resp = get_bearer(&c, &format!("/rooms/{room}"), &tx).await;
    let (status, v) = status_json(resp, "outsider info").await;
    assert!(
        status == 403 || (status == 200 && v.get("members").is_none_or(|m| m.is_null())),
        "outsider GET /rooms/{{room}}: {status} {v}"
    );

    // A public room's info.
    let public = unique_name("pub");
    let info = get_ok(&c, &format!("/rooms/{public}"), &tm).await;
    assert_eq!(info["private"], false, "{info}");
    assert_eq!(info["room_id"], public.as_str());
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
    let mut ws = c.ws(&used, &tb).await;
    ws.roundtrip_ping().await;
    ws.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await; // past the room's deferred write
    let server = restart(server).await;
    let c = server.client();
    expect_json_error(
        create_private_room(&c, &ta, &used).await,
        409,
        "room used before the restart",
    )
    .await;
    let info = get_ok(&c, &format!("/rooms/{used}"), &tb).await;
    assert_eq!(info["private"], false, "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_name_can_be_claimed_once_and_never_after_public_use() {
    let c = client();
    let (_, ta) = c.new_user("claimer").await;
    let (_, tb) = c.new_user("rival").await;
    let room = unique_name("claim");
    assert_eq!(create_private_room(&c, &ta, &room).await.status(), 201);
    expect_json_error(
        create_private_room(&c, &ta, &room).await,
        409,
        "claimed twice, same owner",
    )
    .await;
    expect_json_error(
        create_private_room(&c, &tb, &room).await,
        409,
        "claimed twice, other user",
    )
    .await;

    // A public room someone has connected to cannot be taken over.
    let used = unique_name("used");
    let mut ws = c.ws(&used, &tb).await;
    ws.roundtrip_ping().await;
    ws.close().await;
    expect_json_error(
        create_private_room(&c, &ta, &used).await,
        409,
        "used public room",
    )
    .await;
    // ...and it stays public.
    let info = get_ok(&c, &format!("/rooms/{used}"), &tb).await;
    assert_eq!(info["private"], false);

    let resp = c
        .http
        .post(c.url("/rooms"))
        .bearer_auth(&ta)
        .json(&json!({"room_id": unique_name("notpriv"), "private": false}))
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 422, "private:false").await;
    for bad in [
        json!({"room_id": "a b", "private": true}),
        json!({"room_id": "r".repeat(65), "private": true}),
        json!({"private": true}),
        json!([]),
    ] {
        let resp = c
            .http
            .post(c.url("/rooms"))
            .bearer_auth(&ta)
            .json(&bad)
            .send()
            .await
            .unwrap();
        expect_json_error(resp, 422, &bad.to_string()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_get_in_and_only_the_owner_manages_members() {
    let c = client();
    let room = unique_name("club");
    let (_, to) = c.new_user("owner").await;
    let (member, tm) = c.new_user("member").await;
    let (outsider, tx) = c.new_user("outsider").await;
    assert_eq!(create_private_room(&c, &to, &room).await.status(), 201);

    expect_json_error(
        change_member(&c, Method::PUT, &to, &room, "nobody_here_at_all").await,
        404,
        "PUT unknown user",
    )
    .await;
    expect_json_error(
        change_member(&c, Method::DELETE, &to, &room, &member).await,
        404,
        "DELETE non-member",
    )
    .await;
    assert_eq!(
        change_member(&c, Method::PUT, &to, &room, &member)
            .await
            .status(),
        200
    );
    expect_json_error(
        change_member(&c, Method::PUT, &tm, &room, &outsider).await,
        403,
        "member (not owner) PUT",
    )
    .await;
    expect_json_error(
        change_member(&c, Method::PUT, &tx, &room, &outsider).await,
        403,
        "outsider PUT",
    )
    .await;
    expect_json_error(
        change_member(&c, Method::DELETE, &tm, &room, &member).await,
        403,
        "member (not owner) DELETE",
    )
    .await;

    // The outsider: refused at the handshake and on the HTTP reads.
    let resp = c
        .upgrade_attempt(&format!("/ws/{room}?token={}", urlencode(&tx)))
        .await;
    expect_json_error(resp, 403, "outsider upgrade").await;
    let err = WsClient::connect(&c.ws_url(&room, &tx))
        .await
        .err()
        .expect("outsider must be refused");
    assert_eq!(handshake_refusal(&err).map(|r| r.0), Some(403), "{err}");
    for what in ["messages", "members"] {
        let resp = get_bearer(&c, &format!("/rooms/{room}/{what}"), &tx).await;
        expect_json_error(resp, 403, &format!("outsider {what}")).await;
    }
    // Members and the owner get in.
    let mut o = c.ws(&room, &to).await;
    let mut m = c.ws(&room, &tm).await;
    m.send_message(&room, "members only").await;
    assert_eq!(o.next_message().await["content"], "members only");
    assert_eq!(
        get_ok(&c, &format!("/rooms/{room}/messages"), &tm).await["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        get_ok(&c, &format!("/rooms/{room}/members"), &tm).await["users"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Once added, the outsider gets in too.
    assert_eq!(
        change_member(&c, Method::PUT, &to, &room, &outsider)
            .await
            .status(),
        200
    );
    let mut x = c.ws(&room, &tx).await;
    let (h, _) = history_and_presence(&mut x).await;
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
    let room = unique_name("club");
    let (owner, to) = c.new_user("owner").await;
    let (member, tm) = c.new_user("member").await;
    let (_, tx) = c.new_user("outsider").await;
    private_room_with_member(&c, &to, &room, &member).await;

    let server = restart(server).await;
    let c = server.client();

    // The outsider's socket reaches the room, which refuses it: a plain 403, nothing internal.
    let resp = c
        .upgrade_attempt(&format!("/ws/{room}?token={}", urlencode(&tx)))
        .await;
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
    let resp = c
        .upgrade_attempt(&format!("/ws/{room}?token={}", urlencode(&tx)))
        .await;
    expect_json_error(resp, 403, "outsider, room known private").await;
    // Public rooms are unaffected.
    let mut p = c.ws(&unique_name("pub"), &tx).await;
    p.roundtrip_ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_member_closes_their_sockets_with_1008_and_keeps_them_out() {
    let c = client();
    let room = unique_name("kick");
    let (_, to) = c.new_user("owner").await;
    let (member, tm) = c.new_user("member").await;
    private_room_with_member(&c, &to, &room, &member).await;

    let mut o = c.ws(&room, &to).await;
    o.roundtrip_ping().await;
    let mut m1 = c.ws(&room, &tm).await;
    let mut m2 = c.ws(&room, &tm).await;
    m1.roundtrip_ping().await;
    m2.roundtrip_ping().await;

    let started = std::time::Instant::now();
    let (status, v) = status_json(
        change_member(&c, Method::DELETE, &to, &room, &member).await,
        "DELETE",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"room_id": room, "username": member}));
    expect_closed_with(
        &mut m1,
        1008,
        Duration::from_millis(1500),
        "removed member, tab 1",
    )
    .await;
    expect_closed_with(
        &mut m2,
        1008,
        Duration::from_millis(1500),
        "removed member, tab 2",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed {:?} after the DELETE",
        started.elapsed()
    );
    next_leave_of(&mut o, &member).await;
    o.expect_none_of_types(&["leave", "presence_changes"], QUIET)
        .await; // one leave for two closed tabs
    o.roundtrip_ping().await; // the owner stays

    let err = WsClient::connect(&c.ws_url(&room, &tm))
        .await
        .err()
        .expect("removed member must be refused");
    assert_eq!(handshake_refusal(&err).map(|r| r.0), Some(403), "{err}");
    let resp = get_bearer(&c, &format!("/rooms/{room}/messages"), &tm).await;
    expect_json_error(resp, 403, "removed member reads").await;
    expect_json_error(
        change_member(&c, Method::DELETE, &to, &room, &member).await,
        404,
        "DELETE twice",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Rate limits and caps (own server with the default rate limit)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_too_fast_is_refused_and_not_broadcast_while_a_calm_client_is_unaffected() {
    let c = limits_client().await;
    let room = unique_name("rate");
    let (_, tf) = c.new_user("fast").await;
    let (_, tc) = c.new_user("calm").await;
    let mut fast = c.ws(&room, &tf).await;
    let mut calm = c.ws(&room, &tc).await;
    fast.roundtrip_ping().await;
    calm.roundtrip_ping().await;

    // 60 at once: the burst (20) passes, most of the rest is refused (under the flood bucket's
    // 100, so no close). Even if the server took 3 s to read them, 10/s refills only 30.
    const SENT: usize = 60;
    for i in 0..SENT {
        fast.send_message(&room, &format!("fast {i}")).await;
    }
    // The calm client sends 3, well under its own limit, meanwhile.
    for i in 0..3 {
        calm.send_message(&room, &format!("calm {i}")).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (mut echoed, mut refused) = (Vec::new(), Vec::new());
    while echoed.len() + refused.len() < SENT {
        let f = fast.next_of_types(&["message", "error"]).await;
        if f["type"] == "error" {
            assert_eq!(f["detail"], "rate limited", "{f}");
            let ms = f["retry_after_ms"]
                .as_u64()
                .unwrap_or_else(|| panic!("retry_after_ms: {f}"));
            assert!(ms > 0 && ms <= 1000, "{f}");
            refused.push(f);
        } else if f["content"].as_str().unwrap().starts_with("fast") {
            echoed.push(f["content"].as_str().unwrap().to_owned());
        }
    }
    assert!(echoed.len() >= 20, "the burst passes: {}", echoed.len());
    assert!(refused.len() >= 10, "refused {} of {SENT}", refused.len());

    // The calm client saw exactly the accepted fast messages, and all its own.
    let mut seen_fast = Vec::new();
    let mut seen_calm = 0;
    while let Ok(m) = calm.try_next_of_types(&["message", "error"], QUIET).await {
        assert_eq!(m["type"], "message", "calm client got {m}");
        let content = m["content"].as_str().unwrap();
        if content.starts_with("fast") {
            seen_fast.push(content.to_owned());
        } else {
            seen_calm += 1;
        }
    }
    assert_eq!(seen_fast, echoed, "refused messages must not be broadcast");
    assert_eq!(seen_calm, 3, "the calm client's messages all went through");
    // After a pause the fast client may send again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    fast.send_message(&room, "after the pause").await;
    loop {
        let f = fast.next_of_types(&["message", "error"]).await;
        assert_eq!(f["type"], "message", "after the pause: {f}");
        if f["content"] == "after the pause" {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_past_five_times_the_limit_closes_the_socket_with_1008() {
    let c = limits_client().await;
    let room = unique_name("flood");
    let (_, tf) = c.new_user("flooder").await;
    let (_, tc) = c.new_user("bystander").await;
    let mut flood = c.ws(&room, &tf).await;
    let mut calm = c.ws(&room, &tc).await;
    flood.roundtrip_ping().await;
    calm.roundtrip_ping().await;
    // Flood bucket: capacity 100, refilled at 50/s. 400 frames as fast as we can go.
    let mut sent = 0;
    for i in 0..400 {
        if !flood
            .try_send_text(json!({"content": format!("flood {i}"), "room_id": room}).to_string())
            .await
        {
            break;
        }
        sent += 1;
    }
    expect_closed_with(&mut flood, 1008, Duration::from_secs(10), "flooder").await;
    eprintln!("[flood] sent {sent} frames before the close");
    // The bystander is unaffected: it can still talk.
    calm.send_message(&room, "still here").await;
    loop {
        let m = calm.next_message().await;
        if m["content"] == "still here" {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_sockets_per_user_is_429_and_per_room_is_503() {
    let c = limits_client().await;
    // MAX_SOCKETS_PER_USER=2 on this server.
    let room = unique_name("peruser");
    let (_, t) = c.new_user("tabs").await;
    let mut s1 = c.ws(&room, &t).await;
    let mut s2 = c.ws(&room, &t).await;
    s1.roundtrip_ping().await;
    s2.roundtrip_ping().await;
    let resp = c
        .upgrade_attempt(&format!("/ws/{room}?token={}", urlencode(&t)))
        .await;
    expect_json_error(resp, 429, "third socket of one user").await;
    let err = WsClient::connect(&c.ws_url(&room, &t))
        .await
        .err()
        .expect("third socket refused");
    assert_eq!(handshake_refusal(&err).map(|r| r.0), Some(429), "{err}");
    // The same user in another room is fine; closing a socket frees a slot.
    let mut other = c.ws(&unique_name("other"), &t).await;
    other.roundtrip_ping().await;
    s1.close().await;
    let mut ok = false;
    for _ in 0..20 {
        if let Ok(mut s) = WsClient::connect(&c.ws_url(&room, &t)).await {
            s.roundtrip_ping().await;
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a closed socket's slot is freed");

    // MAX_SOCKETS_PER_ROOM=3 on this server.
    let room = unique_name("perroom");
    let mut held = Vec::new();
    for _ in 0..3 {
        let (_, t) = c.new_user("crowd").await;
        let mut s = c.ws(&room, &t).await;
        s.roundtrip_ping().await;
        held.push(s);
    }
    let (_, t4) = c.new_user("latecomer").await;
    let resp = c
        .upgrade_attempt(&format!("/ws/{room}?token={}", urlencode(&t4)))
        .await;
    expect_json_error(resp, 503, "fourth socket in a room of 3").await;
    let mut elsewhere = c.ws(&unique_name("roomy"), &t4).await;
    elsewhere.roundtrip_ping().await;
    // The room keeps its count of sockets between connects: a socket that closes frees its
    // slot all the same, and the room counts the newcomer too.
    held.remove(0).close().await;
    let mut admitted = None;
    for _ in 0..20 {
        if let Ok(mut s) = WsClient::connect(&c.ws_url(&room, &t4)).await {
            s.roundtrip_ping().await;
            admitted = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        admitted.is_some(),
        "a closed socket's slot in the room is freed"
    );
    let (_, t5) = c.new_user("latecomer").await;
    let resp = c
        .upgrade_attempt(&format!("/ws/{room}?token={}", urlencode(&t5)))
        .await;
    expect_json_error(resp, 503, "the room is full again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_text_gets_pong() {
    let c = client();
    let (_, t) = c.new_user("pinger").await;
    let mut ws = c.ws(&unique_name("ping"), &t).await;
    history_and_presence(&mut ws).await;
    for _ in 0..3 {
        ws.send_text("ping").await;
        assert_eq!(ws.next_plain_text().await, "pong");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_trimmed_to_the_cap_and_ids_keep_increasing() {
    let server = start(ServerOptions::relaxed_limits().var("HISTORY_CAP", "100")).await;
    let c = server.client();
    let room = unique_name("cap");
    let (_, t) = c.new_user("capper").await;
    let mut a = c.ws(&room, &t).await;
    let mut sent = Vec::new();
    for chunk in 0..3 {
        sent.extend(send_n(&mut a, &room, &format!("k{chunk}"), 55).await);
    }
    assert!(
        sent.windows(2).all(|w| w[1] == w[0] + 1),
        "ids increase by one: {sent:?}"
    );
    let newest = *sent.last().unwrap();

    let mut b = WsClient::connect(&since_url(&c, &room, &t, "0"))
        .await
        .unwrap();
    let (h, _) = history_and_presence(&mut b).await;
    let kept = ids(&h["messages"]);
    assert!(
        (100..=101).contains(&kept.len()),
        "kept {} of {} (cap 100)",
        kept.len(),
        sent.len()
    );
    assert_eq!(*kept.last().unwrap(), newest);
    assert!(
        kept.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous: {kept:?}"
    );

    let mut paged = Vec::new();
    let mut before = String::new();
    loop {
        let v = get_ok(&c, &format!("/rooms/{room}/messages?limit=100{before}"), &t).await;
        let mut page = ids(&v["messages"]);
        if page.is_empty() {
            break;
        }
        before = format!("&before={}", page[0]);
        page.extend(paged);
        paged = page;
        if v["has_more"] == false {
            break;
        }
    }
    assert_eq!(paged, kept, "paging sees what history sees");

    // Ids keep increasing after trims.
    let more = send_n(&mut a, &room, "later", 3).await;
    assert_eq!(more, vec![newest + 1, newest + 2, newest + 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_disconnect_also_sends_leave() {
    let c = client();
    let room = unique_name("abrupt");
    let (_, ta) = c.new_user("stayer").await;
    let (bob, tb) = c.new_user("dropper").await;
    let mut a = c.ws(&room, &ta).await;
    let mut b = c.ws(&room, &tb).await;
    b.roundtrip_ping().await;
    assert_eq!(a.next_of_type("join").await["username"], bob.as_str());
    drop(b); // TCP closed without a close frame
    next_leave_of(&mut a, &bob).await;
    let members = get_ok(&c, &format!("/rooms/{room}/members"), &ta).await;
    assert_eq!(members["users"].as_array().unwrap().len(), 1, "{members}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_of_one_name_give_exactly_one_201() {
    let c = client();
    let room = unique_name("race");
    let mut tokens = Vec::new();
    for _ in 0..4 {
        tokens.push(c.new_user("racer").await.1);
    }
    let statuses = bounded_join(tokens.clone(), 4, |t| {
        let (c, room) = (c.clone(), room.clone());
        async move { create_private_room(&c, &t, &room).await.status().as_u16() }
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
        let resp = get_bearer(&c, &format!("/rooms/{room}/members"), t).await;
        if resp.status() == 200 {
            owners += 1;
        }
    }
    assert_eq!(owners, 1);
}

/// `since` must be an integer; characters that mean something in a URL must not sneak one in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_with_url_metacharacters_is_refused() {
    let c = client();
    let room = unique_name("sincemeta");
    let (_, t) = c.new_user("sincemeta").await;
    for bad in ["1%23x", "1%26since%3D0", "1%3Fa"] {
        let resp = c
            .upgrade_attempt(&format!("/ws/{room}?token={}&since={bad}", urlencode(&t)))
            .await;
        let status = resp.status().as_u16();
        assert_eq!(
            status, 422,
            "since={bad} (decoded: not an integer) got {status}"
        );
    }
}

/// After a quiet spell (long enough for the runtime to hibernate the room object), the room
/// still knows who is online and which id comes next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_works_the_same_after_a_quiet_spell() {
    let c = client();
    let room = unique_name("quiet");
    let (alice, ta) = c.new_user("alice").await;
    let (bob, tb) = c.new_user("bob").await;
    let (carol, tc) = c.new_user("carol").await;
    let mut a = c.ws(&room, &ta).await;
    let mut b = c.ws(&room, &tb).await;
    let first = send_n(&mut a, &room, "before", 2).await;
    b.roundtrip_ping().await;
    while b.try_next_of_types(&["message"], QUIET).await.is_ok() {}
    while a
        .try_next_of_types(&["join"], Duration::from_millis(100))
        .await
        .is_ok()
    {}

    tokio::time::sleep(Duration::from_secs(15)).await;

    b.send_message(&room, "after the quiet").await;
    let m = a.next_message().await;
    assert_eq!(m["content"], "after the quiet");
    assert_eq!(m["username"], bob.as_str());
    assert_eq!(m["id"], first[1] + 1, "the next id after a quiet spell");
    let mut c3 = c.ws(&room, &tc).await;
    let (h, p) = history_and_presence(&mut c3).await;
    assert_eq!(ids(&h["messages"]), vec![first[0], first[1], first[1] + 1]);
    let mut all = vec![alice.clone(), bob.clone(), carol.clone()];
    all.sort();
    assert_eq!(
        p["users"],
        json!(all),
        "presence rebuilt after the quiet spell"
    );
    assert_eq!(a.next_of_type("join").await["username"], carol.as_str());
    b.close().await;
    next_leave_of(&mut a, &bob).await;
    next_leave_of(&mut c3, &bob).await;
    c3.expect_none_of_types(&["leave", "presence_changes"], QUIET)
        .await;
    let members = get_ok(&c, &format!("/rooms/{room}/members"), &ta).await;
    let mut two = vec![alice, carol];
    two.sort();
    assert_eq!(members["users"], json!(two));
}

/// Past `PRESENCE_BROADCAST_MAX` open sockets a room stops announcing each join (the frames
/// would grow with the square of the room), while the presence frame still lists everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_rooms_stop_announcing_joins_but_presence_still_lists_everyone() {
    let server = start(ServerOptions::relaxed_limits().var("PRESENCE_BROADCAST_MAX", "2")).await;
    let c = server.client();
    let room = unique_name("big");
    let (_, ta) = c.new_user("first").await;
    let (bob, tb) = c.new_user("second").await;
    let (carol, tc) = c.new_user("third").await;
    let mut a = c.ws(&room, &ta).await;
    history_and_presence(&mut a).await;
    let mut b = c.ws(&room, &tb).await;
    history_and_presence(&mut b).await;
    assert_eq!(
        a.next_of_type("join").await["username"],
        bob.as_str(),
        "below the threshold"
    );
    let mut third = c.ws(&room, &tc).await;
    let (_, presence) = history_and_presence(&mut third).await;
    assert_eq!(presence["users"].as_array().unwrap().len(), 3, "{presence}");
    a.expect_none_of_types(&["join", "presence_changes"], QUIET)
        .await;
    b.expect_none_of_types(&["join", "presence_changes"], QUIET)
        .await;
    // Messages still reach everyone.
    third.send_message(&room, "still here").await;
    assert_eq!(a.next_message().await["username"], carol.as_str());
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// Presence batching (PRESENCE_BATCH_MS)
// ---------------------------------------------------------------------------------------------

/// The batching window of the batching tests' server: long enough that a burst of connects or
/// closes falls within one window even on a busy machine, so the tests do not race the clock.
/// (The shared server runs the default, 100 ms.)
const BATCH_MS: u64 = 3000;

/// How long a batching test waits for presence to converge: a window plus the usual margin.
const BATCH_WAIT: Duration = Duration::from_millis(BATCH_MS + 10_000);

fn batch_server() -> &'static Server {
    static BATCH: OnceLock<Server> = OnceLock::new();
    BATCH.get_or_init(|| {
        Server::start(
            ServerOptions::relaxed_limits().var("PRESENCE_BATCH_MS", &BATCH_MS.to_string()),
        )
    })
}

async fn batch_client() -> Client {
    tokio::task::spawn_blocking(|| batch_server().client())
        .await
        .unwrap()
}

/// `n` new users, signed up concurrently.
async fn new_users(c: &Client, prefix: &str, n: usize) -> Vec<(String, String)> {
    bounded_join((0..n).collect(), 3, |i| {
        let c = c.clone();
        let prefix = format!("{prefix}{i}");
        async move { c.new_user(&prefix).await }
    })
    .await
}

/// Opens one socket per token, all at once.
async fn connect_all(c: &Client, room: &str, users: &[(String, String)]) -> Vec<WsClient> {
    let tokens: Vec<String> = users.iter().map(|(_, t)| t.clone()).collect();
    let n = tokens.len();
    bounded_join(tokens, n, |t| {
        let (c, room) = (c.clone(), room.to_string());
        async move { c.ws(&room, &t).await }
    })
    .await
}

/// What a member who watched a burst of joins or leaves (`kind`) in a quiet room must have seen:
/// the first announced at once as before, the rest batched, every name once, nothing else.
fn assert_burst_announced(view: &PresenceView, kind: &str, names: &BTreeSet<String>) {
    let (announced, opposite) = match kind {
        "join" => (&view.joined, &view.left),
        _ => (&view.left, &view.joined),
    };
    assert_eq!(
        view.frames.first().map(String::as_str),
        Some(kind),
        "the room was quiet: the first {kind} goes out at once, as before: {:?}",
        view.frames
    );
    assert!(
        view.batches() >= 1,
        "a burst within one window gives a presence_changes frame: {:?}",
        view.frames
    );
    assert_eq!(
        &announced.iter().cloned().collect::<BTreeSet<_>>(),
        names,
        "every {kind} announced, nobody else"
    );
    assert!(opposite.is_empty(), "only {kind}s: {opposite:?}");
}

/// A room with one early member watching (`view`, from its presence frame on) and a burst of
/// new users ready to connect: the shared setup of the batching tests.
struct BurstRoom {
    room: String,
    early: String,
    early_token: String,
    /// The burst's usernames.
    names: BTreeSet<String>,
    /// The burst's names and the early member's.
    everyone: BTreeSet<String>,
    burst: Vec<(String, String)>,
    watcher: WsClient,
    view: PresenceView,
}

async fn burst_room(
    c: &Client,
    room_prefix: &str,
    early_prefix: &str,
    burst_prefix: &str,
) -> BurstRoom {
    let room = unique_name(room_prefix);
    let (early, early_token) = c.new_user(early_prefix).await;
    let burst = new_users(c, burst_prefix, 6).await;
    let names: BTreeSet<String> = burst.iter().map(|(n, _)| n.clone()).collect();
    let mut everyone = names.clone();
    everyone.insert(early.clone());
    let mut watcher = c.ws(&room, &early_token).await;
    let (_, p) = history_and_presence(&mut watcher).await;
    let view = PresenceView::new(&p);
    BurstRoom {
        room,
        early,
        early_token,
        names,
        everyone,
        burst,
        watcher,
        view,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joins_is_batched_and_everyone_learns_every_join() {
    let c = batch_client().await;
    let BurstRoom {
        room,
        early_token: te,
        names,
        everyone,
        burst,
        watcher: mut a,
        mut view,
        ..
    } = burst_room(&c, "burstjoin", "early", "joiner").await;

    let mut sockets = connect_all(&c, &room, &burst).await;
    view.read_until(&mut a, BATCH_WAIT, |v| v.online == everyone)
        .await;
    assert_burst_announced(&view, "join", &names);

    // Every joiner, from its own presence frame on, converges on the same set, and is never
    // told that anyone (itself included) left.
    for ws in sockets.iter_mut() {
        let (_, p) = history_and_presence(ws).await;
        let mut own = PresenceView::new(&p);
        own.read_until(ws, BATCH_WAIT, |v| v.online == everyone)
            .await;
        assert!(own.left.is_empty(), "{:?}", own.left);
    }
    let members = get_ok(&c, &format!("/rooms/{room}/members"), &te).await;
    assert_eq!(
        names_in(&members["users"])
            .into_iter()
            .collect::<BTreeSet<_>>(),
        everyone
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_leaves_is_batched_and_everyone_learns_every_leave() {
    let c = batch_client().await;
    let BurstRoom {
        room,
        early,
        early_token: te,
        names,
        everyone,
        burst,
        watcher: mut a,
        mut view,
    } = burst_room(&c, "burstleave", "stayer", "leaver").await;
    let sockets = connect_all(&c, &room, &burst).await;
    view.read_until(&mut a, BATCH_WAIT, |v| v.online == everyone)
        .await;
    // A whole window without announcements: the room is quiet again.
    tokio::time::sleep(Duration::from_millis(BATCH_MS + 500)).await;
    view.clear_log();

    futures_util::future::join_all(sockets.into_iter().map(|ws| ws.close())).await;
    let only_early = BTreeSet::from([early.clone()]);
    view.read_until(&mut a, BATCH_WAIT, |v| v.online == only_early)
        .await;
    assert_burst_announced(&view, "leave", &names);
    let members = get_ok(&c, &format!("/rooms/{room}/members"), &te).await;
    assert_eq!(members["users"], json!([early]));
}

/// A user who comes and goes within one batch, with nobody connecting in between, nets out:
/// the others are never told about them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_and_leave_within_one_batch_cancel_out() {
    let c = batch_client().await;
    let room = unique_name("netout");
    let (early, te) = c.new_user("early").await;
    let (y, ty) = c.new_user("opener").await;
    let (x, tx) = c.new_user("fleeting").await;
    let (z, tz) = c.new_user("later").await;
    let path = format!("/rooms/{room}/members");

    let mut a = c.ws(&room, &te).await;
    let (_, p) = history_and_presence(&mut a).await;
    let mut view = PresenceView::new(&p);
    let _y = c.ws(&room, &ty).await;
    // y's join goes out at once and opens a window: what follows is batched.
    view.read_until(&mut a, BATCH_WAIT, |v| v.online.contains(&y))
        .await;

    let mut xs = c.ws(&room, &tx).await;
    history_and_presence(&mut xs).await;
    xs.close().await;
    // x's close has been handled before anyone else connects.
    let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
    while names_in(&get_ok(&c, &path, &te).await["users"]).contains(&x) {
        assert!(tokio::time::Instant::now() < deadline, "x never went");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut zs = c.ws(&room, &tz).await;
    let (_, zp) = history_and_presence(&mut zs).await;
    assert!(!names_in(&zp["users"]).contains(&x), "{zp}");

    view.read_until(&mut a, BATCH_WAIT, |v| v.online.contains(&z))
        .await;
    let expected = BTreeSet::from([early.clone(), y.clone(), z.clone()]);
    assert_eq!(view.online, expected);
    assert!(
        !view.joined.contains(&x) && !view.left.contains(&x),
        "x came and went within one batch: {}",
        a.seen_summary()
    );
    a.expect_none_of_types(&["join", "leave", "presence_changes"], QUIET)
        .await;
}
