//! End-to-end tests of operations: the health check, structured logs without secrets, the
//! operators' room stats, and a deploy-safe restart. Against `wrangler dev` (see tests/common).

mod common;
#[path = "common/ext.rs"]
mod ext;

use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use ext::*;
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "ops-admin-token-0123456789-abcdefghij";

/// A server with an `ADMIN_TOKEN`, relaxed limits; its log is inspected by the logging test.
fn ops_server() -> &'static Server {
    static OPS: OnceLock<Server> = OnceLock::new();
    OPS.get_or_init(|| {
        Server::start(ServerOptions::relaxed_limits().var("ADMIN_TOKEN", ADMIN_TOKEN))
    })
}

async fn ops() -> &'static Server {
    tokio::task::spawn_blocking(ops_server).await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// /healthz
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_ok_with_every_check() {
    let c = client();
    let resp = c.http.get(c.url("/healthz")).send().await.unwrap();
    let (status, v) = status_json(resp, "/healthz").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({"status": "ok", "version": "0.1.0", "checks": {"d1": "ok", "durable_objects": "ok", "jwt_secret": "ok"}})
    );
}

async fn assert_unhealthy_key(c: &Client, what: &str) {
    let resp = c.http.get(c.url("/healthz")).send().await.unwrap();
    let (status, v) = status_json(resp, "/healthz").await;
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
    let status = get_bearer(c, "/rooms/r/members", &token)
        .await
        .status()
        .as_u16();
    assert!(status == 503 || status == 401, "{what}: members {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_jwt_secret_healthz_is_503_and_login_is_503() {
    // Too short (the harness's .dev.vars line is overridden by the later one).
    let server = start(ServerOptions::relaxed_limits().var("JWT_SECRET", "too-short")).await;
    let c = server.client();
    assert_unhealthy_key(&c, "short JWT_SECRET").await;

    // Missing altogether.
    std::fs::write(server.dir.join(".dev.vars"), "SIGNUP_MAX_PER_IP=1000000\n").unwrap();
    let server = restart(server).await;
    let c = server.client(); // no pooled connection to the stopped server
    assert_unhealthy_key(&c, "no JWT_SECRET").await;
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
    let server = ops().await;
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
    let protocol = format!("bearer, {token2}");
    let mut b = RawWs::connect(
        &ws_url_bare(&c, &room),
        &[("Sec-WebSocket-Protocol", &protocol)],
    )
    .await
    .unwrap();
    assert!(
        b.send_text(&json!({"content": secret_b, "room_id": room}).to_string())
            .await
    );
    a.next_message().await;
    a.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(logout(&c, &token2, false).await.status(), 200);
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
    let server = ops().await;
    let c = server.client();
    let (name, token) = c.new_user("burstlog").await;
    let room = unique_name("burstroom");
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
    for event in ["ws_connect", "ws_close"] {
        let lines: Vec<Value> = raw_json_lines(&log)
            .into_iter()
            .filter(|v| v["event"] == event && v["room"] == room.as_str())
            .collect();
        let entries: Vec<Value> = json_lines(&log)
            .into_iter()
            .filter(|v| v["event"] == event && v["room"] == room.as_str())
            .collect();
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
    let ids: std::collections::HashSet<String> = json_lines(&log)
        .into_iter()
        .filter(|v| v["event"] == "ws_connect" && v["room"] == room.as_str())
        .filter_map(|v| v["request_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), SOCKETS, "one request id per socket");
}

// ---------------------------------------------------------------------------------------------
// /rooms/{room}/stats
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_stats_for_operators() {
    let server = ops().await;
    let c = server.client();
    let room = unique_name("stats");
    let path = format!("/rooms/{room}/stats");
    let (_, ta) = c.new_user("stata").await;
    let (_, tb) = c.new_user("statb").await;

    let v = get_ok(&c, &path, ADMIN_TOKEN).await;
    assert_eq!(v["room_id"], room.as_str());
    assert_eq!(v["open_sockets"], 0, "{v}");
    assert_eq!(v["messages_stored"], 0, "{v}");
    assert!(v["newest_id"].is_null(), "{v}");

    let mut a1 = c.ws(&room, &ta).await;
    let mut a2 = c.ws(&room, &ta).await;
    let mut b = c.ws(&room, &tb).await;
    for ws in [&mut a1, &mut a2, &mut b] {
        ws.roundtrip_ping().await;
    }
    let ids = send_n(&mut a1, &room, "stat", 5).await;
    let mut last_ts = 0;
    while let Ok(m) = a2
        .try_next_of_types(&["message"], Duration::from_millis(500))
        .await
    {
        last_ts = m["ts"].as_i64().unwrap();
    }
    let v = get_ok(&c, &path, ADMIN_TOKEN).await;
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
    let v = get_ok(&c, &path, ADMIN_TOKEN).await;
    assert_eq!(v["open_sockets"], 2, "{v}");
    assert_eq!(v["users_online"], 1, "{v}");

    // Wrong or missing admin token: 401. A user's badge is not an admin token.
    for bad in ["wrong", ta.as_str(), &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]] {
        expect_json_error(
            get_bearer(&c, &path, bad).await,
            401,
            &format!("stats with {bad:.12}…"),
        )
        .await;
    }
    expect_json_error(
        c.http.get(c.url(&path)).send().await.unwrap(),
        401,
        "stats without a token",
    )
    .await;
    // A server without ADMIN_TOKEN has no stats endpoint.
    let shared = client();
    expect_json_error(
        get_bearer(&shared, &path, ADMIN_TOKEN).await,
        404,
        "stats without ADMIN_TOKEN",
    )
    .await;
}

/// Frames sent back to back are stored in groups, one commit each (`src/outbox.rs`), and every
/// message still arrives once, in one id order, live and in history alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_messages_is_committed_in_groups_and_arrives_whole_and_in_order() {
    let server = ops().await;
    let c = server.client();
    let room = unique_name("group");
    let (_, ta) = c.new_user("groupa").await;
    let (_, tb) = c.new_user("groupb").await;
    let (_, tw) = c.new_user("groupw").await;
    let mut a = c.ws(&room, &ta).await;
    let mut b = c.ws(&room, &tb).await;
    let mut watcher = c.ws(&room, &tw).await;
    for ws in [&mut a, &mut b, &mut watcher] {
        ws.roundtrip_ping().await;
    }

    // Both senders write all their frames before reading anything.
    let n = 100;
    for i in 0..n {
        a.send_message(&room, &format!("a{i}")).await;
        b.send_message(&room, &format!("b{i}")).await;
    }
    let mut live: Vec<(i64, String)> = Vec::new();
    while live.len() < 2 * n {
        let m = watcher.next_message().await;
        live.push((
            m["id"].as_i64().unwrap(),
            m["content"].as_str().unwrap().into(),
        ));
    }
    let ids: Vec<i64> = live.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "ids: {ids:?}");
    for sender in ["a", "b"] {
        let own: Vec<&str> = live
            .iter()
            .map(|(_, content)| content.as_str())
            .filter(|content| content.starts_with(sender))
            .collect();
        let expected: Vec<String> = (0..n).map(|i| format!("{sender}{i}")).collect();
        assert_eq!(own, expected, "{sender}'s messages, in the order sent");
    }

    // History holds the same messages under the same ids (pages of 100, newest first).
    let mut stored: Vec<(i64, String)> = Vec::new();
    let mut path = format!("/rooms/{room}/messages?limit=100");
    loop {
        let v = get_ok(&c, &path, &ta).await;
        let mut page: Vec<(i64, String)> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["id"].as_i64().unwrap(),
                    m["content"].as_str().unwrap().into(),
                )
            })
            .collect();
        page.append(&mut stored);
        stored = page;
        if v["has_more"] != true {
            break;
        }
        path = format!("/rooms/{room}/messages?limit=100&before={}", stored[0].0);
    }
    assert_eq!(stored, live, "history = what was broadcast");

    let v = get_ok(&c, &format!("/rooms/{room}/stats"), ADMIN_TOKEN).await;
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

