//! Inbound delivery reaches function addresses only, never the receiving host itself: a
//! peer's function naming this host's bridge gateway (inside local.cidrs), loopback, or
//! the daemon's own ports would otherwise reach host services, the admin port included,
//! with the host as the source. `refusal` names why a destination is the host's own.
//!
//! Whether an address is the host's is asked of the kernel at the time of the flow: a UDP
//! socket bound to (ip, 0) fails with EADDRNOTAVAIL unless ip is local (an interface
//! address, a `local` route, a broadcast or multicast address). No cache, so an address
//! added after start counts at once. With ip_nonlocal_bind on, bind succeeds for any
//! address; then the interface list (getifaddrs) decides instead.
use crate::addr::{canonical, Endpoint};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

/// How a destination was found to be (or not be) the host's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The bind probe answered (exact, kernel-side).
    Bind,
    /// ip_nonlocal_bind is on (or unreadable): the interface list answered.
    Interfaces,
}

/// Why `dst` is refused as the receiving host's own (None: a function may be there), and
/// how the host's addresses were checked (None: decided without asking the kernel).
pub fn refusal(
    dst: Endpoint,
    admin_port: u16,
    capture_port: u16,
) -> (Option<String>, Option<Method>) {
    if dst.port() == admin_port {
        return (
            Some("destination port is the daemon's admin port".into()),
            None,
        );
    }
    if dst.port() == capture_port {
        return (
            Some("destination port is the daemon's capture port".into()),
            None,
        );
    }
    if let Some(kind) = special(dst.ip()) {
        return (Some(format!("destination is a {kind} address")), None);
    }
    match is_own(dst.ip()) {
        Ok((true, m)) => (
            Some("destination is an address of this host".into()),
            Some(m),
        ),
        Ok((false, m)) => (None, Some(m)),
        // Fail closed: an address we cannot place is not delivered to.
        Err(e) => (
            Some(format!(
                "cannot tell whether the destination is an address of this host: {e}"
            )),
            None,
        ),
    }
}

/// Addresses that are never a function's, whatever the interfaces say.
fn special(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        // 0.0.0.0/8 "this network": connect() to 0.0.0.0 reaches the host itself.
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Some("unspecified"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("multicast"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast"),
        _ => None,
    }
}

/// Whether `ip` is an address of this host's network namespace, now.
pub fn is_own(ip: IpAddr) -> io::Result<(bool, Method)> {
    let ip = canonical(ip);
    if !bind_succeeds(ip)? {
        // Definitive: with nonlocal bind on, bind would not have failed.
        return Ok((false, Method::Bind));
    }
    if nonlocal_bind(ip) {
        return Ok((interface_has(ip)?, Method::Interfaces));
    }
    Ok((true, Method::Bind))
}

/// One unbound UDP socket per family, shared: a failed bind leaves it unbound, so the
/// common case (a function address) costs one bind(), not socket+bind+close. Opened at
/// start (`open_probes`) so the daemon's descriptor count does not grow with its first
/// flows. A socket answers for the namespace it was made in: the daemon's, the host's.
static PROBES: Mutex<[Option<Socket>; 2]> = Mutex::new([None, None]);

#[cfg(test)]
thread_local! {
    /// Crate tests that setns into another namespace probe with sockets of their own.
    pub(crate) static PRIVATE_PROBES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Opens the probe sockets now (a family the host lacks is opened on first use, or not).
pub fn open_probes() {
    for slot in 0..2 {
        if let Ok(sock) = probe_socket(slot) {
            put_back(slot, sock);
        }
    }
}

fn probe_socket(slot: usize) -> io::Result<Socket> {
    let domain = if slot == 0 {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    Socket::new(domain, Type::DGRAM, None)
}

/// Returns an unbound socket to its slot; a second one (two flows probed at once) is closed.
fn put_back(slot: usize, sock: Socket) {
    if let Ok(mut p) = PROBES.lock() {
        if p[slot].is_none() {
            p[slot] = Some(sock);
        }
    }
}

/// Binds a UDP socket to (ip, 0): Ok(false) on EADDRNOTAVAIL (not local), other errors pass up.
fn bind_succeeds(ip: IpAddr) -> io::Result<bool> {
    let slot = usize::from(ip.is_ipv6());
    #[cfg(test)]
    if PRIVATE_PROBES.get() {
        return bind_probe(&probe_socket(slot)?, ip);
    }
    let taken = PROBES.lock().ok().and_then(|mut p| p[slot].take());
    let sock = match taken {
        Some(s) => s,
        None => probe_socket(slot)?,
    };
    let bound = bind_probe(&sock, ip);
    if let Ok(true) = bound {
        // Now bound, so closed; a fresh one keeps the count of descriptors the same.
        drop(sock);
        if let Ok(fresh) = probe_socket(slot) {
            put_back(slot, fresh);
        }
    } else {
        put_back(slot, sock); // still unbound
    }
    bound
}

fn bind_probe(sock: &Socket, ip: IpAddr) -> io::Result<bool> {
    match sock.bind(&SockAddr::from(SocketAddr::new(ip, 0))) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(false),
        Err(e) => Err(e),
    }
}

/// net.ipv{4,6}.ip_nonlocal_bind of this namespace; unreadable counts as on (the probe
/// then cannot be trusted to say "local").
fn nonlocal_bind(ip: IpAddr) -> bool {
    let path = if ip.is_ipv4() {
        "/proc/sys/net/ipv4/ip_nonlocal_bind"
    } else {
        "/proc/sys/net/ipv6/ip_nonlocal_bind"
    };
    std::fs::read(path).map_or(true, |v| v.first() != Some(&b'0'))
}

/// Whether an interface carries `ip` (or has it as its IPv4 broadcast address).
fn interface_has(ip: IpAddr) -> io::Result<bool> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below, whatever happens.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = false;
    let mut cur = head;
    while !cur.is_null() && !found {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        found = sockaddr_ip(ifa.ifa_addr) == Some(ip)
            || (ip.is_ipv4() && sockaddr_ip(ifa.ifa_ifu) == Some(ip));
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

/// The IP of a sockaddr from getifaddrs (None: null, or not IPv4/IPv6).
fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: getifaddrs gives sockaddrs whose family tells their real type and size.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::from(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "own_address_tests.rs"]
mod tests;
