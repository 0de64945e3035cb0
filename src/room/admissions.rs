//! The badges a room has already had admitted by the session ledger (`ledger/`), so a
//! socket that reopens the room with the same badge (a reconnect after a network blip or a
//! deploy, a reloaded tab) does not ask the ledger again.
//!
//! Why that is exact: the ledger recorded this room for the badge when it admitted it, so a
//! later logout of the badge (or of its user) lists this room, and the Worker then tells the
//! room (`/revoke`), which forgets the badge here and closes its sockets. The next socket with
//! that badge is unknown again and goes to the ledger, which refuses it. The ledger stays the
//! only authority on revocation; this is a cache of its "yes", cleared by every "no longer".
//!
//! One race is closed here too: a connect that waited for the ledger's "yes" while the room was
//! told of a revocation covering that badge is refused ([`Admissions::revoked_since`]).
//!
//! [`Admissions`] is the pure core (no `worker` types), unit-tested natively;
//! [`AdmittedBadges`] is the room's glue around it, with the stored copy (`storage.rs`) that
//! survives eviction and restarts.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use worker::Result;

use super::storage::{ConnectWrites, RoomStorage};

/// How often expired stored badges are dropped (seconds).
const PRUNE_BADGES_EVERY_SECS: i64 = 60;

/// How long a revocation is remembered for the race above (milliseconds): far longer than any
/// ledger call takes.
const REVOCATION_MEMORY_MS: f64 = 60_000.0;
/// Most revocations remembered for it; older ones go first.
const REVOCATIONS_MAX: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Admitted {
    user: String,
    /// When the badge expires (seconds): after that it opens nothing anyway.
    expires_at: i64,
}

#[derive(Debug, Default)]
pub struct Admissions {
    /// By badge id (`jti`).
    badges: HashMap<String, Admitted>,
    /// Revocations this room was told of, by `j:<jti>` or `u:<user>`, with when (ms).
    revocations: HashMap<String, f64>,
}

impl Admissions {
    /// From the room's stored rows: `(jti, user, expires_at)`.
    pub fn from_rows(rows: impl IntoIterator<Item = (String, String, i64)>) -> Self {
        let badges = rows
            .into_iter()
            .map(|(jti, user, expires_at)| (jti, Admitted { user, expires_at }))
            .collect();
        Self {
            badges,
            revocations: HashMap::new(),
        }
    }

    /// Whether the ledger admitted `jti` into this room and it is neither revoked nor expired.
    pub fn knows(&self, jti: &str, now_secs: i64) -> bool {
        self.badges
            .get(jti)
            .is_some_and(|b| b.expires_at > now_secs)
    }

    /// The ledger admitted `jti` (of `user`) into this room.
    pub fn admitted(&mut self, jti: &str, user: &str, expires_at: i64) {
        self.badges.insert(
            jti.to_owned(),
            Admitted {
                user: user.to_owned(),
                expires_at,
            },
        );
    }

    /// Whether a revocation covering `jti` or `user` reached the room at or after `since_ms`.
    pub fn revoked_since(&self, jti: &str, user: &str, since_ms: f64) -> bool {
        [format!("j:{jti}"), format!("u:{user}")]
            .iter()
            .any(|key| self.revocations.get(key).is_some_and(|&at| at >= since_ms))
    }

    /// `jti` was revoked: forget it.
    pub fn revoke_badge(&mut self, jti: &str, now_ms: f64) {
        self.badges.remove(jti);
        self.remember(format!("j:{jti}"), now_ms);
    }

    /// Every badge of `user` issued so far was revoked: forget them all.
    pub fn revoke_user(&mut self, user: &str, now_ms: f64) {
        self.badges.retain(|_, b| b.user != user);
        self.remember(format!("u:{user}"), now_ms);
    }

    /// Drops expired badges (the room deletes their rows at the same time).
    pub fn prune(&mut self, now_secs: i64) {
        self.badges.retain(|_, b| b.expires_at > now_secs);
    }

    fn remember(&mut self, key: String, now_ms: f64) {
        if self.revocations.len() >= REVOCATIONS_MAX {
            self.revocations
                .retain(|_, &mut at| now_ms - at < REVOCATION_MEMORY_MS);
            if self.revocations.len() >= REVOCATIONS_MAX {
                self.revocations.clear();
            }
        }
        self.revocations.insert(key, now_ms);
    }
}

