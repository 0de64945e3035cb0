//! Every SQL statement of a room: its tables in the object's SQLite storage, what is read at
//! wake-up, the message log, the room's metadata, the badges it has had admitted, and the writes
//! a connect leaves for a moment later ([`ConnectWrites`]).
//!
//! Tables are created with the room's first write, not on wake-up: created there, they would be
//! a commit of their own before the first request runs. Until they exist the room has stored
//! nothing, which is what every read here answers without creating them.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use serde::Deserialize;
use wasm_bindgen::prelude::*;
use worker::{Result, SqlStorage, SqlStorageValue};

use crate::defer::Deferred;
use crate::log;
use crate::protocol::ChatMessage;

/// How long a connect's writes wait for the others of a burst (milliseconds).
const WRITE_AFTER_MS: u32 = 100;

/// The room's tables.
const SCHEMA: [(&str, &str); 3] = [
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
const UPSERT_META: &str = "INSERT INTO meta (key, value) VALUES (?, ?)
     ON CONFLICT(key) DO UPDATE SET value = excluded.value";

// `insertMessage` is the per-message write in one call: `SqlStorage::exec_raw` would build a JS
// array, a JS value per binding and a cursor handle, each a crossing between WASM and JS, and
// pass the query text across every time.
#[wasm_bindgen(inline_js = r#"
export function insertMessage(sql, id, username, content, ts) {
  sql.exec("INSERT INTO messages (id, username, content, ts) VALUES (?, ?, ?, ?)", id, username, content, ts);
}"#)]
extern "C" {
    /// Inserts one row into `messages` (`sql`: the object's `SqlStorage`).
    #[wasm_bindgen(js_name = insertMessage, catch)]
    fn insert_message_js(
        sql: &JsValue,
        id: f64,
        username: &str,
        content: &str,
        ts: f64,
    ) -> std::result::Result<(), JsValue>;
}

/// Whether the room has been used or claimed, and by whom. Stored as key/value rows in `meta`.
#[derive(Debug, Default)]
pub struct RoomMeta {
    pub used: bool,
    pub private: bool,
    pub owner: Option<String>,
}

impl RoomMeta {
    /// Applies one stored entry.
    pub fn apply(&mut self, key: &str, value: &str) {
        match key {
            "used" => self.used = value == "1",
            "private" => self.private = value == "1",
            "owner" => self.owner = Some(value.to_owned()),
            _ => {}
        }
    }
}

/// What a room reads from storage when it wakes up.
pub struct Wake {
    /// The newest stored message id (0: none).
    pub last_id: i64,
    pub meta: RoomMeta,
}

/// The figures `/stats` reports about the stored messages.
#[derive(Debug, Default, Deserialize)]
pub struct MessageCounts {
    pub stored: i64,
    pub oldest: Option<i64>,
    pub newest: Option<i64>,
    pub last_ts: Option<i64>,
}

/// The newest messages matching a read, oldest first, and whether older ones also match.
#[derive(Debug, Default)]
pub struct Newest {
    pub messages: Vec<ChatMessage>,
    pub more: bool,
}

/// One admitted badge as stored: (jti, username, expiry in seconds).
pub type BadgeRow = (String, String, i64);

/// A room's storage: the only place that runs SQL for it.
pub struct RoomStorage {
    sql: SqlStorage,
    /// The room's name, which every message read carries.
    room: String,
    /// Whether the tables exist: created with the first write that needs them.
    ready: Cell<bool>,
}

impl RoomStorage {
    /// Reads what a wake-up needs; reads only, so a wake-up commits nothing.
    pub fn open(sql: SqlStorage, room: &str) -> Result<(Rc<Self>, Wake)> {
        #[derive(Deserialize)]
        struct Table {
            name: String,
        }
        let tables: Vec<String> = sql
            .exec(
                "SELECT name FROM sqlite_master WHERE type = 'table'
                 AND name IN ('messages', 'meta', 'badges')",
                None,
            )?
            .to_array::<Table>()?
            .into_iter()
            .map(|t| t.name)
            .collect();
        let has = |name: &str| tables.iter().any(|t| t == name);
        #[derive(Deserialize)]
        struct MaxId {
            last: i64,
        }
        let last_id = if has("messages") {
            sql.exec("SELECT COALESCE(MAX(id), 0) AS last FROM messages", None)?
                .one::<MaxId>()?
                .last
        } else {
            0
        };
        #[derive(Deserialize)]
        struct MetaRow {
            key: String,
            value: String,
        }
        let mut meta = RoomMeta::default();
        if has("meta") {
            for row in sql
                .exec("SELECT key, value FROM meta", None)?
                .to_array::<MetaRow>()?
            {
                meta.apply(&row.key, &row.value);
            }
        }
        let storage = Rc::new(Self {
            sql,
            room: room.to_owned(),
            ready: Cell::new(SCHEMA.iter().all(|(name, _)| has(name))),
        });
        Ok((storage, Wake { last_id, meta }))
    }

    /// Creates the tables if this is their first use: call before any write.
    pub fn ensure_tables(&self) -> Result<()> {
        if !self.ready.get() {
            for (_, ddl) in SCHEMA {
                self.sql.exec(ddl, None)?;
            }
            self.ready.set(true);
        }
        Ok(())
    }

    /// Writes one message (the hot path: one call into JS).
    pub fn insert_message(&self, id: i64, username: &str, content: &str, ts: i64) -> Result<()> {
        insert_message_js(self.sql.as_ref(), id as f64, username, content, ts as f64)?;
        Ok(())
    }

    /// Drops the messages with ids up to `last_dropped` (the history cap).
    pub fn drop_messages_through(&self, last_dropped: i64) -> Result<()> {
        self.sql.exec(
            "DELETE FROM messages WHERE id <= ?",
            vec![last_dropped.into()],
        )?;
        Ok(())
    }

    /// The newest `limit` messages with `after < id <= through`.
    pub fn messages_between(&self, after: i64, through: i64, limit: i64) -> Result<Newest> {
        self.newest_where(
            "id > ? AND id <= ?",
            vec![after.into(), through.into()],
            limit,
        )
    }

    /// The newest `limit` messages with `id < before`.
    pub fn messages_before(&self, before: i64, limit: i64) -> Result<Newest> {
        self.newest_where("id < ?", vec![before.into()], limit)
    }

    fn newest_where(
        &self,
        condition: &str,
        mut bindings: Vec<SqlStorageValue>,
        limit: i64,
    ) -> Result<Newest> {
        #[derive(Deserialize)]
        struct MessageRow {
            id: i64,
            username: String,
            content: String,
            ts: i64,
        }
        if !self.ready.get() {
            return Ok(Newest::default());
        }
        // One more than asked for tells whether there are more.
        bindings.push((limit + 1).into());
        let rows = self
            .sql
            .exec(
                &format!(
                    "SELECT id, username, content, ts FROM messages WHERE {condition}
                     ORDER BY id DESC LIMIT ?"
                ),
                bindings,
            )?
            .to_array::<MessageRow>()?;
        let more = rows.len() as i64 > limit;
        let mut messages: Vec<ChatMessage> = rows
            .into_iter()
            .take(limit as usize)
            .map(|r| ChatMessage {
                id: r.id,
                room_id: self.room.clone(),
                username: r.username,
                content: r.content,
                ts: r.ts,
            })
            .collect();
        messages.reverse();
        Ok(Newest { messages, more })
    }

    /// How many messages are stored, the oldest and newest ids and the last time.
    pub fn message_counts(&self) -> Result<MessageCounts> {
        if !self.ready.get() {
            return Ok(MessageCounts::default());
        }
        self.sql
            .exec(
                "SELECT COUNT(*) AS stored, MIN(id) AS oldest, MAX(id) AS newest, MAX(ts) AS last_ts
                 FROM messages",
                None,
            )?
            .one::<MessageCounts>()
    }

    /// The size of the room's database, in bytes.
    pub fn size_bytes(&self) -> usize {
        self.sql.database_size()
    }

    /// Writes one metadata entry.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.ensure_tables()?;
        self.sql.exec(UPSERT_META, vec![key.into(), value.into()])?;
        Ok(())
    }

    /// Every admitted badge stored.
    pub fn badges(&self) -> Result<Vec<BadgeRow>> {
        #[derive(Deserialize)]
        struct Row {
            jti: String,
            username: String,
            exp: i64,
        }
        if !self.ready.get() {
            return Ok(Vec::new());
        }
        Ok(self
            .sql
            .exec("SELECT jti, username, exp FROM badges", None)?
            .to_array::<Row>()?
            .into_iter()
            .map(|r| (r.jti, r.username, r.exp))
            .collect())
    }

    /// Deletes one stored badge.
    pub fn delete_badge(&self, jti: &str) -> Result<()> {
        self.delete_badges_where("jti", jti)
    }

    /// Deletes every stored badge of `user`.
    pub fn delete_badges_of(&self, user: &str) -> Result<()> {
        self.delete_badges_where("username", user)
    }

    fn delete_badges_where(&self, column: &str, value: &str) -> Result<()> {
        // Without the table nothing was ever admitted here; no need to create it now.
        if self.ready.get() {
            self.sql.exec(
                &format!("DELETE FROM badges WHERE {column} = ?"),
                vec![value.into()],
            )?;
        }
        Ok(())
    }

    /// The writes [`ConnectWrites`] gathered, in the current event's commit.
    fn write_later(&self, writes: &Gathered) -> Result<()> {
        self.ensure_tables()?;
        if writes.mark_used {
            self.sql
                .exec(UPSERT_META, vec!["used".into(), "1".into()])?;
        }
        if let Some(now) = writes.prune_before {
            self.sql
                .exec("DELETE FROM badges WHERE exp <= ?", vec![now.into()])?;
        }
        for (jti, user, exp) in &writes.badges {
            self.sql.exec(
                "INSERT OR REPLACE INTO badges (jti, username, exp) VALUES (?, ?, ?)",
                vec![jti.as_str().into(), user.as_str().into(), (*exp).into()],
            )?;
        }
        Ok(())
    }
}

