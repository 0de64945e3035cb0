//! Messages people can fix: edits, deletions, reactions and typing, the revision every change
//! carries, and the exact catch-up of changes (`?rev=`).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

/// A room of its own with two people in it, both sockets past their history and presence.
async fn two_in_a_room(c: &Client, prefix: &str) -> (String, [(String, String); 2], [WsClient; 2]) {
    let room = unique_name(prefix);
    let (ann, bob) = (c.new_user("ann").await, c.new_user("bob").await);
    let mut wa = c.ws(&room, &ann.1).await;
    wa.history_and_presence().await;
    let mut wb = c.ws(&room, &bob.1).await;
    wb.history_and_presence().await;
    (room, [ann, bob], [wa, wb])
}

/// Sends `frame` and returns the error frame's detail the sender gets for it.
async fn refused(ws: &mut WsClient, frame: Value) -> String {
    ws.send_json(&frame).await;
    let e = ws.next_of_type("error").await;
    e["detail"].as_str().unwrap_or_default().to_owned()
}

fn rev(frame: &Value) -> i64 {
    frame["rev"]
        .as_i64()
        .unwrap_or_else(|| panic!("integer rev: {frame}"))
}

/// Every message of `room` over HTTP, oldest first, by paging back from the newest.
async fn all_messages(c: &Client, room: &str, token: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut before = String::new();
    loop {
        let page = c
            .get_ok(&format!("/rooms/{room}/messages?limit=100{before}"), token)
            .await;
        let mut messages = page["messages"].as_array().cloned().unwrap_or_default();
        let Some(first) = messages.first().map(|m| m["id"].as_i64().unwrap()) else {
            break;
        };
        messages.append(&mut out);
        out = messages;
        if page["has_more"] != true {
            break;
        }
        before = format!("&before={first}");
    }
    out
}

#[tokio::test]
async fn edits_reach_everyone_and_only_the_author_may_edit() {
    let c = client();
    let (room, [ann, _bob], [mut wa, mut wb]) = two_in_a_room(&c, "edit").await;
    wa.send_message(&room, "helo").await;
    let m = wa.next_message_with("helo").await;
    let id = m["id"].as_i64().unwrap();
    assert!(rev(&m) > 0, "message frames carry a revision: {m}");

    wa.send_json(&json!({"type": "edit", "id": id, "content": "hello", "room_id": room}))
        .await;
    for ws in [&mut wa, &mut wb] {
        let e = ws.next_of_type("edited").await;
        assert_eq!(e["id"], id);
        assert_eq!(e["content"], "hello");
        assert_eq!(e["username"], ann.0.as_str());
        assert_eq!(e["room_id"], room.as_str());
        assert!(e["edited_ts"].as_i64().unwrap() >= m["ts"].as_i64().unwrap());
        assert!(rev(&e) > rev(&m), "a change takes a later revision: {e}");
    }

    // Refusals go to the sender only, and its socket keeps working.
    let not_yours = json!({"type": "edit", "id": id, "content": "hijacked"});
    assert_eq!(refused(&mut wb, not_yours).await, "not your message");
    let unknown = json!({"type": "edit", "id": id + 1000, "content": "x"});
    assert_eq!(refused(&mut wa, unknown).await, "unknown message id");
    let blank = json!({"type": "edit", "id": id, "content": "   "});
    assert!(refused(&mut wa, blank).await.contains("empty"));
    let too_long = json!({"type": "edit", "id": id, "content": "x".repeat(4001)});
    assert!(refused(&mut wa, too_long).await.contains("too long"));
    let no_id = json!({"type": "edit", "content": "x"});
    assert!(refused(&mut wa, no_id).await.contains("id must be"));
    let other_room = json!({"type": "edit", "id": id, "content": "x", "room_id": "elsewhere"});
    assert!(refused(&mut wa, other_room)
        .await
        .contains("does not match"));
    wa.expect_none_of_types(&["error", "edited"], Duration::from_millis(300))
        .await;
    wb.send_message(&room, "still here").await;
    wa.next_message_with("still here").await;

    let messages = all_messages(&c, &room, &ann.1).await;
    assert_eq!(messages[0]["content"], "hello", "paging shows the edit");
    assert!(messages[0]["edited_ts"].is_i64());
}

