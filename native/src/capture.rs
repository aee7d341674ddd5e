//! Step 1, capture: every TCP connection iptables REDIRECTs to the capture port. Its
//! original destination is read from the kernel; route.rs says which peer owns it and
//! policy.rs whether this host lets it leave; then it becomes a stream on that peer's
//! tunnel. Anything that cannot be tunnelled is reset at once, never forwarded in plaintext.
use crate::addr::Endpoint;
use crate::events::Level;
use crate::flow::{self, FlowCtl};
use crate::header::StreamHeader;
use crate::per_source::{PerSource, SourceSlot};
use crate::plane::Shared;
use crate::policy::{Action, PolicyFlow};
use crate::registry::{Direction, FlowEntry};
use crate::route::Route;
use crate::{fields, sockopt, stats};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

/// Binds the capture port on every address, both families (`[::]`, not v6-only).
pub fn bind(port: u16) -> Result<std::net::TcpListener, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let fail = |e: std::io::Error| {
        format!(
            "cannot listen for captured TCP on port {port}: {e} (another qmesh or proxy running?)"
        )
    };
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    s.set_only_v6(false).map_err(fail)?;
    s.set_reuse_address(true).map_err(fail)?;
    s.set_nonblocking(true).map_err(fail)?;
    let addr: std::net::SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, port).into();
    s.bind(&addr.into()).map_err(fail)?;
    s.listen(4096).map_err(fail)?;
    Ok(s.into())
}

pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    // Open captured connections per source address (one function), for the per-source cap.
    let per_source = Arc::new(PerSource::default());
    let mut limit_logged: Option<Instant> = None;
    loop {
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    // EMFILE and friends: say so, back off a little, keep serving.
                    shared.emit(Level::Error, "capture", "capture accept failed", fields! {"err" => e.to_string()});
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shared.stop.cancelled() => break,
            _ = wait_draining(&shared) => break,
        };
        let source = Endpoint::from(remote);
        let snap = shared.snapshot.load();
        // A flood is refused at once and cheaply: a reset, a counter, one log line per second.
        let active = shared.capture.active.load(Relaxed);
        let from_source = per_source.open_from(source.ip());
        if active >= u64::from(snap.capture.max_connections)
            || from_source >= snap.capture.max_connections_per_source
        {
            let by_source = active < u64::from(snap.capture.max_connections);
            stats::inc(&shared.capture.limit_hits);
            if by_source {
                stats::inc(&shared.capture.source_limit_hits);
            }
            reset(tcp);
            if limit_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                limit_logged = Some(Instant::now());
                let (key, f) = if by_source {
                    (
                        "capture.maxConnectionsPerSource",
                        fields! {"active" => active, "limitHits" => shared.capture.limit_hits.load(Relaxed), "source" => source.ip().to_string(), "fromSource" => from_source},
                    )
                } else {
                    (
                        "capture.maxConnections",
                        fields! {"active" => active, "limitHits" => shared.capture.limit_hits.load(Relaxed)},
                    )
                };
                shared.emit(
                    Level::Warn,
                    "capture",
                    &format!("{key} reached; new connections are reset"),
                    f,
                );
            }
            continue;
        }
        let slot = per_source.take(&shared, |s| &s.capture.active, source.ip());
        tokio::spawn(captured(shared.clone(), tcp, source, slot));
    }
}

async fn wait_draining(shared: &Shared) {
    while !shared.draining.load(Relaxed) {
        tokio::time::sleep(crate::plane::DRAIN_POLL).await;
    }
}

/// RST, not FIN: the client must never take a refusal for a complete (empty) answer.
fn reset(tcp: TcpStream) {
    let _ = sockopt::set_abortive_close(&tcp, true);
    drop(tcp);
}

fn refuse(shared: &Shared, tcp: TcpStream, f: serde_json::Value, reason: &str) {
    stats::inc(&shared.capture.refused);
    let mut f = f;
    f["reason"] = reason.into();
    shared.emit(Level::Warn, "capture", "captured connection refused", f);
    reset(tcp);
}

