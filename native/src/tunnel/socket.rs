//! The endpoint's UDP socket, with ICMP errors turned into hints.
//!
//! One unconnected socket serves every peer in both roles, so an ICMP error (port or host
//! unreachable: a peer's daemon died while its host stayed up) cannot end a tunnel by itself: it
//! is forgeable. It is only a hint: the destination of the datagram that drew it goes to a
//! channel, and the owner of that channel verifies the peer (probe.rs) before acting.
//!
//! How Linux reports those errors with IP_RECVERR (ip(7), recv(2), checked against
//! net/ipv4/udp.c, ip_sockglue.c and core/skbuff.c): an ICMP error for an unconnected UDP
//! socket is only reported if IP_RECVERR (IPV6_RECVERR for ICMPv6; the IPv4 flag for ICMPv4
//! about v4-mapped traffic on a dual-stack socket) is set. Then it is queued on the socket's
//! error queue and also left as the pending socket error, which the next `recvmsg` OR
//! `sendmsg` on the socket (to any destination) returns once, in place of its work: that
//! `sendmsg` sends nothing. `recvmsg(MSG_ERRQUEUE)` dequeues one error: msg_name holds the
//! original destination (address and port) of the datagram that caused it, and a control
//! message (SOL_IP, IP_RECVERR) or (SOL_IPV6, IPV6_RECVERR) holds `struct sock_extended_err`
//! { u32 ee_errno; u8 ee_origin, ee_type, ee_code, ee_pad; u32 ee_info; u32 ee_data } (16
//! bytes) followed by the offender's address (the ICMP sender). Dequeuing the last ICMP
//! error clears the pending socket error. While the queue is not empty the socket polls
//! EPOLLERR, and queued errors are charged to the receive buffer: they must be drained even
//! when nobody wants them, or they would crowd out datagrams.
//!
//! quinn's own tokio socket (TokioRuntime::wrap_udp_socket) retries any receive error
//! silently and keeps its tokio socket private, so it can neither report these errors nor
//! be told when the error queue fills. This is the same adapter (a tokio UdpSocket and
//! quinn-udp's UdpSocketState, called exactly as quinn calls them), plus: the error queue is
//! drained whenever tokio reports error readiness on the socket (and whenever a receive
//! fails), and a send that fails because it picked up another datagram's error is sent again.
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use tokio::io::{Interest, Ready};
use tokio::sync::mpsc::UnboundedSender;

/// At most this many error-queue messages are read per `poll_recv` (then it yields).
const ERRORS_PER_POLL: usize = 64;
/// At most this many failed receives are retried per `poll_recv` (then it yields).
const FAILED_RECEIVES_PER_POLL: usize = 16;

/// Wraps `socket` for `quinn::Endpoint::new_with_abstract_socket` (call it inside a tokio
/// runtime): sets IP_RECVERR (and IPV6_RECVERR on a v6 socket) and sends to `hints` the
/// destination of each datagram that drew an ICMP error saying it cannot be delivered (port,
/// host or network unreachable, administratively prohibited). A hint is in the socket's
/// address form (v4-mapped on a dual-stack v6 socket, like `Connection::remote_address` on
/// that endpoint); compare ip and port. Several datagrams to a dead peer give several hints.
/// Receive errors never reach quinn and no transmit ever fails.
pub fn hinting_socket(
    socket: std::net::UdpSocket,
    hints: UnboundedSender<SocketAddr>,
) -> io::Result<Arc<dyn AsyncUdpSocket>> {
    enable_recverr(&socket)?;
    // Sets O_NONBLOCK and the options quinn needs (GRO, PMTU probing, PKTINFO, TOS).
    let state = UdpSocketState::new((&socket).into())?;
    let io = tokio::net::UdpSocket::from_std(socket)?;
    Ok(Arc::new(HintingSocket {
        shared: Arc::new(Shared { io, state }),
        hints,
        error_wait: Mutex::new(None),
    }))
}

