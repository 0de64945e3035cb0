//! Every SQL statement of a room: its tables in the object's SQLite storage, what is read at
//! wake-up, the message log, the room's metadata, the badges it has had admitted, and the writes
//! a connect leaves for a moment later ([`ConnectWrites`]).
//!
//! Tables are created with the room's first write, not on wake-up: created there, they would be
//! a commit of their own before the first request runs. Until they exist the room has stored
//! nothing, which is what every read here answers without creating them.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::Deserialize;
use wasm_bindgen::prelude::*;
use worker::{Result, SqlStorage, SqlStorageValue};

use crate::defer::Deferred;
use crate::log;
use crate::protocol::{ChatMessage, LogItem, Reactions};

/// How long a connect's writes wait for the others of a burst (milliseconds).
const WRITE_AFTER_MS: u32 = 100;

/// The room's tables. A message row keeps its current state: `rev` is the room's revision when
/// it was created; `edit_rev`, `reactions_rev` and `deleted_rev` the latest of each change, and
/// `changed_rev` the latest of them (indexed, for catch-up by revision). Revisions only grow, and
/// the newest is the larger of the newest message's `rev` and the largest `changed_rev`, so it is
/// read back on wake-up without a counter written per message.
const SCHEMA: [(&str, &str); 5] = [
    (
        "messages",
        "CREATE TABLE IF NOT EXISTS messages (
            id INTEGER PRIMARY KEY, username TEXT NOT NULL, content TEXT NOT NULL, ts INTEGER NOT NULL,
            rev INTEGER NOT NULL DEFAULT 0, edited_ts INTEGER, edit_rev INTEGER, reactions_rev INTEGER,
            deleted_rev INTEGER, deleted_by TEXT, changed_rev INTEGER)",
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
    (
        "reactions",
        "CREATE TABLE IF NOT EXISTS reactions (
            id INTEGER NOT NULL, emoji TEXT NOT NULL, username TEXT NOT NULL, rev INTEGER NOT NULL,
            PRIMARY KEY (id, emoji, username))",
    ),
    // The message a sender's `client_id` named most recently (a resend within
    // `DEDUPE_WINDOW_MS` gets that message back). Written with the message, dropped with it.
    (
        "client_ids",
        "CREATE TABLE IF NOT EXISTS client_ids (
            username TEXT NOT NULL, client_id TEXT NOT NULL, id INTEGER NOT NULL,
            PRIMARY KEY (username, client_id))",
    ),
];

/// Indexes, created with the tables. Partial: a plain message, never changed, adds no entry.
const INDEXES: [&str; 1] = [
    "CREATE INDEX IF NOT EXISTS messages_changed ON messages (changed_rev) WHERE changed_rev IS NOT NULL",
];

/// What a room stored before messages could change gains the columns and tables for it; every
/// message it had was created in id order with nothing else in between, so its `rev` is its id.
const UPGRADE_FROM_PLAIN_MESSAGES: [&str; 8] = [
    "ALTER TABLE messages ADD COLUMN rev INTEGER NOT NULL DEFAULT 0",
    "UPDATE messages SET rev = id",
    "ALTER TABLE messages ADD COLUMN edited_ts INTEGER",
    "ALTER TABLE messages ADD COLUMN edit_rev INTEGER",
    "ALTER TABLE messages ADD COLUMN reactions_rev INTEGER",
    "ALTER TABLE messages ADD COLUMN deleted_rev INTEGER",
    "ALTER TABLE messages ADD COLUMN deleted_by TEXT",
    "ALTER TABLE messages ADD COLUMN changed_rev INTEGER",
];

/// Most distinct emoji on one message.
pub const MAX_REACTIONS: usize = 20;

/// Writes one `meta` entry (key, value), replacing any earlier value.
const UPSERT_META: &str = "INSERT INTO meta (key, value) VALUES (?, ?)
     ON CONFLICT(key) DO UPDATE SET value = excluded.value";

