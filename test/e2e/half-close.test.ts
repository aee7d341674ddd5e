// Half-close survives the tunnel: each direction of a TCP connection ends on its
// own (FIN -> stream FIN -> FIN), so a client that shuts its write side right
// after the request still gets the whole reply, a server may half-close first,
// and a server that speaks first (a banner) works.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { destroyMesh, startMesh, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient } from '../support/fn-net.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const REPLY_AFTER_FIN_PORT = 9101;
const HALF_CLOSE_FIRST_PORT = 9102;
const BANNER_PORT = 2525;
const LATE_FIN_PORT = 9103;
/** Long enough for the peer to acknowledge every data byte before the FIN follows (RTT here is well under 1 ms). */
const LATE_FIN_MS = 300;
const TEST_MS = 30_000;

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;
/** Per host: a server replying 1 MiB after the client's FIN. */
const replyAfterFin = new Map<string, FnServer>();
let halfCloseFirst: FnServer;
let banner: FnServer;
let lateFin: FnServer;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  for (const h of mesh.hosts) {
    const f = h.functions[0]!;
    replyAfterFin.set(h.name, await FnServer.start(mesh, f.ns, 'rpc', { ip: f.ip, port: REPLY_AFTER_FIN_PORT, replyBytes: MiB }));
  }
  const f2 = h2.functions[0]!;
  halfCloseFirst = await FnServer.start(mesh, f2.ns, 'rpc', { ip: f2.ip, port: HALF_CLOSE_FIRST_PORT, replyBytes: 256 * KiB, replyWhen: 'connect' });
  banner = await FnServer.start(mesh, f2.ns, 'banner', { ip: f2.ip, port: BANNER_PORT, banner: 'qmesh-e2e ESMTP ready' });
  lateFin = await FnServer.start(mesh, f2.ns, 'rpc', { ip: f2.ip, port: LATE_FIN_PORT, replyBytes: 16 * KiB, endDelayMs: LATE_FIN_MS });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

/** The next connection report of `server` after `before` reports. */
async function nextConn(server: FnServer, before: number): Promise<any> {
  const conns = await server.waitConns(before + 1, 10_000);
  return conns[before];
}

describe('half-close through the tunnel', () => {
  for (const [from, to] of [
    ['host-1', 'host-2'],
    ['host-2', 'host-1'],
  ] as const) {
    it(`a client on ${from} that ends its write side right after the request gets the full 1 MiB reply from ${to}`, async () => {
      const client = mesh.hosts.find((h) => h.name === from)!.functions[0]!;
      const target = mesh.hosts.find((h) => h.name === to)!.functions[0]!;
      const server = replyAfterFin.get(to)!;
      const before = server.conns.length;
      const r = await fnClient(mesh, client.ns, 'rpc', { ip: target.ip, port: REPLY_AFTER_FIN_PORT, requestBytes: 64 * KiB, timeoutMs: 15_000 });
      expect(r.error).toBeNull();
      const seen = await nextConn(server, before);
      // The server saw the whole request and then the FIN (it only replies after it) ...
      expect(seen).toMatchObject({ requestBytes: 64 * KiB, requestSha256: r.requestSha256, requestDone: true });
      // ... and its whole reply and its own FIN came back over the half-closed connection.
      expect(r).toMatchObject({ replyBytes: MiB, replySha256: seen.replySha256, gotEnd: true });
    }, TEST_MS);
  }

  it('a client that sends nothing and ends at once still gets the reply', async () => {
    const server = replyAfterFin.get('host-2')!;
    const before = server.conns.length;
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: REPLY_AFTER_FIN_PORT, requestBytes: 0, timeoutMs: 15_000 });
    expect(r.error).toBeNull();
    const seen = await nextConn(server, before);
    expect(seen).toMatchObject({ requestBytes: 0, requestDone: true });
    expect(r).toMatchObject({ replyBytes: MiB, replySha256: seen.replySha256, gotEnd: true });
  }, TEST_MS);

  it('a server that half-closes first still receives everything the client sends afterwards', async () => {
    const before = halfCloseFirst.conns.length;
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', {
      ip: h2.functions[0]!.ip,
      port: HALF_CLOSE_FIRST_PORT,
      requestBytes: MiB,
      sendAfterEnd: true, // the client starts sending only once the server's FIN has arrived
      timeoutMs: 15_000,
    });
    expect(r.error).toBeNull();
    expect(r.gotEnd).toBe(true);
    const seen = await nextConn(halfCloseFirst, before);
    expect(r).toMatchObject({ replyBytes: 256 * KiB, replySha256: seen.replySha256 });
    expect(seen).toMatchObject({ requestBytes: MiB, requestSha256: r.requestSha256, requestDone: true });
  }, TEST_MS);
});

// A FIN that follows the last data byte only after the peer has acknowledged
// that byte: keep-alive servers closing idle connections, clients that
// half-close after a pause. The daemon must still deliver it.
describe('a FIN sent well after the last data byte', () => {
  it(`reaches the server when the client ends its write side ${LATE_FIN_MS} ms after the request`, async () => {
    const server = replyAfterFin.get('host-2')!;
    const before = server.conns.length;
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: REPLY_AFTER_FIN_PORT, requestBytes: 4 * KiB, endDelayMs: LATE_FIN_MS, timeoutMs: 5_000 });
    expect(r.error, 'the server never saw the FIN, so it never replied').toBeNull();
    const seen = await nextConn(server, before);
    expect(seen).toMatchObject({ requestBytes: 4 * KiB, requestSha256: r.requestSha256, requestDone: true });
    expect(r).toMatchObject({ replyBytes: MiB, replySha256: seen.replySha256, gotEnd: true });
  }, TEST_MS);

  it(`reaches the client when the server ends its side ${LATE_FIN_MS} ms after the reply`, async () => {
    const before = lateFin.conns.length;
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: LATE_FIN_PORT, requestBytes: 4 * KiB, timeoutMs: 5_000 });
    expect(r.replyBytes).toBe(16 * KiB);
    expect(r.error, 'the reply arrived but the server\'s FIN did not').toBeNull();
    expect(r.gotEnd).toBe(true);
    const seen = await nextConn(lateFin, before);
    expect(r.replySha256).toBe(seen.replySha256);
  }, TEST_MS);
});

describe('server speaks first', () => {
  it('a banner sent on connect reaches a client that has sent nothing yet', async () => {
    const before = banner.conns.length;
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'banner', { ip: h2.functions[0]!.ip, port: BANNER_PORT, timeoutMs: 10_000 });
    expect(r).toMatchObject({ banner: '220 qmesh-e2e ESMTP ready', rest: '221 bye\r\n', gotEnd: true, error: null });
    const seen = await nextConn(banner, before);
    expect(seen.received).toBe('QUIT\r\n');
  }, TEST_MS);
});
