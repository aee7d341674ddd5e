//! The first bytes of every tunnel stream: which TCP connection it carries. The
//! sending side writes it; the receiving side decodes it before connecting anywhere.
//! Version 1, network byte order (README "The stream header"):
//!
//! ```text
//!   0      1      2          4          6                 6+n          6+2n
//!   | ver  | fam  | dst port | src port | dst addr (n)    | src addr (n) |
//! ```
//! ver = 1; fam = 4 (n = 4) or 6 (n = 16): 14 bytes for IPv4, 38 for IPv6.
use crate::addr::Endpoint;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const VERSION: u8 = 1;
pub const MAX_LEN: usize = 38;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHeader {
    pub destination: Endpoint,
    pub source: Endpoint,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Complete(StreamHeader, usize),
    Incomplete,
}

impl StreamHeader {
    /// Both ends must be of one family (capture refuses mixed ones before this).
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let (d, s) = (self.destination.ip(), self.source.ip());
        let mut out = Vec::with_capacity(MAX_LEN);
        out.push(VERSION);
        match (d, s) {
            (IpAddr::V4(d4), IpAddr::V4(s4)) => {
                out.push(4);
                out.extend_from_slice(&self.destination.port().to_be_bytes());
                out.extend_from_slice(&self.source.port().to_be_bytes());
                out.extend_from_slice(&d4.octets());
                out.extend_from_slice(&s4.octets());
            }
            (IpAddr::V6(d6), IpAddr::V6(s6)) => {
                out.push(6);
                out.extend_from_slice(&self.destination.port().to_be_bytes());
                out.extend_from_slice(&self.source.port().to_be_bytes());
                out.extend_from_slice(&d6.octets());
                out.extend_from_slice(&s6.octets());
            }
            _ => return Err("source and destination must be of one address family".into()),
        }
        Ok(out)
    }

    /// Decodes a header at the start of `buf`; an error says why it is not one.
    pub fn decode(buf: &[u8]) -> Result<Decoded, String> {
        let (Some(&version), Some(&family)) = (buf.first(), buf.get(1)) else {
            return Ok(Decoded::Incomplete);
        };
        if version != VERSION {
            return Err(format!("unsupported stream header version {version} (this daemon speaks {VERSION}); upgrade the older peer"));
        }
        let n = match family {
            4 => 4,
            6 => 16,
            other => return Err(format!("bad address family {other} in stream header")),
        };
        let len = 6 + 2 * n;
        let Some(h) = buf.get(..len) else {
            return Ok(Decoded::Incomplete);
        };
        let dst_port = u16::from_be_bytes([h[2], h[3]]);
        let src_port = u16::from_be_bytes([h[4], h[5]]);
        if dst_port == 0 {
            return Err("destination port 0 in stream header".into());
        }
        let ip = |b: &[u8]| -> IpAddr {
            if n == 4 {
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            } else {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                IpAddr::V6(Ipv6Addr::from(a))
            }
        };
        // Endpoint::new would unmap ::ffff:a.b.c.d; a v6 header naming one is refused instead,
        // so no check downstream can be confused about the family.
        let (dst, src) = (ip(&h[6..6 + n]), ip(&h[6 + n..len]));
        if n == 16
            && (crate::addr::canonical(dst).is_ipv4() || crate::addr::canonical(src).is_ipv4())
        {
            return Err("IPv4-mapped address in an IPv6 stream header".into());
        }
        Ok(Decoded::Complete(
            StreamHeader {
                destination: Endpoint::new(dst, dst_port),
                source: Endpoint::new(src, src_port),
            },
            len,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(d: &str, s: &str) -> StreamHeader {
        StreamHeader {
            destination: d.parse().unwrap(),
            source: s.parse().unwrap(),
        }
    }

    #[test]
    fn round_trips_both_families_byte_exact() {
        let v4 = h("198.19.2.10:8080", "198.19.1.10:40000");
        let bytes = v4.encode().unwrap();
        assert_eq!(
            bytes,
            [1, 4, 0x1f, 0x90, 0x9c, 0x40, 198, 19, 2, 10, 198, 19, 1, 10]
        );
        assert_eq!(
            StreamHeader::decode(&bytes).unwrap(),
            Decoded::Complete(v4, 14)
        );
        let v6 = h("[fd00:2::a]:443", "[fd00:1::a]:5");
        let bytes = v6.encode().unwrap();
        assert_eq!(bytes.len(), 38);
        let mut with_payload = bytes.clone();
        with_payload.extend_from_slice(b"GET /");
        assert_eq!(
            StreamHeader::decode(&with_payload).unwrap(),
            Decoded::Complete(v6, 38)
        );
    }

    #[test]
    fn every_prefix_is_incomplete_and_bad_fields_are_refused() {
        let bytes = h("198.19.2.10:80", "198.19.1.10:1").encode().unwrap();
        for i in 0..bytes.len() {
            assert_eq!(
                StreamHeader::decode(&bytes[..i]).unwrap(),
                Decoded::Incomplete,
                "prefix {i}"
            );
        }
        assert!(StreamHeader::decode(&[2, 4])
            .unwrap_err()
            .contains("version 2"));
        assert!(StreamHeader::decode(&[1, 5])
            .unwrap_err()
            .contains("family 5"));
        let mut zero_port = bytes.clone();
        zero_port[2] = 0;
        zero_port[3] = 0;
        assert!(StreamHeader::decode(&zero_port).is_err());
        assert!(h("198.19.2.10:80", "[fd00::1]:1").encode().is_err());
        let mapped = [
            &[1u8, 6, 0, 80, 0, 1][..],
            &[0; 10],
            &[0xff, 0xff, 198, 19, 2, 1],
            &[0xfd; 16],
        ]
        .concat();
        assert!(StreamHeader::decode(&mapped)
            .unwrap_err()
            .contains("mapped"));
    }
}
