//! Settings read from `[vars]` and secrets, with defaults and validation: every read of the
//! environment is here. The parsing is pure (it takes a lookup function) so it is unit-tested
//! natively; `from_env` adapts a Worker `Env`.

use std::cell::OnceCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::auth::badge::{BadgeKeys, KeyError};
use crate::auth::password::HashCost;
use crate::log::{self, Level};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Badge lifetime (`TOKEN_TTL_SECS`, default 3600).
    pub token_ttl_secs: i64,
    /// Refresh token lifetime, counted from the login (`REFRESH_TTL_SECS`, default 30 days).
    pub refresh_ttl_secs: i64,
    /// argon2id cost for new hashes (`ARGON2_M_KIB`, `ARGON2_T`, `ARGON2_P`; default OWASP's).
    pub hash_cost: HashCost,
    /// Failed logins per username per window (`LOGIN_MAX_FAILURES_PER_USER`, default 10).
    pub login_failures_per_user: i64,
    /// Failed logins per client IP per window (`LOGIN_MAX_FAILURES_PER_IP`, default 50).
    pub login_failures_per_ip: i64,
    /// The login window (`LOGIN_WINDOW_SECS`, default 900 = 15 minutes).
    pub login_window_secs: i64,
    /// Signups per client IP per window (`SIGNUP_MAX_PER_IP`, default 20).
    pub signups_per_ip: i64,
    /// The signup window (`SIGNUP_WINDOW_SECS`, default 3600).
    pub signup_window_secs: i64,
    /// Browser origins allowed to open WebSockets besides the service's own
    /// (`ALLOWED_ORIGINS`, comma-separated exact origins such as `https://chat.example.com`).
    pub allowed_origins: Vec<String>,
    /// (badge, room) pairs with sockets one user may have on record (`MAX_ROOMS_PER_USER`,
    /// default 5,000): bounds the user's rows in the session ledger until their badges expire.
    pub max_rooms_per_user: i64,
    /// Users one user may block (`MAX_BLOCKS_PER_USER`, default 1,000).
    pub max_blocks_per_user: i64,
    /// Direct-message rooms one user may be in (`MAX_DMS_PER_USER`, default 1,000): each
    /// `POST /dm/{username}` with someone new adds one to both people's lists.
    pub max_dms_per_user: i64,
    /// Unexpired badges one login (refresh family) may hold (`MAX_BADGES_PER_LOGIN`, default
    /// 100): every refresh adds one, so this bounds its refreshes per badge lifetime; an app
    /// makes about one per open tab. A refresh beyond is 429 and consumes nothing.
    pub max_badges_per_login: i64,
    /// Consumed refresh tokens one login keeps for reuse detection (`USED_REFRESH_TOKENS_KEPT`,
    /// default 1,000, above the ~730 refreshes of one app over the default REFRESH_TTL_SECS);
    /// older ones are deleted, and presenting one is a plain `invalid_grant`.
    pub used_refresh_tokens_kept: i64,
    /// Live logins (refresh families neither revoked nor expired) one user may hold
    /// (`MAX_LOGINS_PER_USER`, default 100): every password login starts one, kept for
    /// REFRESH_TTL_SECS. A login beyond it ends the user's oldest live login, as a logout would.
    /// 100 is far above the browsers and apps one person keeps logged in, so only a client
    /// logging in on every run meets it (and then ends its own forgotten logins); it keeps a
    /// user's ledger rows at 100 families.
    pub max_logins_per_user: i64,
}

/// Settings of one room Durable Object.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomConfig {
    /// Messages kept per room (`HISTORY_CAP`, default 10,000); the oldest go first.
    pub history_cap: i64,
    /// Messages a connection may send per second on average (`RATE_LIMIT_PER_SEC`, default 10).
    pub rate_per_sec: f64,
    /// Messages a connection may send at once after being quiet (`RATE_LIMIT_BURST`, default 20).
    pub rate_burst: f64,
    /// Open sockets one user may hold in one room (`MAX_SOCKETS_PER_USER`, default 5).
    pub max_sockets_per_user: usize,
    /// Open sockets one room holds (`MAX_SOCKETS_PER_ROOM`, default 10,000).
    pub max_sockets_per_room: usize,
    /// Rooms with more open sockets than this stop announcing each join and leave
    /// (`PRESENCE_BROADCAST_MAX`, default 500): every announcement goes to every member, so a
    /// room filling up would otherwise send a number of frames that grows with its square.
    pub presence_broadcast_max: usize,
    /// Presence announcements within this many milliseconds of the previous one are batched
    /// into one `presence_changes` frame (`PRESENCE_BATCH_MS`, default 100; 0 sends each at once).
    pub presence_batch_ms: u64,
}

