//! Limits that follow reload (issue #14 §6): caps read when enforced, a Retry counted once,
//! a peer removed mid-handshake refused, its open flows ending as reload.deniedConnections says.
use crate::app_error;
use crate::header::StreamHeader;
use crate::identity::tests::Ca;
use crate::test_plane::{
    apply, client, eventually, parse, slow_server, snapshot_json, start, Host,
};
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

const NO_DELAY: Duration = Duration::ZERO;

fn set(path: &[&str], value: Value) -> impl FnOnce(&mut Value) {
    let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    move |v| {
        let mut at = v;
        for k in &path {
            at = &mut at[k.as_str()];
        }
        *at = value;
    }
}

fn hosts() -> (Ca, Host, Host) {
    let ca = Ca::new("qmesh test CA");
    let a = Host::new(&ca, "a", "127.0.0.11");
    let b = Host::new(&ca, "b", "127.0.0.12");
    (ca, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_caps_lowered_by_reload_apply_to_the_next_handshake() {
    let (ca, a, b) = hosts();
    let node = start(&b, &snapshot_json(&ca, &b, &[&a], |_| {}));
    let c = client(&ca, &a, "b", NO_DELAY);
    let first = c.connect(b.addr(), "b").await.unwrap();
    first.close(0u32.into(), b"done");
    for cap in ["maxHandshakesPerSource", "maxHandshakes"] {
        apply(
            &node,
            &snapshot_json(&ca, &b, &[&a], set(&["tunnel", cap], json!(0))),
        );
        let refused_before = node.quic.refused_handshakes.load(Relaxed);
        let next = tokio::time::timeout(Duration::from_millis(800), c.connect(b.addr(), "b")).await;
        assert!(next.is_err(), "{cap} 0: the handshake must get no answer");
        assert!(node.quic.refused_handshakes.load(Relaxed) > refused_before);
    }
    apply(&node, &snapshot_json(&ca, &b, &[&a], |_| {}));
    c.connect(b.addr(), "b").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_counted_once_and_leaves_no_slot() {
    let (ca, a, b) = hosts();
    // One handshake per source: had the Retry kept a slot, the validated Initial would be ignored.
    let node = start(
        &b,
        &snapshot_json(&ca, &b, &[&a], |v| {
            v["tunnel"]["addressValidation"] = json!("always");
            v["tunnel"]["maxHandshakesPerSource"] = json!(1);
        }),
    );
    let c = client(&ca, &a, "b", Duration::from_millis(400));
    let to = b.addr();
    let connecting = tokio::spawn(async move {
        let r = c.connect(to, "b").await.map(|_| ());
        (r, c)
    });
    eventually(2000, "the validated handshake in flight", || {
        node.quic.handshaking.load(Relaxed) == 1
    })
    .await;
    assert_eq!(node.quic.retries_sent.load(Relaxed), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(node.quic.handshaking.load(Relaxed), 1, "counted once");
    let (r, _c) = connecting.await.unwrap();
    r.unwrap();
    eventually(2000, "the slot given back", || {
        node.quic.handshaking.load(Relaxed) == 0
    })
    .await;
    assert_eq!(node.quic.refused_handshakes.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_removed_while_it_handshakes_with_us_is_refused() {
    let (ca, a, b) = hosts();
    let node = start(&b, &snapshot_json(&ca, &b, &[&a], |_| {}));
    let c = client(&ca, &a, "b", Duration::from_millis(400));
    let to = b.addr();
    let connecting = tokio::spawn(async move {
        let r: Result<(), String> = match c.connect(to, "b").await {
            Ok(conn) => match tokio::time::timeout(Duration::from_secs(3), conn.closed()).await {
                Ok(e) => Err(e.to_string()),
                Err(_) => Ok(()), // still open: the removed peer got a tunnel
            },
            Err(e) => Err(e.to_string()),
        };
        (r, c)
    });
    eventually(2000, "the handshake in flight", || {
        node.quic.handshaking.load(Relaxed) == 1
    })
    .await;
    apply(&node, &snapshot_json(&ca, &b, &[], |_| {}));
    let (r, _c) = connecting.await.unwrap();
    let err = r.expect_err("the removed peer must get no tunnel");
    assert!(err.contains("peer removed from config"), "{err}");
    assert!(node.accepted_link("a").live().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_stream_cap_refuses_the_peers_next_flow() {
    let (ca, a, b) = hosts();
    let node = start(&b, &snapshot_json(&ca, &b, &[&a], |_| {}));
    let c = client(&ca, &a, "b", NO_DELAY);
    let conn = c.connect(b.addr(), "b").await.unwrap();
    // Streams that hold a partial header stay open (deliver waits for the rest).
    let mut held = Vec::new();
    for _ in 0..3 {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(&[1, 4]).await.unwrap();
        held.push((send, recv));
    }
    let link = node.accepted_link("a");
    eventually(2000, "3 flows open", || link.open_flows() == 3).await;
    apply(
        &node,
        &snapshot_json(&ca, &b, &[&a], set(&["tunnel", "maxStreams"], json!(2))),
    );
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[1, 4]).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(2), recv.read(&mut [0u8; 16])).await;
    match read {
        Ok(Err(quinn::ReadError::Reset(code))) => assert_eq!(code, app_error::LIMIT.into()),
        other => panic!("the 4th flow must be reset with LIMIT, got {other:?}"),
    }
    assert_eq!(node.inbound.limit_hits.load(Relaxed), 1);
    assert_eq!(link.open_flows(), 3, "the open flows are left alone");
    // Raised again: the next flow is taken.
    apply(
        &node,
        &snapshot_json(&ca, &b, &[&a], set(&["tunnel", "maxStreams"], json!(5))),
    );
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[1, 4]).await.unwrap();
    eventually(2000, "4 flows open", || link.open_flows() == 4).await;
    drop(held);
}

/// A flow from `a` through `node` to an echo server; returns the connection and the stream.
async fn echo_flow(
    node_addr: std::net::SocketAddr,
    c: &crate::test_plane::Client,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.12:0").await.unwrap();
    let dst = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let (mut r, mut w) = tcp.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let conn = c.connect(node_addr, "b").await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let header = StreamHeader {
        destination: crate::addr::Endpoint(dst),
        source: crate::addr::Endpoint("10.1.0.5:4000".parse().unwrap()),
    }
    .encode()
    .unwrap();
    send.write_all(&header).await.unwrap();
    echo(&mut send, &mut recv, b"hello").await.unwrap();
    (conn, send, recv)
}

async fn echo(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    msg: &[u8],
) -> Result<(), String> {
    send.write_all(msg).await.map_err(|e| e.to_string())?;
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(2), recv.read_exact(&mut got))
        .await
        .map_err(|_| "no echo".to_string())?
        .map_err(|e| e.to_string())?;
    assert_eq!(got, msg);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_peers_open_flow_finishes_with_denied_connections_finish() {
    let (ca, a, b) = hosts();
    let node = start(&b, &snapshot_json(&ca, &b, &[&a], |_| {}));
    let c = client(&ca, &a, "b", NO_DELAY);
    let (conn, mut send, mut recv) = echo_flow(b.addr(), &c).await;
    apply(
        &node,
        &snapshot_json(&ca, &b, &[], set(&["deniedConnections"], json!("finish"))),
    );
    // The open flow carries on; a new one is refused.
    echo(&mut send, &mut recv, b"still here").await.unwrap();
    let (mut s2, mut r2) = conn.open_bi().await.unwrap();
    s2.write_all(&[1, 0, 0]).await.unwrap();
    let _ = s2.finish();
    assert!(
        tokio::time::timeout(Duration::from_secs(2), r2.read(&mut [0u8; 4]))
            .await
            .unwrap()
            .is_err()
    );
    // Once it ends, the connection closes.
    send.finish().unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(Some(n)) = recv.read(&mut [0u8; 64]).await {
            rest.push(n);
        }
    })
    .await;
    let closed = tokio::time::timeout(Duration::from_secs(3), conn.closed()).await;
    let why = closed
        .expect("the connection closes after its last flow")
        .to_string();
    assert!(why.contains("peer removed from config"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_peers_open_flow_is_closed_with_denied_connections_close() {
    let (ca, a, b) = hosts();
    let node = start(&b, &snapshot_json(&ca, &b, &[&a], |_| {}));
    let c = client(&ca, &a, "b", NO_DELAY);
    let (conn, mut send, mut recv) = echo_flow(b.addr(), &c).await;
    apply(&node, &snapshot_json(&ca, &b, &[], |_| {}));
    assert!(echo(&mut send, &mut recv, b"gone").await.is_err());
    let why = tokio::time::timeout(Duration::from_secs(2), conn.closed())
        .await
        .unwrap()
        .to_string();
    assert!(why.contains("peer removed from config"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_whose_peer_a_reload_removed_meanwhile_is_refused_when_it_completes() {
    let (ca, a, b) = hosts();
    let mut server = slow_server(&ca, &b, "a", Duration::from_millis(400));
    let node = start(&a, &snapshot_json(&ca, &a, &[&b], |_| {}));
    eventually(2000, "the dial in flight", || {
        server.arrived.load(Relaxed) == 1
    })
    .await;
    // The snapshot changes under the dial before the dialers are synced (apply's order).
    node.snapshot
        .store(std::sync::Arc::new(parse(&snapshot_json(
            &ca,
            &a,
            &[],
            |_| {},
        ))));
    let conn = tokio::time::timeout(Duration::from_secs(3), server.outcomes.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let why = tokio::time::timeout(Duration::from_secs(2), conn.closed())
        .await
        .expect("our side closes the new connection")
        .to_string();
    assert!(why.contains("peer removed from config"), "{why}");
    let view = node.dialer("b").unwrap().view();
    assert_ne!(view.state, super::status::TunnelState::Up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_to_a_peer_removed_by_reload_is_abandoned() {
    let (ca, a, b) = hosts();
    let mut server = slow_server(&ca, &b, "a", Duration::from_millis(400));
    let node = start(&a, &snapshot_json(&ca, &a, &[&b], |_| {}));
    eventually(2000, "the dial in flight", || {
        server.arrived.load(Relaxed) == 1
    })
    .await;
    apply(&node, &snapshot_json(&ca, &a, &[], |_| {}));
    assert!(node.dialer("b").is_none());
    let outcome = tokio::time::timeout(Duration::from_secs(3), server.outcomes.recv())
        .await
        .unwrap()
        .unwrap();
    if let Ok(conn) = outcome {
        tokio::time::timeout(Duration::from_secs(2), conn.closed())
            .await
            .expect("an abandoned dial leaves no connection");
    }
    let events = node.events.take();
    assert!(!events.iter().any(|e| e.msg == "tunnel up"));
}
