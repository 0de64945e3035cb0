//! "Someone is typing": ephemeral, never stored. A member's `typing` frame goes to the other
//! members as `{"type":"typing","username"}`, at most one per user per [`FORWARD_EVERY_MS`]
//! (more are dropped silently: a client sends one per keystroke burst and shows it for ~5 s).
//! Not forwarded in rooms with more than `PRESENCE_BROADCAST_MAX` sockets, where it would cost
//! every member a frame per typist as presence would. Typing frames have their own per-user
//! bucket ([`RateLimits`], with its disconnect for floods), apart from the message limit.
//!
//! [`TypingGate`] is the pure core, unit-tested natively; [`Typing`] sends.

use std::cell::RefCell;
use std::collections::HashMap;

use worker::WebSocket;

use super::rate_limit::{RateLimits, Verdict};
use super::sockets::Fanout;
use crate::protocol::ServerFrame;

/// At most one forwarded `typing` frame per user per this long (milliseconds).
pub const FORWARD_EVERY_MS: f64 = 3_000.0;
/// The per-user bucket for typing frames: a rate and a burst.
const TYPING_PER_SEC: f64 = 2.0;
const TYPING_BURST: f64 = 5.0;
/// Users remembered at most; past it, those whose window is over are forgotten first.
const GATE_MAX_USERS: usize = 10_000;

/// When each user's last `typing` frame was forwarded.
#[derive(Debug, Default)]
pub struct TypingGate {
    last: HashMap<String, f64>,
}

impl TypingGate {
    /// Whether `user`'s typing at `now_ms` is forwarded (and then remembered).
    pub fn forward(&mut self, user: &str, now_ms: f64) -> bool {
        if self
            .last
            .get(user)
            .is_some_and(|&last| now_ms - last < FORWARD_EVERY_MS)
        {
            return false;
        }
        if self.last.len() >= GATE_MAX_USERS {
            self.last
                .retain(|_, &mut last| now_ms - last < FORWARD_EVERY_MS);
            if self.last.len() >= GATE_MAX_USERS {
                self.last.clear();
            }
        }
        self.last.insert(user.to_owned(), now_ms);
        true
    }
}

/// What to do with the connection after a `typing` frame.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterTyping {
    Keep,
    /// It floods far past the typing bucket: close it (1008).
    Close,
}

/// The room's typing indicator.
pub struct Typing {
    fanout: Fanout,
    gate: RefCell<TypingGate>,
    limits: RateLimits,
    broadcast_max: usize,
}

impl Typing {
    pub fn new(fanout: Fanout, broadcast_max: usize) -> Self {
        Self {
            fanout,
            gate: RefCell::new(TypingGate::default()),
            limits: RateLimits::new(TYPING_PER_SEC, TYPING_BURST),
            broadcast_max,
        }
    }

    /// `user` is typing at `now_ms`; `own` lists the user's sockets, which
    /// are not told (asked only for a frame that is forwarded: most are dropped by the gate);
    /// `room_sockets` is how many the room holds.
    pub fn typing(
        &self,
        user: &str,
        own: impl FnOnce() -> Vec<WebSocket>,
        room_sockets: usize,
        now_ms: f64,
    ) -> AfterTyping {
        match self.limits.check(user, now_ms) {
            Verdict::Allow => {}
            Verdict::Refuse { .. } => return AfterTyping::Keep,
            Verdict::Disconnect => return AfterTyping::Close,
        }
        if room_sockets > self.broadcast_max || !self.gate.borrow_mut().forward(user, now_ms) {
            return AfterTyping::Keep;
        }
        let frame = ServerFrame::Typing { username: user }.to_json();
        self.fanout.to_all_except(&frame, &own());
        AfterTyping::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_forward_per_user_per_window() {
        let mut gate = TypingGate::default();
        assert!(gate.forward("ann", 0.0));
        assert!(!gate.forward("ann", 1.0));
        assert!(gate.forward("bob", 1.0), "per user");
        assert!(!gate.forward("ann", FORWARD_EVERY_MS - 1.0));
        assert!(gate.forward("ann", FORWARD_EVERY_MS));
    }

    #[test]
    fn the_gate_stays_bounded() {
        let mut gate = TypingGate::default();
        for i in 0..(GATE_MAX_USERS + 10) {
            assert!(gate.forward(&format!("u{i}"), i as f64));
        }
        assert!(gate.last.len() <= GATE_MAX_USERS);
    }
}
