// Fault case 3 (issue #6): SIGTERM on a daemon under load. Capture stops at once
// (a new connection is refused), every connection in flight finishes intact within
// drain.graceMs and the daemon exits 0; a connection still open when the grace
// period ends is reset, and the exit is still 0.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonOf, destroyMesh, logOf, startMesh, waitLog, type HostInfo, type Mesh } from '../../support/e2e-mesh.js';
import { fnClient, sleep, waitFor, withTimeout } from '../../support/fn-net.js';
import { faultClient, WatchServer } from './fault-net.js';
import { figure, PROFILE } from './profile.js';

const ECHO_PORT = 7201;
const GRACE_MS = 10_000;
const SHORT_GRACE_MS = 2_000;
/** Each in-flight connection stays open this long after SIGTERM before its FIN. */
const HOLD_MS = 2_500;

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;
let server: WatchServer;

const graceConfig = (h1Grace: number) => (h: HostInfo) => ({ drain: { graceMs: h.name === 'host-1' ? h1Grace : GRACE_MS } });

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1, configFor: graceConfig(GRACE_MS) });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  server = await WatchServer.start(mesh, h2.functions[0]!.ns, { ip: h2.functions[0]!.ip, port: ECHO_PORT });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

describe('fault: SIGTERM drains', () => {
  it(`case 3: ${PROFILE.drainConns} connections in flight all finish within drain.graceMs, new ones are refused, exit 0`, async () => {
    const n = PROFILE.drainConns;
    const inFlight = faultClient(mesh, h1.functions[0]!.ns, 'conns', { ip: h2.functions[0]!.ip, port: ECHO_PORT, count: n, concurrency: n, bytes: 256 * 1024, holdMs: HOLD_MS, connTimeoutMs: 20_000, keepConns: true }, 30_000);
    await waitFor(async () => (await mesh.status(h1)).capture.active >= n, 10_000, `${n} connections open`, 50);
    const d1 = daemonOf(mesh, h1);
    const termAt = Date.now();
    const exit = mesh.stopDaemon(h1, 'SIGTERM', GRACE_MS + 10_000);
    await waitLog(d1, (e) => e.msg === 'draining open connections', 5_000, 'drain started');
    // Capture has stopped: a new connection meets no listener (the REDIRECT rules stay).
    const late = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: ECHO_PORT, requestBytes: 16, timeoutMs: 5_000 });
    const r = await inFlight;
    const code = await exit;
    const exitMs = Date.now() - termAt;
    const lastEnd = Math.max(...r.conns.map((c: any) => c.endAt));
    const lost = r.total - (r.outcomes.ok ?? 0);
    figure('case-3 sigterm-drain', `lost=${lost} of ${n}, new connection during drain: ${late.error}, exit=${code}, last connection done ${((lastEnd - termAt) / 1000).toFixed(1)} s and exit ${(exitMs / 1000).toFixed(1)} s after SIGTERM (grace ${GRACE_MS / 1000} s)`);
    expect(r.outcomes, 'every in-flight connection finished intact').toEqual({ ok: n });
    expect(late.connected).toBe(false);
    expect(late.error).toBe('ECONNREFUSED');
    expect(code).toBe(0);
    expect(exitMs, 'exited once drained, before the grace period ran out').toBeLessThan(GRACE_MS);
    expect(logOf(d1).some((e) => e.msg === 'grace period over; resetting the rest')).toBe(false);
  }, 60_000);

  it('case 3b: a connection still open when the grace period ends is reset, and the exit is still 0', async () => {
    mesh.writeConfig(h1, { configFor: graceConfig(SHORT_GRACE_MS) });
    await mesh.startDaemon(h1);
    await mesh.waitTunnelsUp(15_000);
    const before = server.conns.length;
    const idle = faultClient(mesh, h1.functions[0]!.ns, 'idle', { ip: h2.functions[0]!.ip, port: ECHO_PORT, idleMs: 20_000 }, 30_000);
    await waitFor(async () => (await mesh.status(h1)).capture.active >= 1, 10_000, 'idle connection open', 50);
    await sleep(300); // its first echo is done
    const d1 = daemonOf(mesh, h1);
    const termAt = Date.now();
    const code = await mesh.stopDaemon(h1, 'SIGTERM', SHORT_GRACE_MS + 10_000);
    const r = await idle;
    const seen = await withTimeout(server.conn(before, 10_000), 12_000, 'server report');
    const resetAfter = r.closedAt - termAt;
    figure('case-3b sigterm-grace-over', `open connection: client ${r.how} ${(resetAfter / 1000).toFixed(1)} s after SIGTERM (grace ${SHORT_GRACE_MS / 1000} s), server ${seen.how}; exit=${code}`);
    expect(r.firstEcho).toBe(true);
    expect(r.how, 'the client is reset, not FINed').toBe('ECONNRESET');
    expect(seen.how, 'the server is reset, not FINed').toBe('ECONNRESET');
    expect(resetAfter).toBeGreaterThanOrEqual(SHORT_GRACE_MS - 100);
    expect(resetAfter).toBeLessThan(SHORT_GRACE_MS + 5_000);
    expect(code).toBe(0);
    expect(logOf(d1).find((e) => e.msg === 'grace period over; resetting the rest')?.unfinished).toBe(1);
  }, 60_000);
});
