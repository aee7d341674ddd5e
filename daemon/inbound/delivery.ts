// The receiving end of a tunnel stream: reads the stream header, refuses a
// destination outside local.cidrs (never an open relay), a claimed source
// outside the sending peer's cidrs or a flow the policy denies (policy/policy.ts),
// connects to the destination with the daemon's SO_MARK and starts piping
// (tunnel/stream-pipe.ts).
import net from 'node:net';
import type { PeerConfig } from '../config/load.js';
import type { Logger } from '../log.js';
import type { SocketOptions } from '../capture/socket-options.js';
import { evaluatePolicy, type Policy } from '../policy/policy.js';
import type { RouteTable } from '../policy/route.js';
import { AppError } from '../tunnel/quiche.js';
import { decodeStreamHeader, MAX_STREAM_HEADER_BYTES, type StreamHeader } from '../tunnel/stream-header.js';
import { IDLE_TIMEOUT_OUTCOME, StreamPipe } from '../tunnel/stream-pipe.js';
import type { TunnelConnection } from '../tunnel/tunnel-connection.js';

export interface InboundCounters {
  accepted: number;
  denied: number; // bad header, destination not local, source not the peer's
  deniedByPolicy: number; // the policy's first matching rule (or its default) said deny
  connectFailed: number;
  idleTimeouts: number; // reset after capture.idleTimeoutMs without a byte either way
  closedByPolicy: number; // open when a reloaded policy denied them, and reset (reload.deniedConnections close)
  active: number;
}

/** An open delivered connection, kept so a reloaded policy can judge it again. */
interface OpenFlow {
  readonly pipe: StreamPipe;
  readonly peer: string;
  readonly header: StreamHeader;
  readonly fields: Record<string, unknown>;
}

const CONNECT_TIMEOUT_MS = 10_000;

export class InboundDelivery {
  readonly counters: InboundCounters = { accepted: 0, denied: 0, deniedByPolicy: 0, connectFailed: 0, idleTimeouts: 0, closedByPolicy: 0, active: 0 };
  private markWarned = false;
  private accepting = true;
  private readonly open = new Map<StreamPipe, OpenFlow>();
  private readonly log: Logger;

  constructor(
    private readonly routes: () => RouteTable,
    private readonly policy: () => Policy,
    private readonly sockets: SocketOptions,
    private readonly mark: number,
    log: Logger,
    private readonly idleTimeoutMs: () => number = () => 0,
  ) {
    this.log = log.child({ component: 'inbound' });
  }

  /** Draining: new streams are refused, open ones carry on. */
  stopAccepting(): void {
    this.accepting = false;
  }

  /** Called by the QUIC listener for each new stream a verified peer opens. */
  onStream(conn: TunnelConnection, peer: PeerConfig, id: number): StreamPipe | null {
    if (!this.accepting) return null; // the connection resets it
    let fields: Record<string, unknown> = { peer: peer.name, stream: id };
    this.counters.active++;
    const pipe = new StreamPipe(conn, id, (summary) => {
      this.open.delete(pipe);
      this.counters.active--;
      if (summary.outcome === IDLE_TIMEOUT_OUTCOME) {
        this.counters.idleTimeouts++;
        this.log.warn({ direction: 'inbound', ...fields, ...summary, idleTimeoutMs: this.idleTimeoutMs() }, 'idle connection reset (capture.idleTimeoutMs)');
      } else this.log.info({ direction: 'inbound', ...fields, ...summary }, 'connection closed');
    });
    let buffered: Buffer = Buffer.alloc(0);
    pipe.readHeaderWith((data) => {
      buffered = buffered.length === 0 ? data : Buffer.concat([buffered, data]);
      let decoded;
      try {
        decoded = decodeStreamHeader(buffered);
      } catch (err) {
        this.counters.denied++;
        this.log.warn({ ...fields, reason: (err as Error).message }, 'inbound stream refused');
        pipe.abort(`bad stream header: ${(err as Error).message}`, AppError.BAD_HEADER);
        return;
      }
      if (decoded.kind === 'incomplete') {
        if (buffered.length >= MAX_STREAM_HEADER_BYTES || pipe.peerFinished) {
          this.counters.denied++;
          this.log.warn({ ...fields, reason: 'truncated stream header' }, 'inbound stream refused');
          pipe.abort('truncated stream header', AppError.BAD_HEADER);
        }
        return;
      }
      const h = decoded.header;
      fields = { ...fields, src: `${h.source.ip}:${h.source.port}`, dst: `${h.destination.ip}:${h.destination.port}` };
      pipe.readHeaderWith(null); // hold further data in quiche until connected
      this.deliver(pipe, peer, h, buffered.subarray(decoded.length), fields);
    });
    return pipe;
  }

