//! End-to-end test harness: runs the built Worker under `wrangler dev` and drives it over HTTP and
//! WebSockets.
//!
//! - [`server`]: starting, stopping and restarting `wrangler dev` servers, each on free ports with
//!   its own state folder; the one shared server ([`SHARED`]) and the lazily started servers with
//!   other settings ([`LazyServer`]).
//! - [`client`]: HTTP requests to one server (accounts, rooms, refused upgrades) and the checks of
//!   JSON error answers.
//! - [`ws`]: the WebSocket client tests read frames with, and the steps they repeat (history and
//!   presence on connect, sending a run of messages, waiting for a close).
//! - [`tokens`]: badges (JWTs) signed with the test servers' secret, and malformed ones.
//!
//! The Worker must already be built in `build/` (`bash scripts/build`; `scripts/test` does it
//! first). Artefacts go under `$CLUBHOUSE_TEST_OUTPUT` (scripts/test sets `test-output/`) or the
//! system temp dir.

mod client;
mod server;
mod tokens;
mod ws;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;

pub use client::*;
pub use server::*;
pub use tokens::*;
pub use ws::*;

/// Random 64-bit value (std only: `RandomState` is seeded randomly per process; mixed with a
/// counter and the clock so successive calls differ).
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A username/room id unique within the run: `prefix_<12 hex>` (valid for both: `[A-Za-z0-9_-]`),
/// at most 32 chars if `prefix` has at most 19. Every test names its users and rooms this way, so
/// tests running at the same time on one server never meet.
pub fn unique_name(prefix: &str) -> String {
    let name = format!("{prefix}_{:012x}", random_u64() & 0xffff_ffff_ffff);
    assert!(name.len() <= 32, "prefix too long for a username: {prefix}");
    name
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Runs `f` for each item with at most `limit` at a time; results in input order.
pub async fn bounded_join<T, F, Fut>(items: Vec<T>, limit: usize, f: F) -> Vec<Fut::Output>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future,
{
    futures_util::stream::iter(items.into_iter().map(f))
        .buffered(limit)
        .collect()
        .await
}

/// A cheap deterministic PRNG (xorshift64*), seeded from [`random_u64`] or `CLUBHOUSE_FUZZ_SEED`;
/// the seed is printed so a failing run can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        // CLUBHOUSE_FUZZ_SEED=0x… replays a failing run.
        let seed = std::env::var("CLUBHOUSE_FUZZ_SEED")
            .ok()
            .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
            .unwrap_or_else(random_u64)
            | 1;
        eprintln!("[fuzz] seed {seed:#x} (replay: CLUBHOUSE_FUZZ_SEED={seed:#x})");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// One of `items`, at random.
    pub fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    /// Up to `max - 1` random bytes.
    pub fn bytes_upto(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// A random string of `min..max` pieces.
    pub fn string_upto(&mut self, min: usize, max: usize) -> String {
        let n = min + self.below(max - min);
        self.string(n)
    }

    /// A string of `n` pieces mixing ASCII, JSON punctuation and some multi-byte characters.
    pub fn string(&mut self, n: usize) -> String {
        const ALPHABET: &[&str] = &[
            "a", "Z", "0", "{", "}", "[", "]", "\"", ":", ",", "\\", "/", "%", "&", "=", "?", "#",
            " ", "\n", "\t", "é", "😀", "\u{0}", "\u{202e}", "content", "room_id", "null", "true",
            "-1", "1e999", "..",
        ];
        (0..n).map(|_| self.pick(ALPHABET)).collect()
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}
