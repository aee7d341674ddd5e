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
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{Error as TlsError, RootCertStore};
use std::fmt;
use std::sync::{Arc, Mutex};

mod leaf;
#[cfg(test)]
pub(crate) mod tests;
mod verify;

pub use leaf::{check_leaf, is_host_name, is_trust_domain, iso_utc};
use verify::{PeerClientVerifier, PeerRule, PeerServerVerifier};

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
    /// This host's leaf: not before, not after (Unix seconds), read once here.
    validity: (i64, i64),
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
    /// Whether a peer's leaf (DER) still chains to this bundle, now: after `tls.ca` changed, a
    /// connection authenticated under a CA that is no longer trusted must close (fail closed).
    pub fn still_trusts(&self, leaf: &[u8]) -> bool {
        let der = CertificateDer::from(leaf.to_vec());
        let Ok(parsed) = ParsedCertificate::try_from(&der) else {
            return false;
        };
        let algorithms = self.provider.signature_verification_algorithms.all;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            &[],
            rustls::pki_types::UnixTime::now(),
            algorithms,
        )
        .is_ok()
    }

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
        let validity = match chain.first().map(|der| leaf::read_leaf(der.as_ref())) {
            Some(Ok(facts)) => (facts.not_before, facts.not_after),
            Some(Err(e)) => {
                return Err(format!(
                    "tls.cert: the first certificate cannot be parsed: {e}"
                ))
            }
            None => return Err("tls.cert: holds no PEM certificate".into()),
        };
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
            validity,
        })
    }

    /// This host's certificate's validity: (not before, not after), Unix seconds.
    pub fn validity(&self) -> (i64, i64) {
        self.validity
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
