// Receives every TCP connection iptables REDIRECTs to listen.capture, recovers
// its original destination, asks policy/route.ts where it goes and
// policy/policy.ts whether this host's policy lets it leave, and hands it to
// the peer's tunnel as a new stream (tunnel/tunnel-pool.ts). Anything that
// cannot be tunnelled is reset at once: never forwarded in plaintext.
import net from 'node:net';
import { ErrorCodes, QmeshError } from '../errors.js';
import type { Logger } from '../log.js';
import { IpAddress } from '../policy/cidr.js';
import { evaluatePolicy, type Policy } from '../policy/policy.js';
import type { RouteTable } from '../policy/route.js';
import { setAbortiveClose } from '../tunnel/abortive-close.js';
import { IDLE_TIMEOUT_OUTCOME } from '../tunnel/stream-pipe.js';
import { AppError } from '../tunnel/quiche.js';
import type { StreamPipe } from '../tunnel/stream-pipe.js';
import type { TunnelPool } from '../tunnel/tunnel-pool.js';
import type { SocketOptions } from './socket-options.js';

export interface CaptureCounters {
  accepted: number;
  refused: number; // no original destination, local, unknown or tunnel down
  deniedByPolicy: number; // this host's policy denied it: it never left the host
  limitHits: number; // reset because capture.maxConnections (or maxConnectionsPerSource) were open
  sourceLimitHits: number; // of those, reset because their source address had maxConnectionsPerSource open
  idleTimeouts: number; // reset after capture.idleTimeoutMs without a byte either way
  closedByPolicy: number; // open when a reloaded policy denied them, and reset (reload.deniedConnections close)
  active: number;
}

/** An open captured connection, kept so a reloaded policy can judge it again. */
interface OpenFlow {
  readonly socket: net.Socket;
  pipe: StreamPipe | null;
  readonly source: IpAddress;
  readonly destination: IpAddress;
  readonly port: number;
  readonly fields: Record<string, unknown>;
}

export class CaptureListener {
  private server: net.Server | null = null;
  readonly counters: CaptureCounters = { accepted: 0, refused: 0, deniedByPolicy: 0, limitHits: 0, sourceLimitHits: 0, idleTimeouts: 0, closedByPolicy: 0, active: 0 };
  /** Open captured connections per source address (the calling function). */
  private readonly perSource = new Map<string, number>();
  private limitLoggedAt = 0;
  private readonly open = new Set<OpenFlow>();
  private readonly log: Logger;

  constructor(
    private readonly port: number,
    private readonly routes: () => RouteTable,
    private readonly policy: () => { readonly nodeName: string; readonly policy: Policy },
    private readonly pool: TunnelPool,
    private readonly sockets: SocketOptions,
    log: Logger,
    private readonly maxConnections: () => number = () => Infinity,
    private readonly idleTimeoutMs: () => number = () => 0,
    private readonly maxPerSource: () => number = () => Infinity,
  ) {
    this.log = log.child({ component: 'capture' });
  }