// `insertMessage` is the per-message write in one call: `SqlStorage::exec_raw` would build a JS
// array, a JS value per binding and a cursor handle, each a crossing between WASM and JS, and
// pass the query text across every time.
#[wasm_bindgen(inline_js = r#"
export function insertMessage(sql, id, username, content, ts, rev, clientId) {
  sql.exec("INSERT INTO messages (id, username, content, ts, rev) VALUES (?, ?, ?, ?, ?)", id, username, content, ts, rev);
  if (clientId !== undefined) {
    sql.exec("INSERT OR REPLACE INTO client_ids (username, client_id, id) VALUES (?, ?, ?)", username, clientId, id);
  }
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
        rev: f64,
        client_id: Option<&str>,
    ) -> std::result::Result<(), JsValue>;
}

/// Whether the room has been used or claimed, and by whom. Stored as key/value rows in `meta`.
#[derive(Debug, Default)]
pub struct RoomMeta {
    pub used: bool,
    pub private: bool,
    pub owner: Option<String>,
    /// Whether the room's moderation tables exist (`moderation.rs`).
    pub moderated: bool,
    pub slow_mode_secs: i64,
}

impl RoomMeta {
    /// Applies one stored entry.
    pub fn apply(&mut self, key: &str, value: &str) {
        match key {
            "used" => self.used = value == "1",
            "private" => self.private = value == "1",
            "owner" => self.owner = Some(value.to_owned()),
            "moderated" => self.moderated = value == "1",
            "slow_mode_secs" => self.slow_mode_secs = value.parse().unwrap_or(0),
            _ => {}
        }
    }
}

/// What a room reads from storage when it wakes up.
pub struct Wake {
    /// The newest stored message id (0: none).
    pub last_id: i64,
    /// The room's newest revision (0: nothing ever stored).
    pub last_rev: i64,
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
    /// Whether any reaction was ever stored: until then reads skip the `reactions` table.
    reacted: Cell<bool>,
    /// The newest revision of a message the history cap dropped (`meta.dropped_rev`): a
    /// catch-up from before it cannot be exact.
    dropped_rev: Cell<i64>,
    /// Whether the `read_markers` table exists (`None`: not looked up since the wake-up). Kept
    /// apart from the schema above: a room stored before read markers has its other tables.
    markers_table: Cell<Option<bool>>,
}

/// Each member's read marker (`reads.rs`): created with the first marker written.
const READ_MARKERS_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS read_markers (username TEXT PRIMARY KEY, last_read_id INTEGER NOT NULL)";

/// One stored message row.
#[derive(Deserialize)]
struct MessageRow {
    id: i64,
    username: String,
    content: String,
    ts: i64,
    rev: i64,
    edited_ts: Option<i64>,
    edit_rev: Option<i64>,
    reactions_rev: Option<i64>,
    deleted_rev: Option<i64>,
    deleted_by: Option<String>,
}

/// What a change to a message needs to know about it first.
#[derive(Debug, Deserialize)]
pub struct Target {
    pub username: String,
    #[serde(deserialize_with = "sql_bool")]
    pub deleted: bool,
}

/// SQLite has no booleans: 0 or 1.
fn sql_bool<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(i64::deserialize(d)? != 0)
}

