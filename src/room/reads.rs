//! Read markers: each member's newest message read in this room, moved forward by the
//! `{"type":"read","id":N}` frame and by the member's own messages, never back.
//!
//! A frame is answered at once from memory (the marker is known, or read once from the room's
//! SQLite after a wake-up); the durable writes wait for the room's write-behind
//! (`activity.rs`), so a burst of read frames costs one write of the newest marker, not one
//! each. Read frames also share the connection's message rate limit (`mod.rs`). Other sockets
//! of the room get `{"type":"read","username","id"}` (read receipts) in rooms of up to
//! `PRESENCE_BROADCAST_MAX` sockets.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use worker::{Result, WebSocket};

use super::activity::Activity;
use super::sockets::Fanout;
use super::storage::RoomStorage;
use crate::protocol::ServerFrame;

/// Most markers kept in memory; a full map starts over (each is read back from SQLite on use).
const MAX_KNOWN_MARKERS: usize = 10_000;

/// What a read frame does to a marker at `current`, given the room's newest id. Pure.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadVerdict {
    /// The marker moves forward to the frame's id.
    Moved,
    /// At or behind the marker: nothing changes (a stale tab, a repeated frame).
    Stale,
    /// Past the newest message: refused with an error frame.
    BeyondLast,
}

pub fn judge(current: i64, id: i64, last_id: i64) -> ReadVerdict {
    if id > last_id {
        ReadVerdict::BeyondLast
    } else if id <= current {
        ReadVerdict::Stale
    } else {
        ReadVerdict::Moved
    }
}

/// The error frame's detail for [`ReadVerdict::BeyondLast`].
pub const BEYOND_LAST: &str = "no message with that id in this room yet";

/// The room's read markers.
pub struct Reads {
    known: RefCell<HashMap<String, i64>>,
    storage: Rc<RoomStorage>,
    activity: Rc<Activity>,
    fanout: Fanout,
    broadcast_max: usize,
}

impl Reads {
    pub fn new(
        storage: Rc<RoomStorage>,
        activity: Rc<Activity>,
        fanout: Fanout,
        broadcast_max: usize,
    ) -> Rc<Self> {
        Rc::new(Self {
            known: RefCell::new(HashMap::new()),
            storage,
            activity,
            fanout,
            broadcast_max,
        })
    }

    /// `user` read up to `id` on socket `ws`, in a room whose newest message is `last_id` and
    /// which holds `room_sockets` sockets: `Err` detail for an error frame, or done.
    pub fn read(
        &self,
        ws: &WebSocket,
        user: &str,
        id: i64,
        last_id: i64,
        room_sockets: usize,
    ) -> Result<std::result::Result<(), &'static str>> {
        match judge(self.marker(user)?, id, last_id) {
            ReadVerdict::BeyondLast => return Ok(Err(BEYOND_LAST)),
            ReadVerdict::Stale => return Ok(Ok(())),
            ReadVerdict::Moved => {}
        }
        self.moved(user, id);
        if room_sockets <= self.broadcast_max {
            let frame = ServerFrame::Read { username: user, id }.to_json();
            self.fanout.to_all_except(&frame, std::slice::from_ref(ws));
        }
        Ok(Ok(()))
    }

    /// For a DM's new socket of `user`: the other member's marker as a `read` frame, if they
    /// have read anything (the newer of memory and storage), so receipts survive a reconnect.
    pub fn others_for(&self, user: &str) -> Result<Vec<String>> {
        let mut markers: HashMap<String, i64> = self
            .storage
            .read_markers_of_others(user)?
            .into_iter()
            .collect();
        for (other, id) in self.known.borrow().iter() {
            if other != user && *id > 0 {
                let marker = markers.entry(other.clone()).or_insert(*id);
                *marker = (*marker).max(*id);
            }
        }
        let mut frames: Vec<(String, i64)> = markers.into_iter().collect();
        frames.sort();
        Ok(frames
            .iter()
            .map(|(username, id)| ServerFrame::Read { username, id: *id }.to_json())
            .collect())
    }

    /// A message by `user` with id `id` was stored: its author has read it (no receipt: the
    /// message itself tells the others).
    pub fn authored(&self, user: &str, id: i64) {
        let current = self.known.borrow().get(user).copied().unwrap_or(0);
        if id > current {
            self.moved(user, id);
        }
    }

    /// The room's newest message is now `id` (stored, or rewritten by an edit or deletion:
    /// `content` empty), for the members' lists.
    pub fn newest(&self, id: i64, user: &str, content: &str, ts: i64) {
        self.activity.message(id, user, content, ts);
    }

    fn moved(&self, user: &str, id: i64) {
        let mut known = self.known.borrow_mut();
        if let Some(marker) = known.get_mut(user) {
            *marker = id;
        } else {
            if known.len() >= MAX_KNOWN_MARKERS {
                known.clear();
            }
            known.insert(user.to_owned(), id);
        }
        drop(known);
        self.activity.marker(user, id);
    }

    /// `user`'s marker: from memory, else from SQLite (once per wake-up).
    fn marker(&self, user: &str) -> Result<i64> {
        if let Some(marker) = self.known.borrow().get(user) {
            return Ok(*marker);
        }
        let stored = self.storage.read_marker(user)?;
        let mut known = self.known.borrow_mut();
        if known.len() >= MAX_KNOWN_MARKERS {
            known.clear();
        }
        known.insert(user.to_owned(), stored);
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_move_forward_only_and_never_past_the_newest_message() {
        assert_eq!(judge(0, 1, 1), ReadVerdict::Moved);
        assert_eq!(judge(3, 5, 9), ReadVerdict::Moved);
        assert_eq!(judge(5, 5, 9), ReadVerdict::Stale);
        assert_eq!(judge(5, 2, 9), ReadVerdict::Stale);
        assert_eq!(judge(5, 10, 9), ReadVerdict::BeyondLast);
        assert_eq!(judge(0, 1, 0), ReadVerdict::BeyondLast);
    }
}