  private deliver(pipe: StreamPipe, peer: PeerConfig, h: StreamHeader, firstBytes: Buffer, fields: Record<string, unknown>): void {
    const dst = h.destination;
    if (!this.routes().isLocal(dst.ip)) {
      this.counters.denied++;
      this.log.warn({ ...fields, reason: 'destination outside local.cidrs' }, 'inbound stream refused');
      pipe.abort('destination not local', AppError.DENIED);
      return;
    }
    if (!this.routes().ownedBy(peer, h.source.ip)) {
      this.counters.denied++;
      this.log.warn({ ...fields, reason: `source outside ${peer.name}'s cidrs` }, 'inbound stream refused');
      pipe.abort('source not owned by peer', AppError.DENIED);
      return;
    }
    // The peer's name is its verified certificate identity; the source is one it owns (checked above).
    const decision = evaluatePolicy(this.policy(), { fromPeer: peer.name, source: h.source.ip, destination: dst.ip, port: dst.port });
    if (decision.action === 'deny') {
      this.counters.deniedByPolicy++;
      this.log.warn({ ...fields, reason: 'denied by policy', rule: decision.rule }, 'inbound stream refused');
      pipe.abort(`denied by policy (${decision.rule})`, AppError.DENIED);
      return;
    }
    this.open.set(pipe, { pipe, peer: peer.name, header: h, fields });
    const socket = this.connect(dst.ip.text, dst.port, dst.ip.family);
    socket.setNoDelay(true);
    let connected = false;
    const timer = setTimeout(() => socket.destroy(new Error('ETIMEDOUT')), CONNECT_TIMEOUT_MS);
    socket.once('connect', () => {
      connected = true;
      clearTimeout(timer);
      if (!this.open.has(pipe)) {
        socket.destroy(); // closed by a reload while connecting
        return;
      }
      this.counters.accepted++;
      pipe.attach(socket, null, firstBytes, false, this.idleTimeoutMs());
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (connected) return; // the pipe handles errors from here on
      this.counters.connectFailed++;
      this.log.warn({ ...fields, err: err.code ?? err.message }, 'destination connect failed');
      pipe.abort(`connect failed: ${err.code ?? err.message}`, AppError.CONNECT_FAILED);
    });
  }

  /**
   * After a reload: judges every open connection by the new policy. Denied ones are reset
   * (mode close) or logged and left to finish (mode finish).
   */
  reviewOpen(mode: 'close' | 'finish'): void {
    const policy = this.policy();
    for (const flow of [...this.open.values()]) {
      const h = flow.header;
      const decision = evaluatePolicy(policy, { fromPeer: flow.peer, source: h.source.ip, destination: h.destination.ip, port: h.destination.port });
      if (decision.action !== 'deny') continue;
      if (mode === 'finish') {
        this.log.info({ ...flow.fields, rule: decision.rule }, 'open connection now denied by policy; left to finish (reload.deniedConnections)');
        continue;
      }
      this.counters.closedByPolicy++;
      this.open.delete(flow.pipe);
      this.log.warn({ ...flow.fields, reason: 'denied by reloaded policy', rule: decision.rule }, 'open connection closed');
      flow.pipe.abort(`denied by policy (${decision.rule})`, AppError.DENIED);
    }
  }

  private connect(host: string, port: number, family: 4 | 6): net.Socket {
    try {
      return this.sockets.connectMarked(host, port, family, this.mark);
    } catch (err) {
      // Without CAP_NET_ADMIN there is no SO_MARK; delivery targets local CIDRs, which capture never matches.
      if (!this.markWarned) {
        this.markWarned = true;
        this.log.warn({ err: String(err) }, 'cannot set SO_MARK on delivery sockets; continuing unmarked');
      }
      return net.connect({ host, port, allowHalfOpen: true });
    }
  }
}
