//! Acknowledged means durable, even under kill -9: senders in two rooms send as fast as their
//! window allows, the Worker's workerd gets SIGKILL mid-burst, and wrangler dev starts again on the
//! same state folder. Every message whose echo reached its sender is in history exactly once with
//! the id of its echo, ids are never given to another message, a socket reconnecting with `since`
//! gets exactly the messages after it, and a logout that answered 200 still holds. Twice in a row.
//! The long version, 20 kills at random moments: `bench/crash.sh`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;

const SENDERS_PER_ROOM: usize = 2;
const WINDOW: usize = 4;

/// Sends `tag|n` messages with at most [`WINDOW`] unacknowledged until `stop`, then reads until
/// the socket dies. Returns the (content, id) of every echo of its own.
async fn burst(
    mut ws: WsClient,
    room: String,
    tag: String,
    stop: Arc<AtomicBool>,
) -> Vec<(String, i64)> {
    let mut acked = Vec::new();
    let mut in_flight = 0usize;
    let mut sent = 0usize;
    loop {
        while !stop.load(Ordering::Relaxed) && in_flight < WINDOW {
            let content = format!("{tag}|{sent}");
            let frame = serde_json::json!({"content": content, "room_id": room}).to_string();
            if !ws.try_send_text(frame).await {
                return acked;
            }
            in_flight += 1;
            sent += 1;
        }
        match ws.next_within(Duration::from_secs(20)).await {
            Some(Incoming::Json(m)) if m["type"] == "message" => {
                let content = m["content"].as_str().unwrap_or_default();
                if content.starts_with(&format!("{tag}|")) {
                    acked.push((content.to_owned(), m["id"].as_i64().expect("integer id")));
                    in_flight -= 1;
                }
            }
            Some(Incoming::Closed(_)) | None => return acked,
            Some(_) => {}
        }
    }
}

#[tokio::test]
async fn acknowledged_messages_and_logouts_survive_kill_9_of_workerd() {
    let mut server = start(ServerOptions::relaxed_limits()).await;
    let c = server.client();
    let rooms = [unique_name("crash"), unique_name("crash")];
    let senders = c.new_users("crash", rooms.len() * SENDERS_PER_ROOM).await;
    let (victim, _) = c.new_user("crashout").await;
    let reader = senders[0].1.clone();
    // Every id ever seen per room, with its content: an id never changes hands.
    let mut owners: Vec<BTreeMap<i64, String>> = vec![BTreeMap::new(); rooms.len()];
    let mut acked: Vec<Vec<(String, i64)>> = vec![Vec::new(); rooms.len()];
    let mut logged_out = Vec::new();

    for cycle in 0..2 {
        let c = server.client();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (r, room) in rooms.iter().enumerate() {
            for s in 0..SENDERS_PER_ROOM {
                let token = &senders[r * SENDERS_PER_ROOM + s].1;
                let ws = c.ws(room, token).await;
                let tag = format!("c{cycle}r{r}s{s}");
                tasks.push((r, tokio::spawn(burst(ws, room.clone(), tag, stop.clone()))));
            }
        }
        let badge = c.login(&victim, DEFAULT_PASSWORD).await;
        assert_eq!(c.logout(&badge, false).await.status(), 200);
        logged_out.push(badge);
        tokio::time::sleep(Duration::from_millis(400 + 300 * cycle as u64)).await;

        server = kill9_and_restart(server).await;
        stop.store(true, Ordering::Relaxed);
        for (r, task) in tasks {
            acked[r].extend(task.await.unwrap());
        }

        let c = server.client();
        for (r, room) in rooms.iter().enumerate() {
            let history = c.all_messages(room, &reader).await;
            let listed: Vec<i64> = history.iter().map(|m| m["id"].as_i64().unwrap()).collect();
            assert_consecutive(&listed, &format!("cycle {cycle}: {room} after the kill"));
            let mut by_content: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
            for m in &history {
                let (id, content) = (m["id"].as_i64().unwrap(), m["content"].as_str().unwrap());
                by_content.entry(content).or_default().push(id);
                let first = owners[r].entry(id).or_insert_with(|| content.to_owned());
                assert_eq!(
                    first, content,
                    "cycle {cycle}: id {id} of {room} was reused"
                );
            }
            assert!(
                by_content.values().all(|ids| ids.len() == 1),
                "cycle {cycle}: a message stored twice in {room}"
            );
            for (content, id) in &acked[r] {
                assert_eq!(
                    by_content.get(content.as_str()),
                    Some(&vec![*id]),
                    "cycle {cycle}: acknowledged {content:?} (id {id}) in {room}"
                );
            }
            // A client reconnecting with `since` gets exactly what came after.
            let since = listed.len() as i64 / 2;
            let mut ws = c.ws_since(room, &reader, since).await;
            let (frame, _) = ws.history_and_presence().await;
            let after: Vec<i64> = listed.iter().copied().filter(|id| *id > since).collect();
            let got = ids(&frame["messages"]);
            if frame["truncated"] == true {
                // More than the server sends at once: the newest of them, without a gap.
                assert!(
                    got.len() < after.len(),
                    "cycle {cycle}: truncated needlessly"
                );
                assert_eq!(
                    got,
                    after[after.len() - got.len()..],
                    "cycle {cycle}: since={since}"
                );
            } else {
                assert_eq!(got, after, "cycle {cycle}: since={since}");
            }
        }
        for badge in &logged_out {
            assert_eq!(
                c.get_bearer("/rooms/lobby", badge).await.status(),
                401,
                "cycle {cycle}: a logout answered 200 before the kill"
            );
        }
    }
    let total: usize = acked.iter().map(Vec::len).sum();
    assert!(total > 0, "no message was acknowledged before the kills");

    // New messages continue the sequence: nothing before is given out again.
    let c = server.client();
    let mut ws = c.ws_ready(&rooms[0], &reader).await;
    ws.send_message(&rooms[0], "after the kills").await;
    let id = ws.next_message_with("after the kills").await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        Some(id - 1),
        owners[0].keys().next_back().copied(),
        "the next id"
    );
}
