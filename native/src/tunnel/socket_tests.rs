//! Tests of the hinting socket over loopback, and a QUIC harness the probe's tests share:
//! endpoints on 127.0.0.1 and a "daemon" that can be SIGKILLed (its port closes, no
//! CONNECTION_CLOSE is sent).
use super::*;
use crate::test_tls::{client_config, server_config};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6, UdpSocket};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// Keep-alive every 100 ms, a 10 s idle timeout (longer than any test), and datagrams with
/// a receive buffer of `datagrams` bytes (None: disabled).
pub(crate) fn transport(datagrams: Option<usize>) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_millis(100)));
    t.max_idle_timeout(Some(Duration::from_secs(10).try_into().unwrap()));
    t.datagram_receive_buffer_size(datagrams);
    Arc::new(t)
}

/// An endpoint on 127.0.0.1 over a hinting socket (hints to `hints`, or dropped), or over
/// quinn's own socket if `hinting` is false.
fn endpoint(
    server: Option<quinn::ServerConfig>,
    hints: Option<UnboundedSender<SocketAddr>>,
    hinting: bool,
) -> quinn::Endpoint {
    let std_socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let socket = if hinting {
        let hints = hints.unwrap_or_else(|| unbounded_channel().0);
        hinting_socket(std_socket, hints).unwrap()
    } else {
        quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, std_socket).unwrap()
    };
    let config = quinn::EndpointConfig::default();
    quinn::Endpoint::new_with_abstract_socket(config, server, socket, Arc::new(quinn::TokioRuntime))
        .unwrap()
}

/// A server endpoint (hinting socket, hints dropped) in the current runtime.
pub(crate) fn server_endpoint(transport: Arc<quinn::TransportConfig>) -> quinn::Endpoint {
    endpoint(Some(server_config(transport)), None, true)
}

/// A client endpoint: over a hinting socket sending to `hints` if given, else quinn's own.
pub(crate) fn client_endpoint(
    transport: Arc<quinn::TransportConfig>,
    hints: Option<UnboundedSender<SocketAddr>>,
) -> quinn::Endpoint {
    let hinting = hints.is_some();
    let mut ep = endpoint(None, hints, hinting);
    ep.set_default_client_config(client_config(transport));
    ep
}

/// A peer daemon: a server endpoint driven by its own runtime on its own thread, holding
/// every connection it accepts, until `kill`ed like SIGKILL: its tasks stop without running
/// again (no CONNECTION_CLOSE) and its socket closes, so the host answers with ICMP.
pub(crate) struct Daemon {
    pub(crate) addr: SocketAddr,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    pub(crate) fn start(transport: Arc<quinn::TransportConfig>) -> Daemon {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (kill, mut killed) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let held = rt.block_on(async move {
                let ep = server_endpoint(transport);
                addr_tx.send(ep.local_addr().unwrap()).unwrap();
                let mut conns = Vec::new();
                loop {
                    tokio::select! {
                        _ = &mut killed => break,
                        Some(incoming) = ep.accept() => {
                            if let Ok(c) = incoming.await {
                                conns.push(c);
                            }
                        }
                    }
                }
                (ep, conns)
            });
            // Nothing runs on `rt` again: dropping the handles only wakes drivers that never
            // run, and dropping the runtime drops them, and with them the socket.
            drop(held);
            drop(rt);
        });
        let addr = addr_rx.recv().unwrap();
        Daemon {
            addr,
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    pub(crate) fn kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A UDP port nobody listens on (bound, then closed).
fn closed_port(ip: std::net::IpAddr) -> SocketAddr {
    UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// Sends `data` to `to` through the wrapper as quinn would (waiting for writability).
async fn send(socket: &Arc<dyn AsyncUdpSocket>, to: SocketAddr, data: &[u8]) {
    let mut poller = socket.clone().create_io_poller();
    let t = Transmit {
        destination: to,
        ecn: None,
        contents: data,
        segment_size: None,
        src_ip: None,
    };
    loop {
        std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
            .await
            .unwrap();
        match socket.try_send(&t) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r.unwrap(),
        }
    }
}

/// Datagrams received: (from, payload).
type Received = Vec<(SocketAddr, Vec<u8>)>;

/// Polls the wrapper's receive once.
fn recv_once(socket: &Arc<dyn AsyncUdpSocket>, cx: &mut Context) -> Poll<io::Result<Received>> {
    let mut buf = vec![0u8; 65536];
    let mut bufs = [IoSliceMut::new(&mut buf)];
    let mut meta = [RecvMeta::default()];
    socket.poll_recv(cx, &mut bufs, &mut meta).map_ok(|n| {
        meta[..n]
            .iter()
            .map(|m| (m.addr, bufs[0][..m.len].to_vec()))
            .collect()
    })
}

async fn recv(socket: &Arc<dyn AsyncUdpSocket>) -> Received {
    let r = std::future::poll_fn(|cx| recv_once(socket, cx));
    tokio::time::timeout(Duration::from_secs(2), r)
        .await
        .unwrap()
        .unwrap()
}

/// Waits until the pending ICMP error has surely arrived (loopback: microseconds).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn hint(hints: &mut UnboundedReceiver<SocketAddr>, within: Duration) -> SocketAddr {
    tokio::time::timeout(within, hints.recv())
        .await
        .expect("no hint in time")
        .unwrap()
}

