//! Step 4, flow: one TCP connection joined to one QUIC stream, bytes copied both ways
//! with backpressure. Each direction ends on its own: a TCP EOF becomes the stream's FIN
//! and a stream FIN becomes a TCP half-close. A TCP reset becomes RESET_STREAM +
//! STOP_SENDING, and a stream reset (or STOP_SENDING) becomes a TCP reset (SO_LINGER 0).
//! The same code serves both directions (capture side and delivery side).
//!
//! One future per flow, no task of its own per direction: `run_pipe` polls both
//! directions' state machines from one `poll_fn`. Each step is a single poll of something
//! that either completes in that poll or leaves no trace (quinn's `write_chunks` and
//! `read_chunk`, tokio's readiness + `try_*`), so nothing is ever half-done when the
//! other direction's event wakes the task. A direction holds at most one read's worth of
//! data (one TCP read of up to 64 KiB, or one chunk quinn handed out) until the other end
//! has taken it; an idle flow holds no buffer at all: the TCP read buffer is allocated
//! only once the socket is readable, and stream data are quinn's own `Bytes`.
use crate::app_error;
use crate::sockopt::set_abortive_close;
use crate::stats::Traffic;
use bytes::{Buf, Bytes, BytesMut};
use quinn::{ReadError, RecvStream, SendStream, StoppedError, VarInt, WriteError};
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The outcome of a flow ended by the idle timeout (counted by capture/ and deliver/).
pub const IDLE_TIMEOUT_OUTCOME: &str = "idle timeout";
/// The outcome of a flow whose two directions both ended with a FIN.
pub const CLOSED_OUTCOME: &str = "closed";

/// The most one TCP read takes (and so the most the TCP->stream direction holds).
const READ_SIZE: usize = 64 * 1024;
/// Reads up to this size are copied into a buffer of their own size before they go to
/// quinn, which keeps them until they are acknowledged: a 100-byte request must not pin
/// a 64 KiB buffer for a round trip.
const COPY_LIMIT: usize = 4 * 1024;
/// Steps (a read or a write on either side) per wake-up before the task yields.
const STEPS_PER_POLL: usize = 64;

/// Controls one flow from outside (reload judging it by a new policy, drain, tunnel loss)
/// and shows its byte counts while it runs.
pub struct FlowCtl {
    bytes_to_peer: AtomicU64,
    bytes_from_peer: AtomicU64,
    state: Mutex<CtlState>,
}

#[derive(Default)]
struct CtlState {
    /// The first `abort` asked for, until the pipe takes it.
    abort: Option<(u32, String)>,
    /// The pipe's task, woken by `abort`.
    waker: Option<Waker>,
}

impl FlowCtl {
    pub fn new() -> Arc<FlowCtl> {
        Arc::new(FlowCtl {
            bytes_to_peer: AtomicU64::new(0),
            bytes_from_peer: AtomicU64::new(0),
            state: Mutex::new(CtlState::default()),
        })
    }

