// Scenarios 1, 2, 3 and 5: a NEW TCP connection plus one small request and its
// response, timed from connect() to the last byte of the response. One at a
// time, so each sample is one connection's own critical path.
import net from 'node:net';
import type { Target } from './servers.js';

export interface ConnectEchoResult {
  /** ms per successful connection, in order. */
  samples: number[];
  errors: number;
  firstError: string | null;
}

/** Requests are this small: they fit the first data packet of any transport. */
export const DEFAULT_REQUEST_BYTES = 32;
const ONE_TRY_TIMEOUT_MS = 5_000;

function makeRequest(bytes: number, firstByte?: number): Buffer {
  const b = Buffer.alloc(bytes, 0x61);
  if (firstByte !== undefined) b[0] = firstByte;
  return b;
}

/** One connection: resolves with ms from connect() to the full echo, or rejects with the socket's error. */
export function connectOnce(target: Target, request: Buffer, timeoutMs = ONE_TRY_TIMEOUT_MS): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const s = net.connect({ host: target.host, port: target.port, noDelay: true });
    let got = 0;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no echo within ${timeoutMs} ms`));
    }, timeoutMs);
    s.on('connect', () => s.write(request));
    s.on('data', (d) => {
      got += d.length;
      if (got >= request.length) {
        const ms = performance.now() - t0;
        clearTimeout(timer);
        s.end();
        s.once('close', () => resolve(ms));
        // A peer that never closes must not stall the series.
        setTimeout(() => s.destroy(), 1000).unref();
      }
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      s.destroy();
      reject(err);
    });
  });
}

export async function connectEcho(a: {
  target: Target;
  count: number;
  requestBytes?: number;
  /** First byte of the request (the chain's hop count). */
  firstByte?: number;
  /** Pause between connections so they do not share a burst. */
  gapMs?: number;
  /** Give up after this long even if count is not reached. */
  maxMs?: number;
}): Promise<ConnectEchoResult> {
  const request = makeRequest(a.requestBytes ?? DEFAULT_REQUEST_BYTES, a.firstByte);
  const out: ConnectEchoResult = { samples: [], errors: 0, firstError: null };
  const deadline = performance.now() + (a.maxMs ?? 120_000);
  for (let i = 0; i < a.count && performance.now() < deadline; i++) {
    try {
      out.samples.push(await connectOnce(a.target, request));
    } catch (err) {
      out.errors++;
      out.firstError ??= String((err as Error).message ?? err);
    }
    if (a.gapMs) await new Promise((r) => setTimeout(r, a.gapMs));
  }
  return out;
}

/**
 * Scenario 2: tries every `retryMs` while the connection is refused (the qmesh
 * capture port is not open yet during a restart) and times only the attempt
 * that got through: the first connection the new daemon carries.
 */
export async function firstConnection(a: { target: Target; retryMs?: number; maxMs?: number }): Promise<{ ms: number; refused: number }> {
  const request = makeRequest(DEFAULT_REQUEST_BYTES);
  const deadline = performance.now() + (a.maxMs ?? 20_000);
  let refused = 0;
  for (;;) {
    try {
      return { ms: await connectOnce(a.target, request), refused };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ECONNREFUSED' && code !== 'ECONNRESET') throw err;
      refused++;
      if (performance.now() > deadline) throw new Error(`still refused after ${a.maxMs ?? 20_000} ms (${refused} tries)`);
      await new Promise((r) => setTimeout(r, a.retryMs ?? 2));
    }
  }
}

/** Warms the client's own code paths (JIT, DNS-free connect) before anything is timed. */
export async function warmUp(a: { target: Target; count?: number }): Promise<{ ok: number }> {
  const r = await connectEcho({ target: a.target, count: a.count ?? 20 });
  return { ok: r.samples.length };
}
