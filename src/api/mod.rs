//! The HTTP surface: a small router that maps method + path to one handler per resource.
//! Anything unmatched is a JSON 404; every handler error becomes a JSON `{"detail"}` response.

mod closing;
mod dm;
mod guard;
mod health;
mod me;
mod moderation;
pub mod page;
mod rooms;
mod token;
mod users;
mod ws;

use worker::{worker_sys::web_sys, Env, Method, Request, Response};

use crate::http::{ApiError, ApiResult, Boxed};
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

/// What a route does: the router finds the path's row in `ROUTES` and dispatches on this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Signup,
    Login,
    Logout,
    Health,
    Connect,
    CreateRoom,
    /// `GET` its info, `PATCH` its settings (slow mode).
    Room,
    RoomMessages,
    RoomMembers,
    RoomStats,
    RoomMember,
    RoomAudit,
    Moderator,
    Kick,
    Ban,
    Mute,
    DeleteAccount,
    ChangePassword,
    Blocks,
    Block,
    OpenDm,
    MyRooms,
    LeaveRoom,
    /// A file of Workers Static Assets (wrangler.toml `[assets]`, built by scripts/assets): the
    /// API documents and /docs, kept out of the WASM and fetched from the `ASSETS` binding (as
    /// are the browser client's files, `page::PATHS`).
    Asset,
}

/// One row of the route table: a path template (`{name}` matches one path segment), the
/// methods it answers (the `Allow` header of a 405) and what it does.
#[derive(Debug)]
pub struct Route {
    pub path: &'static str,
    pub allow: &'static str,
    pub endpoint: Endpoint,
}

const fn row(path: &'static str, allow: &'static str, endpoint: Endpoint) -> Route {
    Route {
        path,
        allow,
        endpoint,
    }
}

/// Every HTTP route but the browser client's files (`page::PATHS`), in matching order: the first
/// row whose template fits the path wins. The API documents (`docs/api/openapi.json`) list
/// exactly these paths and methods; `tests/contract` fails on any difference.
pub const ROUTES: &[Route] = &[
    // FastAPI serves `/users/`; accept the slash-less spelling too rather than redirect.
    row("/users/", "POST", Endpoint::Signup),
    row("/users", "POST", Endpoint::Signup),
    row("/users/me", "DELETE", Endpoint::DeleteAccount),
    row("/users/me/password", "POST", Endpoint::ChangePassword),
    row("/users/me/blocks", "GET", Endpoint::Blocks),
    row(
        "/users/me/blocks/{username}",
        "PUT, DELETE",
        Endpoint::Block,
    ),
    row("/dm/{username}", "POST", Endpoint::OpenDm),
    row("/me/rooms", "GET", Endpoint::MyRooms),
    row("/me/rooms/{room_id}", "DELETE", Endpoint::LeaveRoom),
    row("/token", "POST", Endpoint::Login),
    row("/logout", "POST", Endpoint::Logout),
    row("/healthz", "GET", Endpoint::Health),
    row("/ws/{room_id}", "GET", Endpoint::Connect),
    row("/rooms", "POST", Endpoint::CreateRoom),
    row("/rooms/", "POST", Endpoint::CreateRoom),
    row("/rooms/{room_id}", "GET, PATCH", Endpoint::Room),
    row("/rooms/{room_id}/audit", "GET", Endpoint::RoomAudit),
    row("/rooms/{room_id}/messages", "GET", Endpoint::RoomMessages),
    row("/rooms/{room_id}/members", "GET", Endpoint::RoomMembers),
    row("/rooms/{room_id}/stats", "GET", Endpoint::RoomStats),
    row(
        "/rooms/{room_id}/members/{username}",
        "PUT, DELETE",
        Endpoint::RoomMember,
    ),
    row(
        "/rooms/{room_id}/moderators/{username}",
        "PUT, DELETE",
        Endpoint::Moderator,
    ),
    row("/rooms/{room_id}/kick/{username}", "POST", Endpoint::Kick),
    row(
        "/rooms/{room_id}/bans/{username}",
        "PUT, DELETE",
        Endpoint::Ban,
    ),
    row(
        "/rooms/{room_id}/mutes/{username}",
        "PUT, DELETE",
        Endpoint::Mute,
    ),
    row("/openapi.json", "GET, HEAD", Endpoint::Asset),
    row("/asyncapi.json", "GET, HEAD", Endpoint::Asset),
    row("/docs", "GET, HEAD", Endpoint::Asset),
    row("/docs/{file}", "GET, HEAD", Endpoint::Asset),
];

