//! Step 5, deliver: the receiving end of a tunnel stream. Reads the stream header (reset
//! if it does not arrive whole in time), refuses a destination outside local.cidrs (never
//! an open relay) or belonging to this host itself (own_address.rs: its addresses, loopback,
//! the daemon's ports), a claimed source the sending peer does not own, and a flow the
//! policy denies; then connects to the destination with the daemon's SO_MARK and starts the pipe.
use crate::capture::report;
use crate::events::Level;
use crate::flow::{self, FlowCtl};
use crate::header::{self, Decoded, StreamHeader};
use crate::plane::Shared;
use crate::policy::{Action, PolicyFlow};
use crate::registry::{Direction, FlowEntry};
use crate::snapshot::Peer;
use crate::tunnel::FlowOnTunnel;
use crate::{app_error, fields, own_address, sockopt, stats};
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// A stream must bring its whole header within this long, or it is reset.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

static MARK_WARNED: AtomicBool = AtomicBool::new(false);
static NONLOCAL_WARNED: AtomicBool = AtomicBool::new(false);

/// Reads the header, or fails if it is not whole within `within` (a peer must not hold a
/// stream, and its task, open for free).
pub async fn read_header_within(
    recv: &mut quinn::RecvStream,
    within: Duration,
) -> Result<(StreamHeader, Bytes), String> {
    match tokio::time::timeout(within, read_header(recv)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no complete stream header within {} ms",
            within.as_millis()
        )),
    }
}

/// Reads until a complete header; returns it with whatever payload came along in the same reads.
async fn read_header(recv: &mut quinn::RecvStream) -> Result<(StreamHeader, Bytes), String> {
    let mut buf = BytesMut::new();
    loop {
        match StreamHeader::decode(&buf)? {
            Decoded::Complete(h, len) => return Ok((h, buf.split_off(len).freeze())),
            Decoded::Incomplete if buf.len() >= header::MAX_LEN => {
                return Err("truncated stream header".into())
            }
            Decoded::Incomplete => {}
        }
        match recv.read_chunk(header::MAX_LEN, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err("truncated stream header".into()),
            Err(e) => return Err(format!("stream ended before its header: {e}")),
        }
    }
}

pub async fn deliver(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    on_tunnel: FlowOnTunnel,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let stream = send.id().index();
    let refuse = |send: &mut quinn::SendStream,
                  recv: &mut quinn::RecvStream,
                  code: u32,
                  f: serde_json::Value,
                  reason: &str| {
        let mut f = f;
        f["reason"] = reason.into();
        shared.emit(Level::Warn, "inbound", "inbound stream refused", f);
        let _ = send.reset(code.into());
        let _ = recv.stop(code.into());
    };
    let (h, leftover) = match read_header_within(&mut recv, HEADER_TIMEOUT).await {
        Ok(x) => x,
        Err(why) => {
            stats::inc(&shared.inbound.denied);
            return refuse(
                &mut send,
                &mut recv,
                app_error::BAD_HEADER,
                fields! {"peer" => peer.name, "stream" => stream},
                &why,
            );
        }
    };
    let f = fields! {"peer" => peer.name, "stream" => stream, "src" => h.source.to_string(), "dst" => h.destination.to_string()};
    let snap = shared.snapshot.load_full();
    if !snap.routes.is_local(h.destination.ip()) {
        stats::inc(&shared.inbound.denied);
        return refuse(
            &mut send,
            &mut recv,
            app_error::DENIED,
            f,
            "destination outside local.cidrs",
        );
    }
    // local.cidrs holds the host's bridge gateway too: delivery must never reach the host itself.
    let (own, method) = own_address::refusal(h.destination, snap.admin_port, snap.capture_port);
    #[cfg(test)]
    let own = own.filter(|_| {
        !(shared.deliver_to_loopback.load(Relaxed) && h.destination.ip().is_loopback())
    });
    if method == Some(own_address::Method::Interfaces) && !NONLOCAL_WARNED.swap(true, Relaxed) {
        shared.emit(
            Level::Warn,
            "inbound",
            "ip_nonlocal_bind is on: host addresses are told apart by the interface list, which misses local routes",
            fields! {},
        );
    }
    if let Some(why) = own {
        stats::inc(&shared.inbound.denied);
        return refuse(&mut send, &mut recv, app_error::DENIED, f, &why);
    }
    // A reload may have removed or changed the peer since its connection was accepted.
    let Some(current) = snap.peer_named(&peer.name) else {
        stats::inc(&shared.inbound.denied);
        return refuse(
            &mut send,
            &mut recv,
            app_error::DENIED,
            f,
            "peer removed from config",
        );
    };
    if !snap.routes.owned_by(current, h.source.ip()) {
        stats::inc(&shared.inbound.denied);
        return refuse(
            &mut send,
            &mut recv,
            app_error::DENIED,
            f,
            &format!("source outside {}'s cidrs", peer.name),
        );
    }
    // The peer's name is its verified certificate identity; the source is one it owns (checked above).
    let flow = PolicyFlow {
        from_peer: &peer.name,
        source: h.source.ip(),
        destination: h.destination.ip(),
        port: h.destination.port(),
    };
    let decision = snap.policy.evaluate(&flow);
    if decision.action == Action::Deny {
        stats::inc(&shared.inbound.denied_by_policy);
        let mut f = f;
        f["rule"] = decision.rule.into();
        return refuse(
            &mut send,
            &mut recv,
            app_error::DENIED,
            f,
            "denied by policy",
        );
    }
    let ctl = FlowCtl::new();
    let registered = shared.flows.register(FlowEntry {
        direction: Direction::Inbound,
        peer: peer.name.clone(),
        source: h.source,
        destination: h.destination,
        ctl: ctl.clone(),
    });
    stats::inc(&shared.inbound.active);
    let tcp = match connect(&shared, &snap, h.destination).await {
        Ok(t) => t,
        Err(e) => {
            stats::dec(&shared.inbound.active);
            stats::inc(&shared.inbound.connect_failed);
            let mut f = f;
            f["err"] = e.clone().into();
            shared.emit(Level::Warn, "inbound", "destination connect failed", f);
            let _ = send.reset(app_error::CONNECT_FAILED.into());
            let _ = recv.stop(app_error::CONNECT_FAILED.into());
            return;
        }
    };
    stats::inc(&shared.inbound.accepted);
    let link = shared.accepted_link(&peer.name);
    link.traffic.stream_opened();
    let idle = snap.flow_idle_timeout();
    let log_flows = snap.log_flows;
    drop(snap);
    let summary = flow::run_pipe(
        tcp,
        send,
        recv,
        Bytes::new(),
        leftover,
        link.traffic.clone(),
        idle,
        ctl,
    )
    .await;
    link.traffic.stream_closed();
    stats::dec(&shared.inbound.active);
    drop(on_tunnel);
    report(&shared, &registered.entry, &summary, idle, log_flows);
}

