//! Reload: a new snapshot swapped in while everything runs. The caps are read from the
//! snapshot where they are enforced, so a changed one counts from the next handshake or
//! flow; what is already open is judged again here: flows the new policy denies, removed
//! peers' tunnels (their flows end as reload.deniedConnections says), tunnels the new CA
//! no longer trusts, and the stream credit live connections give their peer.
use crate::events::Level;
use crate::fields;
use crate::identity::Credentials;
use crate::plane::Shared;
use crate::policy::{Action, PolicyFlow};
use crate::registry::Direction;
use crate::snapshot::{DeniedConnections, Snapshot};
use crate::tunnel::{accept, credit, Link};
use crate::{app_error, stats};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

impl Shared {
    /// Swaps in a checked snapshot (plane::prepare) and brings what runs in line with it.
    pub fn apply(
        self: &Arc<Self>,
        snap: Snapshot,
        creds: Credentials,
        rt: &tokio::runtime::Handle,
    ) -> Result<(), String> {
        let old = self.snapshot.load_full();
        if snap.listen_quic != old.listen_quic || snap.capture_port != old.capture_port {
            return Err("only a restart can change listen.quic or listen.capture".into());
        }
        let new_ca = old.tls.ca_pem != snap.tls.ca_pem;
        let new_credentials =
            new_ca || old.tls.cert_pem != snap.tls.cert_pem || old.tls.key_pem != snap.tls.key_pem;
        let removed: Vec<String> = old
            .peers
            .iter()
            .filter(|p| {
                snap.peer_named(&p.name)
                    .is_none_or(|n| n.endpoint != p.endpoint)
            })
            .map(|p| p.name.clone())
            .collect();
        let streams =
            (old.tunnel.max_streams != snap.tunnel.max_streams).then_some(snap.tunnel.max_streams);
        let finish = snap.denied_connections == DeniedConnections::Finish;
        self.snapshot.store(Arc::new(snap));
        self.creds.store(Arc::new(creds));
        // Stops the removed peers' dialers: a dial in progress is abandoned.
        self.sync_dialers(rt);
        let snap = self.snapshot.load_full();
        for name in &removed {
            let why = if snap.peer_named(name).is_some() {
                "peer endpoint changed"
            } else {
                "peer removed from config"
            };
            let open = self.flows.open().iter().filter(|f| &f.peer == name).count();
            let msg = if finish {
                format!("{why}; its open connections are left to finish (reload.deniedConnections)")
            } else {
                format!("{why}; its open connections are closed (reload.deniedConnections)")
            };
            self.emit(
                Level::Info,
                "tunnel",
                &msg,
                fields! {"peer" => name, "openConnections" => open},
            );
            accept::drop_peer(self, name, why, finish, rt);
        }
        if let Some(n) = streams {
            self.set_stream_limit(n);
        }
        self.review_open_flows();
        if new_ca {
            self.close_untrusted("peer certificate no longer trusted (CA removed from tls.ca)");
        }
        if new_credentials {
            for d in self.all_dialers() {
                d.request_renewal("new certificates loaded");
            }
        }
        Ok(())
    }

    fn all_dialers(&self) -> Vec<Arc<crate::tunnel::dial::Dialer>> {
        self.dialers
            .lock()
            .map(|d| d.values().cloned().collect())
            .unwrap_or_default()
    }

    fn accepted_links(&self) -> Vec<(String, Arc<Link>)> {
        self.accepted
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// tunnel.maxStreams changed: a connection a peer dialled whose stream credit is above the
    /// new value is lowered to it; one below keeps growing with use, now up to the new value
    /// (accept.rs; those we dialled give none: transport.rs). QUIC cannot take back credit
    /// already given, so accept.rs also counts each peer's flows against the current value
    /// and refuses the excess.
    fn set_stream_limit(&self, n: u32) {
        for (_, link) in self.accepted_links() {
            for t in link.live() {
                if t.stream_credit.load(Relaxed) > n {
                    credit::set(&t, n);
                }
            }
        }
    }

    /// After a reload: every open flow judged again by the new policy (reload.deniedConnections).
    pub fn review_open_flows(&self) {
        let snap = self.snapshot.load();
        for f in self.flows.open() {
            let from = match f.direction {
                Direction::Outbound => snap.node.as_str(),
                Direction::Inbound => f.peer.as_str(),
            };
            let flow = PolicyFlow {
                from_peer: from,
                source: f.source.ip(),
                destination: f.destination.ip(),
                port: f.destination.port(),
            };
            let d = snap.policy.evaluate(&flow);
            if d.action != Action::Deny {
                continue;
            }
            let component = if f.direction == Direction::Outbound {
                "capture"
            } else {
                "inbound"
            };
            let base = fields! {"peer" => f.peer, "src" => f.source.to_string(), "dst" => f.destination.to_string(), "rule" => d.rule};
            match snap.denied_connections {
                DeniedConnections::Finish => self.emit(Level::Info, component, "open connection now denied by policy; left to finish (reload.deniedConnections)", base),
                DeniedConnections::Close => {
                    let counter = if f.direction == Direction::Outbound { &self.capture.closed_by_policy } else { &self.inbound.closed_by_policy };
                    stats::inc(counter);
                    let mut fields = base;
                    fields["reason"] = "denied by reloaded policy".into();
                    self.emit(Level::Warn, component, "open connection closed", fields);
                    f.ctl.abort(app_error::DENIED, &format!("denied by policy ({})", d.rule));
                }
            }
        }
    }

    /// After `tls.ca` changed: every connection, either role, whose peer certificate no longer
    /// chains to the bundle closes now, not when the certificate expires.
    pub fn close_untrusted(&self, reason: &str) {
        let creds = self.creds.load();
        for d in self.all_dialers() {
            for t in d.link.live() {
                if !creds.still_trusts(&t.peer_leaf) {
                    self.emit(
                        Level::Warn,
                        "tunnel",
                        "closing tunnel",
                        fields! {"peer" => d.peer.name, "role" => "client", "reason" => reason},
                    );
                    t.conn.close(app_error::IDENTITY.into(), reason.as_bytes());
                }
            }
        }
        for (peer, link) in self.accepted_links() {
            for t in link.live() {
                if !creds.still_trusts(&t.peer_leaf) {
                    self.emit(
                        Level::Warn,
                        "quic-listener",
                        "closing peer tunnel",
                        fields! {"peer" => peer, "role" => "server", "reason" => reason},
                    );
                    t.conn.close(app_error::IDENTITY.into(), reason.as_bytes());
                }
            }
        }
    }
}
