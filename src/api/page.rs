//! The browser client (`public/`, and the client library it imports, `clients/js/clubhouse.js`,
//! at `/clubhouse.js`), compiled into the Worker and served by it.
//!
//! Why not Workers static assets, where the API documents and /docs live (wrangler.toml `[assets]`,
//! fetched through `Endpoint::Asset`): the page is what every visitor loads first, and its five
//! small files (about 50 KB) answer from the Worker itself, with their ETags, without a second hop
//! to the assets binding. The documents' 2 MB of renderer stay out of the WASM.
//!
//! Files are revalidated on every use (`no-cache` plus a strong ETag of their bytes), since their
//! names carry no version; the security headers are the page's Content-Security-Policy and
//! friends: no inline script, nothing from another origin, no framing.

use worker::{Method, Request, Response};

use crate::http::{ApiError, ApiResult};

/// One file of the page.
pub struct File {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// FNV-1a of `body`, computed at compile time.
    hash: u64,
}

const fn file(path: &'static str, content_type: &'static str, body: &'static [u8]) -> File {
    File {
        path,
        content_type,
        body,
        hash: fnv1a(body),
    }
}

/// 64-bit FNV-1a: enough to tell two versions of a file apart for caching, and a `const fn`.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

const INDEX: File = file(
    "/index.html",
    "text/html; charset=utf-8",
    include_bytes!("../../public/index.html"),
);

/// The client library the page imports: one implementation of the protocol in JS, for the page and
/// for apps alike.
const LIBRARY: File = file(
    "/clubhouse.js",
    "text/javascript; charset=utf-8",
    include_bytes!("../../clients/js/clubhouse.js"),
);

/// Every file of `public/`, and the library (a unit test keeps this list and the folders in step).
pub const FILES: [File; 5] = [
    INDEX,
    file(
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../public/app.js"),
    ),
    file(
        "/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../public/app.css"),
    ),
    file(
        "/favicon.svg",
        "image/svg+xml",
        include_bytes!("../../public/favicon.svg"),
    ),
    LIBRARY,
];

/// The page's security headers, on every file.
pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    (
        "Permissions-Policy",
        "camera=(), microphone=(), geolocation=()",
    ),
];

impl File {
    /// A strong validator: the quoted hash of the bytes.
    pub fn etag(&self) -> String {
        format!("\"{:016x}\"", self.hash)
    }
}

/// The file served at `path`, if any; `/` is the page itself.
pub fn find(path: &str) -> Option<&'static File> {
    if path == "/" {
        return Some(&FILES[0]);
    }
    FILES.iter().find(|f| f.path == path)
}

/// Whether `If-None-Match` names `etag` (or is `*`): then the client's copy is current.
fn matches_etag(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// `GET`/`HEAD` of one file: 200 with the bytes, or 304 when the client's copy is current. (For
/// `HEAD` the runtime sends the headers and drops the body.)
pub fn serve(req: &Request, file: &File) -> ApiResult<Response> {
    let method = req.method();
    if method != Method::Get && method != Method::Head {
        return Err(ApiError::method_not_allowed("GET, HEAD"));
    }
    let etag = file.etag();
    let current = req
        .headers()
        .get("If-None-Match")?
        .is_some_and(|v| matches_etag(&v, &etag));
    let mut response = if current {
        Response::empty()?.with_status(304)
    } else {
        Response::from_bytes(file.body.to_vec())?
    };
    let headers = response.headers_mut();
    headers.set("Content-Type", file.content_type)?;
    headers.set("ETag", &etag)?;
    headers.set("Cache-Control", "no-cache")?;
    for (name, value) in SECURITY_HEADERS {
        headers.set(name, value)?;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a served path's file lives: the library in `clients/js/`, the rest in `public/`.
    fn source(path: &str) -> String {
        let root = env!("CARGO_MANIFEST_DIR");
        if path == LIBRARY.path {
            format!("{root}/clients/js{path}")
        } else {
            format!("{root}/public{path}")
        }
    }

    #[test]
    fn every_file_in_public_and_the_library_are_served_and_nothing_else() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/public");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("public/ exists")
            .map(|e| format!("/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        // Of clients/js, the module only (its types and package.json are for npm).
        on_disk.push(LIBRARY.path.to_owned());
        on_disk.sort();
        let mut served: Vec<String> = FILES.iter().map(|f| f.path.to_owned()).collect();
        served.sort();
        assert_eq!(on_disk, served);
        for f in &FILES {
            let bytes = std::fs::read(source(f.path)).unwrap();
            assert_eq!(f.body, bytes.as_slice(), "{} is the file on disk", f.path);
        }
    }

    #[test]
    fn the_root_is_the_page_and_unknown_paths_are_not_files() {
        assert_eq!(find("/").unwrap().path, "/index.html");
        for path in ["/app.js", "/clubhouse.js"] {
            assert_eq!(
                find(path).unwrap().content_type,
                "text/javascript; charset=utf-8"
            );
        }
        for path in ["/nope", "/app.js/", "/APP.JS", "/../Cargo.toml", ""] {
            assert!(find(path).is_none(), "{path}");
        }
    }

    #[test]
    fn etags_are_quoted_and_differ_between_files() {
        let tags: Vec<String> = FILES.iter().map(File::etag).collect();
        for tag in &tags {
            assert!(
                tag.starts_with('"') && tag.ends_with('"') && tag.len() == 18,
                "{tag}"
            );
        }
        let mut unique = tags.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), tags.len());
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn if_none_match_lists_and_weak_forms() {
        let etag = "\"00000000000000ab\"";
        assert!(matches_etag(etag, etag));
        assert!(matches_etag("\"x\", \"00000000000000ab\"", etag));
        assert!(matches_etag("W/\"00000000000000ab\"", etag));
        assert!(matches_etag("*", etag));
        assert!(!matches_etag("\"00000000000000ac\"", etag));
        assert!(!matches_etag("", etag));
    }
}
