//! The API documents and /docs, served as static assets through the Worker, and the answers
//! Schemathesis (tests/contract/schemathesis.mjs) found at odds with them.

use reqwest::Method;
use serde_json::Value;

use crate::harness::*;

#[tokio::test]
async fn the_documents_and_docs_are_served_with_a_strict_policy() {
    let c = client();
    for (path, key, version) in [
        ("/openapi.json", "openapi", "3.1.0"),
        ("/asyncapi.json", "asyncapi", "3.0.0"),
    ] {
        let resp = c.get(path).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            header(&resp, "content-type").starts_with("application/json"),
            "{path}"
        );
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(policies(&resp), 1, "{path}");
        let doc: Value = resp.json().await.unwrap();
        assert_eq!(doc[key], version, "{path}");
    }
    let resp = c.get("/docs").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type").starts_with("text/html"));
    assert_eq!(policies(&resp), 1, "/docs");
    let csp = header(&resp, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    let page = resp.text().await.unwrap();
    for script in ["/docs/swagger-ui-bundle.js", "/docs/docs.js"] {
        assert!(page.contains(script), "{script} in the page");
        let resp = c.get(script).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{script}");
        assert!(
            header(&resp, "content-type").contains("javascript"),
            "{script}"
        );
        assert_eq!(policies(&resp), 1, "{script}");
    }
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing from elsewhere"
    );
}

/// How many Content-Security-Policy headers `resp` has: two `_headers` rules matching one path
/// would each add theirs.
fn policies(resp: &reqwest::Response) -> usize {
    resp.headers()
        .get_all("content-security-policy")
        .iter()
        .count()
}

#[tokio::test]
async fn other_methods_and_unknown_files_get_the_apis_json_answers() {
    let c = client();
    for path in ["/docs", "/openapi.json", "/asyncapi.json", "/docs/docs.js"] {
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let resp = c.request(method.clone(), path).send().await.unwrap();
            assert_eq!(header(&resp, "allow"), "GET, HEAD", "{method} {path}");
            expect_json_error(resp, 405, &format!("{method} {path}")).await;
        }
    }
    for path in ["/docs/nothing.js", "/docs/..%2Fopenapi.json"] {
        let resp = c.get(path).send().await.unwrap();
        expect_json_error(resp, 404, path).await;
    }
}

/// Schemathesis: `before` above the largest id a client can name exactly (2^53 - 1, the bound
/// openapi.json states) was answered 200 instead of 422.
#[tokio::test]
async fn before_beyond_the_largest_safe_integer_is_refused() {
    let c = client();
    let (_, token) = c.new_user("bef").await;
    let room = unique_name("bef");
    let ok = c
        .get_bearer(
            &format!("/rooms/{room}/messages?before=9007199254740991"),
            &token,
        )
        .await;
    assert_eq!(ok.status(), 200);
    for before in [
        "9007199254740992",
        "9223372036854775807",
        "99999999999999999999",
        "-1",
    ] {
        let resp = c
            .get_bearer(&format!("/rooms/{room}/messages?before={before}"), &token)
            .await;
        let e = expect_json_error(resp, 422, before).await;
        assert!(e["detail"].as_str().unwrap().contains("before"), "{e}");
    }
}

/// Schemathesis sent `TRACE /ws/{room_id}` with `Upgrade: websocket` and got 401: under
/// `wrangler dev` an upgrade request reaches the Worker as a GET whatever its method, and a GET
/// without a badge is 401 (openapi.json now declares the upgrade's badge schemes, so a 401 is a
/// documented answer). Without `Upgrade`, every other method is refused with 405 and
/// `Allow: GET`, before any badge check.
#[tokio::test]
async fn other_methods_on_ws_are_405_with_allow_get() {
    let c = client();
    for method in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::TRACE,
        Method::HEAD,
    ] {
        let resp = c.request(method.clone(), "/ws/lobby").send().await.unwrap();
        assert_eq!(resp.status(), 405, "{method} /ws/lobby");
        assert_eq!(header(&resp, "allow"), "GET", "{method} /ws/lobby");
    }
}

