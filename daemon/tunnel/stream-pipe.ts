// Joins one TCP socket to one QUIC stream, each direction on its own so
// half-close survives: TCP data -> streamSend, TCP FIN -> stream FIN, stream
// data -> socket.write, stream FIN -> socket.end(); a reset on either side
// becomes a reset on the other. Backpressure both ways: a full stream pauses
// the socket, a full socket stops streamRecv (quiche flow control then slows
// the peer). Used by capture/ (outbound) and inbound/ (delivery).
import type net from 'node:net';
import { setAbortiveClose } from './abortive-close.js';
import { AppError, quicheErrorKind } from './quiche.js';
import type { TunnelConnection } from './tunnel-connection.js';

const RECV_CHUNK = 64 * 1024;
/** Reads up to this size are copied out of the shared buffer; larger ones take it over. */
const COPY_LIMIT = 16 * 1024;
/** One receive buffer for every stream (the process is single-threaded). */
let recvBuffer = Buffer.allocUnsafe(RECV_CHUNK);

/** Bytes [0, n) of the shared buffer as a Buffer the caller may keep. */
function takeReceived(n: number): Buffer {
  if (n <= COPY_LIMIT) return Buffer.from(recvBuffer.subarray(0, n));
  const out = recvBuffer.subarray(0, n);
  recvBuffer = Buffer.allocUnsafe(RECV_CHUNK);
  return out;
}
const EMPTY = Buffer.alloc(0);
/**
 * quiche 0.18 can lose a zero-length FIN (cloudflare/quiche#2525): once the peer has
 * finished its direction, a stream whose data is all acknowledged is discarded before a
 * FIN written later leaves, and our peer waits for EOF forever. So while the peer has
 * finished, the last byte from TCP is held back to leave with our FIN; if no FIN follows
 * within HOLD_LAST_BYTE_MS it is sent on its own.
 */
const HOLD_LAST_BYTE_MS = 200;
/**
 * The FIN is also at risk whenever the congestion window delays it; so while the window may
 * be full the last byte is held too, briefly (most such streams are in mid-transfer). Only
 * then: holding whenever a flush carried several packets added 20 ms to S4's p99.
 */
const HOLD_WHILE_CONGESTED_MS = 20;
/**
 * The remaining case: a FIN written after our last data has left but maybe before the
 * peer acknowledged it. quiche discards the stream when that ACK is processed, so the FIN
 * must leave first. It does when the window has room: queued FINs are flushed before any
 * datagram is read (TunnelConnection.recv). When the window may be full, the FIN instead
 * waits until that data has surely been acknowledged (peers ACK within 5 ms here; the
 * margin covers a loaded machine). Waiting always cost every close 50 ms (S7: 140 conn/s).
 */
const FIN_AFTER_DATA_MS = 50;

export interface PipeSummary {
  bytesToPeer: number;
  bytesFromPeer: number;
  outcome: string;
  durationMs: number;
}

/** The outcome of a connection closed by capture.idleTimeoutMs (counted by capture/ and inbound/). */
export const IDLE_TIMEOUT_OUTCOME = 'idle timeout';


export class StreamPipe {
  private socket: net.Socket | null = null;
  private pending: Buffer[] = []; // accepted from TCP, not yet taken by quiche
  private tcpEnded = false; // client sent FIN
  private finSent = false;
  private finReceived = false;
  private readPaused = false; // socket.write said "full": stop streamRecv until drain
  private held: Buffer | null = null; // see HOLD_LAST_BYTE_MS
  private holdTimer: NodeJS.Timeout | null = null;
  private lastDataAt = 0; // when data last went into quiche...
  private lastDataFlush = -1; // ...and the connection's flush count at that moment
  private finTimer: NodeJS.Timeout | null = null;
  private done = false;
  private socketClosed = false;
  private bytesToPeer = 0;
  private bytesFromPeer = 0;
  private readonly startedAt = Date.now();
  /** Before a socket is attached (inbound connecting), readable data stays in quiche. */
  private headerHandler: ((data: Buffer) => void) | null = null;

