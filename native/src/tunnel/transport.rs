//! quinn settings from the snapshot: one transport for both roles (but for the streams the
//! peer may open), the endpoint (its stateless-reset key survives restarts), and per-peer TLS
//! configs whose verifier expects exactly that peer's SPIFFE id (identity.rs).
//!
//! Stream credit costs memory and time up front: quinn-proto (0.11) creates the state of
//! every stream the peer may open when it creates the connection, and again when the credit
//! is raised (`StreamsState::new`, `ensure_remote_streams`: two hash-map entries per stream).
//! At tunnel.maxStreams' default (65,536) that is about 10 ms and 5.5 MB per connection, spent
//! in `Endpoint::connect_with` / `Incoming::accept_with` under the endpoint's lock, which the
//! endpoint driver needs for every datagram of every connection. So a connection we dial
//! gives the peer no stream credit (flows only ever go from the dialling side: accept.rs), and
//! one we accept gives it a little, then a little more once the peer is verified, and raises
//! it only as the peer's streams approach it (credit.rs, up to tunnel.maxStreams): memory
//! follows the streams in use, not the cap. 200 live peers at the full credit held 1.1 GB.
use crate::identity::{self, Credentials, Verdict};
use crate::snapshot::{Congestion, Snapshot};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{congestion, IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
use std::sync::Arc;
use std::time::Duration;

/// Per stream and per connection flow-control windows: room for bulk on a LAN with a few
/// milliseconds of scheduling delay, bounded so a slow receiver caps what we buffer.
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// Streams a peer that dialled us may open before it is verified: enough for the flows that
/// ride with the handshake, cheap to allocate (see the module docs; credit.rs after that).
pub const HANDSHAKE_STREAM_CREDIT: u32 = 256;

/// `peer_streams`: how many bidirectional streams the peer may have open at once.
pub fn transport(s: &Snapshot, peer_streams: u32) -> Result<Arc<TransportConfig>, String> {
    let t = &s.tunnel;
    let mut c = TransportConfig::default();
    let idle = IdleTimeout::try_from(Duration::from_millis(t.idle_timeout_ms))
        .map_err(|e| format!("tunnel.idleTimeoutMs: {e}"))?;
    c.max_idle_timeout(Some(idle));
    c.keep_alive_interval(Some(Duration::from_millis(t.keep_alive_ms)));
    c.max_concurrent_bidi_streams(VarInt::from_u32(peer_streams));
    c.max_concurrent_uni_streams(VarInt::from_u32(0));
    // DATAGRAM frames only for liveness probes (probe.rs): room for one, never read.
    c.datagram_receive_buffer_size(Some(64));
    c.stream_receive_window(VarInt::from_u32(STREAM_WINDOW));
    c.receive_window(VarInt::from_u32(CONNECTION_WINDOW));
    c.send_window(u64::from(CONNECTION_WINDOW));
    // The operator states what the underlay carries (1350 fits any 1500-byte path; 8952 for
    // jumbo frames): start there and never probe above it.
    c.initial_mtu(t.max_datagram_bytes);
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(t.max_datagram_bytes);
    c.mtu_discovery_config(Some(mtu));
    match s.congestion {
        Congestion::Cubic => {
            c.congestion_controller_factory(Arc::new(congestion::CubicConfig::default()))
        }
        Congestion::NewReno => {
            c.congestion_controller_factory(Arc::new(congestion::NewRenoConfig::default()))
        }
        Congestion::Bbr => {
            c.congestion_controller_factory(Arc::new(congestion::BbrConfig::default()))
        }
    };
    Ok(Arc::new(c))
}

pub fn endpoint_config(s: &Snapshot) -> quinn::EndpointConfig {
    // Stateless-reset tokens derive from a key stable across restarts: a peer still using a
    // connection we lost by restarting learns it from its next packet, not from its idle timeout.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &s.reset_key);
    quinn::EndpointConfig::new(Arc::new(key))
}

/// The endpoint-wide server settings (Retry tokens, limits on unaccepted Initials). Each
/// accepted connection gets `server_config_for` its peer instead of this one's TLS.
pub fn server_config_for(
    s: &Snapshot,
    creds: &Credentials,
    peer: &str,
) -> Result<(quinn::ServerConfig, Verdict), String> {
    let (tls, verdict) = identity::server_config(creds, &s.trust_domain, peer)?;
    let quic =
        QuicServerConfig::try_from(tls).map_err(|e| format!("QUIC server TLS config: {e}"))?;
    let mut c = quinn::ServerConfig::with_crypto(Arc::new(quic));
    c.transport_config(transport(
        s,
        s.tunnel.max_streams.min(HANDSHAKE_STREAM_CREDIT),
    )?);
    c.migration(false);
    // Only the handshakes the caps let through get state; the rest are ignored (accept.rs).
    c.max_incoming(1024);
    let mut tokens = quinn::ValidationTokenConfig::default();
    tokens.sent(0); // no NEW_TOKEN: every handshake is a fresh, fully verified one
    c.validation_token_config(tokens);
    Ok((c, verdict))
}

pub fn client_config_for(
    s: &Snapshot,
    creds: &Credentials,
    peer: &str,
) -> Result<(quinn::ClientConfig, Verdict), String> {
    let (tls, verdict) = identity::client_config(creds, &s.trust_domain, peer)?;
    let quic =
        QuicClientConfig::try_from(tls).map_err(|e| format!("QUIC client TLS config: {e}"))?;
    let mut c = quinn::ClientConfig::new(Arc::new(quic));
    c.transport_config(transport(s, 0)?);
    Ok((c, verdict))
}
