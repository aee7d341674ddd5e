// One QUIC connection to a peer, driven on the raw quiche binding: datagrams in
// (recv), readable streams out to their StreamPipes, packets out in batches
// (flush, at most once per event-loop turn), and one timer for quiche's timeouts.
// PeerTunnel (client role) and QuicListener (server role) own these; the
// streams they carry are StreamPipes (stream-pipe.ts).
import type { Logger } from '../log.js';
import { AppError, type QuicheConnection } from './quiche.js';
import type { StreamPipe } from './stream-pipe.js';
import { GSO_MAX_BYTES, GSO_MAX_SEGMENTS } from './udp-sender.js';

export type Role = 'client' | 'server';

/** Per-peer traffic counters; they outlive connections (a re-dial keeps counting). */
export interface TrafficCounters {
  streamsTotal: number;
  streamsActive: number;
  bytesSent: number; // stream payload towards the peer
  bytesReceived: number; // stream payload from the peer
  datagramsSent: number;
  datagramsReceived: number;
}

export const newTrafficCounters = (): TrafficCounters => ({
  streamsTotal: 0,
  streamsActive: 0,
  bytesSent: 0,
  bytesReceived: 0,
  datagramsSent: 0,
  datagramsReceived: 0,
});

export interface TunnelConnectionHooks {
  /** Called once when the handshake completes; returns a refusal reason, or null to accept. */
  verify(conn: TunnelConnection): string | null;
  /** A peer-initiated stream we have not seen (server role). Returns its pipe, or null to refuse. */
  onNewStream?(conn: TunnelConnection, streamId: number): StreamPipe | null;
  /** The handshake completed and we accepted the peer: streams may be opened. */
  onEstablished?(conn: TunnelConnection): void;
  /** The peer accepted us as well (for a client: the server did not refuse our certificate). */
  onConfirmed?(conn: TunnelConnection): void;
  onClosed(conn: TunnelConnection, reason: string): void;
}

const SLAB_BYTES = 256 * 1024;
/**
 * Acknowledgements alone may wait this long (we advertise quiche's default
 * max_ack_delay of 25 ms, so peers allow it). A reply usually leaves within it
 * and carries the ACK, saving a packet and a wake-up on both hosts.
 */
const ACK_DELAY_MS = 5;
/**
 * ...but after this many packets the ACK goes at once. RFC 9000 13.2.2 suggests 2; a
 * request that arrives as data + a separate FIN would then cost an extra packet each way,
 * and per-packet work is what limits this daemon.
 */
const ACK_EVERY_PACKETS = 4;
/** Up to this many open streams, drainStreams asks each one instead of calling readable(). */
const PROBE_MAX_STREAMS = 64;
/** While pipes wait for their sockets, readable() looks for other readable streams this often. */
const FULL_SCAN_MS = 5;
/** Zero-length FINs are re-sent after 40, 80, ... up to 2560 ms while their stream lives. */
const FIN_RESEND_FIRST_MS = 40;
const FIN_RESEND_LAST_MS = 2560;
const EMPTY_FIN = Buffer.alloc(0);

/**
 * Work done once per event-loop turn, after every datagram of the turn went into quiche:
 * first readable streams are drained (one large streamRecv and one socket write per stream
 * instead of one per datagram), then connections with packets to send are flushed.
 */
const unread = new Set<TunnelConnection>();
const dirty = new Set<TunnelConnection>();
let turnEndScheduled = false;
function scheduleTurnEnd(): void {
  if (turnEndScheduled) return;
  turnEndScheduled = true;
  setImmediate(turnEnd);
}
function turnEnd(): void {
  turnEndScheduled = false;
  for (const c of unread) {
    unread.delete(c);
    c.drainStreams();
  }
  for (const c of dirty) {
    dirty.delete(c);
    c.flush();
  }
}

