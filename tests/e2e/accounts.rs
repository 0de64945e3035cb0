//! Accounts: sign-up (`POST /users/`), the password policy, login (`POST /token`) answers, the
//! stored password hash, and accounts kept in a server's own state.

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
