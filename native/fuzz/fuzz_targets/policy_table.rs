//! The policy table the control plane pushes, from JSON text to a decision:
//! an arbitrary, JSON-shaped policy (mostly well-formed, sometimes not: unknown keys,
//! bad actions, CIDRs with host bits or bad prefixes, empty or reversed port ranges,
//! numbers too wide for a port) -> serde_json -> PolicyJson -> PolicyTable::compile,
//! then PolicyTable::evaluate on arbitrary flows (many of them inside the policy's own
//! CIDRs, so rules do match). Checks:
//! - nothing panics;
//! - the JSON is refused exactly when the model says it does not fit PolicyJson;
//! - compile succeeds exactly when the model's validation does;
//! - every decision (action and rule name) equals the one of a naive model written
//!   here: its own CIDR parsing and bit-by-bit prefix comparison, its own IPv4-mapped
//!   unmapping, first match wins, else the default.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use qmesh_native::policy::{Action, PolicyFlow, PolicyJson, PolicyTable};
use serde_json::{Map, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const PEERS: [&str; 4] = ["host-1", "host-2", "host-3", "Host-1"];

// ---------------------------------------------------------------- the model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MAction {
    Allow,
    Deny,
}

/// A CIDR as the model sees it: the family, the network as 16 bytes (IPv4 in the first 4), the prefix.
#[derive(Debug, Clone, Copy)]
struct MCidr {
    v4: bool,
    bytes: [u8; 16],
    prefix: usize,
}

fn bit(bytes: &[u8; 16], i: usize) -> bool {
    (bytes[i / 8] >> (7 - i % 8)) & 1 == 1
}

fn model_action(s: &str) -> Option<MAction> {
    match s {
        "allow" => Some(MAction::Allow),
        "deny" => Some(MAction::Deny),
        _ => None,
    }
}

/// "address/prefix" with the host bits zero; the network keeps the family it is written in.
fn model_cidr(s: &str) -> Option<MCidr> {
    let (ip, prefix) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let (v4, bytes, width) = match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (true, b, 32)
        }
        IpAddr::V6(a) => (false, a.octets(), 128),
    };
    let prefix = usize::from(prefix);
    if prefix > width || (prefix..width).any(|i| bit(&bytes, i)) {
        return None;
    }
    Some(MCidr { v4, bytes, prefix })
}

/// An address as the model compares it: ::ffff:a.b.c.d is IPv4.
fn model_ip(ip: IpAddr) -> (bool, [u8; 16]) {
    let mut b = [0u8; 16];
    match ip {
        IpAddr::V4(a) => {
            b[..4].copy_from_slice(&a.octets());
            (true, b)
        }
        IpAddr::V6(a) => {
            let o = a.octets();
            if o[..10].iter().all(|&x| x == 0) && o[10] == 0xff && o[11] == 0xff {
                b[..4].copy_from_slice(&o[12..]);
                (true, b)
            } else {
                (false, o)
            }
        }
    }
}

fn model_contains(c: &MCidr, ip: IpAddr) -> bool {
    let (v4, b) = model_ip(ip);
    v4 == c.v4 && (0..c.prefix).all(|i| bit(&b, i) == bit(&c.bytes, i))
}

/// One rule as generated; the `Option`s inside lists are "did this item validate".
#[derive(Debug)]
struct MRule {
    name: String,
    action: Option<MAction>,
    from: Option<Vec<String>>,
    sources: Option<Vec<Option<MCidr>>>,
    destinations: Option<Vec<Option<MCidr>>>,
    ports: Option<Vec<(u16, u16)>>,
}

impl MRule {
    fn valid(&self) -> bool {
        let cidrs_ok = |l: &Option<Vec<Option<MCidr>>>| l.as_ref().is_none_or(|l| l.iter().all(Option::is_some));
        self.action.is_some()
            && cidrs_ok(&self.sources)
            && cidrs_ok(&self.destinations)
            && self.ports.as_ref().is_none_or(|p| p.iter().all(|&(a, b)| a <= b))
    }

