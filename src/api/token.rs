//! `POST /token`: the OAuth2 token endpoint. The password grant (form-encoded `username` and
//! `password`) gives a badge and a refresh token; the refresh grant (RFC 6749 §6) trades a
//! refresh token for a new badge and a new refresh token. `POST /logout` revokes. A user holds
//! at most `MAX_LOGINS_PER_USER` live logins: a password login beyond ends the oldest one in
//! the ledger (`ledger/families.rs`), and this closes its sockets as a logout does.
//!
//! Browsers keep the refresh token in a cookie scripts cannot read: a request with the
//! `X-Refresh-Cookie: 1` header gets it as `HttpOnly; SameSite=Strict; Path=/token` (and
//! `Secure` over https) instead of in the JSON, and may refresh with the cookie alone. The
//! header is one a cross-site form cannot send, so another site can neither refresh with the
//! cookie nor plant one.

use serde::Deserialize;
use worker::{Env, Request, Response};

use super::{closing, guard};
use crate::auth::badge::{random_id, LEEWAY_SECS};
use crate::auth::{password, refresh};
use crate::config::Config;
use crate::http;
use crate::http::{ApiError, ApiResult};
use crate::ledger::{FamilyStart, Ledger, Refreshed};
use crate::log;
use crate::protocol::Username;
use crate::store::Store;
use crate::throttle::{Policy, Throttle};

/// One answer for a wrong password and an unknown user, so neither tells which names exist.
const BAD_LOGIN: &str = "Incorrect username or password";
/// The cookie holding a browser's refresh token.
const REFRESH_COOKIE: &str = "clubhouse_refresh";
/// The header that asks for the refresh token as a cookie, and that must come with a refresh
/// by cookie.
const COOKIE_HEADER: &str = "X-Refresh-Cookie";

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
}

/// What the form asks for.
#[derive(Debug, PartialEq)]
enum Grant {
    Password {
        username: String,
        password: String,
    },
    /// With the token from the form, or `None` for the cookie.
    Refresh {
        token: Option<String>,
    },
}

/// An OAuth2 error (RFC 6749 §5.2): `{"detail", "error"}`, the code clients branch on.
fn oauth_error(code: &'static str, detail: &'static str) -> Response {
    let mut response = http::json(400, &serde_json::json!({ "detail": detail, "error": code }));
    let _ = response.headers_mut().set("Cache-Control", "no-store");
    response
}

/// Why a form was refused: not a form (a 422, as for the other routes), or a grant this
/// endpoint does not give (OAuth2's `unsupported_grant_type`).
#[derive(Debug, PartialEq)]
enum FormError {
    NotAForm(String),
    UnsupportedGrant,
}

impl FormError {
    fn into_response(self) -> Response {
        match self {
            FormError::NotAForm(why) => ApiError::unprocessable(format!(
                "body must be form-encoded username=...&password=... ({why})"
            ))
            .into_response(),
            FormError::UnsupportedGrant => oauth_error(
                "unsupported_grant_type",
                "grant_type must be \"password\" or \"refresh_token\"",
            ),
        }
    }
}

/// Parses the form body; pure so the parser is unit-tested and fuzzed natively.
fn parse_form(body: &[u8]) -> Result<Grant, FormError> {
    let form: TokenForm =
        serde_urlencoded::from_bytes(body).map_err(|e| FormError::NotAForm(e.to_string()))?;
    match form.grant_type.as_deref() {
        None | Some("password") => match (form.username, form.password) {
            (Some(username), Some(password)) => Ok(Grant::Password { username, password }),
            _ => Err(FormError::NotAForm("missing field".into())),
        },
        Some("refresh_token") => Ok(Grant::Refresh {
            token: form.refresh_token,
        }),
        Some(_) => Err(FormError::UnsupportedGrant),
    }
}

