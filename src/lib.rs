//! Clubhouse: secure real-time chat on Cloudflare Workers.
//!
//! Entry points only. The request path is: `api` (router and handlers) → `auth` (badges,
//! passwords) → `store` (D1) or `room` (one Durable Object per room) → `protocol` (wire format).

pub mod admissions;
pub mod api;
pub mod auth;
pub mod burst;
pub mod config;
pub mod error;
pub mod handover;
pub mod http;
pub mod limiter;
pub mod log;
pub mod outbox;
pub mod pace;
pub mod presence;
pub mod protocol;
pub mod ratelimit;
pub mod room;
pub mod room_store;
pub mod sessions;
pub mod shard;
pub mod store;
pub mod timer;

pub use limiter::Limiter;
pub use room::ChatRoom;
pub use sessions::Sessions;

use worker::{event, worker_sys::web_sys, Context, Env, Result};

#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, _ctx: Context) -> Result<web_sys::Response> {
    log::set_level_from_env(&env);
    Ok(api::handle(req, env).await)
}