export class TunnelConnection {
  readonly streams = new Map<number, StreamPipe>();
  /** Pipes waiting for stream capacity (TCP side paused). */
  readonly blocked = new Set<StreamPipe>();
  /** We checked the peer's identity; the connection may carry streams. */
  verified = false;
  /** The peer accepted our identity too (a server confirms itself when it verifies). */
  confirmed = false;
  closed = false;
  peerName: string | null = null;
  readonly createdAt = Date.now();
  /** Datagrams this connection received (a superseded one is watched for silence). */
  datagramsIn = 0;
  private nextStreamId: number;
  /**
   * Peer-initiated streams seen so far: every id below nextPeerStream, plus the ids above it
   * in seenAbove. quiche lists readable streams in no particular order, so stream 8 may show
   * up before stream 4; both are new, while a seen id that is no longer tracked is finished.
   */
  private nextPeerStream: number;
  private lastFullScan = 0;
  private scanTimer: NodeJS.Timeout | null = null;
  private readonly seenAbove = new Set<number>();
  private slab = Buffer.allocUnsafe(SLAB_BYTES);
  private slabOffset = 0;
  private timer: NodeJS.Timeout | null = null;
  private timerDeadline = Infinity;
  private keepAlive: NodeJS.Timeout | null = null;
  private ackTimer: NodeJS.Timeout | null = null;
  private packetsSinceFlush = 0;
  /** The last flush ended on a full-size packet: probably congestion-limited with data queued. */
  private sendingBulk = false;
  /**
   * The last flush that sent anything ended on a full-size packet. Unlike sendingBulk, a flush
   * that sent nothing (window full) does not clear it: an ACK from the peer then releases the
   * queued data at once instead of after ACK_DELAY_MS (S9, 1 % loss: about twice the throughput).
   */
  private windowLimited = false;
  /** A zero-length FIN is queued in quiche and not yet flushed (see queueFin). */
  private finQueued = false;

  constructor(
    readonly quic: QuicheConnection,
    readonly role: Role,
    /** Sends `length` bytes at `offset` of `buf` as datagrams of `segment` bytes (udp-sender.ts). */
    private readonly transmit: (buf: Buffer, offset: number, length: number, segment: number) => void,
    private readonly hooks: TunnelConnectionHooks,
    readonly log: Logger,
    private readonly maxDatagramBytes: number,
    keepAliveMs: number,
    readonly traffic: TrafficCounters = newTrafficCounters(),
  ) {
    this.nextStreamId = role === 'client' ? 0 : 1;
    this.nextPeerStream = role === 'client' ? 1 : 0;
    this.keepAlive = setInterval(() => {
      if (this.closed || !this.quic.isEstablished()) return;
      this.quic.sendAckEliciting();
      this.scheduleFlush();
    }, keepAliveMs);
    this.keepAlive.unref();
  }

  /** One datagram from the peer. */
  recv(datagram: Buffer, from: { host: string; port: number }, to: { host: string; port: number }): void {
    if (this.closed) return;
    // quiche 0.18 drops a queued zero-length FIN if an ACK that completes its stream is
    // processed first (cloudflare/quiche#2525): emit queued FINs before reading any ACK.
    if (this.finQueued) this.flush();
    try {
      this.quic.recv(datagram, { from, to });
    } catch (err) {
      // A datagram quiche cannot use (garbage, duplicate, too late) costs nothing else.
      this.log.trace({ err: String(err) }, 'datagram not accepted by quiche');
    }
    this.packetsSinceFlush++;
    this.datagramsIn++;
    this.traffic.datagramsReceived++;
    // A CONNECTION_CLOSE (or a stateless reset) puts quiche in draining: nothing more can be
    // sent, so the tunnel is dead now, not when the draining period ends.
    if (this.quic.isDraining() || this.quic.isClosed()) {
      this.finish();
      return;
    }
    this.afterInput(true);
  }

  /** Runs after anything that may have changed quiche's state. */
  private afterInput(fromPeer = false): void {
    // Handshake steps (our Finished, the server's HANDSHAKE_DONE) must leave at once, not with a delayed ACK.
    const handshakeMoved = !this.confirmed;
    if (!this.verified && !this.closed && this.quic.isEstablished()) {
      const refusal = this.hooks.verify(this);
      if (refusal !== null) {
        this.log.warn({ reason: refusal }, 'peer identity refused; closing tunnel');
        this.close(AppError.IDENTITY, `identity refused: ${refusal}`);
        return;
      }
      this.verified = true;
      this.hooks.onEstablished?.(this);
      // A server has now judged the client too; a client has not yet been judged (below).
      if (this.role === 'server') this.confirm();
    } else if (fromPeer && this.verified && !this.confirmed && !this.closed) {
      // TLS 1.3: the client finishes before the server has checked the client's certificate.
      // A packet from the server after our Finished, without a close, means it accepted us.
      if (!this.quic.isDraining() && this.quic.peerError() === null) this.confirm();
    }
    if (this.verified) {
      unread.add(this);
      scheduleTurnEnd();
    }
    // Whether quiche closed is checked when the turn's packets are flushed (flush -> finish).
    if (fromPeer && !handshakeMoved && !this.windowLimited && this.packetsSinceFlush < ACK_EVERY_PACKETS) this.scheduleAckFlush();
    else this.scheduleFlush();
  }

