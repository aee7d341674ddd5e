// Scenario 2 (qmesh only; plain TCP and stunnel have no tunnel to warm).
//
// Cold: both daemons stay up and warm; host 1's tunnel to host 2 is knocked
// down by an ICMP-rejecting rule on host 2 (its keep-alive fails at once), and
// host 1 re-dials with a growing back-off (config: 10 ms doubling, no cap that
// matters). Once the next re-dial is over a second away the rule goes, /status
// is checked to say "down", and the function connects: the daemon dials on
// demand, so the sample is handshake + stream. A sample counts only if host 1
// made exactly one new handshake for it. Round trips = slope over d, as in 1.
//
// Pre-warmed: host 1's daemon is restarted (the daemon dials every peer at
// start); once /status shows the tunnel up the first connection is timed: what
// start-up pre-warming buys. The first connection that races the restart (the
// capture port opens before the tunnel is up) is reported at d = 0 too.
import type { ConnectEchoResult } from '../clients/connect-echo.js';
import { bootstrapRoundTrips, roundTrips, summarize } from '../lib/stats.js';
import type { BenchEnv } from '../lib/bench-env.js';
import { PORTS } from './ports.js';
import { DELAYS_MS } from './s1-rtt-slope.js';
import { errorCell, latencyCell, meets, type Cell, type Figure, type Scenario } from './scenario.js';

const QUICK_DELAYS_MS = [0, 10] as const;
/** Host 1's re-dial back-off for this scenario: from 10 ms, doubling, effectively uncapped. */
const S2_TUNNEL_CONFIG = { reconnectMinMs: 10, reconnectMaxMs: 600_000, keepAliveMs: 200 };
/** Failed re-dials to wait for: after 8 the next one is 1.28 s away, time enough to connect first. */
const FAILED_DIALS = 8;
/**
 * Linux sends at most one ICMP port-unreachable per second to a host
 * (net.ipv4.icmp_ratelimit = 1000 ms); without lifting that in host 2, every
 * re-dial within a second of the last refusal hears nothing and hangs until
 * the handshake times out (the daemon abandons a handshake on an ICMP error, README "What changed for operators").
 */
const ICMP_RATELIMIT_SYSCTL = 'net.ipv4.icmp_ratelimit';

interface OutboundStatus {
  state: string;
  handshakes: number;
  reconnects: number;
}

async function outbound(env: BenchEnv): Promise<OutboundStatus> {
  const st = await env.mesh.status(env.hostOf(1));
  return st.peers[0].outbound as OutboundStatus;
}

function rejectRule(op: '-I' | '-D', env: BenchEnv): string[] {
  const from = env.hostOf(1).underlayIp;
  return ['iptables', '-w', op, 'INPUT', ...(op === '-I' ? ['1'] : []), '-p', 'udp', '-s', from, '--dport', '4433', '-m', 'comment', '--comment', 'qmesh-bench: knock the tunnel down', '-j', 'REJECT', '--reject-with', 'icmp-port-unreachable'];
}

/** One cold sample at the current delay, or null if the daemon re-dialled by itself first. */
async function coldSample(env: BenchEnv, target: { host: string; port: number }): Promise<number | null> {
  const h2 = env.hostOf(2);
  const before = await outbound(env);
  const add = await env.mesh.topo.exec(h2.ns, rejectRule('-I', env));
  if (add.code !== 0) throw new Error(`REJECT rule: ${add.stderr.trim()}`);
  let st = before;
  try {
    const deadline = Date.now() + 15_000;
    while (!(st.state !== 'up' && st.reconnects >= before.reconnects + FAILED_DIALS)) {
      if (Date.now() > deadline) throw new Error(`tunnel not down with ${FAILED_DIALS} failed re-dials within 15 s (state ${st.state}, reconnects ${st.reconnects - before.reconnects})`);
      await new Promise((r) => setTimeout(r, 50));
      st = await outbound(env);
    }
  } finally {
    await env.mesh.topo.exec(h2.ns, rejectRule('-D', env));
  }
  const down = await outbound(env);
  if (down.state !== 'down') return null;
  const r = await env.agent(env.fn(1)).call<ConnectEchoResult>('connect-echo', { target, count: 1 });
  const after = await outbound(env);
  if (after.handshakes !== down.handshakes + 1 || r.samples.length !== 1) return null;
  return r.samples[0]!;
}