impl RoomStorage {
    /// Reads what a wake-up needs. Reads only, so a wake-up commits nothing, except once in the
    /// life of a room stored before messages could change, which is upgraded here.
    pub fn open(sql: SqlStorage, room: &str) -> Result<(Rc<Self>, Wake)> {
        #[derive(Deserialize)]
        struct Table {
            name: String,
        }
        let tables: Vec<String> = sql
            .exec(
                "SELECT name FROM sqlite_master WHERE type = 'table'
                 AND name IN ('messages', 'meta', 'badges', 'reactions', 'client_ids')",
                None,
            )?
            .to_array::<Table>()?
            .into_iter()
            .map(|t| t.name)
            .collect();
        let has = |name: &str| tables.iter().any(|t| t == name);
        let storage = Rc::new(Self {
            sql,
            room: room.to_owned(),
            ready: Cell::new(SCHEMA.iter().all(|(name, _)| has(name))),
            reacted: Cell::new(false),
            dropped_rev: Cell::new(0),
            markers_table: Cell::new(None),
        });
        if has("messages") && !has("reactions") {
            for statement in UPGRADE_FROM_PLAIN_MESSAGES {
                storage.sql.exec(statement, None)?;
            }
            storage.ready.set(false);
            storage.ensure_tables()?;
        } else if has("messages") && !storage.ready.get() {
            // A room stored before a newer table (`client_ids`) existed: created on this wake.
            storage.ensure_tables()?;
        }
        let mut wake = Wake {
            last_id: 0,
            last_rev: 0,
            meta: RoomMeta::default(),
        };
        if storage.ready.get() {
            #[derive(Deserialize)]
            struct Newest {
                id: i64,
                rev: i64,
                changed: i64,
                reacted: i64,
            }
            let newest = storage
                .sql
                .exec(
                    "SELECT COALESCE((SELECT id FROM messages ORDER BY id DESC LIMIT 1), 0) AS id,
                            COALESCE((SELECT rev FROM messages ORDER BY id DESC LIMIT 1), 0) AS rev,
                            COALESCE((SELECT changed_rev FROM messages WHERE changed_rev IS NOT NULL
                                      ORDER BY changed_rev DESC LIMIT 1), 0) AS changed,
                            EXISTS (SELECT 1 FROM reactions) AS reacted",
                    None,
                )?
                .one::<Newest>()?;
            wake.last_id = newest.id;
            wake.last_rev = newest.rev.max(newest.changed);
            storage.reacted.set(newest.reacted != 0);
        }
        if has("meta") {
            #[derive(Deserialize)]
            struct MetaRow {
                key: String,
                value: String,
            }
            for row in storage
                .sql
                .exec("SELECT key, value FROM meta", None)?
                .to_array::<MetaRow>()?
            {
                if row.key == "dropped_rev" {
                    storage.dropped_rev.set(row.value.parse().unwrap_or(0));
                }
                wake.meta.apply(&row.key, &row.value);
            }
        }
        Ok((storage, wake))
    }

    /// Creates the tables if this is their first use: call before any write.
    pub fn ensure_tables(&self) -> Result<()> {
        if !self.ready.get() {
            for (_, ddl) in SCHEMA {
                self.sql.exec(ddl, None)?;
            }
            for ddl in INDEXES {
                self.sql.exec(ddl, None)?;
            }
            self.ready.set(true);
        }
        Ok(())
    }

    /// Writes one message (the hot path: one call into JS), and which message the sender's
    /// `client_id` names.
    pub fn insert_message(
        &self,
        id: i64,
        username: &str,
        content: &str,
        ts: i64,
        rev: i64,
        client_id: Option<&str>,
    ) -> Result<()> {
        insert_message_js(
            self.sql.as_ref(),
            id as f64,
            username,
            content,
            ts as f64,
            rev as f64,
            client_id,
        )?;
        Ok(())
    }

    /// The stored message `username` last sent with `client_id`, if it was sent at `since_ts`
    /// or later.
    pub fn message_by_client_id(
        &self,
        username: &str,
        client_id: &str,
        since_ts: i64,
    ) -> Result<Option<ChatMessage>> {
        if !self.ready.get() {
            return Ok(None);
        }
        let rows = self.rows(
            "id = (SELECT id FROM client_ids WHERE username = ? AND client_id = ?) AND ts >= ?",
            vec![username.into(), client_id.into(), since_ts.into()],
        )?;
        Ok(rows
            .first()
            .map(|row| self.message(row, Reactions::default())))
    }

    /// Drops the messages with ids up to `last_dropped`, with their reactions (the history
    /// cap), and remembers the newest revision dropped.
    pub fn drop_messages_through(&self, last_dropped: i64) -> Result<()> {
        #[derive(Deserialize)]
        struct Dropped {
            rev: Option<i64>,
        }
        let dropped = self
            .sql
            .exec(
                "SELECT MAX(MAX(rev), COALESCE(MAX(changed_rev), 0)) AS rev FROM messages WHERE id <= ?",
                vec![last_dropped.into()],
            )?
            .one::<Dropped>()?;
        self.sql.exec(
            "DELETE FROM messages WHERE id <= ?",
            vec![last_dropped.into()],
        )?;
        self.sql.exec(
            "DELETE FROM reactions WHERE id <= ?",
            vec![last_dropped.into()],
        )?;
        self.sql.exec(
            "DELETE FROM client_ids WHERE id <= ?",
            vec![last_dropped.into()],
        )?;
        if let Some(rev) = dropped.rev {
            self.set_meta("dropped_rev", &rev.to_string())?;
            self.dropped_rev.set(rev);
        }
        Ok(())
    }

