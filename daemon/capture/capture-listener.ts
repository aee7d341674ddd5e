// Receives every TCP connection iptables REDIRECTs to listen.capture, recovers
// its original destination, asks policy/route.ts where it goes and hands it to
// the peer's tunnel as a new stream (tunnel/tunnel-pool.ts). Anything that
// cannot be tunnelled is reset at once: never forwarded in plaintext.
import net from 'node:net';
import { ErrorCodes, QmeshError } from '../errors.js';
import type { Logger } from '../log.js';
import { IpAddress } from '../policy/cidr.js';
import type { RouteTable } from '../policy/route.js';
import type { TunnelPool } from '../tunnel/tunnel-pool.js';
import type { SocketOptions } from './socket-options.js';

export interface CaptureCounters {
  accepted: number;
  refused: number; // no original destination, local, unknown or tunnel down
  active: number;
}

export class CaptureListener {
  private server: net.Server | null = null;
  readonly counters: CaptureCounters = { accepted: 0, refused: 0, active: 0 };
  private readonly log: Logger;

  constructor(
    private readonly port: number,
    private readonly routes: () => RouteTable,
    private readonly pool: TunnelPool,
    private readonly sockets: SocketOptions,
    log: Logger,
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

  private refuse(socket: net.Socket, log: Logger, why: string, fields: Record<string, unknown> = {}): void {
    this.counters.refused++;
    log.warn({ ...fields, reason: why }, 'captured connection refused');
    socket.on('error', () => {});
    socket.resetAndDestroy();
  }

  private onConnection(socket: net.Socket): void {
    const source = `${socket.remoteAddress}:${socket.remotePort}`;
    const log = this.log.child({ src: source });
    let dst: { host: string; port: number };
    try {
      dst = this.sockets.originalDestination(socket);
    } catch (err) {
      this.refuse(socket, log, `no original destination (${(err as NodeJS.ErrnoException).code ?? String(err)}): not a redirected connection`);
      return;
    }
    let dstIp: IpAddress;
    let srcIp: IpAddress;
    try {
      dstIp = IpAddress.parse(dst.host);
      srcIp = IpAddress.parse(socket.remoteAddress ?? '');
    } catch (err) {
      this.refuse(socket, log, String(err));
      return;
    }
    // Connecting to the capture port itself (directly or via a redirect of it) would loop.
    if (dst.port === this.port && (dst.host === socket.localAddress || dstIp.text === IpAddress.parse(socket.localAddress ?? '::').text)) {
      this.refuse(socket, log, 'connection to the capture port itself (redirect loop)', { dst: dst.host });
      return;
    }
    const route = this.routes().lookup(dstIp);
    const dstText = `${dstIp.text}:${dst.port}`;
    if (route.kind !== 'peer') {
      this.refuse(socket, log, route.kind === 'local' ? 'destination is local (never tunnelled)' : 'destination belongs to no peer', { dst: dstText });
      return;
    }
    if (srcIp.family !== dstIp.family) {
      this.refuse(socket, log, 'mixed address families', { dst: dstText });
      return;
    }
    this.counters.accepted++;
    this.counters.active++;
    const connLog = log.child({ dst: dstText, peer: route.peer.name });
    const started = Date.now();
    socket.setNoDelay(true);
    socket.on('error', () => {});
    this.pool
      .openStream(route.peer.name, socket, {
        destination: { ip: dstIp, port: dst.port },
        source: { ip: srcIp, port: socket.remotePort ?? 0 },
      }, (summary) => {
        this.counters.active--;
        connLog.info({ direction: 'outbound', ...summary, durationMs: Date.now() - started }, 'connection closed');
      })
      .catch((err: unknown) => {
        this.counters.active--;
        this.refuse(socket, connLog, (err as Error).message);
      });
  }

  connections(): number {
    return this.counters.active;
  }

  /** Stops accepting; established connections carry on (main.ts drains them). */
  stop(): void {
    this.server?.close(); // its callback waits for every connection; main.ts drains those itself
    this.server = null;
  }
}
