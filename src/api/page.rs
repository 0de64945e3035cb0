//! The browser client's paths: `/` and the files of `public/`, and the client library it imports
//! (`clients/js/clubhouse.js`) at `/clubhouse.js`. The files themselves are Workers Static Assets
//! (wrangler.toml `[assets]`; `scripts/assets` copies them into `build/assets`), kept out of the
//! WASM, which every cold start loads (they are 154 KB, a seventh of it). The router still sees
//! each request first (`run_worker_first`), matches these paths, answers a wrong method with its
//! JSON 405, and fetches the file from the `ASSETS` binding.
//!
//! What a file is answered with comes from the assets layer: its bytes, a `Content-Type` from its
//! extension, a strong `ETag` of its bytes and a 304 when `If-None-Match` is that tag (or its `W/`
//! form); `public/headers.conf` adds the page's Content-Security-Policy and friends (no inline
//! script, nothing from another origin, no framing) and `Cache-Control: no-cache`, since the files'
//! names carry no version (`scripts/assets` writes them into `_headers`, a rule per file).

use worker::{Request, RequestInit};

use crate::http::{self, ApiError, ApiResult};

/// Every path the page answers, in `public/` and `clients/js/` (a unit test keeps this list and the
/// folders in step).
pub const PATHS: [&str; 6] = [
    "/",
    "/index.html",
    "/app.js",
    "/app.css",
    "/favicon.svg",
    "/clubhouse.js",
];

/// The path to ask the assets binding for, if `path` is one of the page's: the path itself, but
/// `/` for `/index.html`, which the binding answers with a redirect to `/` (wrangler.toml leaves
/// `html_handling` at its default, which also serves `/docs` from `docs.html`).
pub fn asset_path(path: &str) -> Option<&'static str> {
    match PATHS.iter().find(|p| **p == path)? {
        &"/index.html" => Some("/"),
        found => Some(found),
    }
}

/// `req` (a `GET` or `HEAD`, with its headers: `If-None-Match`) asked of `asset_path` on the same
/// origin.
pub fn asset_request(req: &Request, url: &str, asset_path: &str) -> ApiResult<Request> {
    let origin = http::origin_of(url).ok_or_else(ApiError::not_found)?;
    let mut init = RequestInit::new();
    init.with_method(req.method())
        .with_headers(req.headers().clone());
    Ok(Request::new_with_init(
        &format!("{origin}{asset_path}"),
        &init,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = env!("CARGO_MANIFEST_DIR");

    #[test]
    fn every_file_in_public_and_the_library_are_served_and_nothing_else() {
        let mut on_disk: Vec<String> = std::fs::read_dir(format!("{ROOT}/public"))
            .expect("public/ exists")
            .map(|e| format!("/{}", e.unwrap().file_name().to_string_lossy()))
            // The headers of the files, not one of them (scripts/assets).
            .filter(|p| p != "/headers.conf")
            .collect();
        // Of clients/js, the module only (its types and package.json are for npm).
        assert!(std::path::Path::new(&format!("{ROOT}/clients/js/clubhouse.js")).is_file());
        on_disk.push("/clubhouse.js".to_owned());
        on_disk.push("/".to_owned());
        on_disk.sort();
        let mut served: Vec<String> = PATHS.iter().map(|p| (*p).to_owned()).collect();
        served.sort();
        assert_eq!(on_disk, served);
    }

    #[test]
    fn the_index_is_asked_for_at_the_root_and_unknown_paths_are_not_the_page() {
        assert_eq!(asset_path("/"), Some("/"));
        assert_eq!(asset_path("/index.html"), Some("/"));
        for path in ["/app.js", "/app.css", "/favicon.svg", "/clubhouse.js"] {
            assert_eq!(asset_path(path), Some(path));
        }
        for path in [
            "/nope",
            "/app.js/",
            "/APP.JS",
            "/../Cargo.toml",
            "",
            "/index",
            "/_headers",
            "/headers.conf",
            "/docs.html",
        ] {
            assert!(asset_path(path).is_none(), "{path}");
        }
    }
}
