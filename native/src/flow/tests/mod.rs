//! Tests of the pipe, and the harness they share: each flow is a capture-side and a
//! delivery-side pipe joined by a real QUIC connection over loopback.
use super::*;
use crate::app_error;
use bytes::BytesMut;
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::timeout;

mod data;
mod load;
mod resets;

/// The stream header the capture side writes first in these tests.
const HEADER: &[u8] = b"QMH1";
const T: Duration = Duration::from_secs(5);

/// One QUIC connection over 127.0.0.1: `client` opens the flows' streams (capture side),
/// `server` accepts them (delivery side).
pub(crate) struct Tunnel {
    pub(crate) client: quinn::Connection,
    pub(crate) server: quinn::Connection,
    out: Arc<Traffic>,
    inb: Arc<Traffic>,
    _endpoints: (quinn::Endpoint, quinn::Endpoint),
}

pub(crate) async fn tunnel() -> Tunnel {
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(1024u32.into());
    let server_config = crate::test_tls::server_config(Arc::new(transport));
    let server_ep = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client_ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client_ep.set_default_client_config(crate::test_tls::client_config(Arc::default()));
    let to = server_ep.local_addr().unwrap();
    let (client, server) = tokio::join!(
        async { client_ep.connect(to, "localhost").unwrap().await.unwrap() },
        async { server_ep.accept().await.unwrap().await.unwrap() }
    );
    Tunnel {
        client,
        server,
        out: Arc::default(),
        inb: Arc::default(),
        _endpoints: (client_ep, server_ep),
    }
}

/// A TCP connection on 127.0.0.1: (the end that connected, the end that was accepted).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (c, a) = tokio::join!(TcpStream::connect(l.local_addr().unwrap()), l.accept());
    (c.unwrap(), a.unwrap().0)
}

/// One flow through the tunnel: `app` is the client application's socket (its peer is the
/// capture-side pipe), `dest` the destination's socket (its peer is the delivery-side pipe).
struct Flow {
    app: TcpStream,
    dest: TcpStream,
    cap: JoinHandle<FlowSummary>,
    del: JoinHandle<FlowSummary>,
    cap_ctl: Arc<FlowCtl>,
    del_ctl: Arc<FlowCtl>,
}

async fn flow(t: &Tunnel, cap_idle: Option<Duration>, del_idle: Option<Duration>) -> Flow {
    let (app, cap_tcp) = tcp_pair().await;
    let (send, recv) = t.client.open_bi().await.unwrap();
    let cap_ctl = FlowCtl::new();
    let cap = tokio::spawn(run_pipe(
        cap_tcp,
        send,
        recv,
        Bytes::from_static(HEADER),
        Bytes::new(),
        t.out.clone(),
        cap_idle,
        cap_ctl.clone(),
    ));
    let (send, mut recv) = timeout(T, t.server.accept_bi()).await.unwrap().unwrap();
    // Delivery: read the header; what came with it goes to the destination first.
    let mut got = BytesMut::new();
    while got.len() < HEADER.len() {
        let chunk = timeout(T, recv.read_chunk(usize::MAX, true))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.extend_from_slice(&chunk.bytes);
    }
    assert_eq!(&got[..HEADER.len()], HEADER);
    let leftover = got.split_off(HEADER.len()).freeze();
    let (del_tcp, dest) = tcp_pair().await;
    let del_ctl = FlowCtl::new();
    let del = tokio::spawn(run_pipe(
        del_tcp,
        send,
        recv,
        Bytes::new(),
        leftover,
        t.inb.clone(),
        del_idle,
        del_ctl.clone(),
    ));
    Flow {
        app,
        dest,
        cap,
        del,
        cap_ctl,
        del_ctl,
    }
}

async fn summary(h: JoinHandle<FlowSummary>) -> FlowSummary {
    timeout(T, h)
        .await
        .expect("pipe did not end")
        .expect("pipe panicked")
}

/// Reads until EOF or an error, returning what was read and how it ended.
async fn read_all(s: &mut TcpStream) -> (Vec<u8>, io::Result<()>) {
    let mut out = Vec::new();
    let r = timeout(T, s.read_to_end(&mut out))
        .await
        .expect("read did not end");
    (out, r.map(|_| ()))
}

async fn expect_reset(s: &mut TcpStream) {
    let (_, r) = read_all(s).await;
    let e = r.expect_err("expected a reset, got EOF");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}
