//! The server side of every tunnel. A connection attempt is judged before it gets any
//! state: it must come from a configured peer's address, the handshake caps (overall and
//! per source) must have room, and under load (or always, by config) the address is
//! validated with a stateless Retry first. The handshake's verifier requires exactly
//! the SPIFFE id of the peer at that address. Streams the peer opens go to deliver.rs.
use super::{credit, transport, FlowOnTunnel, Tunnel};
use crate::addr::Endpoint;
use crate::events::Level;
use crate::per_source::{PerSource, SourceSlot};
use crate::plane::Shared;
use crate::snapshot::{AddressValidation, Peer};
use crate::tunnel::dial::describe_failure;
use crate::tunnel::validity::{expiry, iso};
use crate::{app_error, deliver, fields, stats};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// 'under-load' answers with Retry once this many handshakes are in progress.
const RETRY_WHEN_HANDSHAKING: u64 = 2;

pub async fn accept_loop(shared: Arc<Shared>) {
    // Handshakes in progress per source address.
    let per_source = Arc::new(PerSource::default());
    loop {
        let incoming = tokio::select! {
            i = shared.endpoint.accept() => match i { Some(i) => i, None => break },
            _ = shared.stop.cancelled() => break,
        };
        let snap = shared.snapshot.load_full();
        let from = Endpoint::from(incoming.remote_address());
        let Some(peer) = snap.peer_at(from.ip()).cloned() else {
            stats::inc(&shared.quic.dropped_datagrams); // not a configured peer: no state, no answer
            incoming.ignore();
            continue;
        };
        if shared.draining.load(Relaxed) {
            incoming.refuse();
            continue;
        }
        let handshaking = shared.quic.handshaking.load(Relaxed);
        let from_source = per_source.open_from(from.ip());
        if handshaking >= u64::from(snap.tunnel.max_handshakes)
            || from_source >= snap.tunnel.max_handshakes_per_source
        {
            stats::inc(&shared.quic.refused_handshakes);
            incoming.ignore();
            continue;
        }
        let retry = match snap.address_validation {
            AddressValidation::Always => true,
            AddressValidation::UnderLoad => handshaking >= RETRY_WHEN_HANDSHAKING,
            AddressValidation::Never => false,
        };
        if retry && !incoming.remote_address_validated() && incoming.may_retry() {
            if incoming.retry().is_ok() {
                stats::inc(&shared.quic.retries_sent);
            }
            continue;
        }
        let creds = shared.creds.load_full();
        let (config, verdict) = match transport::server_config_for(&snap, &creds, &peer.name) {
            Ok(c) => c,
            Err(e) => {
                shared.emit(
                    Level::Error,
                    "quic-listener",
                    "cannot build the TLS config for a peer",
                    fields! {"peer" => peer.name, "err" => e},
                );
                incoming.refuse();
                continue;
            }
        };
        let connecting = match incoming.accept_with(Arc::new(config)) {
            Ok(c) => c,
            Err(e) => {
                stats::inc(&shared.quic.dropped_datagrams);
                shared.emit(
                    Level::Debug,
                    "quic-listener",
                    "Initial not accepted",
                    fields! {"peer" => peer.name, "reason" => e.to_string()},
                );
                continue;
            }
        };
        let slot = per_source.take(&shared, |s| &s.quic.handshaking, from.ip());
        let timeout = Duration::from_millis(snap.tunnel.connect_timeout_ms);
        tokio::spawn(handshake(
            shared.clone(),
            peer,
            from,
            connecting,
            verdict,
            slot,
            timeout,
        ));
    }
}

