// capture.failClosedCidrs with real namespaces, iptables and daemons. host-1 and
// host-2 are peers of each other; host-3 is nobody's peer and has none: a host that
// has not joined yet, or whose etcd entry was refused or expired. With the fleet's
// block 198.19.0.0/16 fail-closed on all three, no TCP crosses the underlay between
// host-3's functions and the others, in either direction, while host-1 <-> host-2
// still goes through the tunnel and functions still reach their own host. host-1
// also drops host-3's plaintext on its own (host-3 without qmesh). Without the key
// the same requests succeed in plaintext: the key is what closes it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../../daemon/demo/mesh.js';
import { destroyMesh, logOf, startDaemons, startMesh, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient, plaintextMarker, waitFor } from '../support/fn-net.js';
import { WireCapture } from '../support/wire-capture.js';

const FLEET = '198.19.0.0/16';
const RPC_PORT = 7311;
/** How long a request that must fail waits (its SYNs are dropped, so it times out). */
const FAIL_MS = 3_000;

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;
let h3: HostInfo;
const servers = new Map<string, FnServer>();

/** host-3 is left out of everyone's peers; `failClosed` sets the key on all three. */
const configFor = (failClosed: boolean) => (h: HostInfo): Record<string, unknown> => ({
  capture: { failClosedCidrs: failClosed ? [FLEET] : [] },
  peers: h === h3 ? [] : mesh.baseConfig(h).peers.filter((p: any) => p.name !== h3.name),
});

const rpc = (ns: string, ip: string, opts: { marker?: string; timeoutMs?: number } = {}) =>
  fnClient(mesh, ns, 'rpc', { ip, port: RPC_PORT, requestBytes: 300, timeoutMs: opts.timeoutMs ?? 8_000, ...(opts.marker ? { marker: opts.marker } : {}) });
const rpcOk = (r: any): boolean => r.error === null && r.replyBytes === 512 && r.gotEnd;
const fn = (h: HostInfo, i = 0) => h.functions[i]!;
/** Connections the server at `ip` has seen (and reported) so far. */
const connsAt = (ip: string): number => servers.get(ip)!.conns.length;
const qmesh = (h: HostInfo, args: string[]) => mesh.topo.exec(h.ns, [process.execPath, CLI, ...args, '--config', mesh.configPath(h)]);
/** Packets counted by the rules of filter `chain` on `h` whose comment contains `text`. */
const dropped = async (h: HostInfo, chain: string, text: string): Promise<number> => {
  const r = await mesh.topo.exec(h.ns, ['iptables', '-w', '5', '-t', 'filter', '-L', chain, '-v', '-x', '-n']);
  return r.stdout.split('\n').filter((l) => l.includes(text)).reduce((n, l) => n + Number(l.trim().split(/\s+/)[0]), 0);
};

/** Rewrites every host's config and waits until the running daemons have reloaded it with its rules. */
async function reconfigure(failClosed: boolean): Promise<void> {
  const marks = new Map([...mesh.daemons.values()].map((d) => [d.host.name, d.log.length]));
  for (const h of mesh.hosts) mesh.writeConfig(h, { configFor: configFor(failClosed) });
  for (const d of mesh.daemons.values()) {
    const reloaded = await waitFor(
      () => logOf(d).slice(marks.get(d.host.name)).find((e) => e.msg === 'configuration reloaded' || e.msg?.startsWith('reload rejected')),
      15_000,
      `${d.host.name} reload`,
      50,
    );
    expect(reloaded.msg).toBe('configuration reloaded');
  }
}

