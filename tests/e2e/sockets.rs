//! The WebSocket contract of a room: refused upgrades, broadcast, message shape and ids, isolation
//! of rooms, bad frames, content round trips, the heartbeat, many clients.

use serde_json::{json, Value};

use crate::harness::*;

/// `members[0]` sends `content`; every member, the sender included, gets the same message frame,
/// from `from`. Returns its id.
async fn broadcast(members: &mut [&mut WsClient], room: &str, from: &str, content: &str) -> i64 {
    members[0].send_message(room, content).await;
    let frame = members[0].next_message().await;
    let id = assert_message(&frame, room, from, content);
    for (i, member) in members.iter_mut().enumerate().skip(1) {
        let m = member.next_message().await;
        assert_eq!(m, frame, "member {i} must get the sender's frame");
    }
    id
}

// ---------------------------------------------------------------------------------------------
// GET /ws/{room}: refused before the upgrade
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_without_upgrade_header_is_426() {
    let c = client();
    let (room, [(_, token)]) = c.room_with_users("lobby", ["noupg"]).await;
    let resp = c.get(&ws_path(&room, &token)).send().await.unwrap();
    expect_json_error(resp, 426, "GET /ws/{room} without Upgrade").await;
}

/// Room ids are 1 to 64 of `[A-Za-z0-9_-]`: 65 characters is a 422, like the 65-character room
/// id of `POST /rooms` (see `length_limits_and_content_types`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_refuses_bad_room_ids() {
    let c = client();
    let (_, token) = c.new_user("badroom").await;
    expect_json_error(
        c.upgrade_attempt(&ws_path(&"a".repeat(65), &token)).await,
        422,
        "ws room id 65 chars",
    )
    .await;
    for room in [
        "bad.room",
        "bad%20room",
        "bad%2Froom",
        "caf%C3%A9",
        "room%00",
        "",
    ] {
        let resp = c.upgrade_attempt(&ws_path(room, &token)).await;
        expect_json_error_in(resp, &[404, 422], &format!("room {room:?}")).await;
    }
    // The longest valid id, with every allowed character class, is accepted.
    let longest = format!("Az09_-{}", "x".repeat(58));
    assert_eq!(longest.len(), 64);
    c.ws_ready(&longest, &token).await;
}

// ---------------------------------------------------------------------------------------------
// Broadcast
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_broadcast_to_everyone_in_the_room_sender_included() {
    let c = client();
    // Both are in the room (and the server reads both) before anything is sent.
    let (room, [(alice, _, mut a), (bob, _, mut b)]) =
        c.room_with_members("bcast", ["alice", "bob"]).await;

    let id = broadcast(&mut [&mut a, &mut b], &room, &alice, "hello from alice").await;
    let next = broadcast(&mut [&mut b, &mut a], &room, &bob, "hi alice").await;
    assert_eq!(next, id + 1);
}