    /// The newest revision of a message the history cap dropped (0: none).
    pub fn dropped_rev(&self) -> i64 {
        self.dropped_rev.get()
    }

    /// The newest `limit` messages with `after < id <= through`, in their current state.
    pub fn messages_between(&self, after: i64, through: i64, limit: i64) -> Result<Newest> {
        self.newest_where(
            "id > ? AND id <= ?",
            vec![after.into(), through.into()],
            limit,
        )
    }

    /// The newest `limit` messages with `id < before`, in their current state.
    pub fn messages_before(&self, before: i64, limit: i64) -> Result<Newest> {
        self.newest_where("id < ?", vec![before.into()], limit)
    }

    fn newest_where(
        &self,
        condition: &str,
        mut bindings: Vec<SqlStorageValue>,
        limit: i64,
    ) -> Result<Newest> {
        if !self.ready.get() {
            return Ok(Newest::default());
        }
        // One more than asked for tells whether there are more.
        bindings.push((limit + 1).into());
        let mut rows = self.rows(&format!("{condition} ORDER BY id DESC LIMIT ?"), bindings)?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        rows.reverse();
        let messages = self.current(&rows)?;
        Ok(Newest { messages, more })
    }

    /// Message rows matching `condition` (a `WHERE` clause and what follows).
    fn rows(&self, condition: &str, bindings: Vec<SqlStorageValue>) -> Result<Vec<MessageRow>> {
        self.sql
            .exec(
                &format!(
                    "SELECT id, username, content, ts, rev, edited_ts, edit_rev, reactions_rev,
                            deleted_rev, deleted_by FROM messages WHERE {condition}"
                ),
                bindings,
            )?
            .to_array::<MessageRow>()
    }

    /// The rows (in id order) as messages in their current state, with their reactions.
    fn current(&self, rows: &[MessageRow]) -> Result<Vec<ChatMessage>> {
        let mut reactions = match (rows.first(), rows.last()) {
            (Some(first), Some(last)) => self.reactions_between(first.id, last.id)?,
            _ => BTreeMap::new(),
        };
        Ok(rows
            .iter()
            .map(|row| self.message(row, reactions.remove(&row.id).unwrap_or_default()))
            .collect())
    }

    fn message(&self, row: &MessageRow, reactions: Reactions) -> ChatMessage {
        let deleted = row.deleted_rev.is_some();
        ChatMessage {
            id: row.id,
            room_id: self.room.clone(),
            username: row.username.clone(),
            content: (!deleted).then(|| row.content.clone()),
            ts: row.ts,
            rev: row.rev,
            edited_ts: if deleted { None } else { row.edited_ts },
            reactions,
            deleted,
        }
    }

    /// Reactions of the messages with ids in `first..=last`, by message.
    fn reactions_between(&self, first: i64, last: i64) -> Result<BTreeMap<i64, Reactions>> {
        #[derive(Deserialize)]
        struct Row {
            id: i64,
            emoji: String,
            username: String,
        }
        let mut by_message: BTreeMap<i64, Reactions> = BTreeMap::new();
        if !self.reacted.get() {
            return Ok(by_message);
        }
        let rows = self
            .sql
            .exec(
                "SELECT id, emoji, username FROM reactions WHERE id >= ? AND id <= ? ORDER BY rev",
                vec![first.into(), last.into()],
            )?
            .to_array::<Row>()?;
        for row in rows {
            by_message
                .entry(row.id)
                .or_default()
                .entry(row.emoji)
                .or_default()
                .push(row.username);
        }
        Ok(by_message)
    }

