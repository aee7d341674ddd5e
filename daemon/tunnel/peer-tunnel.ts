// The outbound tunnel to one peer (client role): dialled at start-up from a UDP
// socket connect()ed to the peer (so ICMP port-unreachable surfaces at once as
// ECONNREFUSED), kept alive, re-dialled with capped exponential back-off when
// lost. capture/ asks it for a stream per captured TCP connection.
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import type { PeerConfig } from '../config/load.js';
import { ErrorCodes, QmeshError } from '../errors.js';
import type { Logger } from '../log.js';
import { checkPeerCertificate } from '../identity/peer-identity.js';
import { CID_BYTES, literalLookup, quiche, type HostPort, type QuicheConfig } from './quiche.js';
import { newTrafficCounters, TunnelConnection } from './tunnel-connection.js';
import { UdpSender } from './udp-sender.js';

export type TunnelState = 'connecting' | 'up' | 'down' | 'stopped';

export interface PeerTunnelOptions {
  readonly peer: PeerConfig;
  readonly localHost: string; // our underlay address (listen.quic host)
  readonly trustDomain: string;
  readonly quicheConfig: () => QuicheConfig;
  readonly tunnel: {
    readonly keepAliveMs: number;
    readonly connectTimeoutMs: number;
    readonly reconnectMinMs: number;
    readonly reconnectMaxMs: number;
    readonly maxDatagramBytes: number;
  };
  readonly log: Logger;
}

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
  peerIsUp(): void {
    if (this.state === 'down') {
      this.backoffMs = this.opts.tunnel.reconnectMinMs;
      this.dial();
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
    const { endpoint } = this.peer;
    const socket = dgram.createSocket({
      type: endpoint.family === 6 ? 'udp6' : 'udp4',
      lookup: literalLookup,
      // Bursts from a peer must not overflow the default ~200 KiB (capped by net.core.rmem_max).
      recvBufferSize: 4 << 20,
      sendBufferSize: 4 << 20,
    });
    this.socket = socket;
    socket.on('error', (err: NodeJS.ErrnoException) => this.lost(`udp ${err.code ?? err.message}`));
    socket.bind({ address: this.opts.localHost, port: 0 }, () => {
      if (this.socket !== socket) return;
      socket.connect(endpoint.port, endpoint.host, () => {
        if (this.socket !== socket) return;
        this.startHandshake(socket);
      });
    });
  }

  private startHandshake(socket: dgram.Socket): void {
    const local: HostPort = { host: this.opts.localHost, port: socket.address().port };
    const remote: HostPort = { host: this.peer.endpoint.host, port: this.peer.endpoint.port };
    const sender = new UdpSender(socket, null);
    // The server name is the peer's host name: BoringSSL checks it against the DNS SAN.
    const quic = quiche.Connection.connect(this.peer.name, crypto.randomBytes(CID_BYTES), local, remote, this.opts.quicheConfig());
    const conn = new TunnelConnection(
      quic,
      'client',
      (buf, offset, length, segment) => sender.send(buf, offset, length, segment),
      {
        verify: (c) => this.verify(c),
        onEstablished: (c) => this.established(c),
        onConfirmed: (c) => this.confirmed(c),
        onClosed: (c, reason) => {
          if (this.connection === c) this.lost(reason);
        },
      },
      this.log,
      this.opts.tunnel.maxDatagramBytes,
      this.opts.tunnel.keepAliveMs,
      this.traffic,
    );
    this.connection = conn;
    socket.on('message', (msg) => conn.recv(msg, remote, local));
    // Linux answers only one port-unreachable per second per host, so a re-dial may hear
    // nothing: give up on a handshake after connectTimeoutMs rather than quiche's idle timeout.
    this.handshakeTimer = setTimeout(() => {
      this.handshakeTimer = null;
      if (this.connection === conn && !conn.verified) this.lost(`no handshake within ${this.opts.tunnel.connectTimeoutMs} ms`);
    }, this.opts.tunnel.connectTimeoutMs);
    conn.flush();
  }

  private verify(c: TunnelConnection): string | null {
    const der = c.quic.peerCertChain()?.[0];
    if (!der) return 'peer presented no certificate';
    const result = checkPeerCertificate(der, { trustDomain: this.opts.trustDomain, expectedName: this.peer.name });
    if (!result.ok) return result.reason;
    c.peerName = result.name;
    return null;
  }

  /** We verified the server: waiting connections may go (their streams die if the server refuses us). */
  private established(c: TunnelConnection): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.resolve(c);
    }
    this.waiters.clear();
  }

  /** The server accepted us too: only now is the tunnel up and the back-off reset. */
  private confirmed(_c: TunnelConnection): void {
    this.state = 'up';
    this.upSince = Date.now();
    this.handshakes++;
    this.lastError = null;
    this.backoffMs = this.opts.tunnel.reconnectMinMs;
    this.outageLogged = null;
    this.log.info({ endpoint: `${this.peer.endpoint.host}:${this.peer.endpoint.port}` }, 'tunnel up');
  }

  /** The connection or its socket failed: fail waiters fast, re-dial after back-off. */
  private lost(reason: string): void {
    if (this.state === 'stopped') return;
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
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
    s.on('error', () => {});
    try {
      s.close();
    } catch {
      // already closed
    }
  }

  /** Ends the tunnel for good (daemon stop or peer removed). */
  stop(reason = 'daemon stopping'): void {
    if (this.redialTimer) clearTimeout(this.redialTimer);
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(this.downError(reason));
    }
    this.waiters.clear();
    const conn = this.connection;
    this.state = 'stopped';
    this.connection = null;
    conn?.close(0x5, reason);
    // Let the CONNECTION_CLOSE leave before the socket goes.
    const s = this.socket;
    this.socket = null;
    if (s) setTimeout(() => { try { s.close(); } catch { /* closed */ } }, 50).unref();
  }
}
