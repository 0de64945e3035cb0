//! `POST /token`: the OAuth2 password flow. Form-encoded `username` and `password` in, a badge
//! (`{"access_token", "token_type": "bearer"}`) out.

use serde::Deserialize;
use worker::{Env, Request, Response};

use super::guard;
use crate::auth::badge::LEEWAY_SECS;
use crate::auth::password;
use crate::config::Config;
use crate::http;
use crate::http::{ApiError, ApiResult};
use crate::ledger::Ledger;
use crate::log;
use crate::protocol::{RoomId, Username};
use crate::room::client::RoomStub;
use crate::store::Store;
use crate::throttle::{Policy, Throttle};

/// One answer for a wrong password and an unknown user, so neither tells which names exist.
const BAD_LOGIN: &str = "Incorrect username or password";

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    grant_type: Option<String>,
}

/// Parses the form body; pure so the parser is unit-tested and fuzzed natively.
fn parse_form(body: &[u8]) -> Result<LoginForm, ApiError> {
    let form: LoginForm = serde_urlencoded::from_bytes(body).map_err(|e| {
        ApiError::unprocessable(format!(
            "body must be form-encoded username=...&password=... ({e})"
        ))
    })?;
    if let Some(grant) = &form.grant_type {
        if grant != "password" {
            return Err(ApiError::unprocessable("grant_type must be \"password\""));
        }
    }
    Ok(form)
}

pub async fn login(mut req: Request, env: &Env) -> ApiResult<Response> {
    let keys = guard::badge_keys(env)?;
    http::require_content_type(&req, "application/x-www-form-urlencoded")?;
    let form = parse_form(&http::read_body(&mut req).await?)?;
    let config = Config::from_env(env);

    // Brute-force throttling: failed attempts per username and per client IP. Checked before
    // any password work, and the 429 is the same whether or not the user exists.
    let window = config.login_window_secs;
    let per_user = Policy {
        kind: "login-user",
        limit: config.login_failures_per_user,
        window_secs: window,
    };
    let per_ip = Policy {
        kind: "login-ip",
        limit: config.login_failures_per_ip,
        window_secs: window,
    };
    let ip = guard::client_ip(&req);
    // Names that cannot exist share one bucket (and one log name).
    let user_throttle = Throttle::new(env, per_user, safe_name(&form.username));
    let ip_throttle = Throttle::new(env, per_ip, &ip);
    // Each attempt reserves a slot in both windows before any password work, atomically in the
    // limiter, so parallel guesses cannot all slip in before the first failure is counted. A
    // successful login gives its slots back: only failures use up the allowance.
    let (by_user, by_ip) = futures_util::future::join(user_throttle.hit(), ip_throttle.hit()).await;
    if let Err(refusal) = by_user.and(by_ip) {
        log::warn(
            "login_throttled",
            &[("username", safe_name(&form.username))],
        );
        return Err(refusal);
    }

    // A name that cannot exist is treated like an unknown one: same work, same answer.
    let record = match Username::parse(&form.username) {
        Ok(name) => Store::from_env(env)?.find_user(&name).await?,
        Err(_) => None,
    };
    let record = match record {
        Some(r) if password::verify(form.password.as_bytes(), &r.password_hash) => r,
        Some(_) => return Err(login_failed(&form.username)),
        None => {
            password::verify_dummy(form.password.as_bytes(), config.hash_cost);
            return Err(login_failed(&form.username));
        }
    };

    // Meanwhile, the user's ledger shard is started if idle: the sockets a login is for come
    // right after it, and each must be admitted by that shard (`sessions.rs`).
    let warm_ledger = async {
        if let Err(e) = async { Ledger::for_user(env, &record.username)?.warm().await }.await {
            log::warn("ledger_warm_failed", &[("error", &e.detail)]);
        }
    };
    let _ =
        futures_util::future::join3(user_throttle.release(), ip_throttle.release(), warm_ledger)
            .await;
    if password::needs_rehash(&record.password_hash, config.hash_cost) {
        if let Ok(phc) = password::hash(form.password.as_bytes(), config.hash_cost) {
            Store::from_env(env)?
                .update_password_hash(&record.username, &phc)
                .await?;
        }
    }
    // The stored spelling is canonical: "BOB" logging in as "bob" gets a badge for "bob".
    let username = Username::parse(&record.username).map_err(|e| ApiError::internal(e.0))?;
    let badge = keys.issue(
        &username,
        worker::Date::now().as_millis() as i64,
        config.token_ttl_secs,
    );
    log::info("login_ok", &[("username", username.as_str())]);
    let mut response = http::json(
        200,
        &serde_json::json!({ "access_token": badge.token, "token_type": "bearer" }),
    );
    let headers = response.headers_mut();
    headers.set("Cache-Control", "no-store")?;
    headers.set("Pragma", "no-cache")?;
    Ok(response)
}

