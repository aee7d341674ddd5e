//! The outbound tunnel to one peer (client role): dialled at start-up, kept alive,
//! re-dialled with capped exponential back-off when lost. Captured flows ask `ready()`
//! for it. `renew()` re-establishes it make-before-break (new credentials, a peer's new
//! certificate, or a certificate it was authenticated with about to expire): new flows
//! move to the new connection once the peer confirmed it; the old one closes when its
//! last flow is done. No connection outlives the certificates it was authenticated with.
use super::status::{DialStatus, OutboundView, TunnelState};
use super::validity::{expiry, iso, now_ms, own_not_after};
use super::{transport, FlowOnTunnel, Tunnel};
use crate::app_error;
use crate::events::Level;
use crate::fields;
use crate::identity::Verdict;
use crate::plane::Shared;
use crate::snapshot::Peer;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

pub struct Dialer {
    pub peer: Arc<Peer>,
    pub link: super::Link,
    status: Mutex<DialStatus>,
    /// The connection new flows use: published once we verified the server.
    live: watch::Sender<Option<Arc<Tunnel>>>,
    kick: Notify,
    /// ICMP said the peer's port is closed: a handshake in progress gives up now.
    unreachable: Notify,
    /// The live tunnel is being probed (liveness.rs): new flows wait for the answer
    /// instead of riding a tunnel that may be stale.
    verifying: watch::Sender<bool>,
    renew: Notify,
    renew_reason: Mutex<Option<String>>,
    stop: CancellationToken,
    /// Why it stopped, and whether its open flows may finish first (reload.deniedConnections).
    stop_reason: Mutex<(String, bool)>,
}

/// How a failed handshake reads in the log: the verifier's refusal when there is one.
pub fn describe_failure(
    err: &dyn std::fmt::Display,
    verdict: &Verdict,
) -> (String, Option<&'static str>) {
    match verdict.take() {
        Some(Err(r)) => (r.reason, Some(r.code)),
        _ => (err.to_string(), None),
    }
}

impl Dialer {
    pub fn spawn(shared: Arc<Shared>, peer: Arc<Peer>, rt: &tokio::runtime::Handle) -> Arc<Dialer> {
        let d = Arc::new(Dialer {
            peer,
            link: super::Link::default(),
            status: Mutex::new(DialStatus::default()),
            live: watch::channel(None).0,
            kick: Notify::new(),
            unreachable: Notify::new(),
            verifying: watch::channel(false).0,
            renew: Notify::new(),
            renew_reason: Mutex::new(None),
            stop: shared.stop.child_token(),
            stop_reason: Mutex::new(("daemon stopping".into(), false)),
        });
        rt.spawn(d.clone().run(shared));
        d
    }

    fn with_status<R>(&self, f: impl FnOnce(&mut DialStatus) -> R) -> Option<R> {
        self.status.lock().ok().map(|mut s| f(&mut s))
    }

    pub fn view(&self) -> OutboundView {
        let link = self.link.view();
        self.with_status(|s| OutboundView {
            state: s.state,
            up_since_ms: s.up_since_ms,
            handshakes: s.handshakes,
            reconnects: s.reconnects,
            renewals: s.renewals,
            last_error: s.last_error.clone(),
            link,
        })
        .unwrap_or_default()
    }

