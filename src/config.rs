//! Settings read from `[vars]` and secrets, with defaults and validation. The parsing is pure
//! (it takes a lookup function) so it is unit-tested natively; `from_env` adapts a Worker `Env`.

use crate::auth::badge::{BadgeKeys, KeyError};
use crate::auth::password::HashCost;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Badge lifetime (`TOKEN_TTL_SECS`, default 3600).
    pub token_ttl_secs: i64,
    /// argon2id cost for new hashes (`ARGON2_M_KIB`, `ARGON2_T`, `ARGON2_P`; default OWASP's).
    pub hash_cost: HashCost,
}

/// Settings of one room Durable Object.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomConfig {
    /// Messages kept per room (`HISTORY_CAP`, default 10,000); the oldest go first.
    pub history_cap: i64,
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
            token_ttl_secs: int_setting(lookup, "TOKEN_TTL_SECS", 3600, 60..=86_400 * 30, &mut problems),
            hash_cost: HashCost {
                memory_kib: int_setting(lookup, "ARGON2_M_KIB", d.memory_kib as i64, 8..=262_144, &mut problems) as u32,
                iterations: int_setting(lookup, "ARGON2_T", d.iterations as i64, 1..=10, &mut problems) as u32,
                parallelism: int_setting(lookup, "ARGON2_P", d.parallelism as i64, 1..=8, &mut problems) as u32,
            },
        };
        (config, problems)
    }

    pub fn from_env(env: &worker::Env) -> Self {
        let (config, problems) = Self::from_lookup(&|name| env_string(env, name));
        for p in problems {
            worker::console_warn!("{}", crate::log::line("warn", "config_invalid", &[("problem", &p)]));
        }
        config
    }
}

impl RoomConfig {
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let config = RoomConfig {
            history_cap: int_setting(lookup, "HISTORY_CAP", 10_000, 100..=10_000_000, &mut problems),
        };
        (config, problems)
    }

    pub fn from_env(env: &worker::Env) -> Self {
        let (config, problems) = Self::from_lookup(&|name| env_string(env, name));
        for p in problems {
            worker::console_warn!("{}", crate::log::line("warn", "config_invalid", &[("problem", &p)]));
        }
        config
    }
}

/// A var or secret as a string, if set.
pub fn env_string(env: &worker::Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string()).or_else(|| env.secret(name).ok().map(|s| s.to_string()))
}

/// The badge keys from the `JWT_SECRET` (and optional `JWT_SECRET_PREVIOUS`) secrets.
pub fn badge_keys(env: &worker::Env) -> Result<BadgeKeys, KeyError> {
    let current = env_string(env, "JWT_SECRET");
    let previous = env_string(env, "JWT_SECRET_PREVIOUS");
    BadgeKeys::new(current.as_deref(), previous.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults() {
        let (c, problems) = Config::from_lookup(&lookup(&[]));
        assert!(problems.is_empty());
        assert_eq!(c.token_ttl_secs, 3600);
        assert_eq!(c.hash_cost, HashCost::default());
        assert_eq!(RoomConfig::from_lookup(&lookup(&[])).0.history_cap, 10_000);
    }

    #[test]
    fn overrides_and_invalid_values() {
        let (c, problems) = Config::from_lookup(&lookup(&[
            ("TOKEN_TTL_SECS", "600"),
            ("ARGON2_M_KIB", "lots"),
            ("ARGON2_T", "0"),
        ]));
        assert_eq!(c.token_ttl_secs, 600);
        assert_eq!(c.hash_cost, HashCost::default(), "invalid values fall back to defaults");
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
