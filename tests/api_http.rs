//! End-to-end tests of the HTTP contract: sign-up, login, badges (JWTs), refused upgrades, 404s.
//! They run against the built Worker under `wrangler dev` (see tests/common).

mod common;

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// The harness's own pieces (cheap; no server)
// ---------------------------------------------------------------------------------------------

#[test]
fn harness_hmac_sha256_matches_rfc4231() {
    // RFC 4231 test case 2.
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // A key longer than the block size is hashed first (RFC 4231 test case 6).
    let mac = hmac_sha256(
        &[0xaa; 131],
        b"Test Using Larger Than Block-Size Key - Hash Key First",
    );
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[test]
fn harness_tokens_are_what_jwt_compact_verifies() {
    let token = test_token(&good_claims("alice"));
    assert!(hs256_signature_valid(&token, TEST_JWT_SECRET.as_bytes()));
    assert!(!hs256_signature_valid(
        &token,
        b"another-secret-another-secret-00"
    ));
    let (header, claims) = decode_jwt(&token);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(claims["sub"], "alice");
    for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
        assert_eq!(b64url_decode(&b64url_encode(data)).unwrap(), data);
    }
    assert_eq!(b64url_encode(b"foobar"), "Zm9vYmFy");
    assert_eq!(b64url_encode(&[0xfb, 0xff]), "-_8");
}

#[test]
fn harness_test_config_drops_build_and_makes_paths_absolute() {
    let original = r#"name = "clubhouse"
main = "build/index.js" # entry
compatibility_date = "2025-09-01"

[build]
command = "worker-build --release"

[build.upload]
format = "modules"

[[d1_databases]]
binding = "DB"
database_name = "clubhouse"
migrations_dir = "migrations"

[vars]
TOKEN_TTL_SECS = "3600"
"#;
    let out = test_wrangler_config(original, std::path::Path::new("/repo"));
    assert!(!out.contains("[build"), "{out}");
    assert!(!out.contains("worker-build"), "{out}");
    assert!(
        out.contains("main = \"/repo/build/index.js\" # entry"),
        "{out}"
    );
    assert!(
        out.contains("migrations_dir = \"/repo/migrations\""),
        "{out}"
    );
    assert!(out.contains("[vars]\nTOKEN_TTL_SECS = \"3600\""), "{out}");
}

