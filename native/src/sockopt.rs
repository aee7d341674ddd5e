//! The socket options the data plane needs that tokio does not expose. (To be written.)
