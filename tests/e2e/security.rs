//! Defences that cut across the API: the Origin allowlist of WebSocket upgrades, identity that
//! only the Worker sets, security headers on every JSON answer, and garbage input that never
//! gets a 5xx.

use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_origins_are_checked_against_the_allowlist() {
    let c = client();
    let (room, [(_, t)]) = c.room_with_users("origin", ["origin"]).await;
    for evil in [
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
        ALLOWED_ORIGIN,
    ] {
        let what = format!("Origin {evil} on the default server");
        c.expect_upgrade_refused(&room, &t, &[("Origin", evil)], 403, &what)
            .await;
    }
    let own = c.base.clone();
    let mut ws = WsClient::connect_with(&c.ws_url(&room, &t), &[("Origin", &own)])
        .await
        .unwrap_or_else(|e| panic!("own origin {own} refused: {e} {:?}", handshake_refusal(&e)));
    ws.roundtrip_ping().await;
    let mut ws = c.try_ws(&room, &t).await.expect("no Origin is accepted");
    ws.roundtrip_ping().await;

    let s = STRICT.client();
    let (_, ts) = s.with_random_ips().new_user("origin").await;
    let mut ws = WsClient::connect_with(&s.ws_url(&room, &ts), &[("Origin", ALLOWED_ORIGIN)])
        .await
        .unwrap_or_else(|e| {
            panic!(
                "ALLOWED_ORIGINS origin refused: {e} {:?}",
                handshake_refusal(&e)
            )
        });
    ws.roundtrip_ping().await;
    let resp = s
        .upgrade_attempt_with(&ws_path(&room, &ts), &[("Origin", "https://evil.example")])
        .await;
    expect_json_error(resp, 403, "evil origin on the allowlist server").await;
    let mut ws = WsClient::connect_with(&s.ws_url(&room, &ts), &[("Origin", &s.base)])
        .await
        .expect("own origin with an allowlist");
    ws.roundtrip_ping().await;
}