  private confirm(): void {
    this.confirmed = true;
    this.hooks.onConfirmed?.(this);
  }

  /** True the first time a peer-initiated stream id is seen. */
  private firstSight(id: number): boolean {
    if (id < this.nextPeerStream || this.seenAbove.has(id)) return false;
    this.seenAbove.add(id);
    while (this.seenAbove.delete(this.nextPeerStream)) this.nextPeerStream += 4;
    return true;
  }

  /**
   * Hands readable streams to their pipes and retries pipes waiting for capacity.
   * quiche's readable() costs about 30 µs a call here and leaves an object whose finalizer
   * only a full GC releases (bench/quiche-cost.ts); isReadable() and streamReadable() cost
   * 0.3 µs and leave nothing. So: nothing readable, nothing to do; with few streams, each
   * open one and the next unseen peer streams are asked directly; readable() runs only when
   * quiche still reports a readable stream those questions did not drain: at once if no open
   * pipe explains it (a stream after a gap in the ids, too many streams to ask one by one),
   * at most every FULL_SCAN_MS while pipes wait for their sockets (each reads again on its
   * own when its socket drains or connects; bulk transfers park often).
   */
  drainStreams(): void {
    if (this.closed) return;
    if (this.quic.isReadable()) {
      const parked = this.streams.size <= PROBE_MAX_STREAMS ? this.probeStreams() : -1;
      if (this.quic.isReadable()) {
        const wait = parked <= 0 ? 0 : this.lastFullScan + FULL_SCAN_MS - Date.now();
        if (wait <= 0) {
          this.lastFullScan = Date.now();
          for (const id of this.quic.readable()) this.streamReadable(id);
        } else {
          // Scan then even if no datagram comes: a stream after a gap must not wait for traffic.
          this.scanTimer ??= setTimeout(() => {
            this.scanTimer = null;
            this.scheduleDrain();
          }, wait);
        }
      }
    }
    this.retryBlocked();
  }

  /** drainStreams at the end of this turn: a pipe stopped waiting, so a scan skipped meanwhile happens now. */
  scheduleDrain(): void {
    if (this.closed || !this.verified) return;
    unread.add(this);
    scheduleTurnEnd();
  }

  /** Asks each open stream and the next peer stream ids; returns how many pipes left data unread. */
  private probeStreams(): number {
    let parked = 0;
    // A pipe that finishes here leaves the map; Map iteration skips deleted entries.
    for (const pipe of this.streams.values()) {
      if (!this.quic.streamReadable(pipe.id)) continue;
      pipe.onReadable();
      if (this.quic.streamReadable(pipe.id)) parked++;
    }
    // New peer streams arrive in id order unless packets were reordered: follow the ids
    // while they are readable; anything after a gap is found by readable() above.
    for (let id = this.nextPeerStream; ; id += 4) {
      if (this.seenAbove.has(id)) continue;
      if (!this.quic.streamReadable(id)) break;
      this.streamReadable(id);
    }
    return parked;
  }

  private streamReadable(id: number): void {
    const pipe = this.streams.get(id);
    if (pipe) {
      pipe.onReadable();
      return;
    }
    const peerInitiated = (id & 1) === (this.role === 'client' ? 1 : 0);
    if (peerInitiated && this.firstSight(id) && this.hooks.onNewStream) {
      const created = this.hooks.onNewStream(this, id);
      if (created) {
        this.addStream(created);
        created.onReadable();
        return;
      }
    }
    // A stream we no longer track (or never allowed): tell the peer to stop.
    this.shutdownStream(id, AppError.SHUTDOWN);
  }

  /** Counts flushes: a pipe compares it to know whether its last write has left yet. */
  flushes = 0;

  /**
   * The congestion window may be full: the last flush ended on a full-size packet (bulk data
   * waiting) or streams wait for capacity. A FIN written now may not leave at the next flush.
   */
  get windowMayBeFull(): boolean {
    return this.sendingBulk || this.blocked.size > 0;
  }

