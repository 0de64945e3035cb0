//! The browser client's paths: `/` and the files of `public/`, and the client library it imports
//! (`clients/js/clubhouse.js`) at `/clubhouse.js`. The files themselves are Workers Static Assets
//! (wrangler.toml `[assets]`; `scripts/assets` copies them into `build/assets`), kept out of the
//! WASM, which every cold start loads (they are 154 KB, a seventh of it). The router still sees
//! each request first (`run_worker_first`), matches these paths, answers a wrong method with its
//! JSON 405, and fetches the file from the `ASSETS` binding.
//!
//! What a file is answered with comes from the assets layer: its bytes, a `Content-Type` from its
//! extension, a strong `ETag` of its bytes and a 304 when `If-None-Match` is that tag (or its `W/`
//! form); `public/_headers` adds the page's Content-Security-Policy and friends (no inline script,
//! nothing from another origin, no framing) and `Cache-Control: no-cache`, since the files' names
//! carry no version.

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

    /// The rules of a `_headers` file: each path line with the header lines under it.
    fn header_rules(file: &str) -> Vec<(String, Vec<String>)> {
        let text = std::fs::read_to_string(format!("{ROOT}/{file}")).unwrap();
        let mut rules: Vec<(String, Vec<String>)> = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            match line.strip_prefix("  ") {
                Some(header) => rules.last_mut().expect("a rule").1.push(header.to_owned()),
                None => rules.push((line.to_owned(), Vec::new())),
            }
        }
        rules
    }

    #[test]
    fn every_file_in_public_and_the_library_are_served_and_nothing_else() {
        let mut on_disk: Vec<String> = std::fs::read_dir(format!("{ROOT}/public"))
            .expect("public/ exists")
            .map(|e| format!("/{}", e.unwrap().file_name().to_string_lossy()))
            // The assets layer reads `_headers` and never serves it.
            .filter(|p| p != "/_headers")
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
    fn every_file_the_binding_is_asked_for_has_one_rule_and_the_same_headers() {
        let mut asked: Vec<&str> = PATHS.iter().filter_map(|p| asset_path(p)).collect();
        asked.sort();
        asked.dedup();
        let rules = header_rules("public/_headers");
        let mut ruled: Vec<&str> = rules.iter().map(|(path, _)| path.as_str()).collect();
        ruled.sort();
        assert_eq!(ruled, asked);
        let headers = &rules[0].1;
        assert!(headers.iter().any(|h| h == "Cache-Control: no-cache"));
        assert!(headers
            .iter()
            .any(|h| h.starts_with("Content-Security-Policy: default-src 'none';")));
        for (path, theirs) in &rules {
            assert_eq!(theirs, headers, "{path} has the page's headers");
        }
        // The API documents' rules must not match a page file too: a header two rules set is
        // sent twice.
        for (rule, _) in header_rules("docs/api/site/_headers") {
            assert!(
                !rule.contains(':') && !rule.trim_end_matches('*').contains('*'),
                "{rule}: this check reads a trailing `*` only"
            );
            for path in &asked {
                let matches = match rule.strip_suffix('*') {
                    Some(prefix) => path.starts_with(prefix),
                    None => rule == *path,
                };
                assert!(!matches, "{rule} matches the page's {path}");
            }
        }
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
            "/docs.html",
        ] {
            assert!(asset_path(path).is_none(), "{path}");
        }
    }
}
