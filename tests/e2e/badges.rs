//! Badges (JWTs): what login issues, every bad badge refused before an upgrade, the badge as a
//! WebSocket subprotocol, logout (one badge and everywhere) with the rooms and the session ledger
//! remembering it, and key rotation.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_returns_a_bearer_jwt_with_the_contract_claims() {
    let c = client();
    let name = unique_name("login");
    assert_eq!(c.signup(&name, DEFAULT_PASSWORD).await.status(), 201);
    let resp = c.login_response(&name, DEFAULT_PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let cache = header(&resp, "cache-control");
    assert!(cache.contains("no-store"), "Cache-Control: {cache:?}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer", "{body}");
    let token = body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();

    let (header, claims) = decode_jwt(&token);
    assert_eq!(header["alg"], "HS256", "{header}");
    assert_eq!(claims["sub"], name.as_str(), "{claims}");
    assert_eq!(claims["iss"], JWT_ISS, "{claims}");
    assert_eq!(claims["aud"], JWT_AUD, "{claims}");
    let iat = claims["iat"].as_i64().expect("numeric iat");
    let exp = claims["exp"].as_i64().expect("numeric exp");
    assert!((iat - now_secs()).abs() <= 60, "iat {iat} is not now");
    assert_eq!(exp - iat, 3600, "default lifetime is one hour: {claims}");
    let jti = claims["jti"].as_str().expect("string jti");
    assert!(jti.len() >= 8, "jti too short to be unique: {jti:?}");
    // Signed with the JWT_SECRET binding (the harness's test secret), and by nothing else.
    assert!(hs256_signature_valid(&token, TEST_JWT_SECRET.as_bytes()));

    // Each login is a new badge.
    let token2 = c.login(&name, DEFAULT_PASSWORD).await;
    let (_, claims2) = decode_jwt(&token2);
    assert_ne!(
        claims2["jti"], claims["jti"],
        "jti must differ between logins"
    );
}

/// Every way a badge can be bad; each must be refused with 401 JSON before any upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_refuses_bad_tokens_with_401_before_upgrading() {
    let c = client();
    let (room, [(name, real)]) = c.room_with_users("lobby", ["badtok"]).await;
    let now = now_secs();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut claims = good_claims(&name);
        edit(&mut claims);
        claims
    };
    let (real_header, real_claims) = decode_jwt(&real);
    let real_parts: Vec<&str> = real.split('.').collect();
    let mut tampered_claims = real_claims.clone();
    tampered_claims["sub"] = json!(format!("{name}x"));

    let cases: Vec<(&str, String)> = vec![
        ("empty token", String::new()),
        ("garbage", "not-a-jwt".into()),
        ("three garbage parts", "a.b.c".into()),
        ("two parts", format!("{}.{}", real_parts[0], real_parts[1])),
        (
            "real token with its signature removed",
            format!("{}.{}.", real_parts[0], real_parts[1]),
        ),
        (
            "forged: signed with another key",
            sign_hs256(&good_claims(&name), OTHER_KEY),
        ),
        ("alg none, unsigned", unsigned_token(&good_claims(&name))),
        (
            "alg none, with the real signature",
            format!(
                "{}.{}.{}",
                b64url_encode(br#"{"alg":"none","typ":"JWT"}"#),
                real_parts[1],
                real_parts[2]
            ),
        ),
        (
            "header says HS512, HMAC-SHA256 with the real key",
            sign_hs256_as("HS512", &good_claims(&name), TEST_JWT_SECRET.as_bytes()),
        ),
        (
            "payload changed, original signature kept",
            format!(
                "{}.{}.{}",
                real_parts[0],
                b64url_encode(tampered_claims.to_string().as_bytes()),
                real_parts[2]
            ),
        ),
        (
            "expired beyond the 30 s leeway",
            test_token(&with(&|c| {
                c["iat"] = json!(now - 7200);
                c["exp"] = json!(now - 120);
            })),
        ),
        (
            "wrong issuer",
            test_token(&with(&|c| c["iss"] = json!("someone-else"))),
        ),
        (
            "wrong audience",
            test_token(&with(&|c| c["aud"] = json!("someone-else"))),
        ),
        (
            "no exp",
            test_token(&with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
        ),
        (
            "no sub",
            test_token(&with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            })),
        ),
    ];
    assert_eq!(real_header["alg"], "HS256");

    for (what, token) in &cases {
        let resp = c.upgrade_attempt(&ws_path(&room, token)).await;
        expect_json_error(resp, 401, what).await;
    }
    let resp = c.upgrade_attempt(&format!("/ws/{room}")).await;
    expect_json_error(resp, 401, "no token at all").await;

    // And through a real WebSocket client: the handshake fails with the 401.
    let forged = sign_hs256(&good_claims(&name), OTHER_KEY);
    assert_refused(
        c.try_ws(&room, &forged).await,
        401,
        "a forged token must not upgrade",
    );

    // The same claims signed with the right key DO get in: the refusals above are about the
    // badge, not about the harness's tokens.
    c.ws_ready(&room, &test_token(&good_claims(&name))).await;
    // Expired, but within the 30 s leeway: still accepted.
    let recent = test_token(&with(&|c| {
        c["iat"] = json!(now - 3600);
        c["exp"] = json!(now - 5);
    }));
    let ws2 = c.try_ws(&room, &recent).await;
    assert!(
        ws2.is_ok(),
        "exp 5 s ago is within the 30 s leeway: {:?}",
        ws2.err()
    );
}

