// Scenario 7: how many new connections (connect, 32-byte echo, close) one
// client completes per second, with a fixed number in flight.
import { connectOnce, DEFAULT_REQUEST_BYTES } from './connect-echo.js';
import type { Target } from './servers.js';

export interface ConnRateResult {
  completed: number;
  errors: number;
  firstError: string | null;
  ms: number;
  connPerSec: number;
  /** Per-connection latency under this load, ms (a sample of at most 20,000). */
  latencies: number[];
}

export async function connRate(a: { target: Target; durationMs: number; concurrency: number }): Promise<ConnRateResult> {
  const request = Buffer.alloc(DEFAULT_REQUEST_BYTES, 0x61);
  const t0 = performance.now();
  const end = t0 + a.durationMs;
  const out: ConnRateResult = { completed: 0, errors: 0, firstError: null, ms: 0, connPerSec: 0, latencies: [] };
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      try {
        const ms = await connectOnce(a.target, request, 5_000);
        out.completed++;
        if (out.latencies.length < 20_000) out.latencies.push(ms);
      } catch (err) {
        out.errors++;
        out.firstError ??= String((err as Error).message ?? err);
        // A refusing or overloaded target must not turn this into a busy loop.
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  };
  await Promise.all(Array.from({ length: a.concurrency }, worker));
  out.ms = performance.now() - t0;
  out.connPerSec = out.completed / (out.ms / 1000);
  return out;
}
