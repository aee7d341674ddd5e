//! TLS identity: rustls configs for both roles and the SPIFFE check. (To be written.)
