// Scenario 5: a function chain of N = 1..5 hops alternating between the two
// hosts (hop k runs on host 2 when k is odd, host 1 when even), each hop a NEW
// connection, d = 1 ms. The client on host 1 times its request through all N
// hops and back. Target at N = 5: qmesh <= 0.55x plain TCP and <= 0.4x stunnel.
import type { ConnectEchoResult } from '../clients/connect-echo.js';
import type { RelaySpec } from '../clients/servers.js';
import { fitLine, ratio, summarize, type Summary } from '../lib/stats.js';
import type { Route, TransportName } from '../transports/transport.js';
import { PORTS } from './ports.js';
import { errorCell, latencyCell, perTransport, type Figure, type Scenario } from './scenario.js';

export const MAX_HOPS = 5;
export const CHAIN_RTT_MS = 1;
const REQUEST_BYTES = 32;

/** Host index (1-based) of hop k: odd hops on host 2, even hops on host 1 (hop 0, the client, too), so every hop crosses hosts. */
export const hopHost = (k: number): number => (k % 2 === 1 ? 2 : 1);

export const s5Chain: Scenario = {
  id: 5,
  title: `function chain of N = 1..${MAX_HOPS} hops alternating hosts, new connection per hop, d = ${CHAIN_RTT_MS} ms`,
  async run(ctx) {
    const { env } = ctx;
    const count = ctx.quick ? 8 : 40;
    const errors: string[] = [];
    // routes[k-1] reaches hop k from the host of hop k-1 (hop 0 = the client on host 1).
    const routes: Route[] = [];
    for (let k = 1; k <= MAX_HOPS; k++) routes.push(env.route(hopHost(k - 1), hopHost(k), PORTS.s5RelayBase + k));
    const client = env.agent(env.fn(1));
    const runs = await perTransport(ctx, errors, async (t): Promise<Summary[]> => {
      await env.use(t, routes);
      for (const hostIndex of [1, 2]) {
        const relays: RelaySpec[] = [];
        for (let k = 1; k <= MAX_HOPS; k++) {
          if (hopHost(k) !== hostIndex) continue;
          relays.push({ port: PORTS.s5RelayBase + k, next: k < MAX_HOPS ? env.address(t, routes[k]!) : null });
        }
        await env.agent(env.fn(hostIndex)).call('listen-relays', { relays, size: REQUEST_BYTES });
      }
      const target = env.address(t, routes[0]!);
      const out: Summary[] = [];
      try {
        await client.call('connect-echo', { target, count: 5, requestBytes: REQUEST_BYTES, firstByte: MAX_HOPS });
        await env.emulator.enable();
        await env.emulator.setLink(CHAIN_RTT_MS);
        for (let n = 1; n <= MAX_HOPS; n++) {
          const r = await client.call<ConnectEchoResult>('connect-echo', { target, count, requestBytes: REQUEST_BYTES, firstByte: n, gapMs: 2 }, 120_000);
          if (r.errors > 0) errors.push(`${t} N=${n}: ${r.errors} failed: ${r.firstError}`);
          out.push(summarize(r.samples));
        }
        ctx.log(`  ${t}: p50 by N ${out.map((s) => s.p50.toFixed(2)).join(', ')} ms`);
      } finally {
        await env.emulator.setLink(0);
        await env.emulator.disable();
        await Promise.all([1, 2].map((h) => env.agent(env.fn(h)).call('close-servers')));
      }
      return out;
    });
    const n5: Figure = { key: 's5.latency-n5', label: `S5 chain of ${MAX_HOPS} hops at d=${CHAIN_RTT_MS} ms, end-to-end p50`, unit: 'ms', higherIsBetter: false, values: {} };
    const perHop: Figure = { key: 's5.per-hop', label: 'S5 cost per extra hop (slope over N of p50)', unit: 'ms', higherIsBetter: false, values: {} };
    const details: Record<string, unknown> = {};
    for (const [t, r] of Object.entries(runs) as Array<[TransportName, Summary[] | Error]>) {
      if (r instanceof Error) {
        n5.values[t] = errorCell(r);
        perHop.values[t] = errorCell(r);
        continue;
      }
      const last = r[MAX_HOPS - 1]!;
      n5.values[t] = latencyCell(last);
      const fit = fitLine(r.map((_, i) => i + 1), r.map((s) => s.p50));
      perHop.values[t] = { value: fit.slope };
      details[t] = { byHops: r.map((s, i) => ({ hops: i + 1, latency: s })), perHopMs: fit.slope, r2: fit.r2 };
    }
    const q = n5.values.qmesh?.value;
    const vsPlain = ratio(q, n5.values.plain?.value);
    const vsTls = ratio(q, n5.values.stunnel?.value);
    n5.target = { text: 'qmesh <= 0.55x plain and <= 0.4x stunnel', met: Number.isFinite(vsPlain) && Number.isFinite(vsTls) ? vsPlain <= 0.55 && vsTls <= 0.4 : null };
    return { figures: [n5, perHop], notes: [], errors, details: { count, rttAddedMs: CHAIN_RTT_MS, ...details } };
  },
};