beforeAll(async () => {
  mesh = await startMesh({ hosts: 3, functionsPerHost: 2 }, false);
  [h1, h2, h3] = mesh.hosts as [HostInfo, HostInfo, HostInfo];
  for (const h of mesh.hosts) mesh.writeConfig(h, { configFor: configFor(true) });
  const serve = async (ns: string, ip: string) => servers.set(ip, await FnServer.start(mesh, ns, 'rpc', { ip, port: RPC_PORT, replyBytes: 512 }));
  for (const h of mesh.hosts) await serve(fn(h).ns, fn(h).ip);
  await serve(fn(h1, 1).ns, fn(h1, 1).ip);
  await serve(h1.ns, h1.gatewayIp); // a host process on host-1, on its bridge address (inside 198.19.1.0/24)
  await startDaemons(mesh);
}, 120_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

describe('capture.failClosedCidrs', () => {
  it('a host that is not a peer is neither reached nor heard in plaintext; peers and local traffic still work', async () => {
    for (const h of mesh.hosts) expect((await qmesh(h, ['iptables', 'check'])).code).toBe(0);
    const wire = await WireCapture.start(mesh);
    const marker = plaintextMarker('fail-closed');
    const before = { h1: connsAt(fn(h1).ip), h3: connsAt(fn(h3).ip) };
    const short = { marker, timeoutMs: FAIL_MS };
    const [toH3, fromH3, hostToH3, h3HostToH1] = await Promise.all([
      rpc(fn(h1).ns, fn(h3).ip, short), // FORWARD on host-1
      rpc(fn(h3).ns, fn(h1).ip, short), // FORWARD on host-3
      rpc(h1.ns, fn(h3).ip, short), // a host process on host-1: filter OUTPUT
      rpc(h3.ns, fn(h1).ip, short), // a host process on host-3
    ]);
    const works = {
      h1ToH2: await rpc(fn(h1).ns, fn(h2).ip, { marker }),
      h2ToH1: await rpc(fn(h2).ns, fn(h1).ip, { marker }),
      hostH1ToH2: await rpc(h1.ns, fn(h2).ip, { marker }), // captured in nat OUTPUT; its replies come back through INPUT
      localFunction: await rpc(fn(h1).ns, fn(h1, 1).ip),
      localGateway: await rpc(fn(h1).ns, h1.gatewayIp),
      hostToLocal: await rpc(h1.ns, fn(h1).ip),
    };
    await wire.stop();

    for (const r of [toH3, fromH3, hostToH3, h3HostToH1]) {
      expect(r.connected, JSON.stringify(r)).toBe(false); // TIMEOUT (dropped in FORWARD) or EPERM (in OUTPUT)
      expect(r.error).not.toBeNull();
    }
    for (const [what, r] of Object.entries(works)) expect(rpcOk(r), `${what}: ${JSON.stringify(r)}`).toBe(true);
    // host-3's function saw nothing; host-1's only host-2's and its own host's connection.
    expect(connsAt(fn(h3).ip)).toBe(before.h3);
    await waitFor(() => connsAt(fn(h1).ip) >= before.h1 + 2, 5_000, 'host-1 function reports');
    expect(connsAt(fn(h1).ip)).toBe(before.h1 + 2);

    const summary = await wire.summarize(mesh.hosts.map((h) => h.underlayIp), 4433);
    expect(summary.tcp).toEqual([]);
    expect(summary.other.filter((l) => l.includes('198.19.'))).toEqual([]);
    expect(wire.contains(marker)).toBe(false);
    expect(summary.quicFlows.size).toBeGreaterThan(0);
    expect([...summary.quicFlows].every((f) => !f.includes(h3.underlayIp))).toBe(true);
    // The drops that did it: host-1's towards host-3, host-3's towards host-1.
    expect(await dropped(h1, 'QMESH_FORWARD', 'capture.failClosedCidrs')).toBeGreaterThan(0);
    expect(await dropped(h1, 'QMESH_OUTPUT', 'capture.failClosedCidrs')).toBeGreaterThan(0);
    expect(await dropped(h3, 'QMESH_FORWARD', 'capture.failClosedCidrs')).toBeGreaterThan(0);
  }, 60_000);

  it('host-1 drops a non-peer\'s plaintext on its own (host-3 without qmesh)', async () => {
    await mesh.stopDaemon(h3);
    expect((await qmesh(h3, ['iptables', 'remove'])).code).toBe(0);
    const before = { fn: connsAt(fn(h1).ip), gateway: connsAt(h1.gatewayIp) };
    const forwardBefore = await dropped(h1, 'QMESH_FORWARD', `no plaintext from ${FLEET}`);
    const inputBefore = await dropped(h1, 'QMESH_INPUT', `no plaintext from ${FLEET}`);
    const [toFunction, toGateway] = await Promise.all([
      rpc(fn(h3).ns, fn(h1).ip, { timeoutMs: FAIL_MS }), // host-1 FORWARD
      rpc(fn(h3).ns, h1.gatewayIp, { timeoutMs: FAIL_MS }), // host-1 INPUT
    ]);
    expect(toFunction.connected, JSON.stringify(toFunction)).toBe(false);
    expect(toGateway.connected, JSON.stringify(toGateway)).toBe(false);
    expect(connsAt(fn(h1).ip)).toBe(before.fn);
    expect(connsAt(h1.gatewayIp)).toBe(before.gateway);
    expect(await dropped(h1, 'QMESH_FORWARD', `no plaintext from ${FLEET}`)).toBeGreaterThan(forwardBefore);
    expect(await dropped(h1, 'QMESH_INPUT', `no plaintext from ${FLEET}`)).toBeGreaterThan(inputBefore);
  }, 30_000);

  it('without the key the same requests cross the underlay in plaintext', async () => {
    await reconfigure(false);
    await mesh.startDaemon(h3);
    const wire = await WireCapture.start(mesh);
    const marker = plaintextMarker('no-key');
    const toH3 = await rpc(fn(h1).ns, fn(h3).ip, { marker });
    const fromH3 = await rpc(fn(h3).ns, fn(h1).ip, { marker });
    await wire.stop();
    expect(rpcOk(toH3), JSON.stringify(toH3)).toBe(true);
    expect(rpcOk(fromH3), JSON.stringify(fromH3)).toBe(true);
    expect(wire.contains(marker)).toBe(true);
    const summary = await wire.summarize(mesh.hosts.map((h) => h.underlayIp), 4433);
    expect(summary.tcp.some((l) => l.includes(`${fn(h3).ip}.${RPC_PORT}`))).toBe(true);
  }, 60_000);
});
