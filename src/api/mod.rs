//! The HTTP surface: a small router that maps method + path to one handler per resource.
//! Anything unmatched is a JSON 404; every handler error becomes a JSON `{"detail"}` response.

mod closing;
mod dm;
mod guard;
mod health;
mod me;
mod moderation;
mod page;
mod rooms;
mod token;
mod users;
mod ws;

use worker::{worker_sys::web_sys, Env, Method, Request, Response};

use crate::http::{ApiError, ApiResult};
use crate::log::{self, Level};

/// Longest URL (path and query) the router reads.
const MAX_URL_BYTES: usize = 8 * 1024;

/// A handler's answer: a response built here, or one from a Durable Object handed back
/// untouched. The room's 101 is passed: it carries the client's WebSocket, and converting it
/// to a `worker::Response` and back would build a second JS Response around it per connection.
pub enum Reply {
    Built(Response),
    Passed(web_sys::Response),
}

/// Takes the runtime's request as it is: the WebSocket route reads it directly (`ws.rs`), the
/// others through a `worker::Request`.
pub async fn handle(req: web_sys::Request, env: Env) -> web_sys::Response {
    let started = worker::Date::now().as_millis();
    let raw_method = req.method();
    // `Method::from` takes any name it does not know for GET: unknown methods are refused here
    // instead, with the route's `Allow` (`route`), and logged as they came.
    let method = known_method(&raw_method);
    let url = req.url();
    let path = crate::http::path_of(&url).to_owned();
    let request_id = request_id(req.headers().get("cf-ray").ok().flatten());
    let response = match route(req, &url, &env, method.as_ref(), &path, &request_id).await {
        Ok(Reply::Passed(response)) if response.status() == 101 => {
            // An opened WebSocket is logged once, by its room (`ws_connect`, with this request
            // id): a second line per connection would double the log volume of a reconnect storm.
            return response;
        }
        Ok(Reply::Passed(response)) => Response::from(response),
        Ok(Reply::Built(response)) => response,
        Err(err) => err.into_response(),
    };
    let status = response.status_code();
    let elapsed = worker::Date::now().as_millis().saturating_sub(started);
    // The path never holds a secret (tokens travel in headers, bodies or the query, which is
    // not logged); it is cut short so a client cannot flood the log.
    let shown_path: String = path.chars().take(128).collect();
    log::event_with_numbers(
        if status >= 500 {
            Level::Error
        } else {
            Level::Info
        },
        "request",
        &[
            ("request_id", &request_id),
            ("method", &shown_method(&raw_method)),
            ("route", &shown_path),
        ],
        &[
            ("status", i64::from(status)),
            ("duration_ms", elapsed as i64),
        ],
    );
    response.into()
}

async fn route(
    raw: web_sys::Request,
    url: &str,
    env: &Env,
    method: Option<&Method>,
    path: &str,
    request_id: &str,
) -> ApiResult<Reply> {
    if url.len() > MAX_URL_BYTES {
        return Err(ApiError::new(414, "URL too long"));
    }
    // A handle on the same JS object (not `Request.clone()`, which would copy the body).
    let req = || Request::from(Clone::clone(&raw));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let only = |allowed: &[Method], allow: &'static str| -> ApiResult<()> {
        if method.is_some_and(|m| allowed.contains(m)) {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(allow))
        }
    };
    let built = match segments.as_slice() {
        // FastAPI serves `/users/`; accept the slash-less spelling too rather than redirect.
        ["users", ""] | ["users"] => {
            only(&[Method::Post], "POST")?;
            users::signup(req(), env).await
        }
        ["users", "me"] => {
            only(&[Method::Delete], "DELETE")?;
            users::delete_me(req(), env).await
        }
        ["users", "me", "password"] => {
            only(&[Method::Post], "POST")?;
            users::change_password(req(), env).await
        }
        ["token"] => {
            only(&[Method::Post], "POST")?;
            token::login(req(), env).await
        }
        ["logout"] => {
            only(&[Method::Post], "POST")?;
            token::logout(req(), env).await
        }
        ["healthz"] => {
            only(&[Method::Get], "GET")?;
            Ok(health::healthz(env).await)
        }
        ["ws", room] => {
            only(&[Method::Get], "GET")?;
            return ws::connect(&raw, url, env, room, request_id)
                .await
                .map(Reply::Passed);
        }
        ["rooms"] | ["rooms", ""] => {
            only(&[Method::Post], "POST")?;
            rooms::create(req(), env).await
        }
        ["rooms", room] => {
            only(&[Method::Get, Method::Patch], "GET, PATCH")?;
            if method == Some(&Method::Patch) {
                moderation::settings(req(), env, room).await
            } else {
                rooms::info(req(), env, room).await
            }
        }
        ["rooms", room, "audit"] => {
            only(&[Method::Get], "GET")?;
            moderation::audit(req(), env, room).await
        }
        ["rooms", room, "moderators", user] => {
            only(&[Method::Put, Method::Delete], "PUT, DELETE")?;
            moderation::moderator(req(), env, room, user).await
        }
        ["rooms", room, "kick", user] => {
            only(&[Method::Post], "POST")?;
            moderation::kick(req(), env, room, user).await
        }
        ["rooms", room, kind @ ("bans" | "mutes"), user] => {
            only(&[Method::Put, Method::Delete], "PUT, DELETE")?;
            moderation::sanction(req(), env, room, kind, user).await
        }
        ["rooms", room, what @ ("messages" | "members")] => {
            only(&[Method::Get], "GET")?;
            rooms::read(req(), env, room, what).await
        }
        ["rooms", room, "stats"] => {
            only(&[Method::Get], "GET")?;
            rooms::stats(req(), env, room).await
        }
        ["rooms", room, "members", user] => {
            only(&[Method::Put, Method::Delete], "PUT, DELETE")?;
            rooms::change_member(req(), env, room, user).await
        }
        ["dm", user] => {
            only(&[Method::Post], "POST")?;
            dm::open(req(), env, user).await
        }
        ["users", "me", "blocks"] => {
            only(&[Method::Get], "GET")?;
            dm::list_blocks(req(), env).await
        }
        ["users", "me", "blocks", user] => {
            only(&[Method::Put, Method::Delete], "PUT, DELETE")?;
            dm::change_block(req(), env, user).await
        }
        ["me", "rooms"] => {
            only(&[Method::Get], "GET")?;
            me::list(req(), env).await
        }
        ["me", "rooms", room] => {
            only(&[Method::Delete], "DELETE")?;
            me::leave(req(), env, room).await
        }
        // The browser client: a handful of fixed paths, after every API route.
        _ => match page::find(path) {
            Some(file) => {
                only(&[Method::Get, Method::Head], "GET, HEAD")?;
                page::serve(&req(), file)
            }
            None => Err(ApiError::not_found()),
        },
    };
    built.map(Reply::Built)
}

