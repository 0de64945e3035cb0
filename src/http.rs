//! HTTP for the Worker's routes and the Durable Objects' internal ones: the one error type
//! ([`ApiError`]: every failure becomes a JSON `{"detail": "..."}` response with the right
//! status; a client's mistake is always a 4xx, never a 5xx), JSON responses with security
//! headers, bounded body reading, bearer-token extraction, query parameters.

use std::borrow::Cow;

use crate::log;
use futures_util::StreamExt;
use serde::Serialize;
use worker::{Request, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub detail: Cow<'static, str>,
    pub headers: Vec<(&'static str, String)>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A handler's future behind a pointer. An entry point that dispatches to several handlers awaits
/// them boxed: each is then a function of its own instead of one state machine inlined into the
/// entry's, and a cold isolate (V8 compiles WASM functions on their first call) compiles only the
/// handler a request runs (bench/README.md, "WASM size").
pub type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = ApiResult<T>> + 'a>>;

impl ApiError {
    pub fn new(status: u16, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, detail)
    }

    /// 401 with the `WWW-Authenticate: Bearer` challenge OAuth2 clients expect.
    pub fn unauthorized(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(401, detail).with_header("WWW-Authenticate", "Bearer")
    }

    pub fn not_found() -> Self {
        Self::new(404, "Not Found")
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self::new(405, "Method Not Allowed").with_header("Allow", allow)
    }

    pub fn unprocessable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(422, detail)
    }

    /// A server-side failure. The detail the client sees is generic; the cause goes to the log.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        log::error("error", &[("cause", &cause.to_string())]);
        Self::new(500, "Internal Server Error")
    }

    pub fn into_response(self) -> Response {
        let mut response = json(self.status, &serde_json::json!({ "detail": self.detail }));
        let headers = response.headers_mut();
        for (name, value) in &self.headers {
            let _ = headers.set(name, value);
        }
        response
    }
}

impl From<worker::Error> for ApiError {
    fn from(err: worker::Error) -> Self {
        Self::internal(err)
    }
}

/// The first value of query parameter `name` of a URL parsed by the `url` crate, decoded: the
/// reference the string helpers below are tested against (the Worker itself never parses URLs
/// with that crate, whose IDNA and Unicode tables are a large share of the WASM).
#[cfg(test)]
fn query_param(url: &worker::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The query of a serialised URL (as the runtime gives `Request.url`), without the `?`: what
/// follows the first `?`, up to a `#` (serialisation percent-encodes any `#` inside it). The
/// Worker reads URLs with these string helpers rather than `Request::url()`: that parses with the
/// `url` crate, whose IDNA and Unicode tables are a large share of the WASM.
pub fn query_of(url: &str) -> Option<&str> {
    let (_, query) = url.split_once('?')?;
    Some(query.split_once('#').map_or(query, |(q, _)| q))
}

/// The `?query` of a serialised URL to pass on to another object, empty when there is none.
pub fn query_suffix(url: &str) -> String {
    query_of(url).map(|q| format!("?{q}")).unwrap_or_default()
}

/// The origin (`scheme://host[:port]`) of a serialised http(s) URL, as the runtime gives
/// `Request.url`: serialisation has already lower-cased and IDNA-encoded the host and dropped a
/// default port, so the origin is the scheme and the authority without any `user:password@`.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    Some(format!("{scheme}://{host_port}"))
}

/// Whether a serialised URL is `https:` (the runtime spells the scheme in lower case).
pub fn is_https_url(url: &str) -> bool {
    url.starts_with("https:")
}

/// The first value of query parameter `name` in a serialised URL (as the runtime gives
/// `Request.url`), decoded, without parsing the whole URL (`query_of`).
pub fn raw_query_param(url: &str, name: &str) -> Option<String> {
    let [value] = raw_query_params(url, [name]);
    value
}

/// [`raw_query_param`] for several names, reading the query once.
pub fn raw_query_params<const N: usize>(url: &str, names: [&str; N]) -> [Option<String>; N] {
    let mut values = [const { None }; N];
    let Some(query) = query_of(url) else {
        return values;
    };
    let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(query) else {
        return values;
    };
    for (key, value) in pairs {
        if let Some(i) = names.iter().position(|n| *n == key) {
            values[i].get_or_insert(value);
        }
    }
    values
}

