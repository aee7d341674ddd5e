//! Fast and forge-proof detection of a dead peer. ICMP says a peer's port is closed (its
//! daemon died; socket.rs turns such errors into hints), or the peer dialled us anew (it
//! restarted): neither is believed on its own, since both can be forged. Each triggers a
//! probe (probe.rs) on every tunnel with that peer; only a tunnel whose peer does not
//! answer is closed, and its flows reset. A handshake in progress is abandoned on a hint
//! (a forged ICMP can delay a tunnel, never end one that works).
use super::probe;
use crate::addr::Endpoint;
use crate::app_error;
use crate::events::Level;
use crate::fields;
use crate::plane::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// How long a live peer has to answer a probe: several round trips on a loaded host.
const PROBE_TIMEOUT_MIN: Duration = Duration::from_millis(500);

pub async fn hint_loop(shared: Arc<Shared>, mut hints: UnboundedReceiver<SocketAddr>) {
    loop {
        let addr = tokio::select! {
            a = hints.recv() => match a { Some(a) => Endpoint::from(a), None => break },
            _ = shared.stop.cancelled() => break,
        };
        let Some(peer) = shared
            .snapshot
            .load()
            .peers
            .iter()
            .find(|p| p.endpoint == addr)
            .map(|p| p.name.clone())
        else {
            continue; // not a peer's endpoint: nothing of ours to verify
        };
        if let Some(d) = shared.dialer(&peer) {
            d.unreachable_hint();
        }
        verify_peer(&shared, &peer, "ICMP: the peer's QUIC port is closed");
    }
}

/// Probes every tunnel with `peer` (at most one round of probes per peer at a time) and
/// closes those whose peer does not answer.
pub fn verify_peer(shared: &Arc<Shared>, peer: &str, why: &'static str) {
    let Ok(mut probing) = shared.probing.lock() else {
        return;
    };
    if !probing.insert(peer.to_string()) {
        return;
    }
    drop(probing);
    let mut tunnels = shared.accepted_link(peer).live();
    let dialer = shared.dialer(peer);
    if let Some(d) = &dialer {
        tunnels.extend(d.link.live());
        d.set_verifying(true);
    }
    let (shared, peer) = (shared.clone(), peer.to_string());
    tokio::spawn(async move {
        let checks: Vec<_> = tunnels
            .into_iter()
            .filter(|t| t.conn.close_reason().is_none())
            .map(|t| {
                let (shared, peer) = (shared.clone(), peer.clone());
                tokio::spawn(async move {
                    let timeout = PROBE_TIMEOUT_MIN.max(t.conn.rtt() * 8);
                    if probe::peer_answers(&t.conn, timeout).await {
                        return;
                    }
                    let reason = format!(
                        "peer unreachable ({why}; no answer to a probe within {} ms)",
                        timeout.as_millis()
                    );
                    shared.emit(
                        Level::Warn,
                        "tunnel",
                        "peer unreachable; closing its tunnel",
                        fields! {"peer" => peer, "reason" => reason},
                    );
                    t.conn
                        .close(app_error::SHUTDOWN.into(), b"peer unreachable");
                })
            })
            .collect();
        for c in checks {
            let _ = c.await;
        }
        if let Some(d) = dialer {
            d.set_verifying(false);
        }
        if let Ok(mut probing) = shared.probing.lock() {
            probing.remove(&peer);
        }
    });
}