    /// What happened after revision `after`, as catch-up items in revision order: messages
    /// created since in their current state, and for older ones the changes since (their
    /// latest state of each kind). Only what was sent (`sent_id`, `sent_rev`): the rest reaches
    /// the client live. `None` when that is more than `limit` items.
    pub fn changes_since(
        &self,
        after: i64,
        sent_id: i64,
        sent_rev: i64,
        limit: i64,
    ) -> Result<Option<Vec<LogItem>>> {
        if !self.ready.get() {
            return Ok(Some(Vec::new()));
        }
        #[derive(Deserialize)]
        struct Id {
            id: i64,
        }
        // Revisions of messages grow with their ids: the client had every message up to this.
        let had_through = self
            .sql
            .exec(
                "SELECT id FROM messages WHERE rev <= ? ORDER BY id DESC LIMIT 1",
                vec![after.into()],
            )?
            .to_array::<Id>()?
            .first()
            .map_or(0, |r| r.id);
        let created = self.rows(
            "id > ? AND id <= ? ORDER BY id LIMIT ?",
            vec![had_through.into(), sent_id.into(), (limit + 1).into()],
        )?;
        let changed = self.rows(
            "changed_rev > ? AND id <= ? ORDER BY id LIMIT ?",
            vec![after.into(), had_through.into(), (limit + 1).into()],
        )?;
        if (created.len() + changed.len()) as i64 > limit {
            return Ok(None);
        }
        let mut items: Vec<LogItem> = self
            .current(&created)?
            .into_iter()
            .map(LogItem::Message)
            .collect();
        let mut reactions = match (changed.first(), changed.last()) {
            (Some(first), Some(last)) => self.reactions_between(first.id, last.id)?,
            _ => BTreeMap::new(),
        };
        let news = |rev: Option<i64>| rev.filter(|&r| r > after && r <= sent_rev);
        for row in &changed {
            if let Some(deleted_rev) = row.deleted_rev {
                // A deletion not sent yet comes live; before it, nothing of the old content.
                if let Some(rev) = news(Some(deleted_rev)) {
                    items.push(LogItem::Deleted {
                        id: row.id,
                        rev,
                        by: row.deleted_by.clone().unwrap_or_default(),
                        room_id: self.room.clone(),
                    });
                }
                continue;
            }
            if let (Some(rev), Some(edited_ts)) = (news(row.edit_rev), row.edited_ts) {
                items.push(LogItem::Edited {
                    id: row.id,
                    rev,
                    content: row.content.clone(),
                    edited_ts,
                    username: row.username.clone(),
                    room_id: self.room.clone(),
                });
            }
            if let Some(rev) = news(row.reactions_rev) {
                items.push(LogItem::Reactions {
                    id: row.id,
                    rev,
                    room_id: self.room.clone(),
                    reactions: reactions.remove(&row.id).unwrap_or_default(),
                });
            }
        }
        items.sort_by_key(LogItem::rev);
        Ok(Some(items))
    }

    /// The author of message `id` and whether it is deleted; `None` if there is no such message.
    pub fn target(&self, id: i64) -> Result<Option<Target>> {
        if !self.ready.get() {
            return Ok(None);
        }
        Ok(self
            .sql
            .exec(
                "SELECT username, deleted_rev IS NOT NULL AS deleted FROM messages WHERE id = ?",
                vec![id.into()],
            )?
            .to_array::<Target>()?
            .pop())
    }

    /// Replaces message `id`'s content.
    pub fn edit(&self, id: i64, content: &str, edited_ts: i64, rev: i64) -> Result<()> {
        self.sql.exec(
            "UPDATE messages SET content = ?, edited_ts = ?, edit_rev = ?, changed_rev = ? WHERE id = ?",
            vec![
                content.into(),
                edited_ts.into(),
                rev.into(),
                rev.into(),
                id.into(),
            ],
        )?;
        Ok(())
    }

