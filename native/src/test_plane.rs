//! A data plane without capture for the crate's tests of accept, dial and reload: real
//! quinn endpoints on loopback addresses (127.0.0.x), certificates from the identity
//! tests' PKI, and a bare client that can stall its side of the handshake.
use crate::identity::tests::{Ca, Leaf, TD};
use crate::plane::{self, Shared};
use crate::snapshot::Snapshot;
use crate::tunnel::{accept, transport};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use serde_json::{json, Value};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct Host {
    pub name: &'static str,
    pub leaf: Leaf,
    pub udp: UdpSocket,
}

impl Host {
    pub fn new(ca: &Ca, name: &'static str, ip: &str) -> Host {
        Host {
            name,
            leaf: ca.issue(name, |_| {}),
            udp: UdpSocket::bind(format!("{ip}:0")).unwrap(),
        }
    }
    pub fn addr(&self) -> SocketAddr {
        self.udp.local_addr().unwrap()
    }
}

/// The snapshot JSON of `host` with `peers` (each owning 10.<i>.0.0/16); `tweak` edits it.
pub(crate) fn snapshot_json(
    ca: &Ca,
    host: &Host,
    peers: &[&Host],
    tweak: impl FnOnce(&mut Value),
) -> String {
    let peers: Vec<Value> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"name": p.name, "endpoint": p.addr().to_string(), "cidrs": [format!("10.{}.0.0/16", i + 1)]}))
        .collect();
    let mut v = json!({
        "node": host.name, "trustDomain": TD, "listenQuic": host.addr().to_string(),
        "capturePort": 15001, "adminPort": 15000, "mark": 0x51e5, "localCidrs": ["127.0.0.0/8"], "peers": peers,
        "policy": {"default": "allow", "rules": []},
        "tls": {"caPem": ca.pem(), "certPem": host.leaf.cert_pem, "keyPem": host.leaf.key_pem, "resetKeyHex": "ab".repeat(32)},
        "tunnel": {"idleTimeoutMs": 10000, "keepAliveMs": 1000, "connectTimeoutMs": 5000,
            "reconnectMinMs": 100, "reconnectMaxMs": 1000, "maxDatagramBytes": 1350, "maxStreams": 100,
            "congestionControl": "cubic", "addressValidation": "never", "maxHandshakes": 8, "maxHandshakesPerSource": 4},
        "capture": {"maxConnections": 100, "maxConnectionsPerSource": 100, "idleTimeoutMs": 0},
        "deniedConnections": "close", "logFlows": false
    });
    tweak(&mut v);
    v.to_string()
}

