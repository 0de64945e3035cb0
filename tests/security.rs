//! End-to-end tests of the security features: the subprotocol badge transport, the Origin
//! allowlist, logout (one badge and everywhere), key rotation, login and signup throttling, size
//! limits, garbage input, security headers, the password policy, rehash on login.
//! Against `wrangler dev` (see tests/common).

mod common;
#[path = "common/ext.rs"]
mod ext;

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use ext::*;
use serde_json::{json, Value};

const ALLOWED_ORIGIN: &str = "https://chat.example.com";

/// A server with strict abuse limits: 3 failed logins per user and per IP, 2 signups per IP,
/// and one extra allowed origin. Tests on it use random `CF-Connecting-IP`s.
fn strict_server() -> &'static Server {
    static STRICT: OnceLock<Server> = OnceLock::new();
    STRICT.get_or_init(|| {
        Server::start(
            ServerOptions::default()
                .var("LOGIN_MAX_FAILURES_PER_USER", "3")
                .var("LOGIN_MAX_FAILURES_PER_IP", "3")
                .var("SIGNUP_MAX_PER_IP", "2")
                .var("ALLOWED_ORIGINS", ALLOWED_ORIGIN),
        )
    })
}

async fn strict_client() -> Client {
    tokio::task::spawn_blocking(|| strict_server().client())
        .await
        .unwrap()
}

/// Rewrites a server's `.dev.vars` (read again on restart).
fn write_dev_vars(server: &Server, vars: &[(&str, &str)]) {
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(server.dir.join(".dev.vars"), text).expect("write .dev.vars");
}

