//! The smallest workers-rs Worker: every request gets a 404. Its cold start is the floor for any Worker built with
//! `worker` 0.8.7 (bench/floor-rs/Cargo.toml).

use worker::{event, Context, Env, Request, Response, Result};

#[event(fetch)]
async fn fetch(_req: Request, _env: Env, _ctx: Context) -> Result<Response> {
    Response::error("Not Found", 404)
}
