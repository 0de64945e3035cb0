//! Work an object gathers and does later in one go (a group of messages stored in one commit,
//! a ledger's socket records written in one commit, a room's batch of joins and leaves, a
//! room's batch of socket log lines):
//!
//! - [`Deferred`]: the one pending call per owner, on the runtime's event loop (`setTimeout`
//!   with a callback made once per object wake-up). Not `wasm_bindgen_futures::spawn_local`
//!   with `worker::Delay`: that is a Rust future, a JS closure and two microtasks per call;
//!   this is one JS timer per call.
//! - [`BurstWindow`] and [`Flush`]: the timing shared by the batches that coalesce bursts
//!   (`room/presence.rs` for join/leave frames, `log.rs` for per-socket log lines). The first
//!   event after a quiet window goes out at once; later ones wait for one flush, due at (last
//!   send + window). Pure, so it is unit-tested natively.

use std::cell::{Cell, OnceCell};
use std::rc::{Rc, Weak};

use worker::wasm_bindgen::{closure::Closure, prelude::wasm_bindgen, JsValue};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &Closure<dyn FnMut()>, ms: u32) -> JsValue;
}

/// One pending call at most: scheduling while one is due does nothing, so everything queued
/// before it fires is handled by that one call.
#[derive(Default)]
pub struct Deferred {
    scheduled: Cell<bool>,
    /// Made on first use. It holds its owner weakly: no cycle, dropped with the owner.
    callback: OnceCell<Closure<dyn FnMut()>>,
}

impl Deferred {
    /// Calls `run(owner)` in `ms` milliseconds unless a call is already due. The first call
    /// fixes the owner and `run` for the life of this `Deferred` (the owner holds it).
    pub fn schedule<T: 'static>(&self, owner: &Rc<T>, ms: u32, run: fn(&Rc<T>)) {
        if self.scheduled.replace(true) {
            return;
        }
        let callback = self.callback.get_or_init(|| weak_callback(owner, run));
        set_timeout(callback, ms);
    }

    /// To be called first by `run`: whatever is queued from now on needs a new call.
    pub fn fired(&self) {
        self.scheduled.set(false);
    }
}

/// A JS callback that calls `run(owner)` while the owner lives. It holds the owner weakly, so an
/// owner that keeps its own callback (made once, called many times) makes no cycle.
pub fn weak_callback<T: 'static>(owner: &Rc<T>, run: fn(&Rc<T>)) -> Closure<dyn FnMut()> {
    let owner: Weak<T> = Rc::downgrade(owner);
    Closure::new(move || {
        if let Some(owner) = owner.upgrade() {
            run(&owner);
        }
    })
}

/// A flush this late (past its due time) is taken as lost (it cannot normally be: the timer lives
/// as long as the object), and the next event schedules a new one, so a lost timer can never hold
/// a batch back for good. A late timer that fires after all only finds an empty or newer batch.
pub const LOST_FLUSH_MS: f64 = 5_000.0;

/// When the last send was and whether a flush is scheduled. Times are milliseconds
/// (`Date.now()`).
#[derive(Debug)]
pub struct BurstWindow {
    window_ms: f64,
    last_sent: Option<f64>,
    flush_due: Option<f64>,
}

impl BurstWindow {
    /// `window_ms` 0: every event is quiet (no batching).
    pub fn new(window_ms: f64) -> Self {
        Self {
            window_ms,
            last_sent: None,
            flush_due: None,
        }
    }

    /// Nothing was sent within the window before `now`.
    pub fn quiet(&self, now: f64) -> bool {
        self.last_sent
            .is_none_or(|last| now - last >= self.window_ms)
    }

    /// An event was queued at `now`: the delay of the flush to schedule, or `None` when one is
    /// already scheduled (and not lost).
    pub fn schedule(&mut self, now: f64) -> Option<f64> {
        if self.flush_due.is_some_and(|due| now < due + LOST_FLUSH_MS) {
            return None;
        }
        let due = self
            .last_sent
            .map_or(now, |last| last + self.window_ms)
            .max(now);
        self.flush_due = Some(due);
        Some(due - now)
    }

    /// Something went out at `now`.
    pub fn sent(&mut self, now: f64) {
        self.last_sent = Some(self.last_sent.map_or(now, |last| last.max(now)));
    }

    /// The scheduled flush fired.
    pub fn fired(&mut self) {
        self.flush_due = None;
    }
}

/// What a burst-coalescing batch answers when an event comes in.
#[derive(Debug, Clone, PartialEq)]
pub enum Flush<T = ()> {
    /// Send now: `T` is what to send (the event alone, or a batch that filled up).
    Now(T),
    /// Queued; start the (one) flush timer, due in `delay_ms`.
    Schedule { delay_ms: f64 },
    /// Queued; a flush is already scheduled.
    Wait,
}

impl<T> Flush<T> {
    /// The answer for an event queued at `now` in `window`: start a flush or wait for it.
    pub fn queued(window: &mut BurstWindow, now: f64) -> Self {
        match window.schedule(now) {
            Some(delay_ms) => Flush::Schedule { delay_ms },
            None => Flush::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_until_something_is_sent_then_for_a_window() {
        let mut w = BurstWindow::new(100.0);
        assert!(w.quiet(0.0));
        w.sent(0.0);
        assert!(!w.quiet(99.0));
        assert!(w.quiet(100.0));
    }

    #[test]
    fn one_flush_at_a_time_due_a_window_after_the_last_send() {
        let mut w = BurstWindow::new(100.0);
        w.sent(0.0);
        assert_eq!(w.schedule(10.0), Some(90.0));
        assert_eq!(w.schedule(20.0), None, "already scheduled");
        w.fired();
        w.sent(100.0);
        assert_eq!(w.schedule(150.0), Some(50.0));
    }

    #[test]
    fn a_lost_flush_is_scheduled_again() {
        let mut w = BurstWindow::new(100.0);
        w.sent(0.0);
        assert_eq!(w.schedule(10.0), Some(90.0));
        assert_eq!(w.schedule(100.0 + LOST_FLUSH_MS - 1.0), None);
        assert_eq!(w.schedule(100.0 + LOST_FLUSH_MS), Some(0.0));
    }

    #[test]
    fn without_a_window_every_event_is_quiet() {
        let mut w = BurstWindow::new(0.0);
        w.sent(5.0);
        assert!(w.quiet(5.0));
    }
}
