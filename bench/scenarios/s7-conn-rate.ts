// Scenario 7: new connections per second from one client process (connect,
// 32-byte echo, close), a fixed number in flight, d = 0. Target: qmesh >= 5x stunnel.
import type { ConnRateResult } from '../clients/conn-rate.js';
import { ratio, summarize } from '../lib/stats.js';
import type { TransportName } from '../transports/transport.js';
import { PORTS } from './ports.js';
import { errorCell, latencyCell, perTransport, type Figure, type Scenario } from './scenario.js';

/** In flight at once: enough to keep every transport busy, few enough to be "one client". */
export const CONCURRENCY = 8;

export const s7ConnRate: Scenario = {
  id: 7,
  title: 'new connections per second, one client, d = 0',
  async run(ctx) {
    const { env } = ctx;
    const durationMs = ctx.quick ? 2000 : 8000;
    const errors: string[] = [];
    const route = env.route(1, 2, PORTS.s7Echo);
    const client = env.agent(env.fn(1));
    await env.agent(env.fn(2)).call('listen-echo', { port: PORTS.s7Echo });
    const runs = await perTransport(ctx, errors, async (t): Promise<ConnRateResult> => {
      await env.use(t, [route]);
      const target = env.address(t, route);
      await client.call('warm-up', { target, count: 20 });
      const r = await client.call<ConnRateResult>('conn-rate', { target, durationMs, concurrency: CONCURRENCY }, durationMs + 60_000);
      if (r.errors > 0) errors.push(`${t}: ${r.errors} failed connections: ${r.firstError}`);
      ctx.log(`  ${t}: ${r.connPerSec.toFixed(0)} conn/s (${r.completed} ok, ${r.errors} errors)`);
      // Let TIME_WAIT and the transport's own bookkeeping settle before the next one.
      await new Promise((res) => setTimeout(res, 500));
      return r;
    });
    await env.agent(env.fn(2)).call('close-servers');
    const rate: Figure = { key: 's7.conn-per-sec', label: `S7 new connections/s, one client, ${CONCURRENCY} in flight`, unit: 'conn/s', higherIsBetter: true, values: {} };
    const lat: Figure = { key: 's7.latency', label: 'S7 per-connection latency under that load, p50', unit: 'ms', higherIsBetter: false, values: {} };
    for (const [t, r] of Object.entries(runs) as Array<[TransportName, ConnRateResult | Error]>) {
      rate.values[t] = r instanceof Error ? errorCell(r) : { value: r.connPerSec, n: r.completed };
      lat.values[t] = r instanceof Error ? errorCell(r) : latencyCell(summarize(r.latencies));
    }
    const x = ratio(rate.values.qmesh?.value, rate.values.stunnel?.value);
    rate.target = { text: 'qmesh >= 5x stunnel', met: Number.isFinite(x) ? x >= 5 : null };
    const details = Object.fromEntries(
      Object.entries(runs).map(([t, r]) => [t, r instanceof Error ? { error: r.message } : { ...r, latencies: summarize(r.latencies) }]),
    );
    return { figures: [rate, lat], notes: [], errors, details: { durationMs, concurrency: CONCURRENCY, ...details } };
  },
};
