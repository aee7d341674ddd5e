//! qmesh's data plane, loaded by the daemon as an N-API addon. The modules follow the
//! traffic: capture -> route/policy -> tunnel -> flow -> deliver; `api` is the boundary.
pub mod addr;
#[cfg(feature = "addon")]
pub mod api;
#[cfg(feature = "addon")]
pub mod capture;
#[cfg(feature = "addon")]
pub mod deliver;
pub mod events;
pub mod flow;
pub mod header;
pub mod identity;
pub mod own_address;
#[cfg(feature = "addon")]
pub mod per_source;
#[cfg(feature = "addon")]
pub mod plane;
pub mod policy;
#[cfg(feature = "addon")]
pub mod registry;
#[cfg(feature = "addon")]
pub mod reload;
pub mod route;
pub mod snapshot;
pub mod sockopt;
pub mod stats;
#[cfg(all(test, feature = "addon"))]
mod test_plane;
#[cfg(test)]
mod test_tls;
#[cfg(feature = "addon")]
pub mod tunnel;

/// Application error codes carried in RESET_STREAM / STOP_SENDING / CONNECTION_CLOSE
/// (the same numbers as the JavaScript data path used, so mixed versions read each other).
pub mod app_error {
    /// The TCP connection on the other side was reset.
    pub const TCP_RESET: u32 = 0x1;
    /// The receiving side could not connect to the destination.
    pub const CONNECT_FAILED: u32 = 0x2;
    /// Destination, claimed source or policy does not allow it.
    pub const DENIED: u32 = 0x3;
    /// The stream header did not parse, or did not arrive in time.
    pub const BAD_HEADER: u32 = 0x4;
    /// The daemon is stopping or the tunnel was replaced.
    pub const SHUTDOWN: u32 = 0x5;
    /// Connection close: the peer's certificate identity was refused.
    pub const IDENTITY: u32 = 0x6;
    /// The flow saw no byte either way for capture.idleTimeoutMs.
    pub const IDLE_TIMEOUT: u32 = 0x7;
    /// The peer already had tunnel.maxStreams flows open towards this host.
    pub const LIMIT: u32 = 0x8;
}