pub async fn login(mut req: Request, env: &Env) -> ApiResult<Response> {
    let keys = guard::badge_keys(env)?;
    http::require_content_type(&req, "application/x-www-form-urlencoded")?;
    let grant = match parse_form(&http::read_body(&mut req).await?) {
        Ok(grant) => grant,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    let wants_cookie = wants_cookie(&req)?;
    let (username, password) = match grant {
        Grant::Password { username, password } => (username, password),
        Grant::Refresh { token } => return refresh_grant(&req, env, token, wants_cookie).await,
    };
    let config = Config::from_env(env);

    // Brute-force throttling: failed attempts per username and per client IP. Checked before
    // any password work, and the 429 is the same whether or not the user exists.
    let user_throttle = Throttle::new(env, user_policy(&config), safe_name(&username));
    let ip_throttle = Throttle::new(env, ip_policy(&config), &guard::client_ip(&req));
    // Each attempt reserves a slot in both windows before any password work, atomically in the
    // limiter, so parallel guesses cannot all slip in before the first failure is counted. A
    // successful login gives its slots back: only failures use up the allowance.
    let (by_user, by_ip) = futures_util::future::join(user_throttle.hit(), ip_throttle.hit()).await;
    if let Err(refusal) = by_user.and(by_ip) {
        log::warn("login_throttled", &[("username", safe_name(&username))]);
        return Err(refusal);
    }

    // A name that cannot exist is treated like an unknown one: same work, same answer.
    let record = match Username::parse(&username) {
        Ok(name) => Store::from_env(env)?.find_user(&name).await?,
        Err(_) => None,
    };
    let record = match record {
        Some(r) if password::verify(password.as_bytes(), &r.password_hash) => r,
        Some(_) => return Err(login_failed(&username)),
        None => {
            password::verify_dummy(password.as_bytes(), config.hash_cost);
            return Err(login_failed(&username));
        }
    };
    // The stored spelling is canonical: "BOB" logging in as "bob" gets a badge for "bob".
    let name = Username::parse(&record.username).map_err(|e| ApiError::internal(e.0))?;

    // The family's first badge and refresh token are recorded in the user's ledger shard
    // before the badge is signed. This also starts the shard if idle: the sockets a login is
    // for come right after it, and each must be admitted by that shard.
    let now_ms = worker::Date::now().as_millis() as i64;
    let now = now_ms.div_euclid(1000);
    let (jti, family, token) = (random_id(), random_id(), refresh::issue(&name));
    let ledger = Ledger::for_user(env, name.as_str())?;
    let start = FamilyStart {
        name: name.as_str(),
        family: &family,
        token_hash: &token.hash,
        jti: &jti,
        expires_at: now + config.refresh_ttl_secs,
        badge_keep_until: now + config.token_ttl_secs + LEEWAY_SECS,
    };
    let (started, _, _) = futures_util::future::join3(
        ledger.start_family(&start),
        user_throttle.release(),
        ip_throttle.release(),
    )
    .await;
    let Some(started) = started? else {
        // The account was deleted between the password check and now.
        return Err(login_failed(&username));
    };
    if started.ended > 0 {
        // The user holds MAX_LOGINS_PER_USER live logins: the oldest ended, as a logout
        // would end it, so this one works.
        log::event_with_numbers(
            log::Level::Warn,
            "login_evicted_oldest",
            &[("username", name.as_str())],
            &[
                ("ended", started.ended as i64),
                ("sockets_closed", started.sockets.len() as i64),
            ],
        );
        closing::close_badges(env, &started.sockets).await;
    }
    if password::needs_rehash(&record.password_hash, config.hash_cost) {
        if let Ok(phc) = password::hash(password.as_bytes(), config.hash_cost) {
            Store::from_env(env)?
                .update_password_hash(&record.username, &phc)
                .await?;
        }
    }
    let refresh_expires_in = start.expires_at - now;
    let badge = keys.issue_as(&name, jti, now_ms, config.token_ttl_secs);
    log::info("login_ok", &[("username", name.as_str())]);
    token_response(
        &req,
        &badge.token,
        &token.token,
        config.token_ttl_secs,
        refresh_expires_in,
        wants_cookie,
    )
}

/// `grant_type=refresh_token`: the presented token (form, or cookie with the header) is
/// consumed and replaced; a token consumed before revokes its family and closes its sockets; a
/// family holding `MAX_BADGES_PER_LOGIN` unexpired badges is 429 + `Retry-After`, the token
/// left as it was (and the cookie kept).
async fn refresh_grant(
    req: &Request,
    env: &Env,
    from_form: Option<String>,
    wants_cookie: bool,
) -> ApiResult<Response> {
    let keys = guard::badge_keys(env)?;
    let cookie = cookie_value(req, REFRESH_COOKIE)?;
    let (presented, by_cookie) = match (from_form, cookie) {
        (Some(token), _) => (token, false),
        (None, Some(_)) if !wants_cookie => {
            return Ok(oauth_error(
                "invalid_request",
                "a refresh by cookie needs the X-Refresh-Cookie: 1 header",
            ))
        }
        (None, Some(token)) => (token, true),
        (None, None) => {
            return Ok(oauth_error(
                "invalid_request",
                "refresh_token is required (or the refresh cookie)",
            ))
        }
    };
    let config = Config::from_env(env);
    // Failed refreshes count toward the client IP's login limit, like failed passwords.
    let ip_throttle = Throttle::new(env, ip_policy(&config), &guard::client_ip(req));
    ip_throttle.hit().await?;
    let invalid = || {
        let mut refusal = oauth_error(
            "invalid_grant",
            "refresh token is invalid, expired or revoked",
        );
        if by_cookie {
            let _ = refusal
                .headers_mut()
                .append("Set-Cookie", &clear_cookie(req));
        }
        Ok(refusal)
    };
    let Some(presented) = refresh::parse(&presented) else {
        log::info("refresh_refused", &[("reason", "malformed")]);
        return invalid();
    };
    let now_ms = worker::Date::now().as_millis() as i64;
    let now = now_ms.div_euclid(1000);
    let (jti, next_token) = (random_id(), refresh::issue(&presented.username));
    let ledger = Ledger::for_user(env, presented.username.as_str())?;
    let badge_keep_until = now + config.token_ttl_secs + LEEWAY_SECS;
    let outcome = ledger
        .rotate(&presented.hash, &next_token.hash, &jti, badge_keep_until)
        .await?;
    let (name, expires_at) = match outcome {
        Refreshed::Rotated { name, expires_at } => (name, expires_at),
        Refreshed::Reused { sockets } => {
            log::warn(
                "refresh_reused",
                &[("username", presented.username.as_str())],
            );
            closing::close_badges(env, &sockets).await;
            return invalid();
        }
        Refreshed::Throttled { retry_after } => {
            // The token was genuine, so the attempt is not a failure for the IP's limit; it
            // stays valid for the retry.
            let _ = ip_throttle.release().await;
            log::warn(
                "refresh_throttled",
                &[("username", presented.username.as_str())],
            );
            return Err(ApiError::new(
                429,
                "too many refreshes for this login; try again after Retry-After seconds",
            )
            .with_header("Retry-After", retry_after.max(1).to_string()));
        }
        Refreshed::Invalid => {
            log::info(
                "refresh_refused",
                &[
                    ("reason", "unknown, expired or revoked"),
                    ("username", presented.username.as_str()),
                ],
            );
            return invalid();
        }
    };
    let _ = ip_throttle.release().await;
    let name = Username::parse(&name).map_err(|e| ApiError::internal(e.0))?;
    let badge = keys.issue_as(&name, jti, now_ms, config.token_ttl_secs);
    log::info("refresh_ok", &[("username", name.as_str())]);
    token_response(
        req,
        &badge.token,
        &next_token.token,
        config.token_ttl_secs,
        expires_at - now,
        wants_cookie,
    )
}

pub(super) fn user_policy(config: &Config) -> Policy {
    Policy {
        kind: "login-user",
        limit: config.login_failures_per_user,
        window_secs: config.login_window_secs,
    }
}

pub(super) fn ip_policy(config: &Config) -> Policy {
    Policy {
        kind: "login-ip",
        limit: config.login_failures_per_ip,
        window_secs: config.login_window_secs,
    }
}

/// The answer to a grant: the badge, and the refresh token in the JSON or, for a browser that
/// asked, in the cookie only.
fn token_response(
    req: &Request,
    badge: &str,
    refresh_token: &str,
    expires_in: i64,
    refresh_expires_in: i64,
    as_cookie: bool,
) -> ApiResult<Response> {
    let mut body = serde_json::json!({
        "access_token": badge,
        "token_type": "bearer",
        "expires_in": expires_in,
    });
    if !as_cookie {
        body["refresh_token"] = refresh_token.into();
    }
    let mut response = http::json(200, &body);
    let headers = response.headers_mut();
    headers.set("Cache-Control", "no-store")?;
    headers.set("Pragma", "no-cache")?;
    if as_cookie {
        headers.append(
            "Set-Cookie",
            &refresh_cookie(refresh_token, refresh_expires_in.max(0), is_https(req)?),
        )?;
    }
    Ok(response)
}

/// The `Set-Cookie` value for a browser's refresh token: scripts cannot read it, no other site
/// sends it, and only `/token` receives it.
fn refresh_cookie(token: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{REFRESH_COOKIE}={token}; Max-Age={max_age}; Path=/token; HttpOnly; SameSite=Strict{secure}")
}

/// The `Set-Cookie` value that removes the refresh cookie.
pub fn clear_cookie(req: &Request) -> String {
    refresh_cookie("", 0, is_https(req).unwrap_or(false))
}

fn is_https(req: &Request) -> ApiResult<bool> {
    Ok(http::is_https_url(&req.inner().url()))
}

/// Whether the request carries `X-Refresh-Cookie: 1`.
fn wants_cookie(req: &Request) -> ApiResult<bool> {
    Ok(req.headers().get(COOKIE_HEADER)?.as_deref() == Some("1"))
}

/// The value of cookie `name` in the request's `Cookie` header.
fn cookie_value(req: &Request, name: &str) -> ApiResult<Option<String>> {
    let header = req.headers().get("Cookie")?.unwrap_or_default();
    Ok(find_cookie(&header, name))
}

/// Pure: the value of cookie `name` in a `Cookie` header (the first, if repeated).
fn find_cookie(header: &str, name: &str) -> Option<String> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name)
            .then(|| value.trim().to_owned())
            .filter(|v| !v.is_empty())
    })
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

