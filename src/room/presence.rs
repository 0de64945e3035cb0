//! Batching of presence announcements under bursts. [`PresenceBatch`] is the pure core (no
//! `worker` types), unit-tested natively; [`Presence`] sends the frames and runs the timer.
//!
//! Every join and leave goes to every member of the room, so a burst of N connects would cost
//! N² sends. Instead:
//!
//! - **Leading edge.** When no announcement reached the room in the last
//!   `PRESENCE_BATCH_MS` (and none is waiting), a join or leave goes out at once as a
//!   `{"type":"join"|"leave","username"}` frame. A quiet room sees no difference.
//! - **Otherwise it waits** in the batch, and one flush, at (last announcement + window), sends
//!   a single `{"type":"presence_changes","joined":[...],"left":[...]}` to every member.
//!
//! What a `presence_changes` frame means: the users whose presence changed since the previous
//! announcement, each listed once under their state now (`joined`: online, `left`: offline), in
//! the order of their latest change. A name is never in both lists. Clients apply it on top of
//! whatever they know, as set operations (add the `joined`, remove the `left`), so an entry that
//! repeats what a client already knows (say, its own name, or a user its `presence` frame on
//! connect already listed) changes nothing.
//!
//! A user whose changes within one batch end where they began (joined then left, or left and
//! came back) nets out and is not listed: every member still believes the state from before,
//! which is also the state now. Unless another user connected while they were in the other
//! state: that member's `presence` frame showed it, so the user is listed under their state
//! now (harmless for everyone else: adding a present name or removing an absent one is a
//! no-op). The user's own connects do not count: a user who left has no socket left to tell,
//! and a user who came back saw themselves online, which is their state now.
//!
//! The batch lives in memory only. If the runtime evicts the room while a batch waits, that
//! batch is lost: members miss those joins and leaves until they reconnect (a connect always
//! gets the full `presence` frame) or ask `GET /rooms/{id}/members`, which is authoritative.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use worker::WebSocket;

use super::sockets::Fanout;
use crate::defer::{BurstWindow, Deferred, Flush};
use crate::protocol::ServerFrame;

/// The content of one `presence_changes` frame.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub joined: Vec<String>,
    pub left: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty()
    }
}

/// One user's changes in the current batch.
///
/// Who must be told what at the flush: members connected before the batch believe
/// `was_online`; a member who connected during it believes the user's state at that moment.
/// So the user is listed (under `online`, their state now) if that differs from `was_online`,
/// or if another user's socket got its `presence` frame while this user was in the other state.
/// The user's own sockets do not count: when they are offline now, those sockets are closed;
/// and their own connects only ever see them online.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    /// Online before the batch: the opposite of its first change.
    was_online: bool,
    /// Online now: the latest change.
    online: bool,
    /// Position in the batch: the order of the latest change.
    order: u64,
    /// [`PresenceBatch::snapshots`] at the latest change, and how many since were this
    /// user's own: the rest were taken by other users' sockets, in the current state.
    since: u64,
    own_since: u64,
    /// Whether another user's socket got a `presence` frame while this user was online /
    /// offline, earlier in the batch.
    seen_online: bool,
    seen_offline: bool,
}

impl Pending {
    fn listed(&self) -> bool {
        let seen_other_state = if self.online {
            self.seen_offline
        } else {
            self.seen_online
        };
        self.online != self.was_online || seen_other_state
    }
}

/// Presence announcements of one room: when the last one went out, and what waits for the next
/// flush. Times are milliseconds (`Date.now()`).
#[derive(Debug)]
pub struct PresenceBatch {
    /// When the last announcement (single frame or flush) reached at least one member, and
    /// the scheduled flush (`burst.rs`).
    window: BurstWindow,
    /// Changes waiting for the flush, by user (one entry per user, ordered by `order`).
    pending: HashMap<String, Pending>,
    next_order: u64,
    /// How many `presence` frames (snapshots of who is online) connects have sent.
    snapshots: u64,
}

