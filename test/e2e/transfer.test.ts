// The core promise, end to end: functions on two hosts talk plain TCP and HTTP
// to each other, bytes arrive intact in bulk both ways, and an observer on the
// underlay sees only QUIC between the hosts' addresses — never the payload.
// A control first shows the wire check finds plaintext when qmesh is not running;
// then a tcpdump on the underlay bridge runs through every qmesh test and the
// last test reads it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QUIC_PORT } from '../../daemon/demo/mesh.js';
import { destroyMesh, startDaemons, startMesh, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient, plaintextMarker } from '../support/fn-net.js';
import { WireCapture } from '../support/wire-capture.js';

const MiB = 1024 * 1024;
const BULK_BYTES = 64 * MiB;
const HTTP_PORT = 8080;
const UPLOAD_PORT = 9001;
const DOWNLOAD_PORT = 9002;
const CONTROL_PORT = 9000;
const BULK_MS = 60_000;
const marker = plaintextMarker('transfer');

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;
let wire: WireCapture;
const servers: FnServer[] = [];

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 }, false);
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  const f1 = h1.functions[0]!;
  const f2 = h2.functions[0]!;
  servers.push(
    await FnServer.start(mesh, f1.ns, 'http', { ip: f1.ip, port: HTTP_PORT }),
    await FnServer.start(mesh, f2.ns, 'http', { ip: f2.ip, port: HTTP_PORT }),
    await FnServer.start(mesh, f2.ns, 'rpc', { ip: f2.ip, port: UPLOAD_PORT, replyBytes: 0 }),
    await FnServer.start(mesh, f2.ns, 'rpc', { ip: f2.ip, port: DOWNLOAD_PORT, replyBytes: BULK_BYTES, replyWhen: 'connect', marker }),
  );
}, 60_000);

afterAll(async () => {
  await wire?.stop();
  await destroyMesh(mesh);
}, 60_000);

describe('control: the same wire check without qmesh', () => {
  it('sees plain TCP between the function CIDRs and the marker in the capture', async () => {
    const f2 = h2.functions[0]!;
    const control = await FnServer.start(mesh, f2.ns, 'rpc', { ip: f2.ip, port: CONTROL_PORT, replyBytes: 0 });
    const plain = await WireCapture.start(mesh, { name: 'control' });
    const r = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: f2.ip, port: CONTROL_PORT, requestBytes: 256 * 1024, marker, timeoutMs: 10_000 });
    await plain.stop();
    control.stop();
    expect(r.error).toBeNull();
    const s = await plain.summarize(mesh.hosts.map((h) => h.underlayIp), QUIC_PORT);
    expect(s.quicPackets).toBe(0);
    expect(s.tcp.some((l) => l.includes(`${f2.ip}.${CONTROL_PORT}`))).toBe(true);
    expect(plain.contains(marker)).toBe(true);
  }, 30_000);
});

describe('transfer between functions on different hosts', () => {
  beforeAll(async () => {
    await startDaemons(mesh);
    wire = await WireCapture.start(mesh, { name: 'transfer' });
  }, 30_000);
  for (const [from, to] of [
    ['host-1', 'host-2'],
    ['host-2', 'host-1'],
  ] as const) {
    it(`answers an HTTP request from a function on ${from} to one on ${to}`, async () => {
      const client = mesh.hosts.find((h) => h.name === from)!.functions[0]!;
      const server = mesh.hosts.find((h) => h.name === to)!.functions[0]!;
      const r = await fnClient(mesh, client.ns, 'http', { ip: server.ip, port: HTTP_PORT, path: `/from/${from}`, bodyBytes: 256 * 1024, marker, timeoutMs: 10_000 });
      expect(r.error).toBeNull();
      expect(r.status).toBe(200);
      expect(r.answer).toMatchObject({ method: 'POST', url: `/from/${from}`, marker, bodyBytes: 256 * 1024, bodySha256: r.bodySha256 });
      expect(r.markerHeader).toBe(marker);
    }, 20_000);
  }

  it('carries 64 MiB from a function on host-1 to one on host-2 intact', async () => {
    const f1 = h1.functions[0]!;
    const f2 = h2.functions[0]!;
    const upload = servers[2]!;
    const r = await fnClient(mesh, f1.ns, 'rpc', { ip: f2.ip, port: UPLOAD_PORT, requestBytes: BULK_BYTES, marker, timeoutMs: BULK_MS });
    expect(r.error).toBeNull();
    expect(r.gotEnd).toBe(true);
    const [seen] = await upload.waitConns(1, 10_000);
    expect(seen).toMatchObject({ requestBytes: BULK_BYTES, requestSha256: r.requestSha256, requestDone: true });
    // And it went through host-1's tunnel, not around it.
    const peer = (await mesh.status(h1)).peers.find((p: any) => p.name === 'host-2');
    expect(peer.outbound.bytesSent).toBeGreaterThanOrEqual(BULK_BYTES);
  }, BULK_MS + 15_000);

  it('carries 64 MiB from a function on host-2 to one on host-1 intact', async () => {
    const f1 = h1.functions[0]!;
    const f2 = h2.functions[0]!;
    const download = servers[3]!;
    const r = await fnClient(mesh, f1.ns, 'rpc', { ip: f2.ip, port: DOWNLOAD_PORT, requestBytes: 0, timeoutMs: BULK_MS });
    expect(r.error).toBeNull();
    expect(r.gotEnd).toBe(true);
    expect(r.replyBytes).toBe(BULK_BYTES);
    const [seen] = await download.waitConns(1, 10_000);
    expect(seen.replySha256).toBe(r.replySha256);
    const peer = (await mesh.status(h1)).peers.find((p: any) => p.name === 'host-2');
    expect(peer.outbound.bytesReceived).toBeGreaterThanOrEqual(BULK_BYTES);
  }, BULK_MS + 15_000);

  it('showed the underlay only QUIC between underlay addresses, and no plaintext', async () => {
    await wire.stop();
    const s = await wire.summarize(mesh.hosts.map((h) => h.underlayIp), QUIC_PORT);
    // Nothing but QUIC datagrams (and ARP / IPv6 neighbour discovery) crossed.
    expect(s.tcp).toEqual([]);
    expect(s.other).toEqual([]);
    expect(s.otherCount).toBe(0);
    // The capture is real: both tunnels' datagrams, carrying at least the two bulk transfers.
    expect([...s.quicFlows].some((f) => f.startsWith(`${h1.underlayIp}.`) && f.endsWith(`> ${h2.underlayIp}.${QUIC_PORT}`))).toBe(true);
    expect([...s.quicFlows].some((f) => f.startsWith(`${h2.underlayIp}.`) && f.endsWith(`> ${h1.underlayIp}.${QUIC_PORT}`))).toBe(true);
    if (wire.dropped === 0) expect(s.quicBytes).toBeGreaterThan(2 * BULK_BYTES);
    else expect(s.quicPackets).toBeGreaterThan(1000);
    // The marker went into every 64 KiB of payload and every HTTP header; none of it is on the wire.
    expect(wire.contains(marker)).toBe(false);
    expect(wire.contains(marker.slice(0, 24))).toBe(false);
  }, 90_000);
});
