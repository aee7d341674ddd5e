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
                format!("tls.ca: certificate {} is not a usable trust anchor: {e}", i + 1)
            })?;
        }
        let roots = Arc::new(roots);

        let chain = read_certs("tls.cert", cert_pem)?;
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
            return Err(format!("invalid trust domain {}", json_string(trust_domain)));
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
        let now_unix = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let bad_encoding = || TlsError::InvalidCertificate(CertificateError::BadEncoding);
        let leaf = read_leaf(end_entity.as_ref()).map_err(|m| (unparseable(&m), bad_encoding()))?;
        let parsed = ParsedCertificate::try_from(end_entity)
            .map_err(|e| (unparseable(&webpki_cause(&e)), bad_encoding()))?;
        if let Err(err) = chain(&parsed) {
            return Err((chain_refusal(&err, &leaf), err));
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
        reason: format!("peer certificate does not chain to tls.ca: {}", webpki_cause(err)),
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
        && td
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'))
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
            let (_, oids) = <Vec<Oid>>::from_der(ext.value)
                .map_err(|e| format!("extendedKeyUsage: {e}"))?;
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
    if !leaf.key_usage.is_some_and(|(digital_signature, _)| digital_signature) {
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
