// Live reload on SIGHUP: a new policy applies to new connections at once while
// allowed traffic keeps flowing (zero failures), a bad file is refused and the
// old configuration keeps running, and a peer can be removed and added back.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonOf, destroyMesh, logOf, startMesh, waitLog, type HostInfo, type Mesh } from '../support/e2e-mesh.js';
import { FnServer, fnClient, sleep, waitFor } from '../support/fn-net.js';

const OPEN_PORT = 7007;
const CLOSED_PORT = 7008;
let mesh: Mesh;
let h1: HostInfo;
let h2: HostInfo;

beforeAll(async () => {
  mesh = await startMesh({ hosts: 2, functionsPerHost: 1 });
  [h1, h2] = mesh.hosts as [HostInfo, HostInfo];
  for (const port of [OPEN_PORT, CLOSED_PORT]) await FnServer.start(mesh, h2.functions[0]!.ns, 'echo', { ip: h2.functions[0]!.ip, port });
}, 60_000);

afterAll(async () => {
  await destroyMesh(mesh);
}, 60_000);

const request = (port: number) =>
  fnClient(mesh, h1.functions[0]!.ns, 'rpc', { ip: h2.functions[0]!.ip, port, requestBytes: 256, timeoutMs: 5_000 });

/** Rewrites host-2's config file (merging `overrides`) and sends SIGHUP; resolves with its log length before. */
function reloadHost2(overrides: Record<string, unknown>): number {
  mesh.writeConfig(h2, { configFor: () => overrides });
  const d = daemonOf(mesh, h2);
  const mark = d.log.length;
  d.child.kill('SIGHUP');
  return mark;
}

const after = (mark: number, msg: string) => () => logOf(daemonOf(mesh, h2)).slice(mark).find((e) => e.msg === msg);

describe('live reload (SIGHUP)', () => {
  it('applies a new policy to new connections at once, with no failed allowed request meanwhile', async () => {
    expect((await request(CLOSED_PORT)).error).toBeNull();
    // Allowed traffic keeps flowing while the policy changes under it.
    let stop = false;
    const results: any[] = [];
    const load = (async () => {
      while (!stop) results.push(await request(OPEN_PORT));
    })();
    await sleep(300);
    const mark = reloadHost2({ policy: { default: 'allow', rules: [{ name: 'no-7008', action: 'deny', ports: [CLOSED_PORT] }] } });
    await waitFor(after(mark, 'configuration reloaded'), 10_000, 'host-2 reloads');
    await sleep(300);
    stop = true;
    await load;
    expect(results.length).toBeGreaterThan(2);
    expect(results.filter((r) => r.error !== null || r.replyBytes !== 256)).toEqual([]);
    const denied = await request(CLOSED_PORT);
    expect(denied.error).toMatch(/^(ECONNRESET|EPIPE)$/);
    const line = await waitLog(daemonOf(mesh, h2), (e) => e.msg === 'inbound stream refused' && e.rule === 'no-7008', 5_000, 'policy refusal');
    expect(line.reason).toBe('denied by policy');
  }, 60_000);

  it('refuses a bad file, logs why, and keeps the running configuration', async () => {
    const d = daemonOf(mesh, h2);
    const file = mesh.configPath(h2);
    const good = fs.readFileSync(file, 'utf8');
    fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(good), lisen: {} }));
    const mark = d.log.length;
    d.child.kill('SIGHUP');
    const rejected = await waitFor(after(mark, 'reload rejected; the running configuration stays'), 10_000, 'rejection');
    expect(rejected.reason).toMatch(/lisen: unknown key/);
    // The previous config (with its policy) still runs: 7007 allowed, 7008 denied.
    expect((await request(OPEN_PORT)).error).toBeNull();
    expect((await request(CLOSED_PORT)).error).toMatch(/^(ECONNRESET|EPIPE)$/);
    expect(d.child.exitCode).toBeNull();
    fs.writeFileSync(file, good);
  }, 60_000);

  it('refuses a dangerous config (a function CIDR over loopback), naming the key, and keeps the running one', async () => {
    const d = daemonOf(mesh, h2);
    const file = mesh.configPath(h2);
    const good = fs.readFileSync(file, 'utf8');
    const next = JSON.parse(good);
    next.local.cidrs = [...next.local.cidrs, '127.0.0.0/8'];
    fs.writeFileSync(file, JSON.stringify(next));
    const mark = d.log.length;
    d.child.kill('SIGHUP');
    const rejected = await waitFor(after(mark, 'reload rejected; the running configuration stays'), 10_000, 'rejection');
    expect(rejected.reason).toMatch(/local\.cidrs\[1\]: 127\.0\.0\.0\/8 covers loopback 127\.0\.0\.0\/8/);
    expect(logOf(d).slice(mark).find((e) => e.msg === 'configuration reloaded')).toBeUndefined();
    // The previous config (with its policy) still runs: 7007 allowed, 7008 denied.
    expect((await request(OPEN_PORT)).error).toBeNull();
    expect((await request(CLOSED_PORT)).error).toMatch(/^(ECONNRESET|EPIPE)$/);
    expect(d.child.exitCode).toBeNull();
    fs.writeFileSync(file, good);
  }, 60_000);

  it('refuses a change only a restart can make', async () => {
    const mark = reloadHost2({ listen: { quic: `${h2.underlayIp}:4434` } });
    const rejected = await waitFor(after(mark, 'reload rejected; the running configuration stays'), 10_000, 'rejection');
    expect(rejected.reason).toMatch(/only a restart can change: listen\.quic/);
    expect((await request(OPEN_PORT)).error).toBeNull();
  }, 30_000);

  it('removes a peer (its traffic stops) and adds it back (traffic flows again)', async () => {
    let mark = reloadHost2({ peers: [] });
    await waitFor(after(mark, 'configuration reloaded'), 10_000, 'reload without peers');
    expect((await mesh.status(h2)).peers).toEqual([]);
    const refused = await request(OPEN_PORT);
    expect(refused.error).not.toBeNull();
    expect(refused.replyBytes).toBe(0);
    mark = reloadHost2({});
    await waitFor(after(mark, 'configuration reloaded'), 10_000, 'reload with host-1 again');
    await waitFor(async () => (await request(OPEN_PORT)).error === null, 15_000, 'traffic flows again');
    expect((await mesh.status(h2)).peers.map((p: any) => p.name)).toEqual([h1.name]);
  }, 60_000);
});
