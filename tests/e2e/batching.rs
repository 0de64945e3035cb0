//! Batched delivery (`/ws/{room}?batch=1`): an opted-in socket gets the frames of one outbox
//! flush as one `{"type":"batch","frames":[...]}` frame, a flush of one frame as the bare frame;
//! a plain socket in the same room sees exactly what it always saw. Both see the same frames in
//! the same order; history and catch-up are the same for both.

use serde_json::{json, Value};

use crate::harness::*;

/// Frame types an outbox flush carries.
const LOG_TYPES: [&str; 4] = ["message", "edited", "deleted", "reactions"];

/// What one socket received of the room's log.
#[derive(Default)]
struct Received {
    /// The log frames in order, batches opened.
    frames: Vec<Value>,
    /// Each WebSocket frame that carried log frames: its log frames (one for a bare frame).
    deliveries: Vec<Vec<Value>>,
}

impl Received {
    fn batches(&self) -> impl Iterator<Item = &Vec<Value>> {
        self.deliveries.iter().filter(|d| d.len() > 1)
    }

    fn messages_with_prefix(&self, prefix: &str) -> usize {
        self.frames
            .iter()
            .filter(|f| f["type"] == "message")
            .filter(|f| f["content"].as_str().is_some_and(|c| c.starts_with(prefix)))
            .count()
    }
}

/// Reads `ws` until `done` holds for what it received of the room's log; other frames (presence,
/// typing) are skipped. A `batch` must hold at least two frames, all of them log frames.
async fn read_log(ws: &mut WsClient, done: impl Fn(&Received) -> bool) -> Received {
    let mut got = Received::default();
    while !done(&got) {
        let Incoming::Json(frame) = ws.next().await else {
            panic!("a JSON frame expected; seen {}", ws.seen_summary());
        };
        let items = if frame["type"] == "batch" {
            let items = frame["frames"]
                .as_array()
                .unwrap_or_else(|| panic!("a batch holds an array of frames: {frame}"))
                .clone();
            assert!(items.len() > 1, "a flush of one frame goes bare: {frame}");
            for item in &items {
                assert!(
                    LOG_TYPES.contains(&item["type"].as_str().unwrap_or("")),
                    "only log frames are batched: {item}"
                );
            }
            items
        } else if LOG_TYPES.contains(&frame["type"].as_str().unwrap_or("")) {
            vec![frame]
        } else {
            continue;
        };
        got.frames.extend(items.iter().cloned());
        got.deliveries.push(items);
    }
    got
}

fn batched_url(c: &Client, room: &str, token: &str) -> String {
    format!("{}&batch=1", c.ws_url(room, token))
}

async fn batched_ws(c: &Client, room: &str, token: &str) -> WsClient {
    WsClient::connect(&batched_url(c, room, token))
        .await
        .expect("batched socket admitted")
}

/// A room with a sender, a plain socket and an opted-in one, all past their history and presence.
async fn room_with_both(c: &Client, prefix: &str) -> (String, String, [WsClient; 3]) {
    let room = unique_name(prefix);
    let (sender, plain, batched) = (
        c.new_user("snd").await,
        c.new_user("pln").await,
        c.new_user("bat").await,
    );
    let mut ws_plain = c.ws(&room, &plain.1).await;
    ws_plain.history_and_presence().await;
    let mut ws_batched = batched_ws(c, &room, &batched.1).await;
    ws_batched.history_and_presence().await;
    let mut ws_sender = c.ws(&room, &sender.1).await;
    ws_sender.history_and_presence().await;
    (room, sender.1, [ws_sender, ws_plain, ws_batched])
}

#[tokio::test]
async fn a_burst_arrives_batched_with_the_same_frames_in_the_same_order() {
    let c = client();
    let (room, _, [mut sender, mut plain, mut batched]) = room_with_both(&c, "batch-burst").await;

    // One message on its own: a flush of one frame, bare for both.
    sender.send_message(&room, "alone").await;
    sender.next_message_with("alone").await;
    let lone = read_log(&mut batched, |r| r.frames.len() == 1).await;
    assert_eq!(lone.deliveries.len(), 1);
    assert_eq!(lone.frames[0]["content"], "alone");
    plain.next_message_with("alone").await;

    // A burst, sent without waiting for echoes: grouped into few flushes.
    const N: usize = 40;
    for i in 0..N {
        sender.send_message(&room, &format!("burst {i}")).await;
    }
    let all = |r: &Received| r.messages_with_prefix("burst ") == N;
    let got_plain = read_log(&mut plain, all).await;
    let got_batched = read_log(&mut batched, all).await;
    assert_eq!(
        got_batched.frames, got_plain.frames,
        "the same frames, in the same order"
    );
    let contents: Vec<&str> = got_batched
        .frames
        .iter()
        .map(|f| f["content"].as_str().unwrap())
        .collect();
    let sent: Vec<String> = (0..N).map(|i| format!("burst {i}")).collect();
    assert_eq!(contents, sent, "every message once, in sent order");
    assert_eq!(
        got_plain.deliveries.len(),
        N,
        "a plain socket: a frame each"
    );
    assert!(
        got_batched.deliveries.len() < N && got_batched.batches().count() >= 1,
        "the burst came in {} frames to the opted-in socket",
        got_batched.deliveries.len()
    );
    // Nothing more comes to either: no frame twice.
    for ws in [&mut plain, &mut batched] {
        ws.expect_none_of_types(&["message", "batch"], QUIET).await;
    }
}

