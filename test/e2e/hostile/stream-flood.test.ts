// Case 8: a stream flood from a peer. A function on host-1 opens captured
// connections to host-2 and resets them right after connect (or a first write),
// so host-2's daemon sees streams opened and reset as fast as host-1 can; at the
// same time another function's request/response traffic and a bulk transfer
// run. Memory stays bounded on both daemons, the other flows all succeed, and
// no stream or connection is left open afterwards.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonOf, destroyMesh, startMesh, type HostInfo, type Mesh } from '../../support/e2e-mesh.js';
import { FnServer, fnClient, waitFor } from '../../support/fn-net.js';
import { bound, figure, HERE, legitTraffic, mib, PROFILE, rssKiB } from './profile.js';

const FLOOD_PORT = 7501;
const RPC_PORT = 7502;
const BULK_PORT = 7503;
const BULK_BYTES = 32 * 1024 * 1024;
let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 2 });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  await FnServer.start(mesh, h2.functions[0]!.ns, 'echo', { ip: h2.functions[0]!.ip, port: FLOOD_PORT });
  await FnServer.start(mesh, h2.functions[1]!.ns, 'rpc', { ip: h2.functions[1]!.ip, port: RPC_PORT, replyBytes: 1000 });
  await FnServer.start(mesh, h2.functions[1]!.ns, 'rpc', { ip: h2.functions[1]!.ip, port: BULK_PORT, replyBytes: BULK_BYTES });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

describe('case 8: stream flood from a peer', () => {
  it(
    'opens and resets streams rapidly while other flows succeed and memory stays bounded',
    async () => {
      const [d1, d2] = [daemonOf(mesh, h1), daemonOf(mesh, h2)];
      const rss0 = [rssKiB(d1), rssKiB(d2)];
      const s0 = await mesh.status(h2);
      const floodSpec = { ip: h2.functions[0]!.ip, port: FLOOD_PORT, count: PROFILE.streamResets, concurrency: 64 };
      const flood = mesh.topo
        .exec(h1.functions[0]!.ns, [process.execPath, `${HERE}reset-flood.mjs`, JSON.stringify(floodSpec)], { timeoutMs: bound(150_000, 900_000) })
        .then((r) => JSON.parse(r.stdout.trim().split('\n').pop() || `{"error":${JSON.stringify(r.stderr)}}`));
      const other = h1.functions[1]!;
      const [floodResult, legit, bulk] = await Promise.all([
        flood,
        legitTraffic(mesh, other.ns, { ip: h2.functions[1]!.ip, port: RPC_PORT, count: PROFILE.legitRequests, replyBytes: 1000, pauseMs: 50 }),
        fnClient(mesh, other.ns, 'rpc', { ip: h2.functions[1]!.ip, port: BULK_PORT, requestBytes: 100, timeoutMs: bound(120_000, 600_000) }),
      ]);
      const rss1 = [rssKiB(d1), rssKiB(d2)];
      // Every flooded stream is gone on both sides.
      await waitFor(
        async () => {
          const [a, b] = [await mesh.status(h1), await mesh.status(h2)];
          return a.capture.active === 0 && b.inbound.active === 0 && a.peers[0].outbound.streamsActive === 0 && b.peers[0].inbound.streamsActive === 0;
        },
        30_000,
        'flooded streams closed on both daemons',
      );
      const s1 = await mesh.status(h2);
      // A second flood alone: a leak per stream would grow RSS again by as much; warm-up would not.
      const again = await mesh.topo.exec(h1.functions[0]!.ns, [process.execPath, `${HERE}reset-flood.mjs`, JSON.stringify(floodSpec)], { timeoutMs: bound(150_000, 900_000) });
      const rss2 = [rssKiB(d1), rssKiB(d2)];
      const crashes = [d1, d2].filter((d) => d.child.exitCode !== null || d.child.signalCode !== null).length;
      figure(
        'case-8',
        `stream flood: resets=${floodResult.done} rate=${floodResult.perSecond}/s outcomes=${JSON.stringify(floodResult.outcomes)} ` +
          `inboundStreams+=${s1.peers[0].inbound.streamsTotal - s0.peers[0].inbound.streamsTotal} crashes=${crashes} ` +
          `rssGrowth host-1=${mib(rss1[0]! - rss0[0]!)} host-2=${mib(rss1[1]! - rss0[1]!)} (host-2 ${mib(rss0[1]!)}->${mib(rss1[1]!)}) ` +
          `secondFlood=${again.code === 0 ? 'done' : 'failed'} rssGrowth2 host-1=${mib(rss2[0]! - rss1[0]!)} host-2=${mib(rss2[1]! - rss1[1]!)} ` +
          `legit=${legit.ok}/${legit.ok + legit.failed} legitMax=${legit.maxMs}ms bulk=${bulk.error ?? 'ok'} ${(bulk.replyBytes / 1048576).toFixed(0)}MiB`,
      );
      expect(floodResult.done).toBe(PROFILE.streamResets);
      expect(floodResult.outcomes.TIMEOUT ?? 0).toBe(0);
      // At least the half reset after their echo were real streams on host-2.
      expect(s1.peers[0].inbound.streamsTotal - s0.peers[0].inbound.streamsTotal).toBeGreaterThanOrEqual(PROFILE.streamResets / 2);
      expect(crashes).toBe(0);
      expect(legit.failed, JSON.stringify(legit.errors)).toBe(0);
      expect(bulk).toMatchObject({ error: null, replyBytes: BULK_BYTES });
      // Generous: GC timing moves RSS by tens of MiB; a leak per stream would not fit.
      for (let i = 0; i < 2; i++) expect(rss1[i]! - rss0[i]!).toBeLessThan(128 * 1024);
      expect(again.code).toBe(0);
      for (let i = 0; i < 2; i++) expect(rss2[i]! - rss1[i]!).toBeLessThan(48 * 1024);
    },
    bound(200_000, 1_000_000),
  );
});