    /// The live tunnel, waiting up to `timeout`; a tunnel in back-off is re-dialled now.
    pub async fn ready(&self, timeout: Duration) -> Result<FlowOnTunnel, String> {
        let started = Instant::now();
        let mut verifying = self.verifying.subscribe();
        if *verifying.borrow_and_update() {
            let _ = tokio::time::timeout(timeout, verifying.wait_for(|v| !*v)).await;
        }
        let timeout = timeout.saturating_sub(started.elapsed());
        let mut rx = self.live.subscribe();
        if let Some(t) = rx.borrow_and_update().clone() {
            if t.conn.close_reason().is_none() {
                return Ok(FlowOnTunnel::new(t));
            }
        }
        if self.with_status(|s| s.state) == Some(TunnelState::Down) {
            self.kick.notify_one();
        }
        let wait = async {
            loop {
                if rx.changed().await.is_err() {
                    return None;
                }
                if let Some(t) = rx.borrow_and_update().clone() {
                    if t.conn.close_reason().is_none() {
                        return Some(t);
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Some(t)) => Ok(FlowOnTunnel::new(t)),
            Ok(None) => Err(self.down_error("daemon stopping")),
            Err(_) => Err(self.down_error(&format!("no tunnel within {} ms", timeout.as_millis()))),
        }
    }

    fn down_error(&self, why: &str) -> String {
        let last = self.with_status(|s| s.last_error.clone()).flatten();
        match last {
            Some(l) => format!(
                "tunnel to {} is down ({why}; last error: {l})",
                self.peer.name
            ),
            None => format!("tunnel to {} is down ({why})", self.peer.name),
        }
    }

    /// The peer just reached us: it is up. Skip the back-off; if it presents another
    /// certificate than our tunnel saw, it rotated: re-establish ours too.
    /// A new connection from the peer may also mean it restarted and our tunnel is stale:
    /// the caller probes it (liveness.rs).
    pub fn peer_is_up(&self, peer_leaf: &[u8]) {
        match self.with_status(|s| s.state) {
            Some(TunnelState::Down) => self.kick.notify_one(),
            Some(TunnelState::Up) => {
                let ours = self.live.borrow().as_ref().map(|t| t.peer_leaf.clone());
                if ours.is_some_and(|o| !o.is_empty() && o != peer_leaf) {
                    self.request_renewal("peer presented a new certificate");
                }
            }
            _ => {}
        }
    }

    /// Probes of this peer's tunnels started (true) or ended (false).
    pub fn set_verifying(&self, on: bool) {
        self.verifying.send_replace(on);
    }

    /// An ICMP error for the peer's endpoint: wakes only a handshake waiting now (no permit is kept).
    pub fn unreachable_hint(&self) {
        self.unreachable.notify_waiters();
    }

    pub fn request_renewal(&self, reason: &str) {
        if let Ok(mut r) = self.renew_reason.lock() {
            *r = Some(reason.to_string());
        }
        self.renew.notify_one();
    }

    /// Ends the dialer: a dial in progress is abandoned; the open connections close now, or
    /// (`finish`) each once its last flow is done.
    pub fn stop(&self, reason: &str, finish: bool) {
        if let Ok(mut r) = self.stop_reason.lock() {
            *r = (reason.to_string(), finish);
        }
        self.stop.cancel();
    }

    fn stop_reason(&self) -> String {
        self.stop_reason
            .lock()
            .map(|r| r.0.clone())
            .unwrap_or_default()
    }

    async fn run(self: Arc<Self>, shared: Arc<Shared>) {
        let mut backoff = Duration::from_millis(shared.snapshot.load().tunnel.reconnect_min_ms);
        let mut outage_logged: Option<String> = None;
        loop {
            let dial_started = Instant::now();
            self.with_status(|s| s.state = TunnelState::Connecting);
            let result = tokio::select! {
                r = self.dial(&shared, true) => r,
                _ = self.stop.cancelled() => break,
            };
            match result {
                Ok(t) => {
                    let was = self.up(&shared, &t);
                    outage_logged = None;
                    backoff = Duration::from_millis(shared.snapshot.load().tunnel.reconnect_min_ms);
                    let why = self.hold(&shared, t).await;
                    if self.stop.is_cancelled() {
                        break;
                    }
                    self.live.send_replace(None);
                    self.with_status(|s| {
                        s.state = TunnelState::Down;
                        s.up_since_ms = None;
                        s.last_error = Some(why.clone());
                    });
                    shared.emit(Level::Warn, "tunnel", "tunnel down", fields! {"peer" => self.peer.name, "role" => "client", "reason" => why, "upForMs" => was.elapsed().as_millis() as u64});
                }
                Err((why, code, refused)) => {
                    self.live.send_replace(None);
                    self.with_status(|s| {
                        s.state = TunnelState::Down;
                        s.last_error = Some(why.clone());
                    });
                    if outage_logged.as_deref() != Some(why.as_str()) {
                        let msg = if refused {
                            "peer refused our tunnel"
                        } else if code.is_some() {
                            "tunnel handshake refused"
                        } else {
                            "cannot reach peer"
                        };
                        shared.emit(Level::Warn, "tunnel", msg, fields! {"peer" => self.peer.name, "role" => "client", "reason" => why, "code" => code});
                        outage_logged = Some(why.clone());
                    } else {
                        shared.emit(
                            Level::Debug,
                            "tunnel",
                            "dial failed",
                            fields! {"peer" => self.peer.name, "reason" => why},
                        );
                    }
                }
            }
            self.with_status(|s| s.reconnects += 1);
            // Back-off; a flow waiting or the peer reaching us cuts it short (but never below reconnectMinMs between dials).
            let min = Duration::from_millis(shared.snapshot.load().tunnel.reconnect_min_ms);
            tokio::select! {
                _ = tokio::time::sleep(jittered(backoff, min)) => {}
                _ = self.kick.notified() => {
                    tokio::time::sleep(min.saturating_sub(dial_started.elapsed())).await;
                }
                _ = self.stop.cancelled() => break,
            }
            let max = Duration::from_millis(shared.snapshot.load().tunnel.reconnect_max_ms);
            backoff = (backoff * 2).min(max);
        }
        let (why, finish) = self
            .stop_reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        // No new flow takes a tunnel of a stopped dialer.
        self.live.send_replace(None);
        self.with_status(|s| s.state = TunnelState::Stopped);
        for t in self.link.live() {
            if finish && !shared.stop.is_cancelled() {
                super::close_when_idle(&t, why.as_bytes()).await;
            } else {
                t.conn.close(app_error::SHUTDOWN.into(), why.as_bytes());
            }
            self.link.remove(&t);
        }
    }

    fn up(&self, shared: &Shared, t: &Arc<Tunnel>) -> Instant {
        self.with_status(|s| {
            s.state = TunnelState::Up;
            s.up_since_ms = Some(now_ms());
            s.handshakes += 1;
            s.last_error = None;
        });
        shared.emit(
            Level::Info,
            "tunnel",
            "tunnel up",
            fields! {"peer" => self.peer.name, "role" => "client", "endpoint" => self.peer.endpoint.to_string(), "peerNotAfter" => iso(t.peer.not_after_unix), "ownNotAfter" => iso(own_not_after(shared))},
        );
        Instant::now()
    }

    /// One handshake. `publish_early`: hand the connection to waiting flows as soon as we
    /// verified the server (a request may ride with our Finished), before the server
    /// confirmed it verified us. Err: (reason, refusal code, refused-after-establishment).
    async fn dial(
        &self,
        shared: &Shared,
        publish_early: bool,
    ) -> Result<Arc<Tunnel>, (String, Option<&'static str>, bool)> {
        let snap = shared.snapshot.load_full();
        let creds = shared.creds.load_full();
        let timeout = Duration::from_millis(snap.tunnel.connect_timeout_ms);
        let (config, verdict) = transport::client_config_for(&snap, &creds, &self.peer.name)
            .map_err(|e| (e, None, false))?;
        let connecting = shared
            .endpoint
            .connect_with(config, self.peer.endpoint.0, &self.peer.name)
            .map_err(|e| (format!("cannot dial: {e}"), None, false))?;
        let started = Instant::now();
        // Dropping `connecting` abandons the handshake (quinn closes it).
        let handshake = tokio::select! {
            r = tokio::time::timeout(timeout, connecting) => r,
            _ = self.unreachable.notified() => return Err(("peer unreachable (ICMP: its QUIC port is closed)".into(), None, false)),
            _ = self.stop.cancelled() => return Err((format!("dial abandoned: {}", self.stop_reason()), None, false)),
        };
        let conn = match handshake {
            Err(_) => {
                return Err((
                    format!("no handshake within {} ms", timeout.as_millis()),
                    None,
                    false,
                ))
            }
            Ok(Err(e)) => {
                let (why, code) = describe_failure(&e, &verdict);
                return Err((why, code, false));
            }
            Ok(Ok(c)) => c,
        };
        let id = match verdict.take() {
            Some(Ok(id)) => id,
            Some(Err(r)) => {
                conn.close(app_error::IDENTITY.into(), b"peer identity refused");
                return Err((r.reason, Some(r.code), false));
            }
            None => {
                conn.close(app_error::IDENTITY.into(), b"no verified peer identity");
                return Err((
                    "the peer's certificate was not verified".into(),
                    None,
                    false,
                ));
            }
        };
        // A reload may have removed the peer (or moved it) while the handshake ran.
        if self.stop.is_cancelled()
            || shared
                .snapshot
                .load()
                .peer_named(&self.peer.name)
                .is_none_or(|p| p.endpoint != self.peer.endpoint)
        {
            conn.close(app_error::SHUTDOWN.into(), b"peer removed from config");
            shared.emit(
                Level::Warn,
                "tunnel",
                "tunnel refused: peer removed from config during the handshake",
                fields! {"peer" => self.peer.name, "role" => "client"},
            );
            return Err((
                "peer removed from config during the handshake".into(),
                None,
                false,
            ));
        }
        let t = Arc::new(Tunnel::new(conn, id));
        if publish_early {
            self.live.send_replace(Some(t.clone()));
        }
        // The server confirms the handshake (HANDSHAKE_DONE) once it verified our certificate.
        let left = timeout.saturating_sub(started.elapsed());
        let confirmed = tokio::time::timeout(left, async {
            loop {
                if t.conn.stats().frame_rx.handshake_done > 0 {
                    return Ok(());
                }
                tokio::select! {
                    e = t.conn.closed() => return Err(e),
                    _ = self.stop.cancelled() => return Err(quinn::ConnectionError::LocallyClosed),
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
        })
        .await;
        if self.stop.is_cancelled() {
            let why = self.stop_reason();
            t.conn.close(app_error::SHUTDOWN.into(), why.as_bytes());
            return Err((format!("dial abandoned: {why}"), None, false));
        }
        match confirmed {
            Ok(Ok(())) => {
                self.link.add(t.clone());
                Ok(t)
            }
            Ok(Err(e)) => Err((
                format!("the peer refused our tunnel: {}", super::describe_close(&e)),
                None,
                true,
            )),
            Err(_) => {
                t.conn
                    .close(app_error::SHUTDOWN.into(), b"handshake not confirmed");
                Err((
                    format!("handshake not confirmed within {} ms", timeout.as_millis()),
                    None,
                    false,
                ))
            }
        }
    }

    /// Keeps the tunnel until it is lost or stopped, renewing it when asked (or before a
    /// certificate it was authenticated with expires); returns why it ended. A renewal that
    /// fails leaves the current connection in place and is retried with capped back-off.
    async fn hold(&self, shared: &Arc<Shared>, first: Arc<Tunnel>) -> String {
        let mut current = first;
        // Already past the renewal point (a renewal gave the same certificates): only the hard end is left.
        let mut expiry_renewal_done = expiry(shared, &current).0 <= Instant::now();
        let mut retry: Option<(Instant, Duration, String)> = None;
        loop {
            let (renew_at, end_at) = expiry(shared, &current);
            let attempt: String = tokio::select! {
                e = current.conn.closed() => {
                    self.link.remove(&current);
                    return super::describe_close(&e);
                }
                _ = self.stop.cancelled() => return self.stop_reason(),
                _ = self.renew.notified() => self.renew_reason.lock().ok().and_then(|mut r| r.take()).unwrap_or_else(|| "renewal".into()),
                _ = tokio::time::sleep_until(renew_at.into()), if !expiry_renewal_done && renew_at < end_at => {
                    expiry_renewal_done = true;
                    "a certificate this tunnel was authenticated with expires soon".into()
                }
                _ = sleep_until_some(retry.as_ref().map(|r| r.0)), if retry.is_some() => {
                    retry.as_ref().map(|r| r.2.clone()).unwrap_or_default()
                }
                _ = tokio::time::sleep_until(end_at.into()) => {
                    shared.emit(Level::Warn, "tunnel", "a certificate this tunnel was authenticated with expired; closing it", fields! {"peer" => self.peer.name});
                    current.conn.close(app_error::SHUTDOWN.into(), b"certificate expired");
                    let e = current.conn.closed().await;
                    self.link.remove(&current);
                    return super::describe_close(&e);
                }
            };
            match self.renew_now(shared, current.clone(), &attempt).await {
                Ok(new) => {
                    current = new;
                    retry = None;
                    expiry_renewal_done = expiry(shared, &current).0 <= Instant::now();
                }
                Err(()) => {
                    let t = &shared.snapshot.load().tunnel;
                    let (min, max) = (
                        Duration::from_millis(t.reconnect_min_ms),
                        Duration::from_millis(t.reconnect_max_ms),
                    );
                    let delay = retry.as_ref().map_or(min, |r| (r.1 * 2).min(max));
                    retry = Some((Instant::now() + delay, delay, attempt));
                }
            }
        }
    }

    async fn renew_now(
        &self,
        shared: &Arc<Shared>,
        old: Arc<Tunnel>,
        reason: &str,
    ) -> Result<Arc<Tunnel>, ()> {
        shared.emit(
            Level::Info,
            "tunnel",
            "re-establishing tunnel (make-before-break)",
            fields! {"peer" => self.peer.name, "reason" => reason},
        );
        match self.dial(shared, false).await {
            Ok(new) => {
                self.with_status(|s| {
                    s.renewals += 1;
                    s.handshakes += 1;
                });
                self.live.send_replace(Some(new.clone()));
                shared.emit(
                    Level::Info,
                    "tunnel",
                    "tunnel re-established",
                    fields! {"peer" => self.peer.name, "role" => "client", "reason" => reason, "oldStreams" => old.flows.load(Relaxed), "peerNotAfter" => iso(new.peer.not_after_unix), "ownNotAfter" => iso(own_not_after(shared))},
                );
                tokio::spawn(retire(shared.clone(), self.peer.name.clone(), old));
                Ok(new)
            }
            Err((why, _, _)) => {
                shared.emit(
                    Level::Warn,
                    "tunnel",
                    "re-establishing the tunnel failed; the current connection carries on",
                    fields! {"peer" => self.peer.name, "reason" => reason, "error" => why},
                );
                drop(old);
                Err(())
            }
        }
    }
}

/// The back-off less up to a fifth of it, at random, never below `min`. Dialers that fail
/// together (many dead peers, all dialled at start, each handshake timing out alike) would
/// otherwise re-dial in waves, and each dial starts its handshake under the endpoint's lock.
fn jittered(backoff: Duration, min: Duration) -> Duration {
    use ring::rand::SecureRandom;
    let mut r = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut r).is_err() {
        return backoff;
    }
    let fraction = f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX);
    backoff
        .saturating_sub(backoff.mul_f64(fraction / 5.0))
        .max(min)
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The old connection of a renewal closes once its last flow is done.
async fn retire(shared: Arc<Shared>, peer: String, old: Arc<Tunnel>) {
    super::close_when_idle(&old, b"replaced by a newer connection").await;
    if let Some(d) = shared.dialer(&peer) {
        d.link.remove(&old);
    }
    shared.emit(
        Level::Info,
        "tunnel",
        "old tunnel connection closed after its streams finished",
        fields! {"peer" => peer, "ageMs" => old.created.elapsed().as_millis() as u64},
    );
}
