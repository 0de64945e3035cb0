//! History: the messages a socket gets on connect, catch-up with `since`, paging back through
//! `GET /rooms/{room}/messages`, the history cap, and sockets joining while a burst is stored.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

/// A fresh room on `c`'s server where a new user (`name`) has sent `n` messages `"{prefix} {i}"`:
/// the room, the user's badge, the socket they were sent on, and the messages' ids.
async fn room_with_messages(
    c: &Client,
    name: &str,
    prefix: &str,
    n: usize,
) -> (String, String, WsClient, Vec<i64>) {
    let (room, [(_, token)]) = c.room_with_users(name, [name]).await;
    let mut ws = c.ws(&room, &token).await;
    let sent = ws.send_n(&room, prefix, n).await;
    (room, token, ws, sent)
}

// ---------------------------------------------------------------------------------------------
// On connect
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_sends_history_then_presence_and_others_see_join_and_leave() {
    let c = client();
    let (room, [(alice, ta), (bob, tb)]) = c.room_with_users("hist", ["alice", "bob"]).await;

    let mut a = c.ws(&room, &ta).await;
    let (h, p) = a.history_and_presence().await;
    assert_eq!(h["messages"], json!([]), "new room: {h}");
    assert_eq!(h["truncated"], false, "{h}");
    assert_eq!(p["users"], json!([alice]), "presence includes self: {p}");

    let sent = a.send_n(&room, "before bob", 3).await;

    let mut b = c.ws(&room, &tb).await;
    let (h, p) = b.history_and_presence().await;
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
    let (room, t, mut a, sent) = room_with_messages(&c, "hist50", "m", 50).await;
    let (h, _) = c.ws(&room, &t).await.history_and_presence().await;
    assert_eq!(ids(&h["messages"]), sent, "exactly 50 stored, all sent");
    assert_eq!(
        h["truncated"], false,
        "50 messages, none older: {}",
        h["truncated"]
    );

    let more = a.send_n(&room, "n", 5).await;
    let (h, _) = c.ws(&room, &t).await.history_and_presence().await;
    let mut all = sent.clone();
    all.extend(&more);
    assert_eq!(ids(&h["messages"]), all[all.len() - 50..].to_vec());
    assert_eq!(h["truncated"], true, "55 stored, 50 sent");
}