#[tokio::test]
async fn changes_travel_in_the_batch_of_the_messages_they_follow() {
    let c = client();
    let (room, _, [mut sender, mut plain, mut batched]) = room_with_both(&c, "batch-chg").await;
    sender.send_message(&room, "target").await;
    let target = sender.next_message_with("target").await["id"]
        .as_i64()
        .unwrap();
    let mut got = (Received::default(), Received::default());
    // A change stores the messages waiting before it in its own event and goes out with them.
    // Whether the messages are still waiting when the change arrives depends on how the frames
    // reach the room, so a few rounds are allowed for one to show it.
    let mut mixed = false;
    for round in 0..5 {
        let prefix = format!("r{round} ");
        for i in 0..6 {
            sender.send_message(&room, &format!("{prefix}{i}")).await;
        }
        let frames = [
            json!({"type": "edit", "id": target, "content": format!("edit {round}"), "room_id": room}),
            json!({"type": "react", "id": target, "emoji": "👍", "add": round % 2 == 0, "room_id": room}),
        ];
        for frame in &frames {
            sender.send_json(frame).await;
        }
        // Six messages, the edit and the reaction change (adding in even rounds, taking it back
        // in odd ones, so each is a change).
        let done = |r: &Received| r.frames.len() == 8;
        let p = read_log(&mut plain, done).await;
        let b = read_log(&mut batched, done).await;
        assert_eq!(
            b.frames, p.frames,
            "round {round}: the same frames, in order"
        );
        mixed |= b
            .batches()
            .any(|batch| batch.iter().any(|f| f["type"] != "message"));
        got.0.frames.extend(p.frames);
        got.1.frames.extend(b.frames);
        if mixed {
            break;
        }
    }
    assert!(
        mixed,
        "no batch held a change after its messages in 5 rounds"
    );
    // Revisions strictly increase along what each socket got.
    for frames in [&got.0.frames, &got.1.frames] {
        let revs: Vec<i64> = frames.iter().map(|f| f["rev"].as_i64().unwrap()).collect();
        assert!(revs.windows(2).all(|w| w[0] < w[1]), "revisions: {revs:?}");
    }
    // A deletion, alone: bare for both.
    sender
        .send_json(&json!({"type": "delete", "id": target, "room_id": room}))
        .await;
    for ws in [&mut plain, &mut batched] {
        let d = read_log(ws, |r| r.frames.iter().any(|f| f["type"] == "deleted")).await;
        assert_eq!(d.deliveries.last().unwrap().len(), 1);
        assert_eq!(d.frames.last().unwrap()["id"], target);
    }
}

#[tokio::test]
async fn history_and_catch_up_are_the_same_for_an_opted_in_socket() {
    let c = client();
    let room = unique_name("batch-hist");
    let (ann, bob) = (c.new_user("ann").await, c.new_user("bob").await);
    let mut writer = c.ws(&room, &ann.1).await;
    writer.history_and_presence().await;
    let ids = writer.send_n(&room, "h", 8).await;
    writer
        .send_json(&json!({"type": "edit", "id": ids[2], "content": "h 2 edited", "room_id": room}))
        .await;
    writer.next_of_type("edited").await;

    let urls = |extra: String| {
        (
            format!("{}{extra}", c.ws_url(&room, &bob.1)),
            format!("{}{extra}&batch=1", c.ws_url(&room, &bob.1)),
        )
    };
    for extra in [
        String::new(),
        format!("&since={}", ids[4]),
        format!("&rev={}", ids[3]),
    ] {
        let (plain_url, batched_url) = urls(extra.clone());
        let mut plain = WsClient::connect(&plain_url).await.expect("plain socket");
        let (plain_history, _) = plain.history_and_presence().await;
        let mut batched = WsClient::connect(&batched_url)
            .await
            .expect("batched socket");
        let (batched_history, _) = batched.history_and_presence().await;
        assert_eq!(batched_history, plain_history, "history with {extra:?}");
        assert!(
            !plain_history["messages"].as_array().unwrap().is_empty(),
            "{extra:?}: {plain_history}"
        );
        plain.close().await;
        batched.close().await;
    }
}

#[tokio::test]
async fn a_batch_value_other_than_0_or_1_is_refused() {
    let c = client();
    let (_, token) = c.new_user("bq").await;
    let room = unique_name("batch-q");
    for bad in ["yes", "2", ""] {
        let path = format!("{}&batch={bad}", ws_path(&room, &token));
        let body = expect_json_error(c.upgrade_attempt(&path).await, 422, "batch=").await;
        assert_eq!(body["detail"], "batch must be 0 or 1", "batch={bad}");
    }
    // 0 is the default: a plain socket.
    let mut ws = WsClient::connect(&format!("{}&batch=0", c.ws_url(&room, &token)))
        .await
        .expect("batch=0 admitted");
    ws.history_and_presence().await;
}
