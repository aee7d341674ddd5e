//! The data plane's policy table against the TypeScript control plane's own decisions.
//! native/tests/fixtures/policy-cases.json is written by test/unit/policy-fixture.test.ts: policies
//! compiled by the real config parser (daemon/config/policy-format.ts), in the JSON shape
//! buildSnapshot sends here, each with flows and the decision daemon/policy/policy.ts
//! evaluatePolicy gives them. Every one must come out the same from PolicyTable.
//! Regenerate the fixture (after a TypeScript change) with
//!   QMESH_WRITE_POLICY_FIXTURE=1 npx vitest run test/unit/policy-fixture.test.ts
use super::{Action, PolicyFlow, PolicyJson, PolicyTable};
use serde::Deserialize;
use std::net::IpAddr;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    policy: PolicyJson,
    cases: Vec<Case>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    from_peer: String,
    source: String,
    destination: String,
    port: u16,
    action: String,
    rule: String,
}

fn fixture() -> Vec<Entry> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/policy-cases.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("{path} does not parse as [{{ name, policy: PolicyJson, cases }}]: {e}")
    })
}

#[test]
fn rust_policy_table_decides_every_case_as_typescript_does() {
    let entries = fixture();
    assert!(
        entries.len() >= 10,
        "the fixture has only {} policies",
        entries.len()
    );
    let mut mismatches = Vec::new();
    let mut total = 0;
    for e in &entries {
        let table = PolicyTable::compile(&e.policy).unwrap_or_else(|err| {
            panic!(
                "policy {:?}: TypeScript accepted it, Rust refuses it: {err}",
                e.name
            )
        });
        for c in &e.cases {
            total += 1;
            let ip = |s: &str| {
                s.parse::<IpAddr>()
                    .unwrap_or_else(|_| panic!("policy {:?}: {s:?} is not an address", e.name))
            };
            let flow = PolicyFlow {
                from_peer: &c.from_peer,
                source: ip(&c.source),
                destination: ip(&c.destination),
                port: c.port,
            };
            let d = table.evaluate(&flow);
            let action = match d.action {
                Action::Allow => "allow",
                Action::Deny => "deny",
            };
            if (action, d.rule) != (c.action.as_str(), c.rule.as_str()) {
                mismatches.push(format!(
                    "policy {:?}, {c:?}: Rust says {action} by {:?}",
                    e.name, d.rule
                ));
            }
        }
    }
    assert!(total >= 1000, "the fixture has only {total} cases");
    assert!(
        mismatches.is_empty(),
        "{} of {total} cases differ from TypeScript; the first ones:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_fixture_covers_both_actions_and_both_families() {
    let entries = fixture();
    let cases: Vec<&Case> = entries.iter().flat_map(|e| &e.cases).collect();
    let has = |f: &dyn Fn(&Case) -> bool| cases.iter().any(|c| f(c));
    assert!(
        has(&|c| c.action == "allow" && c.rule != "default"),
        "no case allowed by a rule"
    );
    assert!(
        has(&|c| c.action == "deny" && c.rule != "default"),
        "no case denied by a rule"
    );
    assert!(
        has(&|c| c.action == "allow" && c.rule == "default"),
        "no case allowed by the default"
    );
    assert!(
        has(&|c| c.action == "deny" && c.rule == "default"),
        "no case denied by the default"
    );
    assert!(
        has(&|c| c.source.contains(':') && c.rule != "default"),
        "no IPv6 case decided by a rule"
    );
    assert!(
        has(&|c| !c.source.contains(':') && c.rule != "default"),
        "no IPv4 case decided by a rule"
    );
}