async fn captured(shared: Arc<Shared>, tcp: TcpStream, source: Endpoint, _slot: SourceSlot) {
    // Abortive close from the start: if the daemon dies while this waits, the client sees a reset.
    let _ = sockopt::set_abortive_close(&tcp, true);
    let _ = tcp.set_nodelay(true);
    let destination = match sockopt::original_destination(&tcp) {
        Ok(d) => d,
        Err(e) => {
            return refuse(
                &shared,
                tcp,
                fields! {"src" => source.to_string()},
                &format!("no original destination ({e}): not a redirected connection"),
            )
        }
    };
    let f = fields! {"src" => source.to_string(), "dst" => destination.to_string()};
    let snap = shared.snapshot.load_full();
    // The original destination is the capture port itself: a connection made to it directly, a loop.
    if destination.port() == snap.capture_port
        && tcp
            .local_addr()
            .is_ok_and(|l| Endpoint::from(l).ip() == destination.ip())
    {
        return refuse(
            &shared,
            tcp,
            f,
            "connection to the capture port itself (redirect loop)",
        );
    }
    let peer = match snap.routes.lookup(destination.ip()) {
        Route::Peer(p) => p,
        Route::Local => return refuse(&shared, tcp, f, "destination is local (never tunnelled)"),
        Route::Nowhere => return refuse(&shared, tcp, f, "destination belongs to no peer"),
    };
    if source.ip().is_ipv4() != destination.ip().is_ipv4() {
        return refuse(&shared, tcp, f, "mixed address families");
    }
    // This host judges the flow as a receiver sharing its policy would, so a flow such a
    // receiver would deny never leaves (README "Policy").
    let flow = PolicyFlow {
        from_peer: &snap.node,
        source: source.ip(),
        destination: destination.ip(),
        port: destination.port(),
    };
    let decision = snap.policy.evaluate(&flow);
    if decision.action == Action::Deny {
        stats::inc(&shared.capture.denied_by_policy);
        shared.emit(Level::Warn, "capture", "captured connection refused", fields! {"src" => source.to_string(), "dst" => destination.to_string(), "peer" => peer.name, "reason" => "denied by policy", "rule" => decision.rule});
        return reset(tcp);
    }
    let Some(dialer) = shared.dialer(&peer.name) else {
        return refuse(
            &shared,
            tcp,
            f,
            &format!("no tunnel for peer {}", peer.name),
        );
    };
    // What every refusal from here on logs.
    let with_peer = fields! {"src" => source.to_string(), "dst" => destination.to_string(), "peer" => peer.name};
    let ctl = FlowCtl::new();
    let registered = shared.flows.register(FlowEntry {
        direction: Direction::Outbound,
        peer: peer.name.clone(),
        source,
        destination,
        ctl: ctl.clone(),
    });
    let connect_timeout = Duration::from_millis(snap.tunnel.connect_timeout_ms);
    let on_tunnel = match dialer.ready(connect_timeout).await {
        Ok(t) => t,
        Err(why) => return refuse(&shared, tcp, with_peer.clone(), &why),
    };
    let opened = tokio::time::timeout(connect_timeout, on_tunnel.0.conn.open_bi()).await;
    let (send, recv) = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return refuse(
                &shared,
                tcp,
                with_peer.clone(),
                &format!("cannot open a stream: {e}"),
            )
        }
        Err(_) => {
            return refuse(
                &shared,
                tcp,
                with_peer.clone(),
                &format!(
                    "peer {} allows no more concurrent streams (tunnel.maxStreams on the peer)",
                    peer.name
                ),
            )
        }
    };
    let header = match (StreamHeader {
        destination,
        source,
    })
    .encode()
    {
        Ok(h) => h,
        Err(e) => return refuse(&shared, tcp, f, &e),
    };
    stats::inc(&shared.capture.accepted);
    let traffic = dialer.link.traffic.clone();
    traffic.stream_opened();
    let idle = snap.flow_idle_timeout();
    let log_flows = snap.log_flows;
    drop(snap);
    let summary = flow::run_pipe(
        tcp,
        send,
        recv,
        header.into(),
        bytes::Bytes::new(),
        traffic.clone(),
        idle,
        ctl,
    )
    .await;
    traffic.stream_closed();
    drop(on_tunnel);
    report(&shared, &registered.entry, &summary, idle, log_flows);
}

/// A flow's end: counted when idle timed out, logged per flow only with debug logging.
pub fn report(
    shared: &Shared,
    e: &FlowEntry,
    s: &flow::FlowSummary,
    idle: Option<Duration>,
    log_flows: bool,
) {
    let (direction, peer, source, destination) =
        (e.direction, e.peer.as_str(), e.source, e.destination);
    let component = if direction == Direction::Outbound {
        "capture"
    } else {
        "inbound"
    };
    let f = fields! {
        "direction" => direction.as_str(), "peer" => peer, "src" => source.to_string(), "dst" => destination.to_string(),
        "bytesToPeer" => s.bytes_to_peer, "bytesFromPeer" => s.bytes_from_peer, "outcome" => s.outcome, "durationMs" => s.duration_ms,
    };
    if s.outcome == flow::IDLE_TIMEOUT_OUTCOME {
        let counter = if direction == Direction::Outbound {
            &shared.capture.idle_timeouts
        } else {
            &shared.inbound.idle_timeouts
        };
        stats::inc(counter);
        let mut f = f;
        f["idleTimeoutMs"] = idle.map_or(0, |d| d.as_millis() as u64).into();
        shared.emit(
            Level::Warn,
            component,
            "idle connection reset (capture.idleTimeoutMs)",
            f,
        );
    } else if log_flows {
        shared.emit(Level::Debug, component, "connection closed", f);
    }
}
