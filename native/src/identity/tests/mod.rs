//! Tests of the identity module: a test PKI (rcgen) and in-memory rustls handshakes shared by
//! the test files.
use super::*;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose as Eku, IsCa, KeyPair, KeyUsagePurpose as Ku, SanType,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ProtocolVersion, ServerConnection};

mod credentials;
mod handshake;
mod leaf;
mod refusals;

pub(crate) const TD: &str = "mesh.test";

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

pub(crate) struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

pub(crate) struct Leaf {
    der: Vec<u8>,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl Ca {
    pub(crate) fn new(common_name: &str) -> Ca {
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

    pub(crate) fn pem(&self) -> String {
        pem("CERTIFICATE", self.cert.der())
    }

    /// A host leaf as `qmesh pki issue` makes it, then `tweak` makes it wrong in one way.
    pub(crate) fn issue(&self, name: &str, tweak: impl FnOnce(&mut CertificateParams)) -> Leaf {
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

    pub(crate) fn creds(&self, leaf: &Leaf) -> Credentials {
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

// ---- the wrong leaves (2. and 4.) ----------------------------------------------------

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
        |p, name| p.subject_alt_names = vec![uri(&format!("spiffe://mesh.test/workload/{name}"))],
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
