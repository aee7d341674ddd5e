// Fault case 5 (issue #6): 1 % and 5 % packet loss on the underlay, both hosts'
// egress, dropped by bench/'s NFQUEUE link emulator. Transfers through the tunnel
// arrive intact (sha256 on both ends) in both directions; the figure is MB/s.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// The emulator runs its compiled link-emulator.js in each host namespace: use the built copy.
import { LinkEmulator } from '../../../dist/bench/emulator/emulator-control.js';
import { destroyMesh, startMesh, type HostInfo, type Mesh } from '../../support/e2e-mesh.js';
import { FnServer, fnClient } from '../../support/fn-net.js';
import { figure, PROFILE, testMs } from './profile.js';

const UPLOAD_PORT = 7501; // server only reads (replies nothing)
const DOWNLOAD_PORT = 7502; // server replies PROFILE.lossBytes after the request
const MB = 1e6;

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;
let emulator: LinkEmulator;
let sink: FnServer;
let source: FnServer;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  const f2 = h2.functions[0]!;
  sink = await FnServer.start(mesh, f2.ns, 'rpc', { ip: f2.ip, port: UPLOAD_PORT, replyBytes: 0 });
  source = await FnServer.start(mesh, f2.ns, 'rpc', { ip: f2.ip, port: DOWNLOAD_PORT, replyBytes: PROFILE.lossBytes });
  emulator = new LinkEmulator(mesh);
  await emulator.start();
  await emulator.enable();
}, 60_000);

afterAll(async () => {
  await emulator?.stop().catch(() => undefined);
  await destroyMesh(mesh);
}, 60_000);

describe('fault: packet loss on the underlay', () => {
  for (const loss of [0.01, 0.05]) {
    it(`case 5: ${loss * 100} % loss each way: ${PROFILE.lossBytes / 2 ** 20} MiB up and down intact`, async () => {
      await emulator.setLink(0, loss);
      await emulator.stats(true);
      const timeoutMs = testMs(60_000, 240_000);
      const before = sink.conns.length;
      const beforeDown = source.conns.length;
      const up = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: UPLOAD_PORT, requestBytes: PROFILE.lossBytes, timeoutMs });
      const seen = (await sink.waitConns(before + 1, 10_000))[before];
      const down = await fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: DOWNLOAD_PORT, requestBytes: 0, timeoutMs });
      const served = (await source.waitConns(beforeDown + 1, 10_000))[beforeDown];
      const stats = await emulator.stats(true);
      const packets = Object.values(stats).reduce((n, s) => n + s.packets, 0);
      const dropped = Object.values(stats).reduce((n, s) => n + s.dropped, 0);
      const rate = (r: any, bytes: number) => (bytes / MB / (r.ms / 1000)).toFixed(1);
      figure(
        `case-5 loss-${loss * 100}pct`,
        `up ${rate(up, PROFILE.lossBytes)} MB/s (${up.error ?? 'intact: ' + (seen.requestSha256 === up.requestSha256)}), down ${rate(down, PROFILE.lossBytes)} MB/s (${down.error ?? 'intact: ' + (served.replySha256 === down.replySha256)}); emulator dropped ${dropped} of ${packets} packets (${((100 * dropped) / Math.max(1, packets)).toFixed(2)} %)`,
      );
      expect(up.error).toBeNull();
      expect(seen).toMatchObject({ requestBytes: PROFILE.lossBytes, requestSha256: up.requestSha256, requestDone: true });
      expect(down.error).toBeNull();
      expect(down).toMatchObject({ replyBytes: PROFILE.lossBytes, gotEnd: true });
      expect(down.replySha256, 'what arrived is what the server sent').toBe(served.replySha256);
      expect(dropped, 'the emulator really dropped packets').toBeGreaterThan(0);
    }, testMs(150_000, 600_000));
  }
});