/// A message is sent only once its commit is durable (`src/outbox.rs`); meanwhile it is stored
/// but not yet sent. A socket joining at that moment must get it once: live, not also in its
/// history. Sockets keep joining (with `since=0`: the whole history) while a burst is stored
/// and sent, and each must see every message exactly once, in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_joining_during_a_burst_get_each_message_once_in_history_or_live() {
    let server = ops().await;
    let c = server.client();
    let room = unique_name("joinburst");
    let (_, ts) = c.new_user("burster").await;
    let (_, tj) = c.new_user("joiner").await;
    const N: i64 = 900;
    const JOINERS: u64 = 40;

    let mut sender = c.ws(&room, &ts).await;
    sender.roundtrip_ping().await;
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
                last = sender.next_message().await["id"].as_i64().unwrap();
            }
        })
    };
    let joiners: Vec<_> = (0..JOINERS)
        .map(|k| {
            let url = format!("{}&since=0", c.ws_url(&room, &tj));
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(15 * k)).await;
                let mut j = WsClient::connect(&url).await.expect("joining");
                let (history, _) = history_and_presence(&mut j).await;
                let mut ids: Vec<i64> = history["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["id"].as_i64().unwrap())
                    .collect();
                let in_history = ids.len() as i64;
                while ids.last().copied().unwrap_or(0) < N {
                    ids.push(j.next_message().await["id"].as_i64().unwrap());
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

// ---------------------------------------------------------------------------------------------
// Deploy-safe restart
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_conversation_loses_nothing_and_never_reuses_ids() {
    let server = start(ServerOptions::relaxed_limits()).await;
    let c = server.client();
    let room = unique_name("deploy");
    let (_, ta) = c.new_user("talker").await;
    let (_, tb) = c.new_user("listener").await;
    let mut a = c.ws(&room, &ta).await;
    let mut b = c.ws(&room, &tb).await;
    b.roundtrip_ping().await;

    let mut sent = send_n(&mut a, &room, "before", 20).await;
    // The listener has read only part of the conversation when the server goes down.
    let mut got: Vec<i64> = Vec::new();
    for _ in 0..7 {
        got.push(b.next_message().await["id"].as_i64().unwrap());
    }

    let server = restart(server).await;
    // Old sockets are gone.
    assert!(
        wait_close(&mut a, Duration::from_secs(5)).await.is_ok(),
        "talker socket survived the restart"
    );

    let since = |last: i64| format!("{}&since={last}", c.ws_url(&room, &tb));
    let a_last = *sent.last().unwrap();
    let mut a = WsClient::connect(&format!("{}&since={a_last}", c.ws_url(&room, &ta)))
        .await
        .expect("talker reconnects");
    let (h, _) = history_and_presence(&mut a).await;
    assert_eq!(h["messages"], json!([]), "talker saw everything");
    let mut b = WsClient::connect(&since(*got.last().unwrap()))
        .await
        .expect("listener reconnects");
    let (h, _) = history_and_presence(&mut b).await;
    got.extend(ids(&h["messages"]));

    let after = send_n(&mut a, &room, "after", 20).await;
    assert_eq!(
        after[0],
        a_last + 1,
        "ids continue after the restart: {after:?}"
    );
    sent.extend(&after);
    while got.len() < sent.len() {
        got.push(b.next_message().await["id"].as_i64().unwrap());
    }
    assert_eq!(got, sent, "every message exactly once, in order");

    // A second restart in the middle of a burst, listener reconnecting with since.
    let mut burst = send_n(&mut a, &room, "burst", 10).await;
    let server = restart(server).await;
    let last = *got.last().unwrap();
    let mut b = WsClient::connect(&since(last)).await.unwrap();
    let (h, _) = history_and_presence(&mut b).await;
    assert_eq!(ids(&h["messages"]), burst, "missed burst caught up");
    let mut a = c.ws(&room, &ta).await;
    let more = send_n(&mut a, &room, "final", 3).await;
    assert_eq!(
        more[0],
        burst.last().unwrap() + 1,
        "no id reuse after the second restart"
    );
    burst.extend(&more);
    let v = get_ok(&c, &format!("/rooms/{room}/messages?limit=100"), &tb).await;
    let all = ids(&v["messages"]);
    assert_eq!(all.len(), 53);
    assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
    drop(server);
}
