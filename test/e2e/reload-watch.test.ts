// Live reload by a change of the config file (no SIGHUP): a peer removed and
// added back and a policy changed under load with no failed allowed request, a
// half-written file refused while the old config runs on, an unchanged file not
// re-applied; and open connections a new policy denies are reset (close) or
// left to finish (finish), on the receiving and on the sending host.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonOf, destroyMesh, logOf, startMesh, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient, sleep, waitFor } from '../support/fn-net.js';

const OPEN_PORT = 7201;
const CLOSED_PORT = 7202;
const ECHO_PORT = 7203;
let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;
let h3: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 3, functionsPerHost: 1 });
  [h1, h2, h3] = mesh.hosts as [HostInfo, HostInfo, HostInfo];
  const fn2 = h2.functions[0]!;
  for (const port of [OPEN_PORT, CLOSED_PORT]) await FnServer.start(mesh, fn2.ns, 'rpc', { ip: fn2.ip, port, replyBytes: 256 });
  await FnServer.start(mesh, fn2.ns, 'echo', { ip: fn2.ip, port: ECHO_PORT });
}, 90_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

const mark = (h: HostInfo): number => daemonOf(mesh, h).log.length;
const logFrom = (h: HostInfo, from: number): any[] => logOf(daemonOf(mesh, h)).slice(from);
const waitLogAfter = (h: HostInfo, from: number, pred: (e: any) => boolean, ms: number, what: string): Promise<any> =>
  waitFor(() => logFrom(h, from).find(pred), ms, `${h.name} log: ${what}`, 50);

const request = (from: HostInfo, port: number) =>
  fnClient(mesh, from.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port, requestBytes: 200, timeoutMs: 8_000 });
const ok = (r: any): boolean => r.error === null && r.replyBytes === 256 && r.gotEnd;
const refused = (r: any): boolean => r.error !== null && r.replyBytes === 0;
const ticker = (from: HostInfo, durationMs: number) =>
  fnClient(mesh, from.functions[0]!.ns, 'ticker', { ip: h2.functions[0]!.ip, port: ECHO_PORT, tickBytes: 1024, tickMs: 50, durationMs, timeoutMs: durationMs + 15_000 });

/** Writes a host's config file in place (the daemon watches it); returns its log mark from before. */
function rewrite(h: HostInfo, overrides: Record<string, unknown>): number {
  const m = mark(h);
  mesh.writeConfig(h, { configFor: () => overrides });
  return m;
}
const reloaded = (h: HostInfo, from: number) => waitLogAfter(h, from, (e) => e.msg === 'configuration reloaded', 15_000, 'configuration reloaded');

