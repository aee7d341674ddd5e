//! What /status and /metrics show of the outbound tunnel to a peer.
use serde::Serialize;

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TunnelState {
    Connecting,
    Up,
    #[default]
    Down,
    Stopped,
}

#[derive(Default)]
pub(super) struct DialStatus {
    pub(super) state: TunnelState,
    pub(super) up_since_ms: Option<u64>,
    pub(super) handshakes: u64,
    pub(super) reconnects: u64,
    pub(super) renewals: u64,
    pub(super) last_error: Option<String>,
}

#[derive(Serialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct OutboundView {
    pub state: TunnelState,
    pub up_since_ms: Option<u64>,
    pub handshakes: u64,
    pub reconnects: u64,
    pub renewals: u64,
    pub last_error: Option<String>,
    #[serde(flatten)]
    pub link: super::LinkView,
}
