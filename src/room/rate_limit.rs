//! Token buckets: the message limit in rooms, per user per room (however many sockets the user
//! has there: five sockets do not get five times the rate). Pure (time is passed in, in ms), so
//! the arithmetic is unit-tested natively.

use std::cell::RefCell;
use std::collections::HashMap;

/// A classic token bucket: `capacity` tokens, refilled at `per_sec`, one token per message.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    capacity: f64,
    per_ms: f64,
    tokens: f64,
    updated_ms: f64,
}

impl TokenBucket {
    pub fn new(per_sec: f64, capacity: f64, now_ms: f64) -> Self {
        Self {
            capacity,
            per_ms: per_sec / 1000.0,
            tokens: capacity,
            updated_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: f64) {
        let elapsed = (now_ms - self.updated_ms).max(0.0);
        self.tokens = (self.tokens + elapsed * self.per_ms).min(self.capacity);
        self.updated_ms = now_ms;
    }

    /// Takes a token if there is one; otherwise says how long until there will be (ms).
    /// Whether the bucket would be full at `now_ms`: then it is the same as a new one.
    fn is_full_at(&self, now_ms: f64) -> bool {
        self.tokens + (now_ms - self.updated_ms).max(0.0) * self.per_ms >= self.capacity
    }

    pub fn take(&mut self, now_ms: f64) -> Result<(), u64> {
        self.refill(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / self.per_ms).ceil() as u64)
        }
    }
}

/// What the room does with a client's frame under the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse this frame; the client may retry after this many ms.
    Refuse {
        retry_after_ms: u64,
    },
    /// The client keeps flooding far past the limit: close the connection (1008).
    Disconnect,
}

/// One user's limit in a room: a bucket at the configured rate, and a second one at five times
/// that rate which, once drained, means the client ignores our refusals and is cut off.
#[derive(Debug, Clone, PartialEq)]
pub struct UserLimiter {
    messages: TokenBucket,
    flood: TokenBucket,
}

/// How far past the limit a client may push before it is disconnected.
pub const FLOOD_FACTOR: f64 = 5.0;

impl UserLimiter {
    pub fn new(per_sec: f64, burst: f64, now_ms: f64) -> Self {
        Self {
            messages: TokenBucket::new(per_sec, burst, now_ms),
            flood: TokenBucket::new(per_sec * FLOOD_FACTOR, burst * FLOOD_FACTOR, now_ms),
        }
    }

    /// Whether both buckets would be full at `now_ms`, so that forgetting this limiter changes
    /// nothing.
    fn is_idle_at(&self, now_ms: f64) -> bool {
        self.messages.is_full_at(now_ms) && self.flood.is_full_at(now_ms)
    }

    pub fn check(&mut self, now_ms: f64) -> Verdict {
        if self.flood.take(now_ms).is_err() {
            return Verdict::Disconnect;
        }
        match self.messages.take(now_ms) {
            Ok(()) => Verdict::Allow,
            Err(retry_after_ms) => Verdict::Refuse { retry_after_ms },
        }
    }
}

/// Users whose limiters a room holds before it drops those of idle users.
const IDLE_SWEEP_ABOVE: usize = 1024;

/// Every user's limiter in one room, by username. A user's sockets share it, and closing a
/// socket does not reset it. In memory only: losing them to an eviction is harmless, as buckets
/// refill within seconds and hibernation only follows seconds of silence.
pub struct RateLimits {
    per_sec: f64,
    burst: f64,
    limiters: RefCell<HashMap<String, UserLimiter>>,
}

impl RateLimits {
    pub fn new(per_sec: f64, burst: f64) -> Self {
        Self {
            per_sec,
            burst,
            limiters: RefCell::new(HashMap::new()),
        }
    }

