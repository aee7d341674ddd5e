//! Each wrong leaf refused on both roles, with its code, sentence, error and alert.
use super::*;
use rustls::AlertDescription;
use rustls::CertificateError;

// ---- 2. each refusal, on both roles ---------------------------------------------------

/// The server refuses client "a" presenting `bad_a`; the client had accepted the server.
fn assert_server_refuses(ca: &Ca, bad_a: &Credentials, code: &str, what: &str) -> Refusal {
    let out = handshake(bad_a, &ca.host("b"));
    assert!(
        matches!(out.server, Err(TlsError::InvalidCertificate(_))),
        "{what}: server {:?}",
        out.server
    );
    assert!(
        matches!(out.client, Err(TlsError::AlertReceived(_))),
        "{what}: client {:?}",
        out.client
    );
    assert_eq!(peer_name(&out.client_verdict), Some("b"), "{what}");
    let r = refused(&out.server_verdict).unwrap_or_else(|| panic!("{what}: no refusal"));
    assert_eq!(r.code, code, "{what}: {}", r.reason);
    r.clone()
}

/// The client refuses server "b" presenting `bad_b`; the server never saw a client cert.
fn assert_client_refuses(ca: &Ca, bad_b: &Credentials, code: &str, what: &str) -> Refusal {
    let out = handshake(&ca.host("a"), bad_b);
    assert!(
        matches!(out.client, Err(TlsError::InvalidCertificate(_))),
        "{what}: client {:?}",
        out.client
    );
    assert!(
        matches!(out.server, Err(TlsError::AlertReceived(_))),
        "{what}: server {:?}",
        out.server
    );
    assert_eq!(out.server_verdict, None, "{what}");
    let r = refused(&out.client_verdict).unwrap_or_else(|| panic!("{what}: no refusal"));
    assert_eq!(r.code, code, "{what}: {}", r.reason);
    r.clone()
}

#[test]
fn server_role_refuses_each_wrong_client_leaf_with_its_code() {
    let ca = Ca::new("qmesh test CA");
    for (what, code, tweak) in WRONG {
        let bad = ca.creds(&ca.issue("a", |p| tweak(p, "a")));
        assert_server_refuses(&ca, &bad, code, what);
    }
}

#[test]
fn client_role_refuses_each_wrong_server_leaf_with_its_code() {
    let ca = Ca::new("qmesh test CA");
    for (what, code, tweak) in WRONG {
        let bad = ca.creds(&ca.issue("b", |p| tweak(p, "b")));
        assert_client_refuses(&ca, &bad, code, what);
    }
}

#[test]
fn refusals_carry_the_typescript_sentences() {
    let ca = Ca::new("qmesh test CA");
    let bad = |t: Tweak| ca.creds(&ca.issue("a", |p| t(p, "a")));
    let reason = |(_, code, t): &(&str, &str, Tweak)| {
        assert_server_refuses(&ca, &bad(*t), code, "sentence").reason
    };
    assert_eq!(
        reason(&WRONG[0]),
        "peer certificate is a CA (basicConstraints CA:true); hosts must present a leaf from `qmesh pki issue`"
    );
    assert_eq!(
        reason(&WRONG[1]),
        "peer certificate may sign certificates (keyUsage keyCertSign); hosts must present a leaf from `qmesh pki issue`"
    );
    assert_eq!(
        reason(&WRONG[2]),
        "peer certificate lacks keyUsage digitalSignature, which TLS 1.3 needs"
    );
    // Found by webpki on this role (the client's leaf lacks clientAuth), same sentence.
    assert_eq!(
        reason(&WRONG[4]),
        "peer certificate's extendedKeyUsage [1.3.6.1.5.5.7.3.1] lacks serverAuth or clientAuth; every host needs both"
    );
    assert_eq!(
        reason(&WRONG[6]),
        "peer certificate has 2 URI SANs; a host certificate has exactly one"
    );
    assert_eq!(
        reason(&WRONG[8]),
        "peer URI SAN \"spiffe://mesh.test/workload/a\" is not of the form spiffe://<trust-domain>/host/<name>"
    );
    assert_eq!(
        reason(&WRONG[9]),
        "peer spiffe://other.test/host/a belongs to trust domain other.test, not mesh.test"
    );
    assert_eq!(reason(&WRONG[10]), "peer is host c, expected a");
    assert_eq!(
        reason(&WRONG[11]),
        "peer certificate expired at 2001-01-01T00:00:00.000Z; reissue it with `qmesh pki issue`"
    );
    assert_eq!(
        reason(&WRONG[12]),
        "peer certificate is not valid before 2090-01-01T00:00:00.000Z; check both hosts' clocks"
    );
}

