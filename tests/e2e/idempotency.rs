//! Idempotent sends: a message may carry `client_id` (1–64 characters); a second message with the
//! same `client_id` from the same user in the same room within 10 minutes is not stored again, and
//! the sender gets the original back as its echo while the others see nothing new.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

fn with_client_id(room: &str, content: &str, client_id: &str) -> Value {
    json!({"content": content, "room_id": room, "client_id": client_id})
}

/// Every `message` frame that arrives within `wait`.
async fn messages_within(ws: &mut WsClient, wait: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(m) = ws.try_next_of_types(&["message"], wait).await {
        out.push(m);
    }
    out
}

#[tokio::test]
async fn a_resend_with_the_same_client_id_gets_the_original_back_and_is_stored_once() {
    let c = client();
    let room = unique_name("idem");
    let (ann, bob) = (c.new_user("ann").await, c.new_user("bob").await);
    let mut wa = c.ws(&room, &ann.1).await;
    wa.history_and_presence().await;
    let mut wb = c.ws(&room, &bob.1).await;
    wb.history_and_presence().await;

    wa.send_json(&with_client_id(&room, "once", "k-1")).await;
    let original = wa.next_message_with("once").await;
    assert_eq!(
        original["client_id"], "k-1",
        "the echo names its client_id: {original}"
    );
    assert_eq!(wb.next_message_with("once").await["id"], original["id"]);

    // The same client_id again (the content of a resend is the original's; a different one
    // changes nothing): the sender gets the stored message back, unchanged.
    wa.send_json(&with_client_id(&room, "once, again", "k-1"))
        .await;
    let echo = wa.next_of_types(&["message", "error"]).await;
    for field in [
        "type",
        "id",
        "rev",
        "ts",
        "content",
        "username",
        "room_id",
        "client_id",
    ] {
        assert_eq!(
            echo[field], original[field],
            "{field}: {echo} against {original}"
        );
    }
    wb.expect_none_of_types(&["message"], Duration::from_millis(500))
        .await;

    // From a new socket of the same user (a reconnect): still the original, from storage.
    wa.close().await;
    let mut wa2 = c.ws(&room, &ann.1).await;
    wa2.history_and_presence().await;
    wa2.send_json(&with_client_id(&room, "once", "k-1")).await;
    let echo = wa2.next_message().await;
    assert_eq!(echo["id"], original["id"], "{echo}");
    assert_eq!(echo["client_id"], "k-1");
    wb.expect_none_of_types(&["message"], Duration::from_millis(500))
        .await;

    let page = c.get_ok(&format!("/rooms/{room}/messages"), &bob.1).await;
    assert_eq!(
        ids(&page["messages"]),
        vec![original["id"].as_i64().unwrap()],
        "{page}"
    );
}

#[tokio::test]
async fn client_ids_are_per_user_and_messages_without_one_are_never_merged() {
    let c = client();
    let room = unique_name("idem");
    let (ann, bob) = (c.new_user("ann").await, c.new_user("bob").await);
    let mut wa = c.ws(&room, &ann.1).await;
    wa.history_and_presence().await;
    let mut wb = c.ws(&room, &bob.1).await;
    wb.history_and_presence().await;

    wa.send_json(&with_client_id(&room, "ann's", "shared"))
        .await;
    let first = wa.next_message_with("ann's").await;
    wb.send_json(&with_client_id(&room, "bob's", "shared"))
        .await;
    let second = wb.next_message_with("bob's").await;
    assert_ne!(
        first["id"], second["id"],
        "another user's client_id is another message"
    );

    wa.send_message(&room, "same words").await;
    let a = wa.next_message_with("same words").await;
    wa.send_message(&room, "same words").await;
    let b = wa.next_message_with("same words").await;
    assert_ne!(
        a["id"], b["id"],
        "without client_id every frame is a message"
    );
    assert!(
        a.get("client_id").is_none(),
        "no client_id, none echoed: {a}"
    );

    // The same client_id in another room is another message too.
    let other = unique_name("idem");
    let mut wo = c.ws(&other, &ann.1).await;
    wo.history_and_presence().await;
    wo.send_json(&with_client_id(&other, "elsewhere", "shared"))
        .await;
    let m = wo.next_message_with("elsewhere").await;
    assert_eq!(m["room_id"], other.as_str());
}

