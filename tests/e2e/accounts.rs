//! Accounts: sign-up (`POST /users/`), the password policy, login (`POST /token`) answers, the
//! stored password hash, accounts kept in a server's own state, changing the password
//! (`POST /users/me/password`), deleting the account (`DELETE /users/me`), and the message rate
//! per user per room.

use serde_json::{json, Value};

use crate::harness::*;

// ---------------------------------------------------------------------------------------------
// POST /users/
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_returns_201_with_the_username() {
    let name = unique_name("signup");
    let resp = client().signup(&name, DEFAULT_PASSWORD).await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["username"], name.as_str(), "{body}");
    assert!(
        body.get("password").is_none() && !body.to_string().contains("argon2"),
        "signup must not echo secrets: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_accepts_the_boundary_lengths() {
    let c = client();
    // 3 and 32 chars of every allowed character class; passwords of 8 and 128 chars.
    let tag = format!("{:08x}", random_u64() as u32);
    let short = format!("{}.", &tag[..2]); // 3 chars, with a dot
    let long = format!("A-b_c.{tag}{}", "z".repeat(32 - 6 - 8)); // 32 chars
    assert_eq!(short.len(), 3);
    assert_eq!(long.len(), 32);
    for (name, password) in [(&short, "12345678".to_string()), (&long, "p".repeat(128))] {
        let resp = c.signup(name, &password).await;
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert_eq!(
            status,
            201,
            "{name:?} / {}-char password: {body}",
            password.len()
        );
        // ...and the account works.
        c.login(name, &password).await;
    }
}

