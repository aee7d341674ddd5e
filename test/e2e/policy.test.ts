// Config-file policy, enforced at both ends. host-2's policy denies by source
// peer (host-3), by source CIDR (host-1's second function), by destination CIDR
// (host-2's second function) and by port range (7100-7199); each denied flow sits
// next to an allowed one, the client sees a reset, and host-2's log names the rule.
// host-1's own policy denies its outbound flows to port 7300: the sending host
// resets them itself, so nothing reaches host-2 (its inbound counters stay put).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonOf, destroyMesh, startMesh, waitLog, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient, withTimeout } from '../support/fn-net.js';

const ECHO_PORT = 7007;
const RANGE_PORT = 7150; // inside host-2's denied 7100-7199
const EGRESS_PORT = 7300; // denied by host-1's own policy
const TEST_MS = 20_000;
const START_MS = 30_000;

// Function addresses are fixed by the topology plan: host-i's function j is 198.19.i.(10+j).
const fnIp = (host: number, fn: number): string => `198.19.${host}.${10 + fn}`;

let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;
let h3: HostInfo;
const servers: FnServer[] = [];

beforeAll(async () => {
  mesh = await startMesh({
    hosts: 3,
    functionsPerHost: 2,
    configFor: (host) => {
      if (host.name === 'host-2') {
        return {
          policy: {
            default: 'allow',
            rules: [
              { name: 'no-host-3', action: 'deny', from: ['host-3'] },
              { name: 'no-fn-1-2', action: 'deny', sourceCidrs: [`${fnIp(1, 2)}/32`] },
              { name: 'private-fn-2-2', action: 'deny', destinationCidrs: [`${fnIp(2, 2)}/32`] },
              { name: 'no-admin-ports', action: 'deny', ports: ['7100-7199'] },
            ],
          },
        };
      }
      if (host.name === 'host-1') {
        return { policy: { rules: [{ name: 'no-egress-7300', action: 'deny', from: ['host-1'], ports: [EGRESS_PORT] }] } };
      }
      return {};
    },
  }, false);
  [h1, h2, h3] = mesh.hosts as [HostInfo, HostInfo, HostInfo];
  const fn21 = h2.functions[0]!;
  const fn22 = h2.functions[1]!;
  servers.push(
    ...(await Promise.all([
      FnServer.start(mesh, fn21.ns, 'echo', { ip: fn21.ip, port: ECHO_PORT }),
      FnServer.start(mesh, fn21.ns, 'echo', { ip: fn21.ip, port: RANGE_PORT }),
      FnServer.start(mesh, fn21.ns, 'echo', { ip: fn21.ip, port: EGRESS_PORT }),
      FnServer.start(mesh, fn22.ns, 'echo', { ip: fn22.ip, port: ECHO_PORT }),
    ])),
  );
  // Three daemons applying iptables rules at once: allow more than startDaemon's default 10 s on a busy machine.
  await withTimeout(Promise.all(mesh.hosts.map((h) => mesh.startDaemon(h, START_MS))), START_MS + 1_000, 'daemons healthy');
  await mesh.waitTunnelsUp(START_MS);
}, 90_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

const rpc = (from: { ns: string }, ip: string, port: number) => fnClient(mesh, from.ns, 'rpc', { ip, port, requestBytes: 256, timeoutMs: 5_000 });

function expectDelivered(r: any): void {
  expect(r).toMatchObject({ error: null, replyBytes: 256, replySha256: r.requestSha256, gotEnd: true });
}

/** A denied connection is reset at once: no reply, no hang. */
function expectReset(r: any): void {
  expect(r.error).toMatch(/^(ECONNRESET|EPIPE)$/);
  expect(r.replyBytes).toBe(0);
  expect(r.ms).toBeLessThan(3_000);
}

/** Runs a denied flow and checks host-2's count and the log line naming `rule`. */
async function expectDeniedByHost2(r: Promise<any>, rule: string, fields: Record<string, unknown>): Promise<void> {
  const before = (await mesh.status(h2)).inbound.deniedByPolicy;
  expectReset(await r);
  const line = await waitLog(daemonOf(mesh, h2), (e) => e.msg === 'inbound stream refused' && e.rule === rule, 5_000, `denial by ${rule}`);
  expect(line).toMatchObject({ reason: 'denied by policy', ...fields });
  expect((await mesh.status(h2)).inbound.deniedByPolicy).toBe(before + 1);
}

describe('policy from the config file', () => {
  it('denies by source peer: host-3 is reset, host-1 gets through', async () => {
    expectDelivered(await rpc(h1.functions[0]!, fnIp(2, 1), ECHO_PORT));
    await expectDeniedByHost2(rpc(h3.functions[0]!, fnIp(2, 1), ECHO_PORT), 'no-host-3', { peer: h3.name });
  }, TEST_MS);

  it('denies by source CIDR: host-1\'s second function is reset, its first gets through', async () => {
    expectDelivered(await rpc(h1.functions[0]!, fnIp(2, 1), ECHO_PORT));
    await expectDeniedByHost2(rpc(h1.functions[1]!, fnIp(2, 1), ECHO_PORT), 'no-fn-1-2', { peer: h1.name });
    const line = await waitLog(daemonOf(mesh, h2), (e) => e.rule === 'no-fn-1-2', 1_000, 'source');
    expect(line.src).toMatch(new RegExp(`^${fnIp(1, 2).replace(/\./g, '\\.')}:`));
  }, TEST_MS);

  it('denies by destination CIDR: host-2\'s second function is unreachable, its first is not', async () => {
    const before = servers[3]!.conns.length;
    await expectDeniedByHost2(rpc(h1.functions[0]!, fnIp(2, 2), ECHO_PORT), 'private-fn-2-2', { dst: `${fnIp(2, 2)}:${ECHO_PORT}` });
    expect(servers[3]!.conns.length, 'nothing reached the protected function').toBe(before);
    expectDelivered(await rpc(h1.functions[0]!, fnIp(2, 1), ECHO_PORT));
  }, TEST_MS);

  it('denies by port range: 7150 is reset, 7007 on the same function is not', async () => {
    await expectDeniedByHost2(rpc(h1.functions[0]!, fnIp(2, 1), RANGE_PORT), 'no-admin-ports', { dst: `${fnIp(2, 1)}:${RANGE_PORT}` });
    expect(servers[1]!.conns).toEqual([]);
    expectDelivered(await rpc(h1.functions[0]!, fnIp(2, 1), ECHO_PORT));
  }, TEST_MS);

  it('a deny in the sending host\'s own policy never leaves it: host-2 sees nothing', async () => {
    const peerInbound = async () => {
      const s = await mesh.status(h2);
      const fromH1 = (s.peers as any[]).find((p) => p.name === h1.name).inbound;
      return { ...s.inbound, active: 0, streamsTotal: fromH1.streamsTotal };
    };
    const h2Before = await peerInbound();
    const h1Before = (await mesh.status(h1)).capture.deniedByPolicy;
    expectReset(await rpc(h1.functions[0]!, fnIp(2, 1), EGRESS_PORT));
    const line = await waitLog(daemonOf(mesh, h1), (e) => e.msg === 'captured connection refused' && e.rule === 'no-egress-7300', 5_000, 'sender-side denial');
    expect(line).toMatchObject({ reason: 'denied by policy', peer: h2.name, dst: `${fnIp(2, 1)}:${EGRESS_PORT}` });
    expect((await mesh.status(h1)).capture.deniedByPolicy).toBe(h1Before + 1);
    expect(await peerInbound(), 'host-2 saw no stream from host-1').toEqual(h2Before);
    expect(servers[2]!.conns).toEqual([]);
    // Control: host-1's rule covers port 7300 only.
    expectDelivered(await rpc(h1.functions[0]!, fnIp(2, 1), ECHO_PORT));
  }, TEST_MS);
});