/// What a revocation that reached the room covers.
#[derive(Debug, Clone, Copy)]
pub enum Revoked<'a> {
    /// One badge, by its `jti`.
    Badge(&'a str),
    /// Every badge of the user issued so far.
    User(&'a str),
}

/// The room's [`Admissions`], loaded from storage on the first connect after a wake-up
/// (message wake-ups never need them), and stored a moment after each admission.
pub struct AdmittedBadges {
    storage: Rc<RoomStorage>,
    writes: Rc<ConnectWrites>,
    admissions: RefCell<Option<Admissions>>,
    /// When expired stored badges were last dropped (seconds).
    pruned_at: Cell<i64>,
}

impl AdmittedBadges {
    pub fn new(storage: Rc<RoomStorage>, writes: Rc<ConnectWrites>) -> Self {
        Self {
            storage,
            writes,
            admissions: RefCell::new(None),
            pruned_at: Cell::new(0),
        }
    }

    /// [`Admissions::knows`].
    pub fn knows(&self, jti: &str, now_secs: i64) -> Result<bool> {
        self.with(|a| a.knows(jti, now_secs))
    }

    /// [`Admissions::revoked_since`].
    pub fn revoked_since(&self, jti: &str, user: &str, since_ms: f64) -> Result<bool> {
        self.with(|a| a.revoked_since(jti, user, since_ms))
    }

    /// The ledger admitted `jti` here: remembered in memory at once and in storage shortly
    /// after (`ConnectWrites`), where expired rows are dropped now and then.
    pub fn remember(&self, jti: &str, user: &str, expires_at: i64, now_secs: i64) -> Result<()> {
        self.writes.save_badge(jti, user, expires_at);
        self.with(|a| a.admitted(jti, user, expires_at))?;
        if now_secs - self.pruned_at.get() >= PRUNE_BADGES_EVERY_SECS {
            self.writes.prune_badges(now_secs);
            self.with(|a| a.prune(now_secs))?;
            self.pruned_at.set(now_secs);
        }
        Ok(())
    }

    /// A revocation reached the room: forgets the badge or every badge of the user, so their
    /// next socket goes to the ledger.
    pub fn forget(&self, revoked: Revoked) -> Result<()> {
        // Not written later either.
        self.writes.drop_badges(|jti, user| match revoked {
            Revoked::Badge(j) => jti == j,
            Revoked::User(u) => user == u,
        });
        match revoked {
            Revoked::Badge(jti) => self.storage.delete_badge(jti)?,
            Revoked::User(user) => self.storage.delete_badges_of(user)?,
        }
        let now_ms = worker::Date::now().as_millis() as f64;
        self.with(|a| match revoked {
            Revoked::Badge(jti) => a.revoke_badge(jti, now_ms),
            Revoked::User(user) => a.revoke_user(user, now_ms),
        })
    }

    /// Runs `f` on the admitted badges, loading them from storage first if needed.
    fn with<T>(&self, f: impl FnOnce(&mut Admissions) -> T) -> Result<T> {
        let mut admissions = self.admissions.borrow_mut();
        if admissions.is_none() {
            // No table yet means nothing was ever admitted here (and no write now, which
            // would hold the ledger call back until it is committed).
            *admissions = Some(Admissions::from_rows(self.storage.badges()?));
        }
        Ok(f(admissions.as_mut().expect("loaded above")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> Admissions {
        Admissions::from_rows([
            ("j1".to_owned(), "bob".to_owned(), 1_000),
            ("j2".to_owned(), "bob".to_owned(), 1_000),
            ("j3".to_owned(), "eve".to_owned(), 1_000),
        ])
    }

    #[test]
    fn known_until_expiry() {
        let mut a = Admissions::default();
        assert!(!a.knows("j", 10));
        a.admitted("j", "bob", 100);
        assert!(a.knows("j", 99));
        assert!(!a.knows("j", 100), "expired");
        a.prune(100);
        assert!(a.badges.is_empty());
    }

    #[test]
    fn a_revoked_badge_is_forgotten_and_only_it() {
        let mut a = room();
        a.revoke_badge("j1", 5.0);
        assert!(!a.knows("j1", 0));
        assert!(a.knows("j2", 0) && a.knows("j3", 0));
    }

    #[test]
    fn revoking_a_user_forgets_all_their_badges() {
        let mut a = room();
        a.revoke_user("bob", 5.0);
        assert!(!a.knows("j1", 0) && !a.knows("j2", 0));
        assert!(a.knows("j3", 0), "another user's badge stays");
    }

    #[test]
    fn a_revocation_during_a_ledger_call_refuses_that_connect() {
        let mut a = Admissions::default();
        // A connect of (j9, bob) started asking the ledger at t = 100 ms.
        a.revoke_badge("j9", 150.0);
        assert!(a.revoked_since("j9", "bob", 100.0));
        assert!(
            !a.revoked_since("j9", "bob", 151.0),
            "older than the connect"
        );
        assert!(!a.revoked_since("j8", "eve", 100.0), "someone else's");
        a.revoke_user("eve", 160.0);
        assert!(
            a.revoked_since("j8", "eve", 100.0),
            "the user's every badge"
        );
    }

    #[test]
    fn remembered_revocations_stay_bounded() {
        let mut a = Admissions::default();
        for n in 0..(2 * REVOCATIONS_MAX) {
            a.revoke_badge(&format!("j{n}"), n as f64);
        }
        assert!(a.revocations.len() <= REVOCATIONS_MAX);
        let last = 2 * REVOCATIONS_MAX - 1;
        assert!(
            a.revoked_since(&format!("j{last}"), "x", last as f64),
            "the newest is kept"
        );
    }
}
