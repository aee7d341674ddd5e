//! check_leaf alone, and the name, trust domain and date helpers.
use super::super::leaf::iso_utc;
use super::*;

// ---- 4. check_leaf ----------------------------------------------------------------------

fn code(r: Result<PeerId, Refusal>) -> &'static str {
    r.err().map_or("ok", |r| r.code)
}

#[test]
fn check_leaf_refuses_what_does_not_parse() {
    let ca = Ca::new("qmesh test CA");
    let good = ca.issue("a", |_| {}).der;
    let mut trailing = good.clone();
    trailing.push(0);
    for der in [
        &b""[..],
        b"not a certificate",
        &good[..good.len() - 1],
        &trailing,
    ] {
        let r = check_leaf(der, TD, None, 1_700_000_000).unwrap_err();
        assert_eq!(r.code, refusal::UNPARSEABLE);
        assert!(
            r.reason.starts_with("peer certificate cannot be parsed: "),
            "{}",
            r.reason
        );
    }
}

#[test]
fn check_leaf_accepts_a_host_and_checks_the_name_only_when_asked() {
    let ca = Ca::new("qmesh test CA");
    let der = ca.issue("a", |_| {}).der;
    let now = 1_700_000_000;
    let id = check_leaf(&der, TD, None, now).unwrap();
    assert_eq!(
        (id.name.as_str(), id.uri.as_str()),
        ("a", "spiffe://mesh.test/host/a")
    );
    assert_eq!(check_leaf(&der, TD, Some("a"), now), Ok(id));
    let r = check_leaf(&der, TD, Some("b"), now).unwrap_err();
    assert_eq!(
        (r.code, r.reason.as_str()),
        (refusal::NAME_MISMATCH, "peer is host a, expected b")
    );
    assert_eq!(
        code(check_leaf(&der, "other.test", None, now)),
        refusal::FOREIGN_TRUST_DOMAIN
    );
    assert_eq!(
        code(check_leaf(&der, "mesh.tes", None, now)),
        refusal::FOREIGN_TRUST_DOMAIN
    );
}

#[test]
fn check_leaf_validity_bounds_are_inclusive() {
    let ca = Ca::new("qmesh test CA");
    let der = ca.issue("a", |_| {}).der;
    let (nb, na) = (1_577_836_800, 3_786_912_000);
    assert_eq!(code(check_leaf(&der, TD, None, nb)), "ok");
    assert_eq!(code(check_leaf(&der, TD, None, na)), "ok");
    let r = check_leaf(&der, TD, None, na + 1).unwrap_err();
    assert_eq!(r.code, refusal::EXPIRED);
    assert_eq!(
        r.reason,
        "peer certificate expired at 2090-01-01T00:00:00.000Z; reissue it with `qmesh pki issue`"
    );
    let r = check_leaf(&der, TD, None, nb - 1).unwrap_err();
    assert_eq!(r.code, refusal::NOT_YET_VALID);
    assert_eq!(
        r.reason,
        "peer certificate is not valid before 2020-01-01T00:00:00.000Z; check both hosts' clocks"
    );
}

