//! Time and certificate validity for tunnels: when a tunnel must be renewed (a margin
//! before the first of the two certificates it was authenticated with expires) and when it
//! must close (fail closed at that expiry); timestamps as the logs print them.
use super::Tunnel;
use crate::plane::Shared;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// This host's certificate's not-after, Unix seconds.
pub fn own_not_after(shared: &Shared) -> i64 {
    shared.creds.load().validity().1
}

/// When to renew (10 % of the lifetime before the end, at most 5 minutes) and when the
/// first of the two certificates it was authenticated with ends.
pub fn expiry(shared: &Shared, t: &Tunnel) -> (Instant, Instant) {
    let (own_start, own) = shared.creds.load().validity();
    let (end, start) = if own < t.peer.not_after_unix {
        (own, own_start)
    } else {
        (t.peer.not_after_unix, t.peer.not_before_unix)
    };
    let margin = ((end - start).max(0) / 10).min(300);
    let now = now_ms() as i64;
    let at = |unix_ms: i64| {
        Instant::now()
            + Duration::from_millis((unix_ms - now).clamp(0, 10 * 365 * 86_400_000) as u64)
    };
    // A certificate is valid through the whole second of its notAfter (identity/leaf.rs, as
    // the handshake checks it): the tunnel closes the moment a new handshake would be refused.
    (at((end - margin) * 1000), at((end + 1) * 1000))
}

/// A Unix time as the logs print it (JavaScript's toISOString).
pub use crate::identity::iso_utc as iso;