// ---------------------------------------------------------------------------------------------
// POST /users/
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_returns_201_with_the_username() {
    let name = unique_name("signup");
    let resp = signup(&name, DEFAULT_PASSWORD).await;
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
        let resp = c
            .http
            .post(c.url("/users/"))
            .json(&body)
            .send()
            .await
            .unwrap();
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
        let resp = c
            .http
            .post(c.url("/users/"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        expect_json_error_in(resp, &[400, 422], what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_of_a_taken_name_is_409() {
    let name = unique_name("taken");
    assert_eq!(signup(&name, DEFAULT_PASSWORD).await.status(), 201);
    let resp = signup(&name, "another password").await;
    expect_json_error(resp, 409, "second signup").await;
    // The first password still works, the second does not.
    login(&name, DEFAULT_PASSWORD).await;
    let resp = client().login_response(&name, "another password").await;
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
        login(name, winner.1).await;
        assert_eq!(c.login_response(name, loser.1).await.status(), 401);
    }
}

// ---------------------------------------------------------------------------------------------
// POST /token
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_returns_a_bearer_jwt_with_the_contract_claims() {
    let c = client();
    let name = unique_name("login");
    assert_eq!(c.signup(&name, DEFAULT_PASSWORD).await.status(), 201);
    let resp = c.login_response(&name, DEFAULT_PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let cache = resp
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
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
        let cache = resp.headers().get("cache-control").cloned();
        let body = resp.text().await.unwrap();
        answers.push((user, status, www, body, cache));
    }
    for (user, status, www, body, _) in &answers {
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
        let resp = c
            .http
            .post(c.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        expect_json_error_in(resp, &[400, 401, 422], what).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Unknown paths, wrong methods
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_json() {
    let c = client();
    // (`/` and the files of public/ are the browser client: see the_page_is_served_by_the_worker.)
    for path in [
        "/nope",
        "/users/extra",
        "/tokens",
        "/ws",
        "/ws/room/extra",
        "/.env",
        "/%2e%2e/etc/passwd",
    ] {
        let resp = c.http.get(c.url(path)).send().await.unwrap();
        expect_json_error(resp, 404, &format!("GET {path}")).await;
    }
    let resp = c.http.post(c.url("/nope")).body("{}").send().await.unwrap();
    expect_json_error(resp, 404, "POST /nope").await;
}

// ---------------------------------------------------------------------------------------------
// The browser client (public/, compiled into the Worker)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_by_the_worker_with_etags_and_its_security_headers() {
    let c = client();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, file, media) in [
        ("/", "index.html", "text/html"),
        ("/index.html", "index.html", "text/html"),
        ("/app.js", "app.js", "text/javascript"),
        ("/app.css", "app.css", "text/css"),
        ("/favicon.svg", "favicon.svg", "image/svg+xml"),
    ] {
        let resp = c.http.get(c.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(
            header("content-type").starts_with(media),
            "GET {path}: {}",
            header("content-type")
        );
        let csp = header("content-security-policy");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("cache-control"), "no-cache");
        let etag = header("etag");
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "GET {path}: etag {etag:?}"
        );
        let body = resp.bytes().await.unwrap();
        assert_eq!(
            body.as_ref(),
            std::fs::read(repo.join("public").join(file)).unwrap(),
            "GET {path}"
        );

        // Revalidation: the same tag is a 304 without a body; another tag gets the file again.
        let again = c
            .http
            .get(c.url(path))
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "GET {path} If-None-Match");
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
        assert!(again.bytes().await.unwrap().is_empty());
        let stale = c
            .http
            .get(c.url(path))
            .header("If-None-Match", "\"0000\"")
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), 200, "GET {path} with a stale tag");

        let head = c.http.head(c.url(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert_eq!(head.headers()["etag"].to_str().unwrap(), etag);
        assert!(
            head.bytes().await.unwrap().is_empty(),
            "HEAD {path} has no body"
        );

        let post = c.http.post(c.url(path)).body("x").send().await.unwrap();
        assert_eq!(post.headers()["allow"].to_str().unwrap(), "GET, HEAD");
        expect_json_error(post, 405, &format!("POST {path}")).await;
    }
    for path in ["/_headers", "/public/app.js", "/app.js/", "/index.htm"] {
        let resp = c.http.get(c.url(path)).send().await.unwrap();
        expect_json_error(resp, 404, &format!("GET {path}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_json_errors() {
    let c = client();
    for (method, path) in [
        (reqwest::Method::GET, "/users/"),
        (reqwest::Method::GET, "/token"),
        (reqwest::Method::DELETE, "/users/"),
        (reqwest::Method::PUT, "/token"),
    ] {
        let resp = c
            .http
            .request(method.clone(), c.url(path))
            .send()
            .await
            .unwrap();
        expect_json_error_in(resp, &[404, 405], &format!("{method} {path}")).await;
    }
}

// ---------------------------------------------------------------------------------------------
// GET /ws/{room}: everything refused before the upgrade
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_without_upgrade_header_is_426() {
    let c = client();
    let (_, token) = c.new_user("noupg").await;
    let resp = c
        .http
        .get(c.url(&format!("/ws/lobby?token={token}")))
        .send()
        .await
        .unwrap();
    expect_json_error(resp, 426, "GET /ws/lobby without Upgrade").await;
}

/// Every way a badge can be bad; each must be refused with 401 JSON before any upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_refuses_bad_tokens_with_401_before_upgrading() {
    let c = client();
    let (name, real) = c.new_user("badtok").await;
    let now = now_secs();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut claims = good_claims(&name);
        edit(&mut claims);
        claims
    };
    let other_key = b"not-the-server-secret-not-the-server-secret";
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
            sign_hs256(&good_claims(&name), other_key),
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
            sign_with_header(
                &json!({"alg": "HS512", "typ": "JWT"}),
                &good_claims(&name),
                TEST_JWT_SECRET.as_bytes(),
            ),
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
        let path = format!("/ws/lobby?token={}", urlencode(token));
        let resp = c.upgrade_attempt(&path).await;
        expect_json_error(resp, 401, what).await;
    }
    let resp = c.upgrade_attempt("/ws/lobby").await;
    expect_json_error(resp, 401, "no token at all").await;

    // And through a real WebSocket client: the handshake fails with the 401.
    let forged = sign_hs256(&good_claims(&name), other_key);
    let err = WsClient::connect(&c.ws_url("lobby", &forged))
        .await
        .err()
        .expect("a forged token must not upgrade");
    let (status, body) = handshake_refusal(&err).unwrap_or_else(|| panic!("{err}"));
    assert_eq!(status, 401, "{body}");

    // The same claims signed with the right key DO get in: the refusals above are about the
    // badge, not about the harness's tokens.
    let mut ws = WsClient::connect(&c.ws_url("lobby", &test_token(&good_claims(&name))))
        .await
        .expect("a well-signed token upgrades");
    ws.roundtrip_ping().await;
    // Expired, but within the 30 s leeway: still accepted.
    let recent = test_token(&with(&|c| {
        c["iat"] = json!(now - 3600);
        c["exp"] = json!(now - 5);
    }));
    let ws2 = WsClient::connect(&c.ws_url("lobby", &recent)).await;
    assert!(
        ws2.is_ok(),
        "exp 5 s ago is within the 30 s leeway: {:?}",
        ws2.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_refuses_bad_room_ids() {
    let c = client();
    let (_, token) = c.new_user("badroom").await;
    for room in [
        "a".repeat(65),
        "bad.room".into(),
        "bad%20room".into(),
        "bad%2Froom".into(),
        "caf%C3%A9".into(),
        "room%00".into(),
        String::new(),
    ] {
        let resp = c
            .upgrade_attempt(&format!("/ws/{room}?token={}", urlencode(&token)))
            .await;
        expect_json_error_in(resp, &[404, 422], &format!("room {room:?}")).await;
    }
    // The longest valid id, with every allowed character class, is accepted.
    let longest = format!("Az09_-{}", "x".repeat(58));
    assert_eq!(longest.len(), 64);
    let mut ws = c.ws(&longest, &token).await;
    ws.roundtrip_ping().await;
}

// ---------------------------------------------------------------------------------------------
// Servers of their own: independence and restarts (also checks the harness itself)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_survive_a_restart_and_servers_do_not_share_state() {
    let (one, two) = tokio::task::spawn_blocking(|| {
        (
            Server::start(ServerOptions::default()),
            Server::start(ServerOptions::default()),
        )
    })
    .await
    .unwrap();
    assert_ne!(one.port, two.port);
    let (c1, c2) = (one.client(), two.client());
    let name = unique_name("durable");
    assert_eq!(c1.signup(&name, DEFAULT_PASSWORD).await.status(), 201);
    // The other server has its own state: the name is free there and unknown to its /token.
    assert_eq!(
        c2.login_response(&name, DEFAULT_PASSWORD).await.status(),
        401
    );

    let one = tokio::task::spawn_blocking(move || {
        one.restart();
        one
    })
    .await
    .unwrap();
    assert!(one.is_running());
    let c1 = one.client(); // no pooled connection to the stopped server
    let token = c1.login(&name, DEFAULT_PASSWORD).await;
    let mut ws = c1.ws(&unique_name("after"), &token).await;
    ws.roundtrip_ping().await;
    assert!(one.log().contains("restart"), "log spans both runs");

    tokio::task::spawn_blocking(move || {
        one.stop();
        assert!(!one.is_running());
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", one.port)).is_err(),
            "stopped server still listening"
        );
        drop(two);
    })
    .await
    .unwrap();
}