#[test]
fn check_leaf_rules_in_order() {
    let ca = Ca::new("qmesh test CA");
    let now = 1_700_000_000;
    let check =
        |t: &dyn Fn(&mut CertificateParams)| check_leaf(&ca.issue("a", t).der, TD, Some("a"), now);
    // Each wrong leaf of the handshake tests, by check_leaf alone (time: expired at `now`).
    for (what, want, tweak) in WRONG {
        assert_eq!(code(check(&|p| tweak(p, "a"))), *want, "{what}");
    }
    // Earlier rules win: a CA leaf with a foreign ID, an expired leaf of another host.
    assert_eq!(
        code(check(&|p| {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.subject_alt_names = vec![uri("spiffe://other.test/host/a")];
        })),
        refusal::IS_CA
    );
    assert_eq!(
        code(check(&|p| {
            p.not_after = date_time_ymd(2001, 1, 1);
            p.subject_alt_names = vec![uri("spiffe://mesh.test/host/c")];
        })),
        refusal::NAME_MISMATCH
    );
    // An EKU is optional; when present it needs both, and anyExtendedKeyUsage is not enough.
    assert_eq!(code(check(&|p| p.extended_key_usages.clear())), "ok");
    assert_eq!(
        code(check(&|p| p.extended_key_usages = vec![Eku::Any])),
        refusal::EKU_LACKS_TLS_AUTH
    );
    let r = check(&|p| {
        p.extended_key_usages = vec![
            Eku::ClientAuth,
            Eku::CodeSigning,
            Eku::Other(vec![1, 2, 3, 4]),
        ]
    })
    .unwrap_err();
    assert_eq!(
        r.reason,
        "peer certificate's extendedKeyUsage [1.3.6.1.5.5.7.3.2, 1.3.6.1.5.5.7.3.3, 1.2.3.4] lacks serverAuth or clientAuth; every host needs both"
    );
    let r = check(&|p| p.subject_alt_names.clear()).unwrap_err();
    assert_eq!(
        r.reason,
        "peer certificate has 0 URI SANs; a host certificate has exactly one"
    );
    // Extra digitalSignature-compatible usages and other SAN kinds are fine.
    assert_eq!(
        code(check(&|p| {
            p.key_usages.push(Ku::KeyEncipherment);
            p.subject_alt_names
                .push(SanType::DnsName("a".try_into().unwrap()));
        })),
        "ok"
    );
}

#[test]
fn check_leaf_wants_exactly_a_host_spiffe_id() {
    let ca = Ca::new("qmesh test CA");
    let with_uri = |u: &str| {
        let u = u.to_string();
        check_leaf(
            &ca.issue("a", move |p| p.subject_alt_names = vec![uri(&u)])
                .der,
            TD,
            None,
            1_700_000_000,
        )
    };
    let long = format!("spiffe://mesh.test/host/{}", "a".repeat(64));
    for bad in [
        "spiffe://mesh.test/host/A",
        "spiffe://mesh.test/host/a/b",
        "spiffe://mesh.test/host/a?x=1",
        "spiffe://mesh.test/host/a#f",
        "spiffe://mesh.test/host/",
        "spiffe://mesh.test/host/-a",
        "spiffe://mesh.test/host/a-",
        "spiffe://mesh.test/Host/a",
        "spiffe://mesh.test//host/a",
        "spiffe:///host/a",
        "spiffe://Mesh.test/host/a",
        "spiffe://user@mesh.test/host/a",
        "spiffe://mesh.test:443/host/a",
        "https://mesh.test/host/a",
        "spiffe://mesh.test/host/a ",
        &long,
    ] {
        assert_eq!(code(with_uri(bad)), refusal::NOT_HOST_SPIFFE_ID, "{bad}");
    }
    let ok63 = format!("spiffe://mesh.test/host/{}", "a".repeat(63));
    for good in [
        "spiffe://mesh.test/host/a-0",
        "spiffe://mesh.test/host/0",
        &ok63,
    ] {
        assert_eq!(code(with_uri(good)), "ok", "{good}");
    }
}

#[test]
fn names_domains_and_dates() {
    for good in ["a", "0", "a-b", "node-01", &"x".repeat(63)] {
        assert!(is_host_name(good), "{good}");
    }
    for bad in ["", "-a", "a-", "A", "a.b", "a_b", "é", &"x".repeat(64)] {
        assert!(!is_host_name(bad), "{bad}");
    }
    for good in ["mesh.test", "a", "a_b-c.d", &"x".repeat(255)] {
        assert!(is_trust_domain(good), "{good}");
    }
    for bad in ["", "Mesh", "a/b", "a:1", &"x".repeat(256)] {
        assert!(!is_trust_domain(bad), "{bad}");
    }
    assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(iso_utc(951_825_845), "2000-02-29T12:04:05.000Z");
    assert_eq!(iso_utc(253_402_300_799), "9999-12-31T23:59:59.000Z");
    assert_eq!(iso_utc(-62_167_219_200), "0000-01-01T00:00:00.000Z");
    assert_eq!(iso_utc(-62_167_219_201), "-000001-12-31T23:59:59.000Z");
    assert_eq!(iso_utc(253_402_300_800), "+010000-01-01T00:00:00.000Z");
}