describe('reload on a change of the config file', () => {
  it('removes a peer, changes the policy and adds the peer back under load: no failed allowed request', async () => {
    expect(ok(await request(h3, OPEN_PORT))).toBe(true);
    expect(ok(await request(h1, CLOSED_PORT))).toBe(true);
    let stop = false;
    const results: any[] = [];
    const load = (async () => {
      while (!stop) results.push(await request(h1, OPEN_PORT));
    })();
    await sleep(500);

    // host-3 leaves host-2's peers and port 7202 is denied.
    const onlyH1 = mesh.baseConfig(h2).peers.filter((p: any) => p.name === h1.name);
    let m = rewrite(h2, { peers: onlyH1, policy: { default: 'allow', rules: [{ name: 'no-7202', action: 'deny', ports: [CLOSED_PORT] }] } });
    await reloaded(h2, m);
    expect(logFrom(h2, m).some((e) => e.msg === 'file change: reloading configuration')).toBe(true);
    expect(logFrom(h2, m).some((e) => e.msg === 'SIGHUP: reloading configuration')).toBe(false);
    expect((await mesh.status(h2)).peers.map((p: any) => p.name)).toEqual([h1.name]);
    expect(refused(await request(h3, OPEN_PORT))).toBe(true);
    expect(refused(await request(h1, CLOSED_PORT))).toBe(true);

    // A half-written file is refused and logged; the running config stays.
    const file = mesh.configPath(h2);
    const good = fs.readFileSync(file, 'utf8');
    m = mark(h2);
    fs.writeFileSync(file, good.slice(0, Math.floor(good.length / 2)));
    const rejected = await waitLogAfter(h2, m, (e) => e.msg === 'reload rejected; the running configuration stays', 15_000, 'half-written file rejected');
    expect(rejected.reason).toMatch(/not valid JSON/);
    expect(refused(await request(h3, OPEN_PORT))).toBe(true);
    expect(refused(await request(h1, CLOSED_PORT))).toBe(true);

    // The same content written again is not re-applied.
    fs.writeFileSync(file, good); // completes the write: applied (the content differs from the half file)
    await reloaded(h2, m);
    m = mark(h2);
    fs.writeFileSync(file, good);
    await sleep(2_000);
    expect(logFrom(h2, m).filter((e) => e.msg === 'file change: reloading configuration')).toEqual([]);

    // host-3 is back; the policy allows everything again.
    m = rewrite(h2, {});
    await reloaded(h2, m);
    await waitFor(async () => ok(await request(h3, OPEN_PORT)), 15_000, 'host-3 reaches host-2 again');
    expect(ok(await request(h1, CLOSED_PORT))).toBe(true);

    stop = true;
    await load;
    console.log(`reload by file change: ${results.length} allowed requests under load, ${results.filter((r) => !ok(r)).length} failed`);
    expect(results.length).toBeGreaterThan(5);
    expect(results.filter((r) => !ok(r))).toEqual([]);
  }, 120_000);

  it('close mode: an open connection the receiving host\'s new policy denies is reset, logged with the rule and counted', async () => {
    const t = ticker(h1, 8_000);
    await sleep(1_500);
    const m = rewrite(h2, { policy: { default: 'allow', rules: [{ name: 'no-echo', action: 'deny', ports: [ECHO_PORT] }] } });
    await reloaded(h2, m);
    const result = await t;
    expect(result.connected).toBe(true);
    expect(result.error).toMatch(/^(ECONNRESET|EPIPE)$/);
    expect(result.ms).toBeLessThan(8_000);
    const line = await waitLogAfter(h2, m, (e) => e.msg === 'open connection closed', 5_000, 'closed by policy');
    expect(line).toMatchObject({ reason: 'denied by reloaded policy', rule: 'no-echo', peer: h1.name });
    expect((await mesh.status(h2)).inbound.closedByPolicy).toBe(1);
    await reloaded(h2, rewrite(h2, {}));
  }, 60_000);

  it('close mode on the sending host: its own new policy resets the open connection there', async () => {
    const t = ticker(h1, 8_000);
    await sleep(1_500);
    const m = rewrite(h1, { policy: { default: 'allow', rules: [{ name: 'h1-no-echo', action: 'deny', ports: [ECHO_PORT] }] } });
    await reloaded(h1, m);
    const result = await t;
    expect(result.error).toMatch(/^(ECONNRESET|EPIPE)$/);
    expect(result.ms).toBeLessThan(8_000);
    const line = await waitLogAfter(h1, m, (e) => e.msg === 'open connection closed', 5_000, 'closed by policy');
    expect(line).toMatchObject({ reason: 'denied by reloaded policy', rule: 'h1-no-echo', peer: h2.name });
    expect((await mesh.status(h1)).capture.closedByPolicy).toBe(1);
    await reloaded(h1, rewrite(h1, {}));
  }, 60_000);

  it('finish mode: the open connection runs to its end intact, new ones are refused', async () => {
    const t = ticker(h1, 6_000);
    await sleep(1_500);
    const m = rewrite(h2, { reload: { deniedConnections: 'finish' }, policy: { default: 'allow', rules: [{ name: 'no-echo', action: 'deny', ports: [ECHO_PORT] }] } });
    await reloaded(h2, m);
    const line = await waitLogAfter(h2, m, (e) => e.msg?.startsWith('open connection now denied by policy; left to finish'), 5_000, 'left to finish');
    expect(line.rule).toBe('no-echo');
    const fresh = await fnClient(mesh, h1.functions[0]!.ns, 'ticker', { ip: h2.functions[0]!.ip, port: ECHO_PORT, tickBytes: 100, tickMs: 50, durationMs: 1_000, timeoutMs: 10_000 });
    expect(fresh.echoedBytes).toBe(0);
    expect(fresh.error).not.toBeNull();
    const result = await t;
    expect(result).toMatchObject({ connected: true, error: null, gotEnd: true, echoIntact: true });
    expect(result.ticks).toBeGreaterThan(50);
    expect((await mesh.status(h2)).inbound.closedByPolicy).toBe(1); // still only the one from the close-mode test
  }, 60_000);
});
