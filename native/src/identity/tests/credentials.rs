//! Credentials from PEM and the arguments of the config builders.
use super::*;

// ---- Credentials and config arguments ---------------------------------------------------

#[test]
fn credentials_from_pem() {
    let ca = Ca::new("qmesh test CA");
    let a = ca.issue("a", |_| {});
    let b = ca.issue("b", |_| {});
    let creds = Credentials::from_pem(&ca.pem(), &a.cert_pem, &a.key_pem).unwrap();
    assert_eq!(creds.leaf_der(), &a.der[..]);
    let err =
        |ca_pem: &str, cert: &str, key: &str| Credentials::from_pem(ca_pem, cert, key).unwrap_err();
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
