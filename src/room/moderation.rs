//! Moderation of an owned room: the owner appoints moderators; the owner and moderators kick,
//! ban and mute members, set slow mode and delete others' messages; every action goes to the
//! room's audit log.
//!
//! The rules are pure ([`authorize`], [`Sanctions::blocks`]) and unit-tested natively;
//! [`Moderation`] keeps the room's moderators, sanctions and audit log in the room's SQLite
//! (its own three tables, created with the first action, so rooms nobody moderates carry none)
//! and a copy in memory, read once per wake-up and only in rooms that were ever moderated
//! (`meta.moderated`), so the message path asks memory, never storage.
//!
//! The in-memory maps are keyed by the ASCII-lowercased name, as SQLite's `COLLATE NOCASE`
//! compares: usernames are ASCII (`protocol::Username::parse`), so ASCII folding is the whole
//! of their case folding (and keeps std's Unicode case tables out of the WASM).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use worker::{Result, SqlStorage};

use crate::http::{ApiError, ApiResult};
use crate::protocol::CloseReason;

/// Most moderators a room has.
pub const MAX_MODERATORS: usize = 50;
/// Most bans and mutes in force in a room.
pub const MAX_SANCTIONS: usize = 10_000;
/// Audit entries kept per room (the oldest go first).
pub const AUDIT_KEPT: i64 = 1000;
/// Largest page of `GET /rooms/{id}/audit`.
pub const MAX_AUDIT_PAGE: i64 = 100;
/// Longest slow mode: six hours.
pub const MAX_SLOW_MODE_SECS: i64 = 6 * 3600;
/// Furthest a ban or mute may be set ahead: a year (without `until` it lasts until lifted).
pub const MAX_SANCTION_MS: i64 = 366 * 24 * 3600 * 1000;

const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS moderators (
        username TEXT PRIMARY KEY COLLATE NOCASE,
        added_by TEXT NOT NULL,
        ts INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sanctions (
        username TEXT NOT NULL COLLATE NOCASE,
        kind TEXT NOT NULL,
        until_ms INTEGER,
        by TEXT NOT NULL,
        ts INTEGER NOT NULL,
        PRIMARY KEY (username, kind))",
    "CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        until_ms INTEGER,
        message_id INTEGER,
        slow_mode_secs INTEGER)",
];

/// What a user is in an owned room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Moderator,
    Member,
}

/// A moderation action, named as the audit log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ModeratorAdded,
    ModeratorRemoved,
    Kick,
    Ban,
    Unban,
    Mute,
    Unmute,
    Delete,
    SlowMode,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::ModeratorAdded => "moderator_added",
            Action::ModeratorRemoved => "moderator_removed",
            Action::Kick => "kick",
            Action::Ban => "ban",
            Action::Unban => "unban",
            Action::Mute => "mute",
            Action::Unmute => "unmute",
            Action::Delete => "delete",
            Action::SlowMode => "slow_mode",
        }
    }

    pub fn parse(name: &str) -> Option<Action> {
        [
            Action::ModeratorAdded,
            Action::ModeratorRemoved,
            Action::Kick,
            Action::Ban,
            Action::Unban,
            Action::Mute,
            Action::Unmute,
            Action::Delete,
            Action::SlowMode,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }

    fn targets_someone(self) -> bool {
        self != Action::SlowMode
    }
}

/// Why an action is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    NoOwner,
    NotModerator,
    OwnerOnly,
    Protected,
    OwnerIsNoModerator,
    SelfTarget,
    NoTarget,
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> ApiError {
        match denied {
            Denied::NoOwner => ApiError::new(
                403,
                "this room has no owner, so no moderators: only rooms created with POST /rooms are moderated",
            ),
            Denied::NotModerator => {
                ApiError::new(403, "only the room's owner and moderators can do this")
            }
            Denied::OwnerOnly => ApiError::new(403, "only the room's owner can do this"),
            Denied::Protected => ApiError::new(
                403,
                "moderators cannot act on the room's owner or on another moderator",
            ),
            Denied::OwnerIsNoModerator => {
                ApiError::unprocessable("the owner already has every moderator's rights")
            }
            Denied::SelfTarget => ApiError::unprocessable("you cannot do this to yourself"),
            Denied::NoTarget => ApiError::unprocessable("this action needs a username"),
        }
    }
}

