//! A deferred call on the runtime's event loop: `setTimeout` with a callback made once per
//! object wake-up, for work an object gathers and does later in one go (a group of messages
//! stored in one commit, a ledger's socket records written in one commit, a room's batch of
//! joins and leaves, a room's batch of socket log lines).
//!
//! Why not `wasm_bindgen_futures::spawn_local` with `worker::Delay`: that is a Rust future, a
//! JS closure and two microtasks per call; this is one JS timer per call.

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
