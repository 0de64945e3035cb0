//! Refresh families in the session ledger: each login with a password starts one, and every
//! badge and refresh token descended from it belongs to it (RFC 6749 §6, with the rotation and
//! reuse detection of the OAuth 2.0 Security BCP §4.14).
//!
//! A family lives in its user's shard. The shard holds each refresh token's SHA-256 only, and
//! the `jti` of every badge the family was given, recorded before the badge is signed. So a
//! family revoked (logout, reuse, a password change) refuses its badges on every admission
//! (`family_badges` → `families.revoked`), and the rooms where they have sockets are known.
//!
//! Rotation is race-safe because, like every ledger route, it runs without an `await`: of two
//! presentations of one token, the first consumes it and the second finds it consumed, which
//! revokes the family (the BCP's answer: the shard cannot tell the thief from the owner).
//!
//! A family's rows are bounded, since every refresh adds a token and a badge ([`RefreshLimits`]):
//! - At most `max_badges` unexpired badges (`family_badges` rows not past their `exp`, the
//!   login's included). A refresh beyond is refused ([`Rotation::Throttled`]) until the oldest
//!   of them that keeps the family full expires; the token presented is not consumed and the
//!   family stays as it was, so the client simply tries again later with the same token. The
//!   check and the rotation share the route's one synchronous run, so concurrent refreshes
//!   cannot both take the last place. An app refreshes about once per badge lifetime, so the
//!   limit only meets a client refreshing in a loop.
//! - At most `used_kept` consumed tokens: each rotation deletes the family's consumed tokens
//!   older than the newest `used_kept`, and its badges whose rows have expired (those can
//!   admit nothing; rows still in force are never deleted, or a badge of a revoked family
//!   would get in). A deleted token presented again is unknown: `invalid_grant`, and the family
//!   is NOT revoked. Reuse detection therefore reaches back `used_kept` rotations; with the
//!   defaults that is more than an app refreshing once per badge lifetime does in a family's
//!   whole life, so only a family refreshed far faster ever forgets a token.
//!
//! A user's families are bounded too, since every password login starts one, kept for
//! REFRESH_TTL_SECS: at most `max_logins` live ones (neither revoked nor past `expires_at`).
//! [`Families::start`] counts them and, if the new one would go past the limit, revokes the
//! oldest (by login: `rowid` order) as a logout would, in the same synchronous run as the
//! insert, so concurrent logins cannot both squeeze in. The caller closes the evicted badges'
//! sockets. The newest login always works; the stalest session goes ([`logins_to_end`]).
//!
//! A revoked family's rows are kept only while one of its badges can still be presented: the
//! revocation lowers `keep_until` to its newest badge's expiry (its refresh tokens are refused
//! either way, revoked or unknown), so logins ended by a logout, a reuse, a password change or
//! the limit leave nothing behind after about TOKEN_TTL_SECS. Counting reads the user's rows
//! through `families_by_user`: the live ones (at most `max_logins`) and those revoked within
//! a badge lifetime.

use std::collections::HashSet;

use serde::Deserialize;
use worker::{Result, SqlStorage};

/// Created with the object (see `Sessions::new`).
pub(super) const TABLES: [&str; 7] = [
    // `name`: the registered spelling, for the badges the family is given. `expires_at`: the
    // login plus REFRESH_TTL_SECS (seconds). `keep_until`: when neither a refresh token nor a
    // badge of the family can matter any more, when the rows are dropped (for a revoked family,
    // when its newest badge expires). Rows keep SQLite's `rowid`: the order of the logins.
    "CREATE TABLE IF NOT EXISTS families (
        family TEXT PRIMARY KEY, username TEXT NOT NULL, name TEXT NOT NULL,
        expires_at INTEGER NOT NULL, keep_until INTEGER NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS families_by_user ON families (username)",
    // Rows keep SQLite's implicit `rowid`, which is their order of insertion: a new row gets a
    // rowid above every row present. The newest consumed tokens are kept by it.
    "CREATE TABLE IF NOT EXISTS refresh_tokens (
        hash TEXT PRIMARY KEY, family TEXT NOT NULL, used INTEGER NOT NULL DEFAULT 0,
        exp INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS refresh_tokens_by_family ON refresh_tokens (family)",
    "CREATE TABLE IF NOT EXISTS family_badges (
        jti TEXT PRIMARY KEY, family TEXT NOT NULL, exp INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS family_badges_by_family ON family_badges (family)",
    // A password change: the user's badges issued up to `at_ms` are refused, but for the one
    // that made the change and the badges of its family.
    "CREATE TABLE IF NOT EXISTS others_revoked (
        username TEXT PRIMARY KEY, at_ms INTEGER NOT NULL, keep_jti TEXT NOT NULL,
        keep_family TEXT, exp INTEGER NOT NULL)",
];