/// A name fit for the log: a password typed into the username box stays out.
fn safe_name(attempted: &str) -> &str {
    if Username::parse(attempted).is_ok() {
        attempted
    } else {
        "<invalid>"
    }
}

fn login_failed(attempted: &str) -> ApiError {
    log::info("login_failed", &[("username", safe_name(attempted))]);
    ApiError::unauthorized(BAD_LOGIN)
}

/// `POST /logout` (Bearer): revokes this badge, or with `?all=true` every badge of the user
/// issued until now, and closes the sockets opened with them.
pub async fn logout(req: Request, env: &Env) -> ApiResult<Response> {
    let badge = guard::bearer(&req, env).await?;
    let everywhere = match http::query_param(&req.url()?, "all") {
        None => false,
        Some(all) => parse_bool(&all)
            .ok_or_else(|| ApiError::unprocessable("all must be a boolean: true, false, 1 or 0"))?,
    };
    let now_ms = worker::Date::now().as_millis() as i64;
    let now = now_ms.div_euclid(1000);
    let ledger = Ledger::for_user(env, badge.username.as_str())?;
    let rooms = if everywhere {
        // Badges live at most TOKEN_TTL_SECS, so the stamp need not outlive that.
        let ttl = Config::from_env(env).token_ttl_secs + LEEWAY_SECS;
        ledger.revoke_all(now_ms, now + ttl).await?
    } else {
        ledger
            .revoke(&badge.jti, badge.expires_at + LEEWAY_SECS)
            .await?
    };
    let badge = &badge;
    let closes = rooms
        .iter()
        .filter_map(|r| RoomId::parse(r).ok())
        .map(|room| async move {
            let stub = RoomStub::new(env, &room);
            if everywhere {
                stub.revoke_user(badge.username.as_str()).await
            } else {
                stub.revoke_badge(&badge.jti).await
            }
        });
    for result in futures_util::future::join_all(closes).await {
        if let Err(e) = result {
            log::error("error", &[("cause", &e.detail)]);
        }
    }
    log::info(
        "logout",
        &[
            ("username", badge.username.as_str()),
            ("scope", if everywhere { "all" } else { "token" }),
        ],
    );
    Ok(http::json(
        200,
        &serde_json::json!({ "detail": "logged out", "all": everywhere }),
    ))
}

/// A query flag: `true`/`false` in any case, or `1`/`0`; anything else is not a boolean, so a
/// typo can never quietly mean "no" (for `?all=`, that would leave other sessions alive).
fn parse_bool(raw: &str) -> Option<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_booleans() {
        for yes in ["true", "True", "TRUE", "1"] {
            assert_eq!(parse_bool(yes), Some(true), "{yes}");
        }
        for no in ["false", "False", "0"] {
            assert_eq!(parse_bool(no), Some(false), "{no}");
        }
        for neither in ["", "yes", "no", "on", "2", "tru", " true"] {
            assert_eq!(parse_bool(neither), None, "{neither:?}");
        }
    }

    proptest! {
        /// Any bytes: a parsed form or a clean 422, never a panic.
        #[test]
        fn any_form_body(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Err(e) = parse_form(&body) {
                prop_assert_eq!(e.status, 422);
            }
        }

        #[test]
        fn encoded_forms_round_trip(username in ".{0,40}", password in ".{0,140}") {
            let body = serde_urlencoded::to_string([("username", &username), ("password", &password)]).unwrap();
            let form = parse_form(body.as_bytes()).ok().unwrap();
            prop_assert_eq!(form.username, username);
            prop_assert_eq!(form.password, password);
        }
    }

    #[test]
    fn form_parsing() {
        let f = parse_form(b"username=bob&password=p%40ss+word")
            .ok()
            .unwrap();
        assert_eq!(
            (f.username.as_str(), f.password.as_str()),
            ("bob", "p@ss word")
        );
        assert!(parse_form(b"username=bob&password=x&grant_type=password").is_ok());
        for bad in [
            &b""[..],
            b"username=bob",
            b"password=x",
            b"username=a&password=b&grant_type=code",
        ] {
            assert_eq!(
                parse_form(bad).err().map(|e| e.status),
                Some(422),
                "{bad:?}"
            );
        }
    }
}
