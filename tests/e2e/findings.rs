//! What tools nobody here wrote found (fuzzers, a schema-driven tester, sqlmap), each kept
//! fixed by a test.

use reqwest::Method;

use crate::harness::*;

#[tokio::test]
async fn logout_all_takes_only_a_boolean_and_never_reads_a_typo_as_no() {
    let c = client();
    let (name, first) = c.new_user("flag").await;
    for bad in ["yes", "", "2", "tru"] {
        let resp = c
            .post(&format!("/logout?all={bad}"))
            .bearer_auth(&first)
            .send()
            .await
            .unwrap();
        let body = expect_json_error(resp, 422, "a non-boolean all").await;
        assert!(
            body["detail"].as_str().unwrap().contains("boolean"),
            "{body}"
        );
    }
    // Nothing was revoked by the refused calls.
    assert_eq!(c.get_bearer("/rooms/lobby", &first).await.status(), 200);

    // `True` is what Python's requests sends for `params={"all": True}`: everywhere.
    let second = c.login(&name, DEFAULT_PASSWORD).await;
    let resp = c
        .post("/logout?all=True")
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp, "logout everywhere").await;
    assert_eq!((status, body["all"].as_bool()), (200, Some(true)), "{body}");
    assert_eq!(
        c.get_bearer("/rooms/lobby", &first).await.status(),
        401,
        "the other session is gone too"
    );
}

#[tokio::test]
async fn unknown_methods_are_405_with_the_routes_allow_not_a_get() {
    let c = client();
    for name in ["QUERY", "PROPFIND", "SEARCH", "PURGE"] {
        let method = Method::from_bytes(name.as_bytes()).unwrap();
        for (path, allow) in [("/healthz", "GET"), ("/", "GET, HEAD"), ("/token", "POST")] {
            let resp = c.request(method.clone(), path).send().await.unwrap();
            assert_eq!(header(&resp, "allow"), allow, "{name} {path}");
            expect_json_error(resp, 405, "an unknown method").await;
        }
    }
}

#[tokio::test]
async fn a_numeric_username_is_logged_as_text() {
    let c = client();
    let digits = format!("{}", 100_000_000 + random_u64() % 800_000_000);
    assert_eq!(c.signup(&digits, DEFAULT_PASSWORD).await.status(), 201);
    let wanted = format!(r#""username":"{digits}""#);
    let mut logged = false;
    for _ in 0..50 {
        if SHARED.get().log().contains(&wanted) {
            logged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(logged, "no log line with {wanted}");
    assert!(!SHARED
        .get()
        .log()
        .contains(&format!(r#""username":{digits}"#)));
}

#[tokio::test]
async fn a_login_right_after_logging_out_everywhere_works_in_the_same_second() {
    let c = client();
    let (name, _) = c.new_user("again").await;
    // Several tries: each has a good chance to land in the logout's second.
    for _ in 0..4 {
        let old = c.login(&name, DEFAULT_PASSWORD).await;
        let leaving = c.login(&name, DEFAULT_PASSWORD).await;
        assert_eq!(c.logout(&leaving, true).await.status(), 200);
        let fresh = c.login(&name, DEFAULT_PASSWORD).await;
        let room = unique_name("after");
        assert_eq!(
            c.get_bearer(&format!("/rooms/{room}"), &fresh)
                .await
                .status(),
            200,
            "a badge issued after the logout is valid"
        );
        let mut ws = c.ws(&room, &fresh).await;
        ws.roundtrip_ping().await;
        assert_eq!(
            c.get_bearer(&format!("/rooms/{room}"), &old).await.status(),
            401,
            "one issued before it is not"
        );
    }
}

#[tokio::test]
async fn content_of_only_nul_or_invisible_characters_is_refused_as_empty() {
    let c = client();
    let (room, [(_, ta), (_, tb)]) = c.room_with_users("blank", ["a", "b"]).await;
    let mut a = c.ws_ready(&room, &ta).await;
    let mut b = c.ws_ready(&room, &tb).await;
    for blank in [
        "\u{0}",
        "\u{0}\u{0}\u{0}",
        "\u{200b}\u{200c}\u{200d}",
        "\u{feff}\u{2060}",
        " \u{202e}\u{ad}\t\u{3164}\u{7}",
    ] {
        a.send_message(&room, blank).await;
        let e = a.next_of_types(&["error", "message"]).await;
        assert_eq!(e["type"], "error", "{blank:?} was accepted: {e}");
        assert_eq!(e["detail"], "content must not be empty", "{blank:?}");
    }
    // Visible text around invisible characters is a message, kept as sent; nothing blank went out.
    let kept = "a\u{200b}b";
    a.send_message(&room, kept).await;
    assert_eq!(a.next_message_with(kept).await["content"], kept);
    assert_eq!(
        b.next_message().await["content"],
        kept,
        "b got a blank one first"
    );
    assert_eq!(
        c.all_messages(&room, &ta).await.len(),
        1,
        "only the visible message is stored"
    );
}