/// Identity headers are the Worker's to set: a client's own `X-Clubhouse-*` headers are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_identity_headers_are_ignored() {
    let c = client();
    let (room, [(_, to), (mallory, tm)]) =
        c.room_with_users("spoofpriv", ["owner", "mallory"]).await;
    assert_eq!(c.create_private_room(&to, &room).await.status(), 201);
    // A well-formed handover (the header that carries a socket's identity to the room) that
    // claims membership for another user, and the older per-field headers.
    let handover = json!({
        "user": "admin", "room": room, "jti": "x", "iat": 0, "exp": 4_000_000_000u64,
        "member": true, "request_id": "spoofed", "bearer": false, "since": null,
    })
    .to_string();
    let spoof = [
        ("X-Clubhouse-Socket", handover.as_str()),
        ("X-Clubhouse-User", "admin"),
        ("X-Clubhouse-Access", "member"),
        ("X-Clubhouse-Room", "elsewhere"),
        ("X-Clubhouse-Jti", "x"),
    ];
    assert_refused(
        WsClient::connect_with(&c.ws_url(&room, &tm), &spoof).await,
        403,
        "a non-member with spoofed headers",
    );
    let mut req = c.get(&format!("/rooms/{room}/messages")).bearer_auth(&tm);
    for (k, v) in spoof {
        req = req.header(k, v);
    }
    expect_json_error(
        req.send().await.unwrap(),
        403,
        "spoofed headers on /messages",
    )
    .await;

    // In a public room the name shown is the badge's, whatever the headers say.
    let public = unique_name("spoofpub");
    let mut ws = WsClient::connect_with(&c.ws_url(&public, &tm), &spoof)
        .await
        .unwrap();
    let (_, presence) = ws.history_and_presence().await;
    assert_eq!(presence["users"], json!([mallory]), "{presence}");
    ws.send_message(&public, "who am I").await;
    let m = ws.next_message().await;
    assert_eq!(m["username"], mallory.as_str(), "{m}");
    assert_eq!(m["room_id"], public.as_str(), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_response_has_the_security_headers() {
    let c = client();
    let (room, [(name, t)]) = c.room_with_users("headers", ["headers"]).await;
    let responses: Vec<(&str, reqwest::Response)> = vec![
        (
            "signup 201",
            c.signup(&unique_name("hdr"), DEFAULT_PASSWORD).await,
        ),
        ("signup 409", c.signup(&name, DEFAULT_PASSWORD).await),
        ("signup 422", c.signup("x", DEFAULT_PASSWORD).await),
        ("login 200", c.login_response(&name, DEFAULT_PASSWORD).await),
        ("login 401", c.login_response(&name, "wrong password").await),
        ("404", c.get("/nope").send().await.unwrap()),
        ("405", c.get("/token").send().await.unwrap()),
        ("healthz", c.get("/healthz").send().await.unwrap()),
        ("426", c.get(&format!("/ws/{room}")).send().await.unwrap()),
        (
            "ws 401",
            c.upgrade_attempt(&format!("/ws/{room}?token=bad")).await,
        ),
        (
            "members",
            c.get_bearer(&format!("/rooms/{room}/members"), &t).await,
        ),
        (
            "messages",
            c.get_bearer(&format!("/rooms/{room}/messages"), &t).await,
        ),
        (
            "messages 422",
            c.get_bearer(&format!("/rooms/{room}/messages?limit=0"), &t)
                .await,
        ),
        (
            "room info",
            c.get_bearer(&format!("/rooms/{room}"), &t).await,
        ),
        (
            "create room",
            c.create_private_room(&t, &unique_name("hdrroom")).await,
        ),
        (
            "stats 404",
            c.get_bearer(&format!("/rooms/{room}/stats"), &t).await,
        ),
    ];
    for (what, resp) in responses {
        let status = resp.status();
        let content_type = header(&resp, "content-type");
        assert!(
            content_type.starts_with("application/json"),
            "{what}: content-type {content_type:?}"
        );
        assert_eq!(
            header(&resp, "x-content-type-options"),
            "nosniff",
            "{what} ({status})"
        );
        assert_eq!(
            header(&resp, "referrer-policy"),
            "no-referrer",
            "{what} ({status})"
        );
        if what == "login 200" {
            assert_eq!(status, 200);
            let cache = header(&resp, "cache-control");
            assert!(
                cache.contains("no-store"),
                "{what}: cache-control {cache:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Garbage never gives a 5xx
// ---------------------------------------------------------------------------------------------

/// wrangler's dev proxy (not the Worker) answers a non-GET request that was in flight while it
/// switched to a new runtime with this 503, and asks the client to retry: the Worker never saw
/// the request. Seen once in CI; it is sent again once, and said on stderr.
const DEV_PROXY_RESTART: &str = "Your worker restarted mid-request";

async fn send_past_dev_proxy_restart(
    req: reqwest::RequestBuilder,
    what: &str,
) -> Result<(u16, String), reqwest::Error> {
    let again = req.try_clone();
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    match again {
        Some(again) if status == 503 && text.starts_with(DEV_PROXY_RESTART) => {
            eprintln!("[fuzz] {what}: the dev proxy restarted its runtime mid-request; sent again");
            let resp = again.send().await?;
            let status = resp.status().as_u16();
            Ok((status, resp.text().await.unwrap_or_default()))
        }
        _ => Ok((status, text)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_requests_and_frames_never_give_a_5xx() {
    let c = client();
    let (_, t) = c.new_user("fuzz").await;
    let mut rng = Rng::new();
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"];
    let ctypes = [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "",
        "multipart/form-data; boundary=x",
        "application/json; charset=utf-8",
    ];
    let fixed = [
        "/users/",
        "/users",
        "/token",
        "/rooms",
        "/rooms/",
        "/logout",
        "/healthz",
        "/ws/r",
        "/rooms/r/messages",
        "/rooms/r/members",
        "/rooms/r/members/u",
        "/rooms/r/stats",
        "/rooms/r",
    ];
    let mut failures = Vec::new();
    for i in 0..250 {
        let method = reqwest::Method::from_bytes(rng.pick(&methods).as_bytes()).unwrap();
        let path = match rng.below(3) {
            0 => rng.pick(&fixed).to_string(),
            1 => {
                let fixed = rng.pick(&fixed);
                format!("{fixed}?{}", urlencode(&rng.string(10)))
            }
            _ => {
                let n = 1 + rng.below(4);
                let segs: Vec<String> = (0..n).map(|_| urlencode(&rng.string_upto(1, 7))).collect();
                format!("/{}", segs.join("/"))
            }
        };
        let body: Vec<u8> = match rng.below(3) {
            0 => rng.bytes_upto(300),
            1 => rng.string_upto(0, 100).into_bytes(),
            _ => json!({"username": rng.string(5), "password": rng.string(9), "room_id": rng.string(4), "private": rng.below(2) == 0}).to_string().into_bytes(),
        };
        let mut req = c.request(method.clone(), &path).body(body);
        let ct = rng.pick(&ctypes);
        if !ct.is_empty() {
            req = req.header("content-type", ct);
        }
        // (Never /logout with the badge: the socket part below needs it.)
        if rng.below(2) == 0 && !path.starts_with("/logout") {
            req = req.bearer_auth(&t);
        }
        match send_past_dev_proxy_restart(req, &format!("#{i} {method} {path}")).await {
            Ok((status, text)) => {
                if status >= 500 {
                    failures.push(format!("#{i} {method} {path}: {status} {text}"));
                }
            }
            Err(e) => failures.push(format!("#{i} {method} {path}: transport error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "5xx or broken answers:\n{}",
        failures.join("\n")
    );

    // Random WebSocket frames: only error frames (or messages) come back; the socket keeps working.
    let room = unique_name("fuzzws");
    let mut ws = c.ws(&room, &t).await;
    let mut observer = c.ws(&room, &t).await;
    ws.history_and_presence().await;
    for _ in 0..150 {
        if rng.below(3) == 0 {
            ws.send_binary(rng.bytes_upto(200)).await;
        } else {
            let text = match rng.below(3) {
                0 => rng.string_upto(0, 60),
                1 => {
                    json!({"content": rng.string_upto(0, 20), "room_id": rng.string(3)}).to_string()
                }
                _ => json!({"content": rng.string_upto(1, 21)}).to_string(),
            };
            ws.send_text(text).await;
        }
    }
    ws.send_message(&room, "sane again").await;
    loop {
        match ws.next().await {
            Incoming::Json(v) if v["type"] == "message" && v["content"] == "sane again" => break,
            Incoming::Json(v) => assert!(
                ["error", "message", "join", "presence"]
                    .contains(&v["type"].as_str().unwrap_or("")),
                "unexpected frame {v}"
            ),
            Incoming::Text(t) => assert_eq!(t, "pong"), // a random "ping"
            other => panic!("unexpected {other:?}; seen {}", ws.seen_summary()),
        }
    }
    ws.roundtrip_ping().await;
    observer.roundtrip_ping().await;
    let health = c.get("/healthz").send().await.unwrap();
    assert_eq!(health.status(), 200);
}