/// Every field rule of the sign-up body, one refused body each (the length limits of both
/// fields included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_validation_errors_are_422_json() {
    let c = client();
    let ok_name = unique_name("valid");
    let cases: Vec<(&str, Value)> = vec![
        (
            "username too short",
            json!({"username": "ab", "password": DEFAULT_PASSWORD}),
        ),
        (
            "username too long (33)",
            json!({"username": "a".repeat(33), "password": DEFAULT_PASSWORD}),
        ),
        (
            "username empty",
            json!({"username": "", "password": DEFAULT_PASSWORD}),
        ),
        (
            "username with a space",
            json!({"username": "bad name", "password": DEFAULT_PASSWORD}),
        ),
        (
            "username with a slash",
            json!({"username": "bad/name", "password": DEFAULT_PASSWORD}),
        ),
        (
            "username with non-ASCII",
            json!({"username": "émile", "password": DEFAULT_PASSWORD}),
        ),
        (
            "username with a NUL",
            json!({"username": "bad\u{0}name", "password": DEFAULT_PASSWORD}),
        ),
        (
            "username not a string",
            json!({"username": 12345, "password": DEFAULT_PASSWORD}),
        ),
        ("username missing", json!({"password": DEFAULT_PASSWORD})),
        (
            "password empty",
            json!({"username": ok_name, "password": ""}),
        ),
        (
            "password too short (7)",
            json!({"username": ok_name, "password": "1234567"}),
        ),
        (
            "password too long (129)",
            json!({"username": ok_name, "password": "p".repeat(129)}),
        ),
        (
            "password not a string",
            json!({"username": ok_name, "password": 12345678}),
        ),
        ("password missing", json!({"username": ok_name})),
    ];
    for (what, body) in cases {
        let resp = c.post("/users/").json(&body).send().await.unwrap();
        expect_json_error(resp, 422, what).await;
    }
    // None of the refused attempts created the (valid) name used with bad passwords.
    let resp = c.signup(&ok_name, DEFAULT_PASSWORD).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_malformed_bodies_are_json_errors_never_5xx() {
    let c = client();
    let bodies: [(&str, &str); 6] = [
        ("truncated JSON", "{\"username\": \"abc\", "),
        ("not JSON", "username=abc&password=12345678"),
        ("empty body", ""),
        ("JSON array", "[\"abcdef\", \"12345678\"]"),
        ("JSON null", "null"),
        ("JSON string", "\"hello\""),
    ];
    for (what, body) in bodies {
        let resp = c.post_body("/users/", JSON, body).await;
        expect_json_error_in(resp, &[400, 422], what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_of_a_taken_name_is_409() {
    let c = client();
    let name = unique_name("taken");
    assert_eq!(c.signup(&name, DEFAULT_PASSWORD).await.status(), 201);
    let resp = c.signup(&name, "another password").await;
    expect_json_error(resp, 409, "second signup").await;
    // The first password still works, the second does not.
    c.login(&name, DEFAULT_PASSWORD).await;
    let resp = c.login_response(&name, "another password").await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signups_of_one_name_give_exactly_one_201_and_one_409() {
    let c = client();
    // Several names at once, two racing requests each: more chances to interleave.
    let names: Vec<String> = (0..6).map(|_| unique_name("race")).collect();
    let mut tasks = Vec::new();
    for name in &names {
        for password in ["first password!", "second password"] {
            let (c, name) = (c.clone(), name.clone());
            tasks.push(tokio::spawn(async move {
                let resp = c.signup(&name, password).await;
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap();
                (name, password, status, body)
            }));
        }
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    for name in &names {
        let mine: Vec<_> = results.iter().filter(|r| &r.0 == name).collect();
        let mut statuses: Vec<u16> = mine.iter().map(|r| r.2).collect();
        statuses.sort();
        assert_eq!(statuses, vec![201, 409], "{name}: {mine:?}");
        let loser = mine.iter().find(|r| r.2 == 409).unwrap();
        let v: Value = serde_json::from_str(&loser.3).expect("409 body is JSON");
        assert!(v["detail"].is_string(), "{}", loser.3);
        // The winner's password is the account's.
        let winner = mine.iter().find(|r| r.2 == 201).unwrap();
        c.login(name, winner.1).await;
        assert_eq!(c.login_response(name, loser.1).await.status(), 401);
    }
}

/// The policy beyond the field rules: never the username, and counted in characters.
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
    expect_json_error(c.signup(&name, "ééééééé").await, 422, "7 chars, 14 bytes").await;
    assert_eq!(
        c.signup(&name, "eight888").await.status(),
        201,
        "8 chars is enough"
    );
    c.login(&name, "eight888").await;
}

// ---------------------------------------------------------------------------------------------
// POST /token
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_identical_401s() {
    let c = client();
    let name = unique_name("victim");
    assert_eq!(c.signup(&name, DEFAULT_PASSWORD).await.status(), 201);
    let mut answers = Vec::new();
    for (user, password) in [
        (name.clone(), "wrong password".to_string()),
        (unique_name("nobody"), DEFAULT_PASSWORD.to_string()),
    ] {
        let resp = c.login_response(&user, &password).await;
        let status = resp.status().as_u16();
        let www = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.text().await.unwrap();
        answers.push((user, status, www, body));
    }
    for (user, status, www, body) in &answers {
        assert_eq!(*status, 401, "{user}: {body}");
        let www = www
            .as_deref()
            .unwrap_or_else(|| panic!("{user}: no WWW-Authenticate"));
        assert!(
            www.starts_with("Bearer"),
            "{user}: WWW-Authenticate {www:?}"
        );
        let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{user}: {body}"));
        assert_eq!(
            v,
            json!({"detail": "Incorrect username or password"}),
            "{user}"
        );
    }
    assert_eq!(
        answers[0].3, answers[1].3,
        "bodies must not tell which was wrong"
    );
    assert_eq!(
        answers[0].2, answers[1].2,
        "headers must not tell which was wrong"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_missing_fields_is_a_json_error() {
    let c = client();
    for (what, body) in [
        ("no password", "username=someone"),
        ("no username", "password=12345678"),
        ("empty form", ""),
    ] {
        let resp = c.post_body("/token", FORM, body).await;
        expect_json_error_in(resp, &[400, 401, 422], what).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Stored accounts: the password hash, servers of their own
// ---------------------------------------------------------------------------------------------

/// The stored password hash of `user`, read from the stopped server's local D1.
fn stored_hash(server: &Server, user: &str) -> String {
    let rows = tokio::task::block_in_place(|| {
        server.d1_rows(&format!(
            "SELECT password_hash FROM users WHERE username = '{user}'"
        ))
    });
    rows[0]["password_hash"]
        .as_str()
        .unwrap_or_else(|| panic!("no hash in {rows}"))
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
    let (user, _) = server.client().new_user("rehash").await;
    let server = stop(server).await;
    let weak = stored_hash(&server, &user);
    assert!(
        weak.starts_with("$argon2id$") && weak.contains("m=1024,t=1"),
        "weak hash: {weak}"
    );

    server.write_dev_vars(&[
        ("JWT_SECRET", TEST_JWT_SECRET),
        ("SIGNUP_MAX_PER_IP", "1000000"),
    ]);
    let server = restart(server).await;
    let c = server.client();
    let token = c.login(&user, DEFAULT_PASSWORD).await;
    c.get_ok(&format!("/rooms/{}/members", unique_name("r")), &token)
        .await;
    let server = stop(server).await;
    let strong = stored_hash(&server, &user);
    assert!(strong.starts_with("$argon2id$"), "{strong}");
    assert!(
        !strong.contains("m=1024,t=1"),
        "hash not upgraded: {strong}"
    );
    assert_ne!(strong, weak);
    // And the upgraded hash still verifies.
    let server = restart(server).await;
    let c = server.client();
    c.login(&user, DEFAULT_PASSWORD).await;
    expect_json_error(
        c.login_response(&user, "wrong password").await,
        401,
        "wrong password after rehash",
    )
    .await;
    drop(server);
}

/// Also checks the harness itself: two servers at once, a restart on the same state, a stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_survive_a_restart_and_servers_do_not_share_state() {
    let (one, two) = tokio::join!(
        start(ServerOptions::default()),
        start(ServerOptions::default())
    );
    assert_ne!(one.port, two.port);
    let name = unique_name("durable");
    assert_eq!(
        one.client().signup(&name, DEFAULT_PASSWORD).await.status(),
        201
    );
    // The other server has its own state: the name is unknown to its /token.
    assert_eq!(
        two.client()
            .login_response(&name, DEFAULT_PASSWORD)
            .await
            .status(),
        401
    );

    let one = restart(one).await;
    assert!(one.is_running());
    let c1 = one.client();
    let token = c1.login(&name, DEFAULT_PASSWORD).await;
    c1.ws_ready(&unique_name("after"), &token).await;
    assert!(one.log().contains("restart"), "log spans both runs");

    let one = stop(one).await;
    assert!(!one.is_running());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", one.port)).is_err(),
        "stopped server still listening"
    );
    drop(two);
}

// ---------------------------------------------------------------------------------------------
// Changing the password, deleting the account
// ---------------------------------------------------------------------------------------------

/// A server with short refresh tokens (`REFRESH_TTL_SECS` = 10) and a message limit of 1 per
/// second with a burst of 3 (for `refresh.rs` and the per-user rate test); the abuse limits
/// otherwise relaxed.
pub static TIGHT: LazyServer = LazyServer::new(|| {
    ServerOptions::relaxed_limits()
        .var("REFRESH_TTL_SECS", "10")
        .var("RATE_LIMIT_PER_SEC", "1")
        .var("RATE_LIMIT_BURST", "3")
});

async fn change_password(c: &Client, badge: &str, current: &str, new: &str) -> reqwest::Response {
    c.post("/users/me/password")
        .bearer_auth(badge)
        .json(&json!({"current_password": current, "new_password": new}))
        .send()
        .await
        .unwrap()
}

async fn delete_account(c: &Client, badge: &str, password: &str) -> reqwest::Response {
    c.request(reqwest::Method::DELETE, "/users/me")
        .bearer_auth(badge)
        .json(&json!({ "password": password }))
        .send()
        .await
        .unwrap()
}

/// A login's (badge, refresh token).
async fn login_pair(c: &Client, user: &str, password: &str) -> (String, String) {
    let (status, v) = status_json(c.login_response(user, password).await, "login").await;
    assert_eq!(status, 200, "{v}");
    (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    )
}

async fn refresh_status(c: &Client, token: &str) -> (u16, Value) {
    let form = form_encode(&[("grant_type", "refresh_token"), ("refresh_token", token)]);
    status_json(c.post_body("/token", FORM, form).await, "refresh").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_keeps_this_session_and_ends_every_other() {
    let c = client();
    let (user, _) = c.new_user("chpw").await;
    let room = unique_name("chpw");
    let (mine, my_refresh) = login_pair(&c, &user, DEFAULT_PASSWORD).await;
    // The session's earlier badge, from before its refresh, is part of it too.
    let (status, v) = refresh_status(&c, &my_refresh).await;
    assert_eq!(status, 200, "{v}");
    let (mine_now, my_refresh) = (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    );
    let (theirs, their_refresh) = login_pair(&c, &user, DEFAULT_PASSWORD).await;
    let mut my_ws = c.ws_ready(&room, &mine).await;
    let mut their_ws = c.ws_ready(&room, &theirs).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let new_password = "a brand new passphrase";
    let (status, v) = status_json(
        change_password(&c, &mine_now, DEFAULT_PASSWORD, new_password).await,
        "change password",
    )
    .await;
    assert_eq!(status, 200, "{v}");

    their_ws
        .expect_policy_close("the other session's socket")
        .await;
    expect_json_error(
        c.get_bearer(&format!("/rooms/{room}/members"), &theirs)
            .await,
        401,
        "the other session's badge",
    )
    .await;
    let (status, v) = refresh_status(&c, &their_refresh).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );

    // This session: its sockets, both its badges and its refresh token keep working.
    my_ws.send_message(&room, "still mine").await;
    assert_eq!(my_ws.next_message().await["content"], "still mine");
    c.get_ok(&format!("/rooms/{room}/members"), &mine_now).await;
    c.get_ok(&format!("/rooms/{room}/members"), &mine).await;
    let (status, v) = refresh_status(&c, &my_refresh).await;
    assert_eq!(status, 200, "{v}");

    // Only the new password logs in.
    expect_json_error(
        c.login_response(&user, DEFAULT_PASSWORD).await,
        401,
        "old password",
    )
    .await;
    c.login(&user, new_password).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_changes_are_checked_and_refused_cleanly() {
    let c = client();
    let (user, badge) = c.new_user("chpwbad").await;
    expect_json_error(
        change_password(&c, &badge, "not my password", "another fine password").await,
        403,
        "wrong current password",
    )
    .await;
    for (what, new) in [
        ("too short", "short".to_string()),
        ("too long", "p".repeat(129)),
        ("the username", user.to_uppercase()),
    ] {
        expect_json_error(
            change_password(&c, &badge, DEFAULT_PASSWORD, &new).await,
            422,
            what,
        )
        .await;
    }
    expect_json_error(
        change_password(&c, &badge, &"x".repeat(600), "another fine password").await,
        422,
        "current password longer than any",
    )
    .await;
    for (what, body) in [
        ("not JSON", "current_password=x".to_string()),
        (
            "missing field",
            json!({"current_password": DEFAULT_PASSWORD}).to_string(),
        ),
        (
            "wrong type",
            json!({"current_password": 1, "new_password": 2}).to_string(),
        ),
        ("array", "[]".to_string()),
    ] {
        let resp = c
            .post("/users/me/password")
            .bearer_auth(&badge)
            .header("content-type", JSON)
            .body(body)
            .send()
            .await
            .unwrap();
        expect_json_error(resp, 422, what).await;
    }
    let huge = c
        .post("/users/me/password")
        .bearer_auth(&badge)
        .header("content-type", JSON)
        .body("x".repeat(20_000))
        .send()
        .await
        .unwrap();
    expect_json_error(huge, 413, "huge body").await;
    let form = c
        .post("/users/me/password")
        .bearer_auth(&badge)
        .header("content-type", FORM)
        .body("current_password=x&new_password=y")
        .send()
        .await
        .unwrap();
    expect_json_error(form, 415, "a form, as a cross-site page could post").await;
    let anonymous = c
        .post("/users/me/password")
        .json(
            &json!({"current_password": DEFAULT_PASSWORD, "new_password": "another fine password"}),
        )
        .send()
        .await
        .unwrap();
    expect_json_error(anonymous, 401, "no badge").await;
    let get = c.get_bearer("/users/me/password", &badge).await;
    expect_json_error(get, 405, "GET").await;
    // None of that changed the password.
    c.login(&user, DEFAULT_PASSWORD).await;
}

/// Wrong current passwords count toward the login limiter of the user (STRICT: 3 failures),
/// so the route cannot be used to guess a password with a stolen badge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_current_passwords_count_toward_the_login_limit() {
    let c = STRICT.client().with_random_ips();
    let (user, badge) = c.new_user("pwguess").await;
    for guess in 0..3 {
        expect_json_error(
            change_password(
                &c,
                &badge,
                &format!("guess number {guess}"),
                "a new password!",
            )
            .await,
            403,
            "wrong guess",
        )
        .await;
    }
    let limited = change_password(&c, &badge, DEFAULT_PASSWORD, "a new password!").await;
    assert!(!header(&limited, "retry-after").is_empty());
    expect_json_error(limited, 429, "fourth try, even the right one").await;
    expect_json_error(
        delete_account(&c, &badge, "guess again").await,
        429,
        "delete too",
    )
    .await;
    expect_json_error(
        c.login_response(&user, DEFAULT_PASSWORD).await,
        429,
        "and logins of that user",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_account_is_gone_but_its_name_stays_reserved() {
    let c = client();
    let (owner, owner_badge) = c.new_user("delown").await;
    let (user, badge) = c.new_user("deluser").await;
    let (_, refresh) = login_pair(&c, &user, DEFAULT_PASSWORD).await;
    let room = unique_name("delpriv");
    c.private_room_with_member(&owner_badge, &room, &user).await;
    let mut ws = c.ws_ready(&room, &badge).await;
    ws.send_message(&room, "my last words").await;
    ws.next_message().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    expect_json_error(
        delete_account(&c, &badge, "not my password").await,
        403,
        "wrong password",
    )
    .await;
    let anonymous = c
        .request(reqwest::Method::DELETE, "/users/me")
        .json(&json!({ "password": DEFAULT_PASSWORD }))
        .send()
        .await
        .unwrap();
    expect_json_error(anonymous, 401, "no badge").await;
    let no_body = c
        .request(reqwest::Method::DELETE, "/users/me")
        .bearer_auth(&badge)
        .header("content-type", JSON)
        .send()
        .await
        .unwrap();
    expect_json_error(no_body, 422, "no confirmation").await;

    // A block of the account, to see it go with it.
    let block = c
        .request(reqwest::Method::PUT, &format!("/users/me/blocks/{user}"))
        .bearer_auth(&owner_badge)
        .send()
        .await
        .unwrap();
    assert_eq!(block.status(), 200, "block");

    let resp = delete_account(&c, &badge, DEFAULT_PASSWORD).await;
    assert_eq!(resp.status(), 200);
    ws.expect_policy_close("the deleted account's socket").await;
    let blocks = c.get_ok("/users/me/blocks", &owner_badge).await;
    assert_eq!(
        blocks["blocks"],
        json!([]),
        "blocks of a deleted account go with it"
    );

    // Its badges and refresh tokens are refused, and it cannot log in.
    expect_json_error(
        c.get_bearer(&format!("/rooms/{room}/members"), &badge)
            .await,
        401,
        "badge of a deleted account",
    )
    .await;
    assert_refused(c.try_ws(&unique_name("pub"), &badge).await, 401, "socket");
    let (status, v) = refresh_status(&c, &refresh).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    expect_json_error(
        c.login_response(&user, DEFAULT_PASSWORD).await,
        401,
        "login",
    )
    .await;
    // Nobody can take the name, in any case.
    for taken in [user.clone(), user.to_uppercase()] {
        expect_json_error(c.signup(&taken, DEFAULT_PASSWORD).await, 409, &taken).await;
    }
    // Its memberships are gone; its messages stay, under its name.
    let info = c.get_ok(&format!("/rooms/{room}"), &owner_badge).await;
    assert_eq!(info["members"], json!([owner]), "{info}");
    let messages = c.all_messages(&room, &owner_badge).await;
    assert!(
        messages
            .iter()
            .any(|m| m["username"] == user.as_str() && m["content"] == "my last words"),
        "{messages:?}"
    );
    // The owner cannot add the deleted name back.
    let add = c
        .change_member(reqwest::Method::PUT, &owner_badge, &room, &user)
        .await;
    expect_json_error(add, 404, "adding a deleted account").await;
}

// ---------------------------------------------------------------------------------------------
// The message rate, per user per room
// ---------------------------------------------------------------------------------------------

/// TIGHT allows a burst of 3 messages at 1 per second: one user's three sockets share it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_sockets_share_one_message_rate_in_a_room() {
    let c = TIGHT.client();
    let (room, [(_, badge), (_, other)]) = c.room_with_users("rate", ["rate", "rateb"]).await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(c.ws_ready(&room, &badge).await);
    }
    // Two messages from each socket, at once: 6 > the burst of 3.
    for ws in sockets.iter_mut() {
        ws.send_message(&room, "one").await;
        ws.send_message(&room, "two").await;
    }
    // Which of the six are refused depends on how they interleave; three are, in all.
    let mut refused = 0;
    for ws in sockets.iter_mut() {
        while let Ok(frame) = ws
            .try_next_of_types(&["error"], std::time::Duration::from_millis(700))
            .await
        {
            assert_eq!(frame["detail"], "rate limited", "{frame}");
            assert!(frame["retry_after_ms"].as_u64().is_some(), "{frame}");
            refused += 1;
        }
    }
    assert_eq!(refused, 3);
    // Exactly three were stored; another user of the room has a rate of their own.
    let mut theirs = c.ws_ready(&room, &other).await;
    theirs.send_message(&room, "mine").await;
    assert_eq!(theirs.next_message_with("mine").await["content"], "mine");
    let stored = c.all_messages(&room, &other).await;
    let from_user = stored.iter().filter(|m| m["content"] != "mine").count();
    assert_eq!(from_user, 3, "{stored:?}");
}
