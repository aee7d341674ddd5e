// Scenario 8: opens many connections, proves each one reaches the server (one
// echoed byte), then keeps them open and silent until closeIdle().
import net from 'node:net';
import type { Target } from './servers.js';

const held: net.Socket[] = [];

function openOne(target: Target, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: target.host, port: target.port, noDelay: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no echo within ${timeoutMs} ms`));
    }, timeoutMs);
    s.on('connect', () => s.write('i'));
    s.once('data', () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

export async function openIdle(a: { target: Target; count: number; concurrency?: number; maxMs?: number }): Promise<{ open: number; errors: number; firstError: string | null; ms: number }> {
  const t0 = performance.now();
  const deadline = t0 + (a.maxMs ?? 120_000);
  let started = 0;
  let errors = 0;
  let firstError: string | null = null;
  const worker = async (): Promise<void> => {
    while (started < a.count && performance.now() < deadline) {
      started++;
      try {
        const s = await openOne(a.target, 10_000);
        s.on('error', () => undefined);
        held.push(s);
      } catch (err) {
        errors++;
        firstError ??= String((err as Error).message ?? err);
        if (errors > a.count / 10) return; // something is broken; stop hammering
      }
    }
  };
  await Promise.all(Array.from({ length: a.concurrency ?? 100 }, worker));
  const open = held.filter((s) => !s.destroyed).length;
  return { open, errors, firstError, ms: performance.now() - t0 };
}

export function closeIdle(): { closed: number } {
  const n = held.length;
  for (const s of held.splice(0)) s.destroy();
  return { closed: n };
}
