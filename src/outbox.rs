//! A room's chat messages on their way out: accepted one frame at a time, stored and broadcast
//! in groups (group commit).
//!
//! Why: every write to a Durable Object's SQLite ends its event in a commit, and locally (under
//! `wrangler dev`, workerd) that commit `fsync`s on the thread that runs every object and the
//! Worker, so the whole process waits for the disk once per message. The runtime holds a
//! broadcast back until the write before it is durable (the output gate), so writing later
//! in a group loses nothing a client could have seen.
//!
//! A frame is accepted (rate limit, validation, id, timestamp, serialisation) at once, and
//! waits for a timer of 0 ms, which fires once the runtime has dispatched the frames already
//! waiting: the group is everything that arrived meanwhile, one commit for many messages. A
//! message alone pays one timer turn. (Sending a message to a quiet room at once was tried
//! and reverted: a room busy broadcasting to 1000 sockets looked quiet by the clock to the
//! message queued behind, and lost its groups; `bench/RESULTS.md`, round 7.)
//!
//! Where nothing groups (each sender waits for its message to come back before the next, so a
//! room has one message in flight), the timer turn only adds latency: after
//! `SINGLES_BEFORE_DIRECT` timed groups of one message in a row, the room stores and sends
//! the next `DIRECT_RUN` messages in their own events, then times a group again to look.
//!
//! Ids are given in arrival order and stored in that order; a client connecting while a group
//! waits gets the stored history and then the group as live frames, so nothing is missed or
//! repeated (`room.rs`, `connect`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use worker::wasm_bindgen::JsValue;
use worker::{SqlStorage, WebSocket};

use crate::protocol::error_frame;
use crate::timer::Deferred;

/// One accepted message, serialised once for all its recipients.
pub struct Outgoing {
    pub id: i64,
    pub username: String,
    pub content: String,
    pub ts: i64,
    /// The `message` frame every member gets.
    pub frame: String,
    /// Told if the message could not be stored (it is then not sent to anyone).
    pub sender: WebSocket,
}

/// The room's message log writer: owns the id sequence and the group waiting for its commit.
pub struct Outbox {
    sql: SqlStorage,
    /// The runtime's `DurableObjectState`, whose sockets a group is broadcast to.
    state: JsValue,
    history_cap: i64,
    /// Id of the newest accepted message (stored, or waiting in `waiting`).
    last_id: Cell<i64>,
    waiting: RefCell<Vec<Outgoing>>,
    /// The 0 ms timer that flushes `waiting`.
    flush_timer: Deferred,
    /// Whether messages wait for the timer or go at once.
    policy: Cell<GroupPolicy>,
    /// Since this wake-up: messages stored, and the groups (commits) they took.
    stored: Cell<u64>,
    groups: Cell<u64>,
}

impl Outbox {
    /// `last_id`: the newest stored id, read at wake-up.
    pub fn new(sql: SqlStorage, state: JsValue, history_cap: i64, last_id: i64) -> Rc<Self> {
        Rc::new(Self {
            sql,
            state,
            history_cap,
            last_id: Cell::new(last_id),
            waiting: RefCell::new(Vec::new()),
            flush_timer: Deferred::default(),
            policy: Cell::new(GroupPolicy::default()),
            stored: Cell::new(0),
            groups: Cell::new(0),
        })
    }

    /// Id of the newest accepted message.
    pub fn last_id(&self) -> i64 {
        self.last_id.get()
    }

    /// Since this wake-up: messages stored, and in how many groups (one commit each).
    pub fn stored_and_groups(&self) -> (u64, u64) {
        (self.stored.get(), self.groups.get())
    }

    /// The id the next accepted message gets.
    pub fn next_id(&self) -> i64 {
        self.last_id.get() + 1
    }

    /// Queues a message built with [`Outbox::next_id`]; the first of a group starts the timer
    /// (or, while groups are of one message, it is stored and sent at once).
    pub fn accept(self: &Rc<Self>, message: Outgoing) {
        debug_assert_eq!(message.id, self.next_id());
        self.last_id.set(message.id);
        self.waiting.borrow_mut().push(message);
        let mut policy = self.policy.get();
        if policy.direct() {
            let size = self.flush();
            policy.flushed(size, false);
        } else {
            self.flush_timer.schedule(self, 0, Self::on_timer);
        }
        self.policy.set(policy);
    }

    fn on_timer(self: &Rc<Self>) {
        self.flush_timer.fired();
        let size = self.flush();
        let mut policy = self.policy.get();
        policy.flushed(size, true);
        self.policy.set(policy);
    }