  async start(): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
    server.on('connection', (s) => this.onConnection(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new QmeshError(ErrorCodes.LISTEN, `cannot listen for captured TCP on port ${this.port}: ${err.code ?? err.message} (another qmesh or proxy running?)`, { cause: err })),
      );
      // "::" takes IPv4 too (dual stack), so one listener serves both families.
      server.listen({ port: this.port, host: '::', ipv6Only: false, backlog: 4096 }, () => resolve());
    });
    server.on('error', (err) => this.log.error({ err: String(err) }, 'capture listener error'));
    this.server = server;
    this.log.info({ port: this.port }, 'capture listener ready');
  }

  private refuse(socket: net.Socket, fields: Record<string, unknown>, why: string): void {
    this.counters.refused++;
    this.log.warn({ ...fields, reason: why }, 'captured connection refused');
    socket.on('error', () => {});
    socket.resetAndDestroy();
  }

  private onConnection(socket: net.Socket): void {
    // A flood is refused at once and cheaply: a reset, a counter, one log line per second.
    // The per-source cap keeps one function from taking every slot from the others.
    const remoteAddress = socket.remoteAddress ?? '';
    const fromSource = this.perSource.get(remoteAddress) ?? 0;
    if (this.counters.active >= this.maxConnections() || fromSource >= this.maxPerSource()) {
      const bySource = this.counters.active < this.maxConnections();
      this.counters.limitHits++;
      if (bySource) this.counters.sourceLimitHits++;
      socket.on('error', () => {});
      socket.resetAndDestroy();
      const now = Date.now();
      if (now - this.limitLoggedAt >= 1000) {
        this.limitLoggedAt = now;
        const fields = { active: this.counters.active, limitHits: this.counters.limitHits, ...(bySource ? { source: remoteAddress, fromSource } : {}) };
        this.log.warn(fields, `${bySource ? 'capture.maxConnectionsPerSource' : 'capture.maxConnections'} reached; new connections are reset`);
      }
      return;
    }
    const remotePort = socket.remotePort ?? 0;
    const src = { src: `${remoteAddress}:${remotePort}` };
    let dst: { host: string; port: number };
    try {
      dst = this.sockets.originalDestination(socket);
    } catch (err) {
      this.refuse(socket, src, `no original destination (${(err as NodeJS.ErrnoException).code ?? String(err)}): not a redirected connection`);
      return;
    }
    let dstIp: IpAddress;
    let srcIp: IpAddress;
    try {
      dstIp = IpAddress.parse(dst.host);
      srcIp = IpAddress.parse(remoteAddress);
    } catch (err) {
      this.refuse(socket, src, String(err));
      return;
    }
    const fields = { src: `${srcIp.text}:${remotePort}`, dst: `${dstIp.text}:${dst.port}` };
    // The original destination is the capture port itself: a connection made to it directly, a loop.
    if (dst.port === this.port && dstIp.text === IpAddress.parse(socket.localAddress ?? '::').text) {
      this.refuse(socket, fields, 'connection to the capture port itself (redirect loop)');
      return;
    }
    const route = this.routes().lookup(dstIp);
    if (route.kind !== 'peer') {
      this.refuse(socket, fields, route.kind === 'local' ? 'destination is local (never tunnelled)' : 'destination belongs to no peer');
      return;
    }
    if (srcIp.family !== dstIp.family) {
      this.refuse(socket, fields, 'mixed address families');
      return;
    }
    // This host evaluates its own policy as the source peer would be judged by a receiver
    // sharing it, so a flow such a receiver would deny never leaves (README "Policy").
    const { nodeName, policy } = this.policy();
    const decision = evaluatePolicy(policy, { fromPeer: nodeName, source: srcIp, destination: dstIp, port: dst.port });
    if (decision.action === 'deny') {
      this.counters.deniedByPolicy++;
      this.log.warn({ ...fields, peer: route.peer.name, reason: 'denied by policy', rule: decision.rule }, 'captured connection refused');
      socket.on('error', () => {});
      socket.resetAndDestroy();
      return;
    }
    this.counters.accepted++;
    this.counters.active++;
    this.perSource.set(remoteAddress, fromSource + 1);
    const released = (): void => {
      this.counters.active--;
      const n = (this.perSource.get(remoteAddress) ?? 1) - 1;
      if (n > 0) this.perSource.set(remoteAddress, n);
      else this.perSource.delete(remoteAddress);
    };
    const peer = route.peer.name;
    socket.setNoDelay(true);
    setAbortiveClose(socket, true); // already while it waits for the tunnel (see tunnel/abortive-close.ts)
    socket.on('error', () => {});
    const flow: OpenFlow = { socket, pipe: null, source: srcIp, destination: dstIp, port: dst.port, fields: { peer, ...fields } };
    this.open.add(flow);
    this.pool
      .openStream(peer, socket, { destination: { ip: dstIp, port: dst.port }, source: { ip: srcIp, port: remotePort } }, (summary) => {
        this.open.delete(flow);
        released();
        if (summary.outcome === IDLE_TIMEOUT_OUTCOME) {
          this.counters.idleTimeouts++;
          this.log.warn({ direction: 'outbound', peer, ...fields, ...summary, idleTimeoutMs: this.idleTimeoutMs() }, 'idle connection reset (capture.idleTimeoutMs)');
        } else this.log.info({ direction: 'outbound', peer, ...fields, ...summary }, 'connection closed');
      }, this.idleTimeoutMs())
      .then((pipe) => (flow.pipe = pipe))
      .catch((err: unknown) => {
        this.open.delete(flow);
        released();
        this.refuse(socket, { peer, ...fields }, (err as Error).message);
      });
  }

  /**
   * After a reload: judges every open connection by the new policy. Denied ones are reset
   * (mode close) or logged and left to finish (mode finish).
   */
  reviewOpen(mode: 'close' | 'finish'): void {
    const { nodeName, policy } = this.policy();
    for (const flow of [...this.open]) {
      const decision = evaluatePolicy(policy, { fromPeer: nodeName, source: flow.source, destination: flow.destination, port: flow.port });
      if (decision.action !== 'deny') continue;
      if (mode === 'finish') {
        this.log.info({ ...flow.fields, rule: decision.rule }, 'open connection now denied by policy; left to finish (reload.deniedConnections)');
        continue;
      }
      this.counters.closedByPolicy++;
      this.open.delete(flow);
      this.log.warn({ ...flow.fields, reason: 'denied by reloaded policy', rule: decision.rule }, 'open connection closed');
      if (flow.pipe) flow.pipe.abort(`denied by policy (${decision.rule})`, AppError.DENIED);
      else flow.socket.resetAndDestroy();
    }
  }

  /** Stops accepting; established connections carry on (daemon.ts drains them). */
  stop(): void {
    this.server?.close(); // its callback waits for every connection; daemon.ts drains those itself
    this.server = null;
  }
}
