//! The authenticate phase: sign up the run's users, get a token for each (the sockets' badges), both timed, and
//! the optional login burst (timed, with the server's CPU per login).

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};

use crate::net::{self, Login};
use crate::report::{lat_summary, num};
use crate::{run_pool, Ctx};

/// The run's users and what signing them up and logging them in gave.
pub struct Accounts {
    pub names: Vec<String>,
    pub tokens: Vec<Option<String>>,
    /// The users that got a token: sockets and the login burst take them round-robin.
    pub usable: Vec<usize>,
    pub signup: HttpOutcome,
    pub token: HttpOutcome,
}

/// One request as counted: its status, its time (ms) and whether it did what was asked; or the transport error.
type Counted = Result<(u16, f64, bool), String>;

/// Outcomes of one kind of request: latencies of the successful ones, counts, every status seen.
#[derive(Default)]
pub struct HttpOutcome {
    lat_ms: Vec<f64>,
    ok: usize,
    fail: usize,
    statuses: BTreeMap<u16, usize>,
    first_error: Option<String>,
}

impl HttpOutcome {
    /// Counts one request; only the latencies of those that did what was asked are kept.
    fn count(&mut self, r: Counted) {
        match r {
            Ok((status, ms, good)) => {
                *self.statuses.entry(status).or_default() += 1;
                if good {
                    self.ok += 1;
                    self.lat_ms.push(ms);
                } else {
                    self.fail += 1;
                }
            }
            Err(e) => {
                self.fail += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    pub fn to_json(&self) -> Value {
        let mut j = lat_summary(self.lat_ms.clone());
        j["ok"] = json!(self.ok);
        j["fail"] = json!(self.fail);
        j["statuses"] = json!(self
            .statuses
            .iter()
            .map(|(k, v)| (k.to_string(), json!(*v)))
            .collect::<serde_json::Map<_, _>>());
        j["first_error"] = json!(self.first_error);
        j
    }
}

/// Signs up `ctx.users` users, then logs each in once for its token.
pub async fn authenticate(ctx: &Ctx) -> Accounts {
    let n = ctx.users;
    ctx.progress(&format!("signing up {n} users (prefix {})", ctx.prefix));
    let names: Vec<String> = (0..n).map(|i| format!("{}_u{i}", ctx.prefix)).collect();
    let mut signup = HttpOutcome::default();
    let signups = run_pool(n, ctx.args.setup_concurrency, |i| sign_up(ctx, &names[i])).await;
    for r in signups {
        signup.count(r.map(|(status, ms)| (status, ms, status == 201)));
    }

    ctx.progress("getting tokens");
    let mut token = HttpOutcome::default();
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let logins = {
        let names = &names;
        run_pool(n, ctx.args.setup_concurrency, |i| async move {
            (i, log_in(ctx, &names[i]).await)
        })
        .await
    };
    for (i, r) in logins {
        let (counted, tok) = split_token(r);
        token.count(counted);
        if tok.is_some() {
            tokens[i] = tok;
        }
    }
    let usable = (0..n).filter(|&i| tokens[i].is_some()).collect();
    Accounts {
        names,
        tokens,
        usable,
        signup,
        token,
    }
}

/// `--login-burst` more logins of the usable users, `--login-concurrency` in flight, with the server's CPU over
/// the burst per successful login. Null without a burst.
pub async fn login_burst(ctx: &Ctx, accounts: &Accounts) -> Value {
    let (n, k) = (ctx.args.login_burst, ctx.args.login_concurrency);
    if n == 0 || accounts.usable.is_empty() {
        return Value::Null;
    }
    ctx.progress(&format!("login burst: {n} logins, concurrency {k}"));
    let usable = &accounts.usable;
    let cpu0 = ctx.server.sample();
    let t0 = Instant::now();
    let logins = run_pool(n, k, |i| {
        log_in(ctx, &accounts.names[usable[i % usable.len()]])
    })
    .await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = ctx.server.sample();
    let mut o = HttpOutcome::default();
    for r in logins {
        o.count(split_token(r).0);
    }
    let ok = o.ok;
    let mut j = o.to_json();
    j["concurrency"] = json!(k);
    j["wall_s"] = num(wall);
    j["logins_per_s"] = num(ok as f64 / wall);
    j["cpu"] = ctx.server.cpu_json(&cpu0, &cpu1, ok as u64, "login");
    j
}

/// A login as counted (it succeeded if it answered 200 with a token), and its token if it did.
fn split_token(r: Login) -> (Counted, Option<String>) {
    match r {
        Ok((status, ms, tok)) => {
            let good = status == 200 && tok.is_some();
            (Ok((status, ms, good)), tok.filter(|_| good))
        }
        Err(e) => (Err(e), None),
    }
}

/// `POST /users/`: status and ms.
async fn sign_up(ctx: &Ctx, user: &str) -> Result<(u16, f64), String> {
    net::sign_up(&ctx.client, &ctx.base, user, &ctx.args.password).await
}

/// `POST /token`: status, ms and the access token if one came back.
async fn log_in(ctx: &Ctx, user: &str) -> Login {
    net::log_in(&ctx.client, &ctx.base, user, &ctx.args.password).await
}