/// The SET of an `UPDATE families` that revokes: only its badges' rows can matter from then
/// on, so the family is kept until the newest of them expires (none left: dropped at once).
const REVOKED: &str = "revoked = 1, keep_until = COALESCE(
    (SELECT MAX(b.exp) FROM family_badges b WHERE b.family = families.family), 0)";

/// Tables whose rows carry an `exp` after which they can be dropped.
pub(super) const EXPIRING: [&str; 3] = ["refresh_tokens", "family_badges", "others_revoked"];

/// How far one family may grow (module doc). From `MAX_BADGES_PER_LOGIN` and
/// `USED_REFRESH_TOKENS_KEPT` (`config.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RefreshLimits {
    /// Unexpired badges one family may hold; a refresh beyond is refused.
    pub max_badges: i64,
    /// Consumed refresh tokens kept per family for reuse detection; older ones are deleted.
    pub used_kept: i64,
}

/// How many of a user's `live` logins (oldest first) a new login ends, so that with it the
/// user holds at most `max_logins` (at least 1: the new login itself always counts). Usually 0
/// or 1; more only after the setting was lowered.
pub(super) fn logins_to_end(live: i64, max_logins: i64) -> i64 {
    (live + 1 - max_logins.max(1)).max(0)
}

/// What presenting a refresh token comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rotation {
    /// Unknown, expired, or of a revoked family: refused, nothing else happens.
    Invalid,
    /// Consumed before: the family is revoked.
    Reused,
    /// Valid, but the family holds its limit of unexpired badges: refused, the token not
    /// consumed; a place frees in `retry_after` seconds.
    Throttled { retry_after: i64 },
    /// Consumed now, and replaced.
    Rotate,
}

/// The pure rule behind [`Families::rotate`]. `full_until`: the expiry (seconds) of the
/// family's `max_badges`-th newest unexpired badge, if it has that many: the family is full
/// until then, since every badge older than that one expires no later.
pub(super) fn rotation(
    used: bool,
    revoked: bool,
    expires_at: i64,
    full_until: Option<i64>,
    now: i64,
) -> Rotation {
    if revoked || now >= expires_at {
        Rotation::Invalid
    } else if used {
        Rotation::Reused
    } else if let Some(until) = full_until.filter(|&until| until >= now) {
        // A row counts while `now <= exp` (pruning drops `exp < now`): free one second later.
        Rotation::Throttled {
            retry_after: until - now + 1,
        }
    } else {
        Rotation::Rotate
    }
}

/// What the ledger knows of a badge beyond its own revocation and the user's "log out
/// everywhere": its family and the user's last password change.
#[derive(Debug, Default)]
pub(super) struct FamilyStanding {
    /// The badge's family, if it was given one.
    pub family: Option<String>,
    /// That family's `revoked`; missing with a family means its rows are gone: refused too.
    pub family_revoked: Option<i64>,
    pub others_before: Option<i64>,
    pub keep_jti: Option<String>,
    pub keep_family: Option<String>,
}

impl FamilyStanding {
    /// The SELECT columns giving a [`FamilyStanding`] for user `?1` and jti `?2`.
    pub(super) const COLUMNS: &'static str = "
        (SELECT family FROM family_badges WHERE jti = ?2) AS family,
        (SELECT f.revoked FROM family_badges b JOIN families f ON f.family = b.family
         WHERE b.jti = ?2) AS family_revoked,
        (SELECT at_ms FROM others_revoked WHERE username = ?1) AS others_before,
        (SELECT keep_jti FROM others_revoked WHERE username = ?1) AS keep_jti,
        (SELECT keep_family FROM others_revoked WHERE username = ?1) AS keep_family";

    /// Whether badge `jti`, issued at `issued_at_ms`, is refused by its family or by a
    /// password change.
    pub(super) fn refuses(&self, jti: &str, issued_at_ms: i64) -> bool {
        if self.family.is_some() && self.family_revoked != Some(0) {
            return true;
        }
        let Some(before) = self.others_before else {
            return false;
        };
        let spared = self.keep_jti.as_deref() == Some(jti)
            || (self.family.is_some() && self.family == self.keep_family);
        issued_at_ms <= before && !spared
    }
}

/// A family's rows in one shard.
pub(super) struct Families<'a> {
    pub sql: &'a SqlStorage,
}

