// The destination functions' side: servers that scenarios start in a function
// namespace through the agent (agent.ts). Echo (scenarios 1-3, 7, 8), HTTP
// (4), bulk sink with optional sha256 (6, 9) and the chain relays (5).
import crypto from 'node:crypto';
import http from 'node:http';
import net from 'node:net';

export interface Target {
  host: string;
  port: number;
}

const servers = new Map<number, net.Server | http.Server>();
/** Sockets of every server, so closeServers() can end idle keep-alive and parked connections. */
const sockets = new Set<net.Socket>();

function track(s: net.Socket): void {
  sockets.add(s);
  s.once('close', () => sockets.delete(s));
}

async function listen(port: number, server: net.Server | http.Server, host = '0.0.0.0'): Promise<{ port: number }> {
  if (servers.has(port)) throw new Error(`port ${port} already has a bench server`);
  server.on('connection', track);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, backlog: 4096 }, () => resolve());
  });
  servers.set(port, server);
  return { port };
}

/** Echoes every byte back; half-close from the client ends the reply side too. */
export function listenEcho(a: { port: number }): Promise<{ port: number }> {
  const server = net.createServer({ allowHalfOpen: false, noDelay: true }, (s) => {
    s.on('error', () => undefined);
    s.on('data', (d) => s.write(d));
  });
  return listen(a.port, server);
}

/** Keep-alive HTTP/1.1 answering every request with a small fixed body. */
export function listenHttp(a: { port: number; bodyBytes?: number }): Promise<{ port: number }> {
  const body = Buffer.alloc(a.bodyBytes ?? 64, 'x');
  const server = http.createServer({ keepAliveTimeout: 60_000, noDelay: true }, (req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
      res.end(body);
    });
  });
  return listen(a.port, server);
}

/**
 * Counts (and with hash: sha256s) everything until the sender's FIN, then
 * answers one JSON line {bytes, sha256, ms} and closes.
 */
export function listenSink(a: { port: number; hash?: boolean }): Promise<{ port: number }> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    const h = a.hash ? crypto.createHash('sha256') : null;
    let bytes = 0;
    let first = 0;
    s.on('error', () => undefined);
    s.on('data', (d) => {
      if (bytes === 0) first = performance.now();
      bytes += d.length;
      h?.update(d);
    });
    s.on('end', () => {
      const ms = performance.now() - first;
      s.end(JSON.stringify({ bytes, sha256: h ? h.digest('hex') : null, ms }) + '\n');
    });
  });
  return listen(a.port, server);
}

export interface RelaySpec {
  port: number;
  /** Where this hop forwards; null on the last hop possible (it answers itself when the count says so). */
  next: Target | null;
}

/**
 * One hop of a function chain. A request is `size` bytes whose first byte says
 * how many hops are left including this one: 1 answers (echo), n > 1 opens a
 * NEW connection to `next`, sends the request with n-1, and returns the reply
 * with the first byte set back to n. So the client always gets its own request back.
 */
export function listenRelays(a: { relays: RelaySpec[]; size: number }): Promise<Array<{ port: number }>> {
  return Promise.all(
    a.relays.map((spec) => {
      const server = net.createServer({ noDelay: true }, (s) => {
        s.on('error', () => undefined);
        const parts: Buffer[] = [];
        let got = 0;
        const onData = (d: Buffer): void => {
          parts.push(d);
          got += d.length;
          if (got < a.size) return;
          s.off('data', onData);
          const req = Buffer.concat(parts).subarray(0, a.size);
          const hops = req[0]!;
          if (hops <= 1) return void s.end(req);
          if (!spec.next) return void s.destroy(new Error('chain longer than the relays'));
          const fwd = Buffer.from(req);
          fwd[0] = hops - 1;
          const out = net.connect({ ...spec.next, noDelay: true });
          const back: Buffer[] = [];
          let backLen = 0;
          out.on('connect', () => out.write(fwd));
          out.on('data', (b) => {
            back.push(b);
            backLen += b.length;
            if (backLen >= a.size) {
              const reply = Buffer.concat(back).subarray(0, a.size);
              reply[0] = hops;
              s.end(reply);
              out.end();
            }
          });
          out.on('error', () => s.destroy());
        };
        s.on('data', onData);
      });
      return listen(spec.port, server);
    }),
  );
}

export async function closeServers(): Promise<{ closed: number }> {
  const n = servers.size;
  for (const s of sockets) s.destroy();
  await Promise.all([...servers.values()].map((s) => new Promise<void>((r) => s.close(() => r()))));
  servers.clear();
  return { closed: n };
}