#[tokio::test]
async fn the_kernel_returns_a_pending_icmp_error_from_the_next_send() {
    // What the send path must cope with: after an ICMP error about one datagram, the next
    // sendmsg to any destination fails with it and sends nothing, with IP_RECVERR only.
    let live = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let to_live = live.local_addr().unwrap();
    for recverr in [false, true] {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        if recverr {
            enable_recverr(&s).unwrap();
        }
        s.send_to(b"x", closed_port(Ipv4Addr::LOCALHOST.into()))
            .unwrap();
        settle().await;
        let second = s.send_to(b"y", to_live);
        if recverr {
            assert_eq!(second.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
            s.send_to(b"y", to_live).unwrap(); // once only
        } else {
            second.unwrap();
        }
    }
}

#[tokio::test]
async fn a_pending_icmp_error_costs_no_transmit_and_becomes_a_hint() {
    let (tx, mut hints) = unbounded_channel();
    let socket = hinting_socket(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(), tx).unwrap();
    let live = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    live.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let dead = closed_port(Ipv4Addr::LOCALHOST.into());

    send(&socket, dead, b"to nobody").await;
    settle().await;
    // The first sendmsg returns the pending ECONNREFUSED instead of sending: sent again.
    send(&socket, live.local_addr().unwrap(), b"hello").await;
    let mut buf = [0u8; 16];
    let (n, _) = live.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");

    // Receiving drains the queued error into a hint, and goes on receiving.
    let polled =
        std::future::poll_fn(|cx| Poll::Ready(recv_once(&socket, cx).map(|r| r.unwrap()))).await;
    assert!(polled.is_pending());
    assert_eq!(hints.try_recv(), Ok(dead));
    live.send_to(b"back", socket.local_addr().unwrap()).unwrap();
    assert_eq!(
        recv(&socket).await,
        vec![(live.local_addr().unwrap(), b"back".to_vec())]
    );
    assert!(hints.try_recv().is_err());
}

#[tokio::test]
async fn queued_errors_give_one_hint_per_destination_and_data_still_flows() {
    let (tx, mut hints) = unbounded_channel();
    let socket = hinting_socket(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(), tx).unwrap();
    let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let dead = closed_port(Ipv4Addr::LOCALHOST.into());
    // Several errors queued (and pending), and data behind them.
    for _ in 0..3 {
        send(&socket, dead, b"to nobody").await;
    }
    settle().await;
    peer.send_to(b"data", socket.local_addr().unwrap()).unwrap();
    assert_eq!(
        recv(&socket).await,
        vec![(peer.local_addr().unwrap(), b"data".to_vec())]
    );
    assert_eq!(hint(&mut hints, Duration::from_secs(1)).await, dead);
    // The three errors were about one destination; one drain sends it once.
    tokio::task::yield_now().await;
    assert!(hints.try_recv().is_err());
}

#[tokio::test]
async fn v6_and_v4_mapped_errors_are_hints_too() {
    // An IPv6-only socket on ::1, and a dual-stack one reaching 127.0.0.1 as ::ffff:127.0.0.1.
    let v6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None).unwrap();
    v6.set_only_v6(true).unwrap();
    v6.bind(&SocketAddr::from((Ipv6Addr::LOCALHOST, 0)).into())
        .unwrap();
    let dual = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None).unwrap();
    dual.set_only_v6(false).unwrap();
    dual.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())
        .unwrap();
    let mapped = |a: SocketAddr| match a {
        SocketAddr::V4(a) => {
            SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        v6 => v6,
    };
    let cases = [
        (v6, closed_port(Ipv6Addr::LOCALHOST.into())),
        (dual, mapped(closed_port(Ipv4Addr::LOCALHOST.into()))),
    ];
    for (s, dead) in cases {
        let (tx, mut hints) = unbounded_channel();
        let socket = hinting_socket(s.into(), tx).unwrap();
        send(&socket, dead, b"to nobody").await;
        settle().await;
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(recv_once(&socket, cx).map(|r| r.unwrap())))
                .await;
        assert!(polled.is_pending());
        assert_eq!(hints.try_recv(), Ok(dead));
    }
}

#[tokio::test]
async fn a_killed_peer_is_hinted_and_the_endpoint_keeps_working() {
    let (tx, mut hints) = unbounded_channel();
    let client = client_endpoint(transport(Some(64)), Some(tx));
    let mut peer = Daemon::start(transport(Some(64)));
    let conn = client
        .connect(peer.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    // Alive and exchanging keep-alives: no hints.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hints.try_recv().is_err());

    peer.kill();
    let killed = Instant::now();
    // The client keeps sending (keep-alives, a stream): the host refuses each datagram.
    let mut stream = conn.open_uni().await.unwrap();
    stream.write_all(b"anyone there?").await.unwrap();
    assert_eq!(hint(&mut hints, Duration::from_secs(1)).await, peer.addr);
    eprintln!("hint {:?} after the kill", killed.elapsed());
    // A hint ends nothing.
    assert!(conn.close_reason().is_none());

    // The endpoint driver met those errors and lives on: a new connection on it succeeds.
    let live = Daemon::start(transport(Some(64)));
    let connecting = client.connect(live.addr, "localhost").unwrap();
    let conn2 = tokio::time::timeout(Duration::from_secs(2), connecting)
        .await
        .unwrap()
        .unwrap();
    assert!(crate::tunnel::probe::peer_answers(&conn2, Duration::from_secs(2)).await);
    // Later hints name only the dead peer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(h) = hints.try_recv() {
        assert_eq!(h, peer.addr);
    }
}