/// Whether `actor` may take `action` on a user whose role is `target` (`None`: no target, as
/// for slow mode). Roles are `None` in a room without an owner.
pub fn authorize(
    action: Action,
    actor: Option<Role>,
    target: Option<Role>,
) -> std::result::Result<(), Denied> {
    let actor = actor.ok_or(Denied::NoOwner)?;
    if actor == Role::Member {
        return Err(Denied::NotModerator);
    }
    if action.targets_someone() && target.is_none() {
        return Err(Denied::NoTarget);
    }
    match (action, actor, target) {
        (Action::ModeratorAdded | Action::ModeratorRemoved, Role::Moderator, _) => {
            Err(Denied::OwnerOnly)
        }
        (Action::ModeratorAdded | Action::ModeratorRemoved, _, Some(Role::Owner)) => {
            Err(Denied::OwnerIsNoModerator)
        }
        (_, Role::Moderator, Some(Role::Owner | Role::Moderator)) => Err(Denied::Protected),
        (_, Role::Owner, Some(Role::Owner)) => Err(Denied::SelfTarget),
        _ => Ok(()),
    }
}

/// A ban or a mute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ban,
    Mute,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ban => "ban",
            Kind::Mute => "mute",
        }
    }
}

/// The bans and mutes in force: lower-cased name → until (ms; `None`: until lifted).
#[derive(Debug, Default)]
pub struct Sanctions {
    bans: HashMap<String, Option<i64>>,
    mutes: HashMap<String, Option<i64>>,
}

impl Sanctions {
    fn of(&self, kind: Kind) -> &HashMap<String, Option<i64>> {
        match kind {
            Kind::Ban => &self.bans,
            Kind::Mute => &self.mutes,
        }
    }

    fn of_mut(&mut self, kind: Kind) -> &mut HashMap<String, Option<i64>> {
        match kind {
            Kind::Ban => &mut self.bans,
            Kind::Mute => &mut self.mutes,
        }
    }

    /// Whether `kind` holds `user` at `now_ms`; `Some(until)` if it does.
    pub fn blocks(&self, kind: Kind, user: &str, now_ms: i64) -> Option<Option<i64>> {
        match self.of(kind).get(&user.to_ascii_lowercase()) {
            Some(None) => Some(None),
            Some(Some(until)) if *until > now_ms => Some(Some(*until)),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        self.bans.len() + self.mutes.len()
    }
}

/// Why a post is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostRefusal {
    Muted { until: Option<i64> },
    SlowMode { retry_after_ms: u64 },
}

/// One audit entry, as `GET /rooms/{id}/audit` lists it.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub ts: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", rename(serialize = "until"))]
    pub until_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_mode_secs: Option<i64>,
}

/// A moderation request the Worker forwards: the actor comes from the verified badge, the
/// target is a username the Worker found in the accounts (its canonical spelling).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub actor: String,
    pub action: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub until: Option<i64>,
    #[serde(default)]
    pub slow_mode_secs: Option<i64>,
}

/// What the room does to the target's sockets after an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Close the target's sockets.
    Close(CloseReason),
}

/// The room's moderators, sanctions, slow mode and audit log.
pub struct Moderation {
    sql: SqlStorage,
    /// Whether the tables exist (the room was ever moderated).
    ready: RefCell<bool>,
    /// Lower-cased name → the name as the accounts spell it.
    moderators: RefCell<BTreeMap<String, String>>,
    sanctions: RefCell<Sanctions>,
    slow_mode_secs: RefCell<i64>,
    /// When each user last posted (ms), while slow mode is on. Kept in memory only: after a
    /// wake-up a user may post once before the gap applies again.
    last_post: RefCell<HashMap<String, i64>>,
}