/// The path of a serialised URL (as the runtime gives `Request.url`), without parsing it: in a
/// serialised http(s) URL the first `/` after `://` starts the path, and `?` or `#` ends it.
pub fn path_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let Some(start) = rest.find('/') else {
        return "/";
    };
    let path = &rest[start..];
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// Largest request body any route reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A JSON response with the headers every API response carries.
pub fn json<T: Serialize>(status: u16, body: &T) -> Response {
    let text =
        serde_json::to_string(body).unwrap_or_else(|_| r#"{"detail":"unserialisable"}"#.into());
    let mut response = Response::ok(text)
        .expect("a string body always makes a response")
        .with_status(status);
    let headers = response.headers_mut();
    let _ = headers.set("Content-Type", "application/json");
    let _ = headers.set("X-Content-Type-Options", "nosniff");
    let _ = headers.set("Referrer-Policy", "no-referrer");
    response
}

/// Reads the whole body, refusing (413) anything over `MAX_BODY_BYTES` without buffering it.
pub async fn read_body(req: &mut Request) -> ApiResult<Vec<u8>> {
    let too_large = || ApiError::new(413, "request body too large (limit 16384 bytes)");
    if let Some(len) = req.headers().get("Content-Length")? {
        if len
            .trim()
            .parse::<usize>()
            .map_or(true, |n| n > MAX_BODY_BYTES)
        {
            return Err(too_large());
        }
    }
    let mut body = Vec::new();
    let Ok(mut stream) = req.stream() else {
        return Ok(body); // no body at all
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::bad_request("could not read request body"))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Checks that the request declares the media type a route reads (parameters ignored).
pub fn require_content_type(req: &Request, expected: &str) -> ApiResult<()> {
    let declared = req.headers().get("Content-Type")?.unwrap_or_default();
    let media = declared.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ApiError::new(
            415,
            format!("Content-Type must be {expected}"),
        ))
    }
}

/// The token from `Authorization: Bearer <token>`, if any.
pub fn bearer_token(req: &Request) -> ApiResult<Option<String>> {
    let Some(value) = req.headers().get("Authorization")? else {
        return Ok(None);
    };
    let mut parts = value.splitn(2, ' ');
    match (parts.next(), parts.next()) {
        (Some(scheme), Some(token)) if scheme.eq_ignore_ascii_case("bearer") => {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::{
        is_https_url, origin_of, path_of, query_of, query_param, raw_query_param, raw_query_params,
    };

    #[test]
    fn the_string_helpers_read_urls_as_the_url_parser_does() {
        let urls = [
            "http://127.0.0.1:8787/ws/lobby?token=a.b.c&since=12",
            "https://chat.example.com/ws/r?token=t",
            "https://user:pw@example.com:8443/rooms/r/messages?limit=5#x",
            "http://[::1]:8787/me/rooms?cursor=a%3Db",
            "https://h/limiter?key=login%3A1.2.3.4&limit=5&window_ms=60000",
            "http://h/ws/r?since=1&token=x%2By+z&token=second",
            "http://h/ws/r?token=&since",
            "http://h/ws/r?a=1&b=%E2%9C%93#token=frag",
            "http://h/ws/r",
            "http://h/ws/r?",
            "http://h/ws/r?%zz=1&token=t%",
        ];
        for url in urls {
            let parsed = worker::Url::parse(url).unwrap();
            for name in ["token", "since", "a", "b", "%zz"] {
                assert_eq!(
                    raw_query_param(url, name),
                    query_param(&parsed, name),
                    "{name} in {url}"
                );
            }
            assert_eq!(query_of(url), parsed.query(), "{url}");
            assert_eq!(
                origin_of(url),
                Some(parsed.origin().ascii_serialization()),
                "{url}"
            );
            assert_eq!(is_https_url(url), parsed.scheme() == "https", "{url}");
        }
        assert_eq!(
            raw_query_param("http://h/?token=x%2By+z", "token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(
            raw_query_params(
                "http://h/ws/r?rev=3&token=t&rev=4",
                ["token", "since", "rev"]
            ),
            [Some("t".into()), None, Some("3".into())],
            "one read, the first value of each"
        );
    }

    #[test]
    fn path_of_a_serialised_url() {
        assert_eq!(
            path_of("http://127.0.0.1:8787/ws/lobby?token=a.b.c"),
            "/ws/lobby"
        );
        assert_eq!(path_of("https://chat.example.com/users/"), "/users/");
        assert_eq!(path_of("https://chat.example.com/"), "/");
        assert_eq!(path_of("https://chat.example.com/a#frag"), "/a");
        assert_eq!(path_of("https://chat.example.com/a?b=/c"), "/a");
        assert_eq!(path_of("https://chat.example.com"), "/");
        // The same as worker::Request::path for what the runtime serialises.
        assert_eq!(path_of("http://h/%2e%2e/x?y"), "/%2e%2e/x");
    }
}