// ---------------------------------------------------------------------------------------------
// since
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_returns_exactly_the_messages_after_the_id() {
    let c = client();
    let (room, t, _, sent) = room_with_messages(&c, "since", "s", 60).await;

    for (since, want) in [
        (sent[2], sent[3..].to_vec()),
        (0, sent.clone()), // beyond the 50 of a plain connect
        (sent[59], vec![]),
        (sent[59] + 1000, vec![]),
    ] {
        let mut b = c.ws_since(&room, &t, since).await;
        let (h, _) = b.history_and_presence().await;
        assert_eq!(ids(&h["messages"]), want, "since={since}");
        assert_eq!(h["truncated"], false, "since={since}");
        b.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_catch_up_is_capped_at_the_newest_1000_with_truncated() {
    let c = client();
    let (room, t, mut a, mut sent) = room_with_messages(&c, "since1k", "c0", 150).await;
    for chunk in 1..7 {
        sent.extend(a.send_n(&room, &format!("c{chunk}"), 150).await);
    }
    assert_eq!(sent.len(), 1050);
    let (h, _) = c.ws_since(&room, &t, 0).await.history_and_presence().await;
    assert_eq!(ids(&h["messages"]), sent[50..].to_vec(), "newest 1000");
    assert_eq!(h["truncated"], true);
    // Exactly 1000 missed: everything, not truncated.
    let (h, _) = c
        .ws_since(&room, &t, sent[49])
        .await
        .history_and_presence()
        .await;
    assert_eq!(ids(&h["messages"]).len(), 1000);
    assert_eq!(h["truncated"], false);
}

/// Asserts that each of `values` (written into the query as they are) is refused with a JSON
/// 422 before any upgrade.
async fn expect_since_refused(c: &Client, room: &str, token: &str, values: &[&str]) {
    for bad in values {
        let resp = c
            .upgrade_attempt(&format!("{}&since={bad}", ws_path(room, token)))
            .await;
        expect_json_error(resp, 422, &format!("since={bad:?}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_that_is_not_a_non_negative_integer_is_refused_with_422() {
    let c = client();
    let (room, [(_, t)]) = c.room_with_users("sincebad", ["sincebad"]).await;
    expect_since_refused(
        &c,
        &room,
        &t,
        &["abc", "-1", "1.5", "", "99999999999999999999999"],
    )
    .await;
    assert_refused(
        WsClient::connect(&c.ws_url_since(&room, &t, "abc")).await,
        422,
        "since=abc",
    );
}

/// `since` must be an integer; characters that mean something in a URL must not sneak one in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_with_url_metacharacters_is_refused() {
    let c = client();
    let (room, [(_, t)]) = c.room_with_users("sincemeta", ["sincemeta"]).await;
    expect_since_refused(&c, &room, &t, &["1%23x", "1%26since%3D0", "1%3Fa"]).await;
}

/// The key property of `since`: a receiver that keeps disconnecting and reconnecting with the
/// last id it saw, while a sender keeps sending, ends with every message exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_since_under_concurrent_traffic_loses_and_repeats_nothing() {
    let c = client();
    let (room, [(_, ts), (_, tr)]) = c.room_with_users("resume", ["sender", "receiver"]).await;
    const N: usize = 300;

    let sender = {
        let (c, room, ts) = (c.clone(), room.clone(), ts.clone());
        tokio::spawn(async move {
            let mut s = c.ws(&room, &ts).await;
            for i in 0..N {
                s.send_message(&room, &format!("seq {i}")).await;
                if i % 3 == 2 {
                    // Pace (~100 messages/s) so the traffic spans many of the receiver's
                    // reconnects.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
            let mut echoed = Vec::new();
            while echoed.len() < N {
                echoed.push(s.next_message_id().await);
            }
            echoed
        })
    };

    // (id, content) of every message the receiver got, from history and live.
    let mut got: Vec<(i64, String)> = Vec::new();
    let id_and_content = |m: &Value| {
        (
            m["id"].as_i64().unwrap(),
            m["content"].as_str().unwrap().to_owned(),
        )
    };
    let mut reconnects = 0;
    let mut rng = Rng::new();
    loop {
        let last = got.last().map_or(0, |(id, _)| *id);
        let mut r = c.ws_since(&room, &tr, last).await;
        reconnects += 1;
        let (h, _) = r.history_and_presence().await;
        assert_eq!(h["truncated"], false);
        got.extend(h["messages"].as_array().unwrap().iter().map(id_and_content));
        // Read live frames for a random while, then drop the connection.
        let stay = Duration::from_millis(50 + rng.below(250) as u64);
        let deadline = tokio::time::Instant::now() + stay;
        let finished = sender.is_finished();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match r.try_next_of_types(&["message"], left).await {
                Ok(m) => got.push(id_and_content(&m)),
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
    let (got, contents): (Vec<i64>, Vec<String>) = got.into_iter().unzip();
    assert_eq!(
        got, echoed,
        "receiver's ids vs sender's echoes ({reconnects} reconnects)"
    );
    let want: Vec<String> = (0..N).map(|i| format!("seq {i}")).collect();
    assert_eq!(contents, want);
    eprintln!("[resume] {reconnects} reconnects, {} messages", got.len());
}

// ---------------------------------------------------------------------------------------------
// GET /rooms/{room}/messages
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_backwards_from_the_newest_yields_every_message_once() {
    let c = client();
    let (room, t, _, sent) = room_with_messages(&c, "pager", "p", 45).await;

    // Default page: the newest 50 (all 45 here).
    let v = c.get_ok(&format!("/rooms/{room}/messages"), &t).await;
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
        let v = c.get_ok(&path, &t).await;
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
    let (h, _) = c.ws(&room, &t).await.history_and_presence().await;
    assert_eq!(h["messages"], json!(collected));

    // An exact `before`: the 3 before sent[10] are sent[7..10].
    let v = c
        .get_ok(
            &format!("/rooms/{room}/messages?before={}&limit=3", sent[10]),
            &t,
        )
        .await;
    assert_eq!(ids(&v["messages"]), sent[7..10].to_vec());
    assert_eq!(v["has_more"], true);
    let v = c
        .get_ok(
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
    let (room, [(_, t)]) = c.room_with_users("pagebad", ["pagebad"]).await;
    for q in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=-5",
        "before=abc",
        "before=-1",
    ] {
        let resp = c
            .get_bearer(&format!("/rooms/{room}/messages?{q}"), &t)
            .await;
        expect_json_error(resp, 422, q).await;
    }
    let v = c
        .get_ok(&format!("/rooms/{room}/messages?limit=100"), &t)
        .await;
    assert_eq!(v["messages"], json!([]));
    let forged = sign_hs256(&good_claims("someone"), OTHER_KEY);
    for path in [
        format!("/rooms/{room}/messages"),
        format!("/rooms/{room}/members"),
    ] {
        let resp = c.get(&path).send().await.unwrap();
        expect_json_error(resp, 401, &format!("{path} without a badge")).await;
        for bad in ["garbage", forged.as_str()] {
            let resp = c.get_bearer(&path, bad).await;
            expect_json_error(resp, 401, &format!("{path} with a bad badge")).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What is stored
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_trimmed_to_the_cap_and_ids_keep_increasing() {
    let server = start(ServerOptions::relaxed_limits().var("HISTORY_CAP", "100")).await;
    let c = server.client();
    let (room, t, mut a, mut sent) = room_with_messages(&c, "capper", "k0", 55).await;
    for chunk in 1..3 {
        sent.extend(a.send_n(&room, &format!("k{chunk}"), 55).await);
    }
    assert_consecutive(&sent, "sent");
    let newest = *sent.last().unwrap();

    let (h, _) = c.ws_since(&room, &t, 0).await.history_and_presence().await;
    let kept = ids(&h["messages"]);
    assert!(
        (100..=101).contains(&kept.len()),
        "kept {} of {} (cap 100)",
        kept.len(),
        sent.len()
    );
    assert_eq!(*kept.last().unwrap(), newest);
    assert_consecutive(&kept, "kept");

    let paged = ids(&json!(c.all_messages(&room, &t).await));
    assert_eq!(paged, kept, "paging sees what history sees");

    // Ids keep increasing after trims.
    let more = a.send_n(&room, "later", 3).await;
    assert_eq!(more, vec![newest + 1, newest + 2, newest + 3]);
}

/// A message is sent only once its commit is durable (`src/room/outbox.rs`); meanwhile it is
/// stored but not yet sent. A socket joining at that moment must get it once: live, not also in
/// its history. Sockets keep joining (with `since=0`: the whole history) while a burst is stored
/// and sent, and each must see every message exactly once, in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_joining_during_a_burst_get_each_message_once_in_history_or_live() {
    let c = client();
    let (room, [(_, ts), (_, tj)]) = c.room_with_users("joinburst", ["burster", "joiner"]).await;
    const N: i64 = 900;
    const JOINERS: u64 = 40;

    let mut sender = c.ws_ready(&room, &ts).await;
    let burst = {
        let room = room.clone();
        tokio::spawn(async move {
            // Frames back to back in runs of 3, spread over about half a second, so that the
            // joins below land among groups waiting for their commit.
            for i in 0..N {
                sender.send_message(&room, &format!("m{i}")).await;
                if i % 3 == 2 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            let mut last = 0;
            while last < N {
                last = sender.next_message_id().await;
            }
        })
    };
    let joiners: Vec<_> = (0..JOINERS)
        .map(|k| {
            let url = c.ws_url_since(&room, &tj, 0);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(15 * k)).await;
                let mut j = WsClient::connect(&url).await.expect("joining");
                let (history, _) = j.history_and_presence().await;
                let mut ids = ids(&history["messages"]);
                let in_history = ids.len() as i64;
                while ids.last().copied().unwrap_or(0) < N {
                    ids.push(j.next_message_id().await);
                }
                j.close().await;
                (in_history, ids)
            })
        })
        .collect();
    burst.await.unwrap();
    let expected: Vec<i64> = (1..=N).collect();
    let mut mid_burst = 0;
    for (k, joiner) in joiners.into_iter().enumerate() {
        let (in_history, ids) = joiner.await.unwrap();
        assert_eq!(
            ids, expected,
            "joiner {k} ({in_history} in history): every id once, in order"
        );
        mid_burst += usize::from(in_history > 0 && in_history < N);
    }
    assert!(
        mid_burst >= 5,
        "too few joins landed inside the burst to test anything ({mid_burst} of {JOINERS})"
    );
}