/// `POST /logout` (Bearer): revokes this badge and its refresh family, or with `?all=true`
/// every badge and refresh family of the user issued until now, and closes the sockets opened
/// with them. Also clears a browser's refresh cookie.
pub async fn logout(req: Request, env: &Env) -> ApiResult<Response> {
    // A browser whose badge is already refused still gets its cookie cleared.
    let badge = guard::bearer(&req, env)
        .await
        .map_err(|refusal| refusal.with_header("Set-Cookie", clear_cookie(&req)))?;
    let everywhere = match http::raw_query_param(&req.inner().url(), "all") {
        None => false,
        Some(all) => parse_bool(&all)
            .ok_or_else(|| ApiError::unprocessable("all must be a boolean: true, false, 1 or 0"))?,
    };
    let now_ms = worker::Date::now().as_millis() as i64;
    let now = now_ms.div_euclid(1000);
    let ledger = Ledger::for_user(env, badge.username.as_str())?;
    if everywhere {
        // Badges live at most TOKEN_TTL_SECS, so the stamp need not outlive that.
        let ttl = Config::from_env(env).token_ttl_secs + LEEWAY_SECS;
        let rooms = ledger.revoke_all(now_ms, now + ttl).await?;
        closing::close_user(env, badge.username.as_str(), &rooms).await;
    } else {
        let sockets = ledger
            .revoke(&badge.jti, badge.expires_at + LEEWAY_SECS)
            .await?;
        closing::close_badges(env, &sockets).await;
    }
    log::info(
        "logout",
        &[
            ("username", badge.username.as_str()),
            ("scope", if everywhere { "all" } else { "token" }),
        ],
    );
    let mut response = http::json(
        200,
        &serde_json::json!({ "detail": "logged out", "all": everywhere }),
    );
    response
        .headers_mut()
        .append("Set-Cookie", &clear_cookie(&req))?;
    Ok(response)
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
        /// Any bytes: a parsed form or a clean refusal, never a panic.
        #[test]
        fn any_form_body(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_form(&body);
        }

        #[test]
        fn encoded_forms_round_trip(username in ".{0,40}", password in ".{0,140}") {
            let body = serde_urlencoded::to_string([("username", &username), ("password", &password)]).unwrap();
            prop_assert_eq!(parse_form(body.as_bytes()), Ok(Grant::Password { username, password }));
        }
    }

    #[test]
    fn form_parsing() {
        assert_eq!(
            parse_form(b"username=bob&password=p%40ss+word"),
            Ok(Grant::Password {
                username: "bob".into(),
                password: "p@ss word".into()
            })
        );
        assert!(parse_form(b"username=bob&password=x&grant_type=password").is_ok());
        assert_eq!(
            parse_form(b"grant_type=refresh_token&refresh_token=abc"),
            Ok(Grant::Refresh {
                token: Some("abc".into())
            })
        );
        assert_eq!(
            parse_form(b"grant_type=refresh_token"),
            Ok(Grant::Refresh { token: None })
        );
        for bad in [
            &b""[..],
            b"username=bob",
            b"password=x",
            b"grant_type=password",
        ] {
            assert!(
                matches!(parse_form(bad), Err(FormError::NotAForm(_))),
                "{bad:?}"
            );
        }
        for unsupported in [
            &b"username=a&password=b&grant_type=code"[..],
            b"grant_type=client_credentials",
            b"grant_type=",
        ] {
            assert_eq!(
                parse_form(unsupported),
                Err(FormError::UnsupportedGrant),
                "{unsupported:?}"
            );
        }
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let header = "a=1; clubhouse_refresh=tok.en; clubhouse_refreshx=no";
        assert_eq!(
            find_cookie(header, "clubhouse_refresh").as_deref(),
            Some("tok.en")
        );
        assert_eq!(find_cookie("clubhouse_refresh=", "clubhouse_refresh"), None);
        assert_eq!(find_cookie("", "clubhouse_refresh"), None);
        assert_eq!(
            find_cookie("xclubhouse_refresh=1", "clubhouse_refresh"),
            None
        );
    }

    #[test]
    fn the_refresh_cookie_is_out_of_scripts_reach_and_sent_to_token_only() {
        let cookie = refresh_cookie("t", 60, true);
        for part in [
            "clubhouse_refresh=t",
            "Max-Age=60",
            "Path=/token",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
        ] {
            assert!(cookie.split("; ").any(|p| p == part), "{part} in {cookie}");
        }
        assert!(!refresh_cookie("t", 60, false).contains("Secure"));
    }
}
