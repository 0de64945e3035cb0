//! Refresh tokens (`POST /token` with `grant_type=refresh_token`): rotation, reuse detection
//! (a consumed token presented again revokes its family and closes its sockets), expiry, logout,
//! the browser's cookie, and the refusals with their OAuth2 error codes.

use std::time::Duration;

use serde_json::Value;

use crate::accounts::TIGHT;
use crate::harness::*;

/// `POST /token` with the refresh grant and `token` in the form.
async fn refresh(c: &Client, token: &str) -> reqwest::Response {
    let form = form_encode(&[("grant_type", "refresh_token"), ("refresh_token", token)]);
    c.post_body("/token", FORM, form).await
}

/// A login's whole answer; panics unless 200.
async fn login_full(c: &Client, user: &str) -> Value {
    let (status, v) = status_json(
        c.login_response(user, DEFAULT_PASSWORD).await,
        "POST /token",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// A refresh that must succeed: the new (badge, refresh token).
async fn refreshed(c: &Client, token: &str) -> (String, String) {
    let (status, v) = status_json(refresh(c, token).await, "refresh").await;
    assert_eq!(status, 200, "refresh: {v}");
    (text(&v, "access_token"), text(&v, "refresh_token"))
}

fn text(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
        .to_string()
}

/// Asserts a 400 `{"detail", "error": code}`.
async fn expect_oauth_error(resp: reqwest::Response, code: &str, what: &str) -> Value {
    let v = expect_json_error(resp, 400, what).await;
    assert_eq!(v["error"], code, "{what}: {v}");
    v
}

/// Asserts that `badge` is refused on an HTTP route.
async fn expect_badge_refused(c: &Client, badge: &str, room: &str, what: &str) {
    expect_json_error(
        c.get_bearer(&format!("/rooms/{room}/members"), badge).await,
        401,
        what,
    )
    .await;
    assert_refused(c.try_ws(room, badge).await, 401, &format!("{what}: WS"));
}

async fn expect_badge_works(c: &Client, badge: &str, room: &str) {
    c.get_ok(&format!("/rooms/{room}/members"), badge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_grant_also_gives_a_refresh_token_and_expires_in() {
    let c = client();
    let (user, _) = c.new_user("rt").await;
    let v = login_full(&c, &user).await;
    assert_eq!(v["token_type"], "bearer", "{v}");
    assert_eq!(
        v["expires_in"], 3600,
        "the shared server's TOKEN_TTL_SECS: {v}"
    );
    let token = text(&v, "refresh_token");
    // Opaque, with 256 random bits (64 hex digits) after the user's name.
    let (name, random) = token.rsplit_once('.').unwrap();
    assert_eq!(name, user);
    assert_eq!(random.len(), 64, "{token}");
    assert!(random.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    assert_ne!(
        text(&login_full(&c, &user).await, "refresh_token"),
        token,
        "each login a new token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_rotates_the_token_and_open_sockets_survive_it() {
    let c = client();
    let (user, _) = c.new_user("rot").await;
    let room = unique_name("rot");
    let v = login_full(&c, &user).await;
    let (badge1, token1) = (text(&v, "access_token"), text(&v, "refresh_token"));
    let mut ws = c.ws(&room, &badge1).await;
    ws.history_and_presence().await;

    let (status, v) = status_json(refresh(&c, &token1).await, "refresh").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["token_type"], "bearer");
    assert_eq!(v["expires_in"], 3600);
    let (badge2, token2) = (text(&v, "access_token"), text(&v, "refresh_token"));
    assert_ne!(badge2, badge1);
    assert_ne!(token2, token1);
    let (_, claims) = decode_jwt(&badge2);
    assert_eq!(claims["sub"], user.as_str(), "{claims}");

    // Both badges work (the old one until it expires), and the socket opened with the old one
    // stays open and working.
    expect_badge_works(&c, &badge2, &room).await;
    expect_badge_works(&c, &badge1, &room).await;
    ws.send_message(&room, "after the refresh").await;
    assert_eq!(ws.next_message().await["content"], "after the refresh");
    // The new token refreshes in turn.
    let (badge3, _) = refreshed(&c, &token2).await;
    expect_badge_works(&c, &badge3, &room).await;
    ws.roundtrip_ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_token_revokes_its_family_and_closes_its_sockets() {
    let c = client();
    let (user, other_login) = c.new_user("reuse").await;
    let (room, room2) = (unique_name("reuse"), unique_name("reuse2"));
    let v = login_full(&c, &user).await;
    let (badge1, token1) = (text(&v, "access_token"), text(&v, "refresh_token"));
    let (badge2, token2) = refreshed(&c, &token1).await;
    let mut ws1 = c.ws(&room, &badge1).await;
    let mut ws2 = c.ws(&room2, &badge2).await;
    let mut other = c.ws(&room, &other_login).await;
    for ws in [&mut ws1, &mut ws2, &mut other] {
        ws.history_and_presence().await;
    }
    // A moment for the ledger to note where the badges have sockets (written behind).
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The consumed token again: refused, and the whole family goes.
    expect_oauth_error(refresh(&c, &token1).await, "invalid_grant", "reused token").await;
    ws1.expect_policy_close("socket of the family's first badge")
        .await;
    ws2.expect_policy_close("socket of the family's refreshed badge")
        .await;
    expect_badge_refused(&c, &badge1, &room, "first badge").await;
    expect_badge_refused(&c, &badge2, &room, "refreshed badge").await;
    // The family's newest token is dead too: the thief's or the owner's, whoever had it.
    expect_oauth_error(refresh(&c, &token2).await, "invalid_grant", "newest token").await;

    // Another login of the same user is another family: untouched.
    other.roundtrip_ping().await;
    other.send_message(&room, "still here").await;
    assert_eq!(other.next_message().await["content"], "still here");
    expect_badge_works(&c, &other_login, &room).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uses_of_one_token_never_both_succeed() {
    let c = client();
    let (user, _) = c.new_user("race").await;
    for round in 0..3 {
        let token = text(&login_full(&c, &user).await, "refresh_token");
        let answers = futures_util::future::join_all((0..4).map(|_| refresh(&c, &token))).await;
        let mut winners = Vec::new();
        for resp in answers {
            let (status, v) = status_json(resp, "racing refresh").await;
            match status {
                200 => winners.push(text(&v, "refresh_token")),
                400 => assert_eq!(v["error"], "invalid_grant", "{v}"),
                other => panic!("round {round}: status {other}: {v}"),
            }
        }
        assert!(
            winners.len() <= 1,
            "round {round}: {} succeeded",
            winners.len()
        );
        // The losers were reuses, which revoked the family: the winner's token is dead too.
        for token in winners {
            expect_oauth_error(
                refresh(&c, &token).await,
                "invalid_grant",
                "winner after reuse",
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_family() {
    let c = client();
    let (user, _) = c.new_user("lofam").await;
    let room = unique_name("lofam");
    let v = login_full(&c, &user).await;
    let (badge1, token1) = (text(&v, "access_token"), text(&v, "refresh_token"));
    let (badge2, token2) = refreshed(&c, &token1).await;
    let mut ws1 = c.ws(&room, &badge1).await;
    ws1.history_and_presence().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Logging out with the newest badge ends the login: the older badge and its socket too.
    let resp = c.logout(&badge2, false).await;
    assert_eq!(resp.status(), 200);
    let cookie = header(&resp, "set-cookie");
    assert!(
        cookie.starts_with("clubhouse_refresh=;") && cookie.contains("Max-Age=0"),
        "logout clears the refresh cookie: {cookie:?}"
    );
    ws1.expect_policy_close("socket of the family's older badge")
        .await;
    expect_badge_refused(&c, &badge1, &room, "older badge of the family").await;
    expect_oauth_error(refresh(&c, &token2).await, "invalid_grant", "after logout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_revokes_every_family() {
    let c = client();
    let (user, badge) = c.new_user("loall").await;
    let token_a = text(&login_full(&c, &user).await, "refresh_token");
    let token_b = text(&login_full(&c, &user).await, "refresh_token");
    assert_eq!(c.logout(&badge, true).await.status(), 200);
    for token in [token_a, token_b] {
        expect_oauth_error(
            refresh(&c, &token).await,
            "invalid_grant",
            "after logout all",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_refresh_requests_get_oauth2_errors() {
    let c = client();
    let (user, _) = c.new_user("badrt").await;
    let real = text(&login_full(&c, &user).await, "refresh_token");
    let (_, random) = real.rsplit_once('.').unwrap();
    let flipped = format!(
        "{user}.{}{}",
        if random.starts_with('0') { "1" } else { "0" },
        &random[1..]
    );
    for (what, token) in [
        ("garbage", "not-a-token".to_string()),
        ("empty", String::new()),
        ("unknown but well formed", flipped),
        ("another user's name on it", format!("someone.{random}")),
        ("a badge instead", c.login(&user, DEFAULT_PASSWORD).await),
        ("too long", format!("{user}.{}", "a".repeat(10_000))),
    ] {
        expect_oauth_error(refresh(&c, &token).await, "invalid_grant", what).await;
    }
    // The real token was not harmed by the failed guesses.
    refreshed(&c, &real).await;

    let missing = c
        .post_body("/token", FORM, "grant_type=refresh_token")
        .await;
    expect_oauth_error(missing, "invalid_request", "no token, no cookie").await;
    for grant in ["client_credentials", "authorization_code", "code", ""] {
        let form = form_encode(&[
            ("grant_type", grant),
            ("username", &user),
            ("password", "x"),
        ]);
        expect_oauth_error(
            c.post_body("/token", FORM, form).await,
            "unsupported_grant_type",
            grant,
        )
        .await;
    }
    let huge = format!(
        "grant_type=refresh_token&refresh_token={}",
        "a".repeat(20_000)
    );
    expect_json_error(c.post_body("/token", FORM, huge).await, 413, "huge body").await;
}

/// The value of the refresh cookie set by `resp`, with its attributes.
fn refresh_cookie(resp: &reqwest::Response) -> (String, Vec<String>) {
    let set = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("clubhouse_refresh="))
        .unwrap_or_else(|| panic!("no refresh cookie in {:?}", resp.headers()));
    let mut parts = set.split("; ").map(str::to_string);
    let value = parts.next().unwrap()["clubhouse_refresh=".len()..].to_string();
    (value, parts.collect())
}

async fn refresh_by_cookie(c: &Client, cookie: &str, with_header: bool) -> reqwest::Response {
    let mut req = c
        .post("/token")
        .header("content-type", FORM)
        .header("cookie", format!("clubhouse_refresh={cookie}"))
        .body("grant_type=refresh_token");
    if with_header {
        req = req.header("X-Refresh-Cookie", "1");
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_get_the_refresh_token_as_a_strict_http_only_cookie() {
    let c = client();
    let (user, _) = c.new_user("cookie").await;
    let form = form_encode(&[("username", &user), ("password", DEFAULT_PASSWORD)]);
    let resp = c
        .post("/token")
        .header("content-type", FORM)
        .header("X-Refresh-Cookie", "1")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (cookie, attributes) = refresh_cookie(&resp);
    for wanted in ["HttpOnly", "SameSite=Strict", "Path=/token"] {
        assert!(
            attributes.iter().any(|a| a == wanted),
            "{wanted}: {attributes:?}"
        );
    }
    let max_age = attributes
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("Max-Age");
    assert_eq!(max_age, "2592000", "REFRESH_TTL_SECS from the login");
    assert!(
        !attributes.iter().any(|a| a == "Secure"),
        "plain http here: a Secure cookie would never come back ({attributes:?})"
    );
    let v: Value = resp.json().await.unwrap();
    assert!(
        v.get("refresh_token").is_none(),
        "not readable by scripts: {v}"
    );
    let badge = text(&v, "access_token");

    // Without the header a cross-site form cannot send, the cookie is refused.
    expect_oauth_error(
        refresh_by_cookie(&c, &cookie, false).await,
        "invalid_request",
        "cookie without the header",
    )
    .await;
    // With it: a new badge, and the new token in a new cookie only.
    let resp = refresh_by_cookie(&c, &cookie, true).await;
    assert_eq!(resp.status(), 200);
    let (cookie2, _) = refresh_cookie(&resp);
    assert_ne!(cookie2, cookie);
    let v: Value = resp.json().await.unwrap();
    assert!(v.get("refresh_token").is_none(), "{v}");
    expect_badge_works(&c, &text(&v, "access_token"), &unique_name("ck")).await;

    // The consumed cookie again: a reuse, and the answer clears the cookie.
    let resp = refresh_by_cookie(&c, &cookie, true).await;
    let (cleared, attributes) = refresh_cookie(&resp);
    assert_eq!(cleared, "");
    assert!(
        attributes.iter().any(|a| a == "Max-Age=0"),
        "{attributes:?}"
    );
    expect_oauth_error(resp, "invalid_grant", "reused cookie").await;
    expect_oauth_error(
        refresh_by_cookie(&c, &cookie2, true).await,
        "invalid_grant",
        "the family is gone",
    )
    .await;
    expect_json_error(
        c.get_bearer("/rooms/ck/members", &badge).await,
        401,
        "first badge of the revoked family",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_expire_refresh_ttl_after_the_login() {
    // TIGHT: REFRESH_TTL_SECS = 10.
    let c = TIGHT.client();
    let (user, _) = c.new_user("exp").await;
    let v = login_full(&c, &user).await;
    let started = std::time::Instant::now();
    let (status, cookie_login) = {
        let form = form_encode(&[("username", &user), ("password", DEFAULT_PASSWORD)]);
        let resp = c
            .post("/token")
            .header("content-type", FORM)
            .header("X-Refresh-Cookie", "1")
            .body(form)
            .send()
            .await
            .unwrap();
        (resp.status(), refresh_cookie(&resp))
    };
    assert_eq!(status, 200);
    let max_age: i64 = cookie_login
        .1
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((9..=10).contains(&max_age), "Max-Age {max_age}");
    // A refresh within the lifetime works, but does not extend it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, token2) = refreshed(&c, &text(&v, "refresh_token")).await;
    let left = Duration::from_secs(11).saturating_sub(started.elapsed());
    tokio::time::sleep(left).await;
    expect_oauth_error(
        refresh(&c, &token2).await,
        "invalid_grant",
        "expired family",
    )
    .await;
    expect_oauth_error(
        refresh_by_cookie(&c, &cookie_login.0, true).await,
        "invalid_grant",
        "expired cookie",
    )
    .await;
}