/// What connects left for [`ConnectWrites`] to write.
#[derive(Default)]
struct Gathered {
    /// Admitted badges.
    badges: Vec<BadgeRow>,
    mark_used: bool,
    /// Drop stored badges that expired before this time (seconds).
    prune_before: Option<i64>,
}

/// The writes a connect leaves for a moment later, in one commit shared by every connect of a
/// burst.
///
/// Why later: a write in a connect's event holds the socket's 101 until the commit is durable
/// (the runtime's output gate), and locally every commit `fsync`s on the thread that runs
/// every object. None of what a connect writes needs to be durable before the socket opens:
/// - the room's tables, created on first use;
/// - the mark that the room has been used (an unused room may still be claimed as private):
///   kept in memory at once, so a claim is refused from the first connect on;
/// - the badges the session ledger admitted (`admissions.rs`), a copy that only spares asking
///   the ledger again after a restart (the ledger keeps its own record), and the dropping of
///   expired ones.
///
/// So they wait `WRITE_AFTER_MS`. If the process stops before that, they are lost: the badges
/// are asked about again, and a room whose sockets are all gone and that never stored a message
/// can be claimed.
pub struct ConnectWrites {
    storage: Rc<RoomStorage>,
    gathered: RefCell<Gathered>,
    timer: Deferred,
}