/// Schemathesis sent `PATCH /rooms/{room_id}` `{"slow_mode_secs": 301.0}` and got 422: JSON
/// Schema's `integer` (openapi.json) is any number without a fractional part, so `301.0` and
/// `3e2` are integers there. The moderation bodies now read them so; `1.5` is still refused.
/// It also sent integers beyond 2^53 - 1 (`slow_mode_secs`, `until`) and got an undocumented 400
/// from the room: they are 422 now, in the Worker.
#[tokio::test]
async fn integers_with_a_zero_fraction_are_integers_in_moderation_bodies() {
    let c = client();
    let (owner, token) = c.new_user("int").await;
    let (target, _) = c.new_user("int").await;
    let room = unique_name("int");
    let resp = c
        .post("/rooms")
        .bearer_auth(&token)
        .json(&serde_json::json!({"room_id": room, "private": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{owner} creates {room}");
    let send = |method: Method, path: String, body: &'static str| {
        c.request(method, &path)
            .bearer_auth(&token)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let patch = format!("/rooms/{room}");
    for (body, secs) in [
        (r#"{"slow_mode_secs": 301.0}"#, 301),
        (r#"{"slow_mode_secs": 3e2}"#, 300),
    ] {
        let (status, v) = status_json(
            send(Method::PATCH, patch.clone(), body).await.unwrap(),
            body,
        )
        .await;
        assert_eq!(status, 200, "{body}: {v}");
        assert_eq!(v["slow_mode_secs"], secs, "{body}: {v}");
    }
    // Beyond 2^53 - 1 the room's side (JSON read by JavaScript) saw a float: it was a 400.
    for body in [
        r#"{"slow_mode_secs": 1.5}"#,
        r#"{"slow_mode_secs": 86954318169283940}"#,
    ] {
        let resp = send(Method::PATCH, patch.clone(), body).await.unwrap();
        expect_json_error(resp, 422, body).await;
    }

    let until = (now_millis() + 3_600_000) as f64;
    let body: &'static str = Box::leak(format!(r#"{{"until": {until:.1}}}"#).into_boxed_str());
    assert!(body.contains(".0}"), "{body}");
    let mute = format!("/rooms/{room}/mutes/{target}");
    let (status, v) = status_json(send(Method::PUT, mute.clone(), body).await.unwrap(), body).await;
    assert_eq!(status, 200, "{body}: {v}");
    assert_eq!(v["until"], until as i64, "{v}");
    for body in [r#"{"until": 0.5}"#, r#"{"until": -2216698151881336000}"#] {
        let resp = send(Method::PUT, mute.clone(), body).await.unwrap();
        expect_json_error(resp, 422, body).await;
    }
}

/// Schemathesis: `GET /rooms/{room_id}/audit?before=9501527567394036`, over the bound openapi.json
/// states (2^53 - 1, as for messages), was answered 200 instead of 422.
#[tokio::test]
async fn audit_before_beyond_the_largest_safe_integer_is_refused() {
    let c = client();
    let (_, token) = c.new_user("aud").await;
    let room = unique_name("aud");
    let resp = c
        .post("/rooms")
        .bearer_auth(&token)
        .json(&serde_json::json!({"room_id": room, "private": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let ok = c
        .get_bearer(
            &format!("/rooms/{room}/audit?before=9007199254740991"),
            &token,
        )
        .await;
    assert_eq!(ok.status(), 200);
    for before in ["9007199254740992", "9501527567394036", "-1"] {
        let resp = c
            .get_bearer(&format!("/rooms/{room}/audit?before={before}"), &token)
            .await;
        let e = expect_json_error(resp, 422, before).await;
        assert!(e["detail"].as_str().unwrap().contains("before"), "{e}");
    }
}