  constructor(
    readonly tunnel: TunnelConnection,
    readonly id: number,
    private readonly onDone: (summary: PipeSummary) => void,
  ) {}

  /** Inbound: the first readable bytes go to `handler` (header parsing) until attach(). */
  readHeaderWith(handler: ((data: Buffer) => void) | null): void {
    this.headerHandler = handler;
  }

  /**
   * Starts piping `socket` both ways; `firstBytes` go to the stream before any TCP data.
   * With `waitForData`, the first flush waits one event-loop turn, so a request already in
   * the socket buffer leaves in the same packet as the stream header.
   */
  attach(socket: net.Socket, firstBytes: Buffer | null, bytesForSocket: Buffer | null, waitForData = false, idleTimeoutMs = 0): void {
    this.headerHandler = null;
    this.socket = socket;
    // capture.idleTimeoutMs: no byte either way on this socket for that long resets both ends
    // (a reset, not a FIN, so neither application mistakes it for a complete exchange).
    if (idleTimeoutMs > 0) {
      socket.setTimeout(idleTimeoutMs);
      socket.on('timeout', () => this.abort(IDLE_TIMEOUT_OUTCOME));
    }
    if (firstBytes && firstBytes.length > 0) this.sendOrQueue(firstBytes, false);
    if (bytesForSocket && bytesForSocket.length > 0) {
      this.bytesFromPeer += bytesForSocket.length;
      this.tunnel.traffic.bytesReceived += bytesForSocket.length;
      if (!socket.write(bytesForSocket)) this.pauseReading();
    }
    setAbortiveClose(socket, true);
    // The peer's FIN may have come with the header already.
    if (this.finReceived) this.endSocket();
    socket.on('data', (chunk: Buffer) => this.onTcpData(chunk));
    socket.on('end', () => {
      this.tcpEnded = true;
      if (this.pending.length === 0) this.sendFin();
    });
    socket.on('error', () => {}); // 'close' below carries the outcome
    socket.on('close', (hadError) => this.onTcpClose(hadError));
    if (this.pending.length > 0) socket.pause();
    else socket.resume();
    this.onReadable();
    this.tunnel.scheduleDrain(); // see pauseReading
    if (waitForData) setImmediate(() => this.tunnel.scheduleFlush());
    else if (this.pending.length > 0 || (firstBytes && firstBytes.length > 0)) this.tunnel.scheduleFlush();
    // Otherwise (inbound, just connected) only an ACK is due: it rides on the reply, which
    // usually follows within ACK_DELAY_MS, instead of costing a packet each way now.
    else this.tunnel.scheduleAckFlush();
  }

  /** Reads one header chunk while in header mode; returns it raw (the caller parses). */
  readRaw(): Buffer | null | 'reset' {
    try {
      const r = this.tunnel.quic.streamRecv(this.id, recvBuffer);
      if (r === null) return null;
      if (r[1]) this.finReceived = true;
      return takeReceived(r[0]);
    } catch {
      return 'reset';
    }
  }

  get peerFinished(): boolean {
    return this.finReceived;
  }

  private onTcpData(chunk: Buffer): void {
    this.bytesToPeer += chunk.length;
    this.tunnel.traffic.bytesSent += chunk.length;
    if (this.held) {
      chunk = Buffer.concat([this.held, chunk]);
      this.held = null;
    }
    if (this.finReceived || this.tunnel.windowMayBeFull) {
      this.held = chunk.subarray(chunk.length - 1);
      chunk = chunk.subarray(0, chunk.length - 1);
      this.holdTimer ??= setTimeout(() => this.releaseHeld(), this.finReceived ? HOLD_LAST_BYTE_MS : HOLD_WHILE_CONGESTED_MS);
    }
    if (chunk.length > 0) this.sendOrQueue(chunk, false);
    this.tunnel.scheduleFlush();
  }

