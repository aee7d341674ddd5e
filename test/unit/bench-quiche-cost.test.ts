// bench/quiche-cost.ts measures the binding's per-packet cost; this checks the figures
// it prints come from a real transfer (every byte across, packets counted, times > 0).
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { expect, it } from 'vitest';

it('quiche-cost moves the stream across and reports per-packet send and recv costs', () => {
  const out = execFileSync(process.execPath, [path.resolve('dist/bench/quiche-cost.js'), '--megabytes', '3'], { encoding: 'utf8', timeout: 60_000 });
  const { sizes: results, finalizers, queries } = JSON.parse(out.trim().split('\n').at(-1)!) as { sizes: Array<{ datagramBytes: number; megabytes: number; packets: number; sendMicros: number; recvMicros: number }>; finalizers: Array<{ packets: number; afterGcMs: number }>; queries: Array<{ call: string; micros: number }> };
  expect(results.map((r) => r.datagramBytes)).toEqual([1350, 8952]);
  for (const r of results) {
    expect(r.megabytes).toBeGreaterThanOrEqual(3);
    // Each packet carries at most one datagram's worth of stream data.
    expect(r.packets).toBeGreaterThanOrEqual((r.megabytes * 1e6) / r.datagramBytes);
    expect(r.sendMicros).toBeGreaterThan(0);
    expect(r.recvMicros).toBeGreaterThan(0);
  }
  expect(finalizers.map((f) => f.packets >= 10_000)).toEqual([true, true, true]);
  expect(queries.map((q) => q.call)).toEqual(['isReadable()', 'streamReadable(id)', 'readable(), iterated']);
  for (const q of queries) expect(q.micros).toBeGreaterThan(0);
}, 90_000);
