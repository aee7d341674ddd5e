//! Is the peer still there? A check an attacker cannot answer for it: only the peer can
//! send an authenticated ACK. Used to verify an ICMP hint (socket.rs) before ending a tunnel.
//!
//! quinn 0.11 has no public PING. A QUIC DATAGRAM frame (RFC 9221) is ack-eliciting, so the
//! probe is a 1-byte datagram and the answer is any ACK frame the connection receives
//! afterwards (`stats().frame_rx.acks`, counted only for packets that decrypted; the
//! `udp_rx` counters also count datagrams that fail authentication).
//!
//! Requirements on both ends (quinn-proto 0.11): `send_datagram` fails with `Disabled`
//! unless the sender's own `TransportConfig::datagram_receive_buffer_size` is `Some`, and
//! with `UnsupportedByPeer` unless the peer's is (it is advertised as max_datagram_frame_size).
//! So the transport of every tunnel must set `datagram_receive_buffer_size(Some(n))`. Nobody
//! has to read the probes: a received DATAGRAM is appended to a buffer of `n` bytes where each
//! one counts its length plus 32 (the size of a `Bytes`), and the oldest are dropped to make
//! room (DatagramState::received); DATAGRAM frames are not flow controlled, so unread ones
//! stall nothing. A datagram whose length + 32 exceeds `n` is a PROTOCOL_VIOLATION that closes
//! the connection, so with `n = 64` (one 1-byte probe buffered at most) never send anything
//! but these probes.
use bytes::Bytes;
use quinn::SendDatagramError;
use std::time::Duration;
use tokio::time::Instant;

/// How often the connection's ACK count is looked at while waiting.
const CHECK_EVERY: Duration = Duration::from_millis(2);
/// The probe is sent again at this fraction of the timeout (in case one is lost).
const SENDS: u32 = 4;

/// Sends an ack-eliciting probe on `conn` and waits up to `timeout` for an ACK from the peer
/// (any ACK frame in an authenticated packet received afterwards). true: the peer answered
/// (alive; typically after one RTT plus the peer's ACK delay, 25 ms by default). false:
/// nothing came back.
///
/// false at once if the connection is closed (a restarted peer's stateless reset closes it).
/// If datagrams were not negotiated on this connection (see the module docs) nothing can be
/// sent: true, i.e. unverified, so the idle timeout stays the judge. An ACK that was already in
/// flight when the peer died can make a dead peer look alive once; a later hint asks again.
pub async fn peer_answers(conn: &quinn::Connection, timeout: Duration) -> bool {
    let start = Instant::now();
    let deadline = start + timeout;
    let resend = (timeout / SENDS).max(Duration::from_millis(10));
    let before = conn.stats().frame_rx.acks;
    let mut next_send = start;
    loop {
        if conn.close_reason().is_some() {
            return false;
        }
        if conn.stats().frame_rx.acks > before {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        if now >= next_send {
            match conn.send_datagram(Bytes::from_static(&[0])) {
                Ok(()) => {}
                Err(SendDatagramError::ConnectionLost(_)) => return false,
                Err(_) => return true,
            }
            next_send = now + resend;
        }
        tokio::time::sleep_until((now + CHECK_EVERY).min(deadline)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::socket::tests::{client_endpoint, server_endpoint, transport, Daemon};

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_live_peer_answers_quickly() {
        let server = server_endpoint(transport(Some(64)));
        let client = client_endpoint(transport(Some(64)), None);
        let to = server.local_addr().unwrap();
        let (conn, _accepted) = tokio::join!(
            async { client.connect(to, "localhost").unwrap().await.unwrap() },
            async { server.accept().await.unwrap().await.unwrap() }
        );
        for _ in 0..3 {
            let started = Instant::now();
            assert!(peer_answers(&conn, T).await);
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "{:?}",
                started.elapsed()
            );
        }
        assert!(conn.close_reason().is_none());
    }

    #[tokio::test]
    async fn a_dead_peer_does_not() {
        let mut peer = Daemon::start(transport(Some(64)));
        let client = client_endpoint(transport(Some(64)), None);
        let conn = client
            .connect(peer.addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        assert!(peer_answers(&conn, T).await);
        peer.kill();
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        assert!(!peer_answers(&conn, timeout).await);
        assert!(started.elapsed() >= timeout);
        assert!(started.elapsed() < timeout + Duration::from_millis(200));
        // Only the check said so: the connection itself is still open.
        assert!(conn.close_reason().is_none());
    }

    #[tokio::test]
    async fn a_closed_connection_is_not_alive() {
        let server = server_endpoint(transport(Some(64)));
        let client = client_endpoint(transport(Some(64)), None);
        let to = server.local_addr().unwrap();
        let (conn, _accepted) = tokio::join!(
            async { client.connect(to, "localhost").unwrap().await.unwrap() },
            async { server.accept().await.unwrap().await.unwrap() }
        );
        conn.close(0u32.into(), b"bye");
        let started = Instant::now();
        assert!(!peer_answers(&conn, T).await);
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn without_datagrams_it_cannot_tell_and_says_alive() {
        // The peer did not enable datagrams: nothing can be sent, so no verdict of death.
        let server = server_endpoint(transport(None));
        let client = client_endpoint(transport(Some(64)), None);
        let to = server.local_addr().unwrap();
        let (conn, _accepted) = tokio::join!(
            async { client.connect(to, "localhost").unwrap().await.unwrap() },
            async { server.accept().await.unwrap().await.unwrap() }
        );
        assert!(matches!(
            conn.send_datagram(Bytes::from_static(&[0])),
            Err(SendDatagramError::UnsupportedByPeer)
        ));
        let started = Instant::now();
        assert!(peer_answers(&conn, T).await);
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn unread_probes_are_dropped_not_buffered() {
        // The receiver never reads datagrams: with a 64-byte buffer it keeps the newest probe
        // only, and the connection keeps answering.
        let server = server_endpoint(transport(Some(64)));
        let client = client_endpoint(transport(Some(64)), None);
        let to = server.local_addr().unwrap();
        let (conn, accepted) = tokio::join!(
            async { client.connect(to, "localhost").unwrap().await.unwrap() },
            async { server.accept().await.unwrap().await.unwrap() }
        );
        for _ in 0..20 {
            assert!(peer_answers(&conn, T).await);
        }
        assert!(accepted.read_datagram().await.is_ok());
        let second =
            tokio::time::timeout(Duration::from_millis(100), accepted.read_datagram()).await;
        assert!(second.is_err(), "more than one probe was buffered");
        assert!(conn.close_reason().is_none() && accepted.close_reason().is_none());
    }
}