    /// Stores the waiting group (one commit: the event's implicit transaction), then sends
    /// each message to every socket in the room, in id order. If a write fails, that message
    /// and the ones after it are not sent: their senders get an error frame, and the ids go
    /// back to the last stored one, so ids stay without gaps. Returns the group's size.
    fn flush(&self) -> usize {
        let group = self.waiting.take();
        let mut stored = 0;
        for message in &group {
            if let Err(e) = self.store(message) {
                crate::log::event("error", "message_not_stored", &[("error", &e.to_string())]);
                self.last_id.set(message.id - 1);
                break;
            }
            stored += 1;
        }
        if stored > 0 {
            self.stored.set(self.stored.get() + stored as u64);
            self.groups.set(self.groups.get() + 1);
        }
        let (sent, unsent) = group.split_at(stored);
        for message in unsent {
            let _ = message
                .sender
                .send_with_str(error_frame("message not stored; send it again"));
        }
        for message in sent {
            crate::room::broadcast_to_all(&self.state, &message.frame);
        }
        group.len()
    }

    /// Writes one message and drops the oldest beyond the history cap (in batches of 1% of
    /// the cap rather than one row per insert).
    fn store(&self, m: &Outgoing) -> worker::Result<()> {
        self.sql.exec_raw(
            "INSERT INTO messages (id, username, content, ts) VALUES (?, ?, ?, ?)",
            vec![
                JsValue::from_f64(m.id as f64),
                JsValue::from_str(&m.username),
                JsValue::from_str(&m.content),
                JsValue::from_f64(m.ts as f64),
            ],
        )?;
        let cap = self.history_cap;
        if m.id > cap && m.id % (cap / 100).max(1) == 0 {
            self.sql.exec(
                "DELETE FROM messages WHERE id <= ?",
                vec![(m.id - cap).into()],
            )?;
        }
        Ok(())
    }
}

/// Timed groups of one message in a row before messages go at once.
const SINGLES_BEFORE_DIRECT: u32 = 8;
/// Messages sent at once before a group is timed again, to see whether groups form now.
const DIRECT_RUN: u32 = 32;

/// Whether a room's messages wait for the group timer or go at once (see the module's header).
/// Pure, so it is unit-tested natively.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupPolicy {
    /// Timed groups of one in a row.
    singles: u32,
    /// Messages still to send at once.
    direct_left: u32,
}

impl GroupPolicy {
    /// Whether the next message goes at once.
    pub fn direct(&self) -> bool {
        self.direct_left > 0
    }

    /// A group of `size` was stored, `timed` (after the timer) or at once.
    pub fn flushed(&mut self, size: usize, timed: bool) {
        if !timed {
            self.direct_left = self.direct_left.saturating_sub(1);
            return;
        }
        if size == 0 {
            return; // the group already went with a direct message
        }
        if size > 1 {
            self.singles = 0;
            return;
        }
        self.singles += 1;
        if self.singles >= SINGLES_BEFORE_DIRECT {
            self.singles = 0;
            self.direct_left = DIRECT_RUN;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_of_one_in_a_row_make_messages_go_at_once_for_a_while() {
        let mut policy = GroupPolicy::default();
        for _ in 0..SINGLES_BEFORE_DIRECT - 1 {
            policy.flushed(1, true);
            assert!(!policy.direct());
        }
        policy.flushed(1, true);
        assert!(policy.direct());
        for _ in 0..DIRECT_RUN - 1 {
            policy.flushed(1, false);
            assert!(policy.direct());
        }
        policy.flushed(1, false);
        assert!(!policy.direct(), "then a group is timed again");
    }

    #[test]
    fn one_real_group_resets_the_count_of_singles() {
        let mut policy = GroupPolicy::default();
        for _ in 0..SINGLES_BEFORE_DIRECT - 1 {
            policy.flushed(1, true);
        }
        policy.flushed(5, true);
        for _ in 0..SINGLES_BEFORE_DIRECT - 1 {
            policy.flushed(1, true);
            assert!(!policy.direct());
        }
    }

    #[test]
    fn an_empty_timed_flush_counts_for_nothing() {
        let mut policy = GroupPolicy::default();
        for _ in 0..100 {
            policy.flushed(0, true);
        }
        assert_eq!(policy, GroupPolicy::default());
    }

    #[test]
    fn after_a_direct_run_groups_decide_again() {
        let mut policy = GroupPolicy::default();
        for _ in 0..SINGLES_BEFORE_DIRECT {
            policy.flushed(1, true);
        }
        for _ in 0..DIRECT_RUN {
            policy.flushed(1, false);
        }
        // Messages now group: the room keeps timing them.
        for _ in 0..100 {
            policy.flushed(3, true);
            assert!(!policy.direct());
        }
    }
}