fn enable_recverr(socket: &std::net::UdpSocket) -> io::Result<()> {
    if socket.local_addr()?.is_ipv4() {
        return set_flag(socket, libc::SOL_IP, libc::IP_RECVERR);
    }
    set_flag(socket, libc::SOL_IPV6, libc::IPV6_RECVERR)?;
    if !socket2::SockRef::from(socket).only_v6()? {
        // ICMPv4 errors about v4-mapped traffic are filtered by the IPv4 flag.
        set_flag(socket, libc::SOL_IP, libc::IP_RECVERR)?;
    }
    Ok(())
}

fn set_flag(socket: &impl AsRawFd, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option value of the stated length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

struct Shared {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
}

type ErrorWait = Pin<Box<dyn Future<Output = io::Result<Ready>> + Send>>;

struct HintingSocket {
    shared: Arc<Shared>,
    hints: UnboundedSender<SocketAddr>,
    /// Waits for tokio to see EPOLLERR on the socket (an error was queued). Kept across
    /// `poll_recv` calls so its waker stays registered; only the endpoint driver polls it.
    error_wait: Mutex<Option<ErrorWait>>,
}

impl fmt::Debug for HintingSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HintingSocket")
            .field("io", &self.shared.io)
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for HintingSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable {
            shared: self.shared.clone(),
            fut: None,
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let Shared { io, state } = &*self.shared;
        io.try_io(Interest::WRITABLE, || {
            match state.try_send(io.into(), transmit) {
                // Most likely the pending error of an ICMP about another datagram, returned by
                // this sendmsg instead of sending: send once more. `send` returns only WouldBlock
                // and logs and drops anything else (quinn-udp's policy: quinn's connection driver
                // stops on any other error), so a transmit is at worst lost, never failed.
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => state.send(io.into(), transmit),
                sent => sent,
            }
        })
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.poll_error_queue(cx);
        let Shared { io, state } = &*self.shared;
        let mut failed = 0;
        loop {
            ready!(io.poll_recv_ready(cx))?;
            match io.try_io(Interest::READABLE, || state.recv(io.into(), bufs, meta)) {
                Ok(n) => return Poll::Ready(Ok(n)),
                // Readiness cleared: the next poll_recv_ready registers the waker.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The pending error an ICMP left (ECONNREFUSED, EHOSTUNREACH, ...): its
                // details are queued. quinn's endpoint driver would stop on it; go on.
                Err(_) => {
                    let mut budget = ERRORS_PER_POLL;
                    let _ = self.drain(&mut budget);
                    failed += 1;
                    if failed == FAILED_RECEIVES_PER_POLL {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.io.local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.shared.state.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.shared.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.shared.state.gro_segments()
    }
}

impl HintingSocket {
    /// Drains the error queue each time tokio reports error readiness, then waits for the
    /// next; bounded (yields with a wake-up when the budget is spent).
    fn poll_error_queue(&self, cx: &mut Context) {
        let mut wait = self
            .error_wait
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut budget = ERRORS_PER_POLL;
        loop {
            let fut = wait.get_or_insert_with(|| {
                let shared = self.shared.clone();
                Box::pin(async move { shared.io.ready(Interest::ERROR).await })
            });
            match fut.as_mut().poll(cx) {
                Poll::Pending => return,
                // The runtime is shutting down; the receive path reports that.
                Poll::Ready(Err(_)) => {
                    *wait = None;
                    return;
                }
                Poll::Ready(Ok(_)) => *wait = None,
            }
            // try_io clears the error readiness only if the drain ends on EAGAIN (and not if
            // an error was queued since tokio saw it).
            match self
                .shared
                .io
                .try_io(Interest::ERROR, || self.drain(&mut budget))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Ok(()) => {
                    // Budget spent, more may be queued: come back after other work.
                    cx.waker().wake_by_ref();
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Reads queued errors until the queue is empty (Err WouldBlock) or `budget` is spent
    /// (Ok), sending each distinct undeliverable destination to the hint channel.
    fn drain(&self, budget: &mut usize) -> io::Result<()> {
        let fd = self.shared.io.as_raw_fd();
        let mut sent: Vec<SocketAddr> = Vec::new();
        while *budget > 0 {
            match recv_queued_error(fd) {
                Ok(QueuedError {
                    destination: Some(to),
                    errno,
                    origin,
                }) if is_unreachable(origin, errno) => {
                    if !sent.contains(&to) {
                        sent.push(to);
                        let _ = self.hints.send(to);
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            *budget -= 1;
        }
        Ok(())
    }
}

/// An ICMP(v6) error saying the datagram could not be delivered (as opposed to PMTU
/// "too big", parameter problem, or errors the kernel made locally, SO_EE_ORIGIN_LOCAL).
fn is_unreachable(origin: u8, errno: u32) -> bool {
    (origin == libc::SO_EE_ORIGIN_ICMP || origin == libc::SO_EE_ORIGIN_ICMP6)
        && [
            libc::ECONNREFUSED, // port unreachable
            libc::EHOSTUNREACH, // host unreachable or filtered (also TTL exceeded)
            libc::ENETUNREACH,  // network unreachable / unknown, v6 no route
            libc::EHOSTDOWN,    // host unknown
            libc::ENONET,       // host isolated
            libc::ENOPROTOOPT,  // protocol unreachable
            libc::EACCES,       // v6 administratively prohibited, reject route
        ]
        .iter()
        .any(|&e| e as u32 == errno)
}

#[derive(Debug)]
struct QueuedError {
    /// msg_name: where the datagram that drew the error was going.
    destination: Option<SocketAddr>,
    errno: u32,
    /// SO_EE_ORIGIN_*; 0 (NONE) if the control message was missing.
    origin: u8,
}

/// One `recvmsg(MSG_ERRQUEUE | MSG_DONTWAIT)`: Err WouldBlock when the queue is empty.
fn recv_queued_error(fd: RawFd) -> io::Result<QueuedError> {
    // SAFETY: all-zero is a valid sockaddr_storage / msghdr.
    let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
    // Room for the IP_RECVERR message (16 + 28 bytes) after any PKTINFO/TOS/TCLASS messages
    // the options quinn-udp enables add to an error from the network; u64 keeps it aligned.
    let mut control = [0u64; 64];
    let mut payload = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control) as _;
    // SAFETY: every pointer in msg is to a live local buffer of the stated length.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut err = QueuedError {
        destination: None,
        errno: 0,
        origin: libc::SO_EE_ORIGIN_NONE,
    };
    if msg.msg_namelen > 0 {
        // SAFETY: the kernel wrote a sockaddr of msg_namelen bytes into name.
        err.destination = unsafe { socket2::SockAddr::new(name, msg.msg_namelen) }.as_socket();
    }
    let ee_len = mem::size_of::<libc::sock_extended_err>();
    // SAFETY: msg describes the control buffer the kernel filled (msg_controllen updated);
    // CMSG_NXTHDR stops within it, and the data is read unaligned only when long enough.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let recverr = (c.cmsg_level == libc::SOL_IP && c.cmsg_type == libc::IP_RECVERR)
                || (c.cmsg_level == libc::SOL_IPV6 && c.cmsg_type == libc::IPV6_RECVERR);
            if recverr && c.cmsg_len as usize >= libc::CMSG_LEN(ee_len as u32) as usize {
                let ee: libc::sock_extended_err =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                err.errno = ee.ee_errno;
                err.origin = ee.ee_origin;
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(err)
}

/// Write readiness for one task (quinn's UdpPollHelper, which is private).
struct Writable {
    shared: Arc<Shared>,
    fut: Option<Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>>,
}

impl fmt::Debug for Writable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writable").finish_non_exhaustive()
    }
}

impl UdpPoller for Writable {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let fut = this.fut.get_or_insert_with(|| {
            let shared = this.shared.clone();
            Box::pin(async move { shared.io.writable().await })
        });
        let result = fut.as_mut().poll(cx);
        if result.is_ready() {
            this.fut = None;
        }
        result
    }
}

#[cfg(test)]
#[path = "socket_tests.rs"]
pub(crate) mod tests;
