// Scenarios 6 and 9: one TCP connection sends as fast as it can for
// durationMs, half-closes, and waits for the sink's summary (servers.ts
// listenSink). MB/s = bytes / (connect .. summary). With hash both ends sha256
// the stream and the result says whether they match.
import crypto from 'node:crypto';
import net from 'node:net';
import type { Target } from './servers.js';

const CHUNK_BYTES = 256 * 1024;

export interface BulkResult {
  bytes: number;
  ms: number;
  mbPerSec: number;
  receivedBytes: number;
  sha256Sent: string | null;
  sha256Received: string | null;
  intact: boolean | null;
}

export function bulkSend(a: { target: Target; durationMs: number; hash?: boolean; timeoutMs?: number }): Promise<BulkResult> {
  // Random bytes with a counter in each chunk: a chunk lost, doubled or moved changes the hash.
  const chunk = crypto.randomBytes(CHUNK_BYTES);
  const h = a.hash ? crypto.createHash('sha256') : null;
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const s = net.connect({ host: a.target.host, port: a.target.port, allowHalfOpen: true });
    let sent = 0;
    let counter = 0;
    let done = false;
    let reply = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`bulk: no summary within ${a.timeoutMs ?? a.durationMs + 30_000} ms (sent ${sent} bytes)`));
    }, a.timeoutMs ?? a.durationMs + 30_000);
    const pump = (): void => {
      while (!done) {
        if (performance.now() - t0 >= a.durationMs) {
          done = true;
          s.end();
          return;
        }
        const c = Buffer.from(chunk);
        c.writeUInt32BE(counter++, 0);
        h?.update(c);
        sent += c.length;
        if (!s.write(c)) return void s.once('drain', pump);
      }
    };
    s.on('connect', pump);
    s.on('data', (d) => {
      reply += d.toString();
    });
    s.on('end', () => {
      clearTimeout(timer);
      const ms = performance.now() - t0;
      try {
        const r = JSON.parse(reply.trim()) as { bytes: number; sha256: string | null };
        const sha256Sent = h ? h.digest('hex') : null;
        resolve({
          bytes: sent,
          ms,
          mbPerSec: r.bytes / 1e6 / (ms / 1000),
          receivedBytes: r.bytes,
          sha256Sent,
          sha256Received: r.sha256,
          intact: h ? r.bytes === sent && r.sha256 === sha256Sent : r.bytes === sent,
        });
      } catch (err) {
        reject(new Error(`bulk: bad summary ${JSON.stringify(reply.slice(0, 100))}: ${String(err)}`));
      }
      s.destroy();
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
