//! Operations: the health check, structured logs without secrets, the operators' room stats and
//! what they show of storage, and a deploy-safe restart.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

const ADMIN_TOKEN: &str = "ops-admin-token-0123456789-abcdefghij";

/// A server with an `ADMIN_TOKEN` (the shared server has none: its stats endpoint is a 404) and
/// relaxed limits; its log is read by the logging tests.
static OPS: LazyServer =
    LazyServer::new(|| ServerOptions::relaxed_limits().var("ADMIN_TOKEN", ADMIN_TOKEN));

// ---------------------------------------------------------------------------------------------
// /healthz
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_ok_with_every_check() {
    let c = client();
    let (status, v) = status_json(c.get("/healthz").send().await.unwrap(), "/healthz").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({"status": "ok", "version": "0.1.0", "checks": {"d1": "ok", "durable_objects": "ok", "jwt_secret": "ok"}})
    );
}

async fn assert_unhealthy_key(c: &Client, what: &str) {
    let (status, v) = status_json(c.get("/healthz").send().await.unwrap(), "/healthz").await;
    assert_eq!(status, 503, "{what}: {v}");
    assert_ne!(v["status"], "ok", "{what}: {v}");
    assert_eq!(v["checks"]["d1"], "ok", "{what}: {v}");
    assert_eq!(v["checks"]["durable_objects"], "ok", "{what}: {v}");
    let jwt = v["checks"]["jwt_secret"].as_str().unwrap_or("");
    assert!(
        !jwt.is_empty() && jwt != "ok",
        "{what}: jwt_secret check must fail: {v}"
    );

    // Signing up still works; logging in is a JSON 503.
    let name = unique_name("nokey");
    assert_eq!(
        c.signup(&name, DEFAULT_PASSWORD).await.status(),
        201,
        "{what}: signup"
    );
    expect_json_error(
        c.login_response(&name, DEFAULT_PASSWORD).await,
        503,
        &format!("{what}: /token"),
    )
    .await;
    // Authenticated routes cannot verify anything either: never a 2xx, never a 500.
    let token = test_token(&good_claims(&name));
    let status = c
        .get_bearer("/rooms/r/members", &token)
        .await
        .status()
        .as_u16();
    assert!(status == 503 || status == 401, "{what}: members {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_jwt_secret_healthz_is_503_and_login_is_503() {
    // Too short (the harness's .dev.vars line is overridden by the later one).
    let server = start(ServerOptions::relaxed_limits().var("JWT_SECRET", "too-short")).await;
    assert_unhealthy_key(&server.client(), "short JWT_SECRET").await;

    // Missing altogether.
    server.write_dev_vars(&[("SIGNUP_MAX_PER_IP", "1000000")]);
    let server = restart(server).await;
    assert_unhealthy_key(&server.client(), "no JWT_SECRET").await;
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// Structured logs
// ---------------------------------------------------------------------------------------------

/// The JSON objects among the log's lines (a line may carry a prefix before the `{`).
fn raw_json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| l.find('{').map(|i| &l[i..]))
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|v| v.get("event").is_some())
        .collect()
}