/// Starts accepting (and dialling its peers) on `host`'s socket, in the current runtime.
pub(crate) fn start(host: &Host, json: &str) -> Arc<Shared> {
    let (snap, creds) = plane::prepare(json).unwrap();
    let (server, _) = transport::server_config_for(&snap, &creds, &snap.node).unwrap();
    let endpoint = quinn::Endpoint::new(
        transport::endpoint_config(&snap),
        Some(server),
        host.udp.try_clone().unwrap(),
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    let shared = Arc::new(Shared::new(snap, creds, endpoint));
    shared
        .deliver_to_loopback
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(accept::accept_loop(shared.clone()));
    shared.sync_dialers(&tokio::runtime::Handle::current());
    shared
}

/// Reload, as api.rs `apply` does it.
pub(crate) fn apply(shared: &Arc<Shared>, json: &str) {
    let (snap, creds) = plane::prepare(json).unwrap();
    shared
        .apply(snap, creds, &tokio::runtime::Handle::current())
        .unwrap();
}

pub(crate) fn parse(json: &str) -> Snapshot {
    Snapshot::parse(json).unwrap()
}

/// Presents the client certificate only after `delay`: the server's handshake stays in flight.
#[derive(Debug)]
struct SlowClientCert(Arc<dyn ResolvesClientCert>, Duration);

impl ResolvesClientCert for SlowClientCert {
    fn resolve(
        &self,
        hints: &[&[u8]],
        schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        std::thread::sleep(self.1); // runs on the client's driver: only that side waits
        self.0.resolve(hints, schemes)
    }
    fn has_certs(&self) -> bool {
        self.0.has_certs()
    }
}

/// A bare client endpoint with `host`'s identity (its own runtime thread, so a stalled
/// handshake blocks nothing of the node under test), expecting the server to be `server`.
pub(crate) struct Client {
    pub endpoint: quinn::Endpoint,
    pub config: quinn::ClientConfig,
    rt: Option<tokio::runtime::Runtime>,
}

/// A runtime cannot be dropped inside another: let it go in the background.
fn let_go(rt: &mut Option<tokio::runtime::Runtime>) {
    if let Some(rt) = rt.take() {
        rt.shutdown_background();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let_go(&mut self.rt);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let_go(&mut self.rt);
    }
}

pub(crate) fn client(ca: &Ca, host: &Host, server: &str, cert_delay: Duration) -> Client {
    let creds = ca.creds(&host.leaf);
    let (mut tls, _) = crate::identity::client_config(&creds, TD, server).unwrap();
    if !cert_delay.is_zero() {
        tls.client_auth_cert_resolver = Arc::new(SlowClientCert(
            tls.client_auth_cert_resolver.clone(),
            cert_delay,
        ));
    }
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    let rt = one_worker_runtime();
    let udp = host.udp.try_clone().unwrap();
    let endpoint = {
        let _on = rt.enter();
        quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            udp,
            Arc::new(quinn::TokioRuntime),
        )
        .unwrap()
    };
    Client {
        endpoint,
        config,
        rt: Some(rt),
    }
}

impl Client {
    pub async fn connect(
        &self,
        to: SocketAddr,
        name: &str,
    ) -> Result<quinn::Connection, quinn::ConnectionError> {
        // quinn spawns the connection's driver on the current runtime: the client's own.
        let connecting = {
            let _on = self.rt.as_ref().map(|rt| rt.enter());
            self.endpoint
                .connect_with(self.config.clone(), to, name)
                .unwrap()
        };
        connecting.await
    }
}

/// Polls `f` every 10 ms for up to `ms`.
pub(crate) async fn eventually(ms: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_millis(ms);
    while !f() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends its certificate only after `delay`: the client's handshake stays in flight.
#[derive(Debug)]
struct SlowServerCert(Arc<dyn rustls::server::ResolvesServerCert>, Duration);

impl rustls::server::ResolvesServerCert for SlowServerCert {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        std::thread::sleep(self.1);
        self.0.resolve(hello)
    }
}

/// A bare server with `host`'s identity on its own runtime, answering only `client`;
/// each handshake's outcome arrives on `outcomes`, `arrived` counts the Initials taken.
pub(crate) struct Server {
    pub outcomes:
        tokio::sync::mpsc::UnboundedReceiver<Result<quinn::Connection, quinn::ConnectionError>>,
    pub arrived: Arc<std::sync::atomic::AtomicU64>,
    rt: Option<tokio::runtime::Runtime>,
}

pub(crate) fn slow_server(ca: &Ca, host: &Host, client: &str, cert_delay: Duration) -> Server {
    let creds = ca.creds(&host.leaf);
    let (mut tls, _) = crate::identity::server_config(&creds, TD, client).unwrap();
    tls.cert_resolver = Arc::new(SlowServerCert(tls.cert_resolver.clone(), cert_delay));
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let rt = one_worker_runtime();
    let udp = host.udp.try_clone().unwrap();
    let (tx, outcomes) = tokio::sync::mpsc::unbounded_channel();
    let arrived = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = arrived.clone();
    rt.spawn(async move {
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(config),
            udp,
            Arc::new(quinn::TokioRuntime),
        )
        .unwrap();
        while let Some(incoming) = endpoint.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(incoming.await);
            });
        }
    });
    Server {
        outcomes,
        arrived,
        rt: Some(rt),
    }
}

/// A runtime of its own for a test peer, so its handshakes do not share the node's workers.
fn one_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}
