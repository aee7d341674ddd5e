// Scenario 9: scenario 6's bulk transfer with 1 % of the packets dropped on
// each host's egress (both directions: data and acknowledgements), d = 0.
// Both ends sha256 the stream; the figure is MB/s and the target is integrity.
// The drop is the kernel's random statistic match, not NFQUEUE (see emulator-control.ts),
// with segmentation offloads off so every dropped unit is one wire packet.
import type { BulkResult } from '../clients/bulk.js';
import { setSegmentationOffloads } from '../lib/offloads.js';
import { median } from '../lib/stats.js';
import type { TransportName } from '../transports/transport.js';
import { PORTS } from './ports.js';
import { errorCell, perTransport, runsCell, type Figure, type Scenario } from './scenario.js';

export const LOSS_RATE = 0.01;

export const s9LossyBulk: Scenario = {
  id: 9,
  title: `bulk transfer with ${LOSS_RATE * 100} % packet loss on the underlay, sha256 checked`,
  async run(ctx) {
    const { env } = ctx;
    const runsPerTransport = ctx.quick ? 1 : 3;
    const durationMs = ctx.quick ? 2000 : 4000;
    const errors: string[] = [];
    const route = env.route(1, 2, PORTS.s9Sink);
    const client = env.agent(env.fn(1));
    await env.agent(env.fn(2)).call('listen-sink', { port: PORTS.s9Sink, hash: true });
    const runs = await perTransport(ctx, errors, async (t): Promise<{ mbps: number[]; intact: boolean[]; dropped: number }> => {
      await env.use(t, [route]);
      const target = env.address(t, route);
      const out = { mbps: [] as number[], intact: [] as boolean[], dropped: 0 };
      // Loss only, so the kernel drops (emulator-control.ts kernelLossRule): NFQUEUE through JS would cap the rate.
      // Offloads off, so each dropped "packet" is one MTU-sized packet (lib/offloads.ts).
      await setSegmentationOffloads(env.mesh, false);
      await env.emulator.enableKernelLoss(LOSS_RATE);
      try {
        for (let i = 0; i < runsPerTransport; i++) {
          const r = await client.call<BulkResult>('bulk-send', { target, durationMs, hash: true, timeoutMs: durationMs + 60_000 }, durationMs + 90_000);
          out.mbps.push(r.mbPerSec);
          out.intact.push(r.intact === true);
          if (!r.intact) errors.push(`${t}: DATA CORRUPTED OR TRUNCATED: sent ${r.bytes} bytes sha256 ${r.sha256Sent}, received ${r.receivedBytes} sha256 ${r.sha256Received}`);
        }
        for (const n of Object.values(await env.emulator.kernelLossCounters())) out.dropped += n;
      } finally {
        await env.emulator.disable();
        await setSegmentationOffloads(env.mesh, true);
      }
      ctx.log(`  ${t}: ${out.mbps.map((v) => v.toFixed(1)).join(', ')} MB/s, intact ${out.intact.join(',')}, ${out.dropped} packets dropped`);
      return out;
    });
    await env.agent(env.fn(2)).call('close-servers');
    const f: Figure = { key: 's9.mbps-loss', label: `S9 bulk with ${LOSS_RATE * 100} % loss each way, sha256 checked`, unit: 'MB/s', higherIsBetter: true, values: {} };
    const notes: string[] = [];
    for (const [t, r] of Object.entries(runs) as Array<[TransportName, { mbps: number[]; intact: boolean[]; dropped: number } | Error]>) {
      if (r instanceof Error) {
        f.values[t] = errorCell(r);
        continue;
      }
      f.values[t] = runsCell(r.mbps, median(r.mbps));
      notes.push(`${t}: ${r.intact.every(Boolean) ? 'intact' : 'NOT INTACT'} in ${r.intact.length} run(s); the kernel dropped ${r.dropped} packets.`);
    }
    const q = runs.qmesh;
    f.target = { text: 'qmesh data intact (sha256)', met: q === undefined || q instanceof Error ? null : q.intact.every(Boolean) };
    return { figures: [f], notes, errors, details: { durationMs, runsPerTransport, lossRate: LOSS_RATE, ...Object.fromEntries(Object.entries(runs).map(([t, r]) => [t, r instanceof Error ? { error: r.message } : r])) } };
  },
};