/// [`raw_json_lines`] with each batched per-socket line (`"count"`, `"sockets": [...]`) spread
/// into one object per socket: the line's fields plus the socket's.
fn json_lines(log: &str) -> Vec<Value> {
    let mut out = vec![];
    for line in raw_json_lines(log) {
        let Some(sockets) = line.get("sockets").and_then(Value::as_array) else {
            out.push(line);
            continue;
        };
        assert_eq!(
            line["count"].as_u64(),
            Some(sockets.len() as u64),
            "count and sockets disagree: {line}"
        );
        for socket in sockets {
            let mut one = line.as_object().unwrap().clone();
            one.remove("sockets");
            one.remove("count");
            one.extend(socket.as_object().unwrap().clone());
            out.push(Value::Object(one));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_structured_json_and_never_hold_secrets() {
    let server = OPS.get();
    let c = server.client();
    let name = unique_name("logged");
    let password = format!("pw-{:016x}-secret", random_u64());
    assert_eq!(c.signup(&name, &password).await.status(), 201);
    let token = c.login(&name, &password).await;
    let token2 = c.login(&name, &password).await;
    let wrong = format!("wrong-{:016x}-pw", random_u64());
    assert_eq!(c.login_response(&name, &wrong).await.status(), 401);
    // A password typed into the username box must not be logged either.
    let typo = format!("typo {:016x} pass", random_u64());
    assert_eq!(c.login_response(&typo, &wrong).await.status(), 401);

    let room = unique_name("logroom");
    let secret_a = format!("content-{:016x}-via-url", random_u64());
    let secret_b = format!("content-{:016x}-via-subprotocol", random_u64());
    let mut a = c.ws(&room, &token).await;
    a.send_message(&room, &secret_a).await;
    a.next_message().await;
    let mut b = c.ws_subprotocol(&room, &token2).await.unwrap();
    b.send_message(&room, &secret_b).await;
    a.next_message().await;
    a.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.logout(&token2, false).await.status(), 200);
    let _ = b.wait_close(Duration::from_secs(3)).await;
    // Let the log lines reach the file.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let log = server.log();
    let lines = json_lines(&log);
    let ours: Vec<&Value> = lines
        .iter()
        .filter(|v| v["username"] == name.as_str() || v["event"] == "request")
        .collect();
    for event in [
        "signup",
        "login_ok",
        "login_failed",
        "ws_connect",
        "ws_close",
        "logout",
    ] {
        assert!(
            ours.iter().any(|v| v["event"] == event),
            "no `{event}` line for {name} in the log; JSON events seen: {:?}",
            lines
                .iter()
                .map(|v| v["event"].to_string())
                .collect::<Vec<_>>()
        );
    }
    // An accepted upgrade has one line, the room's `ws_connect`, carrying the request id.
    for connect in ours.iter().filter(|v| v["event"] == "ws_connect") {
        assert!(
            connect["request_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "ws_connect without request_id: {connect}"
        );
    }
    assert!(
        !lines
            .iter()
            .any(|v| v["event"] == "request" && (v["status"] == 101 || v["status"] == "101")),
        "an accepted upgrade is logged by its room, not twice"
    );
    let requests: Vec<&&Value> = ours.iter().filter(|v| v["event"] == "request").collect();
    assert!(requests.len() >= 5, "request lines: {}", requests.len());
    for r in &requests {
        for field in ["request_id", "status", "duration_ms", "method", "level"] {
            assert!(
                r.get(field).is_some_and(|f| !f.is_null() && f != ""),
                "request line without {field}: {r}"
            );
        }
    }
    assert!(
        requests
            .iter()
            .any(|r| r["status"] == "401" || r["status"] == 401),
        "the failed login's request line"
    );
    for v in &lines {
        assert!(v.get("level").is_some(), "line without level: {v}");
    }

    // No secret anywhere in the log: passwords, badges, message contents.
    let mut leaks = Vec::new();
    for (what, secret) in [
        ("password", password.as_str()),
        ("wrong password", wrong.as_str()),
        ("password typed as username", typo.as_str()),
        ("subprotocol badge", token2.as_str()),
        ("?token= badge", token.as_str()),
        ("message content (url socket)", secret_a.as_str()),
        ("message content (subprotocol socket)", secret_b.as_str()),
    ] {
        if let Some(line) = log.lines().find(|l| l.contains(secret)) {
            leaks.push(format!("{what} in: {line}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets in the log:\n{}",
        leaks.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_sockets_is_logged_in_a_few_lines_each_socket_once() {
    const SOCKETS: usize = 30;
    let server = OPS.get();
    let c = server.client();
    let (room, [(name, token)]) = c.room_with_users("burstroom", ["burstlog"]).await;
    let mut sockets = vec![];
    for _ in 0..SOCKETS {
        sockets.push(c.ws(&room, &token).await);
    }
    for ws in sockets {
        ws.close().await;
    }
    // Past the batch window (500 ms), so the last lines are out.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let log = server.log();
    let in_room = |event: &str, lines: Vec<Value>| -> Vec<Value> {
        lines
            .into_iter()
            .filter(|v| v["event"] == event && v["room"] == room.as_str())
            .collect()
    };
    for event in ["ws_connect", "ws_close"] {
        let lines = in_room(event, raw_json_lines(&log));
        let entries = in_room(event, json_lines(&log));
        assert_eq!(
            entries.len(),
            SOCKETS,
            "every {event} logged once: {lines:?}"
        );
        assert!(
            entries.iter().all(|v| v["username"] == name.as_str()),
            "{event} entries name the user: {entries:?}"
        );
        assert!(
            lines.len() <= SOCKETS / 3,
            "{} {event} lines for {SOCKETS} sockets in about a second: not batched",
            lines.len()
        );
    }
    let ids: std::collections::HashSet<String> = in_room("ws_connect", json_lines(&log))
        .into_iter()
        .filter_map(|v| v["request_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), SOCKETS, "one request id per socket");
}

// ---------------------------------------------------------------------------------------------
// /rooms/{room}/stats
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_stats_for_operators() {
    let c = OPS.client();
    let room = unique_name("stats");
    let path = format!("/rooms/{room}/stats");
    let (_, ta) = c.new_user("stata").await;
    let (_, tb) = c.new_user("statb").await;

    let v = c.get_ok(&path, ADMIN_TOKEN).await;
    assert_eq!(v["room_id"], room.as_str());
    assert_eq!(v["open_sockets"], 0, "{v}");
    assert_eq!(v["messages_stored"], 0, "{v}");
    assert!(v["newest_id"].is_null(), "{v}");

    let mut a1 = c.ws_ready(&room, &ta).await;
    let mut a2 = c.ws_ready(&room, &ta).await;
    let b = c.ws_ready(&room, &tb).await;
    let ids = a1.send_n(&room, "stat", 5).await;
    let mut last_ts = 0;
    while let Ok(m) = a2
        .try_next_of_types(&["message"], Duration::from_millis(500))
        .await
    {
        last_ts = m["ts"].as_i64().unwrap();
    }
    let v = c.get_ok(&path, ADMIN_TOKEN).await;
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    for k in [
        "room_id",
        "open_sockets",
        "users_online",
        "messages_stored",
        "oldest_id",
        "newest_id",
        "last_message_ts",
        "storage_bytes",
        "since_wake",
    ] {
        assert!(v.get(k).is_some(), "stats lacks {k}: {keys:?}");
    }
    assert_eq!(v["open_sockets"], 3, "{v}");
    assert_eq!(v["users_online"], 2, "{v}");
    assert_eq!(v["messages_stored"], 5, "{v}");
    assert_eq!(v["oldest_id"], ids[0], "{v}");
    assert_eq!(v["newest_id"], ids[4], "{v}");
    assert_eq!(v["last_message_ts"], last_ts, "{v}");
    assert!(v["storage_bytes"].as_i64().is_some_and(|b| b > 0), "{v}");

    b.close().await;
    a1.next_of_type("leave").await;
    let v = c.get_ok(&path, ADMIN_TOKEN).await;
    assert_eq!(v["open_sockets"], 2, "{v}");
    assert_eq!(v["users_online"], 1, "{v}");

    // Wrong or missing admin token: 401. A user's badge is not an admin token.
    for bad in ["wrong", ta.as_str(), &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]] {
        expect_json_error(
            c.get_bearer(&path, bad).await,
            401,
            &format!("stats with {bad:.12}…"),
        )
        .await;
    }
    expect_json_error(
        c.get(&path).send().await.unwrap(),
        401,
        "stats without a token",
    )
    .await;
    // A server without ADMIN_TOKEN has no stats endpoint.
    expect_json_error(
        client().get_bearer(&path, ADMIN_TOKEN).await,
        404,
        "stats without ADMIN_TOKEN",
    )
    .await;
}

/// Frames sent back to back are stored in groups, one commit each (`src/room/outbox.rs`), and
/// every message still arrives once, in one id order, live and in history alike (the same
/// checks of order with frames sent one by one: `ids_increase_by_one_without_gaps_…`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_messages_is_committed_in_groups_and_arrives_whole_and_in_order() {
    let c = OPS.client();
    let (room, [(_, ta, mut a), (_, _, mut b), (_, _, mut watcher)]) = c
        .room_with_members("group", ["groupa", "groupb", "groupw"])
        .await;

    // Both senders write all their frames before reading anything.
    let n = 100;
    for i in 0..n {
        a.send_message(&room, &format!("a{i}")).await;
        b.send_message(&room, &format!("b{i}")).await;
    }
    let live = watcher.next_messages_consecutive(2 * n).await;
    let contents: Vec<String> = live.iter().map(|(_, c)| c.clone()).collect();
    for sender in ["a", "b"] {
        let sent: Vec<String> = (0..n).map(|i| format!("{sender}{i}")).collect();
        assert_in_sent_order(
            &contents,
            &sent,
            &format!("{sender}'s messages, in the order sent"),
        );
    }

    // History holds the same messages under the same ids.
    let stored: Vec<(i64, String)> = c
        .all_messages(&room, &ta)
        .await
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().unwrap(),
                m["content"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(stored, live, "history = what was broadcast");

    let v = c.get_ok(&format!("/rooms/{room}/stats"), ADMIN_TOKEN).await;
    let (messages, commits) = (
        v["since_wake"]["messages_stored"].as_u64().unwrap(),
        v["since_wake"]["message_commits"].as_u64().unwrap(),
    );
    assert_eq!(messages, 2 * n as u64, "{v}");
    assert!(
        commits >= 1 && commits < messages,
        "a burst takes fewer commits than messages: {v}"
    );
}

// ---------------------------------------------------------------------------------------------
// Deploy-safe restart
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_conversation_loses_nothing_and_never_reuses_ids() {
    let server = start(ServerOptions::relaxed_limits()).await;
    let c = server.client();
    let (room, [(_, ta), (_, tb)]) = c.room_with_users("deploy", ["talker", "listener"]).await;
    let mut a = c.ws(&room, &ta).await;
    let mut b = c.ws_ready(&room, &tb).await;

    let mut sent = a.send_n(&room, "before", 20).await;
    // The listener has read only part of the conversation when the server goes down.
    let mut got: Vec<i64> = Vec::new();
    for _ in 0..7 {
        got.push(b.next_message_id().await);
    }

    let server = restart(server).await;
    let c = server.client();
    // Old sockets are gone.
    assert!(
        a.wait_close(Duration::from_secs(5)).await.is_ok(),
        "talker socket survived the restart"
    );

    let a_last = *sent.last().unwrap();
    let mut a = c.ws_since(&room, &ta, a_last).await;
    let (h, _) = a.history_and_presence().await;
    assert_eq!(h["messages"], json!([]), "talker saw everything");
    let mut b = c.ws_since(&room, &tb, *got.last().unwrap()).await;
    let (h, _) = b.history_and_presence().await;
    got.extend(ids(&h["messages"]));

    let after = a.send_n(&room, "after", 20).await;
    assert_eq!(
        after[0],
        a_last + 1,
        "ids continue after the restart: {after:?}"
    );
    sent.extend(&after);
    while got.len() < sent.len() {
        got.push(b.next_message_id().await);
    }
    assert_eq!(got, sent, "every message exactly once, in order");

    // A second restart in the middle of a burst, listener reconnecting with since.
    let burst = a.send_n(&room, "burst", 10).await;
    let server = restart(server).await;
    let c = server.client();
    let mut b = c.ws_since(&room, &tb, *got.last().unwrap()).await;
    let (h, _) = b.history_and_presence().await;
    assert_eq!(ids(&h["messages"]), burst, "missed burst caught up");
    let more = c.ws(&room, &ta).await.send_n(&room, "final", 3).await;
    assert_eq!(
        more[0],
        burst.last().unwrap() + 1,
        "no id reuse after the second restart"
    );
    let v = c
        .get_ok(&format!("/rooms/{room}/messages?limit=100"), &tb)
        .await;
    let all = ids(&v["messages"]);
    assert_eq!(all.len(), 53);
    assert_consecutive(&all, "every stored message");
    drop(server);
}
