//! Step 2b, policy: may this flow pass? The control plane compiles the config's ordered
//! rules (daemon/config/policy-format.ts) into the table pushed here; the first matching
//! rule wins, else the default. The sending host asks before a stream is opened, the
//! receiving host before it connects anywhere (README "Policy").
use crate::addr::Cidr;
use serde::Deserialize;
use std::net::IpAddr;

#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyJson {
    pub default: String,
    pub rules: Vec<RuleJson>,
}

#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleJson {
    pub name: String,
    pub action: String,
    pub from: Option<Vec<String>>,
    pub source_cidrs: Option<Vec<String>>,
    pub destination_cidrs: Option<Vec<String>>,
    /// Inclusive ranges `[first, last]`.
    pub ports: Option<Vec<[u16; 2]>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// One rule; a match field that is `None` was omitted and matches anything.
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    action: Action,
    from: Option<Vec<String>>,
    sources: Option<Vec<Cidr>>,
    destinations: Option<Vec<Cidr>>,
    ports: Option<Vec<(u16, u16)>>,
}

#[derive(Debug, Clone)]
pub struct PolicyTable {
    default: Action,
    rules: Vec<Rule>,
}

/// The facts of one flow, the same on the sending and the receiving host.
#[derive(Debug, Clone, Copy)]
pub struct PolicyFlow<'a> {
    /// Receiving host: the peer whose certificate it verified; sending host: its own node name.
    pub from_peer: &'a str,
    pub source: IpAddr,
    pub destination: IpAddr,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    pub action: Action,
    /// The matching rule's name, or "default".
    pub rule: &'a str,
}

fn action(s: &str, key: &str) -> Result<Action, String> {
    match s {
        "allow" => Ok(Action::Allow),
        "deny" => Ok(Action::Deny),
        other => Err(format!("{key}: {other:?} is neither allow nor deny")),
    }
}

impl PolicyTable {
    pub fn allow_all() -> Self {
        PolicyTable {
            default: Action::Allow,
            rules: Vec::new(),
        }
    }

    pub fn compile(json: &PolicyJson) -> Result<Self, String> {
        let mut rules = Vec::with_capacity(json.rules.len());
        for (i, r) in json.rules.iter().enumerate() {
            let key = format!("policy.rules[{i}]");
            let cidrs = |list: &Option<Vec<String>>,
                         field: &str|
             -> Result<Option<Vec<Cidr>>, String> {
                list.as_ref()
                    .map(|l| {
                        l.iter()
                            .map(|c| c.parse::<Cidr>().map_err(|e| format!("{key}.{field}: {e}")))
                            .collect()
                    })
                    .transpose()
            };
            let ports = match &r.ports {
                None => None,
                Some(list) => Some(
                    list.iter()
                        .map(|&[a, b]| {
                            if a <= b {
                                Ok((a, b))
                            } else {
                                Err(format!("{key}.ports: {a}-{b} is empty"))
                            }
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            rules.push(Rule {
                name: r.name.clone(),
                action: action(&r.action, &format!("{key}.action"))?,
                from: r.from.clone(),
                sources: cidrs(&r.source_cidrs, "sourceCidrs")?,
                destinations: cidrs(&r.destination_cidrs, "destinationCidrs")?,
                ports,
            });
        }
        Ok(PolicyTable {
            default: action(&json.default, "policy.default")?,
            rules,
        })
    }

    /// First matching rule wins; no match: the default action.
    pub fn evaluate(&self, flow: &PolicyFlow<'_>) -> Decision<'_> {
        for r in &self.rules {
            if r.matches(flow) {
                return Decision {
                    action: r.action,
                    rule: &r.name,
                };
            }
        }
        Decision {
            action: self.default,
            rule: "default",
        }
    }
}

impl Rule {
    fn matches(&self, f: &PolicyFlow<'_>) -> bool {
        if let Some(from) = &self.from {
            if !from.iter().any(|n| n == f.from_peer) {
                return false;
            }
        }
        if let Some(s) = &self.sources {
            if !s.iter().any(|c| c.contains(f.source)) {
                return false;
            }
        }
        if let Some(d) = &self.destinations {
            if !d.iter().any(|c| c.contains(f.destination)) {
                return false;
            }
        }
        if let Some(p) = &self.ports {
            if !p.iter().any(|&(a, b)| f.port >= a && f.port <= b) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod vs_typescript;

#[cfg(test)]
mod tests {
    use super::*;

    fn table(json: &str) -> PolicyTable {
        PolicyTable::compile(&serde_json::from_str(json).unwrap()).unwrap()
    }

    fn flow<'a>(from: &'a str, src: &str, dst: &str, port: u16) -> PolicyFlow<'a> {
        PolicyFlow {
            from_peer: from,
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn first_match_wins_then_default() {
        let t = table(
            r#"{"default":"deny","rules":[
              {"name":"no-ssh","action":"deny","from":null,"sourceCidrs":null,"destinationCidrs":null,"ports":[[22,22]]},
              {"name":"web","action":"allow","from":["host-1"],"sourceCidrs":["198.19.1.0/24"],"destinationCidrs":["198.19.2.0/24"],"ports":[[80,80],[8000,8999]]}
            ]}"#,
        );
        let d = t.evaluate(&flow("host-1", "198.19.1.5", "198.19.2.5", 8080));
        assert_eq!((d.action, d.rule), (Action::Allow, "web"));
        let d = t.evaluate(&flow("host-1", "198.19.1.5", "198.19.2.5", 22));
        assert_eq!((d.action, d.rule), (Action::Deny, "no-ssh"));
        let d = t.evaluate(&flow("host-3", "198.19.1.5", "198.19.2.5", 80));
        assert_eq!((d.action, d.rule), (Action::Deny, "default"));
        let d = t.evaluate(&flow("host-1", "198.19.9.5", "198.19.2.5", 80));
        assert_eq!(d.rule, "default");
    }

    #[test]
    fn bad_tables_are_refused() {
        let bad = |j: &str| PolicyTable::compile(&serde_json::from_str(j).unwrap()).unwrap_err();
        assert!(bad(r#"{"default":"maybe","rules":[]}"#).contains("policy.default"));
        assert!(bad(r#"{"default":"allow","rules":[{"name":"r","action":"allow","from":null,"sourceCidrs":["1.2.3.4/8"],"destinationCidrs":null,"ports":null}]}"#).contains("sourceCidrs"));
        assert!(bad(r#"{"default":"allow","rules":[{"name":"r","action":"allow","from":null,"sourceCidrs":null,"destinationCidrs":null,"ports":[[9,8]]}]}"#).contains("ports"));
    }
}
