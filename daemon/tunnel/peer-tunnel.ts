// The outbound tunnel to one peer (client role): dialled at start-up from a UDP
// socket connect()ed to the peer (so ICMP port-unreachable surfaces at once as
// ECONNREFUSED), kept alive, re-dialled with capped exponential back-off when
// lost. capture/ asks it for a stream per captured TCP connection.
// renew() re-establishes it make-before-break (new credentials after a reload,
// or a certificate it was authenticated with about to expire): a second
// connection is dialled from a new socket, new streams move to it once the
// peer confirmed it, and the old one closes when its last stream is done.
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import type { PeerConfig } from '../config/load.js';
import { ErrorCodes, QmeshError } from '../errors.js';
import type { Logger } from '../log.js';
import { checkPeerCertificate } from '../identity/peer-identity.js';
import { earliest, renewMarginMs, timerAt, type Validity } from '../identity/validity.js';
import { AppError, CID_BYTES, literalLookup, quiche, type HostPort, type QuicheConfig } from './quiche.js';
import { newTrafficCounters, TunnelConnection } from './tunnel-connection.js';
import { UdpSender } from './udp-sender.js';

export type TunnelState = 'connecting' | 'up' | 'down' | 'stopped';

export interface PeerTunnelOptions {
  readonly peer: PeerConfig;
  readonly localHost: string; // our underlay address (listen.quic host)
  readonly trustDomain: string;
  readonly quicheConfig: () => QuicheConfig;
  /** Our own certificate's validity (the one quicheConfig() presents). */
  readonly ownValidity: () => Validity;
  readonly tunnel: {
    readonly keepAliveMs: number;
    readonly connectTimeoutMs: number;
    readonly reconnectMinMs: number;
    readonly reconnectMaxMs: number;
    readonly maxDatagramBytes: number;
  };
  readonly log: Logger;
}

/** A connection with the UDP socket it uses; each dial gets its own socket. */
interface Leg {
  readonly socket: dgram.Socket;
  conn: TunnelConnection | null;
  /** Our certificate's validity when this leg was dialled; the peer's is known once verified. */
  readonly own: Validity;
  peer: Validity | null;
  timer: NodeJS.Timeout | null;
}

/** How often a retiring connection is checked for its last stream. */
const RETIRE_POLL_MS = 100;

interface Waiter {
  resolve(c: TunnelConnection): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

export class PeerTunnel {
  state: TunnelState = 'down';
  connection: TunnelConnection | null = null;
  handshakes = 0;
  reconnects = 0;
  lastError: string | null = null;
  upSince: number | null = null;
  readonly traffic = newTrafficCounters();
  private socket: dgram.Socket | null = null;
  private backoffMs: number;
  private redialTimer: NodeJS.Timeout | null = null;
  private lastDialAt = 0;
  private waiters = new Set<Waiter>();
  /** The reason last warned about in the current outage (null: none yet). */
  private outageLogged: string | null = null;
  private handshakeTimer: NodeJS.Timeout | null = null;
  private readonly log: Logger;
  /** Validity of the certificates the live connection was authenticated with. */
  private ownAtDial: Validity | null = null;
  private peerValidity: Validity | null = null;
  private expiryTimer: NodeJS.Timeout | null = null;
  /** A make-before-break dial in progress, and old connections finishing their streams. */
  private renewal: Leg | null = null;
  private renewRetry: NodeJS.Timeout | null = null;
  private renewFailures = 0;
  /** Credentials changed while a plain dial was in flight: renew once it is up. */
  private renewWhenUp = false;
  private readonly retiring = new Set<{ socket: dgram.Socket; conn: TunnelConnection }>();
  /** Connections re-established by renew() (reloaded credentials or a certificate about to expire). */
  renewals = 0;

  constructor(private readonly opts: PeerTunnelOptions) {
    this.backoffMs = opts.tunnel.reconnectMinMs;
    this.log = opts.log.child({ peer: opts.peer.name, role: 'client' });
  }

  get peer(): PeerConfig {
    return this.opts.peer;
  }

  start(): void {
    this.dial();
  }

