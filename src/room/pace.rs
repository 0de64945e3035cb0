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
//! message, about 5% of the room's CPU per message with 20 members (measured with `bench/ab.sh`).
//!
//! How a connection is told apart: on the timer's way, a message that arrives while the same
//! connection's previous message is still unsent shows the connection has messages in flight.
//! After [`SEQUENTIAL_TO_LEAN`] messages in a row that each arrived after the previous one was
//! sent, its messages are stored at once. Stored at once, the frames behind them cannot be seen
//! (the runtime holds them), so now and then a message takes the timer's way again (a probe), and
//! one overlap sends the connection back to the timer. The first probe comes after
//! [`FIRST_PROBE_AFTER`] messages stored at once; each probe that finds no overlap doubles the
//! gap to the next, up to [`MAX_PROBE_GAP`]: a steady one-at-a-time sender pays for few probes
//! (each costs a timer and a `sync()`), and a sender that starts pipelining waits at most that
//! many commits, about what every message costs it on the baseline's way, before it is noticed.

/// Messages in a row, each arriving after the connection's previous one was sent, before the
/// connection's messages are stored at once.
pub const SEQUENTIAL_TO_LEAN: u32 = 4;
/// Messages stored at once before the first probe (a message on the timer's way, to see whether
/// frames queue behind it).
pub const FIRST_PROBE_AFTER: u32 = 8;
/// Largest gap between probes: each probe that finds no overlap doubles the gap, up to this.
pub const MAX_PROBE_GAP: u32 = 64;

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
#[derive(Debug, Clone)]
pub struct Pace {
    /// Id of the connection's last accepted message (0: none yet).
    last_id: i64,
    /// Messages in a row that arrived after the connection's previous one was sent.
    sequential: u32,
    /// Messages stored at once since the connection went lean or since the last probe.
    since_probe: u32,
    /// Messages stored at once between the last probe (or going lean) and the next probe.
    probe_gap: u32,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            last_id: 0,
            sequential: 0,
            since_probe: 0,
            probe_gap: FIRST_PROBE_AFTER,
        }
    }
}

impl Pace {
    /// The way for the connection's message `id`, given the id of the newest message the room
    /// has sent (`sent_id`). The caller still takes the timer's way while the room has messages
    /// waiting or unsent: ids are stored and sent in order.
    pub fn decide(&mut self, id: i64, sent_id: i64) -> Way {
        let overlapped = self.last_id > sent_id;
        self.last_id = id;
        if overlapped {
            *self = Pace {
                last_id: id,
                ..Pace::default()
            };
            return Way::Timer;
        }
        self.sequential = self.sequential.saturating_add(1);
        if self.sequential <= SEQUENTIAL_TO_LEAN {
            return Way::Timer;
        }
        if self.since_probe == self.probe_gap {
            self.since_probe = 0;
            self.probe_gap = (self.probe_gap * 2).min(MAX_PROBE_GAP);
            return Way::Timer;
        }
        self.since_probe += 1;
        Way::AtOnce
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
    fn probes_come_further_apart_while_none_finds_an_overlap_up_to_the_largest_gap() {
        let mut pace = Pace::default();
        sequential(&mut pace, 1, SEQUENTIAL_TO_LEAN as i64);
        let ways = sequential(&mut pace, 100, 1000);
        // At-once messages between one probe and the next.
        let probes: Vec<usize> = (0..ways.len()).filter(|&i| ways[i] == Way::Timer).collect();
        let mut gaps = vec![probes[0]];
        gaps.extend(probes.windows(2).map(|w| w[1] - w[0] - 1));
        let first = FIRST_PROBE_AFTER as usize;
        let max = MAX_PROBE_GAP as usize;
        assert_eq!(&gaps[..4], &[first, 2 * first, 4 * first, max], "{gaps:?}");
        assert!(gaps[4..].iter().all(|&g| g == max), "{gaps:?}");
        assert!(probes.len() >= 1000 / (max + 1), "{gaps:?}");
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
    fn after_an_overlap_the_probes_start_close_together_again() {
        let mut pace = Pace::default();
        sequential(&mut pace, 1, 500);
        assert_eq!(pace.decide(502, 499), Way::Timer, "overlap");
        let ways = sequential(&mut pace, 503, 100);
        let lean_from = SEQUENTIAL_TO_LEAN as usize;
        let first_probe = lean_from + FIRST_PROBE_AFTER as usize;
        assert!(
            ways[lean_from..first_probe]
                .iter()
                .all(|w| *w == Way::AtOnce),
            "{ways:?}"
        );
        assert_eq!(ways[first_probe], Way::Timer, "{ways:?}");
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
