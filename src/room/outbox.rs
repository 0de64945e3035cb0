//! A room's log on its way out: chat messages accepted one frame at a time, stored and broadcast
//! in groups (group commit), and changes to messages (edits, deletions, reactions), sent in
//! revision order with them.
//!
//! Why: every write to a Durable Object's SQLite ends its event in a commit, and locally (under
//! `wrangler dev`, workerd) that commit `fsync`s on the thread that runs every object and the
//! Worker, so the whole process waits for the disk once per message. No client sees a
//! message before it is durable, so writing later in a group loses nothing anyone saw.
//!
//! A group is sent once its commit is durable (`storage.sync()`), not at once: the runtime
//! would hold each send back behind the commit anyway (the output gate), at the price of a
//! wait per socket per message; after `sync()` the sends go straight out.
//!
//! A frame is accepted (rate limit, validation, id, timestamp, serialisation) at once, and
//! waits for a timer of 0 ms, which fires once the runtime has dispatched the frames already
//! waiting: the group is everything that arrived meanwhile, one commit for many messages.
//!
//! A connection that sends one message at a time skips the timer (`pace.rs`): while the room has
//! nothing waiting or unsent, its message is stored in the frame's own event and sent at once,
//! the runtime holding those sends until the commit is durable (the output gate). Every few
//! messages it takes the timer's way again, to see whether it has started pipelining. The choice
//! is per connection, not by the clock ("a quiet room"): a room busy broadcasting to 1000
//! sockets looks quiet to the message queued behind.
//!
//! A change is written in its frame's own event, after the waiting group is stored in that same
//! event: one commit for both, and the log keeps its order. Ids and revisions are given in arrival
//! order and stored in that order. A client connecting while a group
//! waits (for its timer, or for its commit) gets the history up to the last message sent
//! ([`Outbox::sent_id`]) and then the group as live frames, so nothing is missed or repeated
//! (`mod.rs`, `connect`).
//!
//! What one durable commit releases is one flush: its frames go one by one to plain sockets and
//! as one `batch` frame to sockets that opted in (`Fanout::to_all_grouped`). A change takes the
//! group stored in its event along ([`StoredGroup`]), so the two share a flush.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use worker::wasm_bindgen::{closure::Closure, prelude::wasm_bindgen, JsValue};
use worker::WebSocket;

use super::pace::{Pace, Way};
use super::reads::Reads;
use super::sockets::{send_quietly, Fanout};
use super::storage::RoomStorage;
use crate::defer::{weak_callback, Deferred};
use crate::log;
use crate::protocol::ErrorFrame;

/// One accepted message, serialised once for all its recipients.
pub struct Outgoing {
    pub id: i64,
    pub rev: i64,
    pub username: String,
    pub content: String,
    pub ts: i64,
    /// The sender's id for the message (`protocol::ParsedFrame::client_id`).
    pub client_id: Option<String>,
    /// The `message` frame every member gets.
    pub frame: String,
    /// Told if the message could not be stored (it is then not sent to anyone).
    pub sender: WebSocket,
}

/// A group stored by [`Outbox::store_waiting`] ahead of a change in the same event. Handed to
/// [`Outbox::changed`], the group and the change go out together once their commit is durable;
/// dropped without a change (the change was refused, or failed), the group goes out alone.
#[must_use = "dropping it sends the group alone; hand it to `Outbox::changed` to send it with the change"]
pub struct StoredGroup {
    outbox: Rc<Outbox>,
    /// The group's last revision, while it still has to be sent (`None`: empty, or taken by a
    /// change).
    last_rev: Option<i64>,
}

impl Drop for StoredGroup {
    fn drop(&mut self) {
        if let Some(last_rev) = self.last_rev.take() {
            self.outbox.after_commit(last_rev);
        }
    }
}

/// Stored, waiting for its commit to be durable before it is sent.
struct Unsent {
    rev: i64,
    /// The message's id, for a new message.
    id: Option<i64>,
    frame: String,
}

#[wasm_bindgen(inline_js = r#"
export function whenDurable(state, callback) {
  state.storage.sync().then(callback);
}"#)]
extern "C" {
    /// Calls `callback` once every write made so far is durable (`storage.sync()`).
    #[wasm_bindgen(js_name = whenDurable)]
    fn when_durable(state: &JsValue, callback: &Closure<dyn FnMut()>);
}

