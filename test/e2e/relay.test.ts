// The receiving daemon is never an open relay: it delivers a stream only to a
// destination inside its own local.cidrs, and only from a source inside the
// sending peer's cidrs. host-1 is configured to believe host-2 also owns
// 198.19.9.0/24, which host-2 does not list; host-2 can reach 198.19.9.5 (an
// address on its loopback with a server behind it) and must still refuse.
// The source check is driven by a host process on host-1: its underlay address
// (host-1 itself) and its function addresses pass; any other address is refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QUIC_PORT } from '../../daemon/demo/mesh.js';
import { daemonOf, destroyMesh, logOf, startDaemons, startMesh, waitLog, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient } from '../support/fn-net.js';

const ECHO_PORT = 7007;
const FOREIGN_CIDR = '198.19.9.0/24';
const FOREIGN_IP = '198.19.9.5';
const FOREIGN_PORT = 80;
const TEST_MS = 30_000;

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;
let echo: FnServer;
let foreign: FnServer;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 }, false);
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  mesh.writeConfig(h1, {
    configFor: () => ({ peers: [{ name: h2.name, endpoint: `${h2.underlayIp}:${QUIC_PORT}`, cidrs: [h2.functionCidr, FOREIGN_CIDR] }] }),
  });
  const added = await mesh.topo.exec(h2.ns, ['ip', 'addr', 'add', `${FOREIGN_IP}/32`, 'dev', 'lo']);
  if (added.code !== 0) throw new Error(`ip addr add: ${added.stderr}`);
  foreign = await FnServer.start(mesh, h2.ns, 'rpc', { ip: FOREIGN_IP, port: FOREIGN_PORT, replyBytes: 64 });
  echo = await FnServer.start(mesh, h2.functions[0]!.ns, 'echo', { ip: h2.functions[0]!.ip, port: ECHO_PORT });
  await startDaemons(mesh);
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

const inboundRefusals = () => logOf(daemonOf(mesh, h2)).filter((e) => e.msg === 'inbound stream refused');

/**
 * A refused connection: host-1's capture listener accepts it and resets it once
 * host-2 refuses the stream (often before the client has even seen its connect
 * complete); never a refusal by host-1 itself, never a reply, never a hang.
 */
function expectReset(r: any): void {
  expect(r.error).toMatch(/^(ECONNRESET|EPIPE)$/);
  expect(r.replyBytes).toBe(0);
  expect(r.ms).toBeLessThan(3_000);
}

describe('inbound policy', () => {
  it('delivers to a function inside host-2\'s cidrs (control)', async () => {
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: ECHO_PORT, requestBytes: 512, timeoutMs: 10_000 });
    expect(r).toMatchObject({ error: null, replyBytes: 512, replySha256: r.requestSha256, gotEnd: true });
  }, TEST_MS);

  it('refuses a stream whose destination is outside the receiver\'s local.cidrs, though the receiver could reach it', async () => {
    const deniedBefore = (await mesh.status(h2)).inbound.denied;
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: FOREIGN_IP, port: FOREIGN_PORT, requestBytes: 512, timeoutMs: 10_000 });
    expectReset(r);
    const refusal = await waitLog(daemonOf(mesh, h2), (e) => e.msg === 'inbound stream refused' && e.reason === 'destination outside local.cidrs', 5_000, 'destination refusal');
    expect(refusal).toMatchObject({ peer: h1.name, dst: `${FOREIGN_IP}:${FOREIGN_PORT}` });
    expect((await mesh.status(h2)).inbound.denied).toBe(deniedBefore + 1);
    expect(foreign.conns, 'nothing reached the server behind the foreign address').toEqual([]);
  }, TEST_MS);

  it('lets a host process on host-1 through with host-1\'s own underlay address', async () => {
    const refusalsBefore = inboundRefusals().length;
    // The kernel picks host-1's underlay address (route to host-2's functions goes via eth0).
    const r = await fnClient(mesh, h1.ns, 'rpc', { ip: h2.functions[0]!.ip, port: ECHO_PORT, requestBytes: 512, timeoutMs: 10_000 });
    expect(r).toMatchObject({ error: null, replyBytes: 512, replySha256: r.requestSha256, gotEnd: true });
    expect(inboundRefusals().length).toBe(refusalsBefore);
  }, TEST_MS);

  it('refuses a stream whose source is neither in the sending peer\'s cidrs nor its underlay address', async () => {
    const before = echo.conns.length;
    const SPOOF = '192.0.2.5'; // an extra address on host-1 that host-1 does not own in the mesh
    await mesh.topo.exec(h1.ns, ['ip', 'addr', 'add', `${SPOOF}/32`, 'dev', 'eth0']);
    const r = await fnClient(mesh, h1.ns, 'rpc', { ip: h2.functions[0]!.ip, port: ECHO_PORT, requestBytes: 512, localAddress: SPOOF, timeoutMs: 10_000 });
    expectReset(r);
    const refusal = await waitLog(daemonOf(mesh, h2), (e) => e.msg === 'inbound stream refused' && e.reason === `source outside ${h1.name}'s cidrs`, 5_000, 'source refusal');
    expect(refusal.src).toMatch(/^192\.0\.2\.5:/);
    expect(echo.conns.length).toBe(before);
  }, TEST_MS);

  // The gateway address lies inside host-1's cidrs, so host-2's source check lets it through.
  it('lets the same host process through when it uses an address inside host-1\'s cidrs', async () => {
    const refusalsBefore = inboundRefusals().length;
    const r = await fnClient(mesh, h1.ns, 'rpc', { ip: h2.functions[0]!.ip, port: ECHO_PORT, requestBytes: 512, localAddress: h1.gatewayIp, timeoutMs: 5_000 });
    expect(r.connected, 'the redirected connection to host-1\'s capture port completes its handshake').toBe(true);
    expect(r).toMatchObject({ error: null, replyBytes: 512, replySha256: r.requestSha256, gotEnd: true });
    expect(inboundRefusals().length).toBe(refusalsBefore);
  }, TEST_MS);
});