/// The methods the Worker knows; `None` for any other name (HTTP methods are case-sensitive,
/// and the runtime already spells the standard ones in capitals).
fn known_method(raw: &str) -> Option<Method> {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN.contains(&raw).then(|| Method::from(raw.to_owned()))
}

/// A method name for the log line: printable ASCII, cut short (a client chooses it).
fn shown_method(raw: &str) -> String {
    raw.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(16)
        .collect()
}

/// Seconds since the epoch from the runtime clock (chrono's clock panics on wasm32).
pub fn now_secs() -> i64 {
    (worker::Date::now().as_millis() / 1000) as i64
}

/// Longest request id kept from `cf-ray` (Cloudflare's are ~20 characters).
const MAX_REQUEST_ID: usize = 64;

/// The request id: Cloudflare's `cf-ray`, printable ASCII only and cut short (the edge sets
/// it, but locally a client can, and it goes into the logs and to the room), or a fresh one.
fn request_id(cf_ray: Option<String>) -> String {
    let kept: String = cf_ray
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(MAX_REQUEST_ID)
        .collect();
    if kept.is_empty() {
        local_request_id()
    } else {
        kept
    }
}

thread_local! {
    /// This isolate's random prefix for request ids, and how many it has made.
    static LOCAL_IDS: (String, std::cell::Cell<u32>) =
        (crate::auth::badge::random_id()[..8].to_owned(), std::cell::Cell::new(0));
}

/// An id for a request that came without `cf-ray` (locally): unique, not secret, so one random
/// prefix per isolate and a counter, rather than fresh randomness per request (a call into the
/// runtime that profiled at ~15 µs of a WebSocket connect).
fn local_request_id() -> String {
    LOCAL_IDS.with(|(prefix, count)| {
        count.set(count.get().wrapping_add(1));
        format!("{prefix}{:08x}", count.get())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_methods_are_methods() {
        assert_eq!(known_method("GET"), Some(Method::Get));
        assert_eq!(known_method("DELETE"), Some(Method::Delete));
        for unknown in ["QUERY", "PROPFIND", "SEARCH", "PURGE", "get", "", "GET "] {
            assert_eq!(known_method(unknown), None, "{unknown:?}");
        }
        assert_eq!(shown_method("PROP\nFIND"), "PROPFIND");
        assert_eq!(shown_method(&"X".repeat(100)).len(), 16);
    }

    #[test]
    fn request_ids_are_bounded() {
        assert_eq!(
            request_id(Some("8e1f2a3b4c5d6e7f-AMS".into())),
            "8e1f2a3b4c5d6e7f-AMS"
        );
        assert_eq!(request_id(Some("x".repeat(10_000))).len(), MAX_REQUEST_ID);
        assert_eq!(request_id(None).len(), 16);
        assert_eq!(request_id(Some(String::new())).len(), 16);
        assert_eq!(request_id(Some("ab c\u{e9}\"d\n".into())), "abc\"d");
        assert_eq!(request_id(Some(" \t".into())).len(), 16);
        assert_ne!(request_id(None), request_id(None), "local ids are unique");
    }
}