/// The room's log writer: owns the id and revision sequences and what waits for its commit.
pub struct Outbox {
    storage: Rc<RoomStorage>,
    /// The runtime's `DurableObjectState`, whose commits a group waits for.
    state: JsValue,
    fanout: Fanout,
    history_cap: i64,
    /// Id of the newest accepted message (stored, or waiting in `waiting`).
    last_id: Cell<i64>,
    /// The newest revision given (to a message or a change).
    last_rev: Cell<i64>,
    waiting: RefCell<Vec<Outgoing>>,
    /// The 0 ms timer that flushes `waiting`.
    flush_timer: Deferred,
    unsent: RefCell<VecDeque<Unsent>>,
    /// Per commit not yet durable, the last revision it holds, oldest first.
    durable_marks: RefCell<VecDeque<i64>>,
    /// Id of the newest message, and the newest revision, sent to the room.
    sent_id: Cell<i64>,
    sent_rev: Cell<i64>,
    /// Called when a commit is durable (made once, holds the outbox weakly).
    on_durable: OnceCell<Closure<dyn FnMut()>>,
    /// Since this wake-up: messages stored, and the groups (commits) they took.
    stored: Cell<u64>,
    groups: Cell<u64>,
    /// Per connection id: whether its messages skip the timer (`pace.rs`).
    paces: RefCell<HashMap<u32, Pace>>,
    /// Told what was stored: authors' read markers and the room's newest message, written
    /// behind to D1 (`activity.rs`).
    reads: Rc<Reads>,
}

impl Outbox {
    /// `last_id`, `last_rev`: the newest stored id and revision, read at wake-up.
    pub fn new(
        storage: Rc<RoomStorage>,
        state: JsValue,
        fanout: Fanout,
        history_cap: i64,
        (last_id, last_rev): (i64, i64),
        reads: Rc<Reads>,
    ) -> Rc<Self> {
        Rc::new(Self {
            storage,
            state,
            fanout,
            history_cap,
            last_id: Cell::new(last_id),
            last_rev: Cell::new(last_rev),
            waiting: RefCell::new(Vec::new()),
            flush_timer: Deferred::default(),
            unsent: RefCell::new(VecDeque::new()),
            durable_marks: RefCell::new(VecDeque::new()),
            sent_id: Cell::new(last_id),
            sent_rev: Cell::new(last_rev),
            on_durable: OnceCell::new(),
            stored: Cell::new(0),
            groups: Cell::new(0),
            paces: RefCell::new(HashMap::new()),
            reads,
        })
    }

    /// Id of the newest accepted message.
    pub fn last_id(&self) -> i64 {
        self.last_id.get()
    }

    /// Id of the newest message sent to the room's sockets: history for a new socket stops
    /// there, as the ones after reach it live.
    pub fn sent_id(&self) -> i64 {
        self.sent_id.get()
    }

    /// The newest revision sent to the room's sockets: a new socket's history describes the
    /// room as of it, and every live frame after it has a higher one.
    pub fn sent_rev(&self) -> i64 {
        self.sent_rev.get()
    }

    /// Since this wake-up: messages stored, and in how many groups (one commit each).
    pub fn stored_and_groups(&self) -> (u64, u64) {
        (self.stored.get(), self.groups.get())
    }

    /// The id the next accepted message gets.
    pub fn next_id(&self) -> i64 {
        self.last_id.get() + 1
    }

    /// The revision the next accepted message or change gets.
    pub fn next_rev(&self) -> i64 {
        self.last_rev.get() + 1
    }

    /// Takes a message built with [`Outbox::next_id`] and [`Outbox::next_rev`] from connection
    /// `conn`: stored and sent at once if the connection sends one message at a time and nothing
    /// is waiting or unsent (`pace.rs`), else queued for the room's next group (the first of a
    /// group starts the timer).
    pub fn accept(self: &Rc<Self>, message: Outgoing, conn: u32) {
        debug_assert_eq!(message.id, self.next_id());
        debug_assert_eq!(message.rev, self.next_rev());
        self.last_id.set(message.id);
        self.last_rev.set(message.rev);
        let way = self
            .paces
            .borrow_mut()
            .entry(conn)
            .or_default()
            .decide(message.id, self.sent_id.get());
        let idle = self.waiting.borrow().is_empty() && self.unsent.borrow().is_empty();
        if way == Way::AtOnce && idle {
            self.store_and_send(message);
            return;
        }
        self.waiting.borrow_mut().push(message);
        self.flush_timer.schedule(self, 0, Self::flush);
    }

    /// Before a change is written: stores the waiting group now, in the current event, so that
    /// the change sees every accepted message and lands after them in the same commit. The
    /// group goes out with the change ([`Outbox::changed`]), one flush for both; if no change
    /// follows, dropping the returned [`StoredGroup`] sends the group alone.
    pub fn store_waiting(self: &Rc<Self>) -> StoredGroup {
        let mut group = self.waiting.take();
        let stored = self.store_group(&group);
        group.truncate(stored);
        let last_rev = group.last().map(|m| m.rev);
        self.unsent
            .borrow_mut()
            .extend(group.into_iter().map(|m| Unsent {
                rev: m.rev,
                id: Some(m.id),
                frame: m.frame,
            }));
        StoredGroup {
            outbox: Rc::clone(self),
            last_rev,
        }
    }