#[tokio::test]
async fn bad_client_ids_are_refused_and_the_socket_keeps_working() {
    let c = client();
    let room = unique_name("idem");
    let ann = c.new_user("ann").await;
    let mut wa = c.ws(&room, &ann.1).await;
    wa.history_and_presence().await;
    for bad in [json!(""), json!("x".repeat(65)), json!(7), json!(null)] {
        wa.send_json(&json!({"content": "hi", "client_id": bad}))
            .await;
        let e = wa.next_of_types(&["error", "message"]).await;
        if bad.is_null() {
            // JSON null is "no client_id".
            assert_eq!(e["type"], "message", "{e}");
            assert!(e.get("client_id").is_none(), "{e}");
            continue;
        }
        assert_eq!(e["type"], "error", "client_id {bad}: {e}");
        let detail = e["detail"].as_str().unwrap();
        assert!(
            detail.contains("client_id") || detail.contains("invalid message"),
            "{detail}"
        );
    }
    let longest = "é".repeat(64);
    wa.send_json(&with_client_id(&room, "longest id", &longest))
        .await;
    assert_eq!(
        wa.next_message_with("longest id").await["client_id"],
        longest.as_str()
    );
}

#[tokio::test]
async fn an_error_frame_about_a_message_names_its_client_id() {
    let c = client();
    let room = unique_name("idem");
    let ann = c.new_user("ann").await;
    let mut wa = c.ws(&room, &ann.1).await;
    wa.history_and_presence().await;
    // A client_id that JSON has to escape comes back as sent.
    let tricky = "q\"},\"type\":\"message\\\u{2028}é";
    let too_long = "x".repeat(4001);
    let cases = [
        (
            json!({"content": too_long, "room_id": room, "client_id": "c-long"}),
            json!({"type": "error", "detail": "content too long (limit 4000 characters)", "client_id": "c-long"}),
        ),
        (
            json!({"content": " \u{200b} ", "client_id": tricky}),
            json!({"type": "error", "detail": "content must not be empty", "client_id": tricky}),
        ),
        (
            json!({"content": "hi", "room_id": "elsewhere", "client_id": "c-room"}),
            json!({"type": "error", "detail": "room_id does not match this connection's room", "client_id": "c-room"}),
        ),
        // A change is named by its client_id as well (changes::).
        (
            json!({"type": "edit", "id": 1, "content": " ", "client_id": "c-edit"}),
            json!({"type": "error", "detail": "content must not be empty", "client_id": "c-edit"}),
        ),
        // No client_id, or an invalid one: none named.
        (
            json!({"content": "", "room_id": room}),
            json!({"type": "error", "detail": "content must not be empty"}),
        ),
        (
            json!({"content": "", "client_id": "x".repeat(65)}),
            json!({"type": "error", "detail": "content must not be empty"}),
        ),
    ];
    for (frame, want) in cases {
        wa.send_json(&frame).await;
        let e = wa.next_of_types(&["error", "message"]).await;
        assert_eq!(e, want, "the answer to {frame}");
    }

    // A resend of a message deleted since is refused by its client_id.
    wa.send_json(&with_client_id(&room, "short-lived", "c-del"))
        .await;
    let id = wa.next_message_with("short-lived").await["id"].clone();
    wa.send_json(&json!({"type": "delete", "id": id})).await;
    assert_eq!(wa.next_of_type("deleted").await["id"], id);
    wa.send_json(&with_client_id(&room, "short-lived", "c-del"))
        .await;
    assert_eq!(
        wa.next_of_types(&["error", "message"]).await,
        json!({"type": "error", "detail": "the message with this client_id was deleted", "client_id": "c-del"})
    );
}

#[tokio::test]
async fn duplicates_sent_back_to_back_are_stored_once() {
    let c = client();
    let room = unique_name("idem");
    let (ann, bob) = (c.new_user("ann").await, c.new_user("bob").await);
    let mut wa = c.ws(&room, &ann.1).await;
    wa.history_and_presence().await;
    let mut wb = c.ws(&room, &bob.1).await;
    wb.history_and_presence().await;

    // Twenty distinct messages, each sent three times without waiting for any echo: some
    // duplicates meet their original still waiting for its group, some already stored.
    for i in 0..20 {
        let frame = with_client_id(&room, &format!("m{i}"), &format!("c{i}"));
        for _ in 0..3 {
            wa.send_json(&frame).await;
        }
    }
    let seen_by_bob = messages_within(&mut wb, Duration::from_secs(2)).await;
    let contents: Vec<&str> = seen_by_bob
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(contents, expected, "each message once, in order");
    assert_consecutive(&ids(&Value::Array(seen_by_bob.clone())), "ids");

    // The sender may hear of a message more than once (a stored original comes back as the
    // echo of each duplicate), always with the original's id.
    let seen_by_ann = messages_within(&mut wa, Duration::from_millis(500)).await;
    for m in &seen_by_ann {
        let original = seen_by_bob
            .iter()
            .find(|b| b["client_id"] == m["client_id"])
            .unwrap();
        assert_eq!(m["id"], original["id"], "{m}");
    }
    let page = c.get_ok(&format!("/rooms/{room}/messages"), &bob.1).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 20, "{page}");
}
