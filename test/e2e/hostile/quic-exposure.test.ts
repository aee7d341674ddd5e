// Case 15: the defences of the QUIC listener (README "QUIC engine"), each tested
// with real QUIC v1 Initials:
//   (a) a non-peer address is dropped by iptables (rule counters), and even with
//       that rule bypassed the daemon drops it before any QUIC state: no connection, no reply;
//   (b) a spoofed Initial from a peer's address on another port gets only a Retry
//       (addressValidation "always", and "under-load" once handshakes are in progress);
//   (c) the cap on handshakes in progress holds;
//   (d) a datagram under 1200 bytes never gets an answer (no amplification).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QUIC_PORT } from '../../../daemon/demo/mesh.js';
import { daemonOf, destroyMesh, startMesh, type HostInfo, type Mesh } from '../../support/e2e-mesh.js';
import { waitFor } from '../../support/fn-net.js';
import { bound, figure, mib, PROFILE, rssKiB, sendInitials } from './profile.js';

const STRANGER = '198.18.0.200';
let mesh: Mesh;
let h1: HostInfo; // default: under-load
let h2: HostInfo; // never: every Initial from a peer address starts a handshake (to test the cap)
let h3: HostInfo; // always

beforeAll(async () => {
  mesh = await startMesh({
    hosts: 3,
    functionsPerHost: 1,
    configFor: (h) => (h.index === 2 ? { tunnel: { addressValidation: 'never' } } : h.index === 3 ? { tunnel: { addressValidation: 'always' } } : {}),
  });
  [h1, h2, h3] = mesh.hosts as [HostInfo, HostInfo, HostInfo];
  // An address on the underlay that no daemon lists as a peer.
  await mesh.topo.exec(h1.ns, ['ip', 'addr', 'add', `${STRANGER}/24`, 'dev', 'eth0']);
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

async function dropRulePackets(host: HostInfo): Promise<number> {
  const r = await mesh.topo.exec(host.ns, ['iptables', '-t', 'filter', '-L', 'QMESH_INPUT', '-v', '-n', '-x']);
  const line = r.stdout.split('\n').find((l) => l.includes('only for configured peers'));
  if (!line) throw new Error(`no QUIC drop rule in ${host.name}: ${r.stdout}`);
  return Number(line.trim().split(/\s+/)[0]);
}

const noReply = (r: { responses: Record<string, number> }): number => Object.values(r.responses).reduce((a, b) => a + b, 0);

describe('case 15: exposure of the QUIC listener', () => {
  it('(a) a non-peer address flooding Initials is dropped by iptables and, past it, by the daemon before any QUIC state', async () => {
    const target = { ip: h2.underlayIp, port: QUIC_PORT };
    const d2 = daemonOf(mesh, h2);
    const rss0 = rssKiB(d2);
    const s0 = (await mesh.status(h2)).quic;
    const rule0 = await dropRulePackets(h2);
    const viaRule = await sendInitials(mesh, h1.ns, { ...target, count: PROFILE.initialFlood, bindIp: STRANGER });
    const rule1 = await dropRulePackets(h2);
    const s1 = (await mesh.status(h2)).quic;
    // Now let the stranger past iptables: the daemon's own check must hold alone.
    await mesh.topo.exec(h2.ns, ['iptables', '-I', 'INPUT', '1', '-s', STRANGER, '-p', 'udp', '--dport', String(QUIC_PORT), '-j', 'ACCEPT']);
    let viaDaemon;
    try {
      viaDaemon = await sendInitials(mesh, h1.ns, { ...target, count: PROFILE.initialFlood, bindIp: STRANGER });
    } finally {
      await mesh.topo.exec(h2.ns, ['iptables', '-D', 'INPUT', '-s', STRANGER, '-p', 'udp', '--dport', String(QUIC_PORT), '-j', 'ACCEPT']);
    }
    const s2 = (await mesh.status(h2)).quic;
    const rss2 = rssKiB(d2);
    figure(
      'case-15a',
      `non-peer Initials: sent=${viaRule.sent}+${viaDaemon.sent} iptablesDrops=${rule1 - rule0} daemonDrops=${s2.droppedDatagrams - s1.droppedDatagrams} ` +
        `replies=${noReply(viaRule)}+${noReply(viaDaemon)} quicConnections=${s0.connections}->${s2.connections} rssGrowth=${mib(rss2 - rss0)}`,
    );
    expect(viaRule.sent).toBe(PROFILE.initialFlood);
    expect(rule1 - rule0).toBeGreaterThanOrEqual(viaRule.sent);
    expect(s1.droppedDatagrams).toBe(s0.droppedDatagrams); // nothing reached the daemon
    expect(s2.droppedDatagrams - s1.droppedDatagrams).toBeGreaterThan(viaDaemon.sent * 0.9);
    expect(noReply(viaRule)).toBe(0);
    expect(noReply(viaDaemon)).toBe(0);
    expect(s2.connections).toBe(s0.connections);
    expect(s2.handshaking).toBe(0);
    expect(rss2 - rss0).toBeLessThan(48 * 1024);
  }, bound(120_000, 600_000));

  it('(b) a spoofed Initial from a peer address gets only a Retry (always; under-load once handshakes are in progress)', async () => {
    const before = (await mesh.status(h3)).quic;
    const always = await sendInitials(mesh, h1.ns, { ip: h3.underlayIp, port: QUIC_PORT, count: 20 });
    const after = (await mesh.status(h3)).quic;
    // h1 (under-load) gets spoofed Initials from h2's address: the first two start handshakes, then Retry.
    const b1 = (await mesh.status(h1)).quic;
    const underLoad = await sendInitials(mesh, h2.ns, { ip: h1.underlayIp, port: QUIC_PORT, count: 20 });
    const a1 = (await mesh.status(h1)).quic;
    figure(
      'case-15b',
      `spoofed Initials: always sent=${always.sent} replies=${JSON.stringify(always.responses)} connections=${before.connections}->${after.connections}; ` +
        `under-load sent=${underLoad.sent} replies=${JSON.stringify(underLoad.responses)} retries+=${a1.retriesSent - b1.retriesSent} handshaking=${a1.handshaking}`,
    );
    expect(always.responses.retry).toBeGreaterThanOrEqual(always.sent - 1); // UDP on a veth: allow one loss
    expect(noReply(always) - always.responses.retry).toBe(0);
    expect(after.retriesSent - before.retriesSent).toBe(always.sent);
    expect(after.connections).toBe(before.connections);
    expect(a1.retriesSent - b1.retriesSent).toBeGreaterThanOrEqual(underLoad.sent - 2);
    expect(a1.handshaking).toBeLessThanOrEqual(2);
  }, 60_000);

  it('(c) the cap on handshakes in progress holds; established tunnels are untouched', async () => {
    const before = (await mesh.status(h2)).quic;
    const count = 60;
    const r = await sendInitials(mesh, h1.ns, { ip: h2.underlayIp, port: QUIC_PORT, count });
    const during = await mesh.status(h2);
    figure(
      'case-15c',
      `handshake cap: sent=${r.sent} handshaking=${during.quic.handshaking} connections=${during.quic.connections} ` +
        `refused+=${during.quic.refusedHandshakes - before.refusedHandshakes} serverReplies=${JSON.stringify(r.responses)}`,
    );
    // daemon.ts: maxHandshakes = max(8, 2 per peer).
    expect(during.quic.handshaking).toBeLessThanOrEqual(8);
    expect(during.quic.handshaking).toBeGreaterThan(0);
    expect(during.quic.refusedHandshakes - before.refusedHandshakes).toBeGreaterThanOrEqual(count - 8);
    for (const p of during.peers) expect(p.inbound.state).toBe('up');
    // The half-open handshakes expire (idle timeout) and free their slots.
    await waitFor(async () => (await mesh.status(h2)).quic.handshaking === 0, 20_000, 'stale handshakes expired');
  }, 60_000);

  it('(d) a connection-starting datagram under 1200 bytes gets no answer; a full-size unknown version gets version negotiation', async () => {
    const target = { ip: h1.underlayIp, port: QUIC_PORT };
    const UNKNOWN = 0x1a2a3a4a;
    const small = await sendInitials(mesh, h2.ns, { ...target, count: 20, version: UNKNOWN, truncateTo: 300 });
    const smallV1 = await sendInitials(mesh, h2.ns, { ...target, count: 20, truncateTo: 300 });
    const full = await sendInitials(mesh, h2.ns, { ...target, count: 5, version: UNKNOWN });
    figure(
      'case-15d',
      `small datagrams: unknownVersion sent=${small.sent} replies=${noReply(small)}; v1 sent=${smallV1.sent} replies=${noReply(smallV1)}; ` +
        `control full-size unknownVersion sent=${full.sent} versionNegotiation=${full.responses.versionNegotiation}`,
    );
    expect(noReply(small)).toBe(0);
    expect(noReply(smallV1)).toBe(0);
    expect(full.responses.versionNegotiation).toBeGreaterThanOrEqual(full.sent - 1);
  }, 60_000);
});