  private releaseHeld(): void {
    this.holdTimer = null;
    const held = this.held;
    this.held = null;
    if (!held || this.done || this.finSent) return;
    this.sendOrQueue(held, false);
    this.tunnel.scheduleFlush();
  }

  /** Hands `chunk` to quiche, queueing what it cannot take; `fin` ends our direction with it. */
  private sendOrQueue(chunk: Buffer, fin: boolean): void {
    if (this.pending.length > 0) {
      this.pending.push(chunk);
      return;
    }
    const n = this.streamSend(chunk, fin);
    if (n < 0) return; // stream stopped: already reset
    if (n < chunk.length) {
      this.pending.push(chunk.subarray(n)); // quiche dropped the FIN with the rest: sendFin repeats it
      this.socket?.pause();
      this.tunnel.blocked.add(this);
    } else if (fin) {
      this.finWritten();
    }
  }

  /** Stream capacity may be back: push what is queued (the FIN rides on the last piece), then resume. */
  onWritable(): void {
    while (this.pending.length > 0) {
      const head = this.pending[0]!;
      const fin = this.tcpEnded && this.pending.length === 1 && this.held === null;
      const n = this.streamSend(head, fin);
      if (n < 0) return;
      if (n < head.length) {
        this.pending[0] = head.subarray(n);
        return;
      }
      this.pending.shift();
      if (fin) this.finWritten();
    }
    this.tunnel.blocked.delete(this);
    if (this.tcpEnded) this.sendFin();
    else this.socket?.resume();
  }

  /** Returns bytes taken, or -1 if the stream is gone (the pipe has been reset). */
  private streamSend(buf: Buffer, fin: boolean): number {
    try {
      const n = this.tunnel.quic.streamSend(this.id, buf, fin);
      if (n !== null && n > 0) {
        this.lastDataAt = Date.now();
        this.lastDataFlush = this.tunnel.flushes;
      }
      return n ?? 0;
    } catch (err) {
      const [kind] = quicheErrorKind(err);
      this.resetTcp(kind === 'StreamStopped' ? 'peer stopped the stream' : `stream send failed: ${kind}`);
      return -1;
    }
  }

  /** TCP sent FIN: end our direction, with the held byte if there is one. */
  private sendFin(): void {
    if (this.finSent || this.done || this.pending.length > 0) return; // onWritable ends it later
    if (this.holdTimer) clearTimeout(this.holdTimer);
    this.holdTimer = null;
    const held = this.held;
    this.held = null;
    if (held) {
      this.sendOrQueue(held, true);
      this.tunnel.scheduleFlush();
      return;
    }
    // Data written this turn has not left yet: the FIN will leave in the same frame. And
    // until the peer has finished, quiche cannot discard the stream, so no need to wait.
    const sinceData = Date.now() - this.lastDataAt;
    if (this.finReceived && this.tunnel.windowMayBeFull && this.lastDataFlush !== this.tunnel.flushes && sinceData < FIN_AFTER_DATA_MS) {
      this.finTimer ??= setTimeout(() => {
        this.finTimer = null;
        this.writeEmptyFin();
      }, FIN_AFTER_DATA_MS - sinceData);
      return;
    }
    this.writeEmptyFin();
  }

  private writeEmptyFin(): void {
    if (this.finSent || this.done) return;
    // Most urgent: a FIN waiting behind other streams' data is the one quiche can lose.
    try {
      this.tunnel.quic.streamPriority(this.id, 0, false);
    } catch {
      // stream already gone: the send below reports it
    }
    if (this.streamSend(EMPTY, true) < 0) return;
    this.tunnel.queueFin(this.id); // zero-length: flushed before any ACK is read, re-sent if lost (quiche#2525)
    this.finWritten();
  }

