//! What a room tells D1 about itself for `GET /me/rooms` (`directory.rs`): its newest message,
//! its members' read markers, and who joined it (public rooms: a user's first successful
//! connect), written behind the room's own commits.
//!
//! Why write-behind: listing 200 rooms must not wake 200 rooms, so the list is read from D1, and
//! D1 must follow the rooms. One D1 write per message would cost a round trip per message and
//! could reorder; instead everything that happens within [`WRITE_AFTER_MS`] is gathered
//! ([`Pending`], pure) and written in one D1 batch: at most four writes a second per room,
//! whatever its traffic. Each statement only moves forward (markers by `MAX`, the newest message
//! by id), so batches finishing out of order cannot go back. The list lags a room by at most
//! that window. Read markers are also saved in the room's own SQLite in the same event, so the
//! room knows them after a wake-up (`reads.rs`).
//!
//! If the process dies with a batch gathered, D1 misses it until the room's next write: the
//! newest message catches up with the next message, a marker with the next read frame. A failed
//! D1 write is retried with backoff, then given up (logged).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use worker::Env;

use super::storage::RoomStorage;
use crate::defer::Deferred;
use crate::directory::{snippet, Directory, Join, Newest, RoomWrites};
use crate::log;

/// How long a room gathers before writing to D1 (milliseconds).
pub const WRITE_AFTER_MS: u32 = 250;
/// Failed D1 writes retried before the batch is given up.
const MAX_RETRIES: u32 = 6;
/// Users whose join this room remembers having recorded since its wake-up; a full set starts
/// over (a repeated join is an idempotent write, never a wrong one).
const MAX_REMEMBERED_JOINS: usize = 10_000;

/// What waits for the next D1 write. Pure.
#[derive(Debug, Default, PartialEq)]
pub struct Pending {
    /// When each user joined (ms), and the room's newest message id then.
    joins: BTreeMap<String, (i64, i64)>,
    markers: BTreeMap<String, i64>,
    last: Option<Newest>,
}

impl Pending {
    pub fn join(&mut self, user: &str, at_ms: i64, newest_id: i64) {
        self.joins
            .entry(user.to_owned())
            .or_insert((at_ms, newest_id));
    }

    /// A marker only moves forward.
    pub fn marker(&mut self, user: &str, id: i64) {
        // Every stored message moves its author's marker: no new key for a known author.
        match self.markers.get_mut(user) {
            Some(marker) => *marker = (*marker).max(id),
            None => {
                self.markers.insert(user.to_owned(), id);
            }
        }
    }

    /// The room's newest message: kept unless an older one (a rewrite of the same id, after an
    /// edit or deletion, replaces it).
    pub fn message(&mut self, id: i64, user: &str, content: &str, ts: i64) {
        if self.last.as_ref().is_some_and(|last| last.id > id) {
            return;
        }
        self.last = Some(Newest {
            id,
            username: user.to_owned(),
            snippet: snippet(content),
            ts_ms: ts,
        });
    }

    pub fn forget_join(&mut self, user: &str) {
        self.joins.remove(user);
    }

    pub fn take(&mut self) -> RoomWrites {
        let taken = std::mem::take(self);
        RoomWrites {
            joins: taken
                .joins
                .into_iter()
                .map(|(user, (at_ms, newest_id))| Join {
                    user,
                    at_ms,
                    newest_id,
                })
                .collect(),
            markers: taken.markers.into_iter().collect(),
            last: taken.last,
        }
    }

    /// A write failed: what it held waits again, merged with what came since.
    pub fn merge_back(&mut self, writes: RoomWrites) {
        for join in writes.joins {
            self.join(&join.user, join.at_ms, join.newest_id);
        }
        for (user, id) in writes.markers {
            self.marker(&user, id);
        }
        if let Some(newest) = writes.last {
            if self.last.as_ref().is_none_or(|last| last.id < newest.id) {
                self.last = Some(newest);
            }
        }
    }
}

/// The room's side of the write-behind.
pub struct Activity {
    room: String,
    env: Env,
    storage: Rc<RoomStorage>,
    pending: RefCell<Pending>,
    timer: Deferred,
    /// Joins recorded (or on their way) since the wake-up.
    joined: RefCell<HashSet<String>>,
    /// Consecutive failed D1 writes.
    failures: Cell<u32>,
}

impl Activity {
    pub fn new(room: &str, env: Env, storage: Rc<RoomStorage>) -> Rc<Self> {
        Rc::new(Self {
            room: room.to_owned(),
            env,
            storage,
            pending: RefCell::new(Pending::default()),
            timer: Deferred::default(),
            joined: RefCell::new(HashSet::new()),
            failures: Cell::new(0),
        })
    }

