// Case 6: garbage on the QUIC port. From a configured peer's address (so the
// peer-IP filter lets it reach QUIC), on another source port: random bytes,
// QUIC-looking headers, and real captured datagrams replayed and truncated,
// while real request/response traffic flows. No crash, RSS bounded, the real
// requests succeed and the tunnels stay up.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QUIC_PORT } from '../../../daemon/demo/mesh.js';
import { daemonOf, destroyMesh, startMesh, type HostInfo, type Mesh } from '../../support/e2e-mesh.js';
import { FnServer } from '../../support/fn-net.js';
import { WireCapture } from '../../support/wire-capture.js';
import { bound, figure, legitTraffic, mib, PROFILE, rssKiB, sendGarbage, udpCounters } from './profile.js';

const PORT = 7101;
const REPLY = 2_000;
let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  await FnServer.start(mesh, h2.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port: PORT, replyBytes: REPLY });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

describe('case 6: garbage on the QUIC port', () => {
  it(
    'survives random, truncated and replayed datagrams from a peer address while real traffic flows',
    async () => {
      const target = { ip: h2.underlayIp, port: QUIC_PORT };
      const fn = h1.functions[0]!;
      // Real datagrams to replay: capture the underlay while a few requests cross it.
      const wire = await WireCapture.start(mesh, { name: 'replay-source' });
      const warm = await legitTraffic(mesh, fn.ns, { ip: h2.functions[0]!.ip, port: PORT, count: 10, replyBytes: REPLY });
      await wire.stop();
      expect(warm.ok).toBe(10);

      const d2 = daemonOf(mesh, h2);
      const d1 = daemonOf(mesh, h1);
      const rssBefore = rssKiB(d2);
      const logBefore = d2.log.length;
      const before = (await mesh.status(h2)).quic;
      const udp0 = await udpCounters(mesh, h2.ns);
      const [garbage, legit] = await Promise.all([
        sendGarbage(mesh, h1.ns, target, PROFILE.garbageDatagrams, { pcap: wire.file, timeoutMs: bound(120_000, 600_000) }),
        legitTraffic(mesh, fn.ns, { ip: h2.functions[0]!.ip, port: PORT, count: PROFILE.legitRequests, replyBytes: REPLY, pauseMs: 20 }),
      ]);
      // Requests after the flood, too: the tunnel still works once the queue has drained.
      const after = await legitTraffic(mesh, fn.ns, { ip: h2.functions[0]!.ip, port: PORT, count: 10, replyBytes: REPLY });
      const rssAfter = rssKiB(d2);
      const udp1 = await udpCounters(mesh, h2.ns);
      const status = await mesh.status(h2);
      const crashes = [d1, d2].filter((d) => d.child.exitCode !== null || d.child.signalCode !== null).length;
      const growth = rssAfter - rssBefore;
      // The daemon keeps its last 5000 lines; a log line per garbage datagram would fill it.
      // (Not counting the one summary line per real connection.)
      const logLines = d2.log.slice(logBefore).filter((l) => !l.includes('"msg":"connection closed"')).length;
      figure(
        'case-6',
        `garbage: datagrams=${garbage.sent} readByDaemonHost=${udp1.InDatagrams! - udp0.InDatagrams!} kernelBufferDrops=${udp1.RcvbufErrors! - udp0.RcvbufErrors!} kinds=${JSON.stringify(garbage.byKind)} replaySource=${garbage.captured} crashes=${crashes} ` +
          `rssGrowth=${mib(growth)} (${mib(rssBefore)}->${mib(rssAfter)}) ok=${legit.ok}/${legit.ok + legit.failed} ` +
          `after=${after.ok}/${after.ok + after.failed} p50=${legit.p50Ms}ms max=${legit.maxMs}ms ` +
          `dropped+=${status.quic.droppedDatagrams - before.droppedDatagrams} retries+=${status.quic.retriesSent - before.retriesSent} ` +
          `refusedHandshakes+=${status.quic.refusedHandshakes - before.refusedHandshakes} quicConnections=${status.quic.connections} logLines=${logLines}`,
      );
      expect(garbage.sent).toBe(PROFILE.garbageDatagrams);
      expect(garbage.captured).toBeGreaterThan(0);
      expect(crashes).toBe(0);
      expect(legit.failed, JSON.stringify(legit.errors)).toBe(0);
      expect(after.ok).toBe(10);
      // Generous: GC timing moves RSS by tens of MiB on a loaded machine; a leak per datagram would not fit.
      expect(growth).toBeLessThan(96 * 1024);
      expect(logLines).toBeLessThan(100);
      // Garbage never became connections: the peer's own tunnel plus at most the handshakes in progress.
      expect(status.quic.connections).toBeLessThanOrEqual(1 + 2);
      // Garbage Initials fail QUIC's Initial decryption before any state exists: none is left handshaking.
      expect(status.quic.handshaking).toBe(0);
      for (const p of status.peers) expect(p.inbound.state).toBe('up');
      expect(status.peers[0].outbound.state).toBe('up');
    },
    bound(180_000, 900_000),
  );
});