/// What the Worker needs to start a family: all names and hex it made or validated.
pub(super) struct NewFamily<'a> {
    pub user: &'a str,
    pub name: &'a str,
    pub family: &'a str,
    pub hash: &'a str,
    pub jti: &'a str,
    pub expires_at: i64,
    pub badge_keep_until: i64,
}

/// A refresh as the Worker asks for it: the presented token's hash, and the next token's hash
/// and badge `jti` it made (hex), with when that badge can matter no more (seconds).
#[derive(Clone, Copy)]
pub(super) struct Presentation<'a> {
    pub user: &'a str,
    pub hash: &'a str,
    pub new_hash: &'a str,
    pub jti: &'a str,
    pub badge_keep_until: i64,
}

#[derive(Deserialize)]
struct TokenRow {
    used: i64,
    family: String,
    name: String,
    expires_at: i64,
    revoked: i64,
    full_until: Option<i64>,
}

#[derive(Deserialize)]
struct FamilyRow {
    family: String,
}

#[derive(Deserialize)]
struct JtiRow {
    jti: String,
}

/// The outcome of a presentation, with what the Worker needs next.
pub(super) struct Presented {
    pub rotation: Rotation,
    pub family: Option<String>,
    pub name: String,
    pub expires_at: i64,
}

impl Families<'_> {
    /// Starts a login's family at `now`, first revoking the user's oldest live families that
    /// would leave more than `max_logins` with it (module doc): those it revoked.
    pub fn start(&self, new: &NewFamily, max_logins: i64, now: i64) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Live {
            live: i64,
        }
        const LIVE: &str = "FROM families WHERE username = ?1 AND revoked = 0 AND expires_at > ?2";
        let live = self
            .sql
            .exec(
                &format!("SELECT COUNT(*) AS live {LIVE}"),
                vec![new.user.into(), now.into()],
            )?
            .one::<Live>()?
            .live;
        let ending = logins_to_end(live, max_logins);
        let mut ended = Vec::new();
        if ending > 0 {
            let rows = self
                .sql
                .exec(
                    &format!("SELECT family {LIVE} ORDER BY rowid LIMIT ?3"),
                    vec![new.user.into(), now.into(), ending.into()],
                )?
                .to_array::<FamilyRow>()?;
            for row in rows {
                self.revoke(&row.family)?;
                ended.push(row.family);
            }
        }
        self.sql.exec(
            "INSERT INTO families (family, username, name, expires_at, keep_until)
             VALUES (?, ?, ?, ?, ?)",
            vec![
                new.family.into(),
                new.user.into(),
                new.name.into(),
                new.expires_at.into(),
                new.expires_at.max(new.badge_keep_until).into(),
            ],
        )?;
        self.add_token(new.hash, new.family, new.expires_at)?;
        self.add_badge(new.jti, new.family, new.badge_keep_until)?;
        Ok(ended)
    }

    fn add_token(&self, hash: &str, family: &str, exp: i64) -> Result<()> {
        self.sql.exec(
            "INSERT INTO refresh_tokens (hash, family, exp) VALUES (?, ?, ?)",
            vec![hash.into(), family.into(), exp.into()],
        )?;
        Ok(())
    }

    fn add_badge(&self, jti: &str, family: &str, keep_until: i64) -> Result<()> {
        self.sql.exec(
            "INSERT OR REPLACE INTO family_badges (jti, family, exp) VALUES (?, ?, ?)",
            vec![jti.into(), family.into(), keep_until.into()],
        )?;
        self.sql.exec(
            "UPDATE families SET keep_until = MAX(keep_until, ?) WHERE family = ?",
            vec![keep_until.into(), family.into()],
        )?;
        Ok(())
    }

    /// Presents a refresh token at `now`: consumed and replaced by the next one, with the next
    /// badge recorded in the family, or refused (a reuse also revokes the family, and the
    /// caller closes its sockets; a full family changes nothing).
    pub fn rotate(
        &self,
        presented: &Presentation,
        limits: RefreshLimits,
        now: i64,
    ) -> Result<Presented> {
        let Presentation {
            user,
            hash,
            new_hash,
            jti,
            badge_keep_until,
        } = *presented;
        let rows = self
            .sql
            .exec(
                "SELECT t.used AS used, t.family AS family, f.name AS name,
                        f.expires_at AS expires_at, f.revoked AS revoked,
                        (SELECT b.exp FROM family_badges b
                         WHERE b.family = t.family AND b.exp >= ?3
                         ORDER BY b.exp DESC LIMIT 1 OFFSET ?4) AS full_until
                 FROM refresh_tokens t JOIN families f ON f.family = t.family
                 WHERE t.hash = ?1 AND f.username = ?2",
                vec![
                    hash.into(),
                    user.into(),
                    now.into(),
                    (limits.max_badges - 1).max(0).into(),
                ],
            )?
            .to_array::<TokenRow>()?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(Presented {
                rotation: Rotation::Invalid,
                family: None,
                name: String::new(),
                expires_at: 0,
            });
        };
        let verdict = rotation(
            row.used != 0,
            row.revoked != 0,
            row.expires_at,
            row.full_until,
            now,
        );
        match verdict {
            Rotation::Invalid | Rotation::Throttled { .. } => {}
            Rotation::Reused => self.revoke(&row.family)?,
            Rotation::Rotate => {
                self.sql.exec(
                    "UPDATE refresh_tokens SET used = 1 WHERE hash = ?",
                    vec![hash.into()],
                )?;
                self.add_token(new_hash, &row.family, row.expires_at)?;
                self.add_badge(jti, &row.family, badge_keep_until)?;
                self.trim(&row.family, limits.used_kept, now)?;
            }
        }
        Ok(Presented {
            rotation: verdict,
            family: Some(row.family),
            name: row.name,
            expires_at: row.expires_at,
        })
    }

    /// Deletes the family's consumed tokens but the newest `used_kept`, and its badges whose
    /// rows have expired (module doc): what a rotation added is taken back from the oldest.
    fn trim(&self, family: &str, used_kept: i64, now: i64) -> Result<()> {
        self.sql.exec(
            "DELETE FROM refresh_tokens WHERE family = ?1 AND used != 0 AND rowid <=
               (SELECT rowid FROM refresh_tokens WHERE family = ?1 AND used != 0
                ORDER BY rowid DESC LIMIT 1 OFFSET ?2)",
            vec![family.into(), used_kept.max(0).into()],
        )?;
        self.sql.exec(
            "DELETE FROM family_badges WHERE family = ? AND exp < ?",
            vec![family.into(), now.into()],
        )?;
        Ok(())
    }

    /// Revokes a family: its badges are refused from now on, and its rows are kept until the
    /// newest of them expires (module doc).
    pub fn revoke(&self, family: &str) -> Result<()> {
        self.sql.exec(
            &format!("UPDATE families SET {REVOKED} WHERE family = ?"),
            vec![family.into()],
        )?;
        Ok(())
    }

    /// Revokes every family of `user` but `except`, as [`Families::revoke`] does.
    pub fn revoke_all(&self, user: &str, except: Option<&str>) -> Result<()> {
        self.sql.exec(
            &format!(
                "UPDATE families SET {REVOKED}
                 WHERE username = ? AND family IS NOT ? AND revoked = 0"
            ),
            vec![user.into(), except.unwrap_or("").into()],
        )?;
        Ok(())
    }

    /// The family badge `jti` belongs to.
    pub fn of_badge(&self, jti: &str) -> Result<Option<String>> {
        #[derive(Deserialize)]
        struct Row {
            family: String,
        }
        let rows = self
            .sql
            .exec(
                "SELECT family FROM family_badges WHERE jti = ?",
                vec![jti.into()],
            )?
            .to_array::<Row>()?;
        Ok(rows.into_iter().next().map(|r| r.family))
    }

    /// Every badge the family was given.
    pub fn badges(&self, family: &str) -> Result<HashSet<String>> {
        let rows = self
            .sql
            .exec(
                "SELECT jti FROM family_badges WHERE family = ?",
                vec![family.into()],
            )?
            .to_array::<JtiRow>()?;
        Ok(rows.into_iter().map(|r| r.jti).collect())
    }

    /// A password change: every badge of `user` issued up to `at_ms` is refused, but for
    /// `keep_jti` and its family's (`keep_family`), and every other family is revoked.
    pub fn revoke_others(
        &self,
        user: &str,
        at_ms: i64,
        keep_jti: &str,
        keep_family: Option<&str>,
        exp: i64,
    ) -> Result<()> {
        self.sql.exec(
            "INSERT OR REPLACE INTO others_revoked (username, at_ms, keep_jti, keep_family, exp)
             VALUES (?, ?, ?, ?, ?)",
            vec![
                user.into(),
                at_ms.into(),
                keep_jti.into(),
                keep_family.map_or(worker::SqlStorageValue::Null, Into::into),
                exp.into(),
            ],
        )?;
        self.revoke_all(user, keep_family)
    }

    /// Drops families past their `keep_until`, with their tokens and badges.
    pub fn prune(&self, now: i64) -> Result<()> {
        for table in ["refresh_tokens", "family_badges"] {
            self.sql.exec(
                &format!(
                    "DELETE FROM {table} WHERE family IN
                     (SELECT family FROM families WHERE keep_until < ?)"
                ),
                vec![now.into()],
            )?;
        }
        self.sql.exec(
            "DELETE FROM families WHERE keep_until < ?",
            vec![now.into()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_consumed_once_then_its_reuse_revokes() {
        assert_eq!(rotation(false, false, 100, None, 50), Rotation::Rotate);
        assert_eq!(rotation(true, false, 100, None, 50), Rotation::Reused);
        // Expired or already revoked: refused, with nothing left to revoke.
        assert_eq!(rotation(false, false, 100, None, 100), Rotation::Invalid);
        assert_eq!(rotation(true, false, 100, None, 101), Rotation::Invalid);
        assert_eq!(rotation(false, true, 100, None, 50), Rotation::Invalid);
        assert_eq!(rotation(true, true, 100, None, 50), Rotation::Invalid);
    }

    #[test]
    fn a_full_family_refuses_a_valid_token_until_its_oldest_counted_badge_expires() {
        // Full until 80 (that badge's row counts through second 80): free at 81.
        assert_eq!(
            rotation(false, false, 100, Some(80), 50),
            Rotation::Throttled { retry_after: 31 }
        );
        assert_eq!(
            rotation(false, false, 100, Some(80), 80),
            Rotation::Throttled { retry_after: 1 }
        );
        // A row past its expiry is no longer counted (the query leaves it out; so does the rule).
        assert_eq!(rotation(false, false, 100, Some(80), 81), Rotation::Rotate);
        // The limit never hides a reuse, nor revives a dead token.
        assert_eq!(
            rotation(true, false, 100, Some(80), 50),
            Rotation::Reused,
            "a consumed token still revokes its family"
        );
        assert_eq!(rotation(false, true, 100, Some(80), 50), Rotation::Invalid);
        assert_eq!(rotation(false, false, 40, Some(80), 50), Rotation::Invalid);
    }

    #[test]
    fn a_login_past_the_limit_ends_the_oldest_live_ones_beyond_it() {
        // Below the limit: nothing ends; at it: the oldest one makes room for the new login.
        assert_eq!(logins_to_end(0, 3), 0);
        assert_eq!(logins_to_end(2, 3), 0);
        assert_eq!(logins_to_end(3, 3), 1);
        // After the limit was lowered: back down to it in one login.
        assert_eq!(logins_to_end(10, 3), 8);
        // One login per user: each ends the one before.
        assert_eq!(logins_to_end(0, 1), 0);
        assert_eq!(logins_to_end(1, 1), 1);
        // A limit below 1 would refuse every login; it is read as 1.
        assert_eq!(logins_to_end(1, 0), 1);
    }

    fn standing(family: Option<&str>, revoked: Option<i64>) -> FamilyStanding {
        FamilyStanding {
            family: family.map(Into::into),
            family_revoked: revoked,
            ..FamilyStanding::default()
        }
    }

    #[test]
    fn a_revoked_or_vanished_family_refuses_its_badges() {
        assert!(!standing(None, None).refuses("j", 5));
        assert!(!standing(Some("f"), Some(0)).refuses("j", 5));
        assert!(standing(Some("f"), Some(1)).refuses("j", 5));
        assert!(standing(Some("f"), None).refuses("j", 5));
    }

    #[test]
    fn a_password_change_spares_its_own_badge_and_family_only() {
        let changed = |family: Option<&str>| FamilyStanding {
            family: family.map(Into::into),
            family_revoked: family.map(|_| 0),
            others_before: Some(1000),
            keep_jti: Some("mine".into()),
            keep_family: Some("home".into()),
        };
        assert!(
            !changed(None).refuses("mine", 900),
            "the badge that changed it"
        );
        assert!(!changed(Some("home")).refuses("sibling", 900), "its family");
        assert!(changed(Some("away")).refuses("other", 900));
        assert!(
            changed(None).refuses("other", 1000),
            "up to its millisecond"
        );
        assert!(!changed(None).refuses("other", 1001), "a login after it");
        // A badge without a family is never spared as "the family" of a familyless change.
        let familyless = FamilyStanding {
            keep_family: None,
            ..changed(None)
        };
        assert!(familyless.refuses("other", 900));
    }
}
