// Scenario 6: one TCP connection sending as fast as it can, underlay MTU 1500
// and 9000 (jumbo frames). Function links stay at 1500, as containers get by
// default, so plain TCP between functions keeps 1500-byte packets either way;
// stunnel's and qmesh's host-to-host traffic can use the jumbo MTU (qmesh with
// tunnel.maxDatagramBytes 8952). Targets: >= 125 MB/s at 1500, >= 300 at 9000.
// Also: CPU seconds both proxies (the two qmesh daemons, the two stunnels) spent per
// GB moved, read from /proc/<pid>/stat around the runs.
import type { BulkResult } from '../clients/bulk.js';
import { cpuSeconds } from '../lib/bench-env.js';
import { median } from '../lib/stats.js';
import type { TransportName } from '../transports/transport.js';
import { PORTS } from './ports.js';
import { errorCell, meets, perTransport, runsCell, type Figure, type Scenario } from './scenario.js';

/** 9000-byte IPv4 packets minus IPv4 (20) and UDP (8) headers, with 20 bytes spare for IP options. */
export const JUMBO_DATAGRAM_BYTES = 8952;

export const s6Bulk: Scenario = {
  id: 6,
  title: 'bulk transfer on one connection, underlay MTU 1500 and 9000',
  async run(ctx) {
    const { env } = ctx;
    const runsPerTransport = ctx.quick ? 2 : 5;
    const durationMs = ctx.quick ? 800 : 3000;
    const errors: string[] = [];
    const route = env.route(1, 2, PORTS.s6Sink);
    const client = env.agent(env.fn(1));
    await env.agent(env.fn(2)).call('listen-sink', { port: PORTS.s6Sink, hash: false });
    const figures: Figure[] = [];
    const details: Record<string, unknown> = {};
    try {
      for (const mtu of [1500, 9000]) {
        if (env.mesh.topo.mtu !== mtu) {
          // Transports are restarted for the new MTU (stunnel and qmesh read it at start).
          for (const t of Object.values(env.transports)) await t.down();
          await env.mesh.topo.setMtu(mtu);
        }
        const cpuPerGb: Partial<Record<TransportName, number>> = {};
        const runs = await perTransport(ctx, errors, async (t): Promise<number[]> => {
          await env.use(t, [route], mtu > 1500 ? { maxDatagramBytes: JUMBO_DATAGRAM_BYTES } : {});
          const target = env.address(t, route);
          const [h1, h2] = env.hosts;
          const pids: Array<number | undefined> = t === 'qmesh' ? [env.qmesh.pid(h1!), env.qmesh.pid(h2!)] : t === 'stunnel' ? env.stunnel.pids : [];
          const cpu = (): number => pids.reduce<number>((sum, pid) => sum + cpuSeconds(pid), 0);
          const out: number[] = [];
          let bytes = 0;
          const cpuBefore = cpu();
          for (let i = 0; i < runsPerTransport; i++) {
            const r = await client.call<BulkResult>('bulk-send', { target, durationMs, hash: false }, durationMs + 60_000);
            if (!r.intact) throw new Error(`sink got ${r.receivedBytes} bytes of ${r.bytes}`);
            out.push(r.mbPerSec);
            bytes += r.receivedBytes;
          }
          if (pids.length > 0) cpuPerGb[t] = (cpu() - cpuBefore) / (bytes / 1e9);
          ctx.log(`  MTU ${mtu} ${t}: ${out.map((v) => v.toFixed(1)).join(', ')} MB/s${pids.length > 0 ? `, ${cpuPerGb[t]!.toFixed(2)} CPU s/GB (both proxies)` : ''}`);
          return out;
        });
        const f: Figure = { key: `s6.mbps-mtu${mtu}`, label: `S6 bulk, one connection, underlay MTU ${mtu}`, unit: 'MB/s', higherIsBetter: true, values: {} };
        for (const [t, r] of Object.entries(runs) as Array<[TransportName, number[] | Error]>) {
          f.values[t] = r instanceof Error ? errorCell(r) : runsCell(r, median(r));
        }
        const bound = mtu === 1500 ? 125 : 300;
        f.target = { text: `qmesh >= ${bound} MB/s`, met: meets(f.values.qmesh?.value, '>=', bound) };
        figures.push(f);
        const c: Figure = { key: `s6.cpu-per-gb-mtu${mtu}`, label: `S6 CPU seconds of both proxies per GB moved, MTU ${mtu}`, unit: 's/GB', higherIsBetter: false, values: {} };
        for (const t of Object.keys(runs) as TransportName[]) {
          const v = cpuPerGb[t];
          c.values[t] = t === 'plain' ? { value: NaN, note: 'no proxy (kernel only)' } : v === undefined || !Number.isFinite(v) ? { value: NaN, note: 'not measured' } : { value: v };
        }
        figures.push(c);
        details[`mtu${mtu}`] = Object.fromEntries(Object.entries(runs).map(([t, r]) => [t, r instanceof Error ? { error: r.message } : { runsMBps: r, cpuSecondsPerGb: cpuPerGb[t as TransportName] ?? null }]));
      }
    } finally {
      if (env.mesh.topo.mtu !== 1500) {
        for (const t of Object.values(env.transports)) await t.down();
        await env.mesh.topo.setMtu(1500);
      }
      await env.agent(env.fn(2)).call('close-servers');
    }
    return { figures, notes: [], errors, details: { durationMs, runsPerTransport, ...details } };
  },
};
