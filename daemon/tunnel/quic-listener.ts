// The server side of every tunnel: one UDP socket on listen.quic. Datagrams
// from addresses that are not configured peers are dropped before quiche sees
// them; an Initial from a peer creates a connection whose certificate must
// carry exactly that peer's SPIFFE id. Streams the peer opens go to inbound/.
// Short packets for connections we no longer know (we restarted) get a
// stateless reset, so the peer's stale tunnel dies at once instead of idling out.
// A peer re-establishing its tunnel (certificate rotation) dials a second
// connection: the old one keeps its streams until they finish, or until it falls
// silent (the peer restarted). No connection outlives the certificates it was
// authenticated with.
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import type { PeerConfig } from '../config/load.js';
import { ErrorCodes, QmeshError } from '../errors.js';
import type { Logger } from '../log.js';
import { checkPeerCertificate } from '../identity/peer-identity.js';
import { earliest, timerAt, type Validity } from '../identity/validity.js';
import { AppError, CID_BYTES, literalLookup, quiche, type HostPort, type QuicheConfig } from './quiche.js';
import type { StreamPipe } from './stream-pipe.js';
import { newTrafficCounters, TunnelConnection, type TrafficCounters } from './tunnel-connection.js';
import { UdpSender } from './udp-sender.js';
import { mintRetryToken, verifyRetryToken } from './retry-token.js';

/** How often a superseded connection is checked for silence (no datagram for 3 keep-alives: the peer left it). */
const SUPERSEDED_POLL_MS = 250;

/** 'under-load' starts answering with Retry once this many handshakes are in progress. */
const RETRY_WHEN_HANDSHAKING = 2;
/** Smallest UDP payload a client Initial may arrive in (RFC 9000 14.1). */
const MIN_INITIAL_DATAGRAM = 1200;
/** Stateless resets sent per second at most (RFC 9000 10.3.3): garbage must not buy work and output. */
const RESETS_PER_SECOND = 100;
/** 'under-load' also means: quiche refused an Initial this recently (garbage Initials are load too). */
const GARBAGE_INITIAL_WINDOW_MS = 1000;

export interface QuicListenerOptions {
  readonly listen: { host: string; port: number; family: 4 | 6 };
  readonly peers: () => readonly PeerConfig[];
  readonly trustDomain: string;
  readonly quicheConfig: () => QuicheConfig;
  /** Our own certificate's validity (the one quicheConfig() presents). */
  readonly ownValidity: () => Validity;
  /** Secret for stateless-reset tokens; derived from the host key so it survives restarts. */
  readonly resetKey: Buffer;
  readonly keepAliveMs: number;
  readonly maxDatagramBytes: number;
  readonly maxConnections: number;
  /** Handshakes in progress at once; more Initials are dropped. */
  readonly maxHandshakes: number;
  readonly addressValidation: 'always' | 'under-load' | 'never';
  readonly onStream: (conn: TunnelConnection, peer: PeerConfig, streamId: number) => StreamPipe | null;
  /** A peer's connection to us was verified: the peer is up (our own tunnel to it may re-dial now). */
  readonly onPeerUp?: (peer: PeerConfig, peerCert: Uint8Array | undefined) => void;
  readonly log: Logger;
}

export class QuicListener {
  private socket: dgram.Socket | null = null;
  private readonly byCid = new Map<string, TunnelConnection>();
  /** The peer address each connection was accepted from (migration is disabled). */
  private readonly addressOf = new WeakMap<TunnelConnection, HostPort>();
  /** The live verified connection from each peer (a newer one replaces an older one). */
  readonly fromPeer = new Map<string, TunnelConnection>();
  /** Traffic per peer on the connections it dialled to us (inbound streams). */
  readonly traffic = new Map<string, TrafficCounters>();
  droppedDatagrams = 0;
  retriesSent = 0;
  /** Connections created whose handshake has not finished. */
  private handshaking = 0;
  get handshakesInProgress(): number {
    return this.handshaking;
  }
  private readonly retryKey: Buffer;
  refusedHandshakes = 0;
  private resetWindowStart = 0;
  private resetsInWindow = 0;
  private lastGarbageInitialAt = -Infinity;
  private readonly log: Logger;
  private local!: HostPort;