    /// A change with revision [`Outbox::next_rev`] was written in the current event, after
    /// `group` was stored in it: `frame` goes to the room with the group once the commit is
    /// durable, in order.
    pub fn changed(self: &Rc<Self>, mut group: StoredGroup, rev: i64, frame: String) {
        debug_assert_eq!(rev, self.next_rev());
        group.last_rev = None;
        self.last_rev.set(rev);
        self.unsent.borrow_mut().push_back(Unsent {
            rev,
            id: None,
            frame,
        });
        self.after_commit(rev);
    }

    /// Whether a message from `username` with `client_id` was accepted and waits to be stored
    /// (it then reaches every socket of the room, the sender's included, once it is).
    pub fn is_waiting(&self, username: &str, client_id: &str) -> bool {
        self.waiting
            .borrow()
            .iter()
            .any(|m| m.username == username && m.client_id.as_deref() == Some(client_id))
    }

    /// The connection closed: forgets its pace.
    pub fn forget(&self, conn: u32) {
        self.paces.borrow_mut().remove(&conn);
    }

    /// Stores one message in the current event's commit and sends it to the room at once: the
    /// runtime holds those sends until the commit is durable (the output gate). Used only while
    /// nothing is waiting or unsent, so the log is still stored and sent in order.
    fn store_and_send(&self, message: Outgoing) {
        if self.store_group(std::slice::from_ref(&message)) == 0 {
            return;
        }
        self.fanout.to_all(&message.frame);
        self.sent_id.set(message.id);
        self.sent_rev.set(message.rev);
    }

    /// The timer fired: stores the waiting group (one commit: the event's implicit
    /// transaction) and has what was stored sent once the commit is durable.
    fn flush(self: &Rc<Self>) {
        self.flush_timer.fired();
        drop(self.store_waiting());
    }

    /// What is unsent up to revision `last_rev` goes out once the current commit is durable.
    fn after_commit(self: &Rc<Self>, last_rev: i64) {
        self.durable_marks.borrow_mut().push_back(last_rev);
        let callback = self
            .on_durable
            .get_or_init(|| weak_callback(self, Self::send_durable));
        when_durable(&self.state, callback);
    }

    /// The oldest pending commit is durable: sends what it held to every socket in the room, in
    /// revision order. (Commits finish in the order they were made, and so do the `sync()`
    /// promises that wait for them.)
    fn send_durable(self: &Rc<Self>) {
        let Some(mark) = self.durable_marks.borrow_mut().pop_front() else {
            return;
        };
        let mut frames = Vec::new();
        {
            let mut unsent = self.unsent.borrow_mut();
            while unsent.front().is_some_and(|u| u.rev <= mark) {
                let item = unsent.pop_front().unwrap();
                if let Some(id) = item.id {
                    self.sent_id.set(id);
                }
                self.sent_rev.set(item.rev);
                frames.push(item.frame);
            }
        }
        // One flush: a batch for the sockets that opted in, the frames one by one for the rest.
        self.fanout.to_all_grouped(&frames);
    }

    /// Stores `group` in order in the current event's commit; returns how many were stored. If a
    /// write fails, that message and the ones after it are not stored: their senders get an
    /// error frame, and the ids and revisions go back to the last stored one, so ids stay
    /// without gaps (nothing took a revision after them: a change stores the group first).
    fn store_group(&self, group: &[Outgoing]) -> usize {
        let mut stored = 0;
        for message in group {
            if let Err(e) = self.store(message) {
                log::error("message_not_stored", &[("error", &e.to_string())]);
                self.last_id.set(message.id - 1);
                self.last_rev.set(message.rev - 1);
                break;
            }
            stored += 1;
        }
        if stored > 0 {
            self.stored.set(self.stored.get() + stored as u64);
            self.groups.set(self.groups.get() + 1);
            for message in &group[..stored] {
                self.reads.authored(&message.username, message.id);
            }
            let newest = &group[stored - 1];
            self.reads
                .newest(newest.id, &newest.username, &newest.content, newest.ts);
        }
        for message in &group[stored..] {
            let error = ErrorFrame::new("message not stored; send it again")
                .answering(message.client_id.as_deref());
            send_quietly(&message.sender, &error.to_json());
        }
        stored
    }

    /// Writes one message and drops the oldest beyond the history cap (in batches of 1% of
    /// the cap rather than one row per insert).
    fn store(&self, m: &Outgoing) -> worker::Result<()> {
        self.storage.insert_message(
            m.id,
            &m.username,
            &m.content,
            m.ts,
            m.rev,
            m.client_id.as_deref(),
        )?;
        let cap = self.history_cap;
        if m.id > cap && m.id % (cap / 100).max(1) == 0 {
            self.storage.drop_messages_through(m.id - cap)?;
        }
        Ok(())
    }
}
