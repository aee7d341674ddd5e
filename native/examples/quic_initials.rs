//! A hostile QUIC client for the e2e tests: `count` real, well-formed QUIC v1 client
//! Initials (each from a fresh quinn-proto client connection, so each would start a
//! handshake), sent from one UDP socket and never followed up; then it listens
//! `listenMs` and classifies every datagram that came back. Prints one JSON line:
//!   {"sent":..,"responses":{"retry":..,"initial":..,"handshake":..,"versionNegotiation":..,"short":..,"other":..},"responseBytes":..,"from":"ip:port"}
//!
//! Options: `version` rewrites the version field (e.g. one nobody supports), `truncateTo`
//! cuts each datagram short (under the 1200 bytes a client Initial must fill).
//!   quic_initials '{"ip":..,"port":..,"count":..,"bindIp":..,"listenMs":..,"version":..,"truncateTo":..}'
//!
//! No socket of quinn's is involved: a `quinn_proto::Endpoint` builds each Initial
//! (`connect` + `poll_transmit`) and a std `UdpSocket` bound to `bindIp` (default
//! 0.0.0.0) on an ephemeral port sends it. The TLS verifier accepts anything; no
//! handshake is ever completed. Test helper, run by test/e2e/hostile/quic-initials.mjs.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use quinn_proto::crypto::rustls::QuicClientConfig;
use quinn_proto::{ClientConfig, Endpoint, EndpointConfig, EndpointEvent, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    ip: IpAddr,
    port: u16,
    count: u64,
    bind_ip: Option<IpAddr>,
    listen_ms: Option<u64>,
    version: Option<u32>,
    truncate_to: Option<usize>,
}

#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Responses {
    retry: u64,
    initial: u64,
    handshake: u64,
    version_negotiation: u64,
    short: u64,
    other: u64,
}

impl Responses {
    /// The .mjs's classification: short header, version negotiation (version 0), else the long-header type.
    fn count(&mut self, m: &[u8]) {
        let Some(&b) = m.first() else {
            self.short += 1; // `undefined & 0x80` is 0 in the .mjs
            return;
        };
        if b & 0x80 == 0 {
            self.short += 1;
        } else if m.len() < 5 {
            self.other += 1; // too short for a version field
        } else if m[1..5] == [0, 0, 0, 0] {
            self.version_negotiation += 1;
        } else {
            match (b >> 4) & 3 {
                0 => self.initial += 1,
                2 => self.handshake += 1,
                3 => self.retry += 1,
                _ => self.other += 1, // 0-RTT
            }
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    sent: u64,
    responses: Responses,
    response_bytes: u64,
    from: String,
}

/// Accepts any server certificate: the handshake never gets that far.
#[derive(Debug)]
struct AcceptAnything(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ring has no post-quantum key exchange, hence the deprecation; the crate uses it too (identity.rs).
#[allow(deprecated)]
fn client_config() -> Result<ClientConfig, String> {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    // X25519 first, like the BoringSSL client the .mjs used (ring's default puts P-384 first,
    // which costs ~10x the CPU per Initial): the key share is X25519, the others only listed.
    let provider = Arc::new(CryptoProvider {
        kx_groups: vec![X25519, SECP256R1, SECP384R1],
        ..rustls::crypto::ring::default_provider()
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("rustls: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"qmesh/1".to_vec()];
    let quic =
        QuicClientConfig::try_from(Arc::new(tls)).map_err(|e| format!("quic crypto: {e}"))?;
    let mut transport = TransportConfig::default();
    transport.max_idle_timeout(Some(VarInt::from_u32(30_000).into()));
    let mut config = ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

fn run(arg: &str) -> Result<Report, String> {
    let spec: Spec = serde_json::from_str(arg).map_err(|e| format!("bad spec {arg}: {e}"))?;
    let remote = SocketAddr::new(spec.ip, spec.port);
    let bind = SocketAddr::new(spec.bind_ip.unwrap_or(IpAddr::from([0, 0, 0, 0])), 0);
    let sock = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    let local = sock
        .local_addr()
        .map_err(|e| format!("local address: {e}"))?;

    // Count whatever comes back, from the start (the server may answer while we still send).
    let stop = Arc::new(AtomicBool::new(false));
    let rx = sock.try_clone().map_err(|e| format!("socket: {e}"))?;
    rx.set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(|e| format!("socket: {e}"))?;
    let listener = {
        let stop = stop.clone();
        thread::spawn(move || {
            let (mut responses, mut bytes) = (Responses::default(), 0u64);
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                match rx.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        bytes += n as u64;
                        responses.count(&buf[..n]);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
            (responses, bytes)
        })
    };

    let config = client_config()?;
    let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), None, false, None);
    let mut out = Vec::with_capacity(1500);
    let (mut sent, mut send_errors) = (0u64, 0u64);
    let mut first_error = None;
    for _ in 0..spec.count {
        let now = Instant::now();
        let (handle, mut conn) = endpoint
            .connect(now, config.clone(), remote, "host")
            .map_err(|e| format!("connect {remote}: {e}"))?;
        out.clear();
        let transmit = conn.poll_transmit(now, 1, &mut out);
        // Never followed up: forget the connection so the endpoint's table stays small.
        drop(conn);
        let _ = endpoint.handle_event(handle, EndpointEvent::drained());
        let Some(t) = transmit else { continue };
        if let Some(v) = spec.version {
            out[1..5].copy_from_slice(&v.to_be_bytes());
        }
        let n = t.size.min(spec.truncate_to.unwrap_or(t.size));
        // Like the .mjs (whose send callback ignored its error): a failed send still counts as sent.
        if let Err(e) = sock.send_to(&out[..n], remote) {
            send_errors += 1;
            first_error.get_or_insert(e);
        }
        sent += 1;
    }
    if let Some(e) = first_error {
        eprintln!("quic_initials: {send_errors} of {sent} sends failed, first: {e}");
    }

    thread::sleep(Duration::from_millis(spec.listen_ms.unwrap_or(1000)));
    stop.store(true, Ordering::Relaxed);
    let (responses, response_bytes) = listener
        .join()
        .map_err(|_| "listener thread panicked".to_string())?;
    Ok(Report {
        sent,
        responses,
        response_bytes,
        from: format!("{}:{}", local.ip(), local.port()),
    })
}

fn main() -> ExitCode {
    let Some(arg) = std::env::args().nth(1) else {
        eprintln!("usage: quic_initials '{{\"ip\":..,\"port\":..,\"count\":..,\"bindIp\":..,\"listenMs\":..,\"version\":..,\"truncateTo\":..}}'");
        return ExitCode::from(2);
    };
    match run(&arg) {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string(&report).expect("report serializes")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("quic_initials: {e}");
            ExitCode::FAILURE
        }
    }
}