// ---------------------------------------------------------------------------------------------
// The badge as a WebSocket subprotocol
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_badge_as_bearer_subprotocol_is_accepted_and_bearer_is_selected() {
    let c = client();
    let (user, t) = c.new_user("subproto").await;
    let room = unique_name("subproto");
    let protocol = format!("bearer, {t}");
    let mut ws = RawWs::connect(
        &ws_url_bare(&c, &room),
        &[("Sec-WebSocket-Protocol", &protocol)],
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "subprotocol upgrade refused: {e} {:?}",
            handshake_refusal(&e)
        )
    });
    assert_eq!(
        ws.response_header("sec-websocket-protocol").as_deref(),
        Some("bearer"),
        "the handshake must select the `bearer` subprotocol (never echo the token)"
    );
    match ws.next_within(FRAME_TIMEOUT).await {
        Some(Incoming::Json(v)) => assert_eq!(v["type"], "history", "{v}"),
        other => panic!("expected history, got {other:?}"),
    }
    match ws.next_within(FRAME_TIMEOUT).await {
        Some(Incoming::Json(v)) => assert_eq!(v["users"], json!([user]), "{v}"),
        other => panic!("expected presence, got {other:?}"),
    }
    ws.roundtrip_ping().await;
    assert!(
        ws.send_text(&json!({"content": "via subprotocol", "room_id": room}).to_string())
            .await
    );
    loop {
        match ws.next_within(FRAME_TIMEOUT).await {
            Some(Incoming::Json(v)) if v["type"] == "message" => {
                assert_eq!(v["username"], user.as_str());
                break;
            }
            Some(Incoming::Text(_)) => continue,
            other => panic!("expected the echo, got {other:?}"),
        }
    }

    // A bad badge in the subprotocol is a 401 before any upgrade, even with a good ?token=.
    let forged = sign_hs256(&good_claims(&user), b"not-the-server-secret-not-the-server");
    for bad in ["garbage", forged.as_str()] {
        let header = format!("bearer, {bad}");
        let err = RawWs::connect(
            &ws_url_bare(&c, &room),
            &[("Sec-WebSocket-Protocol", &header)],
        )
        .await
        .err()
        .expect("a bad subprotocol badge must be refused");
        assert_eq!(handshake_refusal(&err).map(|r| r.0), Some(401), "{err}");
        let resp = c
            .http
            .get(c.url(&format!("/ws/{room}?token={}", urlencode(&t))))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Protocol", &header)
            .send()
            .await
            .unwrap();
        expect_json_error(resp, 401, "bad subprotocol badge with a good ?token=").await;
    }
    // No badge anywhere: 401.
    let err = RawWs::connect(&ws_url_bare(&c, &room), &[])
        .await
        .err()
        .expect("no badge");
    assert_eq!(handshake_refusal(&err).map(|r| r.0), Some(401), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Origin allowlist
// ---------------------------------------------------------------------------------------------

async fn upgrade_with_origin(
    c: &Client,
    room: &str,
    token: &str,
    origin: &str,
) -> reqwest::Response {
    c.http
        .get(c.url(&format!("/ws/{room}?token={}", urlencode(token))))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Origin", origin)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_origins_are_checked_against_the_allowlist() {
    let c = client();
    let (_, t) = c.new_user("origin").await;
    let room = unique_name("origin");
    for evil in [
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
        ALLOWED_ORIGIN,
    ] {
        let resp = upgrade_with_origin(&c, &room, &t, evil).await;
        expect_json_error(resp, 403, &format!("Origin {evil} on the default server")).await;
        let err = RawWs::connect(&c.ws_url(&room, &t), &[("Origin", evil)])
            .await
            .err()
            .expect("evil origin");
        assert_eq!(handshake_refusal(&err).map(|r| r.0), Some(403), "{err}");
    }
    let own = c.base.clone();
    let mut ws = RawWs::connect(&c.ws_url(&room, &t), &[("Origin", &own)])
        .await
        .unwrap_or_else(|e| panic!("own origin {own} refused: {e} {:?}", handshake_refusal(&e)));
    ws.roundtrip_ping().await;
    let mut ws = RawWs::connect(&c.ws_url(&room, &t), &[])
        .await
        .expect("no Origin is accepted");
    ws.roundtrip_ping().await;

    let s = strict_client().await;
    let (_, ts) = new_user_any_ip(&s, "origin").await;
    let mut ws = RawWs::connect(&s.ws_url(&room, &ts), &[("Origin", ALLOWED_ORIGIN)])
        .await
        .unwrap_or_else(|e| {
            panic!(
                "ALLOWED_ORIGINS origin refused: {e} {:?}",
                handshake_refusal(&e)
            )
        });
    ws.roundtrip_ping().await;
    let resp = upgrade_with_origin(&s, &room, &ts, "https://evil.example").await;
    expect_json_error(resp, 403, "evil origin on the allowlist server").await;
    let mut ws = RawWs::connect(&s.ws_url(&room, &ts), &[("Origin", &s.base)])
        .await
        .expect("own origin with an allowlist");
    ws.roundtrip_ping().await;
}

// ---------------------------------------------------------------------------------------------
// Logout
// ---------------------------------------------------------------------------------------------

/// Asserts every way of using `token` is refused with 401.
async fn assert_token_refused(c: &Client, token: &str, room: &str, what: &str) {
    let err = WsClient::connect(&c.ws_url(room, token))
        .await
        .err()
        .unwrap_or_else(|| panic!("{what}: WS accepted"));
    assert_eq!(
        handshake_refusal(&err).map(|r| r.0),
        Some(401),
        "{what}: {err}"
    );
    let protocol = format!("bearer, {token}");
    let err = RawWs::connect(
        &ws_url_bare(c, room),
        &[("Sec-WebSocket-Protocol", &protocol)],
    )
    .await
    .err()
    .unwrap_or_else(|| panic!("{what}: WS (subprotocol) accepted"));
    assert_eq!(
        handshake_refusal(&err).map(|r| r.0),
        Some(401),
        "{what}: {err}"
    );
    expect_json_error(
        get_bearer(c, &format!("/rooms/{room}/members"), token).await,
        401,
        &format!("{what}: members"),
    )
    .await;
    expect_json_error(
        get_bearer(c, &format!("/rooms/{room}/messages"), token).await,
        401,
        &format!("{what}: messages"),
    )
    .await;
    expect_json_error(
        logout(c, token, false).await,
        401,
        &format!("{what}: logout again"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_that_badge_and_closes_only_its_sockets() {
    let c = client();
    let (user, t1) = c.new_user("logout").await;
    let t2 = c.login(&user, DEFAULT_PASSWORD).await;
    let (room, room2) = (unique_name("lo1"), unique_name("lo2"));
    let mut a = c.ws(&room, &t1).await;
    let mut a2 = c.ws(&room2, &t1).await;
    let protocol = format!("bearer, {t1}");
    let mut a3 = RawWs::connect(
        &ws_url_bare(&c, &room),
        &[("Sec-WebSocket-Protocol", &protocol)],
    )
    .await
    .unwrap();
    let mut b = c.ws(&room, &t2).await;
    for ws in [&mut a, &mut a2, &mut b] {
        ws.roundtrip_ping().await;
    }
    a3.roundtrip_ping().await;
    // A moment for the server to note where the badge has sockets (done off the critical path).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (status, v) = status_json(logout(&c, &t1, false).await, "logout").await;
    assert_eq!(status, 200, "{v}");
    let started = Instant::now();
    expect_closed_with(
        &mut a,
        1008,
        Duration::from_millis(1500),
        "socket of the revoked badge",
    )
    .await;
    expect_closed_with(
        &mut a2,
        1008,
        Duration::from_millis(1500),
        "socket of the revoked badge, other room",
    )
    .await;
    match a3.wait_close(Duration::from_millis(1500)).await {
        Ok(Some((code, _))) => assert_eq!(code, 1008),
        other => panic!("subprotocol socket of the revoked badge: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The other badge's socket stays open and working.
    b.roundtrip_ping().await;
    b.send_message(&room, "still logged in").await;
    assert_eq!(b.next_message().await["content"], "still logged in");
    assert_token_refused(&c, &t1, &room, "revoked badge").await;
    get_ok(&c, &format!("/rooms/{room}/members"), &t2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_right_after_connecting_still_closes_the_socket() {
    let c = client();
    let (_, t) = c.new_user("quicklo").await;
    let room = unique_name("quicklo");
    let mut ws = c.ws(&room, &t).await;
    assert_eq!(logout(&c, &t, false).await.status(), 200);
    expect_closed_with(
        &mut ws,
        1008,
        Duration::from_millis(1500),
        "socket opened just before logout",
    )
    .await;
}

/// A room remembers the badges the session ledger admitted into it (so a reconnect does not ask
/// the ledger again), in storage that outlives a restart; a logout must clear that memory too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_remember_admitted_badges_across_restarts_and_forget_revoked_ones() {
    let server = start(ServerOptions::relaxed_limits()).await;
    let c = server.client();
    let (user, t1) = c.new_user("remember").await;
    let t2 = c.login(&user, DEFAULT_PASSWORD).await;
    let room = unique_name("remember");
    for token in [&t1, &t2] {
        let mut ws = c.ws(&room, token).await;
        ws.roundtrip_ping().await;
        ws.close().await;
    }
    // No socket is open any more; the logout still reaches the room, which forgets the badge.
    assert_eq!(logout(&c, &t1, false).await.status(), 200);
    let server = restart(server).await;
    let c = server.client();
    assert_token_refused(&c, &t1, &room, "badge revoked before the restart").await;
    // The other badge, admitted before the restart, is remembered and gets in.
    let mut ws = c.ws(&room, &t2).await;
    ws.roundtrip_ping().await;
    ws.close().await;

    // Logging out everywhere (a later second than the login: the stamp's resolution).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(logout(&c, &t2, true).await.status(), 200);
    let server = restart(server).await;
    let c = server.client();
    assert_token_refused(&c, &t2, &room, "after logout everywhere and a restart").await;
}

/// A room writes its copy of an admitted badge a moment after the admission (with the others
/// of a burst, in one commit). A logout in that moment must win: the badge is never written,
/// or the room would let it back in after a restart without asking the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_badge_revoked_before_the_room_writes_it_down_is_not_remembered() {
    let server = start(ServerOptions::relaxed_limits()).await;
    let c = server.client();
    let (_, token) = c.new_user("quickrevoke").await;
    let room = unique_name("quickrevoke");
    let mut ws = c.ws(&room, &token).await;
    // At once: the room writes the badge down about 100 ms after admitting it.
    assert_eq!(logout(&c, &token, false).await.status(), 200);
    expect_closed_with(&mut ws, 1008, Duration::from_millis(1500), "revoked").await;
    tokio::time::sleep(Duration::from_millis(500)).await; // past the write
    let server = restart(server).await;
    let c = server.client();
    assert_token_refused(
        &c,
        &token,
        &room,
        "badge revoked before the room wrote it down",
    )
    .await;
}

/// The session ledger keeps one record per (badge, room) with sockets, so logout can close
/// them; a client controls how many rooms it opens, so the records per account are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_ledger_bounds_the_rooms_one_account_holds_open() {
    let server = start(ServerOptions::relaxed_limits().var("MAX_ROOMS_PER_USER", "2")).await;
    let c = server.client();
    let (user, token) = c.new_user("ledger").await;
    let (a, b, third) = (
        unique_name("ledger-a"),
        unique_name("ledger-b"),
        unique_name("ledger-c"),
    );
    let mut in_a = c.ws(&a, &token).await;
    let mut in_b = c.ws(&b, &token).await;
    let refused = c
        .upgrade_attempt(&format!("/ws/{third}?token={token}"))
        .await;
    let v = expect_json_error(refused, 429, "a third room").await;
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or("")
            .contains("too many rooms"),
        "{v}"
    );
    // The ledger writes its records a moment after the admissions (counted from memory until
    // then): once written, they still count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = c
        .upgrade_attempt(&format!("/ws/{third}?token={token}"))
        .await;
    expect_json_error(refused, 429, "a third room, records written").await;
    // Another socket in a room already on record adds no record.
    let mut again_a = c.ws(&a, &token).await;
    again_a.roundtrip_ping().await;
    // Other accounts are not affected.
    let (_, other) = c.new_user("ledger-other").await;
    c.ws(&third, &other).await.roundtrip_ping().await;

    // Logging out everywhere closes the sockets and clears the records: a new badge gets in.
    assert_eq!(logout(&c, &token, true).await.status(), 200);
    for (ws, what) in [
        (&mut in_a, "a"),
        (&mut in_b, "b"),
        (&mut again_a, "a again"),
    ] {
        expect_closed_with(ws, 1008, Duration::from_millis(1500), what).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await; // the stamp's one-second resolution
    let fresh = c.login(&user, DEFAULT_PASSWORD).await;
    c.ws(&third, &fresh).await.roundtrip_ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_revokes_all_earlier_badges_and_closes_all_sockets() {
    let c = client();
    let (user, t1) = c.new_user("loall").await;
    let t2 = c.login(&user, DEFAULT_PASSWORD).await;
    let (other, to) = c.new_user("bystander").await;
    let (room, room2) = (unique_name("la1"), unique_name("la2"));
    let mut a = c.ws(&room, &t1).await;
    let mut b = c.ws(&room2, &t2).await;
    let mut o = c.ws(&room, &to).await;
    for ws in [&mut a, &mut b, &mut o] {
        ws.roundtrip_ping().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Be sure the logout happens in a later second than both logins (see the next test).
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let (status, v) = status_json(logout(&c, &t1, true).await, "logout all").await;
    assert_eq!(status, 200, "{v}");
    expect_closed_with(
        &mut a,
        1008,
        Duration::from_millis(1500),
        "socket of badge 1",
    )
    .await;
    expect_closed_with(
        &mut b,
        1008,
        Duration::from_millis(1500),
        "socket of badge 2",
    )
    .await;
    assert_eq!(o.next_of_type("leave").await["username"], user.as_str());
    o.roundtrip_ping().await;
    assert_token_refused(&c, &t1, &room, "badge 1 after logout-all").await;
    assert_token_refused(&c, &t2, &room, "badge 2 after logout-all").await;
    get_ok(&c, &format!("/rooms/{room}/members"), &to).await; // other users unaffected
    let _ = other;

    // A badge issued after the logout (next second) works.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t3 = c.login(&user, DEFAULT_PASSWORD).await;
    get_ok(&c, &format!("/rooms/{room}/members"), &t3).await;
    let mut ws = c.ws(&room, &t3).await;
    ws.roundtrip_ping().await;
}

/// Badges issued before a logout-everywhere must be refused even when issued in the same second
/// as the logout (the not-before stamp has one-second resolution).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_also_revokes_badges_issued_in_the_same_second() {
    let c = client();
    for attempt in 0..3 {
        let (user, t1) = c.new_user("losame").await;
        let t2 = c.login(&user, DEFAULT_PASSWORD).await;
        let iat2 = decode_jwt(&t2).1["iat"].as_i64().unwrap();
        assert_eq!(logout(&c, &t1, true).await.status(), 200);
        let after = now_secs();
        let resp = get_bearer(&c, &format!("/rooms/{}/members", unique_name("x")), &t2).await;
        assert_eq!(
            resp.status(),
            401,
            "attempt {attempt}: a badge issued (iat {iat2}) before logout-all (done by {after}) \
             is still accepted: {}",
            resp.text().await.unwrap_or_default()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Key rotation
// ---------------------------------------------------------------------------------------------

const SECRET_A: &str = "rotation-secret-A-0123456789abcdefghijklmnop";
const SECRET_B: &str = "rotation-secret-B-0123456789abcdefghijklmnop";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_signing_key_keeps_old_badges_valid_until_the_previous_key_is_dropped() {
    let server = start(ServerOptions::relaxed_limits().var("JWT_SECRET", SECRET_A)).await;
    let c = server.client();
    let (user, old) = c.new_user("rotate").await;
    assert!(
        hs256_signature_valid(&old, SECRET_A.as_bytes()),
        "signed with A"
    );
    let old_kid = decode_jwt(&old).0["kid"].as_str().map(str::to_owned);
    let room = unique_name("rotate");
    get_ok(&c, &format!("/rooms/{room}/members"), &old).await;

    // B current, A previous.
    let mut vars: Vec<(&str, &str)> = vec![
        ("SIGNUP_MAX_PER_IP", "1000000"),
        ("LOGIN_MAX_FAILURES_PER_IP", "1000000"),
        ("JWT_SECRET", SECRET_B),
        ("JWT_SECRET_PREVIOUS", SECRET_A),
    ];
    write_dev_vars(&server, &vars);
    let server = restart(server).await;
    let c = server.client(); // no pooled connection to the stopped server
    get_ok(&c, &format!("/rooms/{room}/members"), &old).await;
    let mut ws = c.ws(&room, &old).await;
    ws.roundtrip_ping().await;
    drop(ws);
    let new = c.login(&user, DEFAULT_PASSWORD).await;
    assert!(
        hs256_signature_valid(&new, SECRET_B.as_bytes()),
        "new badges are signed with B"
    );
    assert!(!hs256_signature_valid(&new, SECRET_A.as_bytes()));
    let new_kid = decode_jwt(&new).0["kid"].as_str().map(str::to_owned);
    assert!(new_kid.is_some(), "new badge has a kid");
    assert_ne!(new_kid, old_kid, "the kid names the key");
    get_ok(&c, &format!("/rooms/{room}/members"), &new).await;

    // Only B: the old badge is refused, the new one works.
    vars.truncate(3);
    write_dev_vars(&server, &vars);
    let server = restart(server).await;
    let c = server.client(); // no pooled connection to the stopped server
    expect_json_error(
        get_bearer(&c, &format!("/rooms/{room}/members"), &old).await,
        401,
        "old badge after A is dropped",
    )
    .await;
    let err = WsClient::connect(&c.ws_url(&room, &old))
        .await
        .err()
        .expect("old badge WS");
    assert_eq!(handshake_refusal(&err).map(|r| r.0), Some(401));
    get_ok(&c, &format!("/rooms/{room}/members"), &new).await;
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// Login and signup throttling
// ---------------------------------------------------------------------------------------------

async fn expect_throttled(resp: reqwest::Response, what: &str) {
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let v = expect_json_error(resp, 429, what).await;
    assert_eq!(
        v,
        json!({"detail": "Too many attempts; try again later"}),
        "{what}"
    );
    let secs: u64 = retry
        .as_deref()
        .unwrap_or_else(|| panic!("{what}: no Retry-After"))
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After {retry:?}"));
    assert!(secs >= 1, "{what}: Retry-After {secs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_per_user_are_throttled_even_for_the_right_password() {
    let c = strict_client().await;
    let (user, _) = new_user_any_ip(&c, "victim").await;
    let (other, _) = new_user_any_ip(&c, "other").await;
    for i in 0..3 {
        let resp = login_from(&c, &user, "wrong password!", &random_ip()).await;
        expect_json_error(resp, 401, &format!("wrong password {i}")).await;
    }
    let resp = login_from(&c, &user, DEFAULT_PASSWORD, &random_ip()).await;
    expect_throttled(resp, "right password after 3 failures").await;
    let resp = login_from(&c, &user.to_uppercase(), DEFAULT_PASSWORD, &random_ip()).await;
    expect_throttled(resp, "same user, other case").await;

    // An unknown name gets the same treatment.
    let ghost = unique_name("ghost");
    for _ in 0..3 {
        expect_json_error(
            login_from(&c, &ghost, "whatever pw", &random_ip()).await,
            401,
            "ghost",
        )
        .await;
    }
    expect_throttled(
        login_from(&c, &ghost, "whatever pw", &random_ip()).await,
        "unknown user after 3",
    )
    .await;

    // Others are unaffected.
    let (status, v) = status_json(
        login_from(&c, &other, DEFAULT_PASSWORD, &random_ip()).await,
        "other",
    )
    .await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_per_ip_are_throttled_and_other_ips_are_not() {
    let c = strict_client().await;
    let (user, _) = new_user_any_ip(&c, "ipuser").await;
    let ip = random_ip();
    for i in 0..3 {
        let resp = login_from(&c, &unique_name("nobody"), "wrong password!", &ip).await;
        expect_json_error(resp, 401, &format!("failure {i} from {ip}")).await;
    }
    expect_throttled(
        login_from(&c, &unique_name("nobody"), "wrong password!", &ip).await,
        "4th name from one IP",
    )
    .await;
    expect_throttled(
        login_from(&c, &user, DEFAULT_PASSWORD, &ip).await,
        "right password from the throttled IP",
    )
    .await;
    let (status, v) = status_json(
        login_from(&c, &user, DEFAULT_PASSWORD, &random_ip()).await,
        "other IP",
    )
    .await;
    assert_eq!(status, 200, "another IP is unaffected: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signups_per_ip_are_throttled() {
    let c = strict_client().await;
    let ip = random_ip();
    for i in 0..2 {
        let resp = signup_from(&c, &unique_name("su"), DEFAULT_PASSWORD, &ip).await;
        assert_eq!(resp.status(), 201, "signup {i} from {ip}");
    }
    expect_throttled(
        signup_from(&c, &unique_name("su"), DEFAULT_PASSWORD, &ip).await,
        "third signup from one IP",
    )
    .await;
    let resp = signup_from(&c, &unique_name("su"), DEFAULT_PASSWORD, &random_ip()).await;
    assert_eq!(resp.status(), 201, "another IP is unaffected");
}

// ---------------------------------------------------------------------------------------------
// Size and format limits
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413_and_long_urls_are_4xx() {
    let c = client();
    let (_, t) = c.new_user("big").await;
    let big_json =
        json!({"username": "x".repeat(17 * 1024), "password": DEFAULT_PASSWORD}).to_string();
    let resp = c
        .http
        .post(c.url("/users/"))
        .header("content-type", "application/json")
        .body(big_json.clone())
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 413, "/users/ 17 KiB").await;
    let big_form = form_encode(&[("username", "bob"), ("password", &"p".repeat(17 * 1024))]);
    let resp = c
        .http
        .post(c.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big_form)
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 413, "/token 17 KiB").await;
    let big_room =
        json!({"room_id": "r", "private": true, "pad": "x".repeat(17 * 1024)}).to_string();
    let resp = c
        .http
        .post(c.url("/rooms"))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body(big_room)
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 413, "/rooms 17 KiB").await;
    // Just under the limit is parsed (and refused for its content, not its size).
    let ok_size =
        json!({"username": "x".repeat(15 * 1024), "password": DEFAULT_PASSWORD}).to_string();
    let resp = c
        .http
        .post(c.url("/users/"))
        .header("content-type", "application/json")
        .body(ok_size)
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 422, "/users/ 15 KiB").await;

    for path in [
        format!("/rooms/r/messages?x={}", "a".repeat(9000)),
        format!("/{}", "a".repeat(9000)),
        format!("/ws/r?token={}", "a".repeat(9000)),
    ] {
        let resp = c
            .http
            .get(c.url(&path))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "URL of {} bytes: {status}",
            path.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_limits_and_content_types() {
    let c = client();
    let (_, t) = c.new_user("limits").await;
    for (name, password, what) in [
        (
            "ab".to_string(),
            DEFAULT_PASSWORD.to_string(),
            "username 2 chars",
        ),
        (
            "u".repeat(33),
            DEFAULT_PASSWORD.to_string(),
            "username 33 chars",
        ),
        (unique_name("pw"), "p".repeat(129), "password 129 chars"),
        (unique_name("pw"), "".to_string(), "empty password"),
    ] {
        expect_json_error(c.signup(&name, &password).await, 422, what).await;
    }
    let resp = c
        .http
        .post(c.url("/rooms"))
        .bearer_auth(&t)
        .json(&json!({"room_id": "r".repeat(65), "private": true}))
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 422, "room id 65 chars").await;
    let resp = c
        .upgrade_attempt(&format!("/ws/{}?token={}", "r".repeat(65), urlencode(&t)))
        .await;
    expect_json_error(resp, 422, "ws room id 65 chars").await;

    let resp = c
        .http
        .post(c.url("/token"))
        .json(&json!({"username": "bob", "password": DEFAULT_PASSWORD}))
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 415, "/token with JSON").await;
    let resp = c
        .http
        .post(c.url("/users/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_encode(&[
            ("username", &unique_name("form")),
            ("password", DEFAULT_PASSWORD),
        ]))
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 415, "/users/ form-encoded").await;
    let resp = c
        .http
        .post(c.url("/users/"))
        .header("content-type", "text/plain")
        .body(json!({"username": unique_name("txt"), "password": DEFAULT_PASSWORD}).to_string())
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 415, "/users/ text/plain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_policy() {
    let c = client();
    let name = unique_name("Policy");
    expect_json_error(
        c.signup(&name, &name.to_lowercase()).await,
        422,
        "password = username (other case)",
    )
    .await;
    expect_json_error(c.signup(&name, &name).await, 422, "password = username").await;
    expect_json_error(c.signup(&name, "seven77").await, 422, "7 chars").await;
    expect_json_error(c.signup(&name, "ééééééé").await, 422, "7 chars, 14 bytes").await;
    assert_eq!(
        c.signup(&name, "eight888").await.status(),
        201,
        "8 chars is enough"
    );
    c.login(&name, "eight888").await;
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
        let mi = rng.below(methods.len());
        let method = reqwest::Method::from_bytes(methods[mi].as_bytes()).unwrap();
        let path = match rng.below(3) {
            0 => {
                let fi = rng.below(fixed.len());
                fixed[fi].to_string()
            }
            1 => {
                let fi = rng.below(fixed.len());
                format!("{}?{}", fixed[fi], urlencode(&rng.string(10)))
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
        let mut req = c.http.request(method.clone(), c.url(&path)).body(body);
        let ci = rng.below(ctypes.len());
        let ct = ctypes[ci];
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
    history_and_presence(&mut ws).await;
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
    let health = c.http.get(c.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// Security headers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_response_has_the_security_headers() {
    let c = client();
    let (name, t) = c.new_user("headers").await;
    let room = unique_name("headers");
    let mut responses: Vec<(String, reqwest::Response)> = vec![
        (
            "signup 201".into(),
            c.signup(&unique_name("hdr"), DEFAULT_PASSWORD).await,
        ),
        ("signup 409".into(), c.signup(&name, DEFAULT_PASSWORD).await),
        ("signup 422".into(), c.signup("x", DEFAULT_PASSWORD).await),
        (
            "login 200".into(),
            c.login_response(&name, DEFAULT_PASSWORD).await,
        ),
        (
            "login 401".into(),
            c.login_response(&name, "wrong password").await,
        ),
        (
            "404".into(),
            c.http.get(c.url("/nope")).send().await.unwrap(),
        ),
        (
            "405".into(),
            c.http.get(c.url("/token")).send().await.unwrap(),
        ),
        (
            "healthz".into(),
            c.http.get(c.url("/healthz")).send().await.unwrap(),
        ),
        (
            "426".into(),
            c.http
                .get(c.url(&format!("/ws/{room}")))
                .send()
                .await
                .unwrap(),
        ),
        (
            "ws 401".into(),
            c.upgrade_attempt(&format!("/ws/{room}?token=bad")).await,
        ),
        (
            "members".into(),
            get_bearer(&c, &format!("/rooms/{room}/members"), &t).await,
        ),
        (
            "messages".into(),
            get_bearer(&c, &format!("/rooms/{room}/messages"), &t).await,
        ),
        (
            "messages 422".into(),
            get_bearer(&c, &format!("/rooms/{room}/messages?limit=0"), &t).await,
        ),
        (
            "room info".into(),
            get_bearer(&c, &format!("/rooms/{room}"), &t).await,
        ),
        (
            "create room".into(),
            create_private_room(&c, &t, &unique_name("hdrroom")).await,
        ),
        (
            "stats 404".into(),
            get_bearer(&c, &format!("/rooms/{room}/stats"), &t).await,
        ),
    ];
    for (what, resp) in responses.drain(..) {
        let h = resp.headers().clone();
        let get = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        assert!(
            get("content-type").starts_with("application/json"),
            "{what}: content-type {:?}",
            get("content-type")
        );
        assert_eq!(
            get("x-content-type-options"),
            "nosniff",
            "{what} ({})",
            resp.status()
        );
        assert_eq!(
            get("referrer-policy"),
            "no-referrer",
            "{what} ({})",
            resp.status()
        );
        if what == "login 200" {
            assert_eq!(resp.status(), 200);
            assert!(
                get("cache-control").contains("no-store"),
                "{what}: cache-control {:?}",
                get("cache-control")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rehash on login
// ---------------------------------------------------------------------------------------------

/// The stored password hash of `user`, read from the stopped server's local D1.
fn stored_hash(server: &Server, user: &str) -> String {
    assert!(
        !server.is_running(),
        "read D1 only while the server is stopped"
    );
    let wrangler = repo_root().join("node_modules/.bin/wrangler");
    let out = Command::new(wrangler)
        .args(["d1", "execute", "DB", "--local", "--json", "--persist-to"])
        .arg(&server.persist_dir)
        .arg("--config")
        .arg(server.dir.join("wrangler.toml"))
        .arg("--command")
        .arg(format!(
            "SELECT password_hash FROM users WHERE username = '{user}'"
        ))
        .env("CI", "true")
        .env("WRANGLER_SEND_METRICS", "false")
        .env("NO_COLOR", "1")
        .current_dir(&server.dir)
        .stdin(Stdio::null())
        .output()
        .expect("wrangler d1 execute");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "d1 execute failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("d1 JSON ({e}): {stdout}"));
    v[0]["results"][0]["password_hash"]
        .as_str()
        .unwrap_or_else(|| panic!("no hash in {v}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weak_stored_hash_is_upgraded_on_login() {
    let server = start(
        ServerOptions::relaxed_limits()
            .var("ARGON2_M_KIB", "1024")
            .var("ARGON2_T", "1"),
    )
    .await;
    let c = server.client();
    let (user, _) = c.new_user("rehash").await;
    let server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    let weak = tokio::task::block_in_place(|| stored_hash(&server, &user));
    assert!(
        weak.starts_with("$argon2id$") && weak.contains("m=1024,t=1"),
        "weak hash: {weak}"
    );

    write_dev_vars(
        &server,
        &[
            ("JWT_SECRET", TEST_JWT_SECRET),
            ("SIGNUP_MAX_PER_IP", "1000000"),
        ],
    );
    let server = restart(server).await;
    let c = server.client(); // no pooled connection to the stopped server
    let token = c.login(&user, DEFAULT_PASSWORD).await;
    get_ok(&c, &format!("/rooms/{}/members", unique_name("r")), &token).await;
    let server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    let strong = tokio::task::block_in_place(|| stored_hash(&server, &user));
    assert!(strong.starts_with("$argon2id$"), "{strong}");
    assert!(
        !strong.contains("m=1024,t=1"),
        "hash not upgraded: {strong}"
    );
    assert_ne!(strong, weak);
    // And the upgraded hash still verifies.
    let server = restart(server).await;
    let c = server.client(); // no pooled connection to the stopped server
    c.login(&user, DEFAULT_PASSWORD).await;
    expect_json_error(
        c.login_response(&user, "wrong password").await,
        401,
        "wrong password after rehash",
    )
    .await;
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// More abuse cases
// ---------------------------------------------------------------------------------------------

/// Parallel wrong passwords must not get more password checks than the limit allows: the
/// throttle has to count an attempt before (or atomically with) evaluating the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_passwords_cannot_exceed_the_per_user_limit() {
    let c = strict_client().await;
    let (user, _) = new_user_any_ip(&c, "parallel").await;
    let guesses: Vec<usize> = (0..12).collect();
    let statuses = bounded_join(guesses, 12, |i| {
        let (c, user) = (c.clone(), user.clone());
        async move {
            login_from(&c, &user, &format!("wrong guess {i}"), &random_ip())
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

/// Identity headers are the Worker's to set: a client's own `X-Clubhouse-*` headers are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_identity_headers_are_ignored() {
    let c = client();
    let (_, to) = c.new_user("owner").await;
    let (mallory, tm) = c.new_user("mallory").await;
    let room = unique_name("spoofpriv");
    assert_eq!(create_private_room(&c, &to, &room).await.status(), 201);
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
    let err = RawWs::connect(&c.ws_url(&room, &tm), &spoof)
        .await
        .err()
        .expect("a non-member with spoofed headers must be refused");
    assert_eq!(handshake_refusal(&err).map(|r| r.0), Some(403), "{err}");
    let mut req = c
        .http
        .get(c.url(&format!("/rooms/{room}/messages")))
        .bearer_auth(&tm);
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
    let mut ws = RawWs::connect(&c.ws_url(&public, &tm), &spoof)
        .await
        .unwrap();
    match ws.next_within(FRAME_TIMEOUT).await {
        Some(Incoming::Json(v)) => assert_eq!(v["type"], "history", "{v}"),
        other => panic!("{other:?}"),
    }
    match ws.next_within(FRAME_TIMEOUT).await {
        Some(Incoming::Json(v)) => assert_eq!(v["users"], json!([mallory]), "{v}"),
        other => panic!("{other:?}"),
    }
    assert!(
        ws.send_text(&json!({"content": "who am I", "room_id": public}).to_string())
            .await
    );
    match ws.next_within(FRAME_TIMEOUT).await {
        Some(Incoming::Json(v)) => {
            assert_eq!(v["username"], mallory.as_str(), "{v}");
            assert_eq!(v["room_id"], public.as_str(), "{v}");
        }
        other => panic!("{other:?}"),
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
