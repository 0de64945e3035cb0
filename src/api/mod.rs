//! The HTTP surface: a small router that maps method + path to one handler per resource.
//! Anything unmatched is a JSON 404; every handler error becomes a JSON `{"detail"}` response.

mod token;
mod users;
mod ws;

use worker::{Env, Method, Request, Response};

use crate::error::{ApiError, ApiResult};

pub async fn handle(req: Request, env: Env) -> Response {
    match route(req, &env).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn route(req: Request, env: &Env) -> ApiResult<Response> {
    let path = req.path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method();
    match segments.as_slice() {
        // FastAPI serves `/users/`; accept the slash-less spelling too rather than redirect.
        ["users", ""] | ["users"] => match method {
            Method::Post => users::signup(req, env).await,
            _ => Err(ApiError::method_not_allowed("POST")),
        },
        ["token"] => match method {
            Method::Post => token::login(req, env).await,
            _ => Err(ApiError::method_not_allowed("POST")),
        },
        ["ws", room] => match method {
            Method::Get => ws::connect(req, env, room).await,
            _ => Err(ApiError::method_not_allowed("GET")),
        },
        _ => Err(ApiError::not_found()),
    }
}

/// Seconds since the epoch from the runtime clock (chrono's clock panics on wasm32).
pub fn now_secs() -> i64 {
    (worker::Date::now().as_millis() / 1000) as i64
}