/// The room keeps its list of sockets between broadcasts (`src/room/sockets.rs`): every join and
/// leave between two messages must show in who gets the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_leaves_between_messages_change_who_gets_the_next_one() {
    let c = client();
    let (room, [(alice, ta), (_, tb), (_, tc)]) =
        c.room_with_users("churn", ["alice", "bob", "carol"]).await;
    let mut a = c.ws_ready(&room, &ta).await;
    let first = broadcast(&mut [&mut a], &room, &alice, "one").await;

    // Bob joins after the room has broadcast: he gets the next message live.
    let mut b = c.ws_ready(&room, &tb).await;
    let id = broadcast(&mut [&mut a, &mut b], &room, &alice, "two").await;
    assert_eq!(id, first + 1);

    // Bob leaves and Carol joins before the next message: Carol gets it, Alice still does.
    b.close().await;
    let mut c3 = c.ws_ready(&room, &tc).await;
    let id = broadcast(&mut [&mut a, &mut c3], &room, &alice, "three").await;
    assert_eq!(id, first + 2);

    // Carol leaves; the room keeps working for the one member left, many times over.
    c3.close().await;
    for (k, content) in ["four", "five", "six"].into_iter().enumerate() {
        let id = broadcast(&mut [&mut a], &room, &alice, content).await;
        assert_eq!(id, first + 3 + k as i64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sent_username_is_ignored() {
    let c = client();
    let (room, [(alice, _, mut a), (_, _, mut b)]) =
        c.room_with_members("spoof", ["alice", "bob"]).await;
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
    let mut a2 = c.ws_ready(&r2, &t).await;
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

/// Two senders at once: one id sequence for the room, and each sender's order kept (the same
/// checks with frames sent back to back: `a_burst_of_messages_is_committed_in_groups_…`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_increase_by_one_without_gaps_across_senders() {
    let c = client();
    let (room, [(_, t1, mut s1), (_, _, mut s2)]) = c.room_with_members("ids", ["s1", "s2"]).await;
    let mut watcher = c.ws_ready(&room, &t1).await;

    let n = 30;
    for i in 0..n {
        let sender = if i % 3 == 0 { &mut s2 } else { &mut s1 };
        sender.send_message(&room, &format!("m{i}")).await;
    }
    let seen = watcher.next_messages_consecutive(n).await;
    let contents: Vec<String> = seen.iter().map(|(_, c)| c.clone()).collect();
    // Each sender's own messages arrive in the order it sent them.
    let from_s1: Vec<String> = (0..n)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("m{i}"))
        .collect();
    assert_in_sent_order(&contents, &from_s1, "s1's messages");
    // A room's first message in a fresh room has a positive id, and all n arrived at s1 too.
    assert!(seen[0].0 >= 1, "{seen:?}");
    for _ in 0..n {
        s1.next_message().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Bad frames, content
// ---------------------------------------------------------------------------------------------

/// Every kind of bad frame gets an error frame to its sender only, uses no id, and the socket keeps
/// working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_an_error_to_the_sender_only_and_messages_keep_flowing() {
    let c = client();
    let (room, [(alice, _, mut a), (_, _, mut b)]) =
        c.room_with_members("bad", ["alice", "bob"]).await;
    let mut last_id = broadcast(&mut [&mut a, &mut b], &room, &alice, "first").await;

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
    let mut there = c.ws_ready(&r2, &t).await;
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
    let (room, [(u, t)]) = c.room_with_users("limits", ["limits"]).await;
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

// ---------------------------------------------------------------------------------------------
// Heartbeat
// ---------------------------------------------------------------------------------------------

/// `ping` is answered `pong` (the harness's `roundtrip_ping`), again and again, once the history
/// and presence frames are out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_text_gets_pong() {
    let c = client();
    let (_, t) = c.new_user("pinger").await;
    let mut ws = c.ws(&unique_name("ping"), &t).await;
    ws.history_and_presence().await;
    for _ in 0..3 {
        ws.roundtrip_ping().await;
    }
}

/// A `pong` goes to the socket that sent the `ping` only, even another socket of the same user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_pong_and_is_not_broadcast() {
    let c = client();
    let (room, [(_, t)]) = c.room_with_users("ping", ["ping"]).await;
    let mut a = c.ws(&room, &t).await;
    let mut b = c.ws_ready(&room, &t).await;
    a.roundtrip_ping().await;
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

// ---------------------------------------------------------------------------------------------
// Pace and crowds
// ---------------------------------------------------------------------------------------------

/// A sender that waits for each echo has its messages stored at once after a few of them
/// (`src/room/pace.rs`), now and then one still taking the timer (a probe); then it sends a burst
/// without waiting. Every member gets every message once and in id order, ids have no gap, and a
/// socket that joins in between gets the history up to there and the rest live, with nothing
/// missed or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_at_a_time_then_a_burst_reach_every_member_once_and_in_order() {
    let c = client();
    let (room, [(_, _, mut sender), (_, t2, mut member)]) =
        c.room_with_members("pace", ["p1", "p2"]).await;

    // One at a time (13: the 4 the rule waits for, 8 stored at once, and its first probe), then a
    // burst of 7: 20 in all, within the default per-connection burst allowance.
    const ONE_AT_A_TIME: usize = 13;
    const BURST: usize = 7;
    let mut sent = Vec::new();
    for i in 0..ONE_AT_A_TIME {
        sender.send_message(&room, &format!("one {i}")).await;
        sent.push(sender.next_message_id().await);
    }
    let mut late = c.ws(&room, &t2).await;
    let (history, _) = late.history_and_presence().await;
    for i in 0..BURST {
        sender.send_message(&room, &format!("burst {i}")).await;
    }
    for _ in 0..BURST {
        sent.push(sender.next_message_id().await);
    }

    assert_consecutive(&sent, "the sender's echoes");
    let mut got = Vec::new();
    for _ in 0..sent.len() {
        got.push(member.next_message_id().await);
    }
    assert_eq!(got, sent, "the member's messages, in order");
    assert_eq!(
        ids(&history["messages"]),
        sent[..ONE_AT_A_TIME],
        "the late socket's history"
    );
    let mut live = Vec::new();
    for _ in ONE_AT_A_TIME..sent.len() {
        live.push(late.next_message_id().await);
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
    let users = c.new_users("crowd", 20).await;
    let tokens: Vec<String> = (0..100).map(|i| users[i % 20].1.clone()).collect();
    let mut clients = c.ws_all(&room, tokens, 10).await;
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
