//! Which way a connection's next chat message is stored: in the room's next group (a 0 ms
//! timer, `outbox.rs`), or at once in the frame's own event. Pure (no `worker` types), so it is
//! unit-tested natively; the outbox keeps one [`Pace`] per connection.
//!
//! Why two ways: the runtime reads a socket's next frame only once the previous frame's event
//! has completed, and an object's event completes only once its writes are durable (the output
//! gate). A frame whose event writes therefore holds back the frames queued behind it, one commit
//! each: a sender with several messages in flight needs the timer, which keeps the write out of
//! the frame's event and stores everything that arrived meanwhile in one commit. A sender with
//! one message in flight (a person typing, or a client that waits for its echo) gains nothing
//! from the timer and pays for it: one more JS entry and one more for `storage.sync()` per
//! message, about 5% of the room's CPU per message with 20 members (`bench/RESULTS.md`, round 13).
//!
//! How a connection is told apart: on the timer's way, a message that arrives while the same
//! connection's previous message is still unsent shows the connection has messages in flight.
//! After [`SEQUENTIAL_TO_LEAN`] messages in a row that each arrived after the previous one was
//! sent, its messages are stored at once. Stored at once, the frames behind them cannot be seen
//! (the runtime holds them), so every [`PROBE_EVERY`]th message takes the timer's way again, and
//! one overlap sends the connection back to the timer. A sender that starts pipelining waits at
//! most that many commits before it is noticed.

/// Messages in a row, each arriving after the connection's previous one was sent, before the
/// connection's messages are stored at once.
pub const SEQUENTIAL_TO_LEAN: u32 = 4;
/// One in this many messages of a connection stored at once takes the timer's way, to see
/// whether frames queue behind it.
pub const PROBE_EVERY: u32 = 8;

/// How a message is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// In the room's next group, after the 0 ms timer; sent once the commit is durable.
    Timer,
    /// At once, in the frame's event; sent at once, the runtime holding the sends until the
    /// commit is durable.
    AtOnce,
}

/// One connection's recent messages.
#[derive(Debug, Default, Clone)]
pub struct Pace {
    /// Id of the connection's last accepted message (0: none yet).
    last_id: i64,
    /// Messages in a row that arrived after the connection's previous one was sent.
    sequential: u32,
    /// Messages decided since the connection went lean (for the probes).
    lean_count: u32,
}

impl Pace {
    /// The way for the connection's message `id`, given the id of the newest message the room
    /// has sent (`sent_id`). The caller still takes the timer's way while the room has messages
    /// waiting or unsent: ids are stored and sent in order.
    pub fn decide(&mut self, id: i64, sent_id: i64) -> Way {
        let overlapped = self.last_id > sent_id;
        self.last_id = id;
        if overlapped {
            self.sequential = 0;
            self.lean_count = 0;
            return Way::Timer;
        }
        self.sequential = self.sequential.saturating_add(1);
        if self.sequential <= SEQUENTIAL_TO_LEAN {
            return Way::Timer;
        }
        self.lean_count = self.lean_count.wrapping_add(1);
        if self.lean_count.is_multiple_of(PROBE_EVERY) {
            Way::Timer
        } else {
            Way::AtOnce
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that waits for each echo: every message arrives after the previous one
    /// was sent (sent_id = previous id).
    fn sequential(pace: &mut Pace, from: i64, n: i64) -> Vec<Way> {
        (from..from + n).map(|id| pace.decide(id, id - 1)).collect()
    }

    #[test]
    fn a_new_connection_takes_the_timer_until_it_has_shown_one_message_at_a_time() {
        let mut pace = Pace::default();
        let ways = sequential(&mut pace, 1, 6);
        let timer = SEQUENTIAL_TO_LEAN as usize;
        assert!(ways[..timer].iter().all(|w| *w == Way::Timer), "{ways:?}");
        assert!(ways[timer..].iter().all(|w| *w == Way::AtOnce), "{ways:?}");
    }

    #[test]
    fn a_lean_connection_takes_the_timer_once_in_every_probe_interval() {
        let mut pace = Pace::default();
        sequential(&mut pace, 1, SEQUENTIAL_TO_LEAN as i64);
        let ways = sequential(&mut pace, 100, 3 * PROBE_EVERY as i64);
        let probes = ways.iter().filter(|w| **w == Way::Timer).count();
        assert_eq!(probes, 3, "{ways:?}");
        assert_eq!(ways[PROBE_EVERY as usize - 1], Way::Timer);
    }

    #[test]
    fn a_message_that_arrives_before_the_previous_one_was_sent_goes_back_to_the_timer() {
        let mut pace = Pace::default();
        sequential(&mut pace, 1, SEQUENTIAL_TO_LEAN as i64 + 3);
        // Message 8 arrives while 7 is still unsent (sent_id 6): pipelining.
        assert_eq!(pace.decide(8, 6), Way::Timer);
        // From there it must show SEQUENTIAL_TO_LEAN messages in a row again.
        let ways = sequential(&mut pace, 9, SEQUENTIAL_TO_LEAN as i64 + 1);
        assert!(ways[..SEQUENTIAL_TO_LEAN as usize]
            .iter()
            .all(|w| *w == Way::Timer));
        assert_eq!(ways[SEQUENTIAL_TO_LEAN as usize], Way::AtOnce);
    }

    #[test]
    fn a_pipelining_connection_never_goes_lean() {
        let mut pace = Pace::default();
        // Eight in flight: each message arrives while the one before it is unsent.
        for id in 1..=64 {
            let sent = (id - 8).max(0);
            assert_eq!(pace.decide(id, sent), Way::Timer, "message {id}");
        }
    }

    #[test]
    fn other_connections_messages_in_between_do_not_count_as_overlap() {
        let mut pace = Pace::default();
        // This connection's messages are 1, 5, 9, ...; the room sent everything before each.
        let ways: Vec<Way> = (0..8)
            .map(|k| 1 + 4 * k)
            .map(|id| pace.decide(id, id - 1))
            .collect();
        assert_eq!(ways[SEQUENTIAL_TO_LEAN as usize], Way::AtOnce, "{ways:?}");
    }
}