#[tokio::test]
async fn an_error_answering_a_change_names_its_client_id_and_nothing_else_carries_it() {
    let c = client();
    let (room, [ann, _bob], [mut wa, mut wb]) = two_in_a_room(&c, "chgid").await;
    wa.send_message(&room, "ann's words").await;
    let id = wa.next_message_with("ann's words").await["id"]
        .as_i64()
        .unwrap();
    wb.next_message_with("ann's words").await;

    let error = |detail: &str, client_id: Option<&str>| {
        let mut e = json!({"type": "error", "detail": detail});
        if let Some(client_id) = client_id {
            e["client_id"] = json!(client_id);
        }
        e
    };
    let long_id = "x".repeat(65);
    let cases = [
        (
            json!({"type": "edit", "id": id, "content": "hijacked", "client_id": "b-edit"}),
            error("not your message", Some("b-edit")),
        ),
        (
            json!({"type": "delete", "id": id + 1000, "room_id": room, "client_id": "b-del"}),
            error("unknown message id", Some("b-del")),
        ),
        (
            json!({"type": "react", "id": id, "emoji": "ok", "client_id": "b-emoji"}),
            error(
                "emoji must be one emoji: 1-32 bytes, no letters, digits, spaces or control characters",
                Some("b-emoji"),
            ),
        ),
        (
            json!({"type": "read", "id": id + 1000, "client_id": "b-read"}),
            error("no message with that id in this room yet", Some("b-read")),
        ),
        // Without a client_id, or with an invalid one (refused for it): none named.
        (
            json!({"type": "edit", "id": id, "content": "hijacked"}),
            error("not your message", None),
        ),
        (
            json!({"type": "react", "id": id, "emoji": "👍", "client_id": long_id}),
            error("client_id must be 1-64 characters", None),
        ),
    ];
    for (frame, want) in cases {
        wb.send_json(&frame).await;
        let answer = wb.next_of_types(&["error", "edited", "deleted", "reactions", "read"]);
        assert_eq!(answer.await, want, "the answer to {frame}");
    }
    // The refused reaction (its client_id was invalid) reached nobody.
    wa.expect_none_of_types(&["reactions", "error"], QUIET)
        .await;

    // A change's client_id tags its errors only: an applied change is broadcast as ever.
    wa.send_json(
        &json!({"type": "edit", "id": id, "content": "ann's fixed words", "client_id": "a-edit"}),
    )
    .await;
    let edited = wa.next_of_types(&["edited", "error"]).await;
    let want = json!({
        "type": "edited", "id": id, "rev": rev(&edited), "content": "ann's fixed words",
        "edited_ts": edited["edited_ts"].as_i64().expect("an integer edited_ts"),
        "username": ann.0, "room_id": room,
    });
    assert_eq!(edited, want);
    assert_eq!(wb.next_of_types(&["edited", "error"]).await, want);
}

