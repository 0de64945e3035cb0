//! `POST /users/`: sign up with a JSON `{"username", "password"}`.

use serde::Deserialize;
use worker::{Env, Request, Response};

use super::guard;
use crate::auth::password;
use crate::config::Config;
use crate::http;
use crate::http::{ApiError, ApiResult};
use crate::log;
use crate::protocol::{Password, Username};
use crate::store::Store;
use crate::throttle::{Policy, Throttle};

#[derive(Deserialize)]
struct SignupBody {
    username: String,
    password: String,
}

/// Parses and validates a signup body; pure so it is unit-tested and fuzzed natively.
fn parse_signup(body: &[u8]) -> ApiResult<(Username, Password)> {
    if !crate::protocol::looks_like_object(body) {
        return Err(ApiError::unprocessable(
            "body must be a JSON object {\"username\": string, \"password\": string}",
        ));
    }
    let parsed: SignupBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::unprocessable(format!(
            "body must be JSON {{\"username\": string, \"password\": string}} ({e})"
        ))
    })?;
    let username = Username::parse(&parsed.username).map_err(|e| ApiError::unprocessable(e.0))?;
    let password = Password::parse_new(&parsed.password, &username)
        .map_err(|e| ApiError::unprocessable(e.0))?;
    Ok((username, password))
}

pub async fn signup(mut req: Request, env: &Env) -> ApiResult<Response> {
    // A JSON API: refuse form and text bodies (which browsers send cross-site without a preflight).
    if req.headers().has("Content-Type")? {
        http::require_content_type(&req, "application/json")?;
    }
    let (username, password) = parse_signup(&http::read_body(&mut req).await?)?;

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
    log::info("signup", &[("username", username.as_str())]);
    Ok(http::json(
        201,
        &serde_json::json!({ "username": username }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn signup_bodies() {
        assert!(parse_signup(br#"{"username":"alice","password":"wonderland"}"#).is_ok());
        for bad in [
            &b""[..],
            b"{}",
            b"[]",
            b"null",
            br#"{"username":"al","password":"wonderland"}"#,
            br#"{"username":"alice","password":"short"}"#,
            br#"{"username":"alice","password":"ALICE"}"#,
            br#"{"username":5,"password":"wonderland"}"#,
        ] {
            assert_eq!(
                parse_signup(bad).err().map(|e| e.status),
                Some(422),
                "{bad:?}"
            );
        }
    }

    proptest! {
        /// Any bytes at all: a clean 422 or a valid account, never a panic.
        #[test]
        fn any_body_is_refused_cleanly_or_valid(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            match parse_signup(&body) {
                Ok((u, _)) => prop_assert!(Username::parse(u.as_str()).is_ok()),
                Err(e) => prop_assert_eq!(e.status, 422),
            }
        }

        #[test]
        fn json_shaped_bodies(username in ".{0,40}", password in ".{0,140}") {
            let body = serde_json::json!({"username": username, "password": password}).to_string();
            if let Err(e) = parse_signup(body.as_bytes()) {
                prop_assert_eq!(e.status, 422);
                prop_assert!(!e.detail.is_empty());
            }
        }
    }
}
