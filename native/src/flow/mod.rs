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
mod copy;
mod streams;
#[cfg(test)]
pub(crate) mod tests;

use crate::sockopt::set_abortive_close;
use crate::stats::Traffic;
use bytes::Bytes;
use copy::copy;
use quinn::{RecvStream, SendStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use streams::{End, Streams};
use tokio::net::TcpStream;

/// The outcome of a flow ended by the idle timeout (counted by capture/ and deliver/).
pub const IDLE_TIMEOUT_OUTCOME: &str = "idle timeout";
/// The outcome of a flow whose two directions both ended with a FIN.
pub const CLOSED_OUTCOME: &str = "closed";

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
