//! Step 3, tunnel: one QUIC connection per peer and role over one UDP socket. This host
//! dials each peer (dial.rs) and carries its outbound flows on that connection; each
//! peer dials us and its flows arrive on the connection we accepted (accept.rs).
pub mod accept;
pub mod credit;
#[cfg(test)]
mod dead_peers_tests;
pub mod dial;
#[cfg(test)]
mod limits_tests;
pub mod liveness;
pub mod probe;
pub mod socket;
pub mod status;
pub mod transport;
pub mod validity;

use crate::identity::PeerId;
use serde::Serialize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// A verified QUIC connection to a peer, with the flows it carries.
pub struct Tunnel {
    pub conn: quinn::Connection,
    pub peer: PeerId,
    /// The peer's leaf certificate (DER): a different one from the same peer means it rotated.
    pub peer_leaf: Vec<u8>,
    pub flows: AtomicU64,
    /// On a connection the peer dialled: the streams it may have open at once (accept.rs
    /// raises it with use; a reload of tunnel.maxStreams may lower it).
    pub stream_credit: AtomicU32,
    pub created: std::time::Instant,
}

impl Tunnel {
    pub fn new(conn: quinn::Connection, peer: PeerId) -> Tunnel {
        let peer_leaf = conn
            .peer_identity()
            .and_then(|any| {
                any.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|chain| chain.first().map(|c| c.as_ref().to_vec()))
            .unwrap_or_default();
        Tunnel {
            conn,
            peer,
            peer_leaf,
            flows: AtomicU64::new(0),
            stream_credit: AtomicU32::new(0),
            created: std::time::Instant::now(),
        }
    }
}

/// Why a connection ended, in the words the logs have always used.
pub fn describe_close(e: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError::*;
    match e {
        TimedOut => "idle timeout (peer silent)".into(),
        Reset => "stateless reset (the peer lost the connection: it restarted?)".into(),
        LocallyClosed => "closed locally".into(),
        ApplicationClosed(c) => format!(
            "closed by the peer: code {} ({})",
            c.error_code,
            String::from_utf8_lossy(&c.reason)
        ),
        ConnectionClosed(c) => format!("closed by the peer: {c}"),
        TransportError(t) => format!("transport error: {t}"),
        VersionMismatch => "the peer speaks no QUIC version of ours".into(),
        CidsExhausted => "connection IDs exhausted".into(),
    }
}

/// Closes a connection once its last flow is done (or it closed on its own meanwhile).
pub async fn close_when_idle(t: &Tunnel, reason: &[u8]) {
    while t.flows.load(Relaxed) > 0 && t.conn.close_reason().is_none() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    t.conn.close(crate::app_error::SHUTDOWN.into(), reason);
}

/// Counts a flow on its tunnel for as long as it lives (a retiring tunnel waits for zero).
pub struct FlowOnTunnel(pub Arc<Tunnel>);

impl FlowOnTunnel {
    pub fn new(t: Arc<Tunnel>) -> Self {
        t.flows.fetch_add(1, Relaxed);
        FlowOnTunnel(t)
    }
}

impl Drop for FlowOnTunnel {
    fn drop(&mut self) {
        self.0.flows.fetch_sub(1, Relaxed);
    }
}

#[derive(Default, Clone, Copy)]
struct PathTotals {
    lost: u64,
    datagrams_sent: u64,
    datagrams_received: u64,
}

/// The connections to or from one peer in one role, and the traffic over them: live
/// connections are read at scrape time, closed ones leave their totals behind, so the
/// counters stay monotonic across re-dials.
#[derive(Default)]
pub struct Link {
    pub traffic: Arc<crate::stats::Traffic>,
    live: Mutex<Vec<Arc<Tunnel>>>,
    carried: Mutex<PathTotals>,
}

#[derive(Serialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct LinkView {
    pub up: bool,
    pub rtt_ms: Option<f64>,
    pub cwnd: Option<u64>,
    pub lost_packets: u64,
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    #[serde(flatten)]
    pub traffic: crate::stats::TrafficView,
}

fn totals(c: &quinn::Connection) -> PathTotals {
    let s = c.stats();
    PathTotals {
        lost: s.path.lost_packets,
        datagrams_sent: s.udp_tx.datagrams,
        datagrams_received: s.udp_rx.datagrams,
    }
}

impl Link {
    pub fn add(&self, t: Arc<Tunnel>) {
        if let Ok(mut live) = self.live.lock() {
            live.push(t);
        }
    }

    /// A connection ended: its totals move to the carried sums.
    pub fn remove(&self, t: &Arc<Tunnel>) {
        let Ok(mut live) = self.live.lock() else {
            return;
        };
        let before = live.len();
        live.retain(|x| !Arc::ptr_eq(x, t));
        if live.len() != before {
            let p = totals(&t.conn);
            if let Ok(mut c) = self.carried.lock() {
                c.lost += p.lost;
                c.datagrams_sent += p.datagrams_sent;
                c.datagrams_received += p.datagrams_received;
            }
        }
    }

    /// Flows open now over these connections (for the receiver, the peer's inbound flows).
    pub fn open_flows(&self) -> u64 {
        self.live
            .lock()
            .map(|l| l.iter().map(|t| t.flows.load(Relaxed)).sum())
            .unwrap_or(u64::MAX)
    }

    pub fn live(&self) -> Vec<Arc<Tunnel>> {
        self.live.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn view(&self) -> LinkView {
        let live = self.live();
        let mut sum = self.carried.lock().map(|c| *c).unwrap_or_default();
        let open: Vec<&Arc<Tunnel>> = live
            .iter()
            .filter(|t| t.conn.close_reason().is_none())
            .collect();
        for t in &live {
            let p = totals(&t.conn);
            sum.lost += p.lost;
            sum.datagrams_sent += p.datagrams_sent;
            sum.datagrams_received += p.datagrams_received;
        }
        // The newest open connection is the one new flows use: report its path.
        let newest = open.last().map(|t| t.conn.stats().path);
        LinkView {
            up: !open.is_empty(),
            rtt_ms: newest.map(|p| (p.rtt.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0),
            cwnd: newest.map(|p| p.cwnd),
            lost_packets: sum.lost,
            datagrams_sent: sum.datagrams_sent,
            datagrams_received: sum.datagrams_received,
            traffic: self.traffic.view(),
        }
    }
}
