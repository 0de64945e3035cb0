//! Refresh tokens (`POST /token` with `grant_type=refresh_token`): rotation, reuse detection
//! (a consumed token presented again revokes its family and closes its sockets), expiry, logout,
//! the browser's cookie, the refusals with their OAuth2 error codes, and the bounds on one
//! family (`MAX_BADGES_PER_LOGIN`, `USED_REFRESH_TOKENS_KEPT`).

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

/// A browser's login: the refresh token comes as a cookie.
async fn log_in_for_cookie(c: &Client, user: &str) -> reqwest::Response {
    let form = form_encode(&[("username", user), ("password", DEFAULT_PASSWORD)]);
    c.post("/token")
        .header("content-type", FORM)
        .header("X-Refresh-Cookie", "1")
        .body(form)
        .send()
        .await
        .unwrap()
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
    let resp = log_in_for_cookie(&c, &user).await;
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
        let resp = log_in_for_cookie(&c, &user).await;
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

// The bounds on one family
// ---------------------------------------------------------------------------------------------

/// [`CAPPED`]'s `MAX_BADGES_PER_LOGIN`: the login's badge and four refreshes fill a family.
const CAPPED_BADGES: usize = 5;
/// [`CAPPED`]'s `USED_REFRESH_TOKENS_KEPT`.
const CAPPED_USED_KEPT: usize = 2;

/// A server whose families hold at most [`CAPPED_BADGES`] unexpired badges and keep their
/// newest [`CAPPED_USED_KEPT`] consumed tokens; badges live the default hour.
static CAPPED: LazyServer = LazyServer::new(|| {
    ServerOptions::relaxed_limits()
        .var("MAX_BADGES_PER_LOGIN", &CAPPED_BADGES.to_string())
        .var("USED_REFRESH_TOKENS_KEPT", &CAPPED_USED_KEPT.to_string())
});

/// A login filled to the limit: its badges and refresh tokens in order (the last token is the
/// live one; every other was consumed by the refresh that made the next).
async fn full_family(c: &Client, user: &str) -> (Vec<String>, Vec<String>) {
    let v = login_full(c, user).await;
    let (mut badges, mut tokens) = (
        vec![text(&v, "access_token")],
        vec![text(&v, "refresh_token")],
    );
    for _ in 1..CAPPED_BADGES {
        let (badge, token) = refreshed(c, tokens.last().unwrap()).await;
        badges.push(badge);
        tokens.push(token);
    }
    (badges, tokens)
}

/// Asserts a 429 `{"detail"}` with `Retry-After` for a family whose oldest counted badge is its
/// login's, made moments ago: it counts for TOKEN_TTL_SECS (3600) plus the 30 s of leeway.
async fn expect_family_full(resp: reqwest::Response, what: &str) {
    let retry_after = header(&resp, "retry-after");
    let set_cookie = header(&resp, "set-cookie");
    let v = expect_json_error(resp, 429, what).await;
    assert!(
        v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("too many refreshes")),
        "{what}: {v}"
    );
    assert!(
        v.get("error").is_none(),
        "{what}: not an OAuth2 refusal: {v}"
    );
    let secs: i64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After {retry_after:?}"));
    assert!(
        (3600..=3631).contains(&secs),
        "{what}: Retry-After {secs}, the login's badge expiring"
    );
    assert_eq!(set_cookie, "", "{what}: the refresh cookie is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_past_the_badge_limit_is_429_and_leaves_the_token_and_family_as_they_were() {
    let c = CAPPED.client();
    let (user, _) = c.new_user("cap").await;
    let room = unique_name("cap");
    let (badges, tokens) = full_family(&c, &user).await;
    let live = tokens.last().unwrap();

    expect_family_full(refresh(&c, live).await, "refresh past the limit").await;
    // Not consumed: presented again it is the same 429. A consumed token would now be a reuse
    // (400 invalid_grant), which would have revoked the family.
    expect_family_full(refresh(&c, live).await, "the refused token again").await;
    for badge in &badges {
        expect_badge_works(&c, badge, &room).await;
    }
    let mut ws = c.ws(&room, badges.last().unwrap()).await;
    ws.history_and_presence().await;
    ws.send_message(&room, "still logged in").await;
    assert_eq!(ws.next_message().await["content"], "still logged in");
    // The limit is per login: the same user's next login refreshes freely.
    let other = text(&login_full(&c, &user).await, "refresh_token");
    let (badge, _) = refreshed(&c, &other).await;
    expect_badge_works(&c, &badge, &room).await;
    // A consumed token of the full family is still a reuse: the limit never hides one.
    expect_oauth_error(
        refresh(&c, &tokens[CAPPED_BADGES - 2]).await,
        "invalid_grant",
        "reuse in a full family",
    )
    .await;
    ws.expect_policy_close("the family revoked for the reuse")
        .await;
    expect_oauth_error(refresh(&c, live).await, "invalid_grant", "revoked family").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_refreshing_past_the_limit_gets_429_and_keeps_its_cookie() {
    let c = CAPPED.client();
    let (user, _) = c.new_user("capck").await;
    let resp = log_in_for_cookie(&c, &user).await;
    assert_eq!(resp.status(), 200);
    let (mut cookie, _) = refresh_cookie(&resp);
    for _ in 1..CAPPED_BADGES {
        let resp = refresh_by_cookie(&c, &cookie, true).await;
        assert_eq!(resp.status(), 200);
        cookie = refresh_cookie(&resp).0;
    }
    expect_family_full(refresh_by_cookie(&c, &cookie, true).await, "cookie refresh").await;
    expect_family_full(
        refresh_by_cookie(&c, &cookie, true).await,
        "the same cookie",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_used_token_is_refused_without_revoking_and_a_kept_one_still_revokes() {
    let c = CAPPED.client();
    let (user, _) = c.new_user("forgot").await;
    let (room, room2) = (unique_name("forgot"), unique_name("forgot2"));
    let (badges, tokens) = full_family(&c, &user).await;
    // Four consumed tokens, the newest two kept: tokens[0] and tokens[1] were deleted.
    let mut oldest = c.ws(&room, &badges[0]).await;
    let mut newest = c.ws(&room2, badges.last().unwrap()).await;
    for ws in [&mut oldest, &mut newest] {
        ws.history_and_presence().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    for forgotten in &tokens[..CAPPED_BADGES - 1 - CAPPED_USED_KEPT] {
        expect_oauth_error(
            refresh(&c, forgotten).await,
            "invalid_grant",
            "a forgotten token",
        )
        .await;
    }
    // Unknown now, so no reuse: the family and its sockets stand.
    oldest.roundtrip_ping().await;
    newest.roundtrip_ping().await;
    for badge in &badges {
        expect_badge_works(&c, badge, &room).await;
    }
    // The oldest consumed token still kept is a reuse: every badge goes, the oldest included.
    let kept = &tokens[CAPPED_BADGES - 1 - CAPPED_USED_KEPT];
    expect_oauth_error(refresh(&c, kept).await, "invalid_grant", "a kept token").await;
    oldest
        .expect_policy_close("socket of the family's first badge")
        .await;
    newest
        .expect_policy_close("socket of the family's newest badge")
        .await;
    for (i, badge) in badges.iter().enumerate() {
        expect_badge_refused(&c, badge, &room, &format!("badge {i}")).await;
    }
    expect_oauth_error(
        refresh(&c, tokens.last().unwrap()).await,
        "invalid_grant",
        "the live token of the revoked family",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_every_badge_of_a_family_whose_old_tokens_were_forgotten() {
    let c = CAPPED.client();
    let (user, _) = c.new_user("lofgt").await;
    let room = unique_name("lofgt");
    let (badges, tokens) = full_family(&c, &user).await;
    let mut first = c.ws(&room, &badges[0]).await;
    let mut second = c.ws(&room, &badges[1]).await;
    for ws in [&mut first, &mut second] {
        ws.history_and_presence().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Forgotten, not reused: nothing is revoked by it.
    expect_oauth_error(refresh(&c, &tokens[0]).await, "invalid_grant", "forgotten").await;
    expect_badge_works(&c, &badges[0], &room).await;

    let resp = c.logout(badges.last().unwrap(), false).await;
    assert_eq!(resp.status(), 200);
    first
        .expect_policy_close("socket of the family's first badge")
        .await;
    second
        .expect_policy_close("socket of the family's second badge")
        .await;
    for (i, badge) in badges.iter().enumerate() {
        expect_badge_refused(&c, badge, &room, &format!("badge {i} after logout")).await;
    }
    for token in [&tokens[CAPPED_BADGES - 2], tokens.last().unwrap()] {
        expect_oauth_error(refresh(&c, token).await, "invalid_grant", "after logout").await;
    }
}

// The bound on one user's logins
// ---------------------------------------------------------------------------------------------

/// [`LOGINS_CAPPED`]'s `MAX_LOGINS_PER_USER`.
const CAPPED_LOGINS: usize = 3;

/// A server where one user holds at most [`CAPPED_LOGINS`] live logins.
static LOGINS_CAPPED: LazyServer = LazyServer::new(|| {
    ServerOptions::relaxed_limits().var("MAX_LOGINS_PER_USER", &CAPPED_LOGINS.to_string())
});

/// Signs up a fresh user without logging in (a login would start a family of its own).
async fn signed_up(c: &Client, prefix: &str) -> String {
    let name = unique_name(prefix);
    assert_eq!(c.signup(&name, DEFAULT_PASSWORD).await.status(), 201);
    name
}

/// A login's (badge, refresh token).
async fn log_in(c: &Client, user: &str) -> (String, String) {
    let v = login_full(c, user).await;
    (text(&v, "access_token"), text(&v, "refresh_token"))
}

/// Asserts what logout's closes send: the `closing` frame, then the close, both 1008 "token
/// revoked".
async fn expect_revoked_close(ws: &mut WsClient, what: &str) {
    let closing = ws
        .try_next_of_types(&["closing"], Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{what}: no closing frame: {e}; seen {}", ws.seen_summary()));
    assert_eq!(
        closing,
        serde_json::json!({"type": "closing", "code": 1008, "reason": "token revoked"}),
        "{what}"
    );
    match ws.wait_close(Duration::from_secs(5)).await {
        Ok(Some((code, reason))) => {
            assert_eq!((code, reason.as_str()), (1008, "token revoked"), "{what}")
        }
        other => panic!("{what}: no close frame: {other:?}"),
    }
}

/// The `login_evicted_oldest` lines of `user` in the server's log, waiting up to 3 s for
/// `want` of them to get there.
async fn eviction_lines(server: &Server, user: &str, want: usize) -> Vec<Value> {
    let mut lines = Vec::new();
    for _ in 0..30 {
        lines = server
            .log()
            .lines()
            // Warnings come wrapped in the terminal's colour codes.
            .filter_map(|l| Some(&l[l.find('{')?..=l.rfind('}')?]))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == "login_evicted_oldest" && v["username"] == user)
            .collect();
        if lines.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_past_the_limit_ends_the_oldest_login_and_closes_its_sockets() {
    let c = LOGINS_CAPPED.client();
    let user = signed_up(&c, "lcap").await;
    let (room, room2) = (unique_name("lcap"), unique_name("lcap2"));
    let (first, first_token) = log_in(&c, &user).await;
    // The first login refreshed once: the refresh does not make it newer, and both of its
    // badges go with it.
    let (first_refreshed, first_live_token) = refreshed(&c, &first_token).await;
    let (second, second_token) = log_in(&c, &user).await;
    let (third, third_token) = log_in(&c, &user).await;
    let mut first_ws = c.ws(&room, &first).await;
    let mut first_refreshed_ws = c.ws(&room2, &first_refreshed).await;
    let mut second_ws = c.ws(&room, &second).await;
    for ws in [&mut first_ws, &mut first_refreshed_ws, &mut second_ws] {
        ws.history_and_presence().await;
    }
    // A moment for the ledger to note where the badges have sockets (written behind).
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The fourth login works, and ends the first as a logout would.
    let (fourth, fourth_token) = log_in(&c, &user).await;
    expect_revoked_close(&mut first_ws, "socket of the oldest login's badge").await;
    expect_revoked_close(&mut first_refreshed_ws, "socket of its refreshed badge").await;
    expect_badge_refused(&c, &first, &room, "the oldest login's badge").await;
    expect_badge_refused(&c, &first_refreshed, &room, "its refreshed badge").await;
    expect_oauth_error(
        refresh(&c, &first_live_token).await,
        "invalid_grant",
        "the oldest login's refresh token",
    )
    .await;
    let lines = eviction_lines(LOGINS_CAPPED.get(), &user, 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["ended"], 1, "{}", lines[0]);
    assert_eq!(lines[0]["sockets_closed"], 2, "{}", lines[0]);
    assert_eq!(lines[0]["level"], "warn", "{}", lines[0]);
    for secret in [&first, &first_live_token, &fourth, &fourth_token] {
        assert!(
            !lines[0].to_string().contains(secret.as_str()),
            "{}",
            lines[0]
        );
    }

    // The other three stand: their sockets, badges and refresh tokens.
    second_ws.expect_none_of_types(&["closing"], QUIET).await;
    second_ws.roundtrip_ping().await;
    let mut newest = Vec::new();
    for (badge, token) in [
        (&second, &second_token),
        (&third, &third_token),
        (&fourth, &fourth_token),
    ] {
        expect_badge_works(&c, badge, &room).await;
        newest.push(refreshed(&c, token).await);
    }
    // Refreshing made none of them a new login: a fifth login ends the second, the oldest now.
    let (fifth, _) = log_in(&c, &user).await;
    expect_revoked_close(&mut second_ws, "socket of the second login").await;
    expect_badge_refused(&c, &newest[0].0, &room, "the second login's new badge").await;
    expect_oauth_error(
        refresh(&c, &newest[0].1).await,
        "invalid_grant",
        "the second login's refresh token",
    )
    .await;
    for badge in [&newest[1].0, &newest[2].0, &fifth] {
        expect_badge_works(&c, badge, &room).await;
    }
    assert_eq!(eviction_lines(LOGINS_CAPPED.get(), &user, 2).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_frees_a_place_for_the_next_login() {
    let c = LOGINS_CAPPED.client();
    let user = signed_up(&c, "lfree").await;
    let room = unique_name("lfree");
    let logins = [
        log_in(&c, &user).await,
        log_in(&c, &user).await,
        log_in(&c, &user).await,
    ];
    let mut first_ws = c.ws(&room, &logins[0].0).await;
    first_ws.history_and_presence().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.logout(&logins[1].0, false).await.status(), 200);

    // Two live logins left: the next one ends none.
    let (fourth, fourth_token) = log_in(&c, &user).await;
    first_ws.expect_none_of_types(&["closing"], QUIET).await;
    first_ws.roundtrip_ping().await;
    for badge in [&logins[0].0, &logins[2].0, &fourth] {
        expect_badge_works(&c, badge, &room).await;
    }
    for token in [&logins[0].1, &logins[2].1, &fourth_token] {
        refreshed(&c, token).await;
    }
    assert_eq!(eviction_lines(LOGINS_CAPPED.get(), &user, 0).await.len(), 0);
    // Full again: the next login ends the oldest live one, the first.
    log_in(&c, &user).await;
    expect_revoked_close(&mut first_ws, "socket of the first login").await;
    expect_badge_refused(&c, &logins[0].0, &room, "the first login's badge").await;
    expect_badge_works(&c, &logins[2].0, &room).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_past_the_limit_leave_exactly_the_limit_live() {
    let c = LOGINS_CAPPED.client();
    let user = signed_up(&c, "lrace").await;
    let room = unique_name("lrace");
    let logins =
        futures_util::future::join_all((0..2 * CAPPED_LOGINS).map(|_| log_in(&c, &user))).await;
    let mut live = 0;
    for (badge, _) in &logins {
        let status = c
            .get_bearer(&format!("/rooms/{room}/members"), badge)
            .await
            .status()
            .as_u16();
        match status {
            200 => live += 1,
            401 => {}
            other => panic!("status {other}"),
        }
    }
    assert_eq!(
        live, CAPPED_LOGINS,
        "every login answered 200; the limit holds"
    );
    let ended = eviction_lines(LOGINS_CAPPED.get(), &user, CAPPED_LOGINS).await;
    assert_eq!(
        ended
            .iter()
            .map(|l| l["ended"].as_i64().unwrap())
            .sum::<i64>(),
        CAPPED_LOGINS as i64,
        "{ended:?}"
    );
}
