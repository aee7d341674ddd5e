//! The boundary with the TypeScript control plane (daemon/dataplane/native.ts mirrors it):
//! a snapshot in (`start`, `apply`), counters out (`stats`), events out in batches
//! (`takeEvents`), `drain` and `stop`. Nothing crosses it per packet, nor per flow
//! except with debug logging.
use crate::events::Level;
use crate::plane::{self, Shared};
use crate::tunnel::{accept, liveness, socket, transport};
use crate::{app_error, capture, fields, sockopt};
use napi::{Error, Status};
use napi_derive::napi;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Errors carry the daemon's error code first, so TypeScript can rethrow them as QmeshError.
fn err(code: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(Status::GenericFailure, format!("{code}: {msg}"))
}

struct Running {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
}

#[napi]
pub struct DataPlane {
    running: Mutex<Option<Running>>,
}

#[napi]
impl DataPlane {
    /// Binds the QUIC socket and the capture port, dials every peer, starts accepting.
    #[napi(factory)]
    pub fn start(snapshot_json: String) -> napi::Result<DataPlane> {
        let (snap, creds) =
            plane::prepare(&snapshot_json).map_err(|e| err("QMESH_ERR_CONFIG", e))?;
        let quic_addr = snap.listen_quic;
        let udp = std::net::UdpSocket::bind(quic_addr.0)
            .map_err(|e| err("QMESH_ERR_LISTEN", format!("cannot listen for QUIC on {quic_addr}: {e} (is the address on this host, is another daemon running?)")))?;
        let sock = socket2::SockRef::from(&udp);
        // Bursts from several peers must not overflow the default ~200 KiB (capped by net.core.rmem_max).
        let _ = sock.set_recv_buffer_size(4 << 20);
        let _ = sock.set_send_buffer_size(4 << 20);
        let tcp = capture::bind(snap.capture_port).map_err(|e| err("QMESH_ERR_LISTEN", e))?;
        crate::own_address::open_probes();
        let rt = tokio::runtime::Builder::new_multi_thread()
            // Two workers: on these 2-core machines one and two measured the same (S3, S6, S7).
            .worker_threads(2)
            .thread_name("qmesh-dataplane")
            .enable_all()
            .build()
            .map_err(|e| {
                err(
                    "QMESH_ERR_LISTEN",
                    format!("cannot start the data plane's threads: {e}"),
                )
            })?;
        let _guard = rt.enter();
        let (server, _) = transport::server_config_for(&snap, &creds, &snap.node)
            .map_err(|e| err("QMESH_ERR_TLS_FILES", e))?;
        let (hints_tx, hints_rx) = tokio::sync::mpsc::unbounded_channel();
        let socket = socket::hinting_socket(udp, hints_tx).map_err(|e| {
            err(
                "QMESH_ERR_LISTEN",
                format!("cannot listen for QUIC on {quic_addr}: {e}"),
            )
        })?;
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            transport::endpoint_config(&snap),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| {
            err(
                "QMESH_ERR_LISTEN",
                format!("cannot listen for QUIC on {quic_addr}: {e}"),
            )
        })?;
        let listener =
            tokio::net::TcpListener::from_std(tcp).map_err(|e| err("QMESH_ERR_LISTEN", e))?;
        let shared = Arc::new(Shared::new(snap, creds, endpoint));
        rt.spawn(liveness::hint_loop(shared.clone(), hints_rx));
        rt.spawn(accept::accept_loop(shared.clone()));
        shared.sync_dialers(rt.handle());
        rt.spawn(capture::accept_loop(shared.clone(), listener));
        shared.emit(Level::Info, "dataplane", "data plane started", fields! {"quic" => quic_addr.to_string(), "capture" => shared.snapshot.load().capture_port});
        drop(_guard);
        Ok(DataPlane {
            running: Mutex::new(Some(Running { rt, shared })),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&Running) -> napi::Result<R>) -> napi::Result<R> {
        let guard = self
            .running
            .lock()
            .map_err(|_| err("QMESH_ERR_LISTEN", "data plane state poisoned"))?;
        match guard.as_ref() {
            Some(r) => f(r),
            None => Err(err("QMESH_ERR_LISTEN", "the data plane is stopped")),
        }
    }

