//! Accounts: `POST /users/` signs up with a JSON `{"username", "password"}`; with a badge,
//! `POST /users/me/password` changes the password (every other session ends) and
//! `DELETE /users/me` deletes the account (every session ends, the name stays reserved).

use serde::Deserialize;
use worker::{Env, Request, Response};

use super::{closing, guard, token};
use crate::auth::badge::{Badge, LEEWAY_SECS};
use crate::auth::password;
use crate::config::Config;
use crate::http;
use crate::http::{ApiError, ApiResult};
use crate::ledger::Ledger;
use crate::log;
use crate::protocol::{Password, Username};
use crate::store::{Store, UserRecord};
use crate::throttle::{Policy, Throttle};

/// Longest password checked against the stored hash: no account has a longer one (signup's
/// limit is 128 characters, of up to 4 bytes each).
const MAX_PASSWORD_BYTES: usize = 512;

#[derive(Deserialize)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

#[derive(Deserialize)]
struct DeleteConfirmation {
    password: String,
}

/// Reads a JSON object body into `T`; 422 (with `shape` in the message) for anything else, or
/// for a password longer than any account has.
fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    shape: &'static str,
    passwords: impl Fn(&T) -> Vec<&str>,
) -> ApiResult<T> {
    if !crate::protocol::looks_like_object(body) {
        return Err(ApiError::unprocessable(format!(
            "body must be a JSON object {shape}"
        )));
    }
    let parsed: T = serde_json::from_slice(body)
        .map_err(|e| ApiError::unprocessable(format!("body must be JSON {shape} ({e})")))?;
    if passwords(&parsed)
        .iter()
        .any(|p| p.len() > MAX_PASSWORD_BYTES)
    {
        return Err(ApiError::unprocessable("password is too long"));
    }
    Ok(parsed)
}

/// The badge's account, if `password` is its password. Wrong passwords count toward the
/// login limits (per user and per IP), so these routes cannot be used to guess one; a right
/// one gives its attempts back, as a login does.
async fn confirm_password(
    req: &Request,
    env: &Env,
    badge: &Badge,
    password: &str,
) -> ApiResult<UserRecord> {
    let config = Config::from_env(env);
    let user_throttle = Throttle::new(env, token::user_policy(&config), badge.username.as_str());
    let ip_throttle = Throttle::new(env, token::ip_policy(&config), &guard::client_ip(req));
    let (by_user, by_ip) = futures_util::future::join(user_throttle.hit(), ip_throttle.hit()).await;
    by_user.and(by_ip)?;
    let record = Store::from_env(env)?.find_user(&badge.username).await?;
    match record {
        Some(r) if password::verify(password.as_bytes(), &r.password_hash) => {
            let _ =
                futures_util::future::join(user_throttle.release(), ip_throttle.release()).await;
            Ok(r)
        }
        _ => {
            log::info(
                "password_confirmation_failed",
                &[("username", badge.username.as_str())],
            );
            Err(ApiError::new(403, "Incorrect password"))
        }
    }
}

/// `POST /users/me/password` (Bearer) `{"current_password", "new_password"}`: the new
/// password (signup's rules) replaces the old; every other badge and refresh family of the
/// user is revoked and their sockets closed. This badge and its family stay.
pub async fn change_password(mut req: Request, env: &Env) -> ApiResult<Response> {
    let badge = guard::bearer(&req, env).await?;
    http::require_content_type(&req, "application/json")?;
    let change: PasswordChange = parse_json(
        &http::read_body(&mut req).await?,
        "{\"current_password\": string, \"new_password\": string}",
        |c: &PasswordChange| vec![c.current_password.as_str(), c.new_password.as_str()],
    )?;
    let new_password = Password::parse_new(&change.new_password, &badge.username)
        .map_err(|e| ApiError::unprocessable(e.0))?;
    let record = confirm_password(&req, env, &badge, &change.current_password).await?;
    let config = Config::from_env(env);
    let phc = password::hash(new_password.as_bytes(), config.hash_cost)
        .map_err(|e| ApiError::internal(e.0))?;
    Store::from_env(env)?
        .update_password_hash(&record.username, &phc)
        .await?;
    let now_ms = worker::Date::now().as_millis() as i64;
    let keep_until = now_ms.div_euclid(1000) + config.token_ttl_secs + LEEWAY_SECS;
    let sockets = Ledger::for_user(env, badge.username.as_str())?
        .revoke_others(&badge.jti, now_ms, keep_until)
        .await?;
    closing::close_badges(env, &sockets).await;
    log::info("password_changed", &[("username", badge.username.as_str())]);
    Ok(http::json(
        200,
        &serde_json::json!({ "detail": "password changed; other sessions were logged out" }),
    ))
}

/// `DELETE /users/me` (Bearer) `{"password"}`: the account can no longer log in, every badge
/// and refresh token of it is refused, its sockets close and its memberships go. The name
/// stays reserved, and its messages stay, under that name.
pub async fn delete_me(mut req: Request, env: &Env) -> ApiResult<Response> {
    let badge = guard::bearer(&req, env).await?;
    http::require_content_type(&req, "application/json")?;
    let confirmation: DeleteConfirmation = parse_json(
        &http::read_body(&mut req).await?,
        "{\"password\": string}",
        |c: &DeleteConfirmation| vec![c.password.as_str()],
    )?;
    let record = confirm_password(&req, env, &badge, &confirmation.password).await?;
    // D1 first: from here no login succeeds; then the ledger refuses every badge, including
    // one a login that passed its password check just before could still be signing.
    Store::from_env(env)?
        .delete_user(&record.username, worker::Date::now().as_millis() as f64)
        .await?;
    let rooms = Ledger::for_user(env, badge.username.as_str())?
        .close_account()
        .await?;
    closing::close_user(env, badge.username.as_str(), &rooms).await;
    log::info("account_deleted", &[("username", badge.username.as_str())]);
    let mut response = http::json(200, &serde_json::json!({ "detail": "account deleted" }));
    response
        .headers_mut()
        .append("Set-Cookie", &token::clear_cookie(&req))?;
    Ok(response)
}

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