impl Moderation {
    /// Reads the room's moderation at wake-up: nothing for a room never moderated.
    pub fn open(sql: SqlStorage, moderated: bool, slow_mode_secs: i64) -> Result<Self> {
        let moderation = Self {
            sql,
            ready: RefCell::new(moderated),
            moderators: RefCell::default(),
            sanctions: RefCell::default(),
            slow_mode_secs: RefCell::new(slow_mode_secs),
            last_post: RefCell::default(),
        };
        if moderated {
            moderation.load()?;
        }
        Ok(moderation)
    }

    fn load(&self) -> Result<()> {
        #[derive(Deserialize)]
        struct Moderator {
            username: String,
        }
        #[derive(Deserialize)]
        struct Sanction {
            username: String,
            kind: String,
            until_ms: Option<i64>,
        }
        let moderators = self
            .sql
            .exec("SELECT username FROM moderators", None)?
            .to_array::<Moderator>()?;
        *self.moderators.borrow_mut() = moderators
            .into_iter()
            .map(|m| (m.username.to_ascii_lowercase(), m.username))
            .collect();
        let mut sanctions = Sanctions::default();
        for row in self
            .sql
            .exec("SELECT username, kind, until_ms FROM sanctions", None)?
            .to_array::<Sanction>()?
        {
            let kind = if row.kind == Kind::Ban.name() {
                Kind::Ban
            } else {
                Kind::Mute
            };
            sanctions
                .of_mut(kind)
                .insert(row.username.to_ascii_lowercase(), row.until_ms);
        }
        *self.sanctions.borrow_mut() = sanctions;
        Ok(())
    }

    /// Creates the tables with the first action; `mark` records in `meta` that they exist.
    fn ensure_tables(&self, mark: impl FnOnce() -> Result<()>) -> Result<()> {
        if !*self.ready.borrow() {
            for ddl in SCHEMA {
                self.sql.exec(ddl, None)?;
            }
            mark()?;
            *self.ready.borrow_mut() = true;
        }
        Ok(())
    }

    /// `user`'s role in a room owned by `owner` (`None` without an owner).
    pub fn role_of(&self, user: &str, owner: Option<&str>) -> Option<Role> {
        let owner = owner?;
        Some(if owner.eq_ignore_ascii_case(user) {
            Role::Owner
        } else if self
            .moderators
            .borrow()
            .contains_key(&user.to_ascii_lowercase())
        {
            Role::Moderator
        } else {
            Role::Member
        })
    }

    /// Whether `user` may remove messages written by `author` (their own always).
    pub fn may_remove(&self, user: &str, author: &str, owner: Option<&str>) -> bool {
        user.eq_ignore_ascii_case(author)
            || authorize(
                Action::Delete,
                self.role_of(user, owner),
                self.role_of(author, owner),
            )
            .is_ok()
    }

    /// Until when `user` is banned (`Some(None)`: until lifted), or `None`.
    pub fn banned(&self, user: &str, now_ms: i64) -> Option<Option<i64>> {
        self.sanctions.borrow().blocks(Kind::Ban, user, now_ms)
    }

    /// Whether `user` may post now: not muted, and past slow mode's gap (owner and moderators
    /// are exempt from slow mode). An allowed post starts the next gap.
    pub fn may_post(
        &self,
        user: &str,
        owner: Option<&str>,
        now_ms: i64,
    ) -> std::result::Result<(), PostRefusal> {
        if let Some(until) = self.sanctions.borrow().blocks(Kind::Mute, user, now_ms) {
            return Err(PostRefusal::Muted { until });
        }
        let gap_ms = *self.slow_mode_secs.borrow() * 1000;
        if gap_ms == 0
            || matches!(
                self.role_of(user, owner),
                Some(Role::Owner | Role::Moderator)
            )
        {
            return Ok(());
        }
        let key = user.to_ascii_lowercase();
        let mut last_post = self.last_post.borrow_mut();
        if let Some(last) = last_post.get(&key) {
            let next = last + gap_ms;
            if now_ms < next {
                return Err(PostRefusal::SlowMode {
                    retry_after_ms: (next - now_ms) as u64,
                });
            }
        }
        last_post.insert(key, now_ms);
        Ok(())
    }