  private finWritten(): void {
    this.finSent = true;
    this.maybeDone();
  }

  /** quiche has stream data for us. */
  onReadable(): void {
    if (this.done) return;
    if (this.headerHandler) {
      const data = this.readRaw();
      if (data === 'reset') this.abort('reset by peer before the header');
      else if (data) this.headerHandler(data);
      return;
    }
    if (!this.socket || this.readPaused) return;
    for (;;) {
      let r: [number, boolean] | null;
      try {
        r = this.tunnel.quic.streamRecv(this.id, recvBuffer);
      } catch (err) {
        const [kind] = quicheErrorKind(err);
        this.resetTcp(kind === 'StreamReset' ? 'reset by peer' : `stream receive failed: ${kind}`);
        return;
      }
      if (r === null) break;
      const [n, fin] = r;
      let ok = true;
      if (n > 0) {
        this.bytesFromPeer += n;
        this.tunnel.traffic.bytesReceived += n;
        ok = this.socket.write(takeReceived(n));
      }
      if (fin) {
        this.finReceived = true;
        this.endSocket();
        this.maybeDone();
        break;
      }
      if (!ok) {
        this.pauseReading();
        break;
      }
    }
    this.tunnel.scheduleAckFlush(); // flow-control credit for the peer can ride with the next ACK
  }

  /** The peer ended its direction: FIN to our application, with an orderly close from here on. */
  private endSocket(): void {
    if (!this.socket) return;
    setAbortiveClose(this.socket, false);
    this.socket.end();
  }

  private pauseReading(): void {
    if (this.readPaused || !this.socket) return;
    this.readPaused = true;
    this.socket.once('drain', () => {
      this.readPaused = false;
      this.onReadable();
      this.tunnel.scheduleDrain(); // other streams' data may have waited for a scan (drainStreams)
    });
  }

  private onTcpClose(hadError: boolean): void {
    if (this.done) return;
    this.socketClosed = true;
    if (hadError || !this.tcpEnded) {
      // The TCP side went away without a clean FIN: reset the stream.
      this.abort(hadError ? 'tcp reset' : 'tcp closed early');
      return;
    }
    // Clean close: queued bytes may still be on their way into the stream.
    this.maybeDone();
  }

  private maybeDone(): void {
    if (this.finSent && this.finReceived && this.socketClosed) this.finishPipe('closed');
  }

  /** The stream side failed: reset the TCP connection (the client sees ECONNRESET). */
  private resetTcp(why: string): void {
    if (this.done) return;
    this.tunnel.shutdownStream(this.id, AppError.TCP_RESET);
    this.socket?.resetAndDestroy();
    this.finishPipe(why);
  }

  /** The TCP side failed or was refused: reset the stream and the socket. */
  abort(why: string, code: number = AppError.TCP_RESET): void {
    if (this.done) return;
    this.tunnel.shutdownStream(this.id, code);
    if (this.socket && !this.socket.destroyed) this.socket.resetAndDestroy();
    this.finishPipe(why);
  }

  /** The whole tunnel died: only the TCP side can still be told. */
  abortFromTunnel(): void {
    if (this.done) return;
    if (this.socket && !this.socket.destroyed) this.socket.resetAndDestroy();
    this.finishPipe('tunnel closed');
  }

  private finishPipe(outcome: string): void {
    if (this.done) return;
    this.done = true;
    if (this.holdTimer) clearTimeout(this.holdTimer);
    if (this.finTimer) clearTimeout(this.finTimer);
    if (this.tunnel.streams.get(this.id) === this) {
      this.tunnel.streams.delete(this.id);
      this.tunnel.traffic.streamsActive--;
    }
    this.tunnel.blocked.delete(this);
    this.onDone({ bytesToPeer: this.bytesToPeer, bytesFromPeer: this.bytesFromPeer, outcome, durationMs: Date.now() - this.startedAt });
  }
}