async fn connect(
    shared: &Shared,
    snap: &crate::snapshot::Snapshot,
    to: crate::addr::Endpoint,
) -> Result<tokio::net::TcpStream, String> {
    match sockopt::connect_marked(to, snap.mark, CONNECT_TIMEOUT).await {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            // Without CAP_NET_ADMIN there is no SO_MARK; delivery targets local CIDRs, which capture never matches.
            if !MARK_WARNED.swap(true, Relaxed) {
                shared.emit(
                    Level::Warn,
                    "inbound",
                    "cannot set SO_MARK on delivery sockets; continuing unmarked",
                    fields! {"err" => e.to_string()},
                );
            }
            sockopt::connect_unmarked(to, CONNECT_TIMEOUT)
                .await
                .map_err(|e| io_code(&e))
        }
        Err(e) => Err(io_code(&e)),
    }
}

/// `ECONNREFUSED`-style names, as the logs have always shown them.
fn io_code(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "ECONNREFUSED".into(),
        TimedOut => "ETIMEDOUT".into(),
        HostUnreachable => "EHOSTUNREACH".into(),
        NetworkUnreachable => "ENETUNREACH".into(),
        ConnectionReset => "ECONNRESET".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::tests::tunnel;

    fn header() -> Vec<u8> {
        StreamHeader {
            destination: "198.19.2.10:80".parse().unwrap(),
            source: "198.19.1.10:4000".parse().unwrap(),
        }
        .encode()
        .unwrap()
    }

    /// Opens a stream, writes `parts` with a pause between them, then (if `fin`) finishes it;
    /// returns what the receiving side's read_header_within said.
    async fn receive(
        parts: Vec<Vec<u8>>,
        fin: bool,
        within: Duration,
    ) -> Result<(StreamHeader, Bytes), String> {
        let t = tunnel().await;
        let (mut send, _recv) = t.client.open_bi().await.unwrap();
        let writer = tokio::spawn(async move {
            for p in parts {
                send.write_all(&p).await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            if fin {
                send.finish().unwrap();
            }
            tokio::time::sleep(Duration::from_secs(2)).await; // keep the stream open
        });
        let (_s, mut recv) = t.server.accept_bi().await.unwrap();
        let r = read_header_within(&mut recv, within).await;
        writer.abort();
        r
    }

    #[tokio::test]
    async fn a_header_in_pieces_arrives_whole_with_the_payload_after_it() {
        let h = header();
        let mut second = h[5..].to_vec();
        second.extend_from_slice(b"GET /");
        let (got, rest) = receive(vec![h[..5].to_vec(), second], false, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(got.destination.to_string(), "198.19.2.10:80");
        assert_eq!(got.source.to_string(), "198.19.1.10:4000");
        assert_eq!(&rest[..], b"GET /");
    }

    #[tokio::test]
    async fn a_stream_that_stalls_before_its_header_is_whole_is_refused_in_time() {
        let started = std::time::Instant::now();
        let err = receive(
            vec![header()[..3].to_vec()],
            false,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert_eq!(err, "no complete stream header within 300 ms");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_fin_before_the_header_is_whole_and_a_bad_version_are_refused() {
        let err = receive(vec![header()[..9].to_vec()], true, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(err, "truncated stream header");
        let mut bad = header();
        bad[0] = 9;
        let err = receive(vec![bad], false, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.contains("unsupported stream header version 9"), "{err}");
    }
}