    /// Ends the flow at once: RESET_STREAM + STOP_SENDING with `code` on the stream, RST on
    /// the TCP socket; the summary's outcome becomes `why`. Called before `run_pipe` starts,
    /// the pipe ends as soon as it does; called after it ended, it does nothing.
    pub fn abort(&self, code: u32, why: &str) {
        let waker = {
            let mut s = self.lock();
            if s.abort.is_none() {
                s.abort = Some((code, why.to_string()));
            }
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// TCP payload carried towards the peer so far.
    pub fn bytes_to_peer(&self) -> u64 {
        self.bytes_to_peer.load(Relaxed)
    }

    /// Stream payload written to the TCP socket so far.
    pub fn bytes_from_peer(&self) -> u64 {
        self.bytes_from_peer.load(Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, CtlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn poll_abort(&self, cx: &mut Context<'_>) -> Poll<(u32, String)> {
        let mut s = self.lock();
        if let Some(a) = s.abort.take() {
            return Poll::Ready(a);
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// How a flow went: payload bytes each way, how it ended, how long it lasted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSummary {
    pub bytes_to_peer: u64,
    pub bytes_from_peer: u64,
    /// `CLOSED_OUTCOME`, `IDLE_TIMEOUT_OUTCOME`, the `why` of `FlowCtl::abort`, or a text
    /// naming the side that failed: "tcp reset", "tcp read failed: …", "tcp write failed: …"
    /// (this host's TCP end), "peer reset the stream: 0x1 (tcp reset)", "peer stopped the
    /// stream: …", "tunnel lost: …" (the other host or the QUIC connection).
    pub outcome: String,
    pub duration_ms: u64,
}

/// TCP -> stream.
enum Up {
    /// Waiting for the socket to be readable (no buffer held).
    Read,
    /// A read (or the stream header) that quinn has not taken all of yet.
    Write(Bytes),
    /// TCP EOF seen, the stream finished.
    Done,
}

/// Stream -> TCP.
enum Down {
    /// Waiting for quinn to have stream data.
    Read,
    /// A chunk from quinn that the socket has not taken all of yet.
    Write(Bytes),
    /// The stream's FIN seen, the socket's write side shut down.
    Done,
}

/// Why the copying stopped.
enum End {
    /// Both directions ended with a FIN.
    Closed,
    /// Reset the stream both ways with `code`, reset the TCP socket, report `why`.
    Reset(u32, String),
}

/// The stream halves, reset with app_error::SHUTDOWN if the pipe is dropped before it ends
/// (the runtime shutting down): quinn would otherwise finish an unfinished stream on drop,
/// and the other side would take a cut stream for a complete one.
struct Streams {
    send: SendStream,
    recv: RecvStream,
    armed: bool,
}

impl Streams {
    fn reset(&mut self, code: u32) {
        let code = VarInt::from_u32(code);
        // Either half may be gone already (finished and acknowledged, or reset by the peer).
        let _ = self.send.reset(code);
        let _ = self.recv.stop(code);
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        if self.armed {
            self.reset(app_error::SHUTDOWN);
        }
    }
}

/// `first` and whatever further stream data quinn already holds, up to READ_SIZE in all: a
/// chunk is one STREAM frame (about one packet), and one socket write per packet costs more
/// than copying them into one buffer. An error is returned at once (quinn reports a reset
/// only once; the next read would look like a FIN).
fn gather(recv: &mut RecvStream, first: Bytes, cx: &mut Context<'_>) -> Result<Bytes, ReadError> {
    let mut more: Option<BytesMut> = None;
    loop {
        let have = more.as_ref().map_or(first.len(), |m| m.len());
        if have >= READ_SIZE {
            break;
        }
        match pin!(recv.read_chunk(READ_SIZE - have, true)).poll(cx) {
            Poll::Ready(Ok(Some(chunk))) => {
                let buf = more.get_or_insert_with(|| {
                    let mut b = BytesMut::with_capacity(READ_SIZE);
                    b.extend_from_slice(&first);
                    b
                });
                buf.extend_from_slice(&chunk.bytes);
            }
            // The FIN (quinn answers None again on the next read) or nothing more for now.
            Poll::Ready(Ok(None)) | Poll::Pending => break,
            Poll::Ready(Err(e)) => return Err(e),
        }
    }
    Ok(more.map_or(first, BytesMut::freeze))
}

/// A name for an application error code, for outcomes and logs.
fn code_text(code: VarInt) -> String {
    let name = match u32::try_from(code.into_inner()) {
        Ok(app_error::TCP_RESET) => "tcp reset",
        Ok(app_error::CONNECT_FAILED) => "connect failed",
        Ok(app_error::DENIED) => "denied",
        Ok(app_error::BAD_HEADER) => "bad header",
        Ok(app_error::SHUTDOWN) => "shutdown",
        Ok(app_error::IDENTITY) => "identity",
        Ok(app_error::IDLE_TIMEOUT) => "idle timeout",
        _ => "unknown",
    };
    format!("{:#x} ({name})", code.into_inner())
}

fn peer_code(code: VarInt) -> u32 {
    u32::try_from(code.into_inner()).unwrap_or(app_error::TCP_RESET)
}

/// This host's TCP end failed: the stream is reset with TCP_RESET.
fn tcp_failed(op: &str, e: &io::Error) -> End {
    let why = match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted => "tcp reset".to_string(),
        _ => format!("tcp {op} failed: {e}"),
    };
    End::Reset(app_error::TCP_RESET, why)
}

fn write_failed(e: WriteError) -> End {
    match e {
        WriteError::Stopped(code) => End::Reset(
            peer_code(code),
            format!("peer stopped the stream: {}", code_text(code)),
        ),
        WriteError::ConnectionLost(e) => {
            End::Reset(app_error::TCP_RESET, format!("tunnel lost: {e}"))
        }
        e => End::Reset(app_error::TCP_RESET, format!("stream write failed: {e}")),
    }
}

fn read_failed(e: ReadError) -> End {
    match e {
        ReadError::Reset(code) => End::Reset(
            peer_code(code),
            format!("peer reset the stream: {}", code_text(code)),
        ),
        ReadError::ConnectionLost(e) => {
            End::Reset(app_error::TCP_RESET, format!("tunnel lost: {e}"))
        }
        e => End::Reset(app_error::TCP_RESET, format!("stream read failed: {e}")),
    }
}

/// Copies `tcp` <-> (`send`, `recv`) until both directions are done or the flow is aborted.
///
/// `to_stream_first`: bytes written to the stream before anything read from TCP (the stream
/// header on the capture side; empty on the delivery side). `to_tcp_first`: bytes written to
/// TCP first (on the delivery side, payload that arrived in the same read as the header).
/// `traffic`: the per-peer counters to add payload bytes to (`bytes_sent` TCP->stream,
/// `bytes_received` stream->TCP; header bytes are not counted; the stream counts are the
/// caller's). `idle`: Some(d) resets both ends with app_error::IDLE_TIMEOUT after d without
/// a byte moving either way. `ctl`: aborts the flow from outside and shows its byte counts.
///
/// The socket carries SO_LINGER 0 from the start while its direction towards the
/// application is open, so a daemon that dies (or a pipe dropped unfinished) resets it; it
/// is cleared just before the stream's FIN shuts that direction down, so a normal close
/// flushes and FINs.
#[allow(clippy::too_many_arguments)]
pub async fn run_pipe(
    tcp: TcpStream,
    send: SendStream,
    recv: RecvStream,
    to_stream_first: Bytes,
    to_tcp_first: Bytes,
    traffic: Arc<Traffic>,
    idle: Option<Duration>,
    ctl: Arc<FlowCtl>,
) -> FlowSummary {
    let started = std::time::Instant::now();
    let _ = set_abortive_close(&tcp, true);
    let mut streams = Streams {
        send,
        recv,
        armed: true,
    };
    let end = copy(
        &tcp,
        &mut streams,
        to_stream_first,
        to_tcp_first,
        &traffic,
        idle,
        &ctl,
    )
    .await;
    let outcome = match end {
        End::Closed => {
            // Both FINs are out: nothing to reset. The socket's linger is already cleared.
            streams.armed = false;
            CLOSED_OUTCOME.to_string()
        }
        End::Reset(code, why) => {
            streams.armed = false;
            streams.reset(code);
            let _ = set_abortive_close(&tcp, true);
            why
        }
    };
    drop(tcp);
    drop(streams);
    ctl.lock().waker = None; // the task's memory is not kept alive by a registry entry
    FlowSummary {
        bytes_to_peer: ctl.bytes_to_peer(),
        bytes_from_peer: ctl.bytes_from_peer(),
        outcome,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

async fn copy(
    tcp: &TcpStream,
    streams: &mut Streams,
    to_stream_first: Bytes,
    to_tcp_first: Bytes,
    traffic: &Traffic,
    idle: Option<Duration>,
    ctl: &FlowCtl,
) -> End {
    let Streams { send, recv, .. } = streams;
    let mut header_left = to_stream_first.len();
    let mut up = if to_stream_first.is_empty() {
        Up::Read
    } else {
        Up::Write(to_stream_first)
    };
    let mut down = if to_tcp_first.is_empty() {
        Down::Read
    } else {
        Down::Write(to_tcp_first)
    };
    let mut last_io = Instant::now();

    // Watchers, polled only when no data step can make progress: the peer's STOP_SENDING
    // while nothing is being written to the stream, a TCP reset while the socket is not being
    // read, the idle timer. Each is created once; a completed one is replaced in place.
    let mut stopped = pin!(send.stopped());
    let mut stopped_live = true;
    let mut tcp_error = pin!(tcp.ready(Interest::ERROR));
    let mut idle_timer = pin!(idle.map(tokio::time::sleep));

    poll_fn(|cx| {
        if let Poll::Ready((code, why)) = ctl.poll_abort(cx) {
            return Poll::Ready(End::Reset(code, why));
        }
        let mut steps = 0;
        loop {
            let mut progress = false;

            match &mut up {
                Up::Read => match tcp.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        // Readable: only now is a buffer allocated.
                        let mut buf = BytesMut::with_capacity(READ_SIZE);
                        match tcp.try_read_buf(&mut buf) {
                            Ok(0) => {
                                // TCP EOF: the stream's FIN and nothing else. (An error means
                                // the stream is already reset or stopped; a watcher reports it.)
                                let _ = send.finish();
                                up = Up::Done;
                            }
                            Ok(n) => {
                                last_io = Instant::now();
                                let data = if n <= COPY_LIMIT {
                                    Bytes::copy_from_slice(&buf)
                                } else {
                                    buf.freeze()
                                };
                                up = Up::Write(data);
                            }
                            // Readiness was stale; tokio cleared it, the next poll re-arms.
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return Poll::Ready(tcp_failed("read", &e)),
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(tcp_failed("read", &e)),
                    Poll::Pending => {}
                },
                Up::Write(data) => {
                    // One poll of write_chunks: it either takes bytes now or takes nothing.
                    let r = pin!(send.write_chunks(std::slice::from_mut(data))).poll(cx);
                    match r {
                        Poll::Ready(Ok(w)) => {
                            let header = header_left.min(w.bytes);
                            header_left -= header;
                            let payload = (w.bytes - header) as u64;
                            traffic.bytes_sent.fetch_add(payload, Relaxed);
                            ctl.bytes_to_peer.fetch_add(payload, Relaxed);
                            last_io = Instant::now();
                            if data.is_empty() {
                                up = Up::Read;
                            }
                            progress = true;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(write_failed(e)),
                        Poll::Pending => {}
                    }
                }
                Up::Done => {}
            }

            match &mut down {
                Down::Read => {
                    let r = pin!(recv.read_chunk(usize::MAX, true)).poll(cx);
                    match r {
                        Poll::Ready(Ok(Some(chunk))) => {
                            last_io = Instant::now();
                            match gather(recv, chunk.bytes, cx) {
                                Ok(data) if data.is_empty() => {}
                                Ok(data) => down = Down::Write(data),
                                Err(e) => return Poll::Ready(read_failed(e)),
                            }
                            progress = true;
                        }
                        Poll::Ready(Ok(None)) => {
                            // The stream's FIN: an orderly close from here on, then a TCP FIN.
                            let _ = set_abortive_close(tcp, false);
                            if let Err(e) =
                                socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write)
                            {
                                return Poll::Ready(tcp_failed("shutdown", &e));
                            }
                            down = Down::Done;
                            progress = true;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(read_failed(e)),
                        Poll::Pending => {}
                    }
                }
                Down::Write(data) => match tcp.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        match tcp.try_write(data) {
                            Ok(n) => {
                                data.advance(n);
                                traffic.bytes_received.fetch_add(n as u64, Relaxed);
                                ctl.bytes_from_peer.fetch_add(n as u64, Relaxed);
                                last_io = Instant::now();
                                if data.is_empty() {
                                    down = Down::Read;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return Poll::Ready(tcp_failed("write", &e)),
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(tcp_failed("write", &e)),
                    Poll::Pending => {}
                },
                Down::Done => {}
            }

            if matches!((&up, &down), (Up::Done, Down::Done)) {
                return Poll::Ready(End::Closed);
            }
            if !progress {
                break;
            }
            steps += 1;
            if steps >= STEPS_PER_POLL {
                // Let other flows run; come back at once.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }

        // Nothing more moves now; every data step above has registered for its wake-up.
        // STOP_SENDING is otherwise seen only by the next write: watch for it while ours is open.
        if stopped_live && !matches!(up, Up::Done) {
            if let Poll::Ready(r) = stopped.as_mut().poll(cx) {
                stopped_live = false;
                match r {
                    Ok(Some(code)) => return Poll::Ready(write_failed(WriteError::Stopped(code))),
                    Ok(None) => {}
                    Err(StoppedError::ConnectionLost(e)) => {
                        return Poll::Ready(write_failed(WriteError::ConnectionLost(e)))
                    }
                    Err(e) => {
                        return Poll::Ready(End::Reset(
                            app_error::TCP_RESET,
                            format!("stream failed: {e}"),
                        ))
                    }
                }
            }
        }
        // A TCP reset is otherwise seen only by the next read or write: watch for it while
        // the socket is not being read.
        if !matches!(up, Up::Read) {
            for _ in 0..2 {
                match tcp_error.as_mut().poll(cx) {
                    Poll::Pending => break,
                    Poll::Ready(r) => {
                        match r.and_then(|_| tcp.take_error()) {
                            Ok(Some(e)) | Err(e) => return Poll::Ready(tcp_failed("socket", &e)),
                            // No error after all (already taken by a read): clear and re-arm.
                            Ok(None) => {
                                let _ = tcp.try_io(Interest::ERROR, || {
                                    Err::<(), _>(io::ErrorKind::WouldBlock.into())
                                });
                                tcp_error.set(tcp.ready(Interest::ERROR));
                            }
                        }
                    }
                }
            }
        }
        if let (Some(limit), Some(mut timer)) = (idle, idle_timer.as_mut().as_pin_mut()) {
            // The timer is moved on lazily: only when it fires is it checked against the
            // last byte, so a busy flow never touches it.
            while timer.as_mut().poll(cx).is_ready() {
                match last_io.checked_add(limit) {
                    Some(deadline) if deadline > Instant::now() => timer.as_mut().reset(deadline),
                    Some(_) => {
                        return Poll::Ready(End::Reset(
                            app_error::IDLE_TIMEOUT,
                            IDLE_TIMEOUT_OUTCOME.to_string(),
                        ))
                    }
                    None => break,
                }
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    /// The stream header the capture side writes first in these tests.
    const HEADER: &[u8] = b"QMH1";
    const T: Duration = Duration::from_secs(5);

    /// Accepts the test certificate without looking at it (signatures are still checked).
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _end_entity: &rustls_pki_types::CertificateDer<'_>,
            _intermediates: &[rustls_pki_types::CertificateDer<'_>],
            _server_name: &rustls_pki_types::ServerName<'_>,
            _ocsp_response: &[u8],
            _now: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// One QUIC connection over 127.0.0.1: `client` opens the flows' streams (capture side),
    /// `server` accepts them (delivery side).
    struct Tunnel {
        client: quinn::Connection,
        server: quinn::Connection,
        out: Arc<Traffic>,
        inb: Arc<Traffic>,
        _endpoints: (quinn::Endpoint, quinn::Endpoint),
    }

    async fn tunnel() -> Tunnel {
        // Deprecated since rustls 0.23.48 (no post-quantum key exchange); the crate uses ring.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = rustls_pki_types::PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key.into())
            .unwrap();
        server_tls.alpn_protocols = vec![b"qmesh-test".to_vec()];
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).unwrap(),
        ));
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_bidi_streams(1024u32.into());
        server_config.transport_config(Arc::new(transport));
        let server_ep =
            quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();

        let mut client_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth();
        client_tls.alpn_protocols = vec![b"qmesh-test".to_vec()];
        let mut client_ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client_ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(client_tls).unwrap(),
        )));
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

    /// 1) Exact bytes both ways at once, 8 MiB each, plus the counters (header not counted).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copies_8_mib_each_way_exactly() {
        const N: usize = 8 << 20;
        let t = tunnel().await;
        let Flow {
            app,
            dest,
            cap,
            del,
            cap_ctl,
            del_ctl,
        } = flow(&t, None, None).await;
        let up = pattern(N, 1);
        let down = pattern(N, 2);
        let (up_sum, down_sum) = (sha256(&up), sha256(&down));
        let started = std::time::Instant::now();
        let client = tokio::spawn(async move {
            let (mut r, mut w) = app.into_split();
            let writer = async move {
                w.write_all(&up).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let reader = async { r.read_to_end(&mut got).await.unwrap() };
            tokio::join!(writer, reader);
            got
        });
        let server = tokio::spawn(async move {
            let (mut r, mut w) = dest.into_split();
            let writer = async move {
                w.write_all(&down).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let reader = async { r.read_to_end(&mut got).await.unwrap() };
            tokio::join!(writer, reader);
            got
        });
        let got_down = timeout(Duration::from_secs(30), client)
            .await
            .unwrap()
            .unwrap();
        let got_up = timeout(Duration::from_secs(30), server)
            .await
            .unwrap()
            .unwrap();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "copied 2 x 8 MiB in {:.0} ms: {:.0} MiB/s each way",
            secs * 1e3,
            8.0 / secs
        );
        assert_eq!(got_up.len(), N);
        assert_eq!(got_down.len(), N);
        assert_eq!(sha256(&got_up), up_sum);
        assert_eq!(sha256(&got_down), down_sum);
        let (c, d) = (summary(cap).await, summary(del).await);
        assert_eq!(c.outcome, CLOSED_OUTCOME);
        assert_eq!(d.outcome, CLOSED_OUTCOME);
        assert_eq!((c.bytes_to_peer, c.bytes_from_peer), (N as u64, N as u64));
        assert_eq!((d.bytes_to_peer, d.bytes_from_peer), (N as u64, N as u64));
        assert_eq!(
            (cap_ctl.bytes_to_peer(), del_ctl.bytes_from_peer()),
            (N as u64, N as u64)
        );
        assert_eq!(t.out.bytes_sent.load(Relaxed), N as u64);
        assert_eq!(t.out.bytes_received.load(Relaxed), N as u64);
        assert_eq!(t.inb.bytes_sent.load(Relaxed), N as u64);
        assert_eq!(t.inb.bytes_received.load(Relaxed), N as u64);
    }

    /// Throughput on loopback, one direction, compared with the bare QUIC stream:
    /// `cargo test --release --lib flow::tests::throughput -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a check; run it in release"]
    async fn throughput() {
        const N: usize = 256 << 20;
        let t = tunnel().await;
        let chunk = Bytes::from(pattern(64 * 1024, 3));
        // The bare stream: quinn's own copy, no TCP.
        let (mut send, _r) = t.client.open_bi().await.unwrap();
        let started = std::time::Instant::now();
        let writer = tokio::spawn({
            let chunk = chunk.clone();
            async move {
                for _ in 0..N / chunk.len() {
                    send.write_chunk(chunk.clone()).await.unwrap();
                }
                send.finish().unwrap();
                send
            }
        });
        let (_s, mut recv) = t.server.accept_bi().await.unwrap();
        let mut n = 0;
        while let Some(c) = recv.read_chunk(usize::MAX, true).await.unwrap() {
            n += c.bytes.len();
        }
        let _send = writer.await.unwrap();
        assert_eq!(n, N);
        let bare = started.elapsed().as_secs_f64();
        // The same through two pipes and four TCP sockets.
        let Flow {
            mut app,
            mut dest,
            cap,
            del,
            ..
        } = flow(&t, None, None).await;
        let started = std::time::Instant::now();
        let writer = tokio::spawn(async move {
            for _ in 0..N / chunk.len() {
                app.write_all(&chunk).await.unwrap();
            }
            app.shutdown().await.unwrap();
            app
        });
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0;
        loop {
            let r = dest.read(&mut buf).await.unwrap();
            if r == 0 {
                break;
            }
            n += r;
        }
        let piped = started.elapsed().as_secs_f64();
        assert_eq!(n, N);
        drop(dest);
        drop(writer.await.unwrap());
        let _ = (summary(cap).await, summary(del).await);
        let mib = (N >> 20) as f64;
        println!(
            "bare stream: {:.0} MiB/s; TCP -> pipe -> QUIC -> pipe -> TCP: {:.0} MiB/s",
            mib / bare,
            mib / piped
        );
    }

    /// 2a) The client half-closes first and still gets the whole reply after it, then EOF.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_half_close_keeps_the_reply_flowing() {
        let t = tunnel().await;
        let Flow {
            mut app,
            mut dest,
            cap,
            del,
            ..
        } = flow(&t, None, None).await;
        app.write_all(b"request").await.unwrap();
        app.shutdown().await.unwrap();
        let (got, r) = read_all(&mut dest).await;
        r.unwrap();
        assert_eq!(got, b"request");
        // The destination answers after the client's FIN, in two writes some time apart.
        dest.write_all(b"reply ").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        dest.write_all(b"after FIN").await.unwrap();
        dest.shutdown().await.unwrap();
        let (got, r) = read_all(&mut app).await;
        r.unwrap();
        assert_eq!(got, b"reply after FIN");
        assert_eq!(summary(cap).await.outcome, CLOSED_OUTCOME);
        assert_eq!(summary(del).await.outcome, CLOSED_OUTCOME);
    }

    /// 2b) The mirror: the destination half-closes first, the client still sends afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn destination_half_close_keeps_the_request_flowing() {
        let t = tunnel().await;
        let Flow {
            mut app,
            mut dest,
            cap,
            del,
            ..
        } = flow(&t, None, None).await;
        dest.write_all(b"banner").await.unwrap();
        dest.shutdown().await.unwrap();
        let (got, r) = read_all(&mut app).await;
        r.unwrap();
        assert_eq!(got, b"banner");
        app.write_all(b"late ").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        app.write_all(b"data").await.unwrap();
        app.shutdown().await.unwrap();
        let (got, r) = read_all(&mut dest).await;
        r.unwrap();
        assert_eq!(got, b"late data");
        let (c, d) = (summary(cap).await, summary(del).await);
        assert_eq!(
            (c.outcome.as_str(), c.bytes_to_peer, c.bytes_from_peer),
            (CLOSED_OUTCOME, 9, 6)
        );
        assert_eq!(
            (d.outcome.as_str(), d.bytes_to_peer, d.bytes_from_peer),
            (CLOSED_OUTCOME, 6, 9)
        );
    }

    /// `to_tcp_first` (payload that came with the header) reaches the destination before the
    /// rest of the stream and counts as payload; a FIN each way closes the flow.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn first_bytes_go_first() {
        let t = tunnel().await;
        let (mut send, mut recv) = t.client.open_bi().await.unwrap();
        send.write_all(b"stream data").await.unwrap();
        send.finish().unwrap();
        let (s, r) = timeout(T, t.server.accept_bi()).await.unwrap().unwrap();
        let (tcp, mut dest) = tcp_pair().await;
        let traffic = Arc::new(Traffic::default());
        let del = tokio::spawn(run_pipe(
            tcp,
            s,
            r,
            Bytes::new(),
            Bytes::from_static(b"leftover, "),
            traffic.clone(),
            None,
            FlowCtl::new(),
        ));
        dest.write_all(b"answer").await.unwrap();
        dest.shutdown().await.unwrap();
        let (got, r) = read_all(&mut dest).await;
        r.unwrap();
        assert_eq!(got, b"leftover, stream data");
        let answer = timeout(T, recv.read_to_end(100)).await.unwrap().unwrap();
        assert_eq!(answer, b"answer");
        let d = summary(del).await;
        assert_eq!(
            (d.outcome.as_str(), d.bytes_to_peer, d.bytes_from_peer),
            (CLOSED_OUTCOME, 6, 21)
        );
        assert_eq!(
            (
                traffic.bytes_sent.load(Relaxed),
                traffic.bytes_received.load(Relaxed)
            ),
            (6, 21)
        );
    }

    fn rst(s: TcpStream) {
        crate::sockopt::set_abortive_close(&s, true).unwrap();
        drop(s);
    }

    /// 3a) A client reset reaches the destination as a reset (after the data before it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_reset_resets_the_destination() {
        let t = tunnel().await;
        let Flow {
            mut app,
            mut dest,
            cap,
            del,
            ..
        } = flow(&t, None, None).await;
        app.write_all(b"partial").await.unwrap();
        let mut b = [0u8; 7];
        timeout(T, dest.read_exact(&mut b)).await.unwrap().unwrap();
        rst(app);
        expect_reset(&mut dest).await;
        assert_eq!(summary(cap).await.outcome, "tcp reset");
        assert_eq!(
            summary(del).await.outcome,
            "peer reset the stream: 0x1 (tcp reset)"
        );
    }

    /// 3b) The mirror, with the client only waiting (not reading nor writing) when it happens,
    /// and a reset on a half-closed connection: the client has sent its FIN already.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn destination_reset_resets_the_client() {
        let t = tunnel().await;
        let Flow {
            mut app,
            mut dest,
            cap,
            del,
            ..
        } = flow(&t, None, None).await;
        app.write_all(b"req").await.unwrap();
        app.shutdown().await.unwrap();
        let (got, r) = read_all(&mut dest).await;
        r.unwrap();
        assert_eq!(got, b"req");
        dest.write_all(b"partial answer").await.unwrap();
        let mut b = [0u8; 14];
        timeout(T, app.read_exact(&mut b)).await.unwrap().unwrap();
        rst(dest);
        expect_reset(&mut app).await;
        assert_eq!(summary(del).await.outcome, "tcp reset");
        assert_eq!(
            summary(cap).await.outcome,
            "peer reset the stream: 0x1 (tcp reset)"
        );
    }

    /// 3c) A client reset after its FIN, while the pipe does not read the socket any more,
    /// is still noticed (SO_ERROR watch) and reaches the destination.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_reset_after_its_fin_resets_the_destination() {
        let t = tunnel().await;
        let Flow {
            mut app,
            mut dest,
            cap,
            del,
            ..
        } = flow(&t, None, None).await;
        app.write_all(b"req").await.unwrap();
        app.shutdown().await.unwrap();
        let (got, r) = read_all(&mut dest).await;
        r.unwrap();
        assert_eq!(got, b"req");
        rst(app);
        assert_eq!(summary(cap).await.outcome, "tcp reset");
        // The delivery side had read its stream to the end: it learns from STOP_SENDING.
        assert_eq!(
            summary(del).await.outcome,
            "peer stopped the stream: 0x1 (tcp reset)"
        );
        // The destination had the FIN already (CLOSE_WAIT), so its reads keep saying EOF; its
        // next write finds the reset (Linux reports a reset in CLOSE_WAIT as EPIPE).
        let e = timeout(T, dest.write_all(b"answer"))
            .await
            .unwrap()
            .expect_err("the destination's connection should be reset");
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{e}"
        );
    }

    /// 4) abort() resets both TCP ends; the summary carries its reason; an abort asked for
    /// before the pipe runs ends it as soon as it starts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abort_resets_both_ends() {
        let t = tunnel().await;
        let Flow {
            mut app,
            mut dest,
            cap,
            del,
            cap_ctl,
            ..
        } = flow(&t, None, None).await;
        app.write_all(b"hello").await.unwrap();
        let mut b = [0u8; 5];
        timeout(T, dest.read_exact(&mut b)).await.unwrap().unwrap();
        cap_ctl.abort(app_error::SHUTDOWN, "draining");
        expect_reset(&mut app).await;
        expect_reset(&mut dest).await;
        let c = summary(cap).await;
        assert_eq!((c.outcome.as_str(), c.bytes_to_peer), ("draining", 5));
        assert_eq!(
            summary(del).await.outcome,
            "peer reset the stream: 0x5 (shutdown)"
        );

        // From the delivery side this time, and before anything moved.
        let Flow {
            mut app,
            mut dest,
            cap,
            del,
            del_ctl,
            ..
        } = flow(&t, None, None).await;
        del_ctl.abort(app_error::DENIED, "denied by policy (r1)");
        expect_reset(&mut app).await;
        expect_reset(&mut dest).await;
        assert_eq!(summary(del).await.outcome, "denied by policy (r1)");
        assert_eq!(
            summary(cap).await.outcome,
            "peer reset the stream: 0x3 (denied)"
        );

        // Aborted before run_pipe was called.
        let (mut app, tcp) = tcp_pair().await;
        let (send, recv) = t.client.open_bi().await.unwrap();
        let ctl = FlowCtl::new();
        ctl.abort(app_error::SHUTDOWN, "early");
        let s = timeout(
            T,
            run_pipe(
                tcp,
                send,
                recv,
                Bytes::from_static(HEADER),
                Bytes::new(),
                t.out.clone(),
                None,
                ctl,
            ),
        )
        .await
        .unwrap();
        assert_eq!(s.outcome, "early");
        expect_reset(&mut app).await;
    }

    /// The daemon dying mid-flow (here: the pipe's future dropped) resets the application's
    /// connection instead of FINning it, and the stream is reset, not finished.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_pipe_resets_not_fins() {
        let t = tunnel().await;
        let Flow {
            mut app,
            mut dest,
            cap,
            del,
            ..
        } = flow(&t, None, None).await;
        app.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        timeout(T, dest.read_exact(&mut b)).await.unwrap().unwrap();
        cap.abort();
        expect_reset(&mut app).await;
        expect_reset(&mut dest).await;
        assert_eq!(
            summary(del).await.outcome,
            "peer reset the stream: 0x5 (shutdown)"
        );
    }

    /// Losing the QUIC connection resets both applications' connections.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tunnel_loss_resets_both_ends() {
        let t = tunnel().await;
        let Flow {
            mut app,
            mut dest,
            cap,
            del,
            ..
        } = flow(&t, None, None).await;
        t.client.close(app_error::SHUTDOWN.into(), b"bye");
        expect_reset(&mut app).await;
        expect_reset(&mut dest).await;
        assert!(summary(cap).await.outcome.starts_with("tunnel lost: "));
        assert!(summary(del).await.outcome.starts_with("tunnel lost: "));
    }

    /// 5) No byte either way for the idle time resets both ends; bytes keep it alive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_timeout_resets_both_ends() {
        let t = tunnel().await;
        let idle = Duration::from_millis(300);
        let Flow {
            mut app,
            mut dest,
            cap,
            del,
            ..
        } = flow(&t, Some(idle), None).await;
        // Activity every 100 ms for 600 ms (twice the limit) keeps the flow alive.
        for i in 0..6u8 {
            if i % 2 == 0 {
                app.write_all(&[i]).await.unwrap();
                let mut b = [0u8; 1];
                timeout(T, dest.read_exact(&mut b)).await.unwrap().unwrap();
            } else {
                dest.write_all(&[i]).await.unwrap();
                let mut b = [0u8; 1];
                timeout(T, app.read_exact(&mut b)).await.unwrap().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!cap.is_finished());
        let quiet = std::time::Instant::now();
        expect_reset(&mut app).await;
        expect_reset(&mut dest).await;
        let waited = quiet.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_millis(1500),
            "{waited:?}"
        );
        let c = summary(cap).await;
        assert_eq!(c.outcome, IDLE_TIMEOUT_OUTCOME);
        assert!(c.duration_ms >= 800, "{c:?}");
        assert_eq!(
            summary(del).await.outcome,
            "peer reset the stream: 0x7 (idle timeout)"
        );
    }

    /// 6) Backpressure: while the destination does not read, the client's writes stop after
    /// a bounded amount (the kernel buffers, the stream's flow-control window, one read per
    /// pipe direction); then everything arrives once it reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_reader_blocks_the_writer() {
        const TOTAL: u64 = 48 << 20;
        const BOUND: u64 = 32 << 20;
        let t = tunnel().await;
        let Flow {
            app,
            mut dest,
            cap,
            del,
            cap_ctl,
            ..
        } = flow(&t, None, None).await;
        let written = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (written, done) = (written.clone(), done.clone());
            tokio::spawn(async move {
                let mut app = app;
                let chunk = vec![7u8; 64 * 1024];
                while written.load(Relaxed) < TOTAL {
                    app.write_all(&chunk).await.unwrap();
                    written.fetch_add(chunk.len() as u64, Relaxed);
                }
                app.shutdown().await.unwrap();
                done.store(true, Relaxed);
                app
            })
        };
        // Wait until the writer has made no progress for 300 ms.
        let mut last = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = written.load(Relaxed);
            if now == last && now > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline && now < TOTAL,
                "the writer never stalled ({now} bytes written)"
            );
            last = now;
        }
        println!(
            "writer stalled after {} KiB; {} KiB went into the stream",
            last >> 10,
            cap_ctl.bytes_to_peer() >> 10
        );
        assert!(
            last < BOUND,
            "{last} bytes written before the writer stalled"
        );
        assert!(!done.load(Relaxed));
        // The destination reads now: everything arrives, exactly.
        let mut n = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let r = timeout(T, dest.read(&mut buf)).await.unwrap().unwrap();
            if r == 0 {
                break;
            }
            assert!(buf[..r].iter().all(|&b| b == 7));
            n += r as u64;
        }
        assert_eq!(n, TOTAL);
        let app = timeout(T, writer).await.unwrap().unwrap();
        drop(dest);
        drop(app);
        let c = summary(cap).await;
        assert_eq!(c.bytes_to_peer, TOTAL);
        let _ = summary(del).await;
    }

    /// 7) 200 flows at once, each a request and a reply with a FIN each way: all complete,
    /// none waits for an EOF that does not come.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_hundred_short_flows_all_complete() {
        let t = tunnel().await;
        let mut flows = Vec::new();
        for _ in 0..200 {
            flows.push(flow(&t, None, None).await);
        }
        let started = std::time::Instant::now();
        let mut tasks = Vec::new();
        for (
            i,
            Flow {
                mut app,
                mut dest,
                cap,
                del,
                ..
            },
        ) in flows.into_iter().enumerate()
        {
            let req = format!("request {i}");
            let rep = format!("reply {i}").repeat(100);
            let client = tokio::spawn({
                let (req, rep) = (req.clone(), rep.clone());
                async move {
                    app.write_all(req.as_bytes()).await.unwrap();
                    app.shutdown().await.unwrap();
                    let mut got = Vec::new();
                    app.read_to_end(&mut got).await.unwrap();
                    assert_eq!(got, rep.as_bytes());
                }
            });
            let server = tokio::spawn(async move {
                let mut got = Vec::new();
                dest.read_to_end(&mut got).await.unwrap();
                assert_eq!(got, req.as_bytes());
                dest.write_all(rep.as_bytes()).await.unwrap();
                drop(dest); // close() with nothing unread: a FIN
            });
            tasks.push(async move {
                client.await.unwrap();
                server.await.unwrap();
                let (c, d) = (cap.await.unwrap(), del.await.unwrap());
                assert_eq!(c.outcome, CLOSED_OUTCOME);
                assert_eq!(d.outcome, CLOSED_OUTCOME);
            });
        }
        let all = async {
            for task in tasks {
                task.await;
            }
        };
        timeout(Duration::from_secs(10), all)
            .await
            .expect("some flows did not complete");
        println!(
            "200 flows completed in {} ms",
            started.elapsed().as_millis()
        );
    }

    /// An idle flow's pipe is small: its future (what the task allocates) is well under
    /// 2 KiB, and it holds no data buffer while nothing moves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_pipe_is_small() {
        let t = tunnel().await;
        let (_app, tcp) = tcp_pair().await;
        let (send, recv) = t.client.open_bi().await.unwrap();
        let fut = run_pipe(
            tcp,
            send,
            recv,
            Bytes::new(),
            Bytes::new(),
            t.out.clone(),
            Some(Duration::from_secs(60)),
            FlowCtl::new(),
        );
        let size = std::mem::size_of_val(&fut);
        println!("run_pipe future: {size} bytes");
        assert!(size < 1536, "run_pipe's future is {size} bytes");
        drop(fut);
    }
}