impl PresenceBatch {
    /// `window_ms` is `PRESENCE_BATCH_MS`; 0 sends every change at once (no batching).
    pub fn new(window_ms: u64) -> Self {
        Self {
            window: BurstWindow::new(window_ms as f64),
            pending: HashMap::new(),
            next_order: 0,
            snapshots: 0,
        }
    }

    /// A user's first socket opened (`joined`) or last socket closed, at `now`. On
    /// `Flush::Now`, send the single `join` / `leave` frame now, then call
    /// [`PresenceBatch::announced`] if it reached anyone.
    pub fn record(&mut self, user: &str, joined: bool, now: f64) -> Flush {
        if self.pending.is_empty() && self.window.quiet(now) {
            return Flush::Now(());
        }
        let order = self.next_order;
        self.next_order += 1;
        match self.pending.get_mut(user) {
            Some(p) => {
                // The state since the previous change ends: did anyone else see it?
                if self.snapshots - p.since > p.own_since {
                    if p.online {
                        p.seen_online = true;
                    } else {
                        p.seen_offline = true;
                    }
                }
                p.online = joined;
                p.order = order;
                p.since = self.snapshots;
                p.own_since = 0;
            }
            None => {
                self.pending.insert(
                    user.to_owned(),
                    Pending {
                        was_online: !joined,
                        online: joined,
                        order,
                        since: self.snapshots,
                        own_since: 0,
                        seen_online: false,
                        seen_offline: false,
                    },
                );
            }
        }
        Flush::queued(&mut self.window, now)
    }

    /// A socket of `user` got its `presence` frame (who is online now) on connect. Call it
    /// after recording that connect's own join, if any.
    pub fn snapshot_sent(&mut self, user: &str) {
        self.snapshots += 1;
        if let Some(own) = self.pending.get_mut(user) {
            own.own_since += 1;
        }
    }

    /// An announcement (single frame or flush) went out at `now` to at least one member.
    pub fn announced(&mut self, now: f64) {
        self.window.sent(now);
    }

    /// The flush timer fired: everything queued, as one frame's content (possibly empty, when
    /// all of it cancelled out). Call [`PresenceBatch::announced`] if it was sent to anyone.
    pub fn flush(&mut self) -> Changes {
        self.window.fired();
        let mut pending: Vec<(String, Pending)> =
            self.pending.drain().filter(|(_, p)| p.listed()).collect();
        pending.sort_unstable_by_key(|(_, p)| p.order);
        let mut changes = Changes::default();
        for (user, p) in pending {
            if p.online {
                changes.joined.push(user);
            } else {
                changes.left.push(user);
            }
        }
        changes
    }
}

/// The room's join/leave announcements: the batch, and the timer that sends it. Lost on
/// eviction (see above).
pub struct Presence {
    batch: RefCell<PresenceBatch>,
    fanout: Fanout,
    /// Above this many sockets nothing is announced (`PRESENCE_BROADCAST_MAX`).
    broadcast_max: usize,
    flush: Deferred,
}

impl Presence {
    pub fn new(window_ms: u64, broadcast_max: usize, fanout: Fanout) -> Rc<Self> {
        Rc::new(Self {
            batch: RefCell::new(PresenceBatch::new(window_ms)),
            fanout,
            broadcast_max,
            flush: Deferred::default(),
        })
    }

    /// Announces that `user` joined (their first socket opened) or left (their last closed):
    /// at once as a `join`/`leave` frame to everyone but `except` in a quiet room, otherwise in
    /// the next `presence_changes` batch, whose flush this may schedule.
    pub fn announce(self: &Rc<Self>, user: &str, joined: bool, except: &[WebSocket]) {
        let now = worker::Date::now().as_millis() as f64;
        let flush = self.batch.borrow_mut().record(user, joined, now);
        match flush {
            Flush::Now(()) => {
                let frame = if joined {
                    ServerFrame::Join { username: user }
                } else {
                    ServerFrame::Leave { username: user }
                };
                if self.fanout.to_all_except(&frame.to_json(), except) > 0 {
                    self.batch.borrow_mut().announced(now);
                }
            }
            Flush::Wait => {}
            Flush::Schedule { delay_ms } => {
                self.flush
                    .schedule(self, delay_ms.ceil() as u32, Self::send_batch);
            }
        }
    }

