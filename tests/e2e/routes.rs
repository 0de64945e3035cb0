//! What the Worker answers per path and method: the browser client's files and the client library
//! it imports (`src/api/page.rs`, served from the static assets), unknown paths, wrong methods.

use crate::harness::*;

/// The page's Content-Security-Policy (`public/headers.conf`).
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_from_the_assets_with_etags_and_its_security_headers() {
    let c = client();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, file, media) in [
        ("/", "public/index.html", "text/html"),
        ("/index.html", "public/index.html", "text/html"),
        ("/app.js", "public/app.js", "text/javascript"),
        ("/app.css", "public/app.css", "text/css"),
        ("/favicon.svg", "public/favicon.svg", "image/svg+xml"),
        (
            "/clubhouse.js",
            "clients/js/clubhouse.js",
            "text/javascript",
        ),
    ] {
        let resp = c.get(path).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
        let content_type = header(&resp, "content-type");
        assert!(
            content_type.starts_with(media),
            "GET {path}: {content_type}"
        );
        // One policy, the page's: a second `_headers` rule matching the path would add another.
        let policies: Vec<_> = resp
            .headers()
            .get_all("content-security-policy")
            .iter()
            .collect();
        assert_eq!(policies.len(), 1, "GET {path}: {policies:?}");
        assert_eq!(policies[0], PAGE_POLICY, "GET {path}");
        assert_eq!(header(&resp, "x-frame-options"), "DENY");
        assert_eq!(header(&resp, "referrer-policy"), "no-referrer");
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
        assert_eq!(header(&resp, "cache-control"), "no-cache");
        let etag = header(&resp, "etag");
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "GET {path}: etag {etag:?}"
        );
        let body = resp.bytes().await.unwrap();
        assert_eq!(
            body.as_ref(),
            std::fs::read(root.join(file)).unwrap(),
            "GET {path}"
        );

        // Revalidation: the same tag is a 304 without a body; another tag gets the file again.
        let again = c
            .get(path)
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "GET {path} If-None-Match");
        assert_eq!(header(&again, "etag"), etag);
        assert_eq!(header(&again, "content-security-policy"), PAGE_POLICY);
        assert!(again.bytes().await.unwrap().is_empty());
        let weak = c
            .get(path)
            .header("If-None-Match", format!("W/{etag}"))
            .send()
            .await
            .unwrap();
        assert_eq!(weak.status(), 304, "GET {path} If-None-Match W/");
        let stale = c
            .get(path)
            .header("If-None-Match", "\"0000\"")
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), 200, "GET {path} with a stale tag");

        let head = c.request(reqwest::Method::HEAD, path).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert_eq!(header(&head, "etag"), etag);
        assert!(
            head.bytes().await.unwrap().is_empty(),
            "HEAD {path} has no body"
        );

        let post = c.post(path).body("x").send().await.unwrap();
        assert_eq!(header(&post, "allow"), "GET, HEAD");
        expect_json_error(post, 405, &format!("POST {path}")).await;
    }
    assert_eq!(
        header(&c.get("/").send().await.unwrap(), "etag"),
        header(&c.get("/index.html").send().await.unwrap(), "etag"),
        "/ is /index.html"
    );
    for path in [
        "/_headers",
        "/public/app.js",
        "/app.js/",
        "/index.htm",
        "/index",
        "/docs.html",
        "/clubhouse.d.ts",
    ] {
        let resp = c.get(path).send().await.unwrap();
        expect_json_error(resp, 404, &format!("GET {path}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_json() {
    let c = client();
    // (`/` and the files of public/ are the browser client: see the_page_is_served_from_the_assets.)
    for path in [
        "/nope",
        "/users/extra",
        "/tokens",
        "/ws",
        "/ws/room/extra",
        "/.env",
        "/%2e%2e/etc/passwd",
    ] {
        let resp = c.get(path).send().await.unwrap();
        expect_json_error(resp, 404, &format!("GET {path}")).await;
    }
    let resp = c.post("/nope").body("{}").send().await.unwrap();
    expect_json_error(resp, 404, "POST /nope").await;
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
        let resp = c.request(method.clone(), path).send().await.unwrap();
        expect_json_error_in(resp, &[404, 405], &format!("{method} {path}")).await;
    }
}