// ---------------------------------------------------------------------------------------------
// The badge as a WebSocket subprotocol
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_badge_as_bearer_subprotocol_is_accepted_and_bearer_is_selected() {
    let c = client();
    let (room, [(user, t)]) = c.room_with_users("subproto", ["subproto"]).await;
    let mut ws = c.ws_subprotocol(&room, &t).await.unwrap_or_else(|e| {
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
    let (_, presence) = ws.history_and_presence().await;
    assert_eq!(presence["users"], json!([user]), "{presence}");
    ws.roundtrip_ping().await;
    ws.send_message(&room, "via subprotocol").await;
    let echo = ws.next_message_with("via subprotocol").await;
    assert_eq!(echo["username"], user.as_str());

    // A bad badge in the subprotocol is a 401 before any upgrade, even with a good ?token=.
    let forged = sign_hs256(&good_claims(&user), OTHER_KEY);
    for bad in ["garbage", forged.as_str()] {
        assert_refused(
            c.ws_subprotocol(&room, bad).await,
            401,
            "a bad subprotocol badge",
        );
        let protocol = format!("bearer, {bad}");
        let resp = c
            .upgrade_attempt_with(
                &ws_path(&room, &t),
                &[("Sec-WebSocket-Protocol", &protocol)],
            )
            .await;
        expect_json_error(resp, 401, "bad subprotocol badge with a good ?token=").await;
    }
    // No badge anywhere: 401.
    assert_refused(
        WsClient::connect(&c.ws_url_bare(&room)).await,
        401,
        "no badge",
    );
}

// ---------------------------------------------------------------------------------------------
// Logout
// ---------------------------------------------------------------------------------------------

/// Asserts every way of using `token` is refused with 401.
async fn assert_token_refused(c: &Client, token: &str, room: &str, what: &str) {
    assert_refused(c.try_ws(room, token).await, 401, &format!("{what}: WS"));
    assert_refused(
        c.ws_subprotocol(room, token).await,
        401,
        &format!("{what}: WS (subprotocol)"),
    );
    for read in ["members", "messages"] {
        expect_json_error(
            c.get_bearer(&format!("/rooms/{room}/{read}"), token).await,
            401,
            &format!("{what}: {read}"),
        )
        .await;
    }
    expect_json_error(
        c.logout(token, false).await,
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
    let mut a = c.ws_ready(&room, &t1).await;
    let mut a2 = c.ws_ready(&room2, &t1).await;
    let mut a3 = c.ws_subprotocol(&room, &t1).await.unwrap();
    a3.roundtrip_ping().await;
    let mut b = c.ws_ready(&room, &t2).await;
    // A moment for the server to note where the badge has sockets (done off the critical path).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (status, v) = status_json(c.logout(&t1, false).await, "logout").await;
    assert_eq!(status, 200, "{v}");
    let started = Instant::now();
    a.expect_policy_close("socket of the revoked badge").await;
    a2.expect_policy_close("socket of the revoked badge, other room")
        .await;
    a3.expect_policy_close("subprotocol socket of the revoked badge")
        .await;
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
    c.get_ok(&format!("/rooms/{room}/members"), &t2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_right_after_connecting_still_closes_the_socket() {
    let c = client();
    let (_, t) = c.new_user("quicklo").await;
    let mut ws = c.ws(&unique_name("quicklo"), &t).await;
    assert_eq!(c.logout(&t, false).await.status(), 200);
    ws.expect_policy_close("socket opened just before logout")
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
        c.ws_ready(&room, token).await.close().await;
    }
    // No socket is open any more; the logout still reaches the room, which forgets the badge.
    assert_eq!(c.logout(&t1, false).await.status(), 200);
    let server = restart(server).await;
    let c = server.client();
    assert_token_refused(&c, &t1, &room, "badge revoked before the restart").await;
    // The other badge, admitted before the restart, is remembered and gets in.
    c.ws_ready(&room, &t2).await.close().await;

    // Logging out everywhere (a later second than the login: the stamp's resolution).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(c.logout(&t2, true).await.status(), 200);
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
    let (room, [(_, token)]) = c.room_with_users("quickrevoke", ["quickrevoke"]).await;
    let mut ws = c.ws(&room, &token).await;
    // At once: the room writes the badge down about 100 ms after admitting it.
    assert_eq!(c.logout(&token, false).await.status(), 200);
    ws.expect_policy_close("revoked").await;
    tokio::time::sleep(Duration::from_millis(500)).await; // past the write
    let server = restart(server).await;
    assert_token_refused(
        &server.client(),
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
    let refused = c.upgrade_attempt(&ws_path(&third, &token)).await;
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
    let refused = c.upgrade_attempt(&ws_path(&third, &token)).await;
    expect_json_error(refused, 429, "a third room, records written").await;
    // Another socket in a room already on record adds no record.
    let mut again_a = c.ws_ready(&a, &token).await;
    // Other accounts are not affected.
    let (_, other) = c.new_user("ledger-other").await;
    c.ws_ready(&third, &other).await;

    // Logging out everywhere closes the sockets and clears the records: a new badge gets in.
    assert_eq!(c.logout(&token, true).await.status(), 200);
    for (ws, what) in [
        (&mut in_a, "a"),
        (&mut in_b, "b"),
        (&mut again_a, "a again"),
    ] {
        ws.expect_policy_close(what).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await; // the stamp's one-second resolution
    let fresh = c.login(&user, DEFAULT_PASSWORD).await;
    c.ws_ready(&third, &fresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_revokes_all_earlier_badges_and_closes_all_sockets() {
    let c = client();
    let (user, t1) = c.new_user("loall").await;
    let t2 = c.login(&user, DEFAULT_PASSWORD).await;
    let (_, to) = c.new_user("bystander").await;
    let (room, room2) = (unique_name("la1"), unique_name("la2"));
    let mut a = c.ws_ready(&room, &t1).await;
    let mut b = c.ws_ready(&room2, &t2).await;
    let mut o = c.ws_ready(&room, &to).await;
    // A moment for the server to note where the badges have sockets, and a later second than
    // both logins for the logout (see the next test).
    tokio::time::sleep(Duration::from_millis(300 + 1100)).await;

    let (status, v) = status_json(c.logout(&t1, true).await, "logout all").await;
    assert_eq!(status, 200, "{v}");
    a.expect_policy_close("socket of badge 1").await;
    b.expect_policy_close("socket of badge 2").await;
    assert_eq!(o.next_of_type("leave").await["username"], user.as_str());
    o.roundtrip_ping().await;
    assert_token_refused(&c, &t1, &room, "badge 1 after logout-all").await;
    assert_token_refused(&c, &t2, &room, "badge 2 after logout-all").await;
    c.get_ok(&format!("/rooms/{room}/members"), &to).await; // other users unaffected

    // A badge issued after the logout (next second) works.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t3 = c.login(&user, DEFAULT_PASSWORD).await;
    c.get_ok(&format!("/rooms/{room}/members"), &t3).await;
    c.ws_ready(&room, &t3).await;
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
        assert_eq!(c.logout(&t1, true).await.status(), 200);
        let after = now_secs();
        let resp = c
            .get_bearer(&format!("/rooms/{}/members", unique_name("x")), &t2)
            .await;
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
    let members = format!("/rooms/{room}/members");
    c.get_ok(&members, &old).await;

    // B current, A previous.
    let mut vars: Vec<(&str, &str)> = vec![
        ("SIGNUP_MAX_PER_IP", "1000000"),
        ("LOGIN_MAX_FAILURES_PER_IP", "1000000"),
        ("JWT_SECRET", SECRET_B),
        ("JWT_SECRET_PREVIOUS", SECRET_A),
    ];
    server.write_dev_vars(&vars);
    let server = restart(server).await;
    let c = server.client();
    c.get_ok(&members, &old).await;
    c.ws_ready(&room, &old).await;
    let new = c.login(&user, DEFAULT_PASSWORD).await;
    assert!(
        hs256_signature_valid(&new, SECRET_B.as_bytes()),
        "new badges are signed with B"
    );
    assert!(!hs256_signature_valid(&new, SECRET_A.as_bytes()));
    let new_kid = decode_jwt(&new).0["kid"].as_str().map(str::to_owned);
    assert!(new_kid.is_some(), "new badge has a kid");
    assert_ne!(new_kid, old_kid, "the kid names the key");
    c.get_ok(&members, &new).await;

    // Only B: the old badge is refused, the new one works.
    vars.truncate(3);
    server.write_dev_vars(&vars);
    let server = restart(server).await;
    let c = server.client();
    expect_json_error(
        c.get_bearer(&members, &old).await,
        401,
        "old badge after A is dropped",
    )
    .await;
    assert_refused(c.try_ws(&room, &old).await, 401, "old badge WS");
    c.get_ok(&members, &new).await;
    drop(server);
}