    /// The verdict on `user`'s next frame at `now_ms`, from any of their sockets.
    pub fn check(&self, user: &str, now_ms: f64) -> Verdict {
        let mut limiters = self.limiters.borrow_mut();
        if let Some(limiter) = limiters.get_mut(user) {
            return limiter.check(now_ms);
        }
        // A new user: first drop the limiters that are full again, which are as good as new,
        // so the map holds the users who sent lately rather than everyone who ever did.
        if limiters.len() >= IDLE_SWEEP_ABOVE {
            limiters.retain(|_, l| !l.is_idle_at(now_ms));
        }
        let mut limiter = UserLimiter::new(self.per_sec, self.burst, now_ms);
        let verdict = limiter.check(now_ms);
        limiters.insert(user.to_owned(), limiter);
        verdict
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.limiters.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let mut b = TokenBucket::new(10.0, 20.0, 0.0);
        for _ in 0..20 {
            assert!(b.take(0.0).is_ok());
        }
        assert_eq!(b.take(0.0), Err(100));
        assert_eq!(b.take(50.0), Err(50));
        assert!(b.take(100.0).is_ok());
        // Never more than the capacity, however long the pause.
        let mut b = TokenBucket::new(10.0, 20.0, 0.0);
        b.take(0.0).unwrap();
        for _ in 0..20 {
            assert!(b.take(1e9).is_ok());
        }
        assert!(b.take(1e9).is_err());
    }

    #[test]
    fn clock_going_backwards_does_not_mint_tokens() {
        let mut b = TokenBucket::new(10.0, 1.0, 1000.0);
        b.take(1000.0).unwrap();
        assert!(b.take(0.0).is_err());
    }

    #[test]
    fn steady_sender_at_the_limit_is_never_refused() {
        let mut l = UserLimiter::new(10.0, 20.0, 0.0);
        for i in 0..1000 {
            assert_eq!(l.check(i as f64 * 100.0), Verdict::Allow, "message {i}");
        }
    }

    #[test]
    fn over_the_limit_is_refused_then_flooding_disconnects() {
        let mut l = UserLimiter::new(10.0, 20.0, 0.0);
        let verdicts: Vec<Verdict> = (0..101).map(|_| l.check(0.0)).collect();
        assert!(verdicts[..20].iter().all(|v| *v == Verdict::Allow));
        assert!(verdicts[20..100].iter().all(|v| matches!(
            v,
            Verdict::Refuse {
                retry_after_ms: 100
            }
        )));
        assert_eq!(verdicts[100], Verdict::Disconnect);
    }

    #[test]
    fn a_users_sockets_share_one_limit() {
        let limits = RateLimits::new(10.0, 20.0);
        // 20 frames from "ann", whichever socket sent them, use up her burst...
        assert!((0..20).all(|_| limits.check("ann", 0.0) == Verdict::Allow));
        assert!(matches!(limits.check("ann", 0.0), Verdict::Refuse { .. }));
        // ...and not "bob"'s.
        assert_eq!(limits.check("bob", 0.0), Verdict::Allow);
        assert_eq!(limits.check("ann", 100.0), Verdict::Allow, "refilled");
    }

    #[test]
    fn idle_users_are_dropped_only_when_full_again() {
        let limits = RateLimits::new(10.0, 20.0);
        for i in 0..IDLE_SWEEP_ABOVE {
            limits.check(&format!("u{i}"), 0.0);
        }
        assert!(matches!(limits.check("u0", 0.0), Verdict::Allow));
        // Not yet refilled at 50 ms: a new user sweeps nothing.
        limits.check("late", 50.0);
        assert_eq!(limits.len(), IDLE_SWEEP_ABOVE + 1);
        // Drain "busy", then a newcomer long after: every full limiter goes, "busy"'s too
        // once refilled; one still draining would stay.
        for _ in 0..25 {
            limits.check("busy", 10_000.0);
        }
        limits.check("newcomer", 10_001.0);
        assert!(limits.len() <= 3, "{}", limits.len());
        assert!(
            matches!(limits.check("busy", 10_001.0), Verdict::Refuse { .. }),
            "kept: still draining"
        );
    }
}