impl ConnectWrites {
    pub fn new(storage: Rc<RoomStorage>) -> Rc<Self> {
        Rc::new(Self {
            storage,
            gathered: RefCell::new(Gathered::default()),
            timer: Deferred::default(),
        })
    }

    /// Stores the mark that the room has been used.
    pub fn mark_used(self: &Rc<Self>) {
        self.gathered.borrow_mut().mark_used = true;
        self.schedule();
    }

    /// Stores one admitted badge.
    pub fn save_badge(self: &Rc<Self>, jti: &str, user: &str, expires_at: i64) {
        self.gathered
            .borrow_mut()
            .badges
            .push((jti.to_owned(), user.to_owned(), expires_at));
        self.schedule();
    }

    /// Drops stored badges that expired before `now` (seconds).
    pub fn prune_badges(self: &Rc<Self>, now: i64) {
        self.gathered.borrow_mut().prune_before = Some(now);
        self.schedule();
    }

    /// Forgets waiting badges a revocation covers: they are never written.
    pub fn drop_badges(&self, revoked: impl Fn(&str, &str) -> bool) {
        self.gathered
            .borrow_mut()
            .badges
            .retain(|(jti, user, _)| !revoked(jti, user));
    }

    fn schedule(self: &Rc<Self>) {
        self.timer.schedule(self, WRITE_AFTER_MS, Self::write);
    }

    /// Everything waiting, in one commit (the event's implicit transaction). A failure is
    /// logged: what it loses is what a restart would (see above).
    fn write(self: &Rc<Self>) {
        self.timer.fired();
        let gathered = self.gathered.take();
        if let Err(e) = self.storage.write_later(&gathered) {
            log::warn("connect_writes_failed", &[("error", &e.to_string())]);
        }
    }
}
