//! The SPIFFE/leaf check: what a host leaf must be, read from its DER, and the refusal
//! sentences (those of daemon/identity/peer-identity.ts).
use super::{refusal, PeerId, Refusal};
use x509_parser::der_parser::asn1_rs::{FromDer, Oid};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_SUBJECT_ALT_NAME,
};

// ---------------------------------------------------------------------------------------------
// The SPIFFE/leaf check

const SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
const CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";

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
pub(super) struct LeafFacts {
    pub(super) is_ca: bool,
    /// keyUsage (digitalSignature, keyCertSign), `None` when the extension is absent.
    key_usage: Option<(bool, bool)>,
    /// The extendedKeyUsage OIDs in certificate order, `None` when absent.
    pub(super) eku: Option<Vec<String>>,
    uris: Vec<String>,
    pub(super) not_before: i64,
    pub(super) not_after: i64,
}

pub(super) fn read_leaf(der: &[u8]) -> Result<LeafFacts, String> {
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

pub(super) fn judge_leaf(
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

pub(super) fn unparseable(message: &str) -> Refusal {
    refuse(
        refusal::UNPARSEABLE,
        format!("peer certificate cannot be parsed: {message}"),
    )
}

pub(super) fn is_ca_basic_constraints() -> Refusal {
    refuse(
        refusal::IS_CA,
        "peer certificate is a CA (basicConstraints CA:true); hosts must present a leaf from `qmesh pki issue`".to_string(),
    )
}

pub(super) fn eku_refusal(leaf: &LeafFacts) -> Option<Refusal> {
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

pub(super) fn expired(not_after: i64) -> Refusal {
    refuse(
        refusal::EXPIRED,
        format!(
            "peer certificate expired at {}; reissue it with `qmesh pki issue`",
            iso_utc(not_after)
        ),
    )
}

pub(super) fn not_yet_valid(not_before: i64) -> Refusal {
    refuse(
        refusal::NOT_YET_VALID,
        format!(
            "peer certificate is not valid before {}; check both hosts' clocks",
            iso_utc(not_before)
        ),
    )
}

/// JSON.stringify of a string.
pub(super) fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// `Date.prototype.toISOString()` of a Unix time in seconds: `2001-02-03T04:05:06.000Z`.
pub fn iso_utc(secs: i64) -> String {
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