  constructor(private readonly opts: QuicListenerOptions) {
    this.log = opts.log.child({ component: 'quic-listener' });
    this.retryKey = crypto.createHmac('sha256', opts.resetKey).update('qmesh retry token v1').digest();
  }

  async start(): Promise<void> {
    const { host, port, family } = this.opts.listen;
    const socket = dgram.createSocket({ type: family === 6 ? 'udp6' : 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20, lookup: literalLookup });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', (err: NodeJS.ErrnoException) =>
        reject(new QmeshError(ErrorCodes.LISTEN, `cannot listen for QUIC on ${host}:${port}: ${err.code ?? err.message} (is the address on this host, is another daemon running?)`, { cause: err })),
      );
      socket.bind({ address: host, port }, () => resolve());
    });
    socket.on('error', (err) => this.log.warn({ err: String(err) }, 'QUIC socket error'));
    socket.on('message', (msg, rinfo) => this.onDatagram(msg, rinfo));
    this.socket = socket;
    this.local = { host, port };
    this.log.info({ listen: `${host}:${port}` }, 'QUIC listener ready');
  }

  private peerAt(address: string): PeerConfig | undefined {
    return this.opts.peers().find((p) => p.endpoint.host === address);
  }

  private onDatagram(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    // Fast path, once per data packet: a short header (first bit 0) carries our 20-byte CID
    // right after the first byte; the connection remembers which peer address it belongs to.
    if (msg.length > CID_BYTES && (msg[0]! & 0x80) === 0) {
      const known = this.byCid.get(msg.toString('latin1', 1, 1 + CID_BYTES));
      const from = known && this.addressOf.get(known);
      if (from && from.host === rinfo.address && from.port === rinfo.port) {
        known.recv(msg, from, this.local);
        return;
      }
    }
    const peer = this.peerAt(rinfo.address);
    if (!peer) {
      this.droppedDatagrams++; // not a configured peer: never reaches quiche
      return;
    }
    let header;
    try {
      header = quiche.Header.fromSlice(msg, CID_BYTES);
    } catch {
      this.droppedDatagrams++;
      return;
    }
    const from: HostPort = { host: rinfo.address, port: rinfo.port };
    const conn = this.byCid.get(Buffer.from(header.dcid).toString('latin1'));
    if (conn) {
      if (this.addressOf.get(conn)?.host !== rinfo.address) {
        this.droppedDatagrams++; // another peer's connection id: not for this sender
        return;
      }
      conn.recv(msg, from, this.local);
      return;
    }
    if (header.ty === quiche.Type.Short) {
      this.sendStatelessReset(header.dcid, msg.length, from);
      return;
    }
    // RFC 9000 14.1 and 6: a datagram that could start a connection is at least 1200 bytes.
    // Smaller ones get no Retry, no version negotiation and no state (no amplification, no work).
    if (header.ty !== quiche.Type.Initial || msg.length < MIN_INITIAL_DATAGRAM) {
      this.droppedDatagrams++;
      return;
    }
    if (!quiche.versionIsSupported(header.version)) {
      const out = Buffer.allocUnsafe(1350);
      const n = quiche.negotiateVersion(header.scid, header.dcid, out);
      this.socket?.send(out.subarray(0, n), from.port, from.host);
      return;
    }
    if (this.byCid.size / 2 >= this.opts.maxConnections || this.handshaking >= this.opts.maxHandshakes) {
      this.refusedHandshakes++;
      return;
    }
    // Address validation: no state for an Initial until it brings back a Retry token.
    const mode = this.opts.addressValidation;
    const underLoad = this.handshaking >= RETRY_WHEN_HANDSHAKING || Date.now() - this.lastGarbageInitialAt < GARBAGE_INITIAL_WINDOW_MS;
    const retryNow = mode === 'always' || (mode === 'under-load' && underLoad);
    if (header.token && header.token.length > 0) {
      const odcid = verifyRetryToken(this.retryKey, from.host, from.port, header.token);
      if (!odcid) {
        this.droppedDatagrams++; // forged, stale or for another address
        return;
      }
      this.accept(msg, header.dcid, Buffer.from(header.dcid), odcid, peer, from);
      return;
    }
    if (retryNow) {
      const scid = crypto.randomBytes(CID_BYTES);
      const token = mintRetryToken(this.retryKey, from.host, from.port, header.dcid);
      const out = Buffer.allocUnsafe(1350);
      const n = quiche.retry(header.scid, header.dcid, scid, token, header.version, out);
      this.socket?.send(out.subarray(0, n), from.port, from.host);
      this.retriesSent++;
      return;
    }
    this.accept(msg, header.dcid, crypto.randomBytes(CID_BYTES), null, peer, from);
  }

  /**
   * Creates the connection for an Initial. `dcid` is what the client addressed; after a Retry
   * it is the CID we chose (so it becomes our scid) and `odcid` comes from the token.
   */
  private accept(msg: Buffer, dcid: Uint8Array, scid: Buffer, odcid: Buffer | null, peer: PeerConfig, from: HostPort): void {
    const config = this.opts.quicheConfig();
    const own = this.opts.ownValidity();
    let peerValidity: Validity | null = null;
    let expiry: NodeJS.Timeout | null = null;
    config.setStatelessResetToken(this.resetToken(scid));
    const quic = quiche.Connection.accept(scid, odcid, this.local, from, config);
    const log = this.log.child({ peer: peer.name, role: 'server' });
    const keys = [...new Set([Buffer.from(dcid).toString('latin1'), scid.toString('latin1')])];
    this.handshaking++;
    let handshakeCounted = true;
    const handshakeOver = (): void => {
      if (handshakeCounted) this.handshaking--;
      handshakeCounted = false;
    };
    const sender = new UdpSender(this.socket!, from);
    const conn = new TunnelConnection(
      quic,
      'server',
      (buf, offset, length, segment) => sender.send(buf, offset, length, segment),
      {
        verify: (c) => this.verify(c, peer, (v) => (peerValidity = v)),
        onEstablished: (c) => {
          handshakeOver();
          const previous = this.fromPeer.get(peer.name);
          this.fromPeer.set(peer.name, c);
          log.info({ from: `${from.host}:${from.port}`, peerNotAfter: peerValidity?.notAfter.toISOString() }, 'peer tunnel accepted');
          if (previous && previous !== c) this.supersede(previous, log);
          // Fail closed: the connection ends when a certificate it was authenticated with does.
          if (peerValidity) {
            const end = earliest(own, peerValidity).notAfter.getTime();
            expiry = timerAt(end, () => {
              if (c.closed) return;
              log.warn({ notAfter: new Date(end).toISOString() }, 'a certificate this tunnel was authenticated with expired; closing it');
              c.close(0x5, 'certificate expired');
            });
          }
          this.opts.onPeerUp?.(peer, c.quic.peerCertChain()?.[0]);
        },
        onNewStream: (c, id) => this.opts.onStream(c, peer, id),
        onClosed: (c, reason) => {
          handshakeOver();
          if (expiry) clearTimeout(expiry);
          for (const k of keys) this.byCid.delete(k);
          if (this.fromPeer.get(peer.name) === c) this.fromPeer.delete(peer.name);
          if (c.verified) log.info({ reason }, 'peer tunnel closed');
          else if (firstDatagram) {
            // quiche gave up on the very Initial that created it (garbage from a peer's
            // address): a dropped datagram, not a handshake; no warning per datagram.
            this.droppedDatagrams++;
            this.lastGarbageInitialAt = Date.now();
            log.debug({ reason }, 'Initial not accepted by quiche');
          } else {
            this.refusedHandshakes++;
            log.warn({ reason }, 'peer handshake failed');
          }
        },
      },
      log,
      this.opts.maxDatagramBytes,
      this.opts.keepAliveMs,
      this.trafficOf(peer.name),
    );
    for (const k of keys) this.byCid.set(k, conn);
    this.addressOf.set(conn, from);
    let firstDatagram = true;
    conn.recv(msg, from, this.local);
    firstDatagram = false;
  }

  trafficOf(name: string): TrafficCounters {
    let t = this.traffic.get(name);
    if (!t) this.traffic.set(name, (t = newTrafficCounters()));
    return t;
  }

  /**
   * The peer dialled again. Re-establishing make-before-break, it still uses the old connection
   * until ours is confirmed on its side, then closes the old one once its streams are done: so
   * the old one is left to the peer. If it falls silent the peer restarted or lost the path:
   * then it is closed here (its streams are dead anyway).
   */
  private supersede(previous: TunnelConnection, log: Logger): void {
    const silentAfter = Math.max(3, Math.ceil((3 * this.opts.keepAliveMs) / SUPERSEDED_POLL_MS));
    let seen = previous.datagramsIn;
    let quiet = 0;
    const check = (): void => {
      if (previous.closed) return;
      quiet = previous.datagramsIn === seen ? quiet + 1 : 0;
      seen = previous.datagramsIn;
      if (quiet >= silentAfter) {
        log.info({ streams: previous.streams.size }, 'old peer connection went silent; closing it');
        previous.close(0x5, 'replaced by a newer connection');
        return;
      }
      setTimeout(check, SUPERSEDED_POLL_MS).unref();
    };
    check();
  }

  private verify(c: TunnelConnection, peer: PeerConfig, peerValidity: (v: Validity) => void): string | null {
    const der = c.quic.peerCertChain()?.[0];
    if (!der) return 'peer presented no client certificate';
    // The address says which peer this must be; the certificate must say the same.
    const result = checkPeerCertificate(der, { trustDomain: this.opts.trustDomain, expectedName: peer.name });
    if (!result.ok) return `${result.reason} (datagrams came from ${peer.name}'s endpoint)`;
    c.peerName = result.name;
    peerValidity(result);
    return null;
  }

  private resetToken(cid: Uint8Array): bigint {
    const mac = crypto.createHmac('sha256', this.opts.resetKey).update(cid).digest();
    return mac.readBigUInt64BE(0) << 64n | mac.readBigUInt64BE(8);
  }

  /** RFC 9000 10.3: looks like a short packet, ends with the token for the unknown CID. */
  private sendStatelessReset(dcid: Uint8Array, receivedBytes: number, to: HostPort): void {
    if (receivedBytes < 43) return; // must be smaller than what triggered it, and at least 22 + CID bytes
    const now = Date.now();
    if (now - this.resetWindowStart >= 1000) {
      this.resetWindowStart = now;
      this.resetsInWindow = 0;
    }
    if (++this.resetsInWindow > RESETS_PER_SECOND) {
      this.droppedDatagrams++; // a flood of unknown CIDs: the real stale peer gets one of the first resets
      return;
    }
    const token = this.resetToken(dcid);
    const len = Math.min(receivedBytes - 1, 43);
    const out = crypto.randomBytes(len);
    out[0] = (out[0]! & 0x3f) | 0x40;
    out.writeBigUInt64BE(token >> 64n, len - 16);
    out.writeBigUInt64BE(token & 0xffffffffffffffffn, len - 8);
    this.socket?.send(out, to.port, to.host);
  }

  /** Closes the connection a peer dialled to us (the peer was removed from the config). */
  dropPeer(name: string, reason: string): void {
    for (const c of this.connections()) if (c.peerName === name) c.close(0x5, reason);
  }

  /** Closes every accepted connection whose peer certificate `untrusted` rejects (the CA bundle changed). */
  closeUntrusted(untrusted: (c: TunnelConnection) => boolean, reason: string): void {
    for (const c of this.connections()) {
      if (!c.verified || !untrusted(c)) continue;
      this.log.warn({ peer: c.peerName, reason }, 'closing peer tunnel');
      c.close(AppError.IDENTITY, reason);
    }
  }

  connections(): TunnelConnection[] {
    return [...new Set(this.byCid.values())];
  }

  async stop(reason = 'daemon stopping'): Promise<void> {
    for (const c of this.connections()) c.close(0x5, reason);
    const s = this.socket;
    this.socket = null;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}