/// Reads an integer setting within `range`; a missing value gives `default`, an invalid one is
/// reported so a typo in wrangler.toml is loud rather than silently ignored.
fn int_setting(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
    problems: &mut Vec<String>,
) -> i64 {
    match lookup(name) {
        None => default,
        Some(raw) => match raw.trim().parse::<i64>() {
            Ok(v) if range.contains(&v) => v,
            _ => {
                problems.push(format!(
                    "{name}={raw:?} is not an integer in {}..={}; using {default}",
                    range.start(),
                    range.end()
                ));
                default
            }
        },
    }
}

impl Config {
    /// Parses settings; the second value lists settings that were invalid (logged by the caller).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let d = HashCost::default();
        let config = Config {
            token_ttl_secs: int_setting(
                lookup,
                "TOKEN_TTL_SECS",
                3600,
                60..=86_400 * 30,
                &mut problems,
            ),
            refresh_ttl_secs: int_setting(
                lookup,
                "REFRESH_TTL_SECS",
                86_400 * 30,
                10..=86_400 * 365,
                &mut problems,
            ),
            hash_cost: HashCost {
                memory_kib: int_setting(
                    lookup,
                    "ARGON2_M_KIB",
                    d.memory_kib as i64,
                    8..=262_144,
                    &mut problems,
                ) as u32,
                iterations: int_setting(
                    lookup,
                    "ARGON2_T",
                    d.iterations as i64,
                    1..=10,
                    &mut problems,
                ) as u32,
                parallelism: int_setting(
                    lookup,
                    "ARGON2_P",
                    d.parallelism as i64,
                    1..=8,
                    &mut problems,
                ) as u32,
            },
            login_failures_per_user: int_setting(
                lookup,
                "LOGIN_MAX_FAILURES_PER_USER",
                10,
                1..=1_000_000,
                &mut problems,
            ),
            login_failures_per_ip: int_setting(
                lookup,
                "LOGIN_MAX_FAILURES_PER_IP",
                50,
                1..=1_000_000,
                &mut problems,
            ),
            login_window_secs: int_setting(
                lookup,
                "LOGIN_WINDOW_SECS",
                900,
                1..=86_400,
                &mut problems,
            ),
            signups_per_ip: int_setting(
                lookup,
                "SIGNUP_MAX_PER_IP",
                20,
                1..=1_000_000,
                &mut problems,
            ),
            signup_window_secs: int_setting(
                lookup,
                "SIGNUP_WINDOW_SECS",
                3600,
                1..=86_400,
                &mut problems,
            ),
            allowed_origins: lookup("ALLOWED_ORIGINS")
                .map(|v| parse_origins(&v))
                .unwrap_or_default(),
            max_rooms_per_user: int_setting(
                lookup,
                "MAX_ROOMS_PER_USER",
                5_000,
                1..=100_000,
                &mut problems,
            ),
            max_blocks_per_user: int_setting(
                lookup,
                "MAX_BLOCKS_PER_USER",
                1_000,
                1..=100_000,
                &mut problems,
            ),
            max_dms_per_user: int_setting(
                lookup,
                "MAX_DMS_PER_USER",
                1_000,
                1..=100_000,
                &mut problems,
            ),
            // At least 2: the login's own badge counts, and 1 would allow no refresh before it
            // expired.
            max_badges_per_login: int_setting(
                lookup,
                "MAX_BADGES_PER_LOGIN",
                100,
                2..=10_000,
                &mut problems,
            ),
            // At least 1: the token just consumed is what a concurrent use or a thief presents
            // next, and must be found to revoke the family.
            used_refresh_tokens_kept: int_setting(
                lookup,
                "USED_REFRESH_TOKENS_KEPT",
                1_000,
                1..=100_000,
                &mut problems,
            ),
            // 1 allows a single session per user: every login ends the one before.
            max_logins_per_user: int_setting(
                lookup,
                "MAX_LOGINS_PER_USER",
                100,
                1..=10_000,
                &mut problems,
            ),
        };
        (config, problems)
    }

    /// The settings, read once per isolate and shared: vars and secrets only change with a new
    /// deployment, which starts new isolates, and reading ~15 of them crosses into JS each time.
    pub fn from_env(env: &worker::Env) -> Rc<Self> {
        read_once(&CONFIG, || Self::from_lookup(&|name| env_string(env, name)))
    }
}

