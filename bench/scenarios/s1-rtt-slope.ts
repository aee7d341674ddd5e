// Scenario 1: a new TCP connection plus one 32-byte request/response between
// functions on two hosts, at added round-trip times d = 0, 1, 2, 5, 10 ms.
// The slope of the median latency over d is the number of round trips on the
// critical path: plain TCP 2 (this is the emulator's calibration), TCP+TLS 1.3
// 3, qmesh over a warm tunnel 1 (target <= 1.1).
import type { ConnectEchoResult } from '../clients/connect-echo.js';
import type { EmulatorStats } from '../emulator/emulator-control.js';
import { bootstrapRoundTrips, roundTrips, summarize, type LinearFit } from '../lib/stats.js';
import type { TransportName } from '../transports/transport.js';
import { PORTS } from './ports.js';
import { errorCell, latencyCell, meets, perTransport, type Figure, type Scenario } from './scenario.js';

export const DELAYS_MS = [0, 1, 2, 5, 10] as const;

export interface SlopeRun {
  fit: LinearFit;
  byDelay: Array<{ rttAddedMs: number; samples: number[]; errors: number; emulator: Record<string, EmulatorStats> }>;
}

export const s1RttSlope: Scenario = {
  id: 1,
  title: 'new connection + request/response: round trips = slope of latency over added RTT d',
  async run(ctx) {
    const { env } = ctx;
    const count = ctx.quick ? 15 : 60;
    const errors: string[] = [];
    const route = env.route(1, 2, PORTS.s1Echo);
    const client = env.agent(env.fn(1));
    await env.agent(env.fn(2)).call('listen-echo', { port: PORTS.s1Echo });
    const runs = await perTransport(ctx, errors, async (t): Promise<SlopeRun> => {
      await env.use(t, [route]);
      const target = env.address(t, route);
      await client.call('warm-up', { target, count: 10 });
      await env.emulator.enable();
      try {
        const byDelay: SlopeRun['byDelay'] = [];
        for (const d of DELAYS_MS) {
          await env.emulator.setLink(d);
          await env.emulator.stats(true);
          await client.call('connect-echo', { target, count: 2 }); // settle after the change
          const r = await client.call<ConnectEchoResult>('connect-echo', { target, count, gapMs: 2 }, 120_000);
          const emulator = await env.emulator.stats(true);
          if (d > 0 && Object.values(emulator).some((s) => s.held === 0)) throw new Error(`emulator held no packet at d=${d}: is the NFQUEUE rule in place?`);
          byDelay.push({ rttAddedMs: d, samples: r.samples, errors: r.errors, emulator });
          ctx.log(`  ${t} d=${d}: p50 ${summarize(r.samples).p50.toFixed(2)} ms (${r.samples.length} ok, ${r.errors} errors)`);
          if (r.errors > 0) errors.push(`${t} d=${d}: ${r.errors} failed connections: ${r.firstError}`);
        }
        return { fit: roundTrips(byDelay), byDelay };
      } finally {
        await env.emulator.setLink(0);
        await env.emulator.disable();
      }
    });
    await env.agent(env.fn(2)).call('close-servers');

    const slope: Figure = { key: 's1.round-trips', label: 'S1 round trips, new conn + req/resp (slope over d)', unit: 'RT', higherIsBetter: false, values: {} };
    const at10: Figure = { key: 's1.latency-d10', label: 'S1 latency at d=10 ms, p50', unit: 'ms', higherIsBetter: false, values: {} };
    const details: Record<string, unknown> = {};
    for (const [t, r] of Object.entries(runs) as Array<[TransportName, SlopeRun | Error]>) {
      if (r instanceof Error) {
        slope.values[t] = errorCell(r);
        at10.values[t] = errorCell(r);
        continue;
      }
      // Spread: 90 % bootstrap interval of the slope (sampling noise); the slope through the per-d minima
      // (the least disturbed samples) goes into the details.
      const ci = bootstrapRoundTrips(r.byDelay);
      const lo = roundTrips(r.byDelay.map((b) => ({ rttAddedMs: b.rttAddedMs, samples: [summarize(b.samples).min] })));
      slope.values[t] = { value: r.fit.slope, min: ci.lo, max: ci.hi, n: r.byDelay.reduce((a, b) => a + b.samples.length, 0) };
      const last = r.byDelay.find((b) => b.rttAddedMs === 10);
      if (last) at10.values[t] = latencyCell(summarize(last.samples));
      details[t] = {
        slope: r.fit.slope,
        interceptMs: r.fit.intercept,
        r2: r.fit.r2,
        slopeOfMinimums: lo.slope,
        bootstrap90: ci,
        byDelay: r.byDelay.map((b) => ({ rttAddedMs: b.rttAddedMs, latency: summarize(b.samples), errors: b.errors, emulatorHoldErrorMs: Object.fromEntries(Object.entries(b.emulator).map(([h, s]) => [h, { p50: s.holdErrorMs.p50, p99: s.holdErrorMs.p99, packets: s.packets }])) })),
      };
    }
    const q = slope.values.qmesh?.value;
    slope.target = { text: 'qmesh <= 1.1 (plain 2, TLS 3)', met: meets(q, '<=', 1.1) };
    // The same slopes scaled so plain TCP is exactly 2: what is left of the emulator's and machine's bias.
    const calibrated: Figure = { key: 's1.round-trips-calibrated', label: 'S1 round trips, calibrated (2 x slope / plain slope)', unit: 'RT', higherIsBetter: false, values: {} };
    const plainSlope = slope.values.plain?.value;
    if (plainSlope !== undefined && Number.isFinite(plainSlope) && plainSlope > 0) {
      for (const [t, c] of Object.entries(slope.values) as Array<[TransportName, NonNullable<(typeof slope.values)[TransportName]>]>) {
        const k = 2 / plainSlope;
        calibrated.values[t] = c.note ? c : { value: c.value * k, ...(c.min !== undefined ? { min: c.min * k } : {}), ...(c.max !== undefined ? { max: c.max * k } : {}) };
      }
      calibrated.target = { text: 'qmesh <= 1.1', met: meets(calibrated.values.qmesh?.value, '<=', 1.1) };
    }
    const notes: string[] = [];
    const plain = runs.plain;
    if (plain && !(plain instanceof Error)) {
      const ok = Math.abs(plain.fit.slope - 2) <= 0.15;
      const mins = roundTrips(plain.byDelay.map((b) => ({ rttAddedMs: b.rttAddedMs, samples: [summarize(b.samples).min] })));
      notes.push(
        `Emulator calibration: plain TCP connect + echo slope ${plain.fit.slope.toFixed(2)} round trips (expected 2.00; r² ${plain.fit.r2.toFixed(3)}; ` +
          `through the per-d minima ${mins.slope.toFixed(2)}) — ${ok ? 'OK' : 'OFF BY MORE THAN 0.15: treat slopes with care'}.`,
      );
    }
    return { figures: calibrated.target ? [slope, calibrated, at10] : [slope, at10], notes, errors, details };
  },
};