    /// Deletes message `id`'s content and reactions, keeping a tombstone.
    pub fn delete(&self, id: i64, by: &str, rev: i64) -> Result<()> {
        self.sql.exec(
            "UPDATE messages SET content = '', edited_ts = NULL, deleted_rev = ?, deleted_by = ?,
                    changed_rev = ? WHERE id = ?",
            vec![rev.into(), by.into(), rev.into(), id.into()],
        )?;
        self.sql
            .exec("DELETE FROM reactions WHERE id = ?", vec![id.into()])?;
        Ok(())
    }

    /// Message `id`'s reactions now.
    pub fn reactions(&self, id: i64) -> Result<Reactions> {
        Ok(self
            .reactions_between(id, id)?
            .remove(&id)
            .unwrap_or_default())
    }

    /// Adds (`add`) or takes back `user`'s reaction `emoji` on message `id`.
    pub fn set_reaction(
        &self,
        id: i64,
        emoji: &str,
        user: &str,
        add: bool,
        rev: i64,
    ) -> Result<()> {
        let bindings = vec![id.into(), emoji.into(), user.into()];
        if add {
            let mut bindings = bindings;
            bindings.push(rev.into());
            self.sql.exec(
                "INSERT OR IGNORE INTO reactions (id, emoji, username, rev) VALUES (?, ?, ?, ?)",
                bindings,
            )?;
            self.reacted.set(true);
        } else {
            self.sql.exec(
                "DELETE FROM reactions WHERE id = ? AND emoji = ? AND username = ?",
                bindings,
            )?;
        }
        self.sql.exec(
            "UPDATE messages SET reactions_rev = ?, changed_rev = ? WHERE id = ?",
            vec![rev.into(), rev.into(), id.into()],
        )?;
        Ok(())
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

    /// One message in its current state, if stored.
    pub fn message_by_id(&self, id: i64) -> Result<Option<ChatMessage>> {
        Ok(self.messages_between(id - 1, id, 1)?.messages.pop())
    }

    /// `user`'s stored read marker (0: none).
    pub fn read_marker(&self, user: &str) -> Result<i64> {
        #[derive(Deserialize)]
        struct Row {
            last_read_id: i64,
        }
        if !self.has_markers_table()? {
            return Ok(0);
        }
        Ok(self
            .sql
            .exec(
                "SELECT last_read_id FROM read_markers WHERE username = ?",
                vec![user.into()],
            )?
            .to_array::<Row>()?
            .first()
            .map_or(0, |r| r.last_read_id))
    }

    /// Every stored read marker but `user`'s (for a DM: the other member's).
    pub fn read_markers_of_others(&self, user: &str) -> Result<Vec<(String, i64)>> {
        #[derive(Deserialize)]
        struct Row {
            username: String,
            last_read_id: i64,
        }
        if !self.has_markers_table()? {
            return Ok(Vec::new());
        }
        Ok(self
            .sql
            .exec(
                "SELECT username, last_read_id FROM read_markers WHERE username <> ? LIMIT 10",
                vec![user.into()],
            )?
            .to_array::<Row>()?
            .into_iter()
            .map(|r| (r.username, r.last_read_id))
            .collect())
    }

    /// Moves each (user, id) marker forward (never back), in the current event's commit.
    pub fn save_read_markers(&self, markers: &[(String, i64)]) -> Result<()> {
        if markers.is_empty() {
            return Ok(());
        }
        if !self.has_markers_table()? {
            self.sql.exec(READ_MARKERS_TABLE, None)?;
            self.markers_table.set(Some(true));
        }
        for (user, id) in markers {
            self.sql.exec(
                "INSERT INTO read_markers (username, last_read_id) VALUES (?, ?)
                 ON CONFLICT(username) DO UPDATE SET last_read_id = MAX(last_read_id, excluded.last_read_id)",
                vec![user.as_str().into(), (*id).into()],
            )?;
        }
        Ok(())
    }

    fn has_markers_table(&self) -> Result<bool> {
        if let Some(known) = self.markers_table.get() {
            return Ok(known);
        }
        #[derive(Deserialize)]
        struct Found {
            n: i64,
        }
        let found = self
            .sql
            .exec(
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'read_markers'",
                None,
            )?
            .one::<Found>()?
            .n
            > 0;
        self.markers_table.set(Some(found));
        Ok(found)
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
