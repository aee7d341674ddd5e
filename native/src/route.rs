//! Step 2a, route: where a destination goes. Longest prefix over this host's own CIDRs
//! (never tunnelled) and every peer's CIDRs; an address nobody owns goes nowhere.
use crate::addr::Cidr;
use crate::snapshot::Peer;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Peer(Arc<Peer>),
    Local,
    Nowhere,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    /// Longest prefix first, so the first match is the longest match. `None`: local.
    entries: Vec<(Cidr, Option<Arc<Peer>>)>,
}

impl RouteTable {
    pub fn new(local: &[Cidr], peers: &[Arc<Peer>]) -> Self {
        let mut entries: Vec<(Cidr, Option<Arc<Peer>>)> =
            local.iter().map(|c| (*c, None)).collect();
        for p in peers {
            entries.extend(p.cidrs.iter().map(|c| (*c, Some(p.clone()))));
        }
        // Stable: on equal prefixes, local comes first, then peers in config order (as before).
        entries.sort_by_key(|(c, _)| std::cmp::Reverse(c.prefix_len()));
        RouteTable { entries }
    }

    pub fn lookup(&self, ip: IpAddr) -> Route {
        for (cidr, peer) in &self.entries {
            if cidr.contains(ip) {
                return match peer {
                    Some(p) => Route::Peer(p.clone()),
                    None => Route::Local,
                };
            }
        }
        Route::Nowhere
    }

    /// Inside one of this host's own function CIDRs (inbound: never an open relay).
    pub fn is_local(&self, ip: IpAddr) -> bool {
        self.lookup(ip) == Route::Local
    }

    /// May `peer` claim `ip` as a flow's source? Its functions' addresses (by longest
    /// prefix), and its own underlay address, which host processes on it connect from.
    pub fn owned_by(&self, peer: &Peer, ip: IpAddr) -> bool {
        if crate::addr::canonical(ip) == peer.endpoint.ip() {
            return true;
        }
        matches!(self.lookup(ip), Route::Peer(p) if p.name == peer.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, endpoint: &str, cidrs: &[&str]) -> Arc<Peer> {
        Arc::new(Peer {
            name: name.into(),
            endpoint: endpoint.parse().unwrap(),
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        })
    }

    #[test]
    fn longest_prefix_wins_and_local_never_tunnels() {
        let a = peer("a", "198.18.0.2:4433", &["198.19.0.0/16"]);
        let b = peer("b", "198.18.0.3:4433", &["198.19.2.0/24"]);
        let t = RouteTable::new(&["198.19.1.0/24".parse().unwrap()], &[a.clone(), b.clone()]);
        assert_eq!(
            t.lookup("198.19.2.9".parse().unwrap()),
            Route::Peer(b.clone())
        );
        assert_eq!(
            t.lookup("198.19.3.9".parse().unwrap()),
            Route::Peer(a.clone())
        );
        assert_eq!(t.lookup("198.19.1.9".parse().unwrap()), Route::Local);
        assert_eq!(t.lookup("10.0.0.1".parse().unwrap()), Route::Nowhere);
        assert!(t.owned_by(&b, "198.19.2.1".parse().unwrap()));
        assert!(
            !t.owned_by(&a, "198.19.2.1".parse().unwrap()),
            "b's longer prefix owns it"
        );
        assert!(
            t.owned_by(&a, "198.18.0.2".parse().unwrap()),
            "its underlay address"
        );
        assert!(!t.owned_by(&a, "198.18.0.3".parse().unwrap()));
    }
}
