//! The one type per kind of address the data plane handles: `Endpoint` (an IP and a
//! port: a TCP end, a QUIC peer) and `Cidr` (a block of function addresses). IPv4-mapped
//! IPv6 addresses (what a dual-stack socket reports for IPv4 clients) are turned back
//! into IPv4 at the edge, so every comparison sees one form.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An IP address and a port; printed as `198.19.1.2:80` or `[fd00::2]:80`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint(pub SocketAddr);

impl Endpoint {
    pub fn new(ip: IpAddr, port: u16) -> Self {
        Endpoint(SocketAddr::new(canonical(ip), port))
    }
    pub fn ip(&self) -> IpAddr {
        self.0.ip()
    }
    pub fn port(&self) -> u16 {
        self.0.port()
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Self {
        Endpoint::new(a.ip(), a.port())
    }
}

impl FromStr for Endpoint {
    type Err = String;
    /// `198.18.0.1:4433` or `[fd00::1]:4433`.
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<SocketAddr>()
            .map(Endpoint::from)
            .map_err(|_| format!("{s:?} is not an address:port"))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `::ffff:a.b.c.d` becomes `a.b.c.d`; everything else is returned as it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// A CIDR block with its host bits zero, e.g. `198.19.1.0/24` or `fd00:1::/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn new(network: IpAddr, prefix: u8) -> Result<Self, String> {
        let max = if network.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("prefix /{prefix} is longer than {max}"));
        }
        let c = Cidr { network, prefix };
        if c.mask_ip(network) != network {
            return Err(format!("{network}/{prefix} has host bits set"));
        }
        Ok(c)
    }
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }
    pub fn network(&self) -> IpAddr {
        self.network
    }
    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }
    /// Whether `ip` lies inside this block (an address of the other family never does).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.network.is_ipv4() && self.mask_ip(ip) == self.network
    }
    fn mask_ip(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(a) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
            }
            IpAddr::V6(a) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
            }
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR"))?;
        let ip: IpAddr = ip.parse().map_err(|_| format!("{s:?} is not a CIDR"))?;
        let prefix: u8 = prefix.parse().map_err(|_| format!("{s:?} is not a CIDR"))?;
        Cidr::new(ip, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains_only_its_family_and_block() {
        let c: Cidr = "198.19.1.0/24".parse().unwrap();
        assert!(c.contains("198.19.1.200".parse().unwrap()));
        assert!(!c.contains("198.19.2.1".parse().unwrap()));
        assert!(c.contains("::ffff:198.19.1.7".parse().unwrap()));
        let v6: Cidr = "fd00:1::/64".parse().unwrap();
        assert!(v6.contains("fd00:1::5".parse().unwrap()));
        assert!(!v6.contains("198.19.1.1".parse().unwrap()));
    }

    #[test]
    fn cidr_refuses_host_bits_and_bad_prefixes() {
        assert!("198.19.1.1/24".parse::<Cidr>().is_err());
        assert!("198.19.1.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn endpoint_unmaps_ipv4() {
        let e: Endpoint = "[::ffff:198.18.0.1]:4433".parse().unwrap();
        assert_eq!(e.to_string(), "198.18.0.1:4433");
    }
}
