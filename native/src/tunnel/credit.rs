//! The stream credit of a connection a peer dialled: how many streams it may have open at
//! once. quinn keeps state for every stream of credit (transport.rs: 5.5 MB per connection at
//! tunnel.maxStreams' default), so the credit starts small and grows with use, a step ahead of
//! it, up to tunnel.maxStreams. The peer's open_bi waits for credit; it does not fail.
use super::Tunnel;
use crate::plane::Shared;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Streams a verified peer may have open at first (about 90 KB of quinn's state).
pub const VERIFIED_STREAM_CREDIT: u32 = 1024;

/// How long quinn may still hold a stream after its flow ended: until the peer acknowledges
/// our FIN, a round trip plus its ack delay (25 ms by default), with room to spare.
const HELD_AFTER_FLOW: Duration = Duration::from_millis(50);

/// Sets the streams the peer may have open at once on this connection.
pub fn set(tunnel: &Tunnel, credit: u32) {
    tunnel.stream_credit.store(credit, Relaxed);
    tunnel
        .conn
        .set_max_concurrent_bi_streams(quinn::VarInt::from_u32(credit));
}

/// `want`, but not above tunnel.maxStreams as it is now (a reload may just have lowered it).
pub fn set_within_max(shared: &Shared, tunnel: &Tunnel, want: u32) {
    set(tunnel, want.min(shared.snapshot.load().tunnel.max_streams));
}

/// Raises the credit when the streams that may hold it reach half of it: the open flows, and
/// the streams opened lately, whose flows may have ended while quinn still holds them.
pub fn grow(shared: &Shared, tunnel: &Tunnel, recent: u64) {
    let credit = tunnel.stream_credit.load(Relaxed);
    let in_use = tunnel.flows.load(Relaxed) + recent;
    if let Some(next) = next_credit(credit, shared.snapshot.load().tunnel.max_streams, in_use) {
        set_within_max(shared, tunnel, next);
    }
}

/// Double, up to `max`, once `in_use` reaches half of `credit`.
fn next_credit(credit: u32, max: u32, in_use: u64) -> Option<u32> {
    (credit < max && in_use.saturating_mul(2) >= u64::from(credit))
        .then(|| credit.saturating_mul(2).clamp(1, max))
}

/// The streams a peer opened on one connection lately: in the current window of a round trip
/// plus HELD_AFTER_FLOW, and in the one before it.
pub struct Recent {
    since: Instant,
    current: u64,
    previous: u64,
}

impl Recent {
    pub fn new(now: Instant) -> Recent {
        Recent {
            since: now,
            current: 0,
            previous: 0,
        }
    }

    /// Counts one stream opened at `now`; returns the streams opened in this window and the last.
    pub fn opened(&mut self, now: Instant, rtt: Duration) -> u64 {
        let window = rtt + HELD_AFTER_FLOW;
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= window {
            self.previous = if elapsed >= 2 * window {
                0
            } else {
                self.current
            };
            self.current = 0;
            self.since = now;
        }
        self.current += 1;
        self.current + self.previous
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_at_half_use_up_to_the_cap_and_never_past_it() {
        assert_eq!(next_credit(1024, 65_536, 511), None);
        assert_eq!(next_credit(1024, 65_536, 512), Some(2048));
        assert_eq!(next_credit(1024, 1500, 900), Some(1500));
        assert_eq!(next_credit(1500, 1500, 10_000), None);
        assert_eq!(next_credit(0, 10, 0), Some(1));
        assert_eq!(
            next_credit(u32::MAX / 2 + 1, u32::MAX, u64::MAX),
            Some(u32::MAX)
        );
    }

    #[test]
    fn recent_counts_this_window_and_the_last_then_forgets() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(10);
        let window = rtt + HELD_AFTER_FLOW;
        let mut r = Recent::new(t0);
        for i in 1..=100 {
            assert_eq!(r.opened(t0, rtt), i);
        }
        // The next window still counts the last one's 100.
        assert_eq!(r.opened(t0 + window, rtt), 101);
        assert_eq!(r.opened(t0 + window + Duration::from_millis(1), rtt), 102);
        // Two windows later, only the previous window's 2 remain.
        assert_eq!(r.opened(t0 + 2 * window, rtt), 3);
        // After a long quiet, nothing from before.
        assert_eq!(r.opened(t0 + 10 * window, rtt), 1);
    }
}