    /// Whether `user` is muted now (edits and reactions are refused too).
    pub fn muted(&self, user: &str, now_ms: i64) -> Option<Option<i64>> {
        self.sanctions.borrow().blocks(Kind::Mute, user, now_ms)
    }

    pub fn moderators(&self) -> Vec<String> {
        self.moderators.borrow().values().cloned().collect()
    }

    pub fn slow_mode_secs(&self) -> i64 {
        *self.slow_mode_secs.borrow()
    }

    /// Applies a forwarded request in a room owned by `owner`; `mark` records in the room's
    /// `meta` that it is moderated (and the slow mode), in the same commit.
    pub fn apply(
        &self,
        request: &Request,
        owner: Option<&str>,
        now_ms: i64,
        mut set_meta: impl FnMut(&str, &str) -> Result<()>,
    ) -> ApiResult<Effect> {
        let action = Action::parse(&request.action)
            .filter(|a| *a != Action::Delete)
            .ok_or_else(|| ApiError::unprocessable("unknown moderation action"))?;
        let actor = request.actor.as_str();
        let target = request.target.as_deref();
        if target.is_some_and(|t| t.eq_ignore_ascii_case(actor)) {
            return Err(Denied::SelfTarget.into());
        }
        authorize(
            action,
            self.role_of(actor, owner),
            target.and_then(|t| self.role_of(t, owner)),
        )?;
        let until = match (action, request.until) {
            (Action::Ban | Action::Mute, Some(until)) => {
                if until <= now_ms || until > now_ms + MAX_SANCTION_MS {
                    return Err(ApiError::unprocessable(
                        "until must be a time in the future, at most a year ahead, in milliseconds since the epoch",
                    ));
                }
                Some(until)
            }
            _ => None,
        };
        self.ensure_tables(|| set_meta("moderated", "1"))?;
        let target_name = target.unwrap_or_default();
        let mut entry = AuditEntry {
            id: 0,
            ts: now_ms,
            actor: actor.to_owned(),
            action: action.name().to_owned(),
            target: target.map(str::to_owned),
            until_ms: until,
            message_id: None,
            slow_mode_secs: None,
        };
        let effect = match action {
            Action::ModeratorAdded => {
                if self.moderators.borrow().len() >= MAX_MODERATORS
                    && !self
                        .moderators
                        .borrow()
                        .contains_key(&target_name.to_ascii_lowercase())
                {
                    return Err(ApiError::unprocessable(format!(
                        "a room has at most {MAX_MODERATORS} moderators"
                    )));
                }
                self.sql.exec(
                    "INSERT INTO moderators (username, added_by, ts) VALUES (?, ?, ?)
                     ON CONFLICT (username) DO NOTHING",
                    vec![target_name.into(), actor.into(), (now_ms as f64).into()],
                )?;
                self.moderators
                    .borrow_mut()
                    .insert(target_name.to_ascii_lowercase(), target_name.to_owned());
                Effect::None
            }
            Action::ModeratorRemoved => {
                self.sql.exec(
                    "DELETE FROM moderators WHERE username = ?",
                    vec![target_name.into()],
                )?;
                self.moderators
                    .borrow_mut()
                    .remove(&target_name.to_ascii_lowercase());
                Effect::None
            }
            Action::Kick => Effect::Close(CloseReason::Kicked),
            Action::Ban | Action::Mute => {
                let kind = if action == Action::Ban {
                    Kind::Ban
                } else {
                    Kind::Mute
                };
                self.sanction(kind, target_name, until, actor, now_ms)?;
                if kind == Kind::Ban {
                    // A banned moderator is no longer one.
                    self.sql.exec(
                        "DELETE FROM moderators WHERE username = ?",
                        vec![target_name.into()],
                    )?;
                    self.moderators
                        .borrow_mut()
                        .remove(&target_name.to_ascii_lowercase());
                    Effect::Close(CloseReason::Banned)
                } else {
                    Effect::None
                }
            }
            Action::Unban | Action::Unmute => {
                let kind = if action == Action::Unban {
                    Kind::Ban
                } else {
                    Kind::Mute
                };
                self.sql.exec(
                    "DELETE FROM sanctions WHERE username = ? AND kind = ?",
                    vec![target_name.into(), kind.name().into()],
                )?;
                let lifted = self
                    .sanctions
                    .borrow_mut()
                    .of_mut(kind)
                    .remove(&target_name.to_ascii_lowercase())
                    .is_some();
                if !lifted {
                    return Err(ApiError::new(
                        404,
                        format!("{target_name} is not under a {}", kind.name()),
                    ));
                }
                Effect::None
            }
            Action::SlowMode => {
                let secs = request.slow_mode_secs.unwrap_or(-1);
                if !(0..=MAX_SLOW_MODE_SECS).contains(&secs) {
                    return Err(ApiError::unprocessable(format!(
                        "slow_mode_secs must be an integer from 0 (off) to {MAX_SLOW_MODE_SECS}"
                    )));
                }
                set_meta("slow_mode_secs", &secs.to_string())?;
                *self.slow_mode_secs.borrow_mut() = secs;
                entry.slow_mode_secs = Some(secs);
                Effect::None
            }
            Action::Delete => unreachable!("filtered above"),
        };
        self.record(&entry)?;
        Ok(effect)
    }

