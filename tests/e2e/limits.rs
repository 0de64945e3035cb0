//! Abuse limits: the message rate per socket, sockets per user and per room, login and signup
//! throttling, and the size limits of bodies, URLs and frames.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

/// A server with the default message rate limit (10/s, burst 20) and small socket caps
/// (2 per user per room, 3 per room); signups relaxed since every client is 127.0.0.1.
static LIMITS: LazyServer = LazyServer::new(|| {
    ServerOptions::default()
        .var("SIGNUP_MAX_PER_IP", "1000000")
        .var("LOGIN_MAX_FAILURES_PER_IP", "1000000")
        .var("MAX_SOCKETS_PER_USER", "2")
        .var("MAX_SOCKETS_PER_ROOM", "3")
});

// ---------------------------------------------------------------------------------------------
// Messages per socket
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_too_fast_is_refused_and_not_broadcast_while_a_calm_client_is_unaffected() {
    let c = LIMITS.client();
    let (room, [(_, _, mut fast), (_, _, mut calm)]) =
        c.room_with_members("rate", ["fast", "calm"]).await;

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
    fast.next_message_with("after the pause").await;
}

/// What one frame of [`a_rate_limited_frame_is_named_by_its_client_id`] was: what tells it applied
/// (a message's or an edit's content, a reaction's emoji), and the client_id it carried.
struct Sent {
    key: String,
    named: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_frame_is_named_by_its_client_id() {
    let c = LIMITS.client();
    let (room, [(_, _, mut ws)]) = c.room_with_members("named", ["sender"]).await;
    ws.send_message(&room, "target").await;
    let target = ws.next_message_with("target").await["id"].as_i64().unwrap();

    // Rounds of four frames at once: a message with a client_id, one without, an edit and a
    // reaction (a new emoji each round: 20, the most a message holds) with one. The burst (20)
    // passes the first rounds, and the rest are refused: 80 frames in far less than the 6 s that
    // would refill the 60.
    let mut sent = Vec::new();
    for i in 0..20u32 {
        let emoji = char::from_u32(0x1F600 + i).unwrap().to_string();
        let frames = [
            (
                json!({"content": format!("named {i}"), "room_id": room, "client_id": format!("c-{i}")}),
                format!("named {i}"),
                Some(format!("c-{i}")),
            ),
            (
                json!({"content": format!("plain {i}"), "room_id": room}),
                format!("plain {i}"),
                None,
            ),
            (
                json!({"type": "edit", "id": target, "content": format!("edit {i}"), "client_id": format!("e-{i}")}),
                format!("edit {i}"),
                Some(format!("e-{i}")),
            ),
            (
                json!({"type": "react", "id": target, "emoji": emoji, "client_id": format!("r-{i}")}),
                emoji.clone(),
                Some(format!("r-{i}")),
            ),
        ];
        for (frame, key, named) in frames {
            ws.send_json(&frame).await;
            sent.push(Sent { key, named });
        }
    }
    // Each frame is answered once: its message, edit or reaction to the room, or an error frame
    // to the sender, sent as the frame is handled, so the errors come in the order of their
    // frames. A reactions frame holds every emoji so far: the one it adds is the new one.
    let (mut applied, mut errors) = (std::collections::HashSet::new(), Vec::new());
    while applied.len() + errors.len() < sent.len() {
        let f = ws
            .next_of_types(&["message", "edited", "reactions", "error"])
            .await;
        match f["type"].as_str() {
            Some("error") => errors.push(f),
            Some("reactions") => {
                let emoji = f["reactions"].as_object().unwrap().keys();
                let added: Vec<&String> = emoji.filter(|e| !applied.contains(*e)).collect();
                assert_eq!(added.len(), 1, "one new emoji: {f}");
                applied.insert(added[0].clone());
            }
            _ => assert!(
                applied.insert(f["content"].as_str().unwrap().to_owned()),
                "twice: {f}"
            ),
        }
    }
    let refused: Vec<&Sent> = sent.iter().filter(|s| !applied.contains(&s.key)).collect();
    assert_eq!(refused.len(), errors.len(), "applied: {applied:?}");
    for kind in ["named", "plain", "edit"] {
        assert!(
            refused.iter().any(|s| s.key.starts_with(kind)),
            "no {kind} frame was refused"
        );
    }
    assert!(
        refused
            .iter()
            .any(|s| s.named.as_deref().is_some_and(|n| n.starts_with("r-"))),
        "no reaction was refused"
    );
    for (frame, error) in refused.iter().zip(&errors) {
        let wait = error["retry_after_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: {error}", frame.key));
        assert!(wait > 0 && wait <= 1000, "{error}");
        let mut want = json!({"type": "error", "detail": "rate limited", "retry_after_ms": wait});
        if let Some(client_id) = &frame.named {
            want["client_id"] = json!(client_id);
        }
        assert_eq!(error, &want, "the answer to {:?}", frame.key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_past_five_times_the_limit_closes_the_socket_with_1008() {
    let c = LIMITS.client();
    let (room, [(_, _, mut flood), (_, _, mut calm)]) =
        c.room_with_members("flood", ["flooder", "bystander"]).await;
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
    flood
        .expect_closed_with(1008, Duration::from_secs(10), "flooder")
        .await;
    eprintln!("[flood] sent {sent} frames before the close");
    // The bystander is unaffected: it can still talk.
    calm.send_message(&room, "still here").await;
    calm.next_message_with("still here").await;
}

// ---------------------------------------------------------------------------------------------
// Sockets per user and per room
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_sockets_per_user_is_429_and_per_room_is_503() {
    let c = LIMITS.client();
    // MAX_SOCKETS_PER_USER=2 on this server.
    let (room, [(_, t)]) = c.room_with_users("peruser", ["tabs"]).await;
    let s1 = c.ws_ready(&room, &t).await;
    let _s2 = c.ws_ready(&room, &t).await;
    c.expect_upgrade_refused(&room, &t, &[], 429, "third socket of one user")
        .await;
    // The same user in another room is fine; closing a socket frees a slot.
    let _other = c.ws_ready(&unique_name("other"), &t).await;
    s1.close().await;
    assert!(
        c.ws_once_admitted(&room, &t).await.is_some(),
        "a closed socket's slot is freed"
    );

    // MAX_SOCKETS_PER_ROOM=3 on this server.
    let room = unique_name("perroom");
    let mut held = Vec::new();
    for (_, t) in c.new_users("crowd", 3).await {
        held.push(c.ws_ready(&room, &t).await);
    }
    let (_, t4) = c.new_user("latecomer").await;
    let resp = c.upgrade_attempt(&ws_path(&room, &t4)).await;
    expect_json_error(resp, 503, "fourth socket in a room of 3").await;
    let _elsewhere = c.ws_ready(&unique_name("roomy"), &t4).await;
    // The room keeps its count of sockets between connects: a socket that closes frees its
    // slot all the same, and the room counts the newcomer too.
    held.remove(0).close().await;
    let admitted = c.ws_once_admitted(&room, &t4).await;
    assert!(
        admitted.is_some(),
        "a closed socket's slot in the room is freed"
    );
    let (_, t5) = c.new_user("latecomer").await;
    let resp = c.upgrade_attempt(&ws_path(&room, &t5)).await;
    expect_json_error(resp, 503, "the room is full again").await;
}

// ---------------------------------------------------------------------------------------------
// Login and signup throttling
// ---------------------------------------------------------------------------------------------

async fn expect_throttled(resp: reqwest::Response, what: &str) {
    let retry = header(&resp, "retry-after");
    let v = expect_json_error(resp, 429, what).await;
    assert_eq!(
        v,
        json!({"detail": "Too many attempts; try again later"}),
        "{what}"
    );
    assert!(!retry.is_empty(), "{what}: no Retry-After");
    let secs: u64 = retry
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After {retry:?}"));
    assert!(secs >= 1, "{what}: Retry-After {secs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_per_user_are_throttled_even_for_the_right_password() {
    let c = STRICT.client().with_random_ips();
    let (user, _) = c.new_user("victim").await;
    let (other, _) = c.new_user("other").await;
    for i in 0..3 {
        let resp = c.login_response(&user, "wrong password!").await;
        expect_json_error(resp, 401, &format!("wrong password {i}")).await;
    }
    let resp = c.login_response(&user, DEFAULT_PASSWORD).await;
    expect_throttled(resp, "right password after 3 failures").await;
    let resp = c
        .login_response(&user.to_uppercase(), DEFAULT_PASSWORD)
        .await;
    expect_throttled(resp, "same user, other case").await;

    // An unknown name gets the same treatment.
    let ghost = unique_name("ghost");
    for _ in 0..3 {
        expect_json_error(c.login_response(&ghost, "whatever pw").await, 401, "ghost").await;
    }
    expect_throttled(
        c.login_response(&ghost, "whatever pw").await,
        "unknown user after 3",
    )
    .await;

    // Others are unaffected.
    c.login(&other, DEFAULT_PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_per_ip_are_throttled_and_other_ips_are_not() {
    let c = STRICT.client().with_random_ips();
    let (user, _) = c.new_user("ipuser").await;
    let ip = random_ip();
    let one_ip = c.with_ip(&ip);
    for i in 0..3 {
        let resp = one_ip
            .login_response(&unique_name("nobody"), "wrong password!")
            .await;
        expect_json_error(resp, 401, &format!("failure {i} from {ip}")).await;
    }
    expect_throttled(
        one_ip
            .login_response(&unique_name("nobody"), "wrong password!")
            .await,
        "4th name from one IP",
    )
    .await;
    expect_throttled(
        one_ip.login_response(&user, DEFAULT_PASSWORD).await,
        "right password from the throttled IP",
    )
    .await;
    // Another IP is unaffected.
    c.login(&user, DEFAULT_PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signups_per_ip_are_throttled() {
    let c = STRICT.client();
    let ip = random_ip();
    let one_ip = c.with_ip(&ip);
    for i in 0..2 {
        let resp = one_ip.signup(&unique_name("su"), DEFAULT_PASSWORD).await;
        assert_eq!(resp.status(), 201, "signup {i} from {ip}");
    }
    expect_throttled(
        one_ip.signup(&unique_name("su"), DEFAULT_PASSWORD).await,
        "third signup from one IP",
    )
    .await;
    let resp = c
        .with_random_ips()
        .signup(&unique_name("su"), DEFAULT_PASSWORD)
        .await;
    assert_eq!(resp.status(), 201, "another IP is unaffected");
}

/// Parallel wrong passwords must not get more password checks than the limit allows: the
/// throttle has to count an attempt before (or atomically with) evaluating the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_passwords_cannot_exceed_the_per_user_limit() {
    let c = STRICT.client().with_random_ips();
    let (user, _) = c.new_user("parallel").await;
    let guesses: Vec<usize> = (0..12).collect();
    let statuses = bounded_join(guesses, 12, |i| {
        let (c, user) = (c.clone(), user.clone());
        async move {
            c.login_response(&user, &format!("wrong guess {i}"))
                .await
                .status()
                .as_u16()
        }
    })
    .await;
    let evaluated = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        evaluated <= 3,
        "LOGIN_MAX_FAILURES_PER_USER=3 but {evaluated} of 12 parallel guesses had their \
         password checked (401 rather than 429): {statuses:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Sizes and formats
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413_and_long_urls_are_4xx() {
    let c = client();
    let (_, t) = c.new_user("big").await;
    let big = "x".repeat(17 * 1024);
    let answers = [
        (
            "/users/ 17 KiB",
            c.post_body(
                "/users/",
                JSON,
                json!({"username": big, "password": DEFAULT_PASSWORD}).to_string(),
            )
            .await,
            413,
        ),
        (
            "/token 17 KiB",
            c.post_body(
                "/token",
                FORM,
                form_encode(&[("username", "bob"), ("password", &"p".repeat(17 * 1024))]),
            )
            .await,
            413,
        ),
        (
            "/rooms 17 KiB",
            c.post("/rooms")
                .bearer_auth(&t)
                .header("content-type", JSON)
                .body(json!({"room_id": "r", "private": true, "pad": big}).to_string())
                .send()
                .await
                .unwrap(),
            413,
        ),
        // Just under the limit is parsed (and refused for its content, not its size).
        (
            "/users/ 15 KiB",
            c.post_body(
                "/users/",
                JSON,
                json!({"username": "x".repeat(15 * 1024), "password": DEFAULT_PASSWORD})
                    .to_string(),
            )
            .await,
            422,
        ),
    ];
    for (what, resp, status) in answers {
        expect_json_error(resp, status, what).await;
    }

    for path in [
        format!("/rooms/r/messages?x={}", "a".repeat(9000)),
        format!("/{}", "a".repeat(9000)),
        format!("/ws/r?token={}", "a".repeat(9000)),
    ] {
        let status = c.get_bearer(&path, &t).await.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "URL of {} bytes: {status}",
            path.len()
        );
    }
}

/// A body without Content-Length (chunked) is limited too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_16_kib_is_413() {
    use std::io::{Read, Write};
    // A server of its own: wrangler dev's proxy answers concurrent POSTs with "Your worker
    // restarted mid-request" (503) when a response beats the end of a streamed request body.
    let server = start(ServerOptions::default()).await;
    let port = server.port;
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = "POST /users/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                    Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        s.write_all(head.as_bytes()).unwrap();
        let chunk = vec![b' '; 4096];
        for _ in 0..6 {
            // 24 KiB of whitespace: valid JSON padding, only the size is wrong.
            let _ = s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
            let _ = s.write_all(&chunk);
            let _ = s.write_all(b"\r\n");
        }
        let _ = s.write_all(b"0\r\n\r\n");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap();
    let status = answer.get(9..12).unwrap_or("");
    assert_eq!(
        status,
        "413",
        "chunked 24 KiB body: {}",
        &answer[..answer.len().min(400)]
    );
}

/// Room ids of `POST /rooms` are at most 64 characters (the same rule as `/ws/{room}`, see
/// `ws_refuses_bad_room_ids`; the length limits of usernames and passwords are in
/// `signup_validation_errors_are_422_json`), and each endpoint takes one content type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_limits_and_content_types() {
    let c = client();
    let (_, t) = c.new_user("limits").await;
    let resp = c
        .post("/rooms")
        .bearer_auth(&t)
        .json(&json!({"room_id": "r".repeat(65), "private": true}))
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 422, "room id 65 chars").await;

    for (path, content_type, body, what) in [
        (
            "/token",
            JSON,
            json!({"username": "bob", "password": DEFAULT_PASSWORD}).to_string(),
            "/token with JSON",
        ),
        (
            "/users/",
            FORM,
            form_encode(&[
                ("username", &unique_name("form")),
                ("password", DEFAULT_PASSWORD),
            ]),
            "/users/ form-encoded",
        ),
        (
            "/users/",
            "text/plain",
            json!({"username": unique_name("txt"), "password": DEFAULT_PASSWORD}).to_string(),
            "/users/ text/plain",
        ),
    ] {
        let resp = c.post_body(path, content_type, body).await;
        expect_json_error(resp, 415, what).await;
    }
}

/// Frames over 64 KiB are refused (error frame or close 1009) and never broadcast, even when
/// their content alone would be valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_64_kib_are_refused_and_never_broadcast() {
    let c = client();
    let (room, [(_, _, mut a), (bob, _, mut b)]) = c.room_with_members("big", ["big", "bob"]).await;

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