    fn matches(&self, f: &MFlow) -> bool {
        let from_ok = self.from.as_ref().is_none_or(|l| l.iter().any(|n| *n == f.from_peer));
        let any_cidr = |l: &Option<Vec<Option<MCidr>>>, ip| l.as_ref().is_none_or(|l| l.iter().any(|c| model_contains(c.as_ref().unwrap(), ip)));
        let port_ok = self.ports.as_ref().is_none_or(|l| l.iter().any(|&(a, b)| a <= f.port && f.port <= b));
        from_ok && any_cidr(&self.sources, f.source) && any_cidr(&self.destinations, f.destination) && port_ok
    }
}

#[derive(Debug)]
struct MFlow {
    from_peer: String,
    source: IpAddr,
    destination: IpAddr,
    port: u16,
}

fn model_evaluate<'a>(default: MAction, rules: &'a [MRule], f: &MFlow) -> (MAction, &'a str) {
    for r in rules {
        if r.matches(f) {
            return (r.action.unwrap(), &r.name);
        }
    }
    (default, "default")
}

// ---------------------------------------------------------------- generation

fn action_text(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=31u8)? {
        0..=14 => "allow".into(),
        15..=29 => "deny".into(),
        30 => "Allow".into(),
        _ => String::arbitrary(u)?,
    })
}

fn peer(u: &mut Unstructured) -> Result<String> {
    if u.ratio(1, 16)? {
        String::arbitrary(u)
    } else {
        Ok(PEERS[usize::from(u.int_in_range(0..=3u8)?)].to_string())
    }
}

fn masked(bytes: &mut [u8], prefix: usize) {
    for i in prefix..bytes.len() * 8 {
        bytes[i / 8] &= !(0x80 >> (i % 8));
    }
}

/// A CIDR's text; valid ones are remembered in `networks` so flows can be drawn inside them.
fn cidr_text(u: &mut Unstructured, networks: &mut Vec<(IpAddr, usize)>) -> Result<String> {
    let text = match u.int_in_range(0..=15u8)? {
        0..=5 => {
            let mut b: [u8; 4] = u.arbitrary()?;
            let p = usize::from(u.int_in_range(0..=32u8)?);
            masked(&mut b, p);
            networks.push((IpAddr::V4(Ipv4Addr::from(b)), p));
            format!("{}/{p}", Ipv4Addr::from(b))
        }
        6..=10 => {
            let mut b: [u8; 16] = u.arbitrary()?;
            let p = usize::from(u.int_in_range(0..=128u8)?);
            masked(&mut b, p);
            networks.push((IpAddr::V6(Ipv6Addr::from(b)), p));
            format!("{}/{p}", Ipv6Addr::from(b))
        }
        11 => {
            // ::ffff:a.b.c.d/96+: an IPv6 block that covers IPv4-mapped addresses.
            let mut b = [0u8; 16];
            b[10] = 0xff;
            b[11] = 0xff;
            let v4: [u8; 4] = u.arbitrary()?;
            b[12..].copy_from_slice(&v4);
            let p = usize::from(u.int_in_range(80..=128u8)?);
            masked(&mut b, p);
            networks.push((IpAddr::V6(Ipv6Addr::from(b)), p));
            format!("{}/{p}", Ipv6Addr::from(b))
        }
        12 => {
            // Host bits possibly set, prefix possibly too long.
            let b: [u8; 4] = u.arbitrary()?;
            format!("{}/{}", Ipv4Addr::from(b), u.arbitrary::<u8>()?)
        }
        13 => {
            let b: [u8; 16] = u.arbitrary()?;
            format!("{}/{}", Ipv6Addr::from(b), u.arbitrary::<u8>()?)
        }
        _ => String::arbitrary(u)?,
    };
    Ok(text)
}

