//! TLS identity: rustls configs for both roles of a tunnel and the SPIFFE check of the peer.
//!
//! Every host presents one leaf issued by the mesh CA (`tls.ca`), naming it with exactly one
//! URI SAN `spiffe://<trust-domain>/host/<name>`. Both roles know which peer they talk to (the
//! dialler picked it, the listener knows it from the source address), so both verifiers demand
//! that exact identity. DNS names are never looked at.
//!
//! Order of the checks in a verifier: the leaf must parse, then its chain must verify to the CA
//! (webpki), then [`check_leaf`] decides the identity. webpki itself checks, on the leaf and
//! before looking for its issuer, the validity period, basicConstraints and extendedKeyUsage;
//! those failures are reported with the same codes as [`check_leaf`] (`expired`,
//! `not_yet_valid`, `is_ca`, `eku_lacks_tls_auth`) so a bad leaf gets the same code whichever
//! layer saw it first. Every other chain failure is `untrusted_chain`.
//!
//! The rules, codes and reason sentences are those of daemon/identity/peer-identity.ts.
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as TlsError, RootCertStore,
    SignatureScheme,
};
use std::fmt;
use std::sync::{Arc, Mutex};
use x509_parser::der_parser::asn1_rs::{FromDer, Oid};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_SUBJECT_ALT_NAME,
};

/// The one application protocol of a tunnel, offered and required on both sides.
pub const ALPN: &[u8] = b"qmesh/1";

/// The stable refusal codes (log and count these; match on them in tests).
pub mod refusal {
    pub const UNPARSEABLE: &str = "unparseable";
    pub const IS_CA: &str = "is_ca";
    pub const NO_DIGITAL_SIGNATURE: &str = "no_digital_signature";
    pub const EKU_LACKS_TLS_AUTH: &str = "eku_lacks_tls_auth";
    pub const URI_SAN_COUNT: &str = "uri_san_count";
    pub const NOT_HOST_SPIFFE_ID: &str = "not_host_spiffe_id";
    pub const FOREIGN_TRUST_DOMAIN: &str = "foreign_trust_domain";
    pub const NAME_MISMATCH: &str = "name_mismatch";
    pub const EXPIRED: &str = "expired";
    pub const NOT_YET_VALID: &str = "not_yet_valid";
    /// Only from the verifiers: webpki could not build a valid path to `tls.ca`.
    pub const UNTRUSTED_CHAIN: &str = "untrusted_chain";
}

const SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
const CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";

/// The ring provider every config of the data plane uses. rustls 0.23.48 deprecated
/// `ring::default_provider()` (ring has no post-quantum key exchange); ring is still the
/// provider the crate is built for (quinn's `rustls-ring`), hence the `allow`.
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------------------------------------
// Credentials

/// Parsed PEM material: the mesh CA bundle (trust anchors), this host's chain and key.
/// Cheap to clone (everything is behind `Arc`); build the configs from it per connection.
#[derive(Clone)]
pub struct Credentials {
    roots: Arc<RootCertStore>,
    /// This host's chain (leaf first) with its private key, loaded into the ring provider.
    certified: Arc<CertifiedKey>,
    /// webpki's client-certificate verifier over `roots` (client auth mandatory), built once.
    client_verifier: Arc<dyn ClientCertVerifier>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("roots", &self.roots.len())
            .field("chain", &self.certified.cert.len())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Errors are one-line messages naming the PEM (e.g. "tls.ca: holds no PEM certificate").
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Credentials, String> {
        let provider = crypto_provider();

        let ca = read_certs("tls.ca", ca_pem)?;
        let mut roots = RootCertStore::empty();
        for (i, der) in ca.into_iter().enumerate() {
            roots.add(der).map_err(|e| {
                format!(
                    "tls.ca: certificate {} is not a usable trust anchor: {e}",
                    i + 1
                )
            })?;
        }
        let roots = Arc::new(roots);

        let chain = read_certs("tls.cert", cert_pem)?;
        if let Some(Err(e)) = chain.first().map(ParsedCertificate::try_from) {
            return Err(format!(
                "tls.cert: the first certificate cannot be parsed: {e}"
            ));
        }
        let key = read_key(key_pem)?;
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
            TlsError::InconsistentKeys(_) => {
                "tls.key: does not match the certificate in tls.cert".to_string()
            }
            e => format!("tls.key: cannot be used: {e}"),
        })?;

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| format!("tls.ca: cannot verify client certificates: {e}"))?;

        Ok(Credentials {
            roots,
            certified: Arc::new(certified),
            client_verifier,
            provider,
        })
    }

    /// The DER of this host's own leaf (to compare with what a peer presented).
    pub fn leaf_der(&self) -> &[u8] {
        self.certified.cert.first().map_or(&[], |c| c.as_ref())
    }
}

