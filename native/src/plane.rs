//! The running data plane: the state every step shares, and its life cycle (start,
//! apply a new snapshot, drain, stop). `api.rs` exposes it to JavaScript.
use crate::events::{Events, Level};
use crate::flow::FlowCtl;
use crate::identity::Credentials;
use crate::registry::Registry;
use crate::snapshot::{DeniedConnections, Snapshot};
use crate::stats::{CaptureCounters, InboundCounters, QuicCounters};
use crate::tunnel::dial::Dialer;
use crate::tunnel::{transport, Link};
use crate::{app_error, stats};
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub creds: ArcSwap<Credentials>,
    pub events: Events,
    pub flows: Arc<Registry>,
    pub capture: CaptureCounters,
    pub inbound: InboundCounters,
    pub quic: QuicCounters,
    /// Draining: capture and inbound take no new flows; open ones carry on.
    pub draining: AtomicBool,
    /// Cancelled at stop: every task ends.
    pub stop: CancellationToken,
    pub endpoint: quinn::Endpoint,
    pub dialers: Mutex<HashMap<String, Arc<Dialer>>>,
    /// Per peer: the connections it dialled to us, and the traffic over them.
    pub accepted: Mutex<HashMap<String, Arc<Link>>>,
    /// Peers whose tunnels are being probed now (tunnel/liveness.rs).
    pub probing: Mutex<std::collections::HashSet<String>>,
    /// Crate tests only: this plane may deliver to loopback, where their echo servers
    /// listen (every listener of a test is an address of this host).
    #[cfg(test)]
    pub deliver_to_loopback: AtomicBool,
}

impl Shared {
    pub fn new(snap: Snapshot, creds: Credentials, endpoint: quinn::Endpoint) -> Shared {
        Shared {
            snapshot: ArcSwap::from_pointee(snap),
            creds: ArcSwap::from_pointee(creds),
            events: Default::default(),
            flows: Default::default(),
            capture: Default::default(),
            inbound: Default::default(),
            quic: Default::default(),
            draining: Default::default(),
            stop: Default::default(),
            endpoint,
            dialers: Default::default(),
            accepted: Default::default(),
            probing: Default::default(),
            #[cfg(test)]
            deliver_to_loopback: Default::default(),
        }
    }

    pub fn dialer(&self, peer: &str) -> Option<Arc<Dialer>> {
        self.dialers.lock().ok()?.get(peer).cloned()
    }

    pub fn accepted_link(&self, peer: &str) -> Arc<Link> {
        let Ok(mut m) = self.accepted.lock() else {
            return Arc::new(Link::default());
        };
        m.entry(peer.to_string()).or_default().clone()
    }

    pub fn emit(
        &self,
        level: Level,
        component: &'static str,
        msg: &str,
        fields: serde_json::Value,
    ) {
        self.events.emit(level, component, msg, fields);
    }

    /// Dials peers that are new (or whose endpoint changed) and stops those removed.
    pub fn sync_dialers(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        let snap = self.snapshot.load_full();
        let finish = snap.denied_connections == DeniedConnections::Finish;
        let Ok(mut dialers) = self.dialers.lock() else {
            return;
        };
        dialers.retain(|name, d| {
            let keep = snap
                .peer_named(name)
                .is_some_and(|p| p.endpoint == d.peer.endpoint);
            if !keep {
                let why = if snap.peer_named(name).is_some() {
                    "peer endpoint changed"
                } else {
                    "peer removed from config"
                };
                d.stop(why, finish);
            }
            keep
        });
        for peer in &snap.peers {
            if !dialers.contains_key(&peer.name) {
                dialers.insert(
                    peer.name.clone(),
                    Dialer::spawn(self.clone(), peer.clone(), rt),
                );
            }
        }
    }

    pub fn open_flows(&self) -> usize {
        self.flows.len()
    }

    /// Ends every open flow now (stop, or drain's grace period is over).
    pub fn reset_all_flows(&self, why: &str) -> usize {
        let open = self.flows.open();
        for f in &open {
            f.ctl.abort(app_error::SHUTDOWN, why);
        }
        open.len()
    }
}

/// What `stats()` returns: read when /status or /metrics is scraped.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsView {
    pub peers: Vec<PeerView>,
    pub capture: stats::CaptureView,
    pub inbound: stats::InboundView,
    pub quic: stats::QuicView,
    pub flows_open: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerView {
    pub name: String,
    pub outbound: crate::tunnel::status::OutboundView,
    pub inbound: crate::tunnel::LinkView,
}

pub fn stats_view(shared: &Shared) -> StatsView {
    let snap = shared.snapshot.load();
    let peers = snap
        .peers
        .iter()
        .map(|p| PeerView {
            name: p.name.clone(),
            outbound: shared.dialer(&p.name).map(|d| d.view()).unwrap_or_default(),
            inbound: shared.accepted_link(&p.name).view(),
        })
        .collect();
    StatsView {
        peers,
        capture: shared.capture.view(),
        inbound: shared.inbound.view(),
        quic: shared.quic.view(),
        flows_open: shared.flows.len(),
    }
}

/// Checks a new snapshot and builds everything it needs before anything is swapped: a
/// bad one leaves the running state untouched.
pub fn prepare(json: &str) -> Result<(Snapshot, Credentials), String> {
    let snap = Snapshot::parse(json)?;
    let creds = Credentials::from_pem(&snap.tls.ca_pem, &snap.tls.cert_pem, &snap.tls.key_pem)?;
    transport::transport(&snap, snap.tunnel.max_streams)?;
    // A TLS config per role must build with these credentials (the per-peer ones differ only in the name).
    transport::client_config_for(&snap, &creds, &snap.node)?;
    transport::server_config_for(&snap, &creds, &snap.node)?;
    Ok((snap, creds))
}

pub const DRAIN_POLL: Duration = Duration::from_millis(20);

/// A unit for flows: the flow control handle with the registry entry that makes it visible.
pub fn new_ctl() -> Arc<FlowCtl> {
    FlowCtl::new()
}

pub fn set_draining(shared: &Shared) {
    shared.draining.store(true, Relaxed);
}