enum FieldShape {
    Omitted,
    Null,
    List,
}

fn field_shape(u: &mut Unstructured) -> Result<FieldShape> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => FieldShape::Omitted,
        1 => FieldShape::Null,
        _ => FieldShape::List,
    })
}

/// A list field: omitted, null, or a list (sometimes empty) of `item`s; returns the model's view.
fn list_field<T>(
    u: &mut Unstructured,
    obj: &mut Map<String, Value>,
    key: &str,
    mut item: impl FnMut(&mut Unstructured) -> Result<(Value, T)>,
) -> Result<Option<Vec<T>>> {
    match field_shape(u)? {
        FieldShape::Omitted => Ok(None),
        FieldShape::Null => {
            obj.insert(key.into(), Value::Null);
            Ok(None)
        }
        FieldShape::List => {
            let n = u.int_in_range(0..=4u8)?;
            let mut values = Vec::new();
            let mut model = Vec::new();
            for _ in 0..n {
                let (v, m) = item(u)?;
                values.push(v);
                model.push(m);
            }
            obj.insert(key.into(), Value::Array(values));
            Ok(Some(model))
        }
    }
}

/// A port pair: its JSON, and Some((a, b)) if it fits `[u16; 2]`.
fn port_pair(u: &mut Unstructured) -> Result<(Value, Option<(u16, u16)>)> {
    Ok(match u.int_in_range(0..=15u8)? {
        0..=9 => {
            let a = u.int_in_range(1..=65535u16)?;
            let b = if u.ratio(1, 2)? { a } else { u.arbitrary()? };
            (Value::from(vec![a, b]), Some((a, b)))
        }
        10..=12 => {
            let (a, b): (u16, u16) = u.arbitrary()?;
            (Value::from(vec![a, b]), Some((a, b)))
        }
        13 => {
            let (a, b): (u32, u32) = u.arbitrary()?;
            let fits = match (u16::try_from(a), u16::try_from(b)) {
                (Ok(a), Ok(b)) => Some((a, b)),
                _ => None,
            };
            (Value::from(vec![a, b]), fits)
        }
        14 => {
            let v: Vec<u16> = (0..u.int_in_range(0..=3u8)?).map(|_| u.arbitrary()).collect::<Result<_>>()?;
            let fits = (v.len() == 2).then(|| (v[0], v[1]));
            (Value::from(v), fits)
        }
        _ => (Value::from("80"), None),
    })
}

fn flow_ip(u: &mut Unstructured, networks: &[(IpAddr, usize)]) -> Result<IpAddr> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => IpAddr::V4(Ipv4Addr::from(u.arbitrary::<[u8; 4]>()?)),
        1 => IpAddr::V6(Ipv6Addr::from(u.arbitrary::<[u8; 16]>()?)),
        2 => IpAddr::V6(Ipv4Addr::from(u.arbitrary::<[u8; 4]>()?).to_ipv6_mapped()),
        _ if networks.is_empty() => IpAddr::V4(Ipv4Addr::new(198, 19, 1, 10)),
        _ => {
            // Inside (or, flipping one bit of the prefix, just outside) a policy CIDR.
            let (net, prefix) = networks[u.choose_index(networks.len())?];
            let host: u128 = u.arbitrary()?;
            let flip = u.ratio(1, 4)? && prefix > 0;
            let flip_bit = if flip { u.choose_index(prefix)? } else { 0 };
            let set = |bytes: &mut [u8]| {
                let width = bytes.len() * 8;
                for i in prefix..width {
                    let on = (host >> (i % 128)) & 1 == 1;
                    if on {
                        bytes[i / 8] |= 0x80 >> (i % 8);
                    }
                }
                if flip {
                    bytes[flip_bit / 8] ^= 0x80 >> (flip_bit % 8);
                }
            };
            match net {
                IpAddr::V4(a) => {
                    let mut b = a.octets();
                    set(&mut b);
                    let ip = Ipv4Addr::from(b);
                    if u.ratio(1, 4)? { IpAddr::V6(ip.to_ipv6_mapped()) } else { IpAddr::V4(ip) }
                }
                IpAddr::V6(a) => {
                    let mut b = a.octets();
                    set(&mut b);
                    IpAddr::V6(Ipv6Addr::from(b))
                }
            }
        }
    })
}

