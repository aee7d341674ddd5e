use super::*;
use std::process::Command;

const ADMIN: u16 = 15000;
const CAPTURE: u16 = 15001;

fn why(dst: &str) -> Option<String> {
    let sa: SocketAddr = dst.parse().unwrap();
    refusal(Endpoint::from(sa), ADMIN, CAPTURE).0
}

/// Every IPv4 and non-link-local IPv6 address the interfaces of this namespace carry.
fn interface_addresses() -> Vec<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    assert_eq!(unsafe { libc::getifaddrs(&mut head) }, 0);
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        let ifa = unsafe { &*cur };
        match sockaddr_ip(ifa.ifa_addr) {
            Some(IpAddr::V6(v6)) if (v6.segments()[0] & 0xffc0) == 0xfe80 => {}
            Some(ip) => out.push(ip),
            None => {}
        }
        cur = ifa.ifa_next;
    }
    unsafe { libc::freeifaddrs(head) };
    out
}

#[test]
fn the_daemons_ports_are_refused_on_any_address() {
    for dst in [
        "198.19.2.10:15000",
        "[fd00:2::10]:15000",
        "203.0.113.9:15000",
    ] {
        assert_eq!(
            why(dst).as_deref(),
            Some("destination port is the daemon's admin port"),
            "{dst}"
        );
    }
    for dst in ["198.19.2.10:15001", "[fd00:2::10]:15001"] {
        assert_eq!(
            why(dst).as_deref(),
            Some("destination port is the daemon's capture port"),
            "{dst}"
        );
    }
}

#[test]
fn loopback_unspecified_broadcast_and_multicast_are_refused() {
    let cases = [
        ("127.0.0.1:80", "loopback"),
        ("127.9.8.7:80", "loopback"),
        ("[::1]:80", "loopback"),
        ("[::ffff:127.0.0.1]:80", "loopback"),
        ("0.0.0.0:80", "unspecified"),
        ("0.1.2.3:80", "unspecified"),
        ("[::]:80", "unspecified"),
        ("[::ffff:0.0.0.0]:80", "unspecified"),
        ("255.255.255.255:80", "broadcast"),
        ("224.0.0.1:80", "multicast"),
        ("[ff02::1]:80", "multicast"),
    ];
    for (dst, kind) in cases {
        assert_eq!(
            why(dst),
            Some(format!("destination is a {kind} address")),
            "{dst}"
        );
    }
}

#[test]
fn every_interface_address_of_this_host_is_refused() {
    let own = interface_addresses();
    assert!(!own.is_empty(), "no interface addresses at all");
    for ip in own {
        let dst = Endpoint::new(ip, 8080);
        let (r, _) = refusal(dst, ADMIN, CAPTURE);
        assert!(r.is_some(), "{dst} was not refused");
        if !ip.is_loopback() {
            assert_eq!(r.as_deref(), Some("destination is an address of this host"));
            assert!(interface_has(ip).unwrap(), "{ip} not in the interface list");
        }
    }
}

#[test]
fn an_address_this_host_does_not_have_is_not_refused() {
    // TEST-NET-3: documentation only, on no interface of a test machine.
    let ip: IpAddr = "203.0.113.77".parse().unwrap();
    assert!(!interface_addresses().contains(&ip));
    assert_eq!(
        refusal(Endpoint::new(ip, 8080), ADMIN, CAPTURE),
        (None, Some(Method::Bind))
    );
    assert!(!interface_has(ip).unwrap());
}

/// Per-flow cost of the check: `cargo test --release own_address::tests::cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn cost() {
    for dst in ["203.0.113.77:8080", "127.0.0.2:8080"] {
        let dst: Endpoint = dst.parse().unwrap();
        let n = 200_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(refusal(std::hint::black_box(dst), ADMIN, CAPTURE));
        }
        println!("refusal({dst}): {} ns", t.elapsed().as_nanos() / n);
    }
    let own = interface_addresses()
        .into_iter()
        .find(|ip| !ip.is_loopback())
        .expect("a non-loopback address");
    for (what, f) in [
        (
            "bind probe",
            bind_succeeds as fn(IpAddr) -> io::Result<bool>,
        ),
        ("nonlocal_bind read", |ip| Ok(nonlocal_bind(ip))),
        ("getifaddrs", interface_has),
    ] {
        let n = 50_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(f(std::hint::black_box(own)).unwrap());
        }
        println!("{what} ({own}): {} ns", t.elapsed().as_nanos() / n);
    }
}

fn sh(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Netns(String);
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// In a fresh namespace: an address counts from the moment it is added (no cache), and
/// with ip_nonlocal_bind on the interface list still tells own from foreign.
#[test]
fn addresses_added_later_and_nonlocal_bind_in_a_netns() {
    if std::env::var("QMESH_TEST_NETNS").as_deref() != Ok("1") {
        use std::io::Write;
        let _ = writeln!(
            io::stderr(),
            "SKIPPED own_address::tests::addresses_added_later_and_nonlocal_bind_in_a_netns: set QMESH_TEST_NETNS=1 to run it (root, iproute2)"
        );
        return;
    }
    let ns = Netns(format!("qmesh-ownaddr-{}", std::process::id()));
    assert!(Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success());
    sh(&ns.0, &["ip", "link", "set", "lo", "up"]);
    sh(&ns.0, &["ip", "link", "add", "br0", "type", "bridge"]);
    sh(&ns.0, &["ip", "link", "set", "br0", "up"]);
    let name = ns.0.clone();
    let r = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // setns moves only this thread; the probes below run in it, on sockets of their own
        // (the shared probe sockets belong to the test process's namespace).
        super::PRIVATE_PROBES.set(true);
        let f = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let gw: IpAddr = "198.19.2.1".parse().unwrap();
        let fun: IpAddr = "198.19.2.10".parse().unwrap();
        let v6: IpAddr = "fd00:5a17::1".parse().unwrap();
        assert_eq!(is_own(gw).unwrap(), (false, Method::Bind));
        sh(&name, &["ip", "addr", "add", "198.19.2.1/24", "dev", "br0"]);
        sh(
            &name,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                "fd00:5a17::1/64",
                "dev",
                "br0",
                "nodad",
            ],
        );
        assert_eq!(
            is_own(gw).unwrap(),
            (true, Method::Bind),
            "added after start"
        );
        assert_eq!(is_own(v6).unwrap(), (true, Method::Bind));
        assert_eq!(is_own(fun).unwrap(), (false, Method::Bind));
        // The subnet's broadcast address is the host's too.
        assert!(is_own("198.19.2.255".parse().unwrap()).unwrap().0);
        sh(&name, &["sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1"]);
        sh(&name, &["sysctl", "-qw", "net.ipv6.ip_nonlocal_bind=1"]);
        assert_eq!(is_own(gw).unwrap(), (true, Method::Interfaces));
        assert_eq!(is_own(fun).unwrap(), (false, Method::Interfaces));
        assert_eq!(is_own(v6).unwrap(), (true, Method::Interfaces));
        assert!(!is_own("fd00:5a17::10".parse().unwrap()).unwrap().0);
        sh(&name, &["sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=0"]);
        sh(&name, &["ip", "addr", "del", "198.19.2.1/24", "dev", "br0"]);
        assert_eq!(is_own(gw).unwrap(), (false, Method::Bind), "removed");
    })
    .join();
    drop(ns);
    if let Err(panic) = r {
        std::panic::resume_unwind(panic);
    }
}