/// Settings read once per isolate into `cache`, each problem found logged that first time.
fn read_once<T>(
    cache: &'static std::thread::LocalKey<OnceCell<Rc<T>>>,
    read: impl FnOnce() -> (T, Vec<String>),
) -> Rc<T> {
    cache.with(|cached| {
        cached
            .get_or_init(|| {
                let (config, problems) = read();
                for p in problems {
                    log::warn("config_invalid", &[("problem", &p)]);
                }
                Rc::new(config)
            })
            .clone()
    })
}

thread_local! {
    static CONFIG: OnceCell<Rc<Config>> = const { OnceCell::new() };
    static ROOM_CONFIG: OnceCell<Rc<RoomConfig>> = const { OnceCell::new() };
    static BADGE_KEYS: OnceCell<Result<Rc<BadgeKeys>, KeyError>> = const { OnceCell::new() };
}

impl RoomConfig {
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let config = RoomConfig {
            history_cap: int_setting(
                lookup,
                "HISTORY_CAP",
                10_000,
                100..=10_000_000,
                &mut problems,
            ),
            rate_per_sec: int_setting(lookup, "RATE_LIMIT_PER_SEC", 10, 1..=100_000, &mut problems)
                as f64,
            rate_burst: int_setting(lookup, "RATE_LIMIT_BURST", 20, 1..=100_000, &mut problems)
                as f64,
            max_sockets_per_user: int_setting(
                lookup,
                "MAX_SOCKETS_PER_USER",
                5,
                1..=1000,
                &mut problems,
            ) as usize,
            max_sockets_per_room: int_setting(
                lookup,
                "MAX_SOCKETS_PER_ROOM",
                10_000,
                1..=32_768,
                &mut problems,
            ) as usize,
            presence_broadcast_max: int_setting(
                lookup,
                "PRESENCE_BROADCAST_MAX",
                500,
                0..=32_768,
                &mut problems,
            ) as usize,
            presence_batch_ms: int_setting(
                lookup,
                "PRESENCE_BATCH_MS",
                100,
                0..=60_000,
                &mut problems,
            ) as u64,
        };
        (config, problems)
    }

    /// Read once per isolate, like [`Config::from_env`]: a room is constructed again on every
    /// wake-up from hibernation, and each setting read crosses into JS.
    pub fn from_env(env: &worker::Env) -> Rc<Self> {
        read_once(&ROOM_CONFIG, || {
            Self::from_lookup(&|name| env_string(env, name))
        })
    }
}

/// Whether `LOG_LEVEL` was read. Once per isolate, like the rest of the settings: vars change
/// only with a new deployment, which is a new isolate, and reading one costs a lookup across
/// the JS boundary on every request.
static LOG_LEVEL_READ: AtomicBool = AtomicBool::new(false);

/// Sets the log threshold from `LOG_LEVEL` (`debug`, `info`, `warn`, `error`; default `info`)
/// the first time an entry point runs in this isolate.
pub fn set_log_level(env: &worker::Env) {
    if LOG_LEVEL_READ.swap(true, Ordering::Relaxed) {
        return;
    }
    let level = env_string(env, "LOG_LEVEL")
        .and_then(|v| Level::parse(&v))
        .unwrap_or(Level::Info);
    log::set_level(level);
}

/// `https://a.example, http://localhost:3000/` → exact origins without a trailing slash.
pub fn parse_origins(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
        .filter(|o| !o.is_empty())
        .collect()
}

/// A var or secret as a string, if set.
pub fn env_string(env: &worker::Env, name: &str) -> Option<String> {
    env.var(name)
        .ok()
        .map(|v| v.to_string())
        .or_else(|| env.secret(name).ok().map(|s| s.to_string()))
}

/// The operators' token (`ADMIN_TOKEN` secret) for `/rooms/{id}/stats`; `None` when unset or
/// empty, which turns that route off.
pub fn admin_token(env: &worker::Env) -> Option<String> {
    env_string(env, "ADMIN_TOKEN").filter(|t| !t.is_empty())
}

