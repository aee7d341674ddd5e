//! Handshakes that complete, TLS 1.2, a client without certificate, and quinn.
use super::*;
use rustls::client::ResolvesClientCert;
use rustls::{AlertDescription, SignatureScheme};

// ---- 1. good certificates -------------------------------------------------------------

#[test]
fn good_certificates_complete_the_handshake_both_ways() {
    let ca = Ca::new("qmesh test CA");
    let (a, b) = (ca.host("a"), ca.host("b"));
    let out = handshake(&a, &b);
    assert!(out.client.is_ok(), "{:?}", out.client);
    assert!(out.server.is_ok(), "{:?}", out.server);
    assert_eq!(out.alpn.as_deref(), Some(ALPN));
    assert_eq!(out.version, Some(ProtocolVersion::TLSv1_3));
    let nb = 1_577_836_800; // 2020-01-01
    let na = 3_786_912_000; // 2090-01-01
    assert_eq!(
        out.client_verdict,
        Some(Ok(PeerId {
            name: "b".into(),
            uri: "spiffe://mesh.test/host/b".into(),
            not_before_unix: nb,
            not_after_unix: na,
        }))
    );
    assert_eq!(
        out.server_verdict,
        Some(Ok(PeerId {
            name: "a".into(),
            uri: "spiffe://mesh.test/host/a".into(),
            not_before_unix: nb,
            not_after_unix: na,
        }))
    );
}

#[test]
fn the_tls_server_name_and_dns_sans_do_not_matter() {
    let ca = Ca::new("qmesh test CA");
    let a = ca.host("a");
    // b's leaf carries a DNS SAN naming another host; the URI SAN is what counts.
    let b = ca.creds(&ca.issue("b", |p| {
        p.subject_alt_names
            .push(SanType::DnsName("c".try_into().unwrap()))
    }));
    let (ccfg, cv) = client_config(&a, TD, "b").unwrap();
    let (scfg, sv) = server_config(&b, TD, "a").unwrap();
    let out = run(ccfg, "unrelated.example", scfg, cv, sv);
    assert!(out.client.is_ok() && out.server.is_ok());
    assert_eq!(peer_name(&out.client_verdict), Some("b"));
}

#[test]
fn configs_are_tls13_only_without_resumption_or_early_data_and_fit_quinn() {
    let ca = Ca::new("qmesh test CA");
    let a = ca.host("a");
    let (ccfg, _) = client_config(&a, TD, "b").unwrap();
    let (scfg, _) = server_config(&a, TD, "b").unwrap();
    assert_eq!(ccfg.alpn_protocols, vec![ALPN.to_vec()]);
    assert_eq!(scfg.alpn_protocols, vec![ALPN.to_vec()]);
    assert!(!ccfg.enable_early_data);
    assert_eq!(scfg.max_early_data_size, 0);
    assert_eq!(scfg.send_tls13_tickets, 0);
    assert!(quinn::crypto::rustls::QuicClientConfig::try_from(ccfg).is_ok());
    assert!(quinn::crypto::rustls::QuicServerConfig::try_from(scfg).is_ok());
}

#[test]
fn server_refuses_a_tls12_client() {
    let ca = Ca::new("qmesh test CA");
    let (a, b) = (ca.host("a"), ca.host("b"));
    let rule = PeerRule::new(TD, "b").unwrap();
    let cv = rule.verdict.clone();
    let verifier = Arc::new(PeerServerVerifier {
        roots: a.roots.clone(),
        algs: a.provider.signature_verification_algorithms,
        rule,
    });
    let mut ccfg = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(a.certified.clone())));
    ccfg.alpn_protocols = vec![ALPN.to_vec()];
    let (scfg, sv) = server_config(&b, TD, "a").unwrap();
    let out = run(ccfg, "b", scfg, cv, sv);
    assert!(
        matches!(out.server, Err(TlsError::PeerIncompatible(_))),
        "{:?}",
        out.server
    );
    assert!(out.client.is_err());
    assert_eq!((out.client_verdict, out.server_verdict), (None, None));
}

// ---- 3. no client certificate ---------------------------------------------------------

#[derive(Debug)]
struct NoCert;
impl ResolvesClientCert for NoCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        None
    }
    fn has_certs(&self) -> bool {
        false
    }
}

#[test]
fn server_refuses_a_client_without_certificate() {
    let ca = Ca::new("qmesh test CA");
    let (a, b) = (ca.host("a"), ca.host("b"));
    let (mut ccfg, cv) = client_config(&a, TD, "b").unwrap();
    ccfg.client_auth_cert_resolver = Arc::new(NoCert);
    let (scfg, sv) = server_config(&b, TD, "a").unwrap();
    let out = run(ccfg, "b", scfg, cv, sv);
    assert_eq!(out.server, Err(TlsError::NoCertificatesPresented));
    assert_eq!(
        out.client,
        Err(TlsError::AlertReceived(
            AlertDescription::CertificateRequired
        ))
    );
    assert_eq!(out.server_verdict, None);
    assert_eq!(peer_name(&out.client_verdict), Some("b"));
}

// ---- through quinn ------------------------------------------------------------------------

async fn quinn_dial(
    a: &Credentials,
    b: &Credentials,
    server_expects: &str,
) -> (Result<(), String>, Result<(), String>, Verdict, Verdict) {
    use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
    let (scfg, sv) = server_config(b, TD, server_expects).unwrap();
    let scfg =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(scfg).unwrap()));
    let server = quinn::Endpoint::server(scfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let incoming = server.accept().await.ok_or("no incoming")?;
        let conn = incoming.await.map_err(|e| e.to_string())?;
        let alpn = conn.handshake_data().and_then(|d| {
            d.downcast::<quinn::crypto::rustls::HandshakeData>()
                .ok()?
                .protocol
        });
        if alpn.as_deref() != Some(ALPN) {
            return Err(format!("alpn {alpn:?}"));
        }
        conn.close(0u32.into(), b"");
        server.wait_idle().await;
        Ok(())
    });
    let (ccfg, cv) = client_config(a, TD, "b").unwrap();
    let ccfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(ccfg).unwrap()));
    let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let dialled = match client.connect_with(ccfg, addr, "b").unwrap().await {
        Err(e) => Err(e.to_string()),
        // The client may finish its half before the server has judged the client's leaf.
        Ok(conn) => match conn.closed().await {
            quinn::ConnectionError::ApplicationClosed(_) => Ok(()),
            e => Err(e.to_string()),
        },
    };
    let accepted = tokio::time::timeout(std::time::Duration::from_secs(10), accept)
        .await
        .unwrap()
        .unwrap();
    (dialled, accepted, cv, sv)
}

#[tokio::test]
async fn quinn_handshake_with_these_configs() {
    let ca = Ca::new("qmesh test CA");
    let (a, b) = (ca.host("a"), ca.host("b"));
    let (dialled, accepted, cv, sv) = quinn_dial(&a, &b, "a").await;
    assert_eq!(dialled, Ok(()));
    assert_eq!(accepted, Ok(()));
    assert_eq!(peer_name(&cv.take()), Some("b"));
    assert_eq!(peer_name(&sv.take()), Some("a"));

    // The server expected host "c" at that address: refused, and the verdict says why.
    let (dialled, accepted, cv, sv) = quinn_dial(&a, &b, "c").await;
    assert!(
        dialled.is_err() && accepted.is_err(),
        "{dialled:?} {accepted:?}"
    );
    assert_eq!(peer_name(&cv.take()), Some("b"));
    assert_eq!(
        refused(&sv.take()).map(|r| r.code),
        Some(refusal::NAME_MISMATCH)
    );
}