    fn sanction(
        &self,
        kind: Kind,
        target: &str,
        until: Option<i64>,
        actor: &str,
        now_ms: i64,
    ) -> ApiResult<()> {
        let key = target.to_ascii_lowercase();
        {
            let sanctions = self.sanctions.borrow();
            if sanctions.len() >= MAX_SANCTIONS && !sanctions.of(kind).contains_key(&key) {
                return Err(ApiError::unprocessable(format!(
                    "a room has at most {MAX_SANCTIONS} bans and mutes in force"
                )));
            }
        }
        let until_value = until.map_or(worker::SqlStorageValue::Null, |u| (u as f64).into());
        self.sql.exec(
            "INSERT INTO sanctions (username, kind, until_ms, by, ts) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (username, kind) DO UPDATE SET until_ms = excluded.until_ms,
                 by = excluded.by, ts = excluded.ts",
            vec![
                target.into(),
                kind.name().into(),
                until_value,
                actor.into(),
                (now_ms as f64).into(),
            ],
        )?;
        self.sanctions.borrow_mut().of_mut(kind).insert(key, until);
        Ok(())
    }

    /// Records that `actor` deleted message `id` written by `author`.
    pub fn record_delete(
        &self,
        actor: &str,
        author: &str,
        id: i64,
        now_ms: i64,
        set_meta: impl FnOnce(&str, &str) -> Result<()>,
    ) -> Result<()> {
        self.ensure_tables(|| set_meta("moderated", "1"))?;
        self.record(&AuditEntry {
            id: 0,
            ts: now_ms,
            actor: actor.to_owned(),
            action: Action::Delete.name().to_owned(),
            target: Some(author.to_owned()),
            until_ms: None,
            message_id: Some(id),
            slow_mode_secs: None,
        })
    }