  /** Resolves with the live connection, waiting up to connectTimeoutMs; rejects fast if the peer refuses. */
  ready(): Promise<TunnelConnection> {
    // Usable once we verified the server: a request may ride with our Finished (cold = 2 RTT).
    if (this.connection?.verified && !this.connection.closed) return Promise.resolve(this.connection);
    if (this.state === 'stopped') return Promise.reject(this.downError('daemon stopping'));
    // A tunnel waiting out its back-off is re-dialled now: the caller is waiting.
    if (this.state === 'down' && Date.now() - this.lastDialAt >= this.opts.tunnel.reconnectMinMs) this.dial();
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(w);
          reject(this.downError(`no tunnel within ${this.opts.tunnel.connectTimeoutMs} ms`));
        }, this.opts.tunnel.connectTimeoutMs),
      };
      this.waiters.add(w);
    });
  }

  /** The peer just reached us, so it is up: skip whatever back-off is left. */
  /**
   * A peer's connection to us was verified. If our tunnel presents another certificate of that
   * peer, the peer rotated it: re-establish ours too, so no tunnel keeps an older authentication.
   */
  peerIsUp(peerCert?: Uint8Array): void {
    if (this.state === 'down') {
      this.backoffMs = this.opts.tunnel.reconnectMinMs;
      this.dial();
      return;
    }
    const ours = this.connection?.verified ? this.connection.quic.peerCertChain()?.[0] : undefined;
    if (this.state === 'up' && peerCert && ours && Buffer.compare(Buffer.from(peerCert), Buffer.from(ours)) !== 0) {
      this.renew('peer presented a new certificate');
    }
  }

  private downError(why: string): QmeshError {
    const last = this.lastError ? `; last error: ${this.lastError}` : '';
    return new QmeshError(ErrorCodes.TUNNEL_DOWN, `tunnel to ${this.peer.name} is down (${why}${last})`);
  }

  private dial(): void {
    if (this.state === 'stopped' || this.state === 'connecting') return;
    if (this.redialTimer) clearTimeout(this.redialTimer);
    this.redialTimer = null;
    this.teardownSocket();
    this.state = 'connecting';
    this.lastDialAt = Date.now();
    const own = this.opts.ownValidity();
    const socket = this.openSocket(
      (reason) => {
        if (this.socket === socket) this.lost(reason);
      },
      () => {
        if (this.socket === socket) this.startHandshake(socket, own);
      },
    );
    this.socket = socket;
  }

  /** A UDP socket bound to our underlay address and connect()ed to the peer. */
  private openSocket(onError: (reason: string) => void, onConnected: () => void): dgram.Socket {
    const { endpoint } = this.peer;
    const socket = dgram.createSocket({
      type: endpoint.family === 6 ? 'udp6' : 'udp4',
      lookup: literalLookup,
      // Bursts from a peer must not overflow the default ~200 KiB (capped by net.core.rmem_max).
      recvBufferSize: 4 << 20,
      sendBufferSize: 4 << 20,
    });
    socket.on('error', (err: NodeJS.ErrnoException) => onError(`udp ${err.code ?? err.message}`));
    socket.bind({ address: this.opts.localHost, port: 0 }, () => {
      try {
        socket.connect(endpoint.port, endpoint.host, onConnected);
      } catch (err) {
        onError(String((err as Error).message)); // closed meanwhile (tunnel stopped or renewal abandoned)
      }
    });
    return socket;
  }

  private newConnection(socket: dgram.Socket, hooks: { onEstablished(c: TunnelConnection): void; onConfirmed(c: TunnelConnection): void; onClosed(c: TunnelConnection, reason: string): void }, peerValidity: (v: Validity) => void): TunnelConnection {
    const local: HostPort = { host: this.opts.localHost, port: socket.address().port };
    const remote: HostPort = { host: this.peer.endpoint.host, port: this.peer.endpoint.port };
    const sender = new UdpSender(socket, null);
    // The server name is the peer's host name: BoringSSL checks it against the DNS SAN.
    const quic = quiche.Connection.connect(this.peer.name, crypto.randomBytes(CID_BYTES), local, remote, this.opts.quicheConfig());
    const conn = new TunnelConnection(
      quic,
      'client',
      (buf, offset, length, segment) => sender.send(buf, offset, length, segment),
      { verify: (c) => this.verify(c, peerValidity), ...hooks },
      this.log,
      this.opts.tunnel.maxDatagramBytes,
      this.opts.tunnel.keepAliveMs,
      this.traffic,
    );
    socket.on('message', (msg) => conn.recv(msg, remote, local));
    return conn;
  }

  private startHandshake(socket: dgram.Socket, own: Validity): void {
    let peer: Validity | null = null;
    const conn = this.newConnection(
      socket,
      {
        onEstablished: (c) => this.established(c),
        onConfirmed: (c) => {
          if (this.connection !== c) return;
          this.ownAtDial = own;
          this.peerValidity = peer;
          this.confirmed(c);
        },
        onClosed: (c, reason) => {
          if (this.connection === c) this.lost(reason);
        },
      },
      (v) => (peer = v),
    );
    this.connection = conn;
    // Linux answers only one port-unreachable per second per host, so a re-dial may hear
    // nothing: give up on a handshake after connectTimeoutMs rather than quiche's idle timeout.
    this.handshakeTimer = setTimeout(() => {
      this.handshakeTimer = null;
      if (this.connection === conn && !conn.verified) this.lost(`no handshake within ${this.opts.tunnel.connectTimeoutMs} ms`);
    }, this.opts.tunnel.connectTimeoutMs);
    conn.flush();
  }

  private verify(c: TunnelConnection, peerValidity: (v: Validity) => void): string | null {
    const der = c.quic.peerCertChain()?.[0];
    if (!der) return 'peer presented no certificate';
    const result = checkPeerCertificate(der, { trustDomain: this.opts.trustDomain, expectedName: this.peer.name });
    if (!result.ok) return result.reason;
    c.peerName = result.name;
    peerValidity(result);
    return null;
  }

  /** We verified the server: waiting connections may go (their streams die if the server refuses us). */
  private established(c: TunnelConnection): void {
    if (this.connection !== c) return;
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.resolve(c);
    }
    this.waiters.clear();
  }

  /** The server accepted us too: only now is the tunnel up and the back-off reset. */
  private confirmed(c: TunnelConnection): void {
    this.state = 'up';
    this.upSince = Date.now();
    this.handshakes++;
    this.lastError = null;
    this.backoffMs = this.opts.tunnel.reconnectMinMs;
    this.outageLogged = null;
    this.log.info({ endpoint: `${this.peer.endpoint.host}:${this.peer.endpoint.port}`, ...this.validityFields() }, 'tunnel up');
    this.armExpiry(c);
    if (this.renewWhenUp) {
      this.renewWhenUp = false;
      this.renew('credentials changed while the tunnel was connecting');
    }
  }

  private validityFields(): Record<string, string> {
    return {
      ownNotAfter: this.ownAtDial?.notAfter.toISOString() ?? '',
      peerNotAfter: this.peerValidity?.notAfter.toISOString() ?? '',
    };
  }

  /**
   * The live connection lasts no longer than the certificates it was authenticated with:
   * renewed a margin before the first of them expires, closed (fail closed) when it does.
   */
  private armExpiry(c: TunnelConnection): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    if (!this.ownAtDial || !this.peerValidity) return;
    const first = earliest(this.ownAtDial, this.peerValidity);
    const end = first.notAfter.getTime();
    const renewAt = end - renewMarginMs(first);
    const onExpiry = (): void => {
      if (this.connection !== c || c.closed) return;
      if (Date.now() >= end) {
        this.log.warn({ ...this.validityFields() }, 'a certificate this tunnel was authenticated with expired; closing it');
        c.close(0x5, 'certificate expired');
        return;
      }
      this.renew('a certificate this tunnel was authenticated with expires soon');
      this.expiryTimer = timerAt(end, onExpiry);
    };
    // Already past the renewal point (a renewal gave the same certificates): only the hard end is left.
    this.expiryTimer = timerAt(renewAt > Date.now() ? renewAt : end, onExpiry);
  }

  /**
   * Make-before-break: dials a second connection with the current credentials. The old one
   * keeps carrying new streams until the peer confirmed the new one, then only finishes its own.
   */
  renew(reason: string): void {
    if (this.state === 'stopped') return;
    if (this.state === 'connecting') {
      this.renewWhenUp = true; // that dial may have used the old credentials
      return;
    }
    if (this.state !== 'up' || !this.connection) return; // the next dial uses the current credentials anyway
    if (this.renewRetry) clearTimeout(this.renewRetry);
    this.renewRetry = null;
    this.abandonRenewal();
    const own = this.opts.ownValidity();
    let leg!: Leg;
    const fail = (why: string): void => {
      if (this.renewal === leg) this.renewalFailed(reason, why);
    };
    const socket = this.openSocket(fail, () => {
      if (this.renewal !== leg) return;
      leg.conn = this.newConnection(
        socket,
        {
          onEstablished: () => {},
          onConfirmed: (c) => {
            if (this.renewal === leg) this.promote(leg, c, reason);
          },
          onClosed: (c, why) => {
            if (this.connection === c) this.lost(why);
            else fail(why);
          },
        },
        (v) => (leg.peer = v),
      );
      leg.conn.flush();
    });
    const timer = setTimeout(() => fail(`no handshake within ${this.opts.tunnel.connectTimeoutMs} ms`), this.opts.tunnel.connectTimeoutMs);
    leg = { socket, conn: null, own, peer: null, timer };
    this.renewal = leg;
    this.log.info({ reason }, 're-establishing tunnel (make-before-break)');
  }

  /** Closes the live and retiring connections `untrusted` rejects (the CA bundle changed): fail closed. */
  closeUntrusted(untrusted: (c: TunnelConnection) => boolean, reason: string): void {
    for (const old of this.retiring) if (untrusted(old.conn)) old.conn.close(AppError.IDENTITY, reason);
    const c = this.connection;
    if (c?.verified && untrusted(c)) {
      this.log.warn({ reason }, 'closing tunnel');
      c.close(AppError.IDENTITY, reason); // lost() re-dials with the new bundle
    }
  }

  /** The renewed connection is confirmed by the peer: new streams go to it, the old one retires. */
  private promote(leg: Leg, c: TunnelConnection, reason: string): void {
    if (leg.timer) clearTimeout(leg.timer);
    this.renewal = null;
    this.renewFailures = 0;
    const old = this.connection && this.socket ? { conn: this.connection, socket: this.socket } : null;
    this.connection = c;
    this.socket = leg.socket;
    this.ownAtDial = leg.own;
    this.peerValidity = leg.peer;
    this.upSince = Date.now();
    this.handshakes++;
    this.renewals++;
    this.log.info({ reason, ...this.validityFields(), oldStreams: old?.conn.streams.size ?? 0 }, 'tunnel re-established');
    this.armExpiry(c);
    if (old) this.retire(old);
  }

  /** An old connection takes no new streams; it closes once its last stream is done. */
  private retire(old: { conn: TunnelConnection; socket: dgram.Socket }): void {
    this.retiring.add(old);
    const check = (): void => {
      if (!old.conn.closed && old.conn.streams.size > 0 && this.state !== 'stopped') {
        setTimeout(check, RETIRE_POLL_MS).unref();
        return;
      }
      this.retiring.delete(old);
      old.conn.close(0x5, 'replaced by a renewed connection');
      this.log.info({ ageMs: Date.now() - old.conn.createdAt }, 'old tunnel connection closed after its streams finished');
      setTimeout(() => closeQuietly(old.socket), 50).unref();
    };
    check();
  }

  private renewalFailed(reason: string, why: string): void {
    const leg = this.renewal;
    this.abandonRenewal();
    if (!leg || this.state === 'stopped') return;
    this.renewFailures++;
    const delay = Math.min(this.opts.tunnel.reconnectMinMs * 2 ** this.renewFailures, this.opts.tunnel.reconnectMaxMs);
    this.log.warn({ reason: why, retryInMs: delay }, 're-establishing the tunnel failed; the current connection carries on');
    this.renewRetry = setTimeout(() => {
      this.renewRetry = null;
      this.renew(reason);
    }, delay);
  }

  private abandonRenewal(): void {
    const leg = this.renewal;
    if (!leg) return;
    this.renewal = null;
    if (leg.timer) clearTimeout(leg.timer);
    leg.conn?.close(0x5, 'renewal abandoned');
    leg.socket.removeAllListeners('message');
    setTimeout(() => closeQuietly(leg.socket), 50).unref();
  }

  /** The connection or its socket failed: fail waiters fast, re-dial after back-off. */
  private lost(reason: string): void {
    if (this.state === 'stopped') return;
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    this.abandonRenewal(); // the re-dial below uses the current credentials
    const wasUp = this.state === 'up';
    this.lastError = reason;
    this.state = 'down';
    this.upSince = null;
    const conn = this.connection;
    this.connection = null;
    conn?.abort(reason);
    this.teardownSocket();
    // One warning per outage and per new reason; repeated re-dials for the same reason are debug.
    const refused = conn?.verified === true;
    const tls = /TLS alert|identity refused/.test(reason);
    if (wasUp || refused || this.outageLogged !== reason) {
      const msg = wasUp ? 'tunnel down' : refused ? 'peer refused our tunnel' : tls ? 'tunnel handshake refused' : 'cannot reach peer';
      this.log.warn({ reason }, msg);
      this.outageLogged = reason;
    } else this.log.debug({ reason }, 'dial failed');
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(this.downError(reason));
    }
    this.waiters.clear();
    this.reconnects++;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.opts.tunnel.reconnectMaxMs);
    this.redialTimer = setTimeout(() => this.dial(), delay);
  }

  private teardownSocket(): void {
    if (!this.socket) return;
    const s = this.socket;
    this.socket = null;
    s.removeAllListeners('message');
    closeQuietly(s);
  }

  /** Ends the tunnel for good (daemon stop or peer removed). */
  stop(reason = 'daemon stopping'): void {
    if (this.redialTimer) clearTimeout(this.redialTimer);
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    if (this.renewRetry) clearTimeout(this.renewRetry);
    this.abandonRenewal();
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(this.downError(reason));
    }
    this.waiters.clear();
    const conn = this.connection;
    this.state = 'stopped';
    this.connection = null;
    conn?.close(0x5, reason);
    for (const old of this.retiring) {
      old.conn.close(0x5, reason);
      setTimeout(() => closeQuietly(old.socket), 50).unref();
    }
    this.retiring.clear();
    // Let the CONNECTION_CLOSE leave before the socket goes.
    const s = this.socket;
    this.socket = null;
    if (s) setTimeout(() => closeQuietly(s), 50).unref();
  }
}

function closeQuietly(s: dgram.Socket): void {
  s.on('error', () => {});
  try {
    s.close();
  } catch {
    // already closed
  }
}
