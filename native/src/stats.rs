//! Counters the data plane keeps with relaxed atomics (no lock on the data path) and the
//! control plane reads when /status or /metrics is scraped (`DataPlane::stats`).
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Streams and payload bytes on the connections to or from one peer, one direction of tunnel.
#[derive(Default, Debug)]
pub struct Traffic {
    pub streams_active: AtomicU64,
    pub streams_total: AtomicU64,
    /// TCP payload carried towards the peer / from the peer.
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
}

#[derive(Serialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct TrafficView {
    pub streams_active: u64,
    pub streams_total: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl Traffic {
    pub fn view(&self) -> TrafficView {
        TrafficView {
            streams_active: self.streams_active.load(Relaxed),
            streams_total: self.streams_total.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
        }
    }
    pub fn stream_opened(&self) {
        self.streams_active.fetch_add(1, Relaxed);
        self.streams_total.fetch_add(1, Relaxed);
    }
    pub fn stream_closed(&self) {
        self.streams_active.fetch_sub(1, Relaxed);
    }
}

/// Declares a struct of named u64 counters with a serializable snapshot of it.
macro_rules! counters {
    ($name:ident, $view:ident { $($field:ident),* $(,)? }) => {
        #[derive(Default, Debug)]
        pub struct $name { $(pub $field: AtomicU64,)* }
        #[derive(Serialize, Debug, Default, Clone)]
        #[serde(rename_all = "camelCase")]
        pub struct $view { $(pub $field: u64,)* }
        impl $name {
            pub fn view(&self) -> $view { $view { $($field: self.$field.load(Relaxed),)* } }
        }
    };
}

counters!(
    CaptureCounters,
    CaptureView {
        accepted,
        refused,
        denied_by_policy,
        limit_hits,
        source_limit_hits,
        idle_timeouts,
        closed_by_policy,
        active,
    }
);

counters!(
    InboundCounters,
    InboundView {
        accepted,
        denied,
        denied_by_policy,
        connect_failed,
        idle_timeouts,
        closed_by_policy,
        active,
        limit_hits,
    }
);

counters!(
    QuicCounters,
    QuicView {
        dropped_datagrams,
        refused_handshakes,
        retries_sent,
        handshaking,
        connections,
    }
);

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

pub fn dec(c: &AtomicU64) {
    c.fetch_sub(1, Relaxed);
}
