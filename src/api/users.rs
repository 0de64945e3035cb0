//! `POST /users/`: sign up with a JSON `{"username", "password"}`.

use serde::Deserialize;
use worker::{Env, Request, Response};

use super::guard;
use crate::auth::password;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::http;
use crate::limiter::{Policy, Throttle};
use crate::protocol::{Password, Username};
use crate::store::Store;

#[derive(Deserialize)]
struct SignupBody {
    username: String,
    password: String,
}

pub async fn signup(mut req: Request, env: &Env) -> ApiResult<Response> {
    // A JSON API: refuse form and text bodies (which browsers send cross-site without a preflight).
    if req.headers().has("Content-Type")? {
        http::require_content_type(&req, "application/json")?;
    }
    let body = http::read_body(&mut req).await?;
    let parsed: SignupBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::unprocessable(format!(
            "body must be JSON {{\"username\": string, \"password\": string}} ({e})"
        ))
    })?;
    let username = Username::parse(&parsed.username).map_err(|e| ApiError::unprocessable(e.0))?;
    let password = Password::parse_new(&parsed.password, &username)
        .map_err(|e| ApiError::unprocessable(e.0))?;

    let config = Config::from_env(env);
    let per_ip = Policy {
        kind: "signup-ip",
        limit: config.signups_per_ip,
        window_secs: config.signup_window_secs,
    };
    Throttle::new(env, per_ip, &guard::client_ip(&req))
        .hit()
        .await?;
    let phc = password::hash(password.as_bytes(), config.hash_cost)
        .map_err(|e| ApiError::internal(e.0))?;
    let store = Store::from_env(env)?;
    if !store
        .create_user(&username, &phc, worker::Date::now().as_millis() as f64)
        .await?
    {
        return Err(ApiError::new(409, "Username already registered"));
    }
    crate::log::event("info", "signup", &[("username", username.as_str())]);
    Ok(http::json(
        201,
        &serde_json::json!({ "username": username }),
    ))
}