#[tokio::test]
async fn deletes_leave_a_tombstone_and_only_the_author_or_the_owner_may_delete() {
    let c = client();
    let (room, [ann, bob], [mut wa, mut wb]) = two_in_a_room(&c, "delete").await;
    wa.send_message(&room, "regret").await;
    let id = wa.next_message_with("regret").await["id"].as_i64().unwrap();
    wb.next_message_with("regret").await;

    let by_bob = json!({"type": "delete", "id": id});
    assert_eq!(
        refused(&mut wb, by_bob).await,
        "not your message",
        "a public room has no owner: only the author deletes"
    );
    wa.send_json(&json!({"type": "delete", "id": id})).await;
    for ws in [&mut wa, &mut wb] {
        let d = ws.next_of_type("deleted").await;
        assert_eq!(d["id"], id);
        assert_eq!(d["by"], ann.0.as_str());
        assert_eq!(d["room_id"], room.as_str());
    }
    assert_eq!(
        refused(&mut wa, json!({"type": "delete", "id": id})).await,
        "message already deleted"
    );
    let edit = json!({"type": "edit", "id": id, "content": "x"});
    assert_eq!(refused(&mut wa, edit).await, "message already deleted");
    let react = json!({"type": "react", "id": id, "emoji": "👍"});
    assert_eq!(refused(&mut wb, react).await, "message already deleted");

    // The content is gone from storage: paging and a new socket's history show a tombstone.
    let tombstone = json!({"id": id, "room_id": room, "username": ann.0, "ts": null, "rev": null, "deleted": true});
    let paged = all_messages(&c, &room, &bob.1).await;
    let mut wc = c.ws(&room, &bob.1).await;
    let (history, _) = wc.history_and_presence().await;
    for shown in [&paged[0], &history["messages"][0]] {
        let mut shown = shown.clone();
        assert!(shown.get("content").is_none(), "no content: {shown}");
        shown["ts"] = Value::Null;
        shown["rev"] = Value::Null;
        assert_eq!(shown, tombstone);
    }

    // In a private room its owner may delete anyone's message.
    let private = unique_name("owned");
    c.private_room_with_member(&ann.1, &private, &bob.0).await;
    let mut owner = c.ws(&private, &ann.1).await;
    owner.history_and_presence().await;
    let mut member = c.ws(&private, &bob.1).await;
    member.history_and_presence().await;
    member.send_message(&private, "spam").await;
    let spam = member.next_message_with("spam").await["id"]
        .as_i64()
        .unwrap();
    owner
        .send_json(&json!({"type": "delete", "id": spam}))
        .await;
    let d = member.next_of_type("deleted").await;
    assert_eq!(
        (d["id"].as_i64(), d["by"].as_str()),
        (Some(spam), Some(ann.0.as_str()))
    );
    // ...but not edit it.
    member.send_message(&private, "mine").await;
    let mine = owner.next_message_with("mine").await["id"]
        .as_i64()
        .unwrap();
    let edit = json!({"type": "edit", "id": mine, "content": "put in my mouth"});
    assert_eq!(refused(&mut owner, edit).await, "not your message");
}

#[tokio::test]
async fn reactions_carry_the_whole_state_and_are_bounded() {
    let c = client();
    let (room, [ann, bob], [mut wa, mut wb]) = two_in_a_room(&c, "react").await;
    wa.send_message(&room, "react to me").await;
    let id = wa.next_message_with("react to me").await["id"]
        .as_i64()
        .unwrap();

    wb.send_json(&json!({"type": "react", "id": id, "emoji": "👍"}))
        .await;
    for ws in [&mut wa, &mut wb] {
        let r = ws.next_of_type("reactions").await;
        assert_eq!(r["reactions"], json!({"👍": [bob.0]}));
    }
    wa.send_json(&json!({"type": "react", "id": id, "emoji": "👍"}))
        .await;
    for ws in [&mut wa, &mut wb] {
        let r = ws.next_of_type("reactions").await;
        let in_order = json!({"👍": [bob.0, ann.0]});
        assert_eq!(r["reactions"], in_order, "in the order made");
    }
    // Twice the same: nothing changes, nothing is sent, no revision is taken.
    wb.send_json(&json!({"type": "react", "id": id, "emoji": "👍"}))
        .await;
    wa.expect_none_of_types(&["reactions", "error"], Duration::from_millis(500))
        .await;

    for bad in ["ok", "", "👍 ", "1", "\u{7}", &"😀".repeat(9)] {
        let frame = json!({"type": "react", "id": id, "emoji": bad});
        assert!(refused(&mut wb, frame).await.contains("emoji"), "{bad:?}");
    }
    let unknown = json!({"type": "react", "id": id + 1000, "emoji": "🎉"});
    assert_eq!(refused(&mut wb, unknown).await, "unknown message id");

    // Up to 20 distinct emoji on one message; the 21st is refused, more people on one are fine.
    for i in 1..20u32 {
        let emoji = char::from_u32(0x1F600 + i).unwrap().to_string();
        wb.send_json(&json!({"type": "react", "id": id, "emoji": emoji}))
            .await;
        wb.next_of_type("reactions").await;
    }
    let r = json!({"type": "react", "id": id, "emoji": "🦀"});
    assert_eq!(
        refused(&mut wb, r).await,
        "too many reactions (limit 20 emoji per message)"
    );
    wa.send_json(&json!({"type": "unreact", "id": id, "emoji": "👍"}))
        .await;
    let r = wb.next_of_type("reactions").await;
    assert_eq!(r["reactions"]["👍"], json!([bob.0]));
    assert_eq!(r["reactions"].as_object().unwrap().len(), 20);

    let shown = &all_messages(&c, &room, &ann.1).await[0];
    assert_eq!(
        shown["reactions"], r["reactions"],
        "paging shows the reactions"
    );
}