/// The route whose template fits `path`, and the segments its `{name}`s matched, in order.
pub fn find_route(path: &str) -> Option<(&'static Route, Vec<&str>)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    ROUTES.iter().find_map(|route| {
        let template = route.path.trim_start_matches('/').split('/');
        if template.clone().count() != segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (want, got) in template.zip(&segments) {
            if want.starts_with('{') {
                params.push(*got);
            } else if want != *got {
                return None;
            }
        }
        Some((route, params))
    })
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
    let Some((found, params)) = find_route(path) else {
        // The browser client: a handful of fixed paths, after every API route.
        let Some(asset_path) = page::asset_path(path) else {
            return Err(ApiError::not_found());
        };
        if !matches!(method, Some(Method::Get | Method::Head)) {
            return Err(ApiError::method_not_allowed("GET, HEAD"));
        }
        let request = if asset_path == path {
            req()
        } else {
            page::asset_request(&req(), url, asset_path)?
        };
        return asset(request, env).await.map(Reply::Built);
    };
    if !method.is_some_and(|m| found.allow.split(", ").any(|a| a == m.as_ref())) {
        return Err(ApiError::method_not_allowed(found.allow));
    }
    let param = |i: usize| params.get(i).copied().unwrap_or_default();
    // Every arm boxes its handler's future (`http::Boxed`: why).
    let handler: Boxed<'_, Response> = match found.endpoint {
        Endpoint::Signup => Box::pin(users::signup(req(), env)),
        Endpoint::Login => Box::pin(token::login(req(), env)),
        Endpoint::Logout => Box::pin(token::logout(req(), env)),
        Endpoint::Health => Box::pin(async move { Ok(health::healthz(env).await) }),
        Endpoint::Connect => {
            let connect: Boxed<'_, web_sys::Response> =
                Box::pin(ws::connect(&raw, url, env, param(0), request_id));
            return connect.await.map(Reply::Passed);
        }
        Endpoint::CreateRoom => Box::pin(rooms::create(req(), env)),
        Endpoint::Room if method == Some(&Method::Patch) => {
            Box::pin(moderation::settings(req(), env, param(0)))
        }
        Endpoint::Room => Box::pin(rooms::info(req(), env, param(0))),
        Endpoint::RoomMessages => Box::pin(rooms::read(req(), env, param(0), "messages")),
        Endpoint::RoomMembers => Box::pin(rooms::read(req(), env, param(0), "members")),
        Endpoint::RoomStats => Box::pin(rooms::stats(req(), env, param(0))),
        Endpoint::RoomMember => Box::pin(rooms::change_member(req(), env, param(0), param(1))),
        Endpoint::RoomAudit => Box::pin(moderation::audit(req(), env, param(0))),
        Endpoint::Moderator => Box::pin(moderation::moderator(req(), env, param(0), param(1))),
        Endpoint::Kick => Box::pin(moderation::kick(req(), env, param(0), param(1))),
        Endpoint::Ban => Box::pin(moderation::sanction(req(), env, param(0), "bans", param(1))),
        Endpoint::Mute => Box::pin(moderation::sanction(
            req(),
            env,
            param(0),
            "mutes",
            param(1),
        )),
        Endpoint::DeleteAccount => Box::pin(users::delete_me(req(), env)),
        Endpoint::ChangePassword => Box::pin(users::change_password(req(), env)),
        Endpoint::Blocks => Box::pin(dm::list_blocks(req(), env)),
        Endpoint::Block => Box::pin(dm::change_block(req(), env, param(0))),
        Endpoint::OpenDm => Box::pin(dm::open(req(), env, param(0))),
        Endpoint::MyRooms => Box::pin(me::list(req(), env)),
        Endpoint::LeaveRoom => Box::pin(me::leave(req(), env, param(0))),
        Endpoint::Asset => Box::pin(asset(req(), env)),
    };
    handler.await.map(Reply::Built)
}

/// A file of the static assets, or a JSON 404 when there is none (or no assets at all).
async fn asset(req: Request, env: &Env) -> ApiResult<Response> {
    let Ok(assets) = env.assets("ASSETS") else {
        return Err(ApiError::not_found());
    };
    let response = assets.fetch_request(req).await?;
    if response.status_code() == 404 {
        return Err(ApiError::not_found());
    }
    Ok(response)
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
    fn paths_find_their_route_and_parameters() {
        let endpoint = |path| find_route(path).map(|(r, p)| (r.endpoint, p));
        assert_eq!(endpoint("/users/"), Some((Endpoint::Signup, vec![])));
        assert_eq!(endpoint("/users"), Some((Endpoint::Signup, vec![])));
        assert_eq!(endpoint("/rooms/"), Some((Endpoint::CreateRoom, vec![])));
        assert_eq!(
            endpoint("/ws/lobby"),
            Some((Endpoint::Connect, vec!["lobby"]))
        );
        assert_eq!(
            endpoint("/rooms/r/members/bob"),
            Some((Endpoint::RoomMember, vec!["r", "bob"]))
        );
        assert_eq!(
            endpoint("/rooms/r/members"),
            Some((Endpoint::RoomMembers, vec!["r"]))
        );
        for unknown in [
            "/",
            "/app.js",
            "/rooms/r/other",
            "/ws",
            "/ws/a/b",
            "/users/x",
        ] {
            assert!(find_route(unknown).is_none(), "{unknown}");
        }
    }

    #[test]
    fn every_route_is_unique_and_allows_known_methods() {
        for (i, route) in ROUTES.iter().enumerate() {
            assert!(route.path.starts_with('/'), "{}", route.path);
            assert!(
                ROUTES[..i].iter().all(|r| r.path != route.path),
                "{} is listed twice",
                route.path
            );
            for method in route.allow.split(", ") {
                assert!(known_method(method).is_some(), "{}: {method}", route.path);
            }
        }
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
