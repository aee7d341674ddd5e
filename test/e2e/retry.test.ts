// Address validation: with tunnel.addressValidation "always", every handshake first
// gets a stateless Retry, and the tunnels still come up and carry traffic.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { destroyMesh, startMesh, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient } from '../support/fn-net.js';

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1, configFor: () => ({ tunnel: { addressValidation: 'always' } }) });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  await FnServer.start(mesh, h2.functions[0]!.ns, 'echo', { ip: h2.functions[0]!.ip, port: 7007 });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

describe('stateless Retry', () => {
  it('validates every new peer connection with a Retry and still carries traffic', async () => {
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: 7007, requestBytes: 1000, timeoutMs: 5_000 });
    expect(r).toMatchObject({ error: null, replyBytes: 1000 });
    // Each daemon answered the other's first Initial with a Retry.
    for (const h of [h1, h2]) expect((await mesh.status(h)).quic.retriesSent).toBeGreaterThanOrEqual(1);
  }, 30_000);
});
