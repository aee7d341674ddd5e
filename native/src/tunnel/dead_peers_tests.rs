//! Peers that never answer must not slow the tunnel to one that does. Every dial to a dead
//! peer creates a connection in the endpoint that also carries the live tunnel; that used to
//! allocate the state of tunnel.maxStreams (65,536 by default) streams under the endpoint's
//! lock, 10 ms each, and the dialers re-dial in waves (transport.rs). So stream credit is
//! only given where streams arrive, and to a peer that dialled us only once it is verified.
use crate::identity::tests::Ca;
use crate::test_plane::{apply, client, slow_server, snapshot_json, start, Host};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const DEAD: usize = 100;

/// The config's defaults for streams, short handshakes and back-off (dead peers re-dial
/// often), and `dead` more peers at loopback addresses where nothing listens.
fn tunnel_with_dead_peers(v: &mut Value, dead: usize) {
    v["tunnel"]["maxStreams"] = json!(65_536);
    v["tunnel"]["connectTimeoutMs"] = json!(500);
    v["tunnel"]["reconnectMinMs"] = json!(100);
    v["tunnel"]["reconnectMaxMs"] = json!(500);
    let Some(peers) = v["peers"].as_array_mut() else {
        panic!("no peers in the snapshot")
    };
    for k in 1..=dead {
        peers.push(
            json!({"name": format!("dead-{k}"), "endpoint": format!("127.0.2.{k}:4433"),
            "cidrs": [format!("10.200.{k}.0/24")]}),
        );
    }
}

/// One-byte round trips on one stream (echoed by the peer), back to back for `over`.
async fn round_trips(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    over: Duration,
) -> Vec<Duration> {
    let end = Instant::now() + over;
    let mut took = Vec::new();
    let mut byte = [0u8; 1];
    while Instant::now() < end {
        let started = Instant::now();
        send.write_all(&[1]).await.unwrap();
        recv.read_exact(&mut byte).await.unwrap();
        took.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    took
}

fn mean(d: &[Duration]) -> Duration {
    d.iter().sum::<Duration>() / d.len().max(1) as u32
}

fn max(d: &[Duration]) -> Duration {
    d.iter().max().copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peers_do_not_slow_the_tunnel_to_a_live_one() {
    let ca = Ca::new("qmesh test CA");
    let a = Host::new(&ca, "a", "127.0.0.31");
    let b = Host::new(&ca, "b", "127.0.0.32");
    // The live peer: a server on its own runtime; its side of each stream echoes.
    let mut live = slow_server(&ca, &b, "a", Duration::ZERO);
    let node = start(
        &a,
        &snapshot_json(&ca, &a, &[&b], |v| tunnel_with_dead_peers(v, 0)),
    );
    let tunnel = node
        .dialer("b")
        .unwrap()
        .ready(Duration::from_secs(5))
        .await
        .unwrap();
    let accepted = live.outcomes.recv().await.unwrap().unwrap();
    tokio::spawn(async move {
        let (mut send, mut recv) = accepted.accept_bi().await.unwrap();
        let mut byte = [0u8; 1];
        while recv.read_exact(&mut byte).await.is_ok() {
            if send.write_all(&byte).await.is_err() {
                break;
            }
        }
    });
    let (mut send, mut recv) = tunnel.0.conn.open_bi().await.unwrap();
    let baseline = round_trips(&mut send, &mut recv, Duration::from_millis(1500)).await;
    // A reload adds the dead peers: their dialers start together, as at start-up.
    apply(
        &node,
        &snapshot_json(&ca, &a, &[&b], |v| tunnel_with_dead_peers(v, DEAD)),
    );
    let loaded = round_trips(&mut send, &mut recv, Duration::from_secs(3)).await;
    let dials: u64 = (1..=DEAD)
        .filter_map(|k| node.dialer(&format!("dead-{k}")))
        .map(|d| d.view().reconnects)
        .sum();
    let (before, after) = (mean(&baseline), mean(&loaded));
    eprintln!(
        "without dead peers: {} round trips, mean {before:?}, max {:?}; with {DEAD} dead peers ({dials} failed dials): {} round trips, mean {after:?}, max {:?}",
        baseline.len(),
        max(&baseline),
        loaded.len(),
        max(&loaded),
    );
    assert!(dials >= 2 * DEAD as u64, "the dead peers were re-dialled");
    // Stalls of the live tunnel show in the mean (with the dialled connections' credit put back: 22 and 31 times).
    assert!(
        after < before * 10,
        "mean round trip {after:?} with {DEAD} dead peers, {before:?} without"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_we_dialled_gives_the_peer_no_stream_credit() {
    let ca = Ca::new("qmesh test CA");
    let a = Host::new(&ca, "a", "127.0.0.33");
    let b = Host::new(&ca, "b", "127.0.0.34");
    let mut live = slow_server(&ca, &b, "a", Duration::ZERO);
    let node = start(&a, &snapshot_json(&ca, &a, &[&b], |_| {}));
    node.dialer("b")
        .unwrap()
        .ready(Duration::from_secs(5))
        .await
        .unwrap();
    let accepted = live.outcomes.recv().await.unwrap().unwrap();
    // Nor does a reload of tunnel.maxStreams give any.
    apply(
        &node,
        &snapshot_json(&ca, &a, &[&b], |v| v["tunnel"]["maxStreams"] = json!(200)),
    );
    let opened = tokio::time::timeout(Duration::from_millis(300), accepted.open_bi()).await;
    assert!(opened.is_err(), "the peer could open a stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_peer_gets_its_full_stream_credit() {
    let ca = Ca::new("qmesh test CA");
    let a = Host::new(&ca, "a", "127.0.0.35");
    let b = Host::new(&ca, "b", "127.0.0.36");
    let max = 4 * super::transport::HANDSHAKE_STREAM_CREDIT;
    let _node = start(
        &b,
        &snapshot_json(&ca, &b, &[&a], |v| v["tunnel"]["maxStreams"] = json!(max)),
    );
    let c = client(&ca, &a, "b", Duration::ZERO);
    let conn = c.connect(b.addr(), "b").await.unwrap();
    let mut open = Vec::new();
    for _ in 0..max {
        let s = tokio::time::timeout(Duration::from_secs(2), conn.open_bi()).await;
        open.push(s.expect("credit for tunnel.maxStreams streams").unwrap());
    }
    let more = tokio::time::timeout(Duration::from_millis(300), conn.open_bi()).await;
    assert!(more.is_err(), "credit beyond tunnel.maxStreams");
}
