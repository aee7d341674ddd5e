//! What the control plane pushes in: everything the data plane needs to decide, as one
//! immutable value. TypeScript builds it from the validated config (daemon/dataplane/),
//! sends it as JSON, and the data plane swaps it in atomically on reload and rotation.
//! `Snapshot::parse` checks it again here: the boundary trusts nothing it did not check.
use crate::addr::{Cidr, Endpoint};
use crate::policy::PolicyTable;
use crate::route::RouteTable;
use serde::Deserialize;
use std::sync::Arc;

/// The JSON shape (camelCase, as TypeScript writes it).
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotJson {
    pub node: String,
    pub trust_domain: String,
    pub listen_quic: String,
    pub capture_port: u16,
    /// listen.admin's port: inbound delivery refuses it on any address.
    pub admin_port: u16,
    pub mark: u32,
    pub local_cidrs: Vec<String>,
    pub peers: Vec<PeerJson>,
    pub policy: crate::policy::PolicyJson,
    pub tls: TlsJson,
    pub tunnel: TunnelJson,
    pub capture: CaptureJson,
    /// `close`: open flows a new policy denies are reset; `finish`: they run to their end.
    pub denied_connections: String,
    /// Per-flow summaries (`flow-closed` events) are sent only when this is on (debug logging).
    pub log_flows: bool,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerJson {
    pub name: String,
    pub endpoint: String,
    pub cidrs: Vec<String>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsJson {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// Hex of the secret stateless-reset tokens derive from (stable across restarts).
    pub reset_key_hex: String,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelJson {
    pub idle_timeout_ms: u64,
    pub keep_alive_ms: u64,
    pub connect_timeout_ms: u64,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub max_datagram_bytes: u16,
    pub max_streams: u32,
    pub congestion_control: String,
    pub address_validation: String,
    pub max_handshakes: u32,
    pub max_handshakes_per_source: u32,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaptureJson {
    pub max_connections: u32,
    pub max_connections_per_source: u32,
    pub idle_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub endpoint: Endpoint,
    pub cidrs: Vec<Cidr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressValidation {
    Always,
    UnderLoad,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Congestion {
    Cubic,
    NewReno,
    Bbr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedConnections {
    Close,
    Finish,
}

/// The checked snapshot the data plane runs on.
#[derive(Debug)]
pub struct Snapshot {
    pub node: String,
    pub trust_domain: String,
    pub listen_quic: Endpoint,
    pub capture_port: u16,
    pub admin_port: u16,
    pub mark: u32,
    pub peers: Vec<Arc<Peer>>,
    pub routes: RouteTable,
    pub policy: PolicyTable,
    pub tls: TlsJson,
    pub reset_key: Vec<u8>,
    pub tunnel: TunnelJson,
    pub congestion: Congestion,
    pub address_validation: AddressValidation,
    pub capture: CaptureJson,
    pub denied_connections: DeniedConnections,
    pub log_flows: bool,
}

impl Snapshot {
    pub fn parse(json: &str) -> Result<Snapshot, String> {
        let raw: SnapshotJson = serde_json::from_str(json).map_err(|e| format!("snapshot: {e}"))?;
        Snapshot::from_json(raw)
    }

    pub fn from_json(raw: SnapshotJson) -> Result<Snapshot, String> {
        let cidrs = |list: &[String], key: &str| -> Result<Vec<Cidr>, String> {
            list.iter()
                .map(|c| c.parse::<Cidr>().map_err(|e| format!("{key}: {e}")))
                .collect()
        };
        let local = cidrs(&raw.local_cidrs, "local.cidrs")?;
        let mut peers = Vec::with_capacity(raw.peers.len());
        for (i, p) in raw.peers.iter().enumerate() {
            peers.push(Arc::new(Peer {
                name: p.name.clone(),
                endpoint: p
                    .endpoint
                    .parse()
                    .map_err(|e| format!("peers[{i}].endpoint: {e}"))?,
                cidrs: cidrs(&p.cidrs, &format!("peers[{i}].cidrs"))?,
            }));
        }
        let routes = RouteTable::new(&local, &peers);
        let policy = PolicyTable::compile(&raw.policy)?;
        let reset_key = hex_decode(&raw.tls.reset_key_hex).ok_or("tls.resetKeyHex: not hex")?;
        if reset_key.len() < 16 {
            return Err("tls.resetKeyHex: at least 16 bytes".into());
        }
        let congestion = match raw.tunnel.congestion_control.as_str() {
            "cubic" => Congestion::Cubic,
            "reno" => Congestion::NewReno,
            "bbr" => Congestion::Bbr,
            other => return Err(format!("tunnel.congestionControl: unknown {other:?}")),
        };
        let address_validation = match raw.tunnel.address_validation.as_str() {
            "always" => AddressValidation::Always,
            "under-load" => AddressValidation::UnderLoad,
            "never" => AddressValidation::Never,
            other => return Err(format!("tunnel.addressValidation: unknown {other:?}")),
        };
        let denied_connections = match raw.denied_connections.as_str() {
            "close" => DeniedConnections::Close,
            "finish" => DeniedConnections::Finish,
            other => return Err(format!("reload.deniedConnections: unknown {other:?}")),
        };
        if raw.tunnel.keep_alive_ms == 0 || raw.tunnel.keep_alive_ms >= raw.tunnel.idle_timeout_ms {
            return Err("tunnel.keepAliveMs must be above 0 and below tunnel.idleTimeoutMs".into());
        }
        if raw.tunnel.max_datagram_bytes < 1200 {
            return Err("tunnel.maxDatagramBytes must be at least 1200".into());
        }
        Ok(Snapshot {
            listen_quic: raw
                .listen_quic
                .parse()
                .map_err(|e| format!("listen.quic: {e}"))?,
            node: raw.node,
            trust_domain: raw.trust_domain,
            capture_port: raw.capture_port,
            admin_port: raw.admin_port,
            mark: raw.mark,
            peers,
            routes,
            policy,
            tls: raw.tls,
            reset_key,
            tunnel: raw.tunnel,
            congestion,
            address_validation,
            capture: raw.capture,
            denied_connections,
            log_flows: raw.log_flows,
        })
    }

    /// The configured peer whose endpoint address is `ip` (QUIC datagrams must come from one).
    pub fn peer_at(&self, ip: std::net::IpAddr) -> Option<&Arc<Peer>> {
        let ip = crate::addr::canonical(ip);
        self.peers.iter().find(|p| p.endpoint.ip() == ip)
    }

    /// capture.idleTimeoutMs as a flow's idle limit (0: none); both ends of a flow use it.
    pub fn flow_idle_timeout(&self) -> Option<std::time::Duration> {
        Some(self.capture.idle_timeout_ms)
            .filter(|&ms| ms > 0)
            .map(std::time::Duration::from_millis)
    }

    pub fn peer_named(&self, name: &str) -> Option<&Arc<Peer>> {
        self.peers.iter().find(|p| p.name == name)
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