    /// [`PresenceBatch::snapshot_sent`].
    pub fn snapshot_sent(&self, user: &str) {
        self.batch.borrow_mut().snapshot_sent(user);
    }

    /// The flush timer fired: sends the batched joins and leaves as one `presence_changes` frame
    /// to every socket (none if they all cancelled out, or if the room has grown past
    /// `PRESENCE_BROADCAST_MAX` meanwhile: above it nothing is announced).
    fn send_batch(self: &Rc<Self>) {
        self.flush.fired();
        let changes = self.batch.borrow_mut().flush();
        if changes.is_empty() || self.fanout.listed() > self.broadcast_max {
            return;
        }
        let frame = ServerFrame::PresenceChanges {
            joined: &changes.joined,
            left: &changes.left,
        }
        .to_json();
        if self.fanout.to_all(&frame) > 0 {
            self.batch
                .borrow_mut()
                .announced(worker::Date::now().as_millis() as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defer::LOST_FLUSH_MS;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// A socket in the simulated room: its user and who it believes is online.
    struct Sock {
        user: String,
        view: BTreeSet<String>,
    }

    /// A room driven the way [`Presence`] drives the batch: single frames to everyone but the
    /// socket concerned, flushes to everyone, one timer at a time.
    struct Sim {
        batch: PresenceBatch,
        socks: Vec<Sock>,
        timer: Option<f64>,
        now: f64,
        /// How many flushes were scheduled.
        schedules: usize,
    }

    impl Sim {
        /// No socket is ever told that its own user is offline.
        fn check_own_presence(&self) {
            for s in &self.socks {
                assert!(s.view.contains(&s.user), "{} told it is offline", s.user);
            }
        }

        fn online(&self) -> BTreeSet<String> {
            self.socks.iter().map(|s| s.user.clone()).collect()
        }

        fn fire_due_timer(&mut self, force: bool) {
            let Some(due) = self.timer.filter(|due| force || *due <= self.now) else {
                return;
            };
            self.timer = None;
            let c = self.batch.flush();
            if c.is_empty() || self.socks.is_empty() {
                return;
            }
            for s in &mut self.socks {
                s.view.extend(c.joined.iter().cloned());
                for l in &c.left {
                    s.view.remove(l);
                }
            }
            self.batch.announced(due.max(self.now));
            self.check_own_presence();
        }

        fn announce(&mut self, user: &str, joined: bool, except: Option<usize>) {
            match self.batch.record(user, joined, self.now) {
                Flush::Now(()) => {
                    let mut sent = 0;
                    for (i, s) in self.socks.iter_mut().enumerate() {
                        if Some(i) == except {
                            continue;
                        }
                        if joined {
                            s.view.insert(user.to_owned());
                        } else {
                            s.view.remove(user);
                        }
                        sent += 1;
                    }
                    if sent > 0 {
                        self.batch.announced(self.now);
                    }
                    self.check_own_presence();
                }
                Flush::Schedule { delay_ms } => {
                    self.schedules += 1;
                    assert!(self.timer.is_none(), "one flush at a time");
                    self.timer = Some(self.now + delay_ms);
                }
                Flush::Wait => assert!(self.timer.is_some(), "queued without a flush"),
            }
        }

        fn connect(&mut self, user: String) {
            let was_online = self.socks.iter().any(|s| s.user == user);
            let mut view = self.online();
            view.insert(user.clone());
            self.socks.push(Sock {
                user: user.clone(),
                view,
            });
            if !was_online {
                self.announce(&user, true, Some(self.socks.len() - 1));
            }
            self.batch.snapshot_sent(&user);
        }

        fn close(&mut self, pick: usize) {
            let gone = self.socks.remove(pick % self.socks.len());
            if !self.socks.iter().any(|s| s.user == gone.user) {
                self.announce(&gone.user, false, None);
            }
        }
    }

    /// Plays `(op, user, pick, dt)`: after `dt` ms, a connect of `u{user}` (op 0, 1) or the
    /// close of socket `pick` (op 2). Returns each open socket's view after the last flush, and
    /// who is really online.
    fn simulate(window: u64, ops: &[(u8, usize, usize, u64)]) -> Sim {
        let mut sim = Sim {
            batch: PresenceBatch::new(window),
            socks: Vec::new(),
            timer: None,
            now: 1_000.0,
            schedules: 0,
        };
        for &(op, user, pick, dt) in ops {
            sim.now += dt as f64;
            sim.fire_due_timer(false);
            if op < 2 || sim.socks.is_empty() {
                sim.connect(format!("u{user}"));
            } else {
                sim.close(pick);
            }
        }
        sim.fire_due_timer(true);
        sim
    }

    /// Checks that every open socket believes exactly who is online.
    fn assert_converged(sim: &Sim) {
        let truth = sim.online();
        for s in &sim.socks {
            assert_eq!(s.view, truth, "view of a socket of {}", s.user);
        }
    }

    proptest! {
        /// Whatever the interleaving of connects, closes and flushes, every socket ends up
        /// believing exactly who is online: nobody missed, nobody stale.
        #[test]
        fn every_socket_converges_on_who_is_online(
            window in prop::sample::select(vec![0u64, 30, 100]),
            ops in prop::collection::vec((0u8..3, 0usize..5, any::<usize>(), 0u64..80), 1..80),
        ) {
            assert_converged(&simulate(window, &ops));
        }

        /// With at least a window between changes, nothing is ever batched.
        #[test]
        fn a_quiet_room_never_batches(
            ops in prop::collection::vec((0u8..3, 0usize..5, any::<usize>(), 100u64..500), 1..40),
        ) {
            let sim = simulate(100, &ops);
            prop_assert_eq!(sim.schedules, 0);
            assert_converged(&sim);
        }
    }

    /// Found by `every_socket_converges_on_who_is_online` in an earlier design that only
    /// remembered the latest change (and cancelled a change against it when nobody connected
    /// in between): u1's second tab connects while u0 is away and must be told that u0 is
    /// back, even though u0 leaves and returns once more before the flush.
    #[test]
    fn a_member_who_saw_an_earlier_intermediate_state_is_told() {
        let ops = [
            (0, 0, 0, 0),
            (0, 1, 0, 0),
            (2, 0, 0, 0), // u0 leaves (batched: u1's join just went out)
            (0, 1, 0, 0), // u1's second tab: sees u0 offline
            (0, 0, 0, 0), // u0 back
            (0, 1, 0, 0), // u1's third tab: sees u0 online
            (2, 0, 2, 0), // u0 leaves again
            (0, 0, 0, 0), // and is back again, with nobody connecting in between
        ];
        let sim = simulate(100, &ops);
        assert_eq!(sim.socks.len(), 4);
        assert_converged(&sim);
    }

    const JOIN: bool = true;
    const LEAVE: bool = false;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A batch whose last announcement went out at `t`.
    fn after_announcement(window: u64, t: f64) -> PresenceBatch {
        let mut b = PresenceBatch::new(window);
        assert_eq!(b.record("first", JOIN, t), Flush::Now(()));
        b.announced(t);
        b
    }

    #[test]
    fn quiet_room_sends_every_change_at_once() {
        let mut b = PresenceBatch::new(100);
        assert_eq!(b.record("alice", JOIN, 1000.0), Flush::Now(()));
        b.announced(1000.0);
        assert_eq!(b.record("bob", JOIN, 1100.0), Flush::Now(()));
        b.announced(1100.0);
        assert_eq!(b.record("bob", LEAVE, 1250.0), Flush::Now(()));
        assert!(b.flush().is_empty(), "nothing was queued");
    }

    #[test]
    fn an_announcement_that_reached_nobody_does_not_start_a_window() {
        let mut b = PresenceBatch::new(100);
        // The first user in an empty room: the join went to nobody, `announced` not called.
        assert_eq!(b.record("alice", JOIN, 1000.0), Flush::Now(()));
        assert_eq!(b.record("bob", JOIN, 1010.0), Flush::Now(()));
    }

    #[test]
    fn a_burst_is_one_flush_at_last_announcement_plus_window() {
        let mut b = after_announcement(100, 1000.0);
        assert_eq!(
            b.record("a", JOIN, 1020.0),
            Flush::Schedule { delay_ms: 80.0 }
        );
        assert_eq!(b.record("b", JOIN, 1030.0), Flush::Wait);
        assert_eq!(b.record("c", LEAVE, 1040.0), Flush::Wait);
        assert_eq!(b.record("d", JOIN, 1050.0), Flush::Wait);
        let changes = b.flush();
        assert_eq!(
            changes,
            Changes {
                joined: names(&["a", "b", "d"]),
                left: names(&["c"])
            }
        );
        b.announced(1100.0);
        // Still busy: the next change waits for the window after the flush.
        assert_eq!(
            b.record("e", JOIN, 1150.0),
            Flush::Schedule { delay_ms: 50.0 }
        );
        assert_eq!(b.flush().joined, names(&["e"]));
        b.announced(1200.0);
        // Quiet again: back to single frames.
        assert_eq!(b.record("f", LEAVE, 1300.0), Flush::Now(()));
    }

    #[test]
    fn changes_wait_while_a_batch_is_pending_even_past_the_window() {
        // The timer is a little late: a change after the due time joins the batch rather than
        // overtaking it, so clients see changes in order.
        let mut b = after_announcement(100, 1000.0);
        assert!(matches!(
            b.record("a", JOIN, 1050.0),
            Flush::Schedule { .. }
        ));
        assert_eq!(b.record("b", JOIN, 1130.0), Flush::Wait);
        assert_eq!(b.flush().joined, names(&["a", "b"]));
    }

    #[test]
    fn join_then_leave_in_one_batch_nets_out() {
        let mut b = after_announcement(100, 1000.0);
        b.record("a", JOIN, 1010.0);
        b.record("x", JOIN, 1020.0);
        b.record("x", LEAVE, 1030.0);
        assert_eq!(
            b.flush(),
            Changes {
                joined: names(&["a"]),
                left: vec![]
            }
        );
    }

    #[test]
    fn leave_then_rejoin_in_one_batch_nets_out() {
        let mut b = after_announcement(100, 1000.0);
        b.record("x", LEAVE, 1010.0);
        // x reconnects: its new socket's own presence frame lists x, so it still cancels.
        b.record("x", JOIN, 1020.0);
        b.snapshot_sent("x");
        let changes = b.flush();
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn a_users_own_presence_frames_do_not_keep_them_listed() {
        // x connects (two tabs) and leaves within the batch: only x's own sockets saw x
        // online, and they are gone, so the join and the leave still cancel.
        let mut b = after_announcement(100, 1000.0);
        b.record("x", JOIN, 1010.0);
        b.snapshot_sent("x");
        b.snapshot_sent("x");
        b.record("x", LEAVE, 1030.0);
        assert!(b.flush().is_empty());
        // The same with someone else connecting in between: listed as left.
        let mut b = after_announcement(100, 2000.0);
        b.record("x", JOIN, 2010.0);
        b.snapshot_sent("x");
        b.snapshot_sent("y");
        b.record("x", LEAVE, 2030.0);
        assert_eq!(b.flush().left, names(&["x"]));
    }

    #[test]
    fn an_empty_flush_leaves_the_room_quiet() {
        let mut b = after_announcement(100, 1000.0);
        b.record("x", JOIN, 1010.0);
        b.record("x", LEAVE, 1020.0);
        assert!(b.flush().is_empty());
        // Nothing was sent, so `announced` is not called: the room counts as quiet from the
        // last real announcement.
        assert_eq!(b.record("y", JOIN, 1100.0), Flush::Now(()));
    }

    #[test]
    fn three_changes_keep_the_last_state_in_the_order_of_the_last_change() {
        let mut b = after_announcement(100, 1000.0);
        b.record("x", JOIN, 1010.0);
        b.record("a", JOIN, 1020.0);
        b.record("x", LEAVE, 1030.0);
        b.record("b", LEAVE, 1040.0);
        b.record("x", JOIN, 1050.0);
        assert_eq!(
            b.flush(),
            Changes {
                joined: names(&["a", "x"]),
                left: names(&["b"])
            }
        );
    }

    #[test]
    fn a_connect_in_between_keeps_the_final_state_listed() {
        // x joins, then bob connects and his presence frame lists x, then x leaves: bob must
        // learn that x left, so the leave stays (others remove a name they never added: no-op).
        let mut b = after_announcement(100, 1000.0);
        b.record("x", JOIN, 1010.0);
        b.snapshot_sent("x");
        b.record("bob", JOIN, 1020.0);
        b.snapshot_sent("bob");
        b.record("x", LEAVE, 1030.0);
        assert_eq!(
            b.flush(),
            Changes {
                joined: names(&["bob"]),
                left: names(&["x"])
            }
        );

        // x leaves, carol connects (her presence frame lacks x), x comes back: carol must
        // learn that x is online.
        let mut b = after_announcement(100, 2000.0);
        b.record("x", LEAVE, 2010.0);
        b.snapshot_sent("carol"); // a second tab of carol's: no join, still a presence frame
        b.record("x", JOIN, 2020.0);
        b.snapshot_sent("x");
        assert_eq!(
            b.flush(),
            Changes {
                joined: names(&["x"]),
                left: vec![]
            }
        );
    }

    #[test]
    fn a_name_is_never_in_both_lists() {
        let mut b = after_announcement(100, 1000.0);
        for (i, joined) in [JOIN, LEAVE, JOIN, LEAVE, JOIN].into_iter().enumerate() {
            b.record("x", joined, 1001.0 + i as f64);
            b.snapshot_sent("someone else");
        }
        let c = b.flush();
        assert_eq!(c.joined, names(&["x"]));
        assert!(c.left.is_empty());
    }

    #[test]
    fn a_repeated_change_is_listed_once() {
        // Not produced by the room (joins and leaves of a user alternate), but harmless.
        let mut b = after_announcement(100, 1000.0);
        b.record("x", JOIN, 1010.0);
        b.record("y", JOIN, 1020.0);
        b.record("x", JOIN, 1030.0);
        assert_eq!(b.flush().joined, names(&["y", "x"]));
    }

    #[test]
    fn window_zero_never_batches() {
        let mut b = PresenceBatch::new(0);
        for (i, user) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(b.record(user, JOIN, 1000.0 + i as f64), Flush::Now(()));
            b.announced(1000.0);
        }
    }

    #[test]
    fn a_lost_flush_is_rescheduled_by_the_next_change() {
        let mut b = after_announcement(100, 1000.0);
        assert!(matches!(
            b.record("a", JOIN, 1010.0),
            Flush::Schedule { .. }
        ));
        assert_eq!(
            b.record("b", JOIN, 1090.0 + LOST_FLUSH_MS - 1.0),
            Flush::Wait
        );
        assert_eq!(
            b.record("c", JOIN, 1100.0 + LOST_FLUSH_MS),
            Flush::Schedule { delay_ms: 0.0 }
        );
        assert_eq!(b.flush().joined, names(&["a", "b", "c"]));
    }
}