    /// Swaps in a new snapshot atomically (reload, rotation); a bad one changes nothing.
    #[napi]
    pub fn apply(&self, snapshot_json: String) -> napi::Result<()> {
        self.with(|r| {
            let (snap, creds) =
                plane::prepare(&snapshot_json).map_err(|e| err("QMESH_ERR_CONFIG", e))?;
            let _guard = r.rt.enter();
            r.shared
                .apply(snap, creds, r.rt.handle())
                .map_err(|e| err("QMESH_ERR_CONFIG", e))
        })
    }

    /// Counters and per-peer state, as JSON (read when /status or /metrics is scraped).
    #[napi]
    pub fn stats(&self) -> napi::Result<String> {
        self.with(|r| {
            serde_json::to_string(&plane::stats_view(&r.shared))
                .map_err(|e| err("QMESH_ERR_LISTEN", e))
        })
    }

    /// Events since the last call, as a JSON array of { level, component, msg, fields }.
    #[napi]
    pub fn take_events(&self) -> napi::Result<String> {
        self.with(|r| {
            serde_json::to_string(&r.shared.events.take()).map_err(|e| err("QMESH_ERR_LISTEN", e))
        })
    }

    /// Stops taking new flows (capture closes its port, inbound resets new streams); open ones carry on.
    #[napi]
    pub fn drain(&self) -> napi::Result<()> {
        self.with(|r| {
            plane::set_draining(&r.shared);
            Ok(())
        })
    }

    /// Open flows, both directions (drain waits for 0).
    #[napi]
    pub fn open_flows(&self) -> napi::Result<u32> {
        self.with(|r| Ok(r.shared.open_flows() as u32))
    }

    /// Resets what is still open, closes every tunnel, ends the data plane's threads. Returns the flows reset.
    #[napi]
    pub fn stop(&self) -> napi::Result<u32> {
        let Some(r) = self
            .running
            .lock()
            .map_err(|_| err("QMESH_ERR_LISTEN", "data plane state poisoned"))?
            .take()
        else {
            return Ok(0);
        };
        r.shared.draining.store(true, Relaxed);
        let reset = r.shared.reset_all_flows("daemon stopping");
        let shared = r.shared.clone();
        r.rt.block_on(async move {
            // Let the resets leave before the connections close under them.
            tokio::time::sleep(Duration::from_millis(if reset > 0 { 50 } else { 0 })).await;
            shared.stop.cancel();
            shared
                .endpoint
                .close(app_error::SHUTDOWN.into(), b"daemon stopping");
            let _ =
                tokio::time::timeout(Duration::from_millis(500), shared.endpoint.wait_idle()).await;
        });
        r.rt.shutdown_timeout(Duration::from_millis(500));
        Ok(reset as u32)
    }
}

/// One datagram to systemd's notify socket (a path, or "@name" in the abstract namespace); bytes sent.
#[napi]
pub fn sd_notify(path: String, message: String) -> napi::Result<u32> {
    sockopt::sd_notify(&path, &message)
        .map(|n| n as u32)
        .map_err(|e| {
            err(
                "QMESH_ERR_LISTEN",
                format!("cannot notify systemd at {path}: {e}"),
            )
        })
}

/// Checks a snapshot exactly as `start` and `apply` would, without running anything.
#[napi]
pub fn check_snapshot(snapshot_json: String) -> napi::Result<()> {
    plane::prepare(&snapshot_json)
        .map(|_| ())
        .map_err(|e| err("QMESH_ERR_CONFIG", e))
}
