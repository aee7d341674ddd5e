// Scenario 8: many concurrent idle connections between the two hosts. Each is
// opened, proven end to end with one echoed byte, then left silent. The figure
// is how much the proxy's resident memory (VmRSS) grew per connection, on the
// source and on the destination host: qmesh's daemons, stunnel's two
// processes; plain TCP has no proxy. Target: qmesh <= 16 KiB per connection, each side.
import { rssBytes } from '../lib/bench-env.js';
import type { TransportName } from '../transports/transport.js';
import { PORTS } from './ports.js';
import { errorCell, meets, perTransport, type Cell, type Figure, type Scenario } from './scenario.js';

/**
 * stunnel holds two descriptors per connection in the source host's process,
 * and this machine's hard RLIMIT_NOFILE is 20,000 (raising it needs
 * CAP_SYS_RESOURCE), so stunnel is measured at most at this many.
 */
export const STUNNEL_MAX_CONNECTIONS = 9_000;
/** Idle long enough for lazily allocated state (timers, buffers) to settle. */
const SETTLE_MS = 1000;

interface SideRss {
  source: number;
  destination: number;
  opened: number;
  errors: number;
  firstError: string | null;
  openMs: number;
  beforeBytes: { source: number; destination: number };
  afterBytes: { source: number; destination: number };
}

export const s8IdleConns: Scenario = {
  id: 8,
  title: 'many concurrent idle tunnelled connections: proxy RSS growth per connection',
  async run(ctx) {
    const { env } = ctx;
    const count = ctx.quick ? 800 : 10_000;
    const errors: string[] = [];
    const notes: string[] = [];
    const route = env.route(1, 2, PORTS.s8Echo);
    const [h1, h2] = env.hosts;
    const client = env.agent(env.fn(1));
    await env.agent(env.fn(2)).call('listen-echo', { port: PORTS.s8Echo });
    const runs = await perTransport(ctx, errors, async (t): Promise<SideRss | null> => {
      if (t === 'plain') return null;
      await env.use(t, [route]);
      const target = env.address(t, route);
      const n = t === 'stunnel' ? Math.min(count, STUNNEL_MAX_CONNECTIONS) : count;
      const pids = t === 'qmesh' ? { source: env.qmesh.pid(h1!), destination: env.qmesh.pid(h2!) } : { source: env.stunnel.pids[0], destination: env.stunnel.pids[1] };
      // Warm the proxy so one-time allocations (code, pools) are not counted per connection.
      await client.call('open-idle', { target, count: 200, concurrency: 50 }, 60_000);
      await client.call('close-idle');
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      const before = { source: rssBytes(pids.source), destination: rssBytes(pids.destination) };
      try {
        const r = await client.call<{ open: number; errors: number; firstError: string | null; ms: number }>('open-idle', { target, count: n, concurrency: 100, maxMs: 150_000 }, 180_000);
        await new Promise((res) => setTimeout(res, SETTLE_MS));
        const after = { source: rssBytes(pids.source), destination: rssBytes(pids.destination) };
        if (r.errors > 0) errors.push(`${t}: ${r.errors} of ${n} connections failed: ${r.firstError}`);
        const per = (side: 'source' | 'destination'): number => (after[side] - before[side]) / Math.max(1, r.open) / 1024;
        ctx.log(`  ${t}: ${r.open} open in ${(r.ms / 1000).toFixed(1)} s; RSS +${per('source').toFixed(1)} KiB/conn source, +${per('destination').toFixed(1)} KiB/conn destination`);
        return { source: per('source'), destination: per('destination'), opened: r.open, errors: r.errors, firstError: r.firstError, openMs: r.ms, beforeBytes: before, afterBytes: after };
      } finally {
        await client.call('close-idle');
      }
    });
    await env.agent(env.fn(2)).call('close-servers');
    const src: Figure = { key: 's8.rss-source', label: `S8 proxy RSS per idle connection, source host (${count} conns)`, unit: 'KiB', higherIsBetter: false, values: {} };
    const dst: Figure = { key: 's8.rss-destination', label: `S8 proxy RSS per idle connection, destination host`, unit: 'KiB', higherIsBetter: false, values: {} };
    for (const [t, r] of Object.entries(runs) as Array<[TransportName, SideRss | null | Error]>) {
      if (r === null) {
        const none: Cell = { value: NaN, note: 'no proxy (kernel only)' };
        src.values[t] = none;
        dst.values[t] = none;
      } else if (r instanceof Error) {
        src.values[t] = errorCell(r);
        dst.values[t] = errorCell(r);
      } else {
        src.values[t] = { value: r.source, n: r.opened };
        dst.values[t] = { value: r.destination, n: r.opened };
      }
    }
    src.target = { text: 'qmesh <= 16 KiB', met: meets(src.values.qmesh?.value, '<=', 16) };
    dst.target = { text: 'qmesh <= 16 KiB', met: meets(dst.values.qmesh?.value, '<=', 16) };
    if (count > STUNNEL_MAX_CONNECTIONS && ctx.transports.includes('stunnel')) {
      notes.push(`stunnel measured with ${STUNNEL_MAX_CONNECTIONS} connections: it holds two descriptors per connection and the hard RLIMIT_NOFILE here is 20,000.`);
    }
    return { figures: [src, dst], notes, errors, details: { count, ...Object.fromEntries(Object.entries(runs).map(([t, r]) => [t, r instanceof Error ? { error: r.message } : r])) } };
  },
};
