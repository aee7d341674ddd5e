// Case 7: a connection flood on the capture port. One function opens thousands
// of captured connections plus a slow client's idle ones; the daemon enforces
// capture.maxConnectionsPerSource (and maxConnections) with clean resets, stays
// responsive (/healthz timing, event-loop lag), another function's requests
// still succeed, and afterwards no file descriptor is left behind.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PORT } from '../../../daemon/demo/mesh.js';
import { daemonOf, destroyMesh, startMesh, type HostInfo, type Mesh } from '../../support/e2e-mesh.js';
import { FnServer, sleep, waitFor, withTimeout } from '../../support/fn-net.js';
import { bound, FULL, fdCount, figure, HERE, legitTraffic, PROFILE } from './profile.js';

const ECHO_PORT = 7401;
const RPC_PORT = 7402;
const PER_SOURCE = FULL ? 15_000 : 1_500;
const LIMIT = FULL ? 30_000 : 2_500;
let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 2, configFor: () => ({ capture: { maxConnections: LIMIT, maxConnectionsPerSource: PER_SOURCE } }) });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  await FnServer.start(mesh, h2.functions[0]!.ns, 'echo', { ip: h2.functions[0]!.ip, port: ECHO_PORT });
  await FnServer.start(mesh, h2.functions[1]!.ns, 'rpc', { ip: h2.functions[1]!.ip, port: RPC_PORT, replyBytes: 1000 });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

/** /healthz answer time measured by curl itself (not counting process start). */
async function healthzMs(host: HostInfo): Promise<number> {
  const r = await mesh.topo.exec(host.ns, ['curl', '-s', '-o', '/dev/null', '-m', '10', '-w', '%{http_code} %{time_total}', `http://127.0.0.1:${ADMIN_PORT}/healthz`], { timeoutMs: 15_000 });
  const [code, secs] = r.stdout.trim().split(' ');
  return code === '200' ? Number(secs) * 1000 : Infinity;
}

async function lagSeconds(host: HostInfo): Promise<number> {
  const body = (await mesh.admin(host, '/metrics')).body;
  return Number(/^qmesh_nodejs_eventloop_lag_seconds ([0-9.e+-]+)$/m.exec(body)?.[1] ?? NaN);
}

describe('case 7: connection flood on the capture port', () => {
  it(
    'resets past the limits, stays responsive, serves other functions and leaks no descriptors',
    async () => {
      const d1 = daemonOf(mesh, h1);
      const d2 = daemonOf(mesh, h2);
      const fds0 = [fdCount(d1), fdCount(d2)];
      const spec = { ip: h2.functions[0]!.ip, port: ECHO_PORT, count: PROFILE.floodConnections, halfOpen: PROFILE.halfOpen, concurrency: 300, holdMs: bound(8_000, 20_000) };
      // Descriptors: the flooder holds at most PER_SOURCE + concurrency sockets, under the 20,000 hard limit here.
      const flooder = mesh.topo.spawn(h1.functions[0]!.ns, [process.execPath, `${HERE}tcp-flood.mjs`, JSON.stringify(spec)], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const lines: any[] = [];
      let stderr = '';
      flooder.stderr!.on('data', (d) => (stderr += d));
      flooder.stdout!.setEncoding('utf8').on('data', (d: string) => {
        for (const l of d.split('\n')) if (l.startsWith('{')) lines.push(JSON.parse(l));
      });
      // Meanwhile another function's requests and the admin endpoint.
      const legit = legitTraffic(mesh, h1.functions[1]!.ns, { ip: h2.functions[1]!.ip, port: RPC_PORT, count: 20, durationMs: bound(15_000, 40_000), replyBytes: 1000, pauseMs: 50 });
      const held = await waitFor(() => lines.find((l) => l.event === 'held'), bound(60_000, 400_000), `flood held (${stderr} ${JSON.stringify(lines.at(-1))})`, 200);
      const during = await mesh.status(h1);
      const healthz: number[] = [];
      const lags: number[] = [];
      for (let i = 0; i < 5; i++) {
        healthz.push(await healthzMs(h1));
        lags.push(await lagSeconds(h1));
        await sleep(300);
      }
      const result = await waitFor(() => lines.find((l) => l.event === 'result'), bound(60_000, 120_000), 'flood result', 200);
      const legitResult = await withTimeout(legit, bound(120_000, 600_000), 'legit traffic');
      // After the flood: every captured connection closed and the descriptors back to where they were.
      await waitFor(async () => (await mesh.status(h1)).capture.active === 0, 30_000, 'captured connections closed');
      let fds1: number[] = [];
      const fdsBack = await waitFor(
        () => {
          fds1 = [fdCount(d1), fdCount(d2)];
          return fds1[0]! <= fds0[0]! && fds1[1]! <= fds0[1]!;
        },
        30_000,
        'descriptors back to baseline',
      ).catch(() => false);
      const after = await mesh.status(h1);
      const o = held.outcomes;
      const tunnelled = (o.echoed ?? 0) + (o.halfOpenHeld ?? 0);
      const refusedCleanly = (o.ECONNRESET ?? 0) + (o.EPIPE ?? 0) + (o.closed ?? 0);
      figure(
        'case-7',
        `flood: connections=${spec.count} halfOpen=${spec.halfOpen} perSourceLimit=${PER_SOURCE} outcomes=${JSON.stringify(o)} peakActive=${during.capture.active} ` +
          `limitHits=${after.capture.limitHits} sourceLimitHits=${after.capture.sourceLimitHits} healthzMs=${healthz.map((x) => x.toFixed(0)).join('/')} ` +
          `lagMs=${lags.map((x) => (x * 1000).toFixed(1)).join('/')} legit=${legitResult.ok}/${legitResult.ok + legitResult.failed} legitMax=${legitResult.maxMs}ms ` +
          `fds host-1 ${fds0[0]}->${fds1[0]} host-2 ${fds0[1]}->${fds1[1]} floodMs=${held.ms}`,
      );
      expect(result.event).toBe('result');
      expect(tunnelled).toBeLessThanOrEqual(PER_SOURCE);
      expect(tunnelled).toBeGreaterThan(PER_SOURCE * 0.9);
      expect(refusedCleanly).toBeGreaterThanOrEqual(spec.count + spec.halfOpen - PER_SOURCE - (o.TIMEOUT ?? 0));
      expect(o.TIMEOUT ?? 0).toBeLessThanOrEqual((spec.count + spec.halfOpen) * 0.01);
      expect(after.capture.sourceLimitHits).toBeGreaterThan(0);
      expect(during.capture.active).toBeLessThanOrEqual(PER_SOURCE + 1);
      expect(legitResult.failed, JSON.stringify(legitResult.errors)).toBe(0);
      expect(Math.max(...healthz)).toBeLessThan(2_000);
      expect(fdsBack).toBe(true);
    },
    bound(240_000, 900_000),
  );
});