fn read_certs(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: unreadable PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: holds no PEM certificate"));
    }
    Ok(certs)
}

fn read_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    match rustls_pemfile::private_key(&mut pem.as_bytes()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err("tls.key: holds no PEM private key".to_string()),
        Err(e) => Err(format!("tls.key: unreadable PEM: {e}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Outcomes

/// A refusal of a peer certificate: `code` is one of the stable codes in [`refusal`],
/// `reason` the sentence logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub reason: String,
}

/// The verified peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerId {
    pub name: String,
    pub uri: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

/// Where a verifier writes why it refused (rustls only carries an alert), read by the tunnel
/// code after a failed handshake to log the exact reason. Also records the PeerId on success.
///
/// One verdict belongs to one config, so build one config per connection attempt. It stays
/// `None` when the verifier never ran: the handshake failed before the peer's certificate
/// (e.g. the client sent none: the server fails with `rustls::Error::NoCertificatesPresented`
/// and sends the `certificate_required` alert).
#[derive(Clone, Default, Debug)]
pub struct Verdict(Arc<Mutex<Option<Result<PeerId, Refusal>>>>);

impl Verdict {
    pub fn take(&self) -> Option<Result<PeerId, Refusal>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn put(&self, outcome: Result<PeerId, Refusal>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
    }
}

// ---------------------------------------------------------------------------------------------
// The configs

/// Client role (this host dials `expected_peer`): requires the server's chain to reach the CA
/// and its leaf to be exactly `spiffe://<trust_domain>/host/<expected_peer>`. The server name
/// given to quinn's `connect()` does not matter to the check (use `expected_peer`).
pub fn client_config(
    creds: &Credentials,
    trust_domain: &str,
    expected_peer: &str,
) -> Result<(rustls::ClientConfig, Verdict), String> {
    let rule = PeerRule::new(trust_domain, expected_peer)?;
    let verdict = rule.verdict.clone();
    let verifier = Arc::new(PeerServerVerifier {
        roots: creds.roots.clone(),
        algs: creds.provider.signature_verification_algorithms,
        rule,
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(creds.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS client config: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(creds.certified.clone())));
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.enable_early_data = false;
    Ok((cfg, verdict))
}

/// Server role (a peer dialled us; the source address says which peer it must be): REQUIRES a
/// client certificate chaining to the CA whose leaf is exactly
/// `spiffe://<trust_domain>/host/<expected_peer>`.
pub fn server_config(
    creds: &Credentials,
    trust_domain: &str,
    expected_peer: &str,
) -> Result<(rustls::ServerConfig, Verdict), String> {
    let rule = PeerRule::new(trust_domain, expected_peer)?;
    let verdict = rule.verdict.clone();
    let verifier = Arc::new(PeerClientVerifier {
        inner: creds.client_verifier.clone(),
        rule,
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(creds.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS server config: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(creds.certified.clone())));
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.max_early_data_size = 0;
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok((cfg, verdict))
}

/// What both verifiers decide: trust domain, expected host, and where the outcome goes.
#[derive(Debug)]
struct PeerRule {
    trust_domain: String,
    expected: String,
    verdict: Verdict,
}

impl PeerRule {
    fn new(trust_domain: &str, expected_peer: &str) -> Result<PeerRule, String> {
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
struct PeerServerVerifier {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
    rule: PeerRule,
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
struct PeerClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    rule: PeerRule,
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

// ---------------------------------------------------------------------------------------------
// The SPIFFE/leaf check

/// A host name is one lowercase DNS label (RFC 1123): `^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`.
pub fn is_host_name(name: &str) -> bool {
    let b = name.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&b.len())
        && b.iter().all(inner)
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
}

/// SPIFFE trust domain: `^[a-z0-9._-]{1,255}$`.
pub fn is_trust_domain(td: &str) -> bool {
    (1..=255).contains(&td.len())
        && td.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// `(trust_domain, name)` of a URI that is exactly `spiffe://<td>/host/<name>`.
fn parse_host_spiffe_id(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("spiffe://")?;
    let (td, path) = rest.split_at(rest.find('/')?);
    let name = path.strip_prefix("/host/")?;
    (is_trust_domain(td) && is_host_name(name)).then_some((td, name))
}

/// What the check reads from a leaf.
#[derive(Debug)]
struct LeafFacts {
    is_ca: bool,
    /// keyUsage (digitalSignature, keyCertSign), `None` when the extension is absent.
    key_usage: Option<(bool, bool)>,
    /// The extendedKeyUsage OIDs in certificate order, `None` when absent.
    eku: Option<Vec<String>>,
    uris: Vec<String>,
    not_before: i64,
    not_after: i64,
}

fn read_leaf(der: &[u8]) -> Result<LeafFacts, String> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the certificate", rest.len()));
    }
    // x509-parser keeps a malformed known extension as ParseError, which its getters would
    // report as absent: refuse those we read instead.
    for ext in cert.extensions() {
        if let ParsedExtension::ParseError { error } = ext.parsed_extension() {
            let read = [
                &OID_X509_EXT_BASIC_CONSTRAINTS,
                &OID_X509_EXT_KEY_USAGE,
                &OID_X509_EXT_EXTENDED_KEY_USAGE,
                &OID_X509_EXT_SUBJECT_ALT_NAME,
            ];
            if read.contains(&&ext.oid) {
                return Err(format!("malformed extension {}: {error}", ext.oid));
            }
        }
    }
    let is_ca = cert
        .basic_constraints()
        .map_err(|e| format!("basicConstraints: {e}"))?
        .is_some_and(|bc| bc.value.ca);
    let key_usage = cert
        .key_usage()
        .map_err(|e| format!("keyUsage: {e}"))?
        .map(|ku| (ku.value.digital_signature(), ku.value.key_cert_sign()));
    let eku = match cert
        .get_extension_unique(&OID_X509_EXT_EXTENDED_KEY_USAGE)
        .map_err(|e| format!("extendedKeyUsage: {e}"))?
    {
        None => None,
        Some(ext) => {
            let (_, oids) =
                <Vec<Oid>>::from_der(ext.value).map_err(|e| format!("extendedKeyUsage: {e}"))?;
            Some(oids.iter().map(Oid::to_id_string).collect())
        }
    };
    let uris = cert
        .subject_alternative_name()
        .map_err(|e| format!("subjectAltName: {e}"))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(LeafFacts {
        is_ca,
        key_usage,
        eku,
        uris,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The SPIFFE/leaf check alone, on a DER leaf (also used on our own certificate at start-up).
/// Rules follow the SPIFFE X509-SVID profile: not a CA, keyUsage present with digitalSignature
/// and without keyCertSign, exactly one URI SAN; an EKU, when present, must allow both TLS
/// client and server, since every host is both. `expected_name`: the peer must be exactly this
/// host. Times are whole seconds; valid from not_before to not_after, both included.
pub fn check_leaf(
    der: &[u8],
    trust_domain: &str,
    expected_name: Option<&str>,
    now_unix: i64,
) -> Result<PeerId, Refusal> {
    let leaf = read_leaf(der).map_err(|m| unparseable(&m))?;
    judge_leaf(&leaf, trust_domain, expected_name, now_unix)
}

fn judge_leaf(
    leaf: &LeafFacts,
    trust_domain: &str,
    expected_name: Option<&str>,
    now_unix: i64,
) -> Result<PeerId, Refusal> {
    if leaf.is_ca {
        return Err(is_ca_basic_constraints());
    }
    if leaf.key_usage.is_some_and(|(_, cert_sign)| cert_sign) {
        return Err(refuse(
            refusal::IS_CA,
            "peer certificate may sign certificates (keyUsage keyCertSign); hosts must present a leaf from `qmesh pki issue`".to_string(),
        ));
    }
    if !leaf
        .key_usage
        .is_some_and(|(digital_signature, _)| digital_signature)
    {
        return Err(refuse(
            refusal::NO_DIGITAL_SIGNATURE,
            "peer certificate lacks keyUsage digitalSignature, which TLS 1.3 needs".to_string(),
        ));
    }
    if let Some(r) = eku_refusal(leaf) {
        return Err(r);
    }
    if leaf.uris.len() != 1 {
        return Err(refuse(
            refusal::URI_SAN_COUNT,
            format!(
                "peer certificate has {} URI SANs; a host certificate has exactly one",
                leaf.uris.len()
            ),
        ));
    }
    let uri = &leaf.uris[0];
    let Some((td, name)) = parse_host_spiffe_id(uri) else {
        return Err(refuse(
            refusal::NOT_HOST_SPIFFE_ID,
            format!(
                "peer URI SAN {} is not of the form spiffe://<trust-domain>/host/<name>",
                json_string(uri)
            ),
        ));
    };
    if td != trust_domain {
        return Err(refuse(
            refusal::FOREIGN_TRUST_DOMAIN,
            format!("peer {uri} belongs to trust domain {td}, not {trust_domain}"),
        ));
    }
    if let Some(expected) = expected_name {
        if name != expected {
            return Err(refuse(
                refusal::NAME_MISMATCH,
                format!("peer is host {name}, expected {expected}"),
            ));
        }
    }
    if now_unix > leaf.not_after {
        return Err(expired(leaf.not_after));
    }
    if now_unix < leaf.not_before {
        return Err(not_yet_valid(leaf.not_before));
    }
    Ok(PeerId {
        name: name.to_string(),
        uri: uri.clone(),
        not_before_unix: leaf.not_before,
        not_after_unix: leaf.not_after,
    })
}

fn refuse(code: &'static str, reason: String) -> Refusal {
    Refusal { code, reason }
}

fn unparseable(message: &str) -> Refusal {
    refuse(
        refusal::UNPARSEABLE,
        format!("peer certificate cannot be parsed: {message}"),
    )
}

fn is_ca_basic_constraints() -> Refusal {
    refuse(
        refusal::IS_CA,
        "peer certificate is a CA (basicConstraints CA:true); hosts must present a leaf from `qmesh pki issue`".to_string(),
    )
}

fn eku_refusal(leaf: &LeafFacts) -> Option<Refusal> {
    let eku = leaf.eku.as_ref()?;
    let has = |oid: &str| eku.iter().any(|e| e == oid);
    if has(SERVER_AUTH) && has(CLIENT_AUTH) {
        return None;
    }
    Some(refuse(
        refusal::EKU_LACKS_TLS_AUTH,
        format!(
            "peer certificate's extendedKeyUsage [{}] lacks serverAuth or clientAuth; every host needs both",
            eku.join(", ")
        ),
    ))
}

fn expired(not_after: i64) -> Refusal {
    refuse(
        refusal::EXPIRED,
        format!(
            "peer certificate expired at {}; reissue it with `qmesh pki issue`",
            iso_utc(not_after)
        ),
    )
}

fn not_yet_valid(not_before: i64) -> Refusal {
    refuse(
        refusal::NOT_YET_VALID,
        format!(
            "peer certificate is not valid before {}; check both hosts' clocks",
            iso_utc(not_before)
        ),
    )
}

/// JSON.stringify of a string.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// `Date.prototype.toISOString()` of a Unix time in seconds: `2001-02-03T04:05:06.000Z`.
fn iso_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Days to civil date (H. Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let year = if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else {
        format!("{year:+07}")
    };
    format!(
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
        ExtendedKeyUsagePurpose as Eku, IsCa, KeyPair, KeyUsagePurpose as Ku, SanType,
    };
    use rustls::client::ResolvesClientCert;
    use rustls::{
        AlertDescription, ClientConnection, Connection, ProtocolVersion, ServerConnection,
    };

    const TD: &str = "mesh.test";

    // ---- test PKI -------------------------------------------------------------------------

    fn pem(label: &str, der: &[u8]) -> String {
        const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut text = Vec::new();
        for chunk in der.chunks(3) {
            let v = chunk
                .iter()
                .enumerate()
                .fold(0u32, |v, (i, b)| v | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                text.push(if i <= chunk.len() {
                    B64[(v >> (18 - 6 * i)) as usize & 63]
                } else {
                    b'='
                });
            }
        }
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in text.chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    fn cn(name: &str) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    struct Leaf {
        der: Vec<u8>,
        cert_pem: String,
        key_pem: String,
    }

    impl Ca {
        fn new(common_name: &str) -> Ca {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::default();
            p.distinguished_name = cn(common_name);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign, Ku::DigitalSignature];
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2095, 1, 1);
            let cert = p.self_signed(&key).unwrap();
            Ca { cert, key }
        }

        fn pem(&self) -> String {
            pem("CERTIFICATE", self.cert.der())
        }

        /// A host leaf as `qmesh pki issue` makes it, then `tweak` makes it wrong in one way.
        fn issue(&self, name: &str, tweak: impl FnOnce(&mut CertificateParams)) -> Leaf {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::default();
            p.distinguished_name = cn(name);
            p.subject_alt_names = vec![uri(&format!("spiffe://{TD}/host/{name}"))];
            p.key_usages = vec![Ku::DigitalSignature];
            p.extended_key_usages = vec![Eku::ServerAuth, Eku::ClientAuth];
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2090, 1, 1);
            tweak(&mut p);
            let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
            Leaf {
                der: cert.der().to_vec(),
                cert_pem: pem("CERTIFICATE", cert.der()),
                key_pem: pem("PRIVATE KEY", &key.serialize_der()),
            }
        }

        fn creds(&self, leaf: &Leaf) -> Credentials {
            Credentials::from_pem(&self.pem(), &leaf.cert_pem, &leaf.key_pem).unwrap()
        }

        fn host(&self, name: &str) -> Credentials {
            self.creds(&self.issue(name, |_| {}))
        }
    }

    // ---- in-memory handshakes -------------------------------------------------------------

    struct Outcome {
        client: Result<(), TlsError>,
        server: Result<(), TlsError>,
        client_verdict: Option<Result<PeerId, Refusal>>,
        server_verdict: Option<Result<PeerId, Refusal>>,
        alpn: Option<Vec<u8>>,
        version: Option<ProtocolVersion>,
    }

    /// Host "a" (client role, expects "b") dials host "b" (server role, expects "a").
    fn handshake(a: &Credentials, b: &Credentials) -> Outcome {
        let (ccfg, cv) = client_config(a, TD, "b").unwrap();
        let (scfg, sv) = server_config(b, TD, "a").unwrap();
        run(ccfg, "b", scfg, cv, sv)
    }

    /// Moves what `from` has to send into `to`; false when there was nothing.
    fn shuttle(from: &mut Connection, to: &mut Connection, to_err: &mut Option<TlsError>) -> bool {
        let mut buf = Vec::new();
        while from.wants_write() {
            if from.write_tls(&mut buf).unwrap() == 0 {
                break;
            }
        }
        if buf.is_empty() {
            return false;
        }
        let mut rd = &buf[..];
        while to_err.is_none() && !rd.is_empty() {
            if to.read_tls(&mut rd).unwrap() == 0 {
                break;
            }
            if let Err(e) = to.process_new_packets() {
                *to_err = Some(e);
            }
        }
        true
    }

    fn run(
        ccfg: rustls::ClientConfig,
        server_name: &'static str,
        scfg: rustls::ServerConfig,
        client_verdict: Verdict,
        server_verdict: Verdict,
    ) -> Outcome {
        let name = ServerName::try_from(server_name).unwrap();
        let mut c = Connection::from(ClientConnection::new(Arc::new(ccfg), name).unwrap());
        let mut s = Connection::from(ServerConnection::new(Arc::new(scfg)).unwrap());
        let (mut c_err, mut s_err) = (None, None);
        for _ in 0..32 {
            let to_server = shuttle(&mut c, &mut s, &mut s_err);
            let to_client = shuttle(&mut s, &mut c, &mut c_err);
            if !to_server && !to_client {
                break;
            }
        }
        let ok = |conn: &Connection, err: Option<TlsError>| match err {
            Some(e) => Err(e),
            None if conn.is_handshaking() => Err(TlsError::General("stalled".into())),
            None => Ok(()),
        };
        Outcome {
            client: ok(&c, c_err),
            server: ok(&s, s_err),
            client_verdict: client_verdict.take(),
            server_verdict: server_verdict.take(),
            alpn: c.alpn_protocol().map(<[u8]>::to_vec),
            version: c.protocol_version(),
        }
    }

    fn refused(verdict: &Option<Result<PeerId, Refusal>>) -> Option<&Refusal> {
        match verdict {
            Some(Err(r)) => Some(r),
            _ => None,
        }
    }

    fn peer_name(verdict: &Option<Result<PeerId, Refusal>>) -> Option<&str> {
        match verdict {
            Some(Ok(p)) => Some(p.name.as_str()),
            _ => None,
        }
    }

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

    // ---- 2. each refusal, on both roles ---------------------------------------------------

    type Tweak = fn(&mut CertificateParams, &str);

    /// Leaves wrong in exactly one way, and the code each must get.
    const WRONG: &[(&str, &str, Tweak)] = &[
        ("basicConstraints CA:true", refusal::IS_CA, |p, _| {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)
        }),
        ("keyUsage keyCertSign", refusal::IS_CA, |p, _| {
            p.key_usages.push(Ku::KeyCertSign)
        }),
        (
            "keyUsage without digitalSignature",
            refusal::NO_DIGITAL_SIGNATURE,
            |p, _| p.key_usages = vec![Ku::KeyEncipherment],
        ),
        ("no keyUsage", refusal::NO_DIGITAL_SIGNATURE, |p, _| {
            p.key_usages.clear()
        }),
        (
            "EKU serverAuth only",
            refusal::EKU_LACKS_TLS_AUTH,
            |p, _| p.extended_key_usages = vec![Eku::ServerAuth],
        ),
        (
            "EKU clientAuth only",
            refusal::EKU_LACKS_TLS_AUTH,
            |p, _| p.extended_key_usages = vec![Eku::ClientAuth],
        ),
        ("two URI SANs", refusal::URI_SAN_COUNT, |p, _| {
            p.subject_alt_names.push(uri("spiffe://mesh.test/host/c"))
        }),
        ("no URI SAN", refusal::URI_SAN_COUNT, |p, name| {
            p.subject_alt_names = vec![SanType::DnsName(name.try_into().unwrap())]
        }),
        (
            "URI not a host ID",
            refusal::NOT_HOST_SPIFFE_ID,
            |p, name| {
                p.subject_alt_names = vec![uri(&format!("spiffe://mesh.test/workload/{name}"))]
            },
        ),
        (
            "foreign trust domain",
            refusal::FOREIGN_TRUST_DOMAIN,
            |p, name| p.subject_alt_names = vec![uri(&format!("spiffe://other.test/host/{name}"))],
        ),
        ("another host's name", refusal::NAME_MISMATCH, |p, _| {
            p.subject_alt_names = vec![uri("spiffe://mesh.test/host/c")]
        }),
        ("expired", refusal::EXPIRED, |p, _| {
            p.not_before = date_time_ymd(2000, 1, 1);
            p.not_after = date_time_ymd(2001, 1, 1);
        }),
        ("not yet valid", refusal::NOT_YET_VALID, |p, _| {
            p.not_before = date_time_ymd(2090, 1, 1);
            p.not_after = date_time_ymd(2095, 1, 1);
        }),
    ];

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
        let check = |t: &dyn Fn(&mut CertificateParams)| {
            check_leaf(&ca.issue("a", t).der, TD, Some("a"), now)
        };
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

    // ---- Credentials and config arguments ---------------------------------------------------

    #[test]
    fn credentials_from_pem() {
        let ca = Ca::new("qmesh test CA");
        let a = ca.issue("a", |_| {});
        let b = ca.issue("b", |_| {});
        let creds = Credentials::from_pem(&ca.pem(), &a.cert_pem, &a.key_pem).unwrap();
        assert_eq!(creds.leaf_der(), &a.der[..]);
        let err = |ca_pem: &str, cert: &str, key: &str| {
            Credentials::from_pem(ca_pem, cert, key).unwrap_err()
        };
        assert_eq!(
            err("", &a.cert_pem, &a.key_pem),
            "tls.ca: holds no PEM certificate"
        );
        assert_eq!(
            err(&a.key_pem, &a.cert_pem, &a.key_pem),
            "tls.ca: holds no PEM certificate"
        );
        assert_eq!(
            err(&ca.pem(), "", &a.key_pem),
            "tls.cert: holds no PEM certificate"
        );
        assert_eq!(
            err(&ca.pem(), &a.cert_pem, &a.cert_pem),
            "tls.key: holds no PEM private key"
        );
        assert_eq!(
            err(&ca.pem(), &a.cert_pem, &b.key_pem),
            "tls.key: does not match the certificate in tls.cert"
        );
        let garbled = a.cert_pem.replace("-----END CERTIFICATE-----", "");
        assert!(err(&ca.pem(), &garbled, &a.key_pem).starts_with("tls.cert: "));
        let not_x509 = pem("CERTIFICATE", b"not DER");
        assert_eq!(
            err(&ca.pem(), &not_x509, &a.key_pem),
            "tls.cert: the first certificate cannot be parsed: invalid peer certificate: BadEncoding"
        );
        assert!(err(&not_x509, &a.cert_pem, &a.key_pem)
            .starts_with("tls.ca: certificate 1 is not a usable trust anchor: "));
        // A bundle of several CAs, leaf and chain PEMs with text around them.
        let other = Ca::new("another CA");
        let bundle = format!("# mesh CA\n{}\n{}", ca.pem(), other.pem());
        assert!(Credentials::from_pem(&bundle, &a.cert_pem, &a.key_pem).is_ok());
    }

    #[test]
    fn config_arguments_are_checked() {
        let ca = Ca::new("qmesh test CA");
        let a = ca.host("a");
        assert_eq!(
            client_config(&a, TD, "B").err().unwrap(),
            "invalid host name \"B\""
        );
        assert_eq!(
            server_config(&a, TD, "").err().unwrap(),
            "invalid host name \"\""
        );
        assert_eq!(
            server_config(&a, "Mesh", "b").err().unwrap(),
            "invalid trust domain \"Mesh\""
        );
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
}
