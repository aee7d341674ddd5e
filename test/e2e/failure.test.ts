// Fail closed: with the destination host's daemon dead, a new connection fails
// fast (a reset, never a hang, never a success) and nothing crosses the underlay
// in plaintext; with the local daemon dead, the REDIRECT rules stay and the
// function's connections are refused; restarted daemons carry traffic again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QUIC_PORT } from '../../daemon/demo/mesh.js';
import { destroyMesh, outboundState, startMesh, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient, plaintextMarker, waitFor, withTimeout } from '../support/fn-net.js';
import { WireCapture } from '../support/wire-capture.js';

const ECHO_PORT = 7007;
/** The limit for a new connection towards a dead daemon to fail. */
const FAIL_WITHIN_MS = 3_000;
const TEST_MS = 40_000;
const marker = plaintextMarker('failure');

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  for (const h of mesh.hosts) await FnServer.start(mesh, h.functions[0]!.ns, 'echo', { ip: h.functions[0]!.ip, port: ECHO_PORT });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

/** One request from `from`'s function to `to`'s echo server; resolves with the client's result. */
const request = (from: HostInfo, to: HostInfo, extra: Record<string, unknown> = {}) =>
  fnClient(mesh, from.functions[0]!.ns, 'rpc', { ip: to.functions[0]!.ip, port: ECHO_PORT, requestBytes: 1024, marker, timeoutMs: 10_000, ...extra });

/** Both directions echo 1 KiB intact. */
async function expectTrafficFlows(): Promise<void> {
  for (const [from, to] of [[h1, h2], [h2, h1]] as const) {
    const r = await request(from, to);
    expect(r.error, `${from.name} -> ${to.name}`).toBeNull();
    expect(r).toMatchObject({ replyBytes: 1024, replySha256: r.requestSha256, gotEnd: true });
  }
}

/** A connection failed the way fail-closed demands: an error (reset or refusal), no reply, no hang. */
function expectFailedFast(r: any, what: string): void {
  expect(r.error, `${what}: must fail, not succeed`).not.toBeNull();
  expect(r.error, `${what}: must fail, not hang`).not.toBe('TIMEOUT');
  expect(r.replyBytes, `${what}: no reply may arrive`).toBe(0);
  expect(r.ms, `${what}: must fail within ${FAIL_WITHIN_MS} ms`).toBeLessThan(FAIL_WITHIN_MS);
}

describe('daemon failures', () => {
  it('carries traffic both ways while both daemons run', async () => {
    await expectTrafficFlows();
  }, TEST_MS);

  it('fails new connections fast, resets open ones, and sends nothing plaintext when the destination daemon is killed', async () => {
    const wire = await WireCapture.start(mesh, { name: 'peer-dead' });
    try {
      // An open, idle connection through the tunnel: the client waits for a FIN that never comes.
      const open = request(h1, h2, { requestBytes: 0, sendAfterEnd: true, timeoutMs: 15_000 });
      await waitFor(async () => (await mesh.status(h1)).peers[0].outbound.streamsActive > 0, 5_000, 'open stream');
      await mesh.stopDaemon(h2, 'SIGKILL');

      // At once (host-1 may still believe the tunnel is up), and again once it has noticed.
      expectFailedFast(await request(h1, h2), 'right after the kill');
      await waitFor(async () => (await outboundState(mesh, h1, h2)) !== 'up', 10_000, 'host-1 notices host-2 is gone');
      expectFailedFast(await request(h1, h2), 'with the tunnel down');

      const held = await withTimeout(open, 20_000, 'open connection');
      expect(held.error, 'an open connection is reset, not left hanging').toMatch(/^(ECONNRESET|EPIPE)$/);
    } finally {
      await wire.stop();
    }
    const s = await wire.summarize(mesh.hosts.map((h) => h.underlayIp), QUIC_PORT);
    expect(s.tcp, 'no TCP may cross the underlay').toEqual([]);
    expect(s.other.filter((l) => l.includes('198.19.')), 'nothing addressed to a function CIDR').toEqual([]);
    expect(s.quicPackets, 'host-1 kept trying QUIC (the capture saw the underlay)').toBeGreaterThan(0);
    expect(wire.contains(marker)).toBe(false);
  }, TEST_MS);

  it('refuses a function\'s connections while its own daemon is down (the REDIRECT rules stay)', async () => {
    await mesh.startDaemon(h2);
    await mesh.waitTunnelsUp(15_000);
    await mesh.stopDaemon(h1, 'SIGKILL');
    const wire = await WireCapture.start(mesh, { name: 'local-dead' });
    let r: any;
    try {
      r = await request(h1, h2);
    } finally {
      await wire.stop();
    }
    expect(r.connected).toBe(false);
    expect(r.error).toBe('ECONNREFUSED');
    expect(r.ms).toBeLessThan(FAIL_WITHIN_MS);
    const s = await wire.summarize(mesh.hosts.map((h) => h.underlayIp), QUIC_PORT);
    expect(s.tcp).toEqual([]);
    expect(wire.contains(marker)).toBe(false);
  }, TEST_MS);

  it('carries traffic again once the daemons are restarted', async () => {
    await mesh.startDaemon(h1);
    await mesh.waitTunnelsUp(15_000);
    await expectTrafficFlows();
  }, TEST_MS);
});