    fn record(&self, entry: &AuditEntry) -> Result<()> {
        let optional =
            |v: Option<i64>| v.map_or(worker::SqlStorageValue::Null, |v| (v as f64).into());
        self.sql.exec(
            "INSERT INTO audit (ts, actor, action, target, until_ms, message_id, slow_mode_secs)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            vec![
                (entry.ts as f64).into(),
                entry.actor.as_str().into(),
                entry.action.as_str().into(),
                entry
                    .target
                    .as_deref()
                    .map_or(worker::SqlStorageValue::Null, Into::into),
                optional(entry.until_ms),
                optional(entry.message_id),
                optional(entry.slow_mode_secs),
            ],
        )?;
        self.sql.exec(
            "DELETE FROM audit WHERE id <= (SELECT MAX(id) FROM audit) - ?",
            vec![(AUDIT_KEPT as f64).into()],
        )?;
        Ok(())
    }

    /// Audit entries older than `before` (an entry id), newest first; whether there are more.
    pub fn audit(&self, before: i64, limit: i64) -> Result<(Vec<AuditEntry>, bool)> {
        if !*self.ready.borrow() {
            return Ok((Vec::new(), false));
        }
        let mut entries = self
            .sql
            .exec(
                "SELECT id, ts, actor, action, target, until_ms, message_id, slow_mode_secs
                 FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?",
                vec![(before as f64).into(), ((limit + 1) as f64).into()],
            )?
            .to_array::<AuditEntry>()?;
        let more = entries.len() as i64 > limit;
        entries.truncate(limit as usize);
        Ok((entries, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_owner_and_moderators_moderate() {
        use Role::*;
        for action in [
            Action::Kick,
            Action::Ban,
            Action::Mute,
            Action::Unban,
            Action::Delete,
        ] {
            assert_eq!(authorize(action, Some(Owner), Some(Member)), Ok(()));
            assert_eq!(authorize(action, Some(Owner), Some(Moderator)), Ok(()));
            assert_eq!(authorize(action, Some(Moderator), Some(Member)), Ok(()));
            assert_eq!(
                authorize(action, Some(Moderator), Some(Owner)),
                Err(Denied::Protected),
                "{action:?}"
            );
            assert_eq!(
                authorize(action, Some(Moderator), Some(Moderator)),
                Err(Denied::Protected)
            );
            assert_eq!(
                authorize(action, Some(Member), Some(Member)),
                Err(Denied::NotModerator)
            );
            assert_eq!(authorize(action, None, None), Err(Denied::NoOwner));
            assert_eq!(authorize(action, Some(Owner), None), Err(Denied::NoTarget));
        }
        assert_eq!(authorize(Action::SlowMode, Some(Moderator), None), Ok(()));
        assert_eq!(
            authorize(Action::SlowMode, Some(Member), None),
            Err(Denied::NotModerator)
        );
    }

    #[test]
    fn only_the_owner_appoints_moderators() {
        use Role::*;
        for action in [Action::ModeratorAdded, Action::ModeratorRemoved] {
            assert_eq!(authorize(action, Some(Owner), Some(Member)), Ok(()));
            assert_eq!(authorize(action, Some(Owner), Some(Moderator)), Ok(()));
            assert_eq!(
                authorize(action, Some(Moderator), Some(Member)),
                Err(Denied::OwnerOnly)
            );
            assert_eq!(
                authorize(action, Some(Owner), Some(Owner)),
                Err(Denied::OwnerIsNoModerator)
            );
        }
    }

    #[test]
    fn action_names_round_trip() {
        for name in [
            "moderator_added",
            "moderator_removed",
            "kick",
            "ban",
            "unban",
            "mute",
            "unmute",
            "delete",
            "slow_mode",
        ] {
            assert_eq!(Action::parse(name).map(Action::name), Some(name));
        }
        assert_eq!(Action::parse("BAN"), None);
    }

    #[test]
    fn sanctions_expire_and_ignore_case() {
        let mut s = Sanctions::default();
        s.of_mut(Kind::Ban).insert("eve".into(), Some(1_000));
        s.of_mut(Kind::Mute).insert("mallory".into(), None);
        assert_eq!(s.blocks(Kind::Ban, "Eve", 999), Some(Some(1_000)));
        assert_eq!(s.blocks(Kind::Ban, "eve", 1_000), None, "over at until");
        assert_eq!(s.blocks(Kind::Mute, "MALLORY", i64::MAX), Some(None));
        assert_eq!(s.blocks(Kind::Ban, "mallory", 0), None, "a mute is no ban");
    }
}
