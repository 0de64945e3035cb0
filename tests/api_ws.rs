//! End-to-end tests of the WebSocket contract: broadcast, message shape, ids, isolation of rooms,
//! bad frames, size limits, heartbeat, many clients. Against `wrangler dev` (see tests/common).

mod common;
#[path = "common/ext.rs"]
mod ext;

use std::time::Duration;

use common::*;
use ext::{history_and_presence, ids};
use serde_json::{json, Value};

/// Asserts `m` is a broadcast message frame from `username` in `room` with `content`; returns its id.
fn assert_message(m: &Value, room: &str, username: &str, content: &str) -> i64 {
    assert_eq!(m["type"], "message", "{m}");
    assert_eq!(m["room_id"], room, "{m}");
    assert_eq!(m["username"], username, "{m}");
    assert_eq!(m["content"], content, "{m}");
    let ts = m["ts"]
        .as_i64()
        .unwrap_or_else(|| panic!("integer ts (ms): {m}"));
    assert!(
        (ts - now_millis()).abs() < 120_000,
        "ts must be epoch milliseconds near now: {m}"
    );
    m["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("integer id: {m}"))
}

/// Quiet period in which a frame that should not come would have come.
const QUIET: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_broadcast_to_everyone_in_the_room_sender_included() {
    let c = client();
    let room = unique_name("bcast");
    let (alice, ta) = c.new_user("alice").await;
    let (bob, tb) = c.new_user("bob").await;
    let mut a = c.ws(&room, &ta).await;
    let mut b = c.ws(&room, &tb).await;
    // Both are in the room (and the server reads both) before anything is sent.
    a.roundtrip_ping().await;
    b.roundtrip_ping().await;

    a.send_message(&room, "hello from alice").await;
    let ma = a.next_message().await;
    let mb = b.next_message().await;
    let id = assert_message(&ma, &room, &alice, "hello from alice");
    assert_eq!(ma, mb, "sender and others get the same frame");

    b.send_message(&room, "hi alice").await;
    let mb = b.next_message().await;
    let ma = a.next_message().await;
    assert_eq!(assert_message(&mb, &room, &bob, "hi alice"), id + 1);
    assert_eq!(ma, mb);
}

/// The room keeps its list of sockets between broadcasts (`src/room.rs`): every join and leave
/// between two messages must show in who gets the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_leaves_between_messages_change_who_gets_the_next_one() {
    let c = client();
    let room = unique_name("churn");
    let (alice, ta) = c.new_user("alice").await;
    let (_, tb) = c.new_user("bob").await;
    let (_, tc) = c.new_user("carol").await;
    let mut a = c.ws(&room, &ta).await;
    a.roundtrip_ping().await;
    a.send_message(&room, "one").await;
    let first = assert_message(&a.next_message().await, &room, &alice, "one");

    // Bob joins after the room has broadcast: he gets the next message live.
    let mut b = c.ws(&room, &tb).await;
    b.roundtrip_ping().await;
    a.send_message(&room, "two").await;
    for member in [&mut a, &mut b] {
        let m = member.next_message().await;
        assert_eq!(assert_message(&m, &room, &alice, "two"), first + 1);
    }

    // Bob leaves and Carol joins before the next message: Carol gets it, Alice still does.
    b.close().await;
    let mut c3 = c.ws(&room, &tc).await;
    c3.roundtrip_ping().await;
    a.send_message(&room, "three").await;
    for member in [&mut a, &mut c3] {
        let m = member.next_message().await;
        assert_eq!(assert_message(&m, &room, &alice, "three"), first + 2);
    }

    // Carol leaves; the room keeps working for the one member left, many times over.
    c3.close().await;
    for (k, content) in ["four", "five", "six"].into_iter().enumerate() {
        a.send_message(&room, content).await;
        let m = a.next_message().await;
        assert_eq!(
            assert_message(&m, &room, &alice, content),
            first + 3 + k as i64
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sent_username_is_ignored() {
    let c = client();
    let room = unique_name("spoof");
    let (alice, ta) = c.new_user("alice").await;
    let (_, tb) = c.new_user("bob").await;
    let mut a = c.ws(&room, &ta).await;
    let mut b = c.ws(&room, &tb).await;
    b.roundtrip_ping().await;
    a.send_json(&json!({
        "content": "I am mallory",
        "room_id": room,
        "username": "mallory",
        "type": "message",
        "id": 999_999,
        "ts": 1,
    }))
    .await;
    for ws in [&mut a, &mut b] {
        let m = ws.next_message().await;
        assert_message(&m, &room, &alice, "I am mallory");
        assert_ne!(m["id"], 999_999, "{m}");
        assert_ne!(m["ts"], 1, "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rooms_do_not_leak_into_each_other() {
    let c = client();
    let (r1, r2) = (unique_name("room1"), unique_name("room2"));
    let (u, t) = c.new_user("twin").await;
    let mut a1 = c.ws(&r1, &t).await;
    let mut b1 = c.ws(&r1, &t).await;
    let mut a2 = c.ws(&r2, &t).await;
    a2.roundtrip_ping().await;
    b1.roundtrip_ping().await;

    a1.send_message(&r1, "only for room 1").await;
    assert_message(&b1.next_message().await, &r1, &u, "only for room 1");
    a2.send_message(&r2, "only for room 2").await;
    // a2's next message is its own, not room 1's.
    let m = a2.next_message().await;
    assert_message(&m, &r2, &u, "only for room 2");
    // Room 1 never sees room 2's message.
    a1.next_message().await; // its own
    a1.expect_none_of_types(&["message"], QUIET).await;
    b1.expect_none_of_types(&["message"], QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_increase_by_one_without_gaps_across_senders() {
    let c = client();
    let room = unique_name("ids");
    let (_, t1) = c.new_user("s1").await;
    let (_, t2) = c.new_user("s2").await;
    let mut s1 = c.ws(&room, &t1).await;
    let mut s2 = c.ws(&room, &t2).await;
    let mut watcher = c.ws(&room, &t1).await;
    watcher.roundtrip_ping().await;
    s2.roundtrip_ping().await;

    let n = 30;
    for i in 0..n {
        let sender = if i % 3 == 0 { &mut s2 } else { &mut s1 };
        sender.send_message(&room, &format!("m{i}")).await;
    }
    let mut ids = Vec::new();
    let mut seen_contents = Vec::new();
    for _ in 0..n {
        let m = watcher.next_message().await;
        ids.push(m["id"].as_i64().expect("integer id"));
        seen_contents.push(m["content"].as_str().unwrap().to_string());
    }
    for w in ids.windows(2) {
        assert_eq!(w[1], w[0] + 1, "ids must increase by one: {ids:?}");
    }
    // Each sender's own messages arrive in the order it sent them.
    let from_s1: Vec<&String> = seen_contents
        .iter()
        .filter(|c| c[1..].parse::<usize>().unwrap() % 3 != 0)
        .collect();
    let expected_s1: Vec<String> = (0..n)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("m{i}"))
        .collect();
    assert_eq!(from_s1, expected_s1.iter().collect::<Vec<_>>());
    // A room's first message in a fresh room has a positive id, and all n arrived at s1 too.
    assert!(ids[0] >= 1, "{ids:?}");
    let mut count = 0;
    while count < n {
        s1.next_message().await;
        count += 1;
    }
}

/// Every kind of bad frame gets an error frame to its sender only, uses no id, and the socket keeps
/// working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_an_error_to_the_sender_only_and_messages_keep_flowing() {
    let c = client();
    let room = unique_name("bad");
    let (alice, ta) = c.new_user("alice").await;
    let (_, tb) = c.new_user("bob").await;
    let mut a = c.ws(&room, &ta).await;
    let mut b = c.ws(&room, &tb).await;
    b.roundtrip_ping().await;

    a.send_message(&room, "first").await;
    let mut last_id = assert_message(&a.next_message().await, &room, &alice, "first");
    b.next_message().await;

    let other_room = unique_name("other");
    let bad_text_frames: Vec<(&str, String)> = vec![
        ("not JSON", "hello there".into()),
        (
            "truncated JSON",
            "{\"content\": \"x\", \"room_id\": ".into(),
        ),
        ("JSON array", json!(["x", room]).to_string()),
        ("JSON null", "null".into()),
        ("JSON number", "42".into()),
        ("content missing", json!({"room_id": room}).to_string()),
        (
            "content a number",
            json!({"content": 5, "room_id": room}).to_string(),
        ),
        (
            "content null",
            json!({"content": null, "room_id": room}).to_string(),
        ),
        (
            "content an object",
            json!({"content": {"x": 1}, "room_id": room}).to_string(),
        ),
        (
            "content empty",
            json!({"content": "", "room_id": room}).to_string(),
        ),
        (
            "content 4001 chars",
            json!({"content": "x".repeat(4001), "room_id": room}).to_string(),
        ),
        (
            "room_id mismatch",
            json!({"content": "wrong room", "room_id": other_room}).to_string(),
        ),
        (
            "room_id a number",
            json!({"content": "x", "room_id": 7}).to_string(),
        ),
    ];
    // Every kind is tried, and all the ones wrongly accepted are reported together.
    let mut accepted = Vec::new();
    for (what, frame) in &bad_text_frames {
        a.send_text(frame.clone()).await;
        let flow = expect_error_then_flow(&mut a, &mut b, &room, &alice, what, &mut last_id);
        if let Err(why) = flow.await {
            accepted.push(why);
        }
    }
    a.send_binary(br#"{"content":"binary","room_id":"x"}"#.to_vec())
        .await;
    let flow = expect_error_then_flow(&mut a, &mut b, &room, &alice, "binary frame", &mut last_id);
    if let Err(why) = flow.await {
        accepted.push(why);
    }
    assert!(
        accepted.is_empty(),
        "bad frames broadcast instead of refused:\n{}",
        accepted.join("\n")
    );
}

async fn expect_error_then_flow(
    a: &mut WsClient,
    b: &mut WsClient,
    room: &str,
    alice: &str,
    what: &str,
    last_id: &mut i64,
) -> Result<(), String> {
    let e = a
        .try_next_of_types(&["error", "message"], FRAME_TIMEOUT)
        .await
        .unwrap_or_else(|why| panic!("{what}: no error frame ({why}); seen {}", a.seen_summary()));
    if e["type"] == "message" {
        // Wrongly broadcast: note it, take the copies out of the way and go on with the next kind.
        *last_id = e["id"].as_i64().unwrap_or(*last_id + 1);
        let copy = b.next_of_types(&["message", "error"]).await;
        assert_eq!(copy, e, "{what}");
        return Err(format!("{what}: broadcast as {e}"));
    }
    assert!(
        e["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}: error frame without detail: {e}"
    );
    let content = format!("after {what}");
    a.send_message(room, &content).await;
    let m = a.next_message().await;
    let id = assert_message(&m, room, alice, &content);
    assert_eq!(
        id,
        *last_id + 1,
        "{what}: a refused frame must not use an id"
    );
    *last_id = id;
    // The other member saw neither the error nor the bad frame: its next frame is the good one.
    let seen_by_b = b.next_of_types(&["message", "error"]).await;
    assert_eq!(
        seen_by_b, m,
        "{what}: the other member must only see the good message"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_id_mismatch_is_an_error_frame_and_not_delivered_anywhere() {
    let c = client();
    let (r1, r2) = (unique_name("here"), unique_name("there"));
    let (_, t) = c.new_user("mism").await;
    let mut a = c.ws(&r1, &t).await;
    let mut there = c.ws(&r2, &t).await;
    there.roundtrip_ping().await;
    a.send_message(&r2, "aimed at the other room").await;
    let e = a.next_of_types(&["error", "message"]).await;
    assert_eq!(e["type"], "error", "{e}");
    there
        .expect_none_of_types(&["message", "error"], QUIET)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_limits_count_characters_and_content_round_trips_exactly() {
    let c = client();
    let room = unique_name("limits");
    let (u, t) = c.new_user("limits").await;
    let mut a = c.ws(&room, &t).await;
    let tricky = [
        "x".repeat(4000),
        "é".repeat(4000), // 4000 chars, 8000 bytes
        "a\"quote\" and \\backslash\\ and\nnewline\ttab".to_string(),
        "emoji 🦀👩‍👩‍👧 and RTL שלום and CJK 漢字".to_string(),
        "</script><script>alert(1)</script>".to_string(),
        "\u{0} nul and \u{1f} control".to_string(),
        " leading and trailing spaces ".to_string(),
    ];
    for content in &tricky {
        a.send_message(&room, content).await;
        let m = a.next_of_types(&["message", "error"]).await;
        assert_eq!(
            m["type"],
            "message",
            "{}-char content refused: {m}",
            content.chars().count()
        );
        assert_message(&m, &room, &u, content);
    }
}

/// Frames over 64 KiB are refused (error frame or close 1009) and never broadcast, even when
/// their content alone would be valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_64_kib_are_refused_and_never_broadcast() {
    let c = client();
    let room = unique_name("big");
    let (_, ta) = c.new_user("big").await;
    let (bob, tb) = c.new_user("bob").await;
    let mut a = c.ws(&room, &ta).await;
    let mut b = c.ws(&room, &tb).await;
    b.roundtrip_ping().await;

    // Valid JSON with valid content, padded with whitespace past 64 KiB.
    let frame = format!(
        "{{\"content\": \"oversized\", \"room_id\": \"{room}\"{}}}",
        " ".repeat(64 * 1024 + 16)
    );
    assert!(frame.len() > 64 * 1024);
    let sent = a.try_send_text(frame).await;
    let outcome = loop {
        match a.next_within(FRAME_TIMEOUT).await {
            Some(Incoming::Json(v)) if v["type"] == "error" => break format!("error frame {v}"),
            Some(Incoming::Json(v)) if v["type"] == "message" => {
                panic!(
                    "an oversized frame was broadcast: {}",
                    &v.to_string()[..200]
                )
            }
            Some(Incoming::Closed(Some((code, _)))) => {
                assert_eq!(code, 1009, "close code for an oversized frame");
                break "close 1009".to_string();
            }
            Some(Incoming::Closed(None)) => {
                panic!("connection dropped without a close frame (sent: {sent})")
            }
            Some(_) => continue,
            None => panic!("no error frame nor close 1009 within {FRAME_TIMEOUT:?}"),
        }
    };
    eprintln!("oversized frame: {outcome}");
    // The room still works, and the oversized frame never reached it.
    b.send_message(&room, "after the big one").await;
    let m = b.next_message().await;
    assert_message(&m, &room, &bob, "after the big one");
    if outcome.starts_with("error") {
        let m2 = a.next_message().await;
        assert_eq!(
            m2, m,
            "the sender's socket keeps working after an error frame"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_pong_and_is_not_broadcast() {
    let c = client();
    let room = unique_name("ping");
    let (_, t) = c.new_user("ping").await;
    let mut a = c.ws(&room, &t).await;
    let mut b = c.ws(&room, &t).await;
    b.roundtrip_ping().await;
    a.send_text("ping").await;
    assert_eq!(a.next_plain_text().await, "pong");
    b.expect_none_of_types(&["message", "error"], QUIET).await;
    let pongs = b
        .seen
        .iter()
        .filter(|i| matches!(i, Incoming::Text(t) if t == "pong"))
        .count();
    assert_eq!(
        pongs,
        1,
        "b must only get the pong of its own ping: {}",
        b.seen_summary()
    );
}

/// A sender that waits for each echo has its messages stored at once after a few of them
/// (`src/pace.rs`), now and then one still taking the timer (a probe); then it sends a burst
/// without waiting. Every member gets every message once and in id order, ids have no gap, and a
/// socket that joins in between gets the history up to there and the rest live, with nothing
/// missed or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_at_a_time_then_a_burst_reach_every_member_once_and_in_order() {
    let c = client();
    let room = unique_name("pace");
    let (_, t1) = c.new_user("p1").await;
    let (_, t2) = c.new_user("p2").await;
    let mut sender = c.ws(&room, &t1).await;
    let mut member = c.ws(&room, &t2).await;
    member.roundtrip_ping().await;
    sender.roundtrip_ping().await;

    // One at a time (13: the 4 the rule waits for, 8 stored at once, and its first probe), then a
    // burst of 7: 20 in all, within the default per-connection burst allowance.
    const ONE_AT_A_TIME: usize = 13;
    const BURST: usize = 7;
    let mut sent = Vec::new();
    for i in 0..ONE_AT_A_TIME {
        sender.send_message(&room, &format!("one {i}")).await;
        sent.push(sender.next_message().await["id"].as_i64().expect("id"));
    }
    let mut late = c.ws(&room, &t2).await;
    let (history, _) = history_and_presence(&mut late).await;
    for i in 0..BURST {
        sender.send_message(&room, &format!("burst {i}")).await;
    }
    for _ in 0..BURST {
        sent.push(sender.next_message().await["id"].as_i64().expect("id"));
    }

    for w in sent.windows(2) {
        assert_eq!(w[1], w[0] + 1, "ids must increase by one: {sent:?}");
    }
    let mut got = Vec::new();
    for _ in 0..sent.len() {
        got.push(member.next_message().await["id"].as_i64().expect("id"));
    }
    assert_eq!(got, sent, "the member's messages, in order");
    assert_eq!(
        ids(&history["messages"]),
        sent[..ONE_AT_A_TIME],
        "the late socket's history"
    );
    let mut live = Vec::new();
    for _ in ONE_AT_A_TIME..sent.len() {
        live.push(late.next_message().await["id"].as_i64().expect("id"));
    }
    assert_eq!(
        live,
        sent[ONE_AT_A_TIME..],
        "the late socket's live messages"
    );
    member.expect_none_of_types(&["message"], QUIET).await;
    late.expect_none_of_types(&["message"], QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_in_one_room_all_get_every_broadcast() {
    let c = client();
    let room = unique_name("crowd");
    // 20 users with 5 sockets each (several tabs; within the default per-user socket cap).
    let users: Vec<(String, String)> = bounded_join((0..20).collect(), 4, |i| {
        let c = c.clone();
        async move { c.new_user(&format!("crowd{i}")).await }
    })
    .await;
    let tokens: Vec<String> = (0..100).map(|i| users[i % 20].1.clone()).collect();
    let mut clients: Vec<WsClient> = bounded_join(tokens, 10, |t| {
        let (c, room) = (c.clone(), room.clone());
        async move { c.ws(&room, &t).await }
    })
    .await;
    // Everyone is connected and read by the server before the broadcast.
    for ws in clients.iter_mut() {
        ws.roundtrip_ping().await;
    }

    for (round, sender) in [0usize, 99].into_iter().enumerate() {
        let content = format!("hello crowd, round {round}");
        clients[sender].send_message(&room, &content).await;
        let received: Vec<Value> =
            bounded_join(clients.iter_mut().collect(), 100, |ws| async move {
                ws.next_message().await
            })
            .await;
        let first = &received[0];
        assert_message(first, &room, &users[sender % 20].0, &content);
        for (i, m) in received.iter().enumerate() {
            assert_eq!(m, first, "client {i} got a different frame");
        }
    }
}

/// Arbitrary printable Unicode content comes back byte for byte (JSON escaping both ways).
#[test]
fn arbitrary_content_round_trips_exactly() {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let c = client(); // starts the shared server outside any runtime
    let rt = tokio::runtime::Runtime::new().unwrap();
    let room = unique_name("prop");
    let (user, token) = rt.block_on(c.new_user("prop"));
    let ws = tokio::sync::Mutex::new(rt.block_on(c.ws(&room, &token)));
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        ..Config::default()
    });
    // `\PC`: any char but control ones; a leading "p" keeps it from being blank.
    let result = runner.run(&"\\PC{0,120}", |s| {
        let content = format!("p{s}");
        let m = rt.block_on(async {
            let mut ws = ws.lock().await;
            ws.send_message(&room, &content).await;
            ws.next_of_types(&["message", "error"]).await
        });
        if m["type"] != "message"
            || m["content"] != content.as_str()
            || m["username"] != user.as_str()
        {
            return Err(TestCaseError::fail(format!("sent {content:?}, got {m}")));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