/// The badge keys from the `JWT_SECRET` (and optional `JWT_SECRET_PREVIOUS`) secrets, built
/// once per isolate (like [`Config::from_env`]).
pub fn badge_keys(env: &worker::Env) -> Result<Rc<BadgeKeys>, KeyError> {
    BADGE_KEYS.with(|cached| {
        cached
            .get_or_init(|| {
                let current = env_string(env, "JWT_SECRET");
                let previous = env_string(env, "JWT_SECRET_PREVIOUS");
                BadgeKeys::new(current.as_deref(), previous.as_deref()).map(Rc::new)
            })
            .clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults() {
        let (c, problems) = Config::from_lookup(&lookup(&[]));
        assert!(problems.is_empty());
        assert_eq!(c.token_ttl_secs, 3600);
        assert_eq!(c.refresh_ttl_secs, 86_400 * 30);
        assert_eq!(c.hash_cost, HashCost::default());
        assert_eq!(c.max_badges_per_login, 100);
        assert_eq!(c.used_refresh_tokens_kept, 1_000);
        assert_eq!(c.max_logins_per_user, 100);
        let room = RoomConfig::from_lookup(&lookup(&[])).0;
        assert_eq!(room.history_cap, 10_000);
        assert_eq!(room.presence_broadcast_max, 500);
        assert_eq!(room.presence_batch_ms, 100);
    }

    #[test]
    fn presence_batch_ms() {
        let parse = |v: &str| RoomConfig::from_lookup(&lookup(&[("PRESENCE_BATCH_MS", v)]));
        let (room, problems) = parse("250");
        assert_eq!((room.presence_batch_ms, problems.len()), (250, 0));
        let (room, problems) = parse("0");
        assert_eq!(
            (room.presence_batch_ms, problems.len()),
            (0, 0),
            "0: no batching"
        );
        for bad in ["-1", "60001", "soon", "1.5"] {
            let (room, problems) = parse(bad);
            assert_eq!(
                room.presence_batch_ms, 100,
                "{bad}: falls back to the default"
            );
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert!(problems[0].contains("PRESENCE_BATCH_MS"), "{problems:?}");
        }
    }

    #[test]
    fn overrides_and_invalid_values() {
        let (c, problems) = Config::from_lookup(&lookup(&[
            ("TOKEN_TTL_SECS", "600"),
            ("ARGON2_M_KIB", "lots"),
            ("ARGON2_T", "0"),
        ]));
        assert_eq!(c.token_ttl_secs, 600);
        assert_eq!(
            c.hash_cost,
            HashCost::default(),
            "invalid values fall back to defaults"
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn refresh_family_limits_keep_a_refresh_possible_a_reuse_detectable_and_a_login_possible() {
        let parse = |name: &str, v: &str| Config::from_lookup(&lookup(&[(name, v)]));
        let (c, problems) = parse("MAX_BADGES_PER_LOGIN", "3");
        assert_eq!((c.max_badges_per_login, problems.len()), (3, 0));
        let (c, problems) = parse("USED_REFRESH_TOKENS_KEPT", "1");
        assert_eq!((c.used_refresh_tokens_kept, problems.len()), (1, 0));
        let (c, problems) = parse("MAX_LOGINS_PER_USER", "1");
        assert_eq!((c.max_logins_per_user, problems.len()), (1, 0));
        for (name, bad, default) in [
            ("MAX_BADGES_PER_LOGIN", "1", 100),
            ("MAX_BADGES_PER_LOGIN", "10001", 100),
            ("USED_REFRESH_TOKENS_KEPT", "0", 1_000),
            ("USED_REFRESH_TOKENS_KEPT", "lots", 1_000),
            ("MAX_LOGINS_PER_USER", "0", 100),
            ("MAX_LOGINS_PER_USER", "10001", 100),
        ] {
            let (c, problems) = parse(name, bad);
            let read = match name {
                "MAX_BADGES_PER_LOGIN" => c.max_badges_per_login,
                "MAX_LOGINS_PER_USER" => c.max_logins_per_user,
                _ => c.used_refresh_tokens_kept,
            };
            assert_eq!(read, default, "{name}={bad}");
            assert_eq!(problems.len(), 1, "{name}={bad}: {problems:?}");
            assert!(problems[0].contains(name), "{problems:?}");
        }
    }

    #[test]
    fn origins() {
        let (c, _) = Config::from_lookup(&lookup(&[(
            "ALLOWED_ORIGINS",
            " https://A.example/ ,,http://localhost:3000",
        )]));
        assert_eq!(
            c.allowed_origins,
            vec!["https://a.example", "http://localhost:3000"]
        );
        assert!(Config::from_lookup(&lookup(&[]))
            .0
            .allowed_origins
            .is_empty());
    }
}
