//! The two rustls verifiers (client and server role) of a tunnel: webpki for the chain, then
//! the SPIFFE/leaf check (leaf.rs), and the mapping of their failures to refusals and alerts.
use super::leaf::{
    eku_refusal, expired, is_ca_basic_constraints, is_host_name, is_trust_domain, json_string,
    judge_leaf, not_yet_valid, read_leaf, unparseable, LeafFacts,
};
use super::{refusal, PeerId, Refusal, Verdict};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as TlsError, RootCertStore,
    SignatureScheme,
};
use std::fmt;
use std::sync::Arc;

/// What both verifiers decide: trust domain, expected host, and where the outcome goes.
#[derive(Debug)]
pub(super) struct PeerRule {
    trust_domain: String,
    expected: String,
    pub(super) verdict: Verdict,
}

impl PeerRule {
    pub(super) fn new(trust_domain: &str, expected_peer: &str) -> Result<PeerRule, String> {
        if !is_trust_domain(trust_domain) {
            return Err(format!(
                "invalid trust domain {}",
                json_string(trust_domain)
            ));
        }
        if !is_host_name(expected_peer) {
            return Err(format!("invalid host name {}", json_string(expected_peer)));
        }
        Ok(PeerRule {
            trust_domain: trust_domain.to_string(),
            expected: expected_peer.to_string(),
            verdict: Verdict::default(),
        })
    }

    /// Parse, chain (`chain` runs webpki), identity; records the outcome in the verdict.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        now: UnixTime,
        chain: impl FnOnce(&ParsedCertificate<'_>) -> Result<(), TlsError>,
    ) -> Result<(), TlsError> {
        match self.judge(end_entity, now, chain) {
            Ok(peer) => {
                self.verdict.put(Ok(peer));
                Ok(())
            }
            Err((refusal, err)) => {
                self.verdict.put(Err(refusal));
                Err(err)
            }
        }
    }

    fn judge(
        &self,
        end_entity: &CertificateDer<'_>,
        now: UnixTime,
        chain: impl FnOnce(&ParsedCertificate<'_>) -> Result<(), TlsError>,
    ) -> Result<PeerId, (Refusal, TlsError)> {
        let now_unix = unix_secs(now);
        let bad_encoding = || TlsError::InvalidCertificate(CertificateError::BadEncoding);
        let leaf = read_leaf(end_entity.as_ref()).map_err(|m| (unparseable(&m), bad_encoding()))?;
        let parsed = ParsedCertificate::try_from(end_entity)
            .map_err(|e| (unparseable(&webpki_cause(&e)), bad_encoding()))?;
        if let Err(err) = chain(&parsed) {
            let refused = chain_refusal(&err, &leaf);
            // webpki's error is kept (it names the cause and picks the alert), except the
            // catch-all `Other` behind a leaf code: that code's error, so e.g. every `is_ca`
            // sends the same alert.
            let err = match err {
                TlsError::InvalidCertificate(CertificateError::Other(_))
                    if refused.code != refusal::UNTRUSTED_CHAIN =>
                {
                    TlsError::InvalidCertificate(certificate_error(refused.code))
                }
                err => err,
            };
            return Err((refused, err));
        }
        judge_leaf(&leaf, &self.trust_domain, Some(&self.expected), now_unix).map_err(|r| {
            let err = TlsError::InvalidCertificate(certificate_error(r.code));
            (r, err)
        })
    }
}

/// The client role's verifier of the server's certificate.
pub(super) struct PeerServerVerifier {
    pub(super) roots: Arc<RootCertStore>,
    pub(super) algs: WebPkiSupportedAlgorithms,
    pub(super) rule: PeerRule,
}

impl fmt::Debug for PeerServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerServerVerifier")
            .field("rule", &self.rule)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        // The name check is ours (the URI SAN), so only the chain goes to webpki: this verifies
        // path, signatures, validity, basicConstraints and the serverAuth EKU, never a DNS name.
        self.rule.verify(end_entity, now, |parsed| {
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                parsed,
                &self.roots,
                intermediates,
                now,
                self.algs.all,
            )
        })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The server role's verifier of the client's certificate: webpki's (mandatory client auth)
/// for the chain, then the identity.
pub(super) struct PeerClientVerifier {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) rule: PeerRule,
}

impl fmt::Debug for PeerClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerClientVerifier")
            .field("rule", &self.rule)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for PeerClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        self.rule.verify(end_entity, now, |_| {
            self.inner
                .verify_client_cert(end_entity, intermediates, now)
                .map(|_| ())
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn tls12_refused() -> TlsError {
    TlsError::General("qmesh tunnels use TLS 1.3 only".to_string())
}

/// The rustls error (hence the TLS alert) for an identity refusal after a good chain.
fn certificate_error(code: &str) -> CertificateError {
    match code {
        refusal::UNPARSEABLE => CertificateError::BadEncoding,
        refusal::IS_CA | refusal::NO_DIGITAL_SIGNATURE | refusal::EKU_LACKS_TLS_AUTH => {
            CertificateError::InvalidPurpose
        }
        refusal::EXPIRED => CertificateError::Expired,
        refusal::NOT_YET_VALID => CertificateError::NotValidYet,
        refusal::UNTRUSTED_CHAIN => CertificateError::UnknownIssuer,
        _ => CertificateError::ApplicationVerificationFailure,
    }
}

/// Turns webpki's verdict on the chain into a refusal. The leaf properties webpki checks before
/// looking for an issuer (validity, basicConstraints, EKU) keep the codes of [`check_leaf`].
fn chain_refusal(err: &TlsError, leaf: &LeafFacts) -> Refusal {
    if let TlsError::InvalidCertificate(ce) = err {
        match ce {
            CertificateError::ExpiredContext { not_after, .. } => {
                return expired(unix_secs(*not_after));
            }
            CertificateError::Expired => return expired(leaf.not_after),
            CertificateError::NotValidYetContext { not_before, .. } => {
                return not_yet_valid(unix_secs(*not_before));
            }
            CertificateError::NotValidYet => return not_yet_valid(leaf.not_before),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                if let Some(r) = eku_refusal(leaf) {
                    return r;
                }
            }
            // webpki's CaUsedAsEndEntity and EmptyEkuExtension arrive as `Other`; on a leaf
            // they are exactly what these leaf facts say.
            CertificateError::Other(_) => {
                if leaf.is_ca {
                    return is_ca_basic_constraints();
                }
                if leaf.eku.as_ref().is_some_and(Vec::is_empty) {
                    if let Some(r) = eku_refusal(leaf) {
                        return r;
                    }
                }
            }
            _ => {}
        }
    }
    Refusal {
        code: refusal::UNTRUSTED_CHAIN,
        reason: format!(
            "peer certificate does not chain to tls.ca: {}",
            webpki_cause(err)
        ),
    }
}

/// Names the webpki error inside a rustls error ("UnknownIssuer", "CaUsedAsEndEntity", ...).
fn webpki_cause(err: &TlsError) -> String {
    match err {
        TlsError::InvalidCertificate(CertificateError::Other(other)) => other.to_string(),
        TlsError::InvalidCertificate(ce) => format!("{ce:?}"),
        other => other.to_string(),
    }
}

fn unix_secs(t: UnixTime) -> i64 {
    i64::try_from(t.as_secs()).unwrap_or(i64::MAX)
}
