//! Clubhouse: secure real-time chat on Cloudflare Workers.
//!
//! Entry points only. A request goes `api` (router and handlers) → `auth` (badges, passwords)
//! → `store` and `directory` (D1), the session ledger (`ledger`), the attempt throttle (`throttle`) or a room
//! (`room`: one Durable Object per room, which holds its sockets and broadcasts) → `protocol`
//! (the wire format). `docs/architecture.md` follows a request and a message through them.

pub mod api;
pub mod auth;
pub mod config;
pub mod defer;
pub mod directory;
pub mod http;
pub mod ledger;
pub mod log;
pub mod protocol;
pub mod room;
pub mod shard;
pub mod store;
pub mod throttle;

pub use ledger::Sessions;
pub use room::ChatRoom;
pub use throttle::Limiter;

use worker::{event, worker_sys::web_sys, Context, Env, Result};

#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, _ctx: Context) -> Result<web_sys::Response> {
    config::set_log_level(&env);
    Ok(api::handle(req, env).await)
}
