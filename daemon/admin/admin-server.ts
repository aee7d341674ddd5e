// The admin HTTP listener (loopback by default): GET /healthz answers 200 once
// config, certificates and the capture listener are ready (503 before) and while
// nothing makes the daemon unhealthy (503 naming it: drifted iptables rules), and
// GET /status returns JSON with each peer's tunnel state and stream/byte counts,
// and GET /metrics the Prometheus text exposition (metrics.ts).
import http from 'node:http';
import { ErrorCodes, QmeshError } from '../errors.js';
import type { Logger } from '../log.js';

export interface AdminSources {
  ready(): boolean;
  /** What makes a ready daemon unhealthy now (drifted iptables rules), one line each; /healthz answers 503 naming them. */
  problems?(): Promise<string[]>;
  status(): unknown;
  /** The Prometheus exposition, sampled now (absent: /metrics answers 404). */
  metrics?(): Promise<{ contentType: string; body: string }>;
}

export class AdminServer {
  private server: http.Server | null = null;

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly sources: AdminSources,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    const server = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new QmeshError(ErrorCodes.LISTEN, `cannot listen for admin on ${this.host}:${this.port}: ${err.code ?? err.message}`, { cause: err })),
      );
      server.listen({ host: this.host, port: this.port }, () => resolve());
    });
    this.server = server;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = (req.url ?? '/').split('?')[0];
    const send = (code: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n');
    if (url === '/healthz') {
      if (!this.sources.ready()) return send(503, 'starting\n');
      const problems = this.sources.problems?.() ?? Promise.resolve([]);
      problems.then(
        (list) => (list.length === 0 ? send(200, 'ok\n') : send(503, `unhealthy:\n${list.map((p) => `  ${p}\n`).join('')}`)),
        (err: unknown) => send(503, `unhealthy: ${String(err)}\n`),
      );
      return;
    }
    if (url === '/status') return send(200, JSON.stringify(this.sources.status(), null, 2) + '\n', 'application/json');
    if (url === '/metrics' && this.sources.metrics) {
      this.sources.metrics().then(
        (m) => send(200, m.body, m.contentType),
        (err: unknown) => {
          this.log.error({ err: String(err) }, 'metrics scrape failed');
          send(500, 'metrics scrape failed\n');
        },
      );
      return;
    }
    send(404, 'not found: try /healthz, /status or /metrics\n');
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
    this.log.debug('admin listener closed');
  }
}
