//! `POST /token`: the OAuth2 password flow. Form-encoded `username` and `password` in, a badge
//! (`{"access_token", "token_type": "bearer"}`) out.

use serde::Deserialize;
use worker::{Env, Request, Response};

use crate::auth::password;
use crate::config::{self, Config};
use crate::error::{ApiError, ApiResult};
use crate::http;
use crate::protocol::Username;
use crate::store::Store;

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
    let keys = config::badge_keys(env).map_err(|why| {
        worker::console_error!(
            "{}",
            crate::log::line("error", "config_invalid", &[("problem", &why.to_string())])
        );
        ApiError::new(503, "token service unavailable: server signing key is not configured")
    })?;
    http::require_content_type(&req, "application/x-www-form-urlencoded")?;
    let form = parse_form(&http::read_body(&mut req).await?)?;
    let config = Config::from_env(env);

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

    if password::needs_rehash(&record.password_hash, config.hash_cost) {
        if let Ok(phc) = password::hash(form.password.as_bytes(), config.hash_cost) {
            Store::from_env(env)?.update_password_hash(&record.username, &phc).await?;
        }
    }
    // The stored spelling is canonical: "BOB" logging in as "bob" gets a badge for "bob".
    let username = Username::parse(&record.username).map_err(|e| ApiError::internal(e.0))?;
    let badge = keys.issue(&username, super::now_secs(), config.token_ttl_secs);
    worker::console_log!(
        "{}",
        crate::log::line("info", "login_ok", &[("username", username.as_str())])
    );
    let mut response = http::json(
        200,
        &serde_json::json!({ "access_token": badge.token, "token_type": "bearer" }),
    );
    let headers = response.headers_mut();
    headers.set("Cache-Control", "no-store")?;
    headers.set("Pragma", "no-cache")?;
    Ok(response)
}

fn login_failed(attempted: &str) -> ApiError {
    // Log only a name that is well formed: a password typed into the username box stays out.
    let shown = if Username::parse(attempted).is_ok() { attempted } else { "<invalid>" };
    worker::console_log!(
        "{}",
        crate::log::line("info", "login_failed", &[("username", shown)])
    );
    ApiError::unauthorized(BAD_LOGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_parsing() {
        let f = parse_form(b"username=bob&password=p%40ss+word").ok().unwrap();
        assert_eq!((f.username.as_str(), f.password.as_str()), ("bob", "p@ss word"));
        assert!(parse_form(b"username=bob&password=x&grant_type=password").is_ok());
        for bad in [&b""[..], b"username=bob", b"password=x", b"username=a&password=b&grant_type=code"] {
            assert_eq!(parse_form(bad).err().map(|e| e.status), Some(422), "{bad:?}");
        }
    }
}
