//! Token buckets: the per-connection message limit in rooms. Pure (time is passed in, in ms),
//! so the arithmetic is unit-tested natively.

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

/// The per-connection limit: a bucket at the configured rate, and a second one at five times
/// that rate which, once drained, means the client ignores our refusals and is cut off.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionLimiter {
    messages: TokenBucket,
    flood: TokenBucket,
}

/// How far past the limit a client may push before it is disconnected.
pub const FLOOD_FACTOR: f64 = 5.0;

impl ConnectionLimiter {
    pub fn new(per_sec: f64, burst: f64, now_ms: f64) -> Self {
        Self {
            messages: TokenBucket::new(per_sec, burst, now_ms),
            flood: TokenBucket::new(per_sec * FLOOD_FACTOR, burst * FLOOD_FACTOR, now_ms),
        }
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

/// Every connection's limiter in one room, by connection id. In memory only: losing them to an
/// eviction is harmless, as buckets refill within seconds and hibernation only follows seconds
/// of silence.
pub struct RateLimits {
    per_sec: f64,
    burst: f64,
    limiters: RefCell<HashMap<u32, ConnectionLimiter>>,
}

impl RateLimits {
    pub fn new(per_sec: f64, burst: f64) -> Self {
        Self {
            per_sec,
            burst,
            limiters: RefCell::new(HashMap::new()),
        }
    }

    /// The verdict on connection `conn`'s next frame at `now_ms`.
    pub fn check(&self, conn: u32, now_ms: f64) -> Verdict {
        self.limiters
            .borrow_mut()
            .entry(conn)
            .or_insert_with(|| ConnectionLimiter::new(self.per_sec, self.burst, now_ms))
            .check(now_ms)
    }

    /// The connection closed.
    pub fn forget(&self, conn: u32) {
        self.limiters.borrow_mut().remove(&conn);
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
        let mut l = ConnectionLimiter::new(10.0, 20.0, 0.0);
        for i in 0..1000 {
            assert_eq!(l.check(i as f64 * 100.0), Verdict::Allow, "message {i}");
        }
    }

    #[test]
    fn over_the_limit_is_refused_then_flooding_disconnects() {
        let mut l = ConnectionLimiter::new(10.0, 20.0, 0.0);
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
}