// ---------------------------------------------------------------- the check

fn run(u: &mut Unstructured) -> Result<()> {
    let mut networks = Vec::new();
    let mut fits = true; // does the JSON fit PolicyJson?
    let mut top = Map::new();
    let default = action_text(u)?;
    top.insert("default".into(), Value::from(default.clone()));
    let mut rules_json = Vec::new();
    let mut rules = Vec::new();
    for i in 0..u.int_in_range(0..=8u8)? {
        let mut obj = Map::new();
        let name = if u.ratio(1, 8)? { String::arbitrary(u)? } else { format!("rules[{i}]") };
        obj.insert("name".into(), Value::from(name.clone()));
        let action = action_text(u)?;
        obj.insert("action".into(), Value::from(action.clone()));
        let from = list_field(u, &mut obj, "from", |u| peer(u).map(|p| (Value::from(p.clone()), p)))?;
        let sources = list_field(u, &mut obj, "sourceCidrs", |u| {
            cidr_text(u, &mut networks).map(|t| (Value::from(t.clone()), model_cidr(&t)))
        })?;
        let destinations = list_field(u, &mut obj, "destinationCidrs", |u| {
            cidr_text(u, &mut networks).map(|t| (Value::from(t.clone()), model_cidr(&t)))
        })?;
        let ports = list_field(u, &mut obj, "ports", port_pair)?;
        let ports = match ports {
            None => None,
            Some(l) => {
                if l.iter().any(Option::is_none) {
                    fits = false;
                }
                Some(l.into_iter().flatten().collect())
            }
        };
        if u.ratio(1, 64)? {
            obj.insert("port".into(), Value::from(22));
            fits = false;
        }
        rules_json.push(Value::Object(obj));
        rules.push(MRule { name, action: model_action(&action), from, sources, destinations, ports });
    }
    top.insert("rules".into(), Value::Array(rules_json));
    if u.ratio(1, 64)? {
        top.insert("defualt".into(), Value::from("deny"));
        fits = false;
    }
    let text = serde_json::to_string(&Value::Object(top)).unwrap();

    let parsed = serde_json::from_str::<PolicyJson>(&text);
    assert_eq!(parsed.is_ok(), fits, "PolicyJson from {text}: {parsed:?}");
    let Ok(json) = parsed else { return Ok(()) };

    let table = PolicyTable::compile(&json);
    let model_default = model_action(&default);
    let valid = model_default.is_some() && rules.iter().all(MRule::valid);
    match &table {
        Ok(_) => assert!(valid, "compiled, the model refuses it: {text}"),
        Err(e) => {
            assert!(!valid, "refused ({e}), the model accepts it: {text}");
            assert!(e.starts_with("policy."), "message does not name the key: {e}");
        }
    }
    let Ok(table) = table else { return Ok(()) };

    for _ in 0..u.int_in_range(1..=16u8)? {
        let f = MFlow { from_peer: peer(u)?, source: flow_ip(u, &networks)?, destination: flow_ip(u, &networks)?, port: u.arbitrary()? };
        let d = table.evaluate(&PolicyFlow { from_peer: &f.from_peer, source: f.source, destination: f.destination, port: f.port });
        let (action, rule) = model_evaluate(model_default.unwrap(), &rules, &f);
        let action = match action {
            MAction::Allow => Action::Allow,
            MAction::Deny => Action::Deny,
        };
        assert_eq!((d.action, d.rule), (action, rule), "flow {f:?} against {text}");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});