#[tokio::test]
async fn typing_goes_to_the_others_only_at_most_every_three_seconds_and_is_never_stored() {
    let c = client();
    let (room, [ann, bob], [mut wa, mut wb]) = two_in_a_room(&c, "typing").await;
    let mut wa2 = c.ws(&room, &ann.1).await;
    wa2.history_and_presence().await;
    wa.send_json(&json!({"type": "typing"})).await;
    let t = wb.next_of_type("typing").await;
    assert_eq!(t, json!({"type": "typing", "username": ann.0}));
    // Not to the typist's own sockets.
    for own in [&mut wa, &mut wa2] {
        own.expect_none_of_types(&["typing"], Duration::from_millis(300))
            .await;
    }
    // Again within 3 s: dropped silently (no error either).
    wa.send_json(&json!({"type": "typing", "room_id": room}))
        .await;
    wb.expect_none_of_types(&["typing"], Duration::from_millis(1000))
        .await;
    wa.expect_none_of_types(&["error"], Duration::from_millis(100))
        .await;
    // Someone else's typing is their own.
    wb.send_json(&json!({"type": "typing"})).await;
    assert_eq!(wa.next_of_type("typing").await["username"], bob.0.as_str());

    // Never stored: no message, no revision taken.
    let (history, _) = c.ws(&room, &bob.1).await.history_and_presence().await;
    assert_eq!(history["messages"], json!([]));
    assert_eq!(history["rev"], 0);
    assert!(all_messages(&c, &room, &bob.1).await.is_empty());
}

#[tokio::test]
async fn changes_share_the_message_rate_limit_and_typing_has_its_own() {
    let server = start(
        ServerOptions::default()
            .var("RATE_LIMIT_PER_SEC", "1")
            .var("RATE_LIMIT_BURST", "3"),
    )
    .await;
    let c = server.client();
    let room = unique_name("limit");
    let (_, token) = c.new_user("ann").await;
    let mut ws = c.ws(&room, &token).await;
    ws.history_and_presence().await;
    ws.send_message(&room, "one").await;
    let id = ws.next_message_with("one").await["id"].as_i64().unwrap();
    // Typing frames do not use message tokens (their own bucket drops extras silently).
    for _ in 0..8 {
        ws.send_json(&json!({"type": "typing"})).await;
    }
    ws.send_json(&json!({"type": "edit", "id": id, "content": "two"}))
        .await;
    ws.next_of_type("edited").await;
    ws.send_json(&json!({"type": "react", "id": id, "emoji": "👍"}))
        .await;
    ws.next_of_type("reactions").await;
    // The burst of 3 is spent: the next change is refused with a retry time.
    ws.send_json(&json!({"type": "delete", "id": id})).await;
    let e = ws.next_of_types(&["error", "deleted"]).await;
    assert_eq!(e["detail"], "rate limited", "{e}");
    assert!(e["retry_after_ms"].as_u64().unwrap() > 0);
}

