//! The copy loop: both directions' state machines, polled from one `poll_fn`.
use super::streams::{read_failed, tcp_failed, write_failed, End, Streams};
use super::{FlowCtl, IDLE_TIMEOUT_OUTCOME};
use crate::app_error;
use crate::sockopt::set_abortive_close;
use crate::stats::Traffic;
use bytes::{Buf, Bytes, BytesMut};
use quinn::{ReadError, RecvStream, StoppedError, WriteError};
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The most one TCP read takes (and so the most the TCP->stream direction holds).
const READ_SIZE: usize = 64 * 1024;
/// Reads up to this size are copied into a buffer of their own size before they go to
/// quinn, which keeps them until they are acknowledged: a 100-byte request must not pin
/// a 64 KiB buffer for a round trip.
const COPY_LIMIT: usize = 4 * 1024;
/// Steps (a read or a write on either side) per wake-up before the task yields.
const STEPS_PER_POLL: usize = 64;

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

pub(super) async fn copy(
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

            if !progress || matches!((&up, &down), (Up::Done, Down::Done)) {
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
        // STOP_SENDING is otherwise seen only by the next write: watch for it until the peer
        // has acknowledged our FIN (the peer stops the stream only when its side failed).
        if stopped_live {
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
        if matches!((&up, &down), (Up::Done, Down::Done)) {
            return Poll::Ready(End::Closed);
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
