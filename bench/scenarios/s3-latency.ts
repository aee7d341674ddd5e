// Scenario 3: scenario 1's new connection + request/response at d = 0 (the
// emulator off the path), many samples: p50 and p99, and qmesh's ratios to
// plain TCP and to stunnel. Target: p50 <= 2x plain and <= 0.2x stunnel.
import type { ConnectEchoResult } from '../clients/connect-echo.js';
import { ratio, summarize, type Summary } from '../lib/stats.js';
import type { TransportName } from '../transports/transport.js';
import { PORTS } from './ports.js';
import { errorCell, latencyCell, p99Cell, perTransport, type Figure, type Scenario } from './scenario.js';

export const s3Latency: Scenario = {
  id: 3,
  title: 'new connection + request/response at d = 0: p50 and p99',
  async run(ctx) {
    const { env } = ctx;
    const count = ctx.quick ? 200 : 1000;
    const errors: string[] = [];
    const route = env.route(1, 2, PORTS.s3Echo);
    const client = env.agent(env.fn(1));
    await env.agent(env.fn(2)).call('listen-echo', { port: PORTS.s3Echo });
    const runs = await perTransport(ctx, errors, async (t): Promise<Summary> => {
      await env.use(t, [route]);
      const target = env.address(t, route);
      await client.call('warm-up', { target, count: 20 });
      const r = await client.call<ConnectEchoResult>('connect-echo', { target, count, gapMs: 1 }, 300_000);
      if (r.errors > 0) errors.push(`${t}: ${r.errors} failed connections: ${r.firstError}`);
      const s = summarize(r.samples);
      ctx.log(`  ${t}: p50 ${s.p50.toFixed(3)} ms, p99 ${s.p99.toFixed(3)} ms (${s.n} ok)`);
      return s;
    });
    await env.agent(env.fn(2)).call('close-servers');
    const p50: Figure = { key: 's3.p50', label: 'S3 new conn + req/resp at d=0, p50', unit: 'ms', higherIsBetter: false, values: {} };
    const p99: Figure = { key: 's3.p99', label: 'S3 new conn + req/resp at d=0, p99', unit: 'ms', higherIsBetter: false, values: {} };
    for (const [t, r] of Object.entries(runs) as Array<[TransportName, Summary | Error]>) {
      p50.values[t] = r instanceof Error ? errorCell(r) : latencyCell(r);
      p99.values[t] = r instanceof Error ? errorCell(r) : p99Cell(r);
    }
    const q = p50.values.qmesh?.value;
    const vsPlain = ratio(q, p50.values.plain?.value);
    const vsTls = ratio(q, p50.values.stunnel?.value);
    p50.target = {
      text: 'qmesh <= 2x plain and <= 0.2x stunnel',
      met: Number.isFinite(vsPlain) && Number.isFinite(vsTls) ? vsPlain <= 2 && vsTls <= 0.2 : null,
    };
    return { figures: [p50, p99], notes: [], errors, details: Object.fromEntries(Object.entries(runs).map(([t, r]) => [t, r instanceof Error ? { error: r.message } : r])) };
  },
};