/// What a client holds of a room: messages by id, as it applies history items and live frames.
#[derive(Default)]
struct Replica {
    messages: BTreeMap<i64, Value>,
    /// Ids of every `message` item or frame applied (none may come twice).
    created: HashSet<i64>,
    rev: i64,
}

impl Replica {
    fn apply(&mut self, frame: &Value) {
        let id = frame["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("id: {frame}"));
        match frame["type"].as_str() {
            Some("message") => {
                assert!(self.created.insert(id), "message {id} applied twice");
                let mut m = frame.clone();
                m.as_object_mut().unwrap().remove("type");
                self.messages.insert(id, m);
            }
            Some("edited") => {
                let m = self.messages.get_mut(&id).expect("edit of a known message");
                m["content"] = frame["content"].clone();
                m["edited_ts"] = frame["edited_ts"].clone();
            }
            Some("deleted") => {
                let m = self
                    .messages
                    .get_mut(&id)
                    .expect("delete of a known message");
                let o = m.as_object_mut().unwrap();
                for gone in ["content", "edited_ts", "reactions"] {
                    o.remove(gone);
                }
                o.insert("deleted".into(), true.into());
            }
            Some("reactions") => {
                let m = self
                    .messages
                    .get_mut(&id)
                    .expect("reactions of a known message");
                let o = m.as_object_mut().unwrap();
                if frame["reactions"].as_object().is_some_and(|r| r.is_empty()) {
                    o.remove("reactions");
                } else {
                    o.insert("reactions".into(), frame["reactions"].clone());
                }
            }
            other => panic!("not a log frame: {other:?} {frame}"),
        }
        self.rev = self.rev.max(rev(frame));
    }

    /// Reads frames until `quiet` passes without a log frame.
    async fn follow(&mut self, ws: &mut WsClient, quiet: Duration) {
        let types = ["message", "edited", "deleted", "reactions"];
        while let Ok(frame) = ws.try_next_of_types(&types, quiet).await {
            self.apply(&frame);
        }
    }
}

/// One person's traffic: messages, edits and deletions of their own, reactions to anyone's.
async fn chatter(c: Client, room: String, token: String, rounds: usize, seed: u64) {
    let mut ws = c.ws(&room, &token).await;
    let (history, _) = ws.history_and_presence().await;
    let mut others: Vec<i64> = ids(&history["messages"]);
    let mut mine: Vec<i64> = Vec::new();
    let emoji = ["👍", "🎉", "😂", "❤️"];
    for round in 0..rounds {
        let pick = (seed as usize).wrapping_mul(31).wrapping_add(round * 7);
        let content = format!("m{seed}-{round}");
        ws.send_message(&room, &content).await;
        // Error frames (a reaction to a message someone deleted meanwhile) are skipped.
        let echo = loop {
            let m = ws.next_of_type("message").await;
            if m["content"] == content.as_str() {
                break m;
            }
        };
        mine.push(echo["id"].as_i64().unwrap());
        let id = mine[pick % mine.len()];
        match round % 4 {
            0 => {
                ws.send_json(
                    &json!({"type": "edit", "id": id, "content": format!("e{seed}-{round}")}),
                )
                .await
            }
            1 if mine.len() > 2 => {
                ws.send_json(&json!({"type": "delete", "id": mine.remove(pick % mine.len())}))
                    .await
            }
            _ => {
                others.extend(mine.iter().copied());
                let target = others[pick % others.len()];
                let add = round % 3 != 0;
                let kind = if add { "react" } else { "unreact" };
                ws.send_json(&json!({"type": kind, "id": target, "emoji": emoji[pick % 4]}))
                    .await
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Errors (a reaction to a message deleted meanwhile) are fine; the last frames must land.
    ws.roundtrip_ping().await;
}

#[tokio::test]
async fn a_reconnect_with_rev_catches_up_every_change_exactly_under_load() {
    let c = client();
    let room = unique_name("catchup");
    let users = c.new_users("talker", 3).await;
    let (_, watcher) = c.new_user("watcher").await;
    let mut replica = Replica::default();
    let mut ws = c.ws(&room, &watcher).await;
    let (history, _) = ws.history_and_presence().await;
    replica.rev = rev(&history);

    let talkers: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, (_, token))| {
            tokio::spawn(chatter(
                c.clone(),
                room.clone(),
                token.clone(),
                40,
                i as u64 + 1,
            ))
        })
        .collect();
    for _ in 0..4 {
        replica.follow(&mut ws, Duration::from_millis(150)).await;
        ws.close().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        ws = WsClient::connect(&format!(
            "{}&rev={}",
            c.ws_url(&room, &watcher),
            replica.rev
        ))
        .await
        .expect("reconnect with rev");
        let (history, _) = ws.history_and_presence().await;
        assert_eq!(history["truncated"], false, "{history}");
        let items = history["messages"].as_array().unwrap();
        let revs: Vec<i64> = items.iter().map(rev).collect();
        assert!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "items in rev order: {revs:?}"
        );
        assert!(revs.iter().all(|&r| r > replica.rev && r <= rev(&history)));
        for item in items {
            replica.apply(item);
        }
        replica.rev = replica.rev.max(rev(&history));
    }
    for t in talkers {
        t.await.unwrap();
    }
    replica.follow(&mut ws, Duration::from_millis(1000)).await;

    let stored = all_messages(&c, &room, &watcher).await;
    assert!(stored.len() > 100, "traffic happened: {}", stored.len());
    let held: Vec<Value> = replica.messages.values().cloned().collect();
    assert_eq!(held.len(), stored.len());
    for (mine, theirs) in held.iter().zip(&stored) {
        assert_eq!(mine, theirs, "the replica is the room's state");
    }
}

#[tokio::test]
async fn a_revision_the_room_no_longer_keeps_is_truncated_and_a_bad_one_is_422() {
    let server = start(ServerOptions::relaxed_limits().var("HISTORY_CAP", "100")).await;
    let c = server.client();
    let room = unique_name("capped");
    let (_, token) = c.new_user("ann").await;
    let mut ws = c.ws(&room, &token).await;
    ws.history_and_presence().await;
    let sent = ws.send_n(&room, "fill", 130).await;
    let mut old = WsClient::connect(&format!("{}&rev=5", c.ws_url(&room, &token)))
        .await
        .unwrap();
    let (history, _) = old.history_and_presence().await;
    assert_eq!(
        history["truncated"], true,
        "messages after rev 5 were dropped"
    );
    let last = history["messages"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last["type"], "message");
    assert_eq!(
        last["id"].as_i64(),
        sent.last().copied(),
        "the newest, to start from"
    );

    let mut recent = WsClient::connect(&format!("{}&rev={}", c.ws_url(&room, &token), sent[125]))
        .await
        .unwrap();
    let (history, _) = recent.history_and_presence().await;
    assert_eq!(history["truncated"], false);
    assert_eq!(ids(&history["messages"]), sent[126..].to_vec());

    for bad in ["-1", "abc", "1.5"] {
        let attempt = c
            .upgrade_attempt(&format!("{}&rev={bad}", ws_path(&room, &token)))
            .await;
        let body = expect_json_error(attempt, 422, "a bad rev").await;
        assert!(body["detail"].as_str().unwrap().contains("rev"), "{body}");
    }
}
