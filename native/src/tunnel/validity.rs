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

/// This host's certificate's validity (not before, not after), Unix seconds.
pub fn own_validity(shared: &Shared) -> Option<(i64, i64)> {
    let creds = shared.creds.load();
    let (_, cert) = x509_parser::parse_x509_certificate(creds.leaf_der()).ok()?;
    Some((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

pub fn own_not_after(shared: &Shared) -> Option<i64> {
    own_validity(shared).map(|v| v.1)
}

/// When to renew (10 % of the lifetime before the end, at most 5 minutes) and when the
/// first of the two certificates it was authenticated with ends.
pub fn expiry(shared: &Shared, t: &Tunnel) -> (Instant, Instant) {
    let own = own_not_after(shared).unwrap_or(i64::MAX);
    let (end, start) = if own < t.peer.not_after_unix {
        (own, own_validity(shared).map_or(own, |v| v.0))
    } else {
        (t.peer.not_after_unix, t.peer.not_before_unix)
    };
    let margin = ((end - start).max(0) / 10).min(300);
    let now_unix = (now_ms() / 1000) as i64;
    let at = |unix: i64| {
        Instant::now()
            + Duration::from_secs(unix.saturating_sub(now_unix).clamp(0, 10 * 365 * 86_400) as u64)
    };
    (at(end - margin), at(end))
}

pub fn iso(unix: i64) -> String {
    // RFC 3339 in UTC without a date library: days from the civil calendar algorithm.
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
