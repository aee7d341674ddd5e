// Only the configured peer, proven by a certificate from the mesh CA naming
// exactly that host, gets a tunnel. host-2 is restarted first with a
// certificate from another CA, then with host-3's genuine certificate (another
// host's identity at host-2's address): neither side brings a tunnel up,
// host-1 logs the refused handshake, and connections towards host-2 fail.
// Restoring host-2's own credentials brings the tunnel back (the control).
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCa, issueHost } from '../../daemon/pki/index.js';
import { daemonOf, destroyMesh, logOf, outboundState, startMesh, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient, sleep, waitFor } from '../support/fn-net.js';

const ECHO_PORT = 7007;
/** Long enough for several dial attempts (reconnect back-off starts at 100 ms, connect timeout 2 s). */
const OBSERVE_MS = 3_000;
const TEST_MS = 40_000;

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  await FnServer.start(mesh, h2.functions[0]!.ns, 'echo', { ip: h2.functions[0]!.ip, port: ECHO_PORT });
  // A second CA for the same trust domain, with its own "host-2".
  const rogue = path.join(mesh.dir, 'rogue-pki');
  await initCa({ dir: rogue, trustDomain: mesh.trustDomain });
  await issueHost({ dir: rogue, name: 'host-2' });
  // host-2 trusts both CAs (so only its own certificate is foreign), as a bundle.
  fs.writeFileSync(path.join(rogue, 'bundle.crt'), fs.readFileSync(path.join(mesh.dir, 'pki/ca.crt'), 'utf8') + fs.readFileSync(path.join(rogue, 'ca.crt'), 'utf8'));
  // A genuine certificate of the mesh CA for a host that is not host-2.
  await issueHost({ dir: path.join(mesh.dir, 'pki'), name: 'host-3' });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

/** Restarts host-2 with `overrides` merged into its config; resolves with host-1's log length at that moment. */
async function restartHost2(overrides: Record<string, unknown>): Promise<number> {
  await mesh.stopDaemon(h2, 'SIGTERM', 5_000);
  mesh.writeConfig(h2, { configFor: () => overrides });
  const mark = daemonOf(mesh, h1).log.length;
  await mesh.startDaemon(h2);
  return mark;
}

/** Dial attempts a tunnel with the default back-off (100 ms doubling to 5 s) makes in `ms`, plus slack for the dials themselves. */
function maxRedials(ms: number, minMs = 100, maxMs = 5_000): number {
  let n = 0;
  for (let t = 0, d = minMs; t <= ms; t += d, d = Math.min(2 * d, maxMs)) n++;
  return n + 2;
}

/**
 * Watches both sides for OBSERVE_MS: no tunnel between host-1 and host-2 may
 * be reported up, in either direction, and the refused side backs off.
 */
async function expectNoTunnel(host1HandshakesBefore: number): Promise<void> {
  const redialsBefore = (await mesh.status(h2)).peers[0].outbound.reconnects as number;
  const samples: Array<[string, string]> = [];
  const deadline = Date.now() + OBSERVE_MS;
  while (Date.now() < deadline) {
    samples.push([await outboundState(mesh, h1, h2), await outboundState(mesh, h2, h1)]);
    await sleep(200);
  }
  const s1 = await mesh.status(h1);
  const s2 = await mesh.status(h2);
  expect.soft(samples.filter(([a]) => a === 'up').length, 'samples in which host-1 reports its tunnel to host-2 up').toBe(0);
  expect.soft(samples.filter(([, b]) => b === 'up').length, `samples (of ${samples.length}) in which host-2 reports its tunnel to host-1 up, although host-1 refuses it`).toBe(0);
  expect.soft(s1.peers[0].outbound.handshakes, 'handshakes host-1 completed towards host-2').toBe(host1HandshakesBefore);
  expect.soft(s2.peers[0].outbound.handshakes, 'handshakes host-2 counts as completed towards host-1, which refused every one').toBe(0);
  expect.soft(s1.peers[0].inbound.state).toBe('down');
  expect.soft(s2.peers[0].inbound.state).toBe('down');
  const redials = s2.peers[0].outbound.reconnects - redialsBefore;
  expect.soft(redials, `host-2 re-dialled the refusing host-1 ${redials} times in ${OBSERVE_MS} ms; exponential back-off allows ${maxRedials(OBSERVE_MS)}`).toBeLessThanOrEqual(maxRedials(OBSERVE_MS));
}

/** A connection from host-1's function towards host-2 fails (reset), without hanging. */
async function expectConnectionFails(): Promise<void> {
  const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: ECHO_PORT, requestBytes: 512, timeoutMs: 10_000 });
  expect(r.error).not.toBeNull();
  expect(r.error).not.toBe('TIMEOUT');
  expect(r.replyBytes).toBe(0);
}

/** host-1's log after `mark`, entries saying it refused host-2's handshake. */
const refusals = (mark: number) =>
  logOf(daemonOf(mesh, h1))
    .slice(mark)
    .filter((e) => e.msg === 'peer handshake failed' || e.msg === 'peer identity refused; closing tunnel');

describe('peer identity', () => {
  it('brings the tunnel up between correctly configured hosts (control)', async () => {
    expect(await outboundState(mesh, h1, h2)).toBe('up');
    expect(await outboundState(mesh, h2, h1)).toBe('up');
  });

  it('gives no tunnel to a peer whose certificate comes from another CA', async () => {
    const handshakes = (await mesh.status(h1)).peers[0].outbound.handshakes;
    const mark = await restartHost2({ tls: { ca: 'rogue-pki/bundle.crt', cert: 'rogue-pki/host-2.crt', key: 'rogue-pki/host-2.key' } });
    await waitFor(() => refusals(mark).length > 0, 10_000, 'host-1 logs a refused handshake from host-2');
    await expectNoTunnel(handshakes);
    expect((await mesh.status(h1)).quic.refusedHandshakes).toBeGreaterThan(0);
    await expectConnectionFails();
  }, TEST_MS);

  it('gives no tunnel to a peer presenting another host\'s identity', async () => {
    const handshakes = (await mesh.status(h1)).peers[0].outbound.handshakes;
    const mark = await restartHost2({ node: { name: 'host-3' }, tls: { cert: 'pki/host-3.crt', key: 'pki/host-3.key' } });
    expect((await mesh.status(h2)).identity).toBe(`spiffe://${mesh.trustDomain}/host/host-3`);
    await waitFor(() => refusals(mark).length > 0, 10_000, 'host-1 logs a refused handshake from host-2\'s address');
    await expectNoTunnel(handshakes);
    // host-1's client side refuses host-3 answering at host-2's endpoint, too.
    const s1 = await mesh.status(h1);
    expect(s1.peers[0].outbound.lastError).toBeTruthy();
    await expectConnectionFails();
  }, TEST_MS);

  it('brings the tunnel back once host-2 has its own credentials again (control)', async () => {
    await restartHost2({});
    await mesh.waitTunnelsUp(15_000);
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: ECHO_PORT, requestBytes: 512, timeoutMs: 10_000 });
    expect(r).toMatchObject({ error: null, replyBytes: 512, replySha256: r.requestSha256, gotEnd: true });
  }, TEST_MS);
});
