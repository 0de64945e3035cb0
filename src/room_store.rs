//! A room's tables, and the writes its connects leave for a moment later.
//!
//! Why later: a write in a connect's event holds the socket's 101 until the commit is durable
//! (the runtime's output gate), and locally every commit `fsync`s on the thread that runs
//! every object. None of what a connect writes needs to be durable before the socket opens:
//! - the room's tables, created on first use: until then the room has no messages, no badges
//!   and no metadata, which is what every read of a missing table answers;
//! - the mark that the room has been used (an unused room may still be claimed as private):
//!   kept in memory at once, so a claim is refused from the first connect on;
//! - the badges the session ledger admitted (`admissions.rs`), a copy that only spares asking
//!   the ledger again after a restart (the ledger keeps its own record), and the dropping of
//!   expired ones.
//!
//! So they wait `WRITE_AFTER_MS` and go in one commit, shared by every connect of a burst. If
//! the process stops before that, they are lost: the badges are asked about again, and a room
//! whose sockets are all gone and that never stored a message can be claimed.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use worker::SqlStorage;

use crate::timer::Deferred;

/// How long a connect's writes wait for the others of a burst (milliseconds).
const WRITE_AFTER_MS: u32 = 100;

/// The room's tables in its SQLite storage.
pub const SCHEMA: [(&str, &str); 3] = [
    (
        "messages",
        "CREATE TABLE IF NOT EXISTS messages (
            id INTEGER PRIMARY KEY, username TEXT NOT NULL, content TEXT NOT NULL, ts INTEGER NOT NULL)",
    ),
    (
        "meta",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    (
        "badges",
        "CREATE TABLE IF NOT EXISTS badges (
            jti TEXT PRIMARY KEY, username TEXT NOT NULL, exp INTEGER NOT NULL)",
    ),
];

/// Writes one `meta` entry (key, value), replacing any earlier value.
pub const UPSERT_META: &str = "INSERT INTO meta (key, value) VALUES (?, ?)
     ON CONFLICT(key) DO UPDATE SET value = excluded.value";

/// Whether the room's tables exist; creates them with the first write that needs them.
pub struct Schema {
    sql: SqlStorage,
    ready: Cell<bool>,
}

impl Schema {
    /// `ready`: whether all of [`SCHEMA`]'s tables were found at wake-up.
    pub fn new(sql: SqlStorage, ready: bool) -> Rc<Self> {
        Rc::new(Self {
            sql,
            ready: Cell::new(ready),
        })
    }

    /// Whether the tables exist. Before they do, the room has stored nothing: reads answer
    /// "none" without creating them (which would be a write, and a commit, of its own).
    pub fn ready(&self) -> bool {
        self.ready.get()
    }

    /// Creates the tables if this is their first use: call before any write.
    pub fn ensure(&self) -> worker::Result<()> {
        if !self.ready.get() {
            for (_, ddl) in SCHEMA {
                self.sql.exec(ddl, None)?;
            }
            self.ready.set(true);
        }
        Ok(())
    }
}

/// The writes connects left for later (see the module's header), done in one commit.
pub struct ConnectWrites {
    sql: SqlStorage,
    schema: Rc<Schema>,
    /// Admitted badges: (jti, username, expiry).
    badges: RefCell<Vec<(String, String, i64)>>,
    mark_used: Cell<bool>,
    /// Drop stored badges that expired before this time (seconds).
    prune_before: Cell<Option<i64>>,
    timer: Deferred,
}

impl ConnectWrites {
    pub fn new(sql: SqlStorage, schema: Rc<Schema>) -> Rc<Self> {
        Rc::new(Self {
            sql,
            schema,
            badges: RefCell::new(Vec::new()),
            mark_used: Cell::new(false),
            prune_before: Cell::new(None),
            timer: Deferred::default(),
        })
    }

    /// Stores the mark that the room has been used.
    pub fn mark_used(self: &Rc<Self>) {
        self.mark_used.set(true);
        self.schedule();
    }

    /// Stores one admitted badge.
    pub fn save_badge(self: &Rc<Self>, jti: &str, user: &str, expires_at: i64) {
        self.badges
            .borrow_mut()
            .push((jti.to_owned(), user.to_owned(), expires_at));
        self.schedule();
    }

    /// Drops stored badges that expired before `now` (seconds).
    pub fn prune_badges(self: &Rc<Self>, now: i64) {
        self.prune_before.set(Some(now));
        self.schedule();
    }

    /// Forgets waiting badges a revocation covers: they are never written.
    pub fn drop_badges(&self, revoked: impl Fn(&str, &str) -> bool) {
        self.badges
            .borrow_mut()
            .retain(|(jti, user, _)| !revoked(jti, user));
    }

    fn schedule(self: &Rc<Self>) {
        self.timer.schedule(self, WRITE_AFTER_MS, Self::write);
    }

    /// Everything waiting, in one commit (the event's implicit transaction). A failure is
    /// logged: what it loses is what a restart would (see the module's header).
    fn write(self: &Rc<Self>) {
        self.timer.fired();
        let badges = self.badges.take();
        let mark_used = self.mark_used.replace(false);
        let prune_before = self.prune_before.take();
        let written = (|| -> worker::Result<()> {
            self.schema.ensure()?;
            if mark_used {
                self.sql
                    .exec(UPSERT_META, vec!["used".into(), "1".into()])?;
            }
            if let Some(now) = prune_before {
                self.sql
                    .exec("DELETE FROM badges WHERE exp <= ?", vec![now.into()])?;
            }
            for (jti, user, exp) in badges {
                self.sql.exec(
                    "INSERT OR REPLACE INTO badges (jti, username, exp) VALUES (?, ?, ?)",
                    vec![jti.into(), user.into(), exp.into()],
                )?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            crate::log::event(
                "warn",
                "connect_writes_failed",
                &[("error", &e.to_string())],
            );
        }
    }
}