#[test]
fn a_leaf_from_another_ca_is_an_untrusted_chain_on_both_roles() {
    let ca = Ca::new("qmesh test CA");
    for other in [Ca::new("someone else's CA"), Ca::new("qmesh test CA")] {
        // The impostor trusts the mesh CA (so it accepts the honest side) but its leaf
        // comes from another CA (a different one, or one with the mesh CA's name).
        let a = ca.creds(&other.issue("a", |_| {}));
        let b = ca.creds(&other.issue("b", |_| {}));
        let r = assert_server_refuses(&ca, &a, refusal::UNTRUSTED_CHAIN, "other CA, server");
        assert!(
            r.reason
                .starts_with("peer certificate does not chain to tls.ca: "),
            "{}",
            r.reason
        );
        let r = assert_client_refuses(&ca, &b, refusal::UNTRUSTED_CHAIN, "other CA, client");
        assert!(
            r.reason
                .starts_with("peer certificate does not chain to tls.ca: "),
            "{}",
            r.reason
        );
    }
    let r = assert_server_refuses(
        &ca,
        &ca.creds(&Ca::new("someone else's CA").issue("a", |_| {})),
        refusal::UNTRUSTED_CHAIN,
        "unknown issuer",
    );
    assert_eq!(
        r.reason,
        "peer certificate does not chain to tls.ca: UnknownIssuer"
    );
}

#[test]
fn chain_comes_before_identity() {
    // A foreign CA's leaf for a foreign trust domain: the chain is what is wrong first.
    let ca = Ca::new("qmesh test CA");
    let other = Ca::new("someone else's CA");
    let a = ca.creds(&other.issue("a", |p| {
        p.subject_alt_names = vec![uri("spiffe://other.test/host/a")]
    }));
    assert_server_refuses(&ca, &a, refusal::UNTRUSTED_CHAIN, "foreign CA and domain");
}

#[test]
fn errors_and_alerts_show_which_layer_refused() {
    use AlertDescription as A;
    let ca = Ca::new("qmesh test CA");
    // (case in WRONG, alert the client receives when the server refuses its leaf)
    for (i, alert) in [
        (0, A::UnsupportedCertificate), // webpki: CaUsedAsEndEntity (chain layer)
        (4, A::UnsupportedCertificate), // webpki: no clientAuth EKU (chain layer)
        (1, A::UnsupportedCertificate), // check_leaf: keyCertSign
        (10, A::AccessDenied),          // check_leaf: name
        (11, A::CertificateExpired),    // webpki: expired
    ] {
        let (what, _, tweak) = WRONG[i];
        let bad = ca.creds(&ca.issue("a", |p| tweak(p, "a")));
        let out = handshake(&bad, &ca.host("b"));
        assert_eq!(out.client, Err(TlsError::AlertReceived(alert)), "{what}");
    }
    let server =
        |t: Tweak| handshake(&ca.creds(&ca.issue("a", |p| t(p, "a"))), &ca.host("b")).server;
    assert_eq!(
        server(WRONG[0].2),
        Err(TlsError::InvalidCertificate(
            CertificateError::InvalidPurpose
        ))
    );
    assert!(matches!(
        server(WRONG[4].2),
        Err(TlsError::InvalidCertificate(
            CertificateError::InvalidPurposeContext { .. }
        ))
    ));
    assert_eq!(
        server(WRONG[10].2),
        Err(TlsError::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure
        ))
    );
    let foreign = ca.creds(&Ca::new("someone else's CA").issue("a", |_| {}));
    let out = handshake(&foreign, &ca.host("b"));
    assert_eq!(
        out.server,
        Err(TlsError::InvalidCertificate(
            CertificateError::UnknownIssuer
        ))
    );
    assert_eq!(out.client, Err(TlsError::AlertReceived(A::UnknownCA)));
}