async fn handshake(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    from: Endpoint,
    connecting: quinn::Connecting,
    verdict: crate::identity::Verdict,
    slot: SourceSlot,
    timeout: Duration,
) {
    let refuse = |reason: String, code: Option<&'static str>| {
        stats::inc(&shared.quic.refused_handshakes);
        shared.emit(Level::Warn, "quic-listener", "peer handshake failed", fields! {"peer" => peer.name, "role" => "server", "from" => from.to_string(), "reason" => reason, "code" => code});
    };
    let conn = match tokio::time::timeout(timeout, connecting).await {
        Err(_) => {
            return refuse(
                format!("no handshake within {} ms", timeout.as_millis()),
                None,
            )
        }
        Ok(Err(e)) => {
            let (why, code) = describe_failure(&e, &verdict);
            // The source address said which peer this must be; its certificate said otherwise.
            let why = if code.is_some() {
                format!("{why} (datagrams came from {}'s endpoint)", peer.name)
            } else {
                why
            };
            return refuse(why, code);
        }
        Ok(Ok(c)) => c,
    };
    drop(slot);
    let id = match verdict.take() {
        Some(Ok(id)) => id,
        Some(Err(r)) => {
            conn.close(app_error::IDENTITY.into(), b"peer identity refused");
            return refuse(
                format!(
                    "{} (datagrams came from {}'s endpoint)",
                    r.reason, peer.name
                ),
                Some(r.code),
            );
        }
        None => {
            conn.close(app_error::IDENTITY.into(), b"no verified peer identity");
            return refuse("peer presented no client certificate".into(), None);
        }
    };
    // A peer removed by a reload while it was handshaking gets no tunnel.
    if shared
        .snapshot
        .load()
        .peer_named(&peer.name)
        .is_none_or(|p| p.endpoint.ip() != from.ip())
    {
        conn.close(app_error::SHUTDOWN.into(), b"peer removed from config");
        return refuse("peer removed from config during the handshake".into(), None);
    }
    let tunnel = Arc::new(Tunnel::new(conn, id));
    let link = shared.accepted_link(&peer.name);
    // The peer dials once at start and again only to renew: a new connection while one it
    // dialled before still looks alive means it restarted or renews.
    let redialled = link.live().iter().any(|t| t.conn.close_reason().is_none());
    link.add(tunnel.clone());
    // Verified: its stream credit grows with use from here (credit.rs). Set after `add`, so a
    // reload from here on also reaches this connection; the loop below counts the peer's flows
    // against tunnel.maxStreams in force regardless.
    credit::set_within_max(&shared, &tunnel, credit::VERIFIED_STREAM_CREDIT);
    let mut recent = credit::Recent::new(Instant::now());
    stats::inc(&shared.quic.connections);
    shared.emit(Level::Info, "quic-listener", "peer tunnel accepted", fields! {"peer" => peer.name, "role" => "server", "from" => from.to_string(), "peerNotAfter" => iso(tunnel.peer.not_after_unix)});
    if let Some(d) = shared.dialer(&peer.name) {
        d.peer_is_up(&tunnel.peer_leaf);
    }
    // If it restarted, our tunnels to it are stale: they are probed, not trusted (new flows
    // wait for the answer, one round trip).
    if redialled {
        super::liveness::verify_peer(&shared, &peer.name, "the peer dialled a new connection");
    }
    // Fail closed: the connection ends when a certificate it was authenticated with does, at
    // the same instant as the dialling side's (validity.rs: the end of the notAfter second, when
    // a new handshake would first be refused). Closing earlier, while the handshake still passes,
    // made the peer re-dial and be closed again in a loop through that last second.
    let (_, end_at) = expiry(&shared, &tunnel);
    let expiry = tokio::time::sleep_until(end_at.into());
    tokio::pin!(expiry);
    let mut limit_logged: Option<Instant> = None;
    let reason = loop {
        tokio::select! {
            s = tunnel.conn.accept_bi() => match s {
                Ok((send, recv)) => {
                    // Every stream the peer opens holds credit, refused ones too, until quinn frees it.
                    let recent = recent.opened(Instant::now(), tunnel.conn.rtt());
                    if shared.draining.load(Relaxed) {
                        refuse_stream(send, recv, app_error::SHUTDOWN);
                        continue;
                    }
                    let snap = shared.snapshot.load();
                    // A connection left to finish its flows after a reload removed (or moved) the peer takes no new one.
                    if snap.peer_named(&peer.name).is_none_or(|p| p.endpoint.ip() != from.ip()) {
                        stats::inc(&shared.inbound.denied);
                        refuse_stream(send, recv, app_error::DENIED);
                        continue;
                    }
                    // tunnel.maxStreams as it is now, over all of this peer's connections.
                    let max = snap.tunnel.max_streams;
                    let open = link.open_flows();
                    if open >= u64::from(max) {
                        stats::inc(&shared.inbound.limit_hits);
                        refuse_stream(send, recv, app_error::LIMIT);
                        if limit_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            limit_logged = Some(Instant::now());
                            shared.emit(Level::Warn, "inbound", "tunnel.maxStreams reached; the peer's new streams are reset", fields! {"peer" => peer.name, "open" => open, "maxStreams" => max, "limitHits" => shared.inbound.limit_hits.load(Relaxed)});
                        }
                        continue;
                    }
                    // Counted here, before the task runs, so a burst cannot pass the cap.
                    let on_tunnel = FlowOnTunnel::new(tunnel.clone());
                    tokio::spawn(deliver::deliver(shared.clone(), peer.clone(), on_tunnel, send, recv));
                    credit::grow(&shared, &tunnel, recent);
                }
                Err(e) => break super::describe_close(&e),
            },
            _ = &mut expiry => {
                shared.emit(Level::Warn, "quic-listener", "a certificate this tunnel was authenticated with expired; closing it", fields! {"peer" => peer.name});
                tunnel.conn.close(app_error::SHUTDOWN.into(), b"certificate expired");
            }
            _ = shared.stop.cancelled() => break "daemon stopping".to_string(),
        }
    };
    link.remove(&tunnel);
    stats::dec(&shared.quic.connections);
    shared.emit(
        Level::Info,
        "quic-listener",
        "peer tunnel closed",
        fields! {"peer" => peer.name, "reason" => reason},
    );
}

fn refuse_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream, code: u32) {
    let _ = send.reset(code.into());
    let _ = recv.stop(code.into());
}

/// Closes every connection a peer dialled to us (it was removed from the config): now, or
/// (`finish`) each once its last flow is done; deliver.rs refuses its new streams meanwhile.
pub fn drop_peer(
    shared: &Shared,
    name: &str,
    reason: &str,
    finish: bool,
    rt: &tokio::runtime::Handle,
) {
    for t in shared.accepted_link(name).live() {
        if finish {
            let reason = reason.to_string();
            rt.spawn(async move { super::close_when_idle(&t, reason.as_bytes()).await });
        } else {
            t.conn.close(app_error::SHUTDOWN.into(), reason.as_bytes());
        }
    }
}