export const s2ColdTunnel: Scenario = {
  id: 2,
  title: 'first connection over a cold tunnel (dialled on demand) and after a pre-warmed start',
  async run(ctx) {
    const { env } = ctx;
    const errors: string[] = [];
    const notes: string[] = [];
    const delays = ctx.quick ? QUICK_DELAYS_MS : DELAYS_MS;
    const coldRepeats = ctx.quick ? 3 : 8;
    const restartRepeats = ctx.quick ? 1 : 4;
    const cold: Figure = { key: 's2.cold-round-trips', label: 'S2 round trips, first conn on a cold tunnel (slope)', unit: 'RT', higherIsBetter: false, values: {} };
    const warm: Figure = { key: 's2.prewarmed-round-trips', label: 'S2 round trips, first conn after a restart, tunnel pre-warmed (slope)', unit: 'RT', higherIsBetter: false, values: {} };
    const coldAt0: Figure = { key: 's2.cold-latency-d0', label: 'S2 first conn on a cold tunnel at d=0, p50', unit: 'ms', higherIsBetter: false, values: {} };
    const racing: Figure = { key: 's2.restart-race-d0', label: 'S2 first conn racing a daemon restart at d=0, p50', unit: 'ms', higherIsBetter: false, values: {} };
    const noTunnel: Cell = { value: NaN, note: 'no tunnel (= S1)' };
    for (const f of [cold, warm, coldAt0, racing]) {
      for (const t of ctx.transports) if (t !== 'qmesh') f.values[t] = noTunnel;
    }
    if (!ctx.transports.includes('qmesh')) return { figures: [], notes: ['qmesh not selected'], errors, details: {} };

    const route = env.route(1, 2, PORTS.s2Echo);
    const h1 = env.hostOf(1);
    const client = env.agent(env.fn(1));
    await env.agent(env.fn(2)).call('listen-echo', { port: PORTS.s2Echo });
    const coldBy: Array<{ rttAddedMs: number; samples: number[]; discarded: number }> = [];
    const warmBy: Array<{ rttAddedMs: number; samples: number[] }> = [];
    const raceBy: Array<{ rttAddedMs: number; samples: number[] }> = [];
    // Restart with this scenario's back-off; the next scenario gets the default config again.
    await env.qmesh.down();
    const h2 = env.hostOf(2);
    const oldLimit = (await env.mesh.topo.exec(h2.ns, ['sysctl', '-n', ICMP_RATELIMIT_SYSCTL])).stdout.trim() || '1000';
    await env.mesh.topo.exec(h2.ns, ['sysctl', '-q', '-w', `${ICMP_RATELIMIT_SYSCTL}=0`]);
    env.qmesh.extraConfig = (h) => (h === h1 ? { tunnel: S2_TUNNEL_CONFIG } : {});
    try {
      await env.use('qmesh', [route]);
      const target = env.address('qmesh', route);
      await client.call('warm-up', { target, count: 20 });
      await env.emulator.enable();
      for (const d of delays) {
        await env.emulator.setLink(d);
        const c = { rttAddedMs: d, samples: [] as number[], discarded: 0 };
        for (let i = 0; i < coldRepeats; i++) {
          const ms = await coldSample(env, target);
          if (ms === null) c.discarded++;
          else c.samples.push(ms);
        }
        coldBy.push(c);
        const w = { rttAddedMs: d, samples: [] as number[] };
        const race = { rttAddedMs: d, samples: [] as number[] };
        for (let i = 0; i < restartRepeats; i++) {
          await env.mesh.stopDaemon(h1, 'SIGTERM', 5000);
          const first = client.call<{ ms: number; refused: number }>('first-connection', { target, retryMs: 2, maxMs: 30_000 }, 40_000);
          await env.mesh.startDaemon(h1, 30_000);
          race.samples.push((await first).ms);
          await env.mesh.waitTunnelsUp(10_000);
          const p = await client.call<ConnectEchoResult>('connect-echo', { target, count: 1 });
          if (p.samples[0] !== undefined) w.samples.push(p.samples[0]);
          else errors.push(`pre-warmed request at d=${d} failed: ${p.firstError}`);
        }
        warmBy.push(w);
        raceBy.push(race);
        const f = (xs: number[]): string => xs.map((v) => v.toFixed(1)).join(', ');
        ctx.log(`  qmesh d=${d}: cold ${f(c.samples)} ms (${c.discarded} discarded); pre-warmed ${f(w.samples)} ms; racing a restart ${f(race.samples)} ms`);
      }
      const cf = roundTrips(coldBy);
      const wf = roundTrips(warmBy);
      const cci = bootstrapRoundTrips(coldBy);
      const wci = bootstrapRoundTrips(warmBy);
      cold.values.qmesh = { value: cf.slope, min: cci.lo, max: cci.hi, n: coldBy.reduce((a, b) => a + b.samples.length, 0) };
      warm.values.qmesh = { value: wf.slope, min: wci.lo, max: wci.hi, n: warmBy.reduce((a, b) => a + b.samples.length, 0) };
      const c0 = coldBy.find((b) => b.rttAddedMs === 0);
      if (c0) coldAt0.values.qmesh = latencyCell(summarize(c0.samples));
      const r0 = raceBy.find((b) => b.rttAddedMs === 0);
      if (r0) racing.values.qmesh = latencyCell(summarize(r0.samples));
      const discarded = coldBy.reduce((a, b) => a + b.discarded, 0);
      notes.push(
        `Cold: warm daemons, tunnel knocked down and dialled on demand by the first connection (intercept ${cf.intercept.toFixed(2)} ms` +
          `${discarded ? `; ${discarded} sample(s) discarded because the daemon re-dialled by itself first` : ''}). ` +
          `Pre-warmed: first connection after a daemon restart once /status shows the tunnel up (intercept ${wf.intercept.toFixed(2)} ms).`,
      );
    } catch (err) {
      errors.push(`qmesh: ${(err as Error).message}`);
      cold.values.qmesh ??= errorCell(err);
    } finally {
      await env.emulator.setLink(0);
      await env.emulator.disable();
      env.qmesh.extraConfig = () => ({});
      await env.qmesh.down();
      await env.mesh.topo.exec(h2.ns, ['sysctl', '-q', '-w', `${ICMP_RATELIMIT_SYSCTL}=${oldLimit}`]);
      await env.agent(env.fn(2)).call('close-servers');
    }
    // Not judged: a slope whose 90 % interval is wider than one round trip, or one with a single sample per
    // delay (its bootstrap interval is empty, not narrow).
    const wide = (c: Cell | undefined): boolean => c?.min !== undefined && c.max !== undefined && c.max - c.min > 1;
    const thin = (by: Array<{ samples: number[] }>): boolean => by.some((b) => b.samples.length < 2);
    const coldJudged = !wide(cold.values.qmesh) && !thin(coldBy);
    const warmJudged = !wide(warm.values.qmesh) && !thin(warmBy);
    cold.target = { text: 'qmesh <= 2.1', met: coldJudged ? meets(cold.values.qmesh?.value, '<=', 2.1) : null };
    warm.target = { text: 'pays warm cost (<= 1.1)', met: warmJudged ? meets(warm.values.qmesh?.value, '<=', 1.1) : null };
    if (!coldJudged || !warmJudged) notes.push('Slopes with fewer than 2 samples per delay, or a 90 % interval wider than 1 round trip, are not judged.');
    return { figures: [cold, warm, coldAt0, racing], notes, errors, details: { coldRepeats, restartRepeats, tunnelConfigHost1: S2_TUNNEL_CONFIG, cold: coldBy, prewarmed: warmBy, racingRestart: raceBy } };
  },
};