    /// `user` connected to this public room, whose newest message is `newest_id`: it joins
    /// their list (once per wake-up), read up to that message if it was not listed before (what
    /// came before they joined is not unread to them).
    pub fn joined(self: &Rc<Self>, user: &str, now_ms: i64, newest_id: i64) {
        {
            let mut joined = self.joined.borrow_mut();
            if joined.contains(user) {
                return;
            }
            if joined.len() >= MAX_REMEMBERED_JOINS {
                joined.clear();
            }
            joined.insert(user.to_owned());
        }
        self.pending.borrow_mut().join(user, now_ms, newest_id);
        self.schedule(WRITE_AFTER_MS);
    }

    /// `user` left the room's entry in their list: their next connect joins again.
    pub fn forget_join(&self, user: &str) {
        self.joined.borrow_mut().remove(user);
        self.pending.borrow_mut().forget_join(user);
    }

    pub fn marker(self: &Rc<Self>, user: &str, id: i64) {
        self.pending.borrow_mut().marker(user, id);
        self.schedule(WRITE_AFTER_MS);
    }

    pub fn message(self: &Rc<Self>, id: i64, user: &str, content: &str, ts: i64) {
        self.pending.borrow_mut().message(id, user, content, ts);
        self.schedule(WRITE_AFTER_MS);
    }

    fn schedule(self: &Rc<Self>, ms: u32) {
        self.timer.schedule(self, ms, Self::write);
    }

    /// The timer fired: markers into the room's SQLite (this event's commit), then everything
    /// to D1 in one batch.
    fn write(self: &Rc<Self>) {
        self.timer.fired();
        let writes = self.pending.borrow_mut().take();
        if writes.is_empty() {
            return;
        }
        if let Err(e) = self.storage.save_read_markers(&writes.markers) {
            log::error(
                "read_markers_not_saved",
                &[("room", &self.room), ("error", &e.to_string())],
            );
        }
        let owner = Rc::downgrade(self);
        let (env, room) = (self.env.clone(), self.room.clone());
        worker::wasm_bindgen_futures::spawn_local(async move {
            let result = match Directory::from_env(&env) {
                Ok(directory) => directory.write_room(&room, &writes).await,
                Err(e) => Err(e),
            };
            let Some(this) = owner.upgrade() else {
                return;
            };
            match result {
                Ok(()) => this.failures.set(0),
                Err(e) => {
                    let failures = this.failures.get() + 1;
                    log::error(
                        "room_activity_write_failed",
                        &[
                            ("room", &room),
                            ("detail", &e.detail),
                            ("attempt", &failures.to_string()),
                        ],
                    );
                    if failures > MAX_RETRIES {
                        this.failures.set(0);
                        return;
                    }
                    this.failures.set(failures);
                    this.pending.borrow_mut().merge_back(writes);
                    this.schedule(WRITE_AFTER_MS << failures);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newest(id: i64, username: &str, snippet: &str, ts_ms: i64) -> Newest {
        Newest {
            id,
            username: username.into(),
            snippet: snippet.into(),
            ts_ms,
        }
    }

    #[test]
    fn a_window_gathers_into_one_batch_that_only_moves_forward() {
        let mut pending = Pending::default();
        pending.join("ann", 5, 3);
        pending.join("ann", 9, 4);
        pending.marker("ann", 7);
        pending.marker("ann", 3);
        pending.marker("bob", 2);
        pending.message(4, "bob", "four", 40);
        pending.message(6, "ann", "six", 60);
        pending.message(5, "bob", "late", 50);
        let writes = pending.take();
        assert_eq!(
            writes.joins,
            vec![Join {
                user: "ann".into(),
                at_ms: 5,
                newest_id: 3
            }]
        );
        assert_eq!(
            writes.markers,
            vec![("ann".to_string(), 7), ("bob".to_string(), 2)]
        );
        assert_eq!(writes.last, Some(newest(6, "ann", "six", 60)));
        assert!(pending.take().is_empty(), "taken once");
    }

    #[test]
    fn the_newest_message_can_be_rewritten_after_an_edit() {
        let mut pending = Pending::default();
        pending.message(6, "ann", "six", 60);
        pending.message(6, "ann", "", 60);
        assert_eq!(pending.take().last, Some(newest(6, "ann", "", 60)));
    }

    #[test]
    fn a_failed_batch_merges_back_under_newer_state() {
        let mut pending = Pending::default();
        pending.marker("ann", 7);
        pending.message(6, "ann", "six", 60);
        let failed = pending.take();
        pending.marker("ann", 9);
        pending.message(8, "bob", "eight", 80);
        pending.merge_back(failed);
        let writes = pending.take();
        assert_eq!(writes.markers, vec![("ann".to_string(), 9)]);
        assert_eq!(writes.last, Some(newest(8, "bob", "eight", 80)));
    }

    #[test]
    fn a_left_user_is_not_rejoined_by_a_waiting_batch() {
        let mut pending = Pending::default();
        pending.join("ann", 1, 0);
        pending.forget_join("ann");
        assert!(pending.take().is_empty());
    }
}