  /** Registers a pipe; StreamPipe.finishPipe removes it. */
  addStream(pipe: StreamPipe): void {
    this.streams.set(pipe.id, pipe);
    this.traffic.streamsTotal++;
    this.traffic.streamsActive++;
  }

  retryBlocked(): void {
    for (const pipe of this.blocked) pipe.onWritable();
  }

  /** Allocates the next locally-initiated bidirectional stream id. */
  openStreamId(): number {
    const id = this.nextStreamId;
    this.nextStreamId += 4;
    return id;
  }

  streamsLeft(): number {
    return this.quic.peerStreamsLeftBidi();
  }

  /** Sends RESET_STREAM and STOP_SENDING for a stream (either may already be done). */
  shutdownStream(id: number, code: number): void {
    for (const dir of [1, 0]) {
      try {
        this.quic.streamShutdown(id, dir, code);
      } catch {
        // already finished in that direction
      }
    }
    this.scheduleFlush();
  }

  /** Only acknowledgements or flow-control credit are due: they may wait ACK_DELAY_MS. */
  scheduleAckFlush(): void {
    if (this.closed || this.ackTimer || dirty.has(this)) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      this.flush();
    }, ACK_DELAY_MS);
  }

  /**
   * A zero-length FIN was written: flush at the end of this turn, and before any recv. quiche
   * 0.18 never retransmits a lost zero-length FIN once the stream's data is acknowledged, so
   * it is written again (a duplicate is harmless) until quiche has discarded the stream.
   */
  queueFin(streamId: number): void {
    this.finQueued = true;
    this.scheduleFlush();
    let delay = FIN_RESEND_FIRST_MS;
    const resend = (): void => {
      if (this.closed) return;
      let again: number | null;
      try {
        again = this.quic.streamSend(streamId, EMPTY_FIN, true);
      } catch {
        return; // the stream is gone
      }
      if (again === null) return; // Done: quiche collected the stream, so the FIN was acknowledged
      this.finQueued = true;
      this.scheduleFlush();
      delay *= 2;
      if (delay <= FIN_RESEND_LAST_MS) setTimeout(resend, delay).unref();
    };
    setTimeout(resend, delay).unref();
  }

  /** Data (or a stream event) is queued: send it at the end of this event-loop turn. */
  scheduleFlush(): void {
    if (this.closed) return;
    dirty.add(this);
    scheduleTurnEnd();
  }

  /** Sends every packet quiche has ready, then re-arms the timer. */
  flush(): void {
    if (this.closed) return;
    this.flushes++;
    if (this.ackTimer) {
      clearTimeout(this.ackTimer);
      this.ackTimer = null;
    }
    this.packetsSinceFlush = 0;
    this.finQueued = false;
    // Packets are written back to back into the slab; a run of equal-sized ones (the last
    // may be shorter) goes out in one transmit call, which GSO turns into one syscall.
    let runStart = this.slabOffset;
    let runSegment = 0;
    let runCount = 0;
    let last = 0;
    const endRun = (): void => {
      if (runCount > 0) this.transmit(this.slab, runStart, this.slabOffset - runStart, runSegment);
      runStart = this.slabOffset;
      runSegment = 0;
      runCount = 0;
    };
    for (;;) {
      if (this.slabOffset + this.maxDatagramBytes > this.slab.length) {
        endRun();
        // Sent slabs are never reused: dgram may still hold slices of the old one.
        this.slab = Buffer.allocUnsafe(SLAB_BYTES);
        this.slabOffset = runStart = 0;
      }
      const room = this.slab.subarray(this.slabOffset, this.slabOffset + this.maxDatagramBytes);
      let written: number;
      try {
        const r = this.quic.send(room);
        if (r === null) break;
        written = r[0];
      } catch (err) {
        this.log.debug({ err: String(err) }, 'quiche send failed');
        break;
      }
      if (runCount > 0 && (written > runSegment || runCount >= GSO_MAX_SEGMENTS || this.slabOffset - runStart + written > GSO_MAX_BYTES)) endRun();
      if (runCount === 0) runSegment = written;
      runCount++;
      this.slabOffset += written;
      this.traffic.datagramsSent++;
      last = written;
      if (written < runSegment) endRun(); // a shorter packet can only end a run
    }
    endRun();
    // Handshake flights (certificates) fill packets too, but leave the window nearly empty:
    // counting them held a cold tunnel's first request byte for HOLD_WHILE_CONGESTED_MS.
    this.sendingBulk = this.confirmed && last >= this.maxDatagramBytes - 64;
    if (last > 0) this.windowLimited = this.sendingBulk;
    if (this.quic.isClosed()) {
      this.finish();
      return;
    }
    this.armTimer();
  }

  private armTimer(): void {
    const ms = this.quic.timeout();
    if (ms === null) return;
    const deadline = Date.now() + ms;
    // A timer that fires early is harmless (onTimeout re-checks), so keep it unless the new deadline is sooner.
    if (this.timer && this.timerDeadline <= deadline + 1) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerDeadline = deadline;
    this.timer = setTimeout(() => this.onTimer(), ms);
  }

  private onTimer(): void {
    this.timer = null;
    this.timerDeadline = Infinity;
    if (this.closed) return;
    const left = this.quic.timeout();
    if (left !== null && left > 0) {
      this.armTimer();
      return;
    }
    this.quic.onTimeout();
    this.afterInput();
    this.flush();
  }

  /** Closes the connection (CONNECTION_CLOSE is sent on the next flush). */
  close(code: number, reason: string): void {
    if (this.closed) return;
    try {
      this.quic.close(true, code, Buffer.from(reason.slice(0, 100)));
    } catch {
      // already closing
    }
    this.flush();
    this.finish(reason);
  }

  /** Declares the connection dead without waiting for quiche (e.g. ICMP port unreachable). */
  abort(reason: string): void {
    this.finish(reason);
  }

  private finish(reason?: string): void {
    if (this.closed) return;
    this.closed = true;
    dirty.delete(this);
    unread.delete(this);
    if (this.timer) clearTimeout(this.timer);
    if (this.keepAlive) clearInterval(this.keepAlive);
    if (this.ackTimer) clearTimeout(this.ackTimer);
    if (this.scanTimer) clearTimeout(this.scanTimer);
    this.timer = this.keepAlive = this.ackTimer = this.scanTimer = null;
    for (const pipe of [...this.streams.values()]) pipe.abortFromTunnel();
    this.streams.clear();
    this.blocked.clear();
    this.hooks.onClosed(this, reason ?? this.closeReason());
  }

  closeReason(): string {
    if (this.quic.isTimedOut()) return 'idle timeout (peer silent)';
    const peer = this.quic.peerError();
    if (peer) return `closed by peer: ${describeError(peer)}`;
    const local = this.quic.localError();
    if (local) return `closed locally: ${describeError(local)}`;
    return 'closed';
  }

  /** Path statistics for /status. */
  pathStats(): { rttMs: number; cwnd: number; lost: number } {
    try {
      const p = this.quic.pathStats()[0];
      const s = this.quic.stats();
      // The binding reports the smoothed RTT in whole milliseconds.
      return { rttMs: p ? p.rtt : 0, cwnd: p?.cwnd ?? 0, lost: s.lost };
    } catch {
      return { rttMs: 0, cwnd: 0, lost: 0 };
    }
  }
}


/** TLS alerts (RFC 8446 6.2) that a refused handshake ends with, as QUIC CRYPTO_ERROR 0x100 + alert. */
const TLS_ALERTS: Record<number, string> = {
  40: 'handshake_failure',
  42: 'bad_certificate',
  43: 'unsupported_certificate',
  44: 'certificate_revoked',
  45: 'certificate_expired (or not yet valid)',
  46: 'certificate_unknown',
  48: 'unknown_ca (signed by another CA)',
  49: 'access_denied',
  80: 'internal_error',
  116: 'certificate_required',
  120: 'no_application_protocol',
};

function describeError(e: { isApp: boolean; errorCode: number; reason: Uint8Array }): string {
  const reason = Buffer.from(e.reason).toString();
  let what = `code ${e.errorCode}${e.isApp ? ' (app)' : ''}`;
  if (!e.isApp && e.errorCode >= 0x100 && e.errorCode < 0x200) {
    const alert = e.errorCode - 0x100;
    what += ` (TLS alert ${TLS_ALERTS[alert] ?? alert})`;
  }
  return reason ? `${what} ${reason}` : what;
}
